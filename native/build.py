"""Build the runner's QEMU: a pinned upstream release with the `rehosting` machine compiled in.

Run it as `explorer runner build [--tarball PATH] [--jobs N]`, or with the project's Python:
`.venv/bin/python native/build.py [--tarball PATH] [--jobs N]`. The last line printed is the
result directory, whose layout (the QEMU binaries, the plugin header, the rehost plugin, the
manifest) explorer.runner.build owns. That directory is named by a hash of everything that
decides the result (QEMU version, tarball checksum, our patches, device selection, machine and
plugin sources, configure flags): the build identity, which explorer.runner.build asks this
script for (`pinned_results`) without building. So a run with nothing changed returns in seconds,
and explorer finds the build of its own sources by name. The unpacked tree and the build
directory are kept per QEMU version, tree key and configure flags, so a change to our machine's C
recompiles only that file.

The source comes from Debian's source package, fetched with `apt-get source` through a private
sources list under the cache (this script never edits /etc/apt), or from a local tarball.
This script never touches the repository: everything it writes goes under the cache directory.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

NATIVE_DIR = Path(__file__).resolve().parent
if __name__ == "__main__":
    # Run as a script from a checkout: the explorer beside it. (Loaded by explorer.runner.build,
    # the explorer that loads it is already imported, and sys.path is left alone.)
    sys.path.insert(0, str(NATIVE_DIR.parent))

from explorer.paths import cache_root  # noqa: E402
from explorer.runner import build as layout  # noqa: E402


@dataclass(frozen=True)
class DebianSource:
    """One pinned Debian source package of QEMU: where apt finds it and what its tarball must hash to."""

    suite: str
    package_version: str
    upstream_version: str
    orig_sha256: str

    @property
    def orig_name(self) -> str:
        return f"qemu_{self.upstream_version}+ds.orig.tar.xz"

    @property
    def debian_tarball_name(self) -> str:
        return f"qemu_{self.package_version.split(':', 1)[1]}.debian.tar.xz"


# Tried in order. Only 10.2.x is listed: the machine uses the QOM API of 10.1+ and the runner needs
# plugin API version 5 (register and memory writes); trixie's 10.0.13 has neither.
PINNED_SOURCES = (
    DebianSource(
        suite="sid",
        package_version="1:10.2.2+ds-1",
        upstream_version="10.2.2",
        orig_sha256="be05230fe47a6937cd29f28f562932c8125f9c93c2a82c625198f7a4aa601dfb",
    ),
)
DEBIAN_SUITES = ("sid", "trixie")
ARCHIVE_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"

# Debian strips the EDK2 firmware blobs from its tarball; its own patch stops meson unpacking them.
DEBIAN_PATCHES = ("skip-unpack-edk2-blobs.patch",)
BUILD_DEPENDENCIES = (
    "gcc",
    "patch",
    "ninja-build",
    "pkg-config",
    "libglib2.0-dev",
    "libpixman-1-dev",
    "libfdt-dev",
    "protobuf-c-compiler",  # the machine's Event frames (proto/rehost.proto)
    "libprotobuf-c-dev",
    "libslirp-dev",  # user-mode networking (`explorer run --net user`)
)
# The Debian tarball ships no python/wheels: configure needs these from PyPI in its --python venv.
BUILD_PYTHON_PACKAGES = ("meson==1.9.0", "pycotap==1.3.1")

TARGETS = tuple(f"{target}-softmmu" for target in layout.TARGETS)
# The binaries by their name in QEMU's build directory, which is also their name in a result's.
BINARIES = {target: Path(layout.binary(target)).name for target in layout.TARGETS}
DEVICES_NAME = "rehosting"
CONFIGURE_FLAGS = (
    f"--target-list={','.join(TARGETS)}",
    "--without-default-features",
    "--without-default-devices",
    *(f"--with-devices-{target.removesuffix('-softmmu')}={DEVICES_NAME}" for target in TARGETS),
    "--enable-plugins",
    "--enable-fdt=system",
    "--enable-slirp",
    "--disable-install-blobs",
    "--disable-docs",
)

# Our files and where they go in the QEMU tree. The plugin is every C file of its directory
# (compiled here, not by QEMU); the machine's units are listed, and patch 0004 lists its hw/misc/
# ones in QEMU's meson: a file added to either directory changes the build identity
# (result_key), and a machine file missing here fails the build (machine_sources).
PLUGIN_DIR = NATIVE_DIR / "rehost_plugin"
MACHINE_DIR = NATIVE_DIR / "rehosting_machine"
MACHINE_SOURCES = (
    (MACHINE_DIR / "rehosting.h", Path("include/hw/misc/rehosting.h")),
    (MACHINE_DIR / "rehosting_control.h", Path("include/hw/misc/rehosting_control.h")),
    (MACHINE_DIR / "rehosting_catch_all.h", Path("hw/misc/rehosting_catch_all.h")),
    (MACHINE_DIR / "rehosting.c", Path("hw/misc/rehosting.c")),
    (MACHINE_DIR / "rehosting_catch_all.c", Path("hw/misc/rehosting_catch_all.c")),
    (MACHINE_DIR / "rehosting_clock.c", Path("hw/misc/rehosting_clock.c")),
    (MACHINE_DIR / "rehosting_snapshot.c", Path("hw/misc/rehosting_snapshot.c")),
    (MACHINE_DIR / "rehosting_devices.c", Path("hw/misc/rehosting_devices.c")),
    (MACHINE_DIR / "rehosting_arm.c", Path("hw/arm/rehosting_arm.c")),
    (MACHINE_DIR / "rehosting_mips.c", Path("hw/mips/rehosting_mips.c")),
)
# The events the machine writes; protoc-c's output goes beside its hw/misc/ units.
EVENTS_PROTO = NATIVE_DIR.parent / "proto" / "rehost.proto"
EVENTS_PROTO_C_DIR = Path("hw/misc")
DEVICE_SELECTIONS = (
    (NATIVE_DIR / "devices" / "arm-softmmu.mak", Path(f"configs/devices/arm-softmmu/{DEVICES_NAME}.mak")),
    # Includes the arm selection by its name in the tree (../arm-softmmu/rehosting.mak).
    (
        NATIVE_DIR / "devices" / "aarch64-softmmu.mak",
        Path(f"configs/devices/aarch64-softmmu/{DEVICES_NAME}.mak"),
    ),
    (NATIVE_DIR / "devices" / "mips-softmmu.mak", Path(f"configs/devices/mipsel-softmmu/{DEVICES_NAME}.mak")),
    (NATIVE_DIR / "devices" / "mips-softmmu.mak", Path(f"configs/devices/mips-softmmu/{DEVICES_NAME}.mak")),
)


# Source trees with their build directories are named TREE_PREFIX + version + variant.
TREE_PREFIX = "qemu-"


class BuildError(Exception):
    """Something the user can fix; the message says what."""


def log(message: str) -> None:
    print(f"[native/build] {message}", file=sys.stderr, flush=True)


def run(command: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    log(" ".join(command))
    # stdout carries only the result path, so tools' chatter goes to stderr.
    completed = subprocess.run(command, cwd=cwd, env=env, stdout=sys.stderr, check=False)
    if completed.returncode != 0:
        raise BuildError(f"command failed ({completed.returncode}): {' '.join(command)}")


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_build_dependencies() -> None:
    """Install the Debian packages the build needs; does nothing when all are present."""
    status = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *BUILD_DEPENDENCIES],
        capture_output=True,
        text=True,
        check=False,
    )
    installed = {line.split()[0] for line in status.stdout.splitlines() if line.endswith(" installed")}
    missing = [package for package in BUILD_DEPENDENCIES if package not in installed]
    if not missing:
        return
    if os.geteuid() != 0:
        raise BuildError(f"missing build packages; run: sudo apt-get install {' '.join(missing)}")
    run(
        ["apt-get", "install", "-y", "--no-install-recommends", *missing],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )


def ensure_build_python(qemu_cache: Path) -> Path:
    """A venv with the meson QEMU's configure expects; returns its python."""
    venv = qemu_cache / "build-venv"
    python = venv / "bin" / "python"
    stamp = venv / "explorer-packages"
    wanted = "\n".join(BUILD_PYTHON_PACKAGES)
    if stamp.is_file() and stamp.read_text() == wanted:
        return python
    run([sys.executable, "-m", "venv", "--clear", str(venv)])
    run([str(python), "-m", "pip", "install", "--quiet", *BUILD_PYTHON_PACKAGES])
    stamp.write_text(wanted)
    return python


