"""The snapshot cache: the snapshots one machine keeps on its disk, by content address, within a size.

One class serves the master (WORK/snapshots/, beside a search's store: explorer.search.session)
and every Ray worker node (<cache>/ray/snapshots/: explorer.execution.ray_worker). An entry is a
directory named by its key, the snapshot's content address (explorer.runner.snapshot.snapshot_key:
the runner build, the state whose boot it saved, the point), so entries survive a resume and a
stale one cannot be mistaken for another. A snapshot is written into a staging directory of its
writer's (`staging`), never taken for an entry, and filed under its key only once whole (`keep`).

Invariants: an entry that is not a complete snapshot of this build at its point (a kill
half-way, a damaged file) is removed when found and reported as absent: a cache never fails a
search. Several processes may share one cache (a node's Ray workers): filing is a rename, what
another process filed first stays, what is already gone is skipped, and a staging directory
whose writer process has ended is a leftover, removed by the next cache opened or eviction.
Beyond the limit, the least recently used entries go first (use = an entry's directory mtime),
never the one in use. It never runs anything and never decides which snapshot to take.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from explorer.errors import RunnerError
from explorer.runner.build import build_identity
from explorer.runner.snapshot import read_manifest, snapshot_key

# A staging directory's name: the prefix, its writer's pid, a dash, a random tail.
_STAGING_PREFIX = ".staging-"


class SnapshotCache:
    """Snapshots of the runner build in `qemu_dir`, in `root`, at most `limit_bytes` on disk in all."""

    def __init__(self, root: Path, qemu_dir: Path, limit_bytes: int) -> None:
        self.root = root
        self._qemu_dir = qemu_dir
        self._build = build_identity(qemu_dir)
        self._limit = limit_bytes
        root.mkdir(parents=True, exist_ok=True)
        self._remove_leftovers()

    def key(self, state_id: str, point: int) -> str:
        return snapshot_key(self._build, state_id, point)

    def get(self, state_id: str, point: int) -> Path | None:
        """The snapshot of `state_id`'s boot at `point`, marked as just used; None if there is no good one."""
        directory = self.root / self.key(state_id, point)
        if not directory.exists():
            return None
        try:
            read_manifest(directory, self._qemu_dir, point)
        except RunnerError:
            shutil.rmtree(directory, ignore_errors=True)
            return None
        os.utime(directory)
        return directory

    def staging(self, state_id: str, point: int) -> Path:
        """A new empty directory of this process's for the snapshot of `state_id` at `point`."""
        prefix = f"{_STAGING_PREFIX}{os.getpid()}-{self.key(state_id, point)[:16]}-"
        return Path(tempfile.mkdtemp(dir=self.root, prefix=prefix))

    def keep(self, staging: Path, state_id: str, point: int) -> Path | None:
        """File a written snapshot under its key, then evict down to the limit; None if it is no good.

        A good entry another process filed first stays (it is the same snapshot), and the staging
        directory goes."""
        try:
            read_manifest(staging, self._qemu_dir, point)
        except RunnerError:
            shutil.rmtree(staging, ignore_errors=True)
            return None
        final = self.root / self.key(state_id, point)
        if self.get(state_id, point) is None:
            # An OSError: another process filed it since.
            with contextlib.suppress(OSError):
                staging.rename(final)
        shutil.rmtree(staging, ignore_errors=True)
        self.evict(keep=final)
        return final if final.exists() else None

    def remove(self, state_id: str, point: int) -> None:
        shutil.rmtree(self.root / self.key(state_id, point), ignore_errors=True)

    def size_bytes(self) -> int:
        return sum(_tree_bytes(entry) for entry in self._entries())

    def evict(self, keep: Path) -> None:
        """Remove the least recently used entries until the cache fits, never `keep` (the one in use)."""
        self._remove_leftovers()
        sized: list[tuple[float, int, Path]] = []
        total = 0
        for entry in self._entries():
            try:
                used, size = entry.stat().st_mtime, _tree_bytes(entry)
            except OSError:
                continue  # removed by another process meanwhile
            total += size
            if entry != keep:
                sized.append((used, size, entry))
        for _, size, entry in sorted(sized):
            if total <= self._limit:
                return
            total -= size
            shutil.rmtree(entry, ignore_errors=True)

    def _entries(self) -> list[Path]:
        return [entry for entry in self.root.iterdir() if entry.is_dir() and not _is_staging(entry)]

    def _remove_leftovers(self) -> None:
        for entry in self.root.iterdir():
            if _is_staging(entry) and not _running(_writer(entry)):
                shutil.rmtree(entry, ignore_errors=True)


def _is_staging(entry: Path) -> bool:
    return entry.name.startswith(_STAGING_PREFIX)


def _writer(staging: Path) -> int:
    pid = staging.name.removeprefix(_STAGING_PREFIX).partition("-")[0]
    return int(pid) if pid.isdigit() else 0


def _running(pid: int) -> bool:
    """Whether process `pid` of this host is alive (0, an unreadable name: no)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's
    return True


def _tree_bytes(directory: Path) -> int:
    """Bytes on disk (the VM file is sparse: its apparent size would overstate it)."""
    return sum(path.stat().st_blocks * 512 for path in directory.rglob("*") if path.is_file())
