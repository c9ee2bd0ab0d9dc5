"""`explorer corpus fetch` against a Debian archive that lists packages it does not serve.

A real apt talks over loopback HTTP to a small signed archive made here (apt-ftparchive, gpg,
dpkg-deb), whose server answers 404 for chosen packages: what the real archive does while a
mirror syncs, and what it did for trixie's rpi kernel on 2026-12-07 (the lists named uploads
whose .debs were gone). Each flavour is fetched on its own; the lock is honoured, or replaced by
the newest served upload with one line saying so.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import explorer.corpus
from explorer.corpus.lock import read_lock
from explorer.corpus.manifest import read_manifest

EXPLORER = (sys.executable, "-m", "explorer")
RELEASE = "bookworm"
ARMMP_UPLOADS = (2, 3)
MARVELL_UPLOADS = (2, 3)


def _deb(pool: Path, package: str, version: str, arch: str, files: dict[str, bytes]) -> Path:
    """A real .deb of `package` holding `files` (paths inside the package)."""
    tree = pool.parent / f".build-{package}-{arch}"
    for path, data in files.items():
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).write_bytes(data)
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: {version}\nArchitecture: {arch}\n"
        "Maintainer: explorer tests <tests@example.invalid>\nDescription: test package\n"
    )
    pool.mkdir(parents=True, exist_ok=True)
    deb = pool / f"{package}_{version}_{arch}.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)], check=True, capture_output=True
    )
    shutil.rmtree(tree)
    return deb


def _kernel(pool: Path, flavour: str, abi: int, arch: str) -> Path:
    release = f"6.1.0-{abi}-{flavour}"
    files = {
        f"boot/vmlinuz-{release}": f"kernel {release}".encode(),
        f"usr/lib/linux-image-{release}/board.dtb": b"\xd0\x0d\xfe\xed",
    }
    return _deb(pool, f"linux-image-{release}", f"6.1.{abi}-1", arch, files)


@dataclass
class Archive:
    """A signed Debian archive on loopback whose server refuses the files in `refused`."""

    url: str
    keyring: Path
    refused: set[str]


class _Handler(http.server.SimpleHTTPRequestHandler):
    refused: set[str]

    def do_GET(self) -> None:
        if any(self.path.endswith(name) for name in self.refused):
            self.send_error(404)
            return
        super().do_GET()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    root = tmp_path_factory.mktemp("archive")
    debian = root / "debian"
    for abi in ARMMP_UPLOADS:
        _kernel(debian / "pool/main/l/linux", "armmp", abi, "armhf")
    for abi in MARVELL_UPLOADS:
        _kernel(debian / "pool/main/l/linux", "marvell", abi, "armel")
    for arch in ("armhf", "armel"):
        busybox = f"busybox for {arch}".encode()
        _deb(debian / "pool/main/b/busybox", "busybox-static", "1:1.35.0-1", arch, {"bin/busybox": busybox})
    dists = debian / "dists" / RELEASE
    for arch in ("armhf", "armel"):
        binary = dists / "main" / f"binary-{arch}"
        binary.mkdir(parents=True)
        packages = subprocess.run(
            ["apt-ftparchive", "--arch", arch, "packages", "pool"],
            cwd=debian,
            check=True,
            capture_output=True,
        ).stdout
        (binary / "Packages").write_bytes(packages)
    release = subprocess.run(
        [
            "apt-ftparchive",
            f"-oAPT::FTPArchive::Release::Suite={RELEASE}",
            f"-oAPT::FTPArchive::Release::Codename={RELEASE}",
            "-oAPT::FTPArchive::Release::Architectures=armhf armel",
            "-oAPT::FTPArchive::Release::Components=main",
            "release",
            ".",
        ],
        cwd=dists,
        check=True,
        capture_output=True,
    ).stdout
    (dists / "Release").write_bytes(release)
    gnupg = root / "gnupg"
    gnupg.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(gnupg), "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
    subprocess.run(
        [*gpg, "--quick-gen-key", "archive@example.invalid", "default", "sign", "never"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [*gpg, "--clearsign", "-o", str(dists / "InRelease"), str(dists / "Release")],
        check=True,
        capture_output=True,
    )
    keyring = root / "archive-keyring.gpg"
    keyring.write_bytes(subprocess.run([*gpg, "--export"], check=True, capture_output=True).stdout)

    refused: set[str] = set()
    handler = functools.partial(type("Handler", (_Handler,), {"refused": refused}), directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Archive(f"http://127.0.0.1:{server.server_address[1]}", keyring, refused)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def mirror(archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Archive:
    """The archive as this test's mirror, with a cache of its own and nothing refused yet."""
    monkeypatch.setenv("EXPLORER_DEBIAN_MIRROR", archive.url)
    monkeypatch.setenv("EXPLORER_DEBIAN_KEYRING", str(archive.keyring))
    monkeypatch.setenv("EXPLORER_CACHE", str(tmp_path / "cache"))
    for var in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(var, raising=False)
    archive.refused.clear()
    return archive


