"""`explorer corpus fetch`: download, check, extract and prepare the real-kernel corpus.

Phases, each skipped when its output is already there and matches the manifest:
  1. verify  - every kernel, busybox and initramfs has the SHA-256 the manifest records;
               if so, stop here (no network, well under a second);
  2. select  - reuse the manifest's packages, or (first fetch, --refresh, a deb gone, a kernel
               added to the catalogue) ask each release's private apt for the newest upload
               of each kernel in `catalogue.KERNELS`, plus busybox-static;
  3. download - each .deb not already on disk with the index's SHA-256; when the mirror lists
               a kernel it cannot serve yet (mid-sync), the next older upload instead;
  4. extract - each .deb into a directory named after its digest (atomically, via rename);
  5. build   - one initramfs per architecture from its busybox;
  6. record  - write the manifest last, so an interrupted fetch simply resumes;
  7. prune   - delete packages, extractions and images the new manifest no longer names.
Concurrent fetches (parallel test sessions) serialise on a lock file. This module must never
touch /etc/apt or anything outside the corpus and apt directories of the explorer cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from explorer.corpus.apt import FIX_NETWORK, PackageVersion, PrivateApt
from explorer.corpus.catalogue import FLAVOUR_ARCH, KERNELS, USERSPACE_SUITE, KernelSource
from explorer.corpus.initramfs import MARKER_INIT_SCRIPT, USERSPACE_MARKER, busybox_initramfs
from explorer.corpus.layout import Corpus, corpus_root
from explorer.corpus.manifest import (
    ArchRecord,
    DebRecord,
    FileRecord,
    KernelRecord,
    Manifest,
    read_manifest,
    sha256_file,
    write_manifest,
)
from explorer.errors import CorpusError
from explorer.paths import cache_root

BUSYBOX_PACKAGE = "busybox-static"
EXTRACT_TIMEOUT_S = 300
KERNEL_ALTERNATIVES = 3  # uploads of one kernel tried, newest first, before giving up
_LAYOUT_CHANGED = "Debian changed the package's layout; explorer.corpus.fetch needs updating"

Report = Callable[[str], None]


def _ignore(_: str) -> None:
    pass


def fetch(refresh: bool = False, report: Report = _ignore, root: Path | None = None) -> Corpus:
    """Make the corpus complete and verified, doing network work only when something is missing.

    `refresh` asks apt for the newest packages even when a complete corpus is present.
    `report` receives one short line per phase step, for progress display.
    """
    root = root or corpus_root()
    root.mkdir(parents=True, exist_ok=True)
    with _exclusive(root / ".lock"):
        existing = read_manifest(root)
        if existing and not refresh and _is_current(root, existing):
            return Corpus(root, existing)
        debs = None if refresh else _reusable_debs(root, existing, report)
        if debs is None:
            debs = [_download_newest(root, choices, report) for choices in _select_with_apt(report)]
        manifest = _prepare(root, debs, _damaged_files(root, existing), report)
        write_manifest(root, manifest)
        report("manifest written")
        _prune(root, manifest, report)
        return Corpus(root, manifest)


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _is_current(root: Path, manifest: Manifest) -> bool:
    """Phase 1: the manifest covers every flavour with today's marker and its files are intact."""
    return (
        set(manifest.kernels) == set(FLAVOUR_ARCH)
        and manifest.userspace_marker == USERSPACE_MARKER
        and all(d.deb.matches(root, hash_contents=False) for d in manifest.debs)
        and all(f.matches(root, hash_contents=True) for f in manifest.product_files())
    )


def _damaged_files(root: Path, manifest: Manifest | None) -> set[str]:
    if manifest is None:
        return set()
    return {f.path for f in manifest.product_files() if not f.matches(root, hash_contents=True)}


def _reusable_debs(root: Path, manifest: Manifest | None, report: Report) -> list[DebRecord] | None:
    """Phase 2 without network: the manifest's packages, if they cover every flavour and are intact."""
    if manifest is None or set(manifest.kernels) != set(FLAVOUR_ARCH):
        return None
    report("checking the downloaded packages")
    if all(d.deb.matches(root, hash_contents=True) for d in manifest.debs):
        return list(manifest.debs)
    return None


