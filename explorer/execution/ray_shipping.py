"""Ray shipping: what travels between the master and a Ray worker through Ray's object store.

Nothing travels through an assumed shared filesystem, and a worker never sees a path of the
master's; what does travel is content addressed:

- the files a job's config names (kernel, DTB, initrd), put once per executor (one search
  session) and named by their sha256;
- the runner build, as just what one target's runs need: its QEMU, its plugin and its manifest,
  under the build identity (explorer.runner.build: native/build.py's content hash of everything
  that makes it). The master puts them whether or not a worker will need them (about 45 MB per
  target, once per session); a worker fetches only what it lacks (explorer.execution.ray_worker);
- snapshots (explorer.search.snapshots, the engine's `Job.snapshot`): a continue job's snapshot
  is read and put by the master once per directory while it is among the SHIPPED_SNAPSHOTS_KEPT
  last used (a generation's), under `snapshot_digest`, the sha256 of its files' names and
  sha256s (measured on one host, a 34 MB snapshot: put 0.11 s); a save job's snapshot comes
  back as the files of its `TaskResult`.

Code is not shipped: every node runs the same explorer and Ray as the master (installed there,
or the same checkout). This module never imports Ray (the master's `put` is given to `Shipper`),
never runs a job and never writes a worker's cache.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from explorer.errors import BadInput
from explorer.execution.jobs import Job, Outcome, RunnerSetup, SnapshotUse
from explorer.runner.build import MANIFEST, PLUGIN, binary, build_identity
from explorer.runner.machine_config_pb2 import MachineConfig
from explorer.runner.snapshot import CONSOLE_FILE, EVENTS_FILE, MANIFEST_FILE, PLUGIN_STATE_FILE, VM_FILE
from explorer.search.snapshots import MAX_SNAPSHOTS_PER_GENERATION

# The MachineConfig.boot fields that name files on the master.
BOOT_FILES = ("kernel", "dtb", "initrd")
# A snapshot directory's files (explorer.runner.snapshot), the manifest last: it is written last,
# because a directory without one holds no snapshot.
SNAPSHOT_FILES = (VM_FILE, PLUGIN_STATE_FILE, EVENTS_FILE, CONSOLE_FILE, MANIFEST_FILE)
# Snapshots the master keeps put (their ObjectRefs held) after use: one generation's at most.
SHIPPED_SNAPSHOTS_KEPT = MAX_SNAPSHOTS_PER_GENERATION

# Puts bytes where workers can fetch them, and returns the handle they fetch by (ray.put).
Put = Callable[[bytes], Any]


@dataclass(frozen=True)
class ShippedFile:
    """One file's content, put where workers can fetch it, and the sha256 they check it against."""

    sha256: str
    # A handle of the bytes (a Ray ObjectRef). Nested in this record, Ray hands it to a task
    # unresolved, so a worker fetches only the files it does not hold yet.
    content: Any


@dataclass(frozen=True)
class ShippedBuild:
    """The master's runner build, as much of it as one target's runs need."""

    # explorer.runner.build.build_identity: native/build.py's hash of everything that makes the
    # build, which snapshots carry too.
    build_hash: str
    # By path in the build directory (explorer.runner.build): the target's QEMU, PLUGIN, MANIFEST.
    files: dict[str, ShippedFile]


@dataclass(frozen=True)
class ShippedSnapshot:
    """A snapshot directory's files, put where workers can fetch them, and the point it was saved at."""

    # snapshot_digest of the files: the directory's name in a worker's cache.
    digest: str
    point: int
    # By file name (SNAPSHOT_FILES).
    files: dict[str, ShippedFile]


@dataclass(frozen=True)
class ShippedJob:
    """A job whose config names files on the master, those files' contents by boot field, and its
    part in sharing a boot, without the master's paths."""

    # The job as a full boot (its `snapshot` None: the fields below say what the worker does).
    job: Job
    files: dict[str, ShippedFile]
    # A save job: the point to boot to and save at.
    save_at: int | None = None
    # A continue job: the snapshot to continue from (None also when the master could not read it).
    resume: ShippedSnapshot | None = None


