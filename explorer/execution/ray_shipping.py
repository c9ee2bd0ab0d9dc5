"""Ray shipping: what travels between the master and a Ray worker through Ray's object store.

Nothing travels through an assumed shared filesystem, and a worker never sees a path of the
master's; what does travel is content addressed:

- the files a job's config names (kernel, DTB, initrd), put once per executor (one search
  session) and named by their sha256;
- the runner build, as just what one target's runs need: its QEMU, its plugin and its manifest,
  under the build identity (explorer.runner.build: native/build.py's content hash of everything
  that makes it). The master puts them whether or not a worker will need them (about 45 MB per
  target, once per session); a worker fetches only what it lacks (explorer.execution.ray_worker);
- snapshots (the job's explorer.runner.snapshot.Snapshot, which travels as it is): a continue
  job's snapshot files are read and put by the master once per snapshot while the jobs of one
  `Shipper.jobs` call (one executor run: a generation's) use it, each with its sha256 (measured
  on one host, a 34 MB snapshot: put 0.11 s); a save job's snapshot comes back as the files of
  its `TaskResult`. A worker keeps them under the snapshot's content address (snapshot_key).

Code is not shipped: every node runs the same explorer and Ray as the master (installed there,
or the same checkout). This module never imports Ray (the master's `put` is given to `Shipper`),
never runs a job and never writes a worker's cache.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from explorer.errors import BadInput
from explorer.execution.jobs import Job, Outcome, RunnerSetup
from explorer.runner.build import MANIFEST, PLUGIN, binary, build_identity
from explorer.runner.machine_config_pb2 import MachineConfig
from explorer.runner.snapshot import (
    CONSOLE_FILE,
    EVENTS_FILE,
    MANIFEST_FILE,
    PLUGIN_STATE_FILE,
    VM_FILE,
    Snapshot,
)

# The MachineConfig.boot fields that name files on the master.
BOOT_FILES = ("kernel", "dtb", "initrd")
# A snapshot directory's files (explorer.runner.snapshot), the manifest last: it is written last,
# because a directory without one holds no snapshot.
SNAPSHOT_FILES = (VM_FILE, PLUGIN_STATE_FILE, EVENTS_FILE, CONSOLE_FILE, MANIFEST_FILE)

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
    """A snapshot directory's files, put where workers can fetch them: by file name (SNAPSHOT_FILES)."""

    files: dict[str, ShippedFile]


@dataclass(frozen=True)
class ShippedJob:
    """A job whose config names files on the master, those files' contents by boot field, and the
    files of the snapshot it continues from; the job's snapshot, if any, still names the master's
    directory, which the worker replaces with its own."""

    job: Job
    files: dict[str, ShippedFile]
    # A continue job's snapshot files (its job's snapshot is None when the master could not read them).
    snapshot: ShippedSnapshot | None = None


@dataclass(frozen=True)
class TaskResult:
    """What a task returns: the job's outcome and, for a save job that saved, the snapshot's files."""

    outcome: Outcome
    # By file name (SNAPSHOT_FILES); None when the run ended before its point or was no save.
    saved: dict[str, bytes] | None = None


class Shipper:
    """The master's side of shipping: each distinct file is read, hashed and put once.

    Kept for one executor, that is one search session, whose files do not change under it
    (a resumed session refuses a changed kernel). Snapshots are the exception: the engine's
    cache evicts them, so only those the jobs of the last `jobs` call use stay put. A directory
    of the cache is named by what its snapshot is of (the build, the state, the point), so
    content put for a directory stays a valid snapshot of it even if the cache took it again.
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
        self._snapshots: dict[Snapshot, ShippedSnapshot] = {}

    def jobs(self, jobs: Sequence[Job]) -> list[tuple[ShippedJob, ShippedBuild]]:
        """Each job with its files and its snapshot's, and the build its target needs; the
        snapshots put for an earlier call's jobs and not used by these are let go."""
        earlier, self._snapshots = self._snapshots, {}
        return [self._job(job, earlier) for job in jobs]

    def _job(self, job: Job, earlier: dict[Snapshot, ShippedSnapshot]) -> tuple[ShippedJob, ShippedBuild]:
        config = MachineConfig()
        config.ParseFromString(job.config)
        files = {name: self.file(Path(path)) for name in BOOT_FILES if (path := getattr(config.boot, name))}
        build = self.build(config.target)
        if job.snapshot is None or job.snapshot.save:
            return ShippedJob(job, files), build
        snapshot = (
            self._snapshots.get(job.snapshot) or earlier.get(job.snapshot) or self.snapshot(job.snapshot)
        )
        if snapshot is None:
            # Evicted since the engine chose it: the job boots in full.
            return ShippedJob(replace(job, snapshot=None), files), build
        self._snapshots[job.snapshot] = snapshot
        return ShippedJob(job, files, snapshot), build

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

    def snapshot(self, snapshot: Snapshot) -> ShippedSnapshot | None:
        """The files of the snapshot in snapshot.directory, put; None if they are unreadable."""
        try:
            contents = {name: (snapshot.directory / name).read_bytes() for name in SNAPSHOT_FILES}
        except OSError:
            return None
        return ShippedSnapshot(
            {
                name: ShippedFile(hashlib.sha256(content).hexdigest(), self._put(content))
                for name, content in contents.items()
            }
        )