def _select_with_apt(report: Report) -> list[list[PackageVersion]]:
    """Phase 2 with network: per package to fetch, the uploads to try, newest first.

    One list per corpus kernel (its newest KERNEL_ALTERNATIVES uploads) and one per
    architecture for busybox-static (its candidate version).
    """
    selected = []
    for suite, arch in sorted({(k.suite, k.arch) for k in KERNELS.values()} | _userspace_apts()):
        apt = PrivateApt(suite, arch, _apt_dir(suite, arch))
        report(f"updating the {suite} {arch} package lists")
        apt.update()
        names = apt.package_names("linux-image-")
        for source in KERNELS.values():
            if (source.suite, source.arch) == (suite, arch):
                newest = _uploads_newest_first(apt, source, names)[:KERNEL_ALTERNATIVES]
                selected.append([apt.candidate(name) for name in newest])
        if (suite, arch) in _userspace_apts():
            selected.append([apt.candidate(BUSYBOX_PACKAGE)])
    return selected


def _userspace_apts() -> set[tuple[str, str]]:
    return {(USERSPACE_SUITE, arch) for arch in FLAVOUR_ARCH.values()}


def _uploads_newest_first(apt: PrivateApt, source: KernelSource, names: list[str]) -> list[str]:
    abi_by_name = {name: abi for name in names if (abi := source.abi_of(name)) is not None}
    if not abi_by_name:
        raise CorpusError(
            f"no {source.package_template.format(abi='NN')} package in the {source.suite} index "
            f"for {source.arch}: {FIX_NETWORK}"
        )
    return sorted(abi_by_name, key=abi_by_name.__getitem__, reverse=True)


def _apt_dir(suite: str, arch: str) -> Path:
    return cache_root() / "apt" / suite / arch


def _download_newest(root: Path, choices: list[PackageVersion], report: Report) -> DebRecord:
    """Phase 3 for one package: the first of `choices` (newest first) that the mirror serves."""
    for package in choices[:-1]:
        try:
            return _download(root, package, report)
        except CorpusError as err:
            report(
                f"{package.package} {package.version} is listed but not served ({err}); trying an older one"
            )
    return _download(root, choices[-1], report)


def _download(root: Path, package: PackageVersion, report: Report) -> DebRecord:
    """Phase 3: the .deb of `package` in root/debs, downloaded unless already there and intact."""
    record = FileRecord(f"debs/{package.deb_name}", package.sha256, package.size)
    if not record.matches(root, hash_contents=True):
        report(f"downloading {package.package} {package.version} ({package.size / 1e6:.1f} MB)")
        (root / "debs").mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root / "debs", prefix=".download-") as tmp:
            apt = PrivateApt(package.suite, package.arch, _apt_dir(package.suite, package.arch))
            fetched = apt.download(package, Path(tmp))
            if sha256_file(fetched) != package.sha256:
                raise CorpusError(f"{package.package} did not match the index's SHA-256: run the fetch again")
            os.replace(fetched, root / record.path)
    return DebRecord(
        package.package, package.version, package.arch, record, f"extracted/{package.sha256[:16]}"
    )


def _prepare(root: Path, debs: list[DebRecord], damaged: set[str], report: Report) -> Manifest:
    """Phases 4 and 5: extract every package and build each architecture's initramfs.

    `damaged` names files that no longer match the old manifest; their extraction is redone.
    """
    for deb in debs:
        _extract(root, deb, any(path.startswith(deb.root + "/") for path in damaged), report)
    kernels = {}
    for name, source in KERNELS.items():
        (deb,) = [d for d in debs if d.arch == source.arch and source.abi_of(d.package) is not None]
        kernels[name] = _kernel_record(root, name, source.suite, deb)
    arches = {}
    for arch in sorted(set(FLAVOUR_ARCH.values())):
        (deb,) = [d for d in debs if d.arch == arch and d.package == BUSYBOX_PACKAGE]
        report(f"building the {arch} initramfs")
        arches[arch] = _build_initramfs(root, arch, root / deb.root / "bin" / "busybox")
    return Manifest(USERSPACE_MARKER, tuple(debs), kernels, arches)


