"""`explorer corpus fetch`: download, check, extract and prepare the real-kernel corpus.

Each kernel flavour is fetched on its own: one the archive cannot serve is reported with its
reason and the others complete. Phases, each skipped when its output is already there and
matches the manifest and the lock (explorer.corpus.lock):
  1. verify  - every wanted kernel, its architecture's busybox and initramfs are there with the
               SHA-256 the manifest records, taken for today's lock entries; if so, stop here
               (no network, well under a second);
  2. select  - per flavour (and per architecture for busybox-static): the manifest's package if
               it is intact and stands for the lock entry; else ask the release's private apt,
               and take the locked version where the index lists it, then the newest uploads
               (the lock moved on, or `--update-lock`);
  3. download - each .deb not already on disk with the index's SHA-256; a package the index
               lists but the archive does not serve (mid-sync, or superseded) falls back to the
               next candidate, and a flavour fails only when none is served;
  4. extract - each .deb into a directory named after its digest (atomically, via rename);
  5. build   - one initramfs per architecture from its busybox;
  6. record  - write the manifest (with the flavours not asked for kept as they were) last, so
               an interrupted fetch simply resumes; with `--update-lock`, the lock too;
  7. prune   - delete packages, extractions and images the new manifest no longer names.
Concurrent fetches (parallel test sessions) serialise on a lock file. This module must never
touch /etc/apt or anything outside the corpus and apt directories of the explorer cache (and
the lock file, when asked to move it).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from explorer.corpus.apt import FIX_NETWORK, Archive, PackageVersion, PrivateApt, archives, newest_first
from explorer.corpus.catalogue import FLAVOUR_ARCH, KERNELS, USERSPACE_SUITE, KernelSource
from explorer.corpus.initramfs import (
    MARKER_INIT_SCRIPT,
    MARKER_INIT_SHA256,
    USERSPACE_MARKER,
    busybox_initramfs,
)
from explorer.corpus.layout import Corpus, corpus_root
from explorer.corpus.lock import LOCK_PATH, CorpusLock, read_lock, write_lock
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
from explorer.errors import BadInput, CorpusError
from explorer.paths import cache_root

BUSYBOX_PACKAGE = "busybox-static"
EXTRACT_TIMEOUT_S = 300
_LAYOUT_CHANGED = "Debian changed the package's layout; explorer.corpus.fetch needs updating"
_MOVE_LOCK = "`explorer corpus fetch --update-lock` moves the lock"

Report = Callable[[str], None]


def _ignore(_: str) -> None:
    pass


@dataclass(frozen=True)
class FetchOutcome:
    """What a fetch left: the corpus (every flavour it holds, asked for or not), the flavours asked
    for that could not be had and why, and one line for each package taken instead of a locked one."""

    corpus: Corpus
    missing: dict[str, str]
    substitutions: tuple[str, ...]


def fetch(
    flavours: Iterable[str] | None = None,
    update_lock: bool = False,
    report: Report = _ignore,
    root: Path | None = None,
    lock_path: Path = LOCK_PATH,
) -> FetchOutcome:
    """Make the named kernel flavours (all of the catalogue when None) present and verified, doing
    network work only for what is missing or no longer matches the lock.

    `update_lock` takes the newest served packages and moves the lock to them.
    `report` receives one short line per phase step, for progress display.
    """
    wanted = _wanted(flavours)
    root = root or corpus_root()
    root.mkdir(parents=True, exist_ok=True)
    with _exclusive(root / ".lock"):
        existing = read_manifest(root) or Manifest(USERSPACE_MARKER, (), {}, {})
        lock = read_lock(lock_path)
        if not update_lock and _is_current(root, existing, lock, wanted):
            return FetchOutcome(Corpus(root, existing), {}, ())
        selection = _Selection(root, existing, lock, update_lock, report)
        for flavour in wanted:
            selection.select_kernel(flavour)
        manifest = _prepare(root, existing, selection, report)
        if manifest != existing:
            write_manifest(root, manifest)
            report("manifest written")
        if update_lock:
            write_lock(lock.moved(selection.kernels, selection.busybox), lock_path)
            report(f"lock moved: {lock_path}")
        _prune(root, manifest, report)
        return FetchOutcome(Corpus(root, manifest), selection.missing, tuple(selection.substitutions))


def _wanted(flavours: Iterable[str] | None) -> list[str]:
    if flavours is None:
        return sorted(KERNELS)
    wanted = sorted(set(flavours))
    unknown = [f for f in wanted if f not in KERNELS]
    if unknown:
        raise BadInput(f"unknown kernel flavour '{unknown[0]}': choose among {', '.join(sorted(KERNELS))}")
    return wanted


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _locked_sha256(entry: PackageVersion | None) -> str | None:
    return entry.sha256 if entry is not None else None


def _is_current(root: Path, manifest: Manifest, lock: CorpusLock, wanted: list[str]) -> bool:
    """Phase 1: every wanted flavour is there, taken for its lock entry, with intact files, and so
    are its architecture's busybox and initramfs, built with today's marker and /init."""
    if manifest.userspace_marker != USERSPACE_MARKER:
        return False
    for flavour in wanted:
        record = manifest.kernels.get(flavour)
        arch = FLAVOUR_ARCH[flavour]
        if record is None or arch not in manifest.arches:
            return False
        if manifest.arches[arch].init_sha256 != MARKER_INIT_SHA256:
            return False
        kernel_deb = manifest.deb_of(record.package, arch)
        busybox_deb = manifest.deb_of(BUSYBOX_PACKAGE, arch)
        pairs = ((kernel_deb, lock.kernels.get(flavour)), (busybox_deb, lock.busybox.get(arch)))
        for deb, entry in pairs:
            if deb is None or not deb.stands_for(_locked_sha256(entry)):
                return False
            if not deb.deb.matches(root, hash_contents=False):
                return False
        files = (record.image, manifest.arches[arch].busybox, manifest.arches[arch].initramfs)
        if not all(f.matches(root, hash_contents=True) for f in files):
            return False
    return True


class _Selection:
    """Phases 2 and 3: the package of each wanted flavour and of each architecture's busybox,
    downloaded; what could not be had is in `missing` (by flavour), never raised.

    Each release and architecture's package lists are updated at most once, and only when some
    package has to come from the network.
    """

    def __init__(
        self, root: Path, existing: Manifest, lock: CorpusLock, update_lock: bool, report: Report
    ) -> None:
        self.root = root
        self.existing = existing
        self.lock = lock
        self.update_lock = update_lock
        self.report = report
        self.debs: dict[str, DebRecord] = {}  # by flavour
        self.busybox_debs: dict[str, DebRecord] = {}  # by architecture
        self.kernels: dict[str, PackageVersion] = {}  # what was taken from the network, for the lock
        self.busybox: dict[str, PackageVersion] = {}
        self.missing: dict[str, str] = {}
        self.substitutions: list[str] = []
        self._apt_cache: dict[tuple[str, str], list[PrivateApt]] = {}
        self._busybox_failures: dict[str, str] = {}

    def select_kernel(self, flavour: str) -> None:
        source = KERNELS[flavour]
        try:
            self._select_busybox(source.arch)
            locked = None if self.update_lock else self.lock.kernels.get(flavour)
            record = self.existing.kernels.get(flavour)
            kept = None if record is None else self._reusable(record.package, source.arch, locked)
            if kept is not None:
                self.debs[flavour] = kept
                return
            apts = self._apts(source.suite, source.arch)
            newest = []
            for name in _uploads_newest_first(apts, source):
                newest += newest_first(v for apt in apts for v in apt.versions(name))
            deb, taken = self._download_first(flavour, locked, _with_locked_first(apts, locked, newest))
            self.debs[flavour] = deb
            self.kernels[flavour] = taken
        except CorpusError as err:
            self.missing[flavour] = str(err)

    def _select_busybox(self, arch: str) -> None:
        if arch in self.busybox_debs:
            return
        if arch in self._busybox_failures:
            raise CorpusError(self._busybox_failures[arch])
        locked = None if self.update_lock else self.lock.busybox.get(arch)
        kept = self._reusable(BUSYBOX_PACKAGE, arch, locked)
        if kept is not None:
            self.busybox_debs[arch] = kept
            return
        try:
            apts = self._apts(USERSPACE_SUITE, arch)
            newest = newest_first(v for apt in apts for v in apt.versions(BUSYBOX_PACKAGE))
            if not newest:
                raise CorpusError(f"no {BUSYBOX_PACKAGE} in the {USERSPACE_SUITE} index: {FIX_NETWORK}")
            candidates = _with_locked_first(apts, locked, newest)
            self.busybox_debs[arch], self.busybox[arch] = self._download_first(
                f"busybox for {arch}", locked, candidates
            )
        except CorpusError as err:
            self._busybox_failures[arch] = f"{BUSYBOX_PACKAGE} for {arch}: {err}"
            raise CorpusError(self._busybox_failures[arch]) from err

    def _reusable(self, package: str, arch: str, locked: PackageVersion | None) -> DebRecord | None:
        """The package already downloaded for this entry, when it is intact and stands for the lock."""
        if self.update_lock:
            return None
        deb = self.existing.deb_of(package, arch)
        if deb is None or not deb.stands_for(_locked_sha256(locked)):
            return None
        self.report(f"checking {deb.deb.path}")
        return deb if deb.deb.matches(self.root, hash_contents=True) else None

    def _apts(self, release: str, arch: str) -> list[PrivateApt]:
        """The private apts of each archive of `release` (its own, -updates, -security), updated."""
        if (release, arch) not in self._apt_cache:
            self.report(f"updating the {release} {arch} package lists")
            apts = [PrivateApt(archive, arch, _apt_dir(archive.suite, arch)) for archive in archives(release)]
            for apt in apts:
                apt.update()
            self._apt_cache[release, arch] = apts
        return self._apt_cache[release, arch]

    def _download_first(
        self, what: str, locked: PackageVersion | None, candidates: list[PackageVersion]
    ) -> tuple[DebRecord, PackageVersion]:
        """Phase 3: the first of `candidates` the archive serves; a line in `substitutions` when it
        is not the locked package."""
        failures = []
        for package in candidates:
            try:
                deb = _download(self.root, package, _locked_sha256(locked), self.report)
            except CorpusError as err:
                failures.append(f"{package.package} {package.version} ({package.suite})")
                self.report(f"{package.package} {package.version} is listed but not served ({err})")
                continue
            if locked is not None and not package.same_bytes(locked):
                self.substitutions.append(
                    f"{what}: the locked {locked.package} {locked.version} is no longer served; "
                    f"took {package.package} {package.version} ({_MOVE_LOCK})"
                )
            return deb, package
        raise CorpusError(
            f"the index lists {', '.join(failures)} but the archive serves none of them "
            f"(Debian may be mid-sync: try again later)"
        )


def _with_locked_first(
    apts: list[PrivateApt], locked: PackageVersion | None, newest: list[PackageVersion]
) -> list[PackageVersion]:
    """The locked package first, from each archive that still lists it (same version and digest),
    then the newest uploads."""
    if locked is None:
        return newest
    listed = [v for apt in apts for v in apt.versions(locked.package) if v.same_bytes(locked)]
    return listed + [p for p in newest if p not in listed]


def _uploads_newest_first(apts: list[PrivateApt], source: KernelSource) -> list[str]:
    names = {name for apt in apts for name in apt.package_names("linux-image-")}
    abi_by_name = {name: abi for name in names if (abi := source.abi_of(name)) is not None}
    if not abi_by_name:
        raise CorpusError(
            f"no {source.package_template.format(abi='NN')} package in the {source.suite} index "
            f"for {source.arch}: {FIX_NETWORK}"
        )
    return sorted(abi_by_name, key=abi_by_name.__getitem__, reverse=True)


def _apt_dir(suite: str, arch: str) -> Path:
    return cache_root() / "apt" / suite / arch


def _download(root: Path, package: PackageVersion, lock_sha256: str | None, report: Report) -> DebRecord:
    """Phase 3: the .deb of `package` in root/debs, downloaded unless already there and intact."""
    record = FileRecord(f"debs/{package.deb_name}", package.sha256, package.size)
    if not record.matches(root, hash_contents=True):
        report(f"downloading {package.package} {package.version} ({package.size / 1e6:.1f} MB)")
        (root / "debs").mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root / "debs", prefix=".download-") as tmp:
            archive = Archive(package.archive, package.suite)
            apt = PrivateApt(archive, package.arch, _apt_dir(package.suite, package.arch))
            fetched = apt.download(package, Path(tmp))
            if sha256_file(fetched) != package.sha256:
                raise CorpusError(f"{package.package} did not match the index's SHA-256: run the fetch again")
            os.replace(fetched, root / record.path)
    extracted = f"extracted/{package.sha256[:16]}"
    return DebRecord(package.package, package.version, package.arch, record, extracted, lock_sha256)


def _prepare(root: Path, existing: Manifest, selection: _Selection, report: Report) -> Manifest:
    """Phases 4 and 5: extract every selected package and build each architecture's initramfs.

    The flavours not asked for, and those that could not be had this time, are kept as the old
    manifest has them (nothing already fetched is lost). Files that no longer match the old
    manifest have their extraction redone.
    """
    damaged = {f.path for f in existing.product_files() if not f.matches(root, hash_contents=True)}
    kernels = dict(existing.kernels)
    arches = dict(existing.arches)
    for arch, deb in sorted(selection.busybox_debs.items()):
        _extract(root, deb, _holds_any(deb, damaged), report)
        report(f"building the {arch} initramfs")
        arches[arch] = _build_initramfs(root, arch, root / deb.root / "bin" / "busybox")
    for flavour, deb in sorted(selection.debs.items()):
        try:
            _extract(root, deb, _holds_any(deb, damaged), report)
            kernels[flavour] = _kernel_record(root, flavour, KERNELS[flavour].suite, deb)
        except CorpusError as err:
            selection.missing[flavour] = str(err)
    kept_debs = {(record.package, record.arch) for record in kernels.values()} | {
        (BUSYBOX_PACKAGE, arch) for arch in arches
    }
    new_debs = [*selection.debs.values(), *selection.busybox_debs.values()]
    new_keys = {(d.package, d.arch) for d in new_debs}
    debs = [d for d in existing.debs if (d.package, d.arch) not in new_keys] + new_debs
    debs = sorted((d for d in debs if (d.package, d.arch) in kept_debs), key=lambda d: (d.arch, d.package))
    return Manifest(USERSPACE_MARKER, tuple(debs), kernels, arches)


def _holds_any(deb: DebRecord, paths: set[str]) -> bool:
    return any(path.startswith(deb.root + "/") for path in paths)


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
    return ArchRecord(arch, _file_record(root, busybox), record, MARKER_INIT_SHA256)


def _prune(root: Path, manifest: Manifest, report: Report) -> None:
    """Phase 7: once the lock moved to newer packages, the old ones only take disk space."""
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