def _lock_file(tmp_path: Path, kernels: dict[str, dict[str, object]]) -> Path:
    path = tmp_path / "lock.json"
    path.write_text(json.dumps({"format_version": 1, "kernels": kernels, "busybox": {}}))
    return path


def test_a_flavour_the_archive_does_not_serve_is_reported_and_the_others_complete(
    mirror: Archive, tmp_path: Path
) -> None:
    mirror.refused |= {f"linux-image-6.1.0-{abi}-marvell_6.1.{abi}-1_armel.deb" for abi in MARVELL_UPLOADS}
    mirror.refused.add("linux-image-6.1.0-3-armmp_6.1.3-1_armhf.deb")  # listed, not served

    outcome = explorer.corpus.fetch(["armmp", "marvell"], lock_path=tmp_path / "no-lock.json")

    assert set(outcome.missing) == {"marvell"}
    assert "linux-image-6.1.0-3-marvell" in outcome.missing["marvell"]
    assert "serves none" in outcome.missing["marvell"]
    assert outcome.corpus.flavours == ["armmp"]
    assert outcome.corpus.manifest.kernels["armmp"].package == "linux-image-6.1.0-2-armmp"
    assert outcome.corpus.kernel("armmp").read_bytes() == b"kernel 6.1.0-2-armmp"
    assert outcome.corpus.initramfs("armhf").is_file()