def _extract(root: Path, deb: DebRecord, damaged: bool, report: Report) -> None:
    """Phase 4: unpack into a temporary directory, then rename, so a half extraction is never seen."""
    target = root / deb.root
    if target.is_dir() and not damaged:
        return
    # Readers that still hold files of a damaged extraction open keep them (POSIX unlink).
    shutil.rmtree(target, ignore_errors=True)
    report(f"extracting {deb.package}")
    target.parent.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".extract-"))
    try:
        subprocess.run(
            ["dpkg-deb", "--extract", str(root / deb.deb.path), str(tmp)],
            check=True,
            capture_output=True,
            timeout=EXTRACT_TIMEOUT_S,
        )
        os.replace(tmp, target)
    except FileNotFoundError as err:
        raise CorpusError("dpkg-deb is not installed: install the dpkg package") from err
    except subprocess.TimeoutExpired as err:
        raise CorpusError(
            f"extracting {deb.deb.path} took over {EXTRACT_TIMEOUT_S} s: is the disk full?"
        ) from err
    except subprocess.CalledProcessError as err:
        why = (err.stderr.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
        raise CorpusError(f"could not extract {deb.deb.path} ({why}): is dpkg-deb working?") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _kernel_record(root: Path, name: str, suite: str, deb: DebRecord) -> KernelRecord:
    extracted = root / deb.root
    abi = deb.package.removeprefix("linux-image-")  # e.g. 6.1.0-50-armmp, 6.12.117+deb13-armmp
    image = extracted / "boot" / f"vmlinuz-{abi}"
    if not image.is_file():
        raise CorpusError(f"{deb.package} has no boot/vmlinuz-{abi}: {_LAYOUT_CHANGED}")
    dtb_dir = extracted / "usr" / "lib" / f"linux-image-{abi}"
    return KernelRecord(
        flavour=name,
        suite=suite,
        arch=deb.arch,
        package=deb.package,
        version=deb.version,
        image=_file_record(root, image),
        dtb_dir=dtb_dir.relative_to(root).as_posix() if dtb_dir.is_dir() else None,
    )


def _build_initramfs(root: Path, arch: str, busybox: Path) -> ArchRecord:
    """Phase 5: a deterministic initramfs, stored under a name derived from its own digest."""
    if not busybox.is_file():
        raise CorpusError(f"busybox-static for {arch} has no bin/busybox: {_LAYOUT_CHANGED}")
    image = busybox_initramfs(busybox.read_bytes(), MARKER_INIT_SCRIPT)
    digest = hashlib.sha256(image).hexdigest()
    record = FileRecord(f"initramfs/{arch}-{digest[:16]}.cpio.gz", digest, len(image))
    if not record.matches(root, hash_contents=True):
        (root / "initramfs").mkdir(exist_ok=True)
        partial = root / f"{record.path}.partial"
        partial.write_bytes(image)
        os.replace(partial, root / record.path)
    return ArchRecord(arch, _file_record(root, busybox), record)


def _prune(root: Path, manifest: Manifest, report: Report) -> None:
    """Phase 7: after a --refresh moved to newer packages, the old ones only take disk space."""
    kept = {d.deb.path for d in manifest.debs} | {d.root for d in manifest.debs}
    kept |= {a.initramfs.path for a in manifest.arches.values()}
    for kind in ("debs", "extracted", "initramfs"):
        for stale in sorted((root / kind).glob("*")):
            if stale.relative_to(root).as_posix() not in kept:
                report(f"removing the outdated {stale.relative_to(root)}")
                if stale.is_dir():
                    shutil.rmtree(stale)
                else:
                    stale.unlink()


def _file_record(root: Path, path: Path) -> FileRecord:
    return FileRecord(path.relative_to(root).as_posix(), sha256_file(path), path.stat().st_size)