@dataclass(frozen=True)
class TaskResult:
    """What a task returns: the job's outcome and, for a save job that saved, the snapshot's files."""

    outcome: Outcome
    # By file name (SNAPSHOT_FILES); None when the run ended before its point or was no save.
    saved: dict[str, bytes] | None = None


def snapshot_digest(file_digests: Mapping[str, str]) -> str:
    """The content address of a snapshot directory: the sha256 of its files' names and sha256s."""
    listing = "".join(f"{name}\0{digest}\n" for name, digest in sorted(file_digests.items()))
    return hashlib.sha256(listing.encode()).hexdigest()


class Shipper:
    """The master's side of shipping: each distinct file is read, hashed and put once.

    Kept for one executor, that is one search session, whose files do not change under it
    (a resumed session refuses a changed kernel). Snapshots are the exception: the engine's
    cache evicts them, so only the SHIPPED_SNAPSHOTS_KEPT last used stay put. A directory of the
    cache is named by what its snapshot is of (the build, the state, the point), so content put
    for a directory stays a valid snapshot of it even if the cache took it again since.
    """

    def __init__(self, setup: RunnerSetup, put: Put) -> None:
        if setup.plugin.path != setup.qemu_dir / PLUGIN or not (setup.qemu_dir / MANIFEST).is_file():
            raise BadInput(
                f"{setup.qemu_dir} is not a build of native/build.py (with {MANIFEST} and {PLUGIN}): "
                "the Ray executor ships only such builds"
            )
        self._qemu_dir = setup.qemu_dir
        self._put = put
        self._by_path: dict[Path, ShippedFile] = {}
        self._by_digest: dict[str, ShippedFile] = {}
        self._builds: dict[str, ShippedBuild] = {}
        self._snapshots: OrderedDict[tuple[Path, int], ShippedSnapshot] = OrderedDict()

    def job(self, job: Job) -> tuple[ShippedJob, ShippedBuild]:
        """`job` with its files and its snapshot's, and the build its target needs."""
        config = MachineConfig()
        config.ParseFromString(job.config)
        files = {name: self.file(Path(path)) for name in BOOT_FILES if (path := getattr(config.boot, name))}
        full_boot = replace(job, snapshot=None)
        use = job.snapshot
        if use is None:
            shipped = ShippedJob(full_boot, files)
        elif use.save:
            shipped = ShippedJob(full_boot, files, save_at=use.point)
        else:
            shipped = ShippedJob(full_boot, files, resume=self.snapshot(use))
        return shipped, self.build(config.target)

    def build(self, target: str) -> ShippedBuild:
        if target not in self._builds:
            paths = (binary(target), PLUGIN, MANIFEST)
            files = {path: self.file(self._qemu_dir / path) for path in paths}
            self._builds[target] = ShippedBuild(build_identity(self._qemu_dir), files)
        return self._builds[target]

    def file(self, path: Path) -> ShippedFile:
        if path not in self._by_path:
            try:
                content = path.read_bytes()
            except OSError as error:
                raise BadInput(
                    f"cannot read {path} to send it to the Ray workers: {error.strerror}"
                ) from None
            digest = hashlib.sha256(content).hexdigest()
            if digest not in self._by_digest:
                self._by_digest[digest] = ShippedFile(digest, self._put(content))
            self._by_path[path] = self._by_digest[digest]
        return self._by_path[path]

    def snapshot(self, use: SnapshotUse) -> ShippedSnapshot | None:
        """The snapshot `use` continues from, put once while among the last used; None if it is
        unreadable (evicted since the engine chose it: the job boots in full)."""
        key = (use.directory, use.point)
        if key not in self._snapshots:
            try:
                contents = {name: (use.directory / name).read_bytes() for name in SNAPSHOT_FILES}
            except OSError:
                return None
            files = {
                name: ShippedFile(hashlib.sha256(content).hexdigest(), self._put(content))
                for name, content in contents.items()
            }
            digest = snapshot_digest({name: file.sha256 for name, file in files.items()})
            self._snapshots[key] = ShippedSnapshot(digest, use.point, files)
        self._snapshots.move_to_end(key)
        while len(self._snapshots) > SHIPPED_SNAPSHOTS_KEPT:
            self._snapshots.popitem(last=False)
        return self._snapshots[key]