def test_the_cli_names_the_flavour_that_failed_in_one_line_and_exits_1(
    mirror: Archive, tmp_path: Path
) -> None:
    mirror.refused |= {f"linux-image-6.1.0-{abi}-marvell_6.1.{abi}-1_armel.deb" for abi in MARVELL_UPLOADS}
    env = {**os.environ, "COLUMNS": "80"}
    done = subprocess.run(
        [*EXPLORER, "corpus", "fetch", "armmp", "marvell"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert any(line.startswith("explorer: warning: marvell could not be fetched: ") for line in lines)
    assert lines[-1].startswith("explorer: error: 1 of 2 kernel flavours could not be fetched (marvell)")
    assert "Traceback" not in done.stderr
    # The real lock names Debian's packages, which this archive never had: each is replaced, said once.
    assert any("the locked linux-image-6.1.0-" in line and "--update-lock" in line for line in lines)
    # What was fetched stays usable.
    path = subprocess.run(
        [*EXPLORER, "corpus", "path", "armmp"], capture_output=True, text=True, env=env, check=True
    )
    assert Path(path.stdout.strip()).read_bytes() == b"kernel 6.1.0-3-armmp"


def test_the_locked_version_is_taken_where_it_is_served(mirror: Archive, tmp_path: Path) -> None:
    first = explorer.corpus.fetch(["armmp"], update_lock=True, lock_path=tmp_path / "lock.json")
    assert first.corpus.manifest.kernels["armmp"].package == "linux-image-6.1.0-3-armmp"
    newest = read_lock(tmp_path / "lock.json").kernels["armmp"]
    older = {**newest.__dict__, "package": "linux-image-6.1.0-2-armmp", "version": "6.1.2-1"}
    listed = _listed(mirror, "linux-image-6.1.0-2-armmp")
    older.update(filename=listed[0]["Filename"], size=int(listed[0]["Size"]), sha256=listed[0]["SHA256"])
    lock = _lock_file(tmp_path, {"armmp": older})

    outcome = explorer.corpus.fetch(["armmp"], lock_path=lock)

    assert outcome.substitutions == ()
    assert outcome.corpus.manifest.kernels["armmp"].package == "linux-image-6.1.0-2-armmp"
    again = explorer.corpus.fetch(["armmp"], lock_path=lock)  # current: no network, same manifest
    assert again.corpus.manifest == outcome.corpus.manifest


def test_a_locked_version_gone_from_the_archive_is_replaced_with_one_line_and_kept_for_that_lock(
    mirror: Archive, tmp_path: Path
) -> None:
    gone = {
        "package": "linux-image-6.1.0-1-armmp",
        "version": "6.1.1-1",
        "archive": "debian",
        "suite": RELEASE,
        "arch": "armhf",
        "filename": "pool/main/l/linux/linux-image-6.1.0-1-armmp_6.1.1-1_armhf.deb",
        "size": 1,
        "sha256": "0" * 64,
    }
    lock = _lock_file(tmp_path, {"armmp": gone})
    mirror.refused.add("linux-image-6.1.0-3-armmp_6.1.3-1_armhf.deb")

    outcome = explorer.corpus.fetch(["armmp"], lock_path=lock)

    (line,) = outcome.substitutions
    assert "linux-image-6.1.0-1-armmp 6.1.1-1 is no longer served" in line
    assert "took linux-image-6.1.0-2-armmp 6.1.2-1" in line and "--update-lock" in line
    assert outcome.corpus.manifest.kernels["armmp"].package == "linux-image-6.1.0-2-armmp"
    # The next fetch under the same lock does not ask the archive again.
    shutil.rmtree(Path(os.environ["EXPLORER_CACHE"]) / "apt")
    mirror.refused.add("InRelease")
    assert explorer.corpus.fetch(["armmp"], lock_path=lock).substitutions == ()


def test_update_lock_moves_the_lock_to_the_newest_served_and_keeps_what_failed(
    mirror: Archive, tmp_path: Path
) -> None:
    untouched = {
        "package": "linux-image-6.1.0-1-marvell",
        "version": "6.1.1-1",
        "archive": "debian",
        "suite": RELEASE,
        "arch": "armel",
        "filename": "pool/x.deb",
        "size": 1,
        "sha256": "1" * 64,
    }
    lock = _lock_file(tmp_path, {"marvell": untouched})
    mirror.refused |= {f"linux-image-6.1.0-{abi}-marvell_6.1.{abi}-1_armel.deb" for abi in MARVELL_UPLOADS}

    outcome = explorer.corpus.fetch(["armmp", "marvell"], update_lock=True, lock_path=lock)

    moved = read_lock(lock)
    assert moved.kernels["armmp"].package == "linux-image-6.1.0-3-armmp"
    assert moved.kernels["marvell"].package == untouched["package"]
    assert set(moved.busybox) == {"armhf", "armel"}
    assert set(outcome.missing) == {"marvell"}
    manifest = read_manifest(outcome.corpus.root)
    assert manifest is not None and set(manifest.kernels) == {"armmp"}


def _listed(archive: Archive, package: str) -> list[dict[str, str]]:
    """The records of `package` in the archive's armhf index."""
    with urllib.request.urlopen(f"{archive.url}/debian/dists/{RELEASE}/main/binary-armhf/Packages") as answer:
        text = answer.read().decode()
    records = [
        dict(line.split(": ", 1) for line in r.splitlines() if ": " in line) for r in text.split("\n\n")
    ]
    return [r for r in records if r.get("Package") == package]