def apt_options(qemu_cache: Path) -> list[str]:
    """apt options pointing at a private deb-src list, so /etc/apt is never read for sources nor edited."""
    apt_dir = qemu_cache / "apt"
    (apt_dir / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    sources = apt_dir / "sources.list"
    sources.write_text(
        "".join(
            f"deb-src [signed-by={ARCHIVE_KEYRING}] http://deb.debian.org/debian {suite} main\n"
            for suite in DEBIAN_SUITES
        )
    )
    return [
        f"-oDir::Etc::SourceList={sources}",
        "-oDir::Etc::SourceParts=/dev/null",
        f"-oDir::State::Lists={apt_dir / 'lists'}",
    ]


def download_debian_source(qemu_cache: Path) -> tuple[DebianSource, Path]:
    """Fetch the first pinned source package apt can find; returns it and its download directory."""
    options = apt_options(qemu_cache)
    downloads = qemu_cache / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    for source in PINNED_SOURCES:
        orig = downloads / source.orig_name
        if orig.is_file() and (downloads / source.debian_tarball_name).is_file():
            return source, downloads
    run(["apt-get", *options, "update"])
    tried = []
    for source in PINNED_SOURCES:
        tried.append(f"qemu={source.package_version} ({source.suite})")
        fetched = subprocess.run(
            ["apt-get", *options, "source", "--download-only", f"qemu={source.package_version}"],
            cwd=downloads,
            stdout=sys.stderr,
            check=False,
        )
        if fetched.returncode == 0:
            return source, downloads
    raise BuildError(
        f"none of the pinned QEMU sources is on the Debian mirror any more (tried {', '.join(tried)}); "
        "download qemu-10.2.x.tar.xz from https://download.qemu.org/ "
        "(or a Debian qemu_10.2.x+ds.orig.tar.xz) and rerun with --tarball PATH"
    )


@dataclass(frozen=True)
class Tarball:
    """The QEMU source to build: the tarball, its checksum, and Debian's patches when they came with it."""

    path: Path
    version: str
    sha256: str
    debian_tarball: Path | None


def locate_tarball(qemu_cache: Path, local: Path | None) -> Tarball:
    if local is not None:
        if not local.is_file():
            raise BuildError(f"--tarball {local}: no such file")
        match = re.search(r"qemu[-_](\d+\.\d+\.\d+)", local.name)
        if not match:
            raise BuildError(f"--tarball {local}: no QEMU version in the name (want qemu-X.Y.Z...)")
        digest = sha256_of_file(local)
        debian_tarball = None
        for source in PINNED_SOURCES:
            if source.orig_name == local.name:
                if digest != source.orig_sha256:
                    raise BuildError(
                        f"--tarball {local}: sha256 {digest} is not the pinned {source.orig_sha256}"
                    )
                # A Debian tarball lacks the firmware blobs: it needs the Debian patches beside it.
                debian_tarball = local.parent / source.debian_tarball_name
                if not debian_tarball.is_file():
                    raise BuildError(f"--tarball {local}: put {source.debian_tarball_name} beside it")
        log(f"using local tarball {local} (QEMU {match.group(1)}, sha256 {digest})")
        return Tarball(local, match.group(1), digest, debian_tarball)
    source, downloads = download_debian_source(qemu_cache)
    orig = downloads / source.orig_name
    digest = sha256_of_file(orig)
    if digest != source.orig_sha256:
        orig.unlink()
        raise BuildError(f"{orig}: sha256 {digest} is not the pinned {source.orig_sha256}; deleted it, rerun")
    return Tarball(orig, source.upstream_version, digest, downloads / source.debian_tarball_name)


def our_patches() -> list[Path]:
    return sorted((NATIVE_DIR / "patches").glob("*.patch"))


def tree_key(tarball_sha256: str) -> str:
    """Everything that decides the patched tree except our machine's C (which is synced incrementally)."""
    digest = hashlib.sha256()
    digest.update(tarball_sha256.encode())
    for path in [*our_patches(), *(source for source, _ in DEVICE_SELECTIONS)]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def plugin_files() -> list[Path]:
    """The rehost plugin's sources: every file of its directory (the .c files are its units)."""
    return sorted(path for path in PLUGIN_DIR.iterdir() if path.is_file())


def machine_sources() -> list[Path]:
    """The machine's sources, each of which must be one QEMU builds (listed in MACHINE_SOURCES)."""
    listed = {source for source, _ in MACHINE_SOURCES}
    unlisted = sorted(path.name for path in MACHINE_DIR.iterdir() if path.is_file() and path not in listed)
    if unlisted:
        raise BuildError(f"{MACHINE_DIR}: {', '.join(unlisted)} not in build.py's MACHINE_SOURCES")
    return sorted(listed)


def result_key(version: str, tarball_sha256: str) -> str:
    """The build identity: the name of the result directory of this QEMU source built with our files."""
    digest = hashlib.sha256()
    digest.update(f"{version}\0{tree_key(tarball_sha256)}\0{' '.join(CONFIGURE_FLAGS)}\0".encode())
    for path in [*machine_sources(), *plugin_files(), EVENTS_PROTO]:
        digest.update(str(path.relative_to(NATIVE_DIR.parent)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def manifest(version: str, tarball_name: str, tarball_sha256: str) -> dict[str, object]:
    """What a result's manifest says about the build of this QEMU source with our files."""
    return {
        "qemu_version": version,
        "tarball": tarball_name,
        "tarball_sha256": tarball_sha256,
        "configure_flags": list(CONFIGURE_FLAGS),
        "patches": [path.name for path in our_patches()],
    }


def pinned_results() -> list[tuple[str, dict[str, object]]]:
    """The identity and the manifest of the result each pinned source makes, without building."""
    return [
        (
            result_key(source.upstream_version, source.orig_sha256),
            manifest(source.upstream_version, source.orig_name, source.orig_sha256),
        )
        for source in PINNED_SOURCES
    ]


def unpack(tarball: Tarball, tree: Path) -> None:
    """Unpack the tarball into `tree` and apply Debian's patches we need and ours."""
    staging = tree.with_name(tree.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    log(f"unpacking {tarball.path.name}")
    with tarfile.open(tarball.path) as archive:
        archive.extractall(staging, filter="tar")
    (top,) = [entry for entry in staging.iterdir() if entry.is_dir()]
    if tarball.debian_tarball is not None:
        with tarfile.open(tarball.debian_tarball) as archive:
            for name in DEBIAN_PATCHES:
                patch = archive.extractfile(f"debian/patches/{name}")
                if patch is None:
                    raise BuildError(f"{tarball.debian_tarball}: has no debian/patches/{name}")
                apply_patch(top, name, patch.read())
    for path in our_patches():
        apply_patch(top, path.name, path.read_bytes())
    shutil.rmtree(tree, ignore_errors=True)
    top.rename(tree)
    shutil.rmtree(staging)


def apply_patch(tree: Path, name: str, text: bytes) -> None:
    log(f"applying {name}")
    applied = subprocess.run(
        ["patch", "-p1", "--forward", "--batch", "--quiet"],
        cwd=tree,
        input=text,
        stdout=sys.stderr,
        check=False,
    )
    if applied.returncode != 0:
        raise BuildError(f"patch {name} does not apply to this QEMU source")


def sync_file(source: Path, destination: Path) -> None:
    """Copy only when the content differs, so ninja sees an unchanged file as unchanged."""
    data = source.read_bytes()
    if destination.is_file() and destination.read_bytes() == data:
        return
    destination.write_bytes(data)


def prepare_tree(qemu_cache: Path, tarball: Tarball) -> tuple[Path, Path]:
    """The patched source tree and its build directory, one pair per tree key and configure flags.

    Checkouts whose patches, device selection or flags differ each keep their own pair, so
    building one never wipes another's (a flag or device change rebuilds all of QEMU: 1667 ninja
    steps, 8 CPU-minutes); the pairs are pruned with the results (`prune_results`).
    """
    key = tree_key(tarball.sha256)
    variant = hashlib.sha256(f"{key}\0{' '.join(CONFIGURE_FLAGS)}".encode()).hexdigest()[:12]
    base = qemu_cache / f"{TREE_PREFIX}{tarball.version}-{variant}"
    tree, build = base / "src", base / "build"
    stamp = base / "tree-key"
    if not (stamp.is_file() and stamp.read_text() == key and tree.is_dir()):
        shutil.rmtree(build, ignore_errors=True)
        unpack(tarball, tree)
        stamp.write_text(key)
    # Its modification time is its last use, as a result's: what pruning goes by.
    os.utime(base)
    for source, relative in (*DEVICE_SELECTIONS, *MACHINE_SOURCES):
        sync_file(source, tree / relative)
    generate_event_code(qemu_cache / "protoc-c", tree / EVENTS_PROTO_C_DIR)
    return tree, build


def generate_event_code(scratch: Path, destination: Path) -> None:
    """protoc-c's C for the Event frames, synced into the tree so an unchanged proto compiles nothing."""
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    run(["protoc-c", f"-I{EVENTS_PROTO.parent}", f"--c_out={scratch}", str(EVENTS_PROTO)])
    for generated in sorted(scratch.iterdir()):
        sync_file(generated, destination / generated.name)


def configure(tree: Path, build: Path, python: Path) -> None:
    stamp = build / "explorer-configure-flags"
    flags = "\n".join(CONFIGURE_FLAGS)
    if stamp.is_file() and stamp.read_text() == flags and (build / "build.ninja").is_file():
        return
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(parents=True)
    run([str(tree / "configure"), f"--python={python}", *CONFIGURE_FLAGS], cwd=build)
    stamp.write_text(flags)


def build_plugin(result: Path) -> None:
    """Compile the rehost plugin, with protoc-c's code for its Event frames, against this build's header."""
    glib_flags = subprocess.run(
        ["pkg-config", "--cflags", "glib-2.0"], capture_output=True, text=True, check=True
    ).stdout.split()
    (result / layout.PLUGIN).parent.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rehost-plugin-") as generated:
        run(["protoc-c", f"-I{EVENTS_PROTO.parent}", f"--c_out={generated}", str(EVENTS_PROTO)])
        run(
            [
                "gcc",
                "-shared",
                "-fPIC",
                "-O2",
                "-Wall",
                "-Werror",
                # The units share the plugin's state by name: only QEMU's entry points leave the library.
                "-fvisibility=hidden",
                f"-I{result / 'include'}",
                f"-I{generated}",
                # rehosting_control.h: the one thing the plugin and the machine agree on.
                f"-I{MACHINE_DIR}",
                *glib_flags,
                "-o",
                str(result / layout.PLUGIN),
                *(str(path) for path in plugin_files() if path.suffix == ".c"),
                str(Path(generated) / EVENTS_PROTO.with_suffix(".pb-c.c").name),
                "-lprotobuf-c",
            ]
        )


def install(tree: Path, build: Path, tarball: Tarball, destination: Path) -> None:
    """Copy the binaries and the plugin header into `destination`, atomically by rename."""
    staging = destination.with_name(destination.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for target, name in BINARIES.items():
        (staging / layout.binary(target)).parent.mkdir(exist_ok=True)
        shutil.copy2(build / name, staging / layout.binary(target))
    (staging / layout.PLUGIN_HEADER).parent.mkdir()
    shutil.copy2(tree / "include" / "qemu" / "qemu-plugin.h", staging / layout.PLUGIN_HEADER)
    build_plugin(staging)
    written = manifest(tarball.version, tarball.path.name, tarball.sha256)
    (staging / layout.MANIFEST).write_text(json.dumps(written, indent=2) + "\n")
    shutil.rmtree(destination, ignore_errors=True)
    staging.rename(destination)


def build_qemu(local_tarball: Path | None, jobs: int) -> Path:
    qemu_cache = layout.builds_directory(cache_root())
    qemu_cache.mkdir(parents=True, exist_ok=True)
    # Test sessions run this script concurrently: one builds, the others wait and reuse its result.
    with (qemu_cache / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return build_qemu_locked(qemu_cache, local_tarball, jobs)


def build_qemu_locked(qemu_cache: Path, local_tarball: Path | None, jobs: int) -> Path:
    tarball = locate_tarball(qemu_cache, local_tarball)
    destination = qemu_cache / result_key(tarball.version, tarball.sha256)
    if not (destination / layout.MANIFEST).is_file():
        ensure_build_dependencies()
        python = ensure_build_python(qemu_cache)
        tree, build = prepare_tree(qemu_cache, tarball)
        configure(tree, build, python)
        run(["ninja", "-C", str(build), f"-j{jobs}", *BINARIES.values()])
        install(tree, build, tarball, destination)
    # A result's modification time is its last use: what pruning goes by.
    os.utime(destination)
    prune_results(qemu_cache, keep=destination)
    return destination


# Results (about 120 MB each) kept besides the one in use: the most recently used ones, for other
# checkouts of the project; anything used within a day stays, since a search may still run on it.
KEPT_RESULTS = 6
# Source trees with their build directories (about 750 MB each, and a full build to remake) kept:
# the most recently used ones; as with results, anything used within a day stays.
KEPT_TREES = 3
RECENT_USE_SECONDS = 24 * 3600


def _prune_unused(paths: list[Path], kept: int, what: str) -> None:
    """Remove the paths beyond the `kept` most recently used, each only if unused for a day."""
    for path in sorted(paths, key=lambda path: path.stat().st_mtime, reverse=True)[kept:]:
        if time.time() - path.stat().st_mtime > RECENT_USE_SECONDS:
            log(f"pruning the {what} {path.name} (unused since {time.ctime(path.stat().st_mtime)})")
            shutil.rmtree(path, ignore_errors=True)


def prune_results(qemu_cache: Path, keep: Path) -> None:
    """Remove build results beyond the KEPT_RESULTS most recently used, and source trees beyond the
    KEPT_TREES most recently used, if unused for a day."""
    results = [path for path in qemu_cache.iterdir() if (path / layout.MANIFEST).is_file() and path != keep]
    _prune_unused(results, KEPT_RESULTS, "build result")
    trees = [path for path in qemu_cache.glob(f"{TREE_PREFIX}*") if (path / "tree-key").is_file()]
    _prune_unused(trees, KEPT_TREES, "source tree")
    for partial in qemu_cache.glob("*.partial"):
        # Staging directories of builds killed half-way (builds run under the lock: none is live).
        shutil.rmtree(partial, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tarball", type=Path, help="build this local QEMU source tarball instead")
    parser.add_argument("--jobs", type=int, default=2, help="parallel compile jobs (default 2)")
    arguments = parser.parse_args()
    try:
        result = build_qemu(arguments.tarball, arguments.jobs)
    except BuildError as error:
        print(f"native/build: {error}", file=sys.stderr)
        return 1
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
