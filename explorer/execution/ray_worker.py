"""The Ray worker's side: what a Ray task does on its node with what the master shipped.

`run_shipped` is the task. It finds the runner build to run (the directory $EXPLORER_QEMU names
on the worker, else the master's build by hash in the worker's cache, where `explorer runner
build` made it, else the shipped one, written into <cache>/ray/builds/<hash>/), writes the job's
files into the worker's file cache <cache>/ray/files/<sha256>/<name> and boots a copy of the
config rewritten to those paths (`run_job`). Snapshots live in the worker's snapshot cache
(explorer.execution.snapshot_cache, the master's kind) in <cache>/ray/snapshots/, under their
content address: a save job boots into a staging directory of that cache and keeps it there,
its files going back to the master; a continue job's snapshot is unpacked there once and later
tasks on that worker reuse it, every file checked against its sha256 before each use
(measured on one host, a 34 MB snapshot: received 0.23 s, checked for reuse 0.06 s). The job's
Snapshot goes to the runner as it came but for its directory, the worker's. A worker keeps the
snapshots it saved or received within WORKER_SNAPSHOT_LIMIT_BYTES, the least recently used
evicted first.

Invariants: a file in a worker's cache is whole and has the content its name says: it is
written to a temporary name, checked against the sha256 the master sent, then renamed. A worker
never runs another build than the master's: its own build of another hash, or one lacking the
job's binaries or with another manifest, refuses with one line naming both hashes (a RunnerError
the master raises, and the search stops there). A snapshot that cannot reach a worker whole
(content other than its sha256s, an object Ray lost) makes that job a full boot, the same outcome
by the engine's invariant, never a failure; a worker never uses a path of the master's. A worker
never reads or scores a result, and never submits or cancels tasks (explorer.execution.ray_executor).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray
import ray.exceptions

from explorer.errors import RunnerError
from explorer.execution.jobs import Job, RunnerSetup, run_job
from explorer.execution.ray_shipping import (
    SNAPSHOT_FILES,
    ShippedBuild,
    ShippedFile,
    ShippedJob,
    ShippedSnapshot,
    TaskResult,
)
from explorer.execution.snapshot_cache import SnapshotCache
from explorer.paths import cache_root
from explorer.runner.build import MANIFEST, PLUGIN, binary, build_identity, builds_directory
from explorer.runner.command import Plugin
from explorer.runner.machine_config_pb2 import MachineConfig
from explorer.runner.snapshot import MANIFEST_FILE, Snapshot

_FILE_MODE = 0o644
_PROGRAM_MODE = 0o755
# What a worker's cache keeps of snapshots (30-45 MB each on a Linux boot).
WORKER_SNAPSHOT_LIMIT_BYTES = 2 << 30

# Reads a shipped file's content back from where the master put it (ray.get on a worker).
Fetch = Callable[[Any], bytes]


def materialized(shipped: ShippedFile, path: Path, fetch: Fetch, mode: int) -> Path:
    """`path`, holding the shipped content: fetched, checked and written only if it is not there yet."""
    if path.is_file():
        return path
    content = fetch(shipped.content)
    digest = hashlib.sha256(content).hexdigest()
    if digest != shipped.sha256:
        raise RunnerError(f"received {path.name} with sha256 {digest}, not the {shipped.sha256} sent")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Workers on one host may write the same file at once: each its own temporary, renamed whole.
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return path


def localized(
    config: MachineConfig, files: dict[str, ShippedFile], cache: Path, fetch: Fetch
) -> MachineConfig:
    """A copy of `config` whose boot files are this worker's copies, under cache/ray/files/<sha256>/.

    A copy keeps its file's name, so that nothing the runner says about it reads differently.
    """
    local = MachineConfig()
    local.CopyFrom(config)
    for field, shipped in files.items():
        name = Path(getattr(config.boot, field)).name
        path = cache / "ray" / "files" / shipped.sha256 / name
        setattr(local.boot, field, str(materialized(shipped, path, fetch, _FILE_MODE)))
    return local


def worker_build(build: ShippedBuild, target: str, own: Path | None, cache: Path, fetch: Fetch) -> Path:
    """The build directory this worker runs `target` with; RunnerError if its own build is another.

    Its own: `own` ($EXPLORER_QEMU on the worker), else the master's build by hash in `cache` when
    `explorer runner build` made it there. Without one, the shipped build, written under
    cache/ray/builds/<hash>/.
    """
    native = builds_directory(cache) / build.build_hash
    if own is None and (native / MANIFEST).is_file():
        own = native
    if own is not None:
        refuse_another_build(own, build, (binary(target), PLUGIN))
        return own
    directory = cache / "ray" / "builds" / build.build_hash
    for path, shipped in build.files.items():
        materialized(shipped, directory / path, fetch, _FILE_MODE if path == MANIFEST else _PROGRAM_MODE)
    return directory


def refuse_another_build(directory: Path, build: ShippedBuild, needed: Sequence[str]) -> None:
    """RunnerError, in one line naming both hashes, unless `directory` is the build the master runs."""
    worker = f"worker {socket.gethostname()}: its runner build {build_identity(directory)}"
    fix = (
        "run `explorer runner build` there, or unset EXPLORER_QEMU there to receive the master's through Ray"
    )
    if build_identity(directory) != build.build_hash:
        raise RunnerError(f"{worker} is not the master's {build.build_hash}: {fix}")
    manifest = directory / MANIFEST
    theirs = hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.is_file() else None
    if theirs != build.files[MANIFEST].sha256:
        raise RunnerError(f"{worker} has another {MANIFEST} than the master's {build.build_hash}: {fix}")
    missing = [path for path in needed if not (directory / path).is_file()]
    if missing:
        raise RunnerError(
            f"{worker} lacks {', '.join(missing)}, which the master's {build.build_hash} has: {fix}"
        )


def received_snapshot(
    shipped: ShippedSnapshot, snapshot: Snapshot, cache: SnapshotCache, fetch: Fetch
) -> Path | None:
    """This worker's copy of a shipped snapshot, in its cache; None if it cannot be had whole.

    One already there is used when every file is what was sent (its sha256), else fetched again
    whole; fetched content that is not its sha256 is never written (`materialized`).
    """
    found = cache.get(snapshot.state_id, snapshot.point)
    if found is not None and _holds(found, shipped):
        return found
    cache.remove(snapshot.state_id, snapshot.point)
    staging = cache.staging(snapshot.state_id, snapshot.point)
    try:
        for name in SNAPSHOT_FILES:
            materialized(shipped.files[name], staging / name, fetch, _FILE_MODE)
    except (RunnerError, OSError, ray.exceptions.RayError):
        shutil.rmtree(staging, ignore_errors=True)
        return None
    return cache.keep(staging, snapshot.state_id, snapshot.point)


def _holds(directory: Path, shipped: ShippedSnapshot) -> bool:
    try:
        return all(
            hashlib.sha256((directory / name).read_bytes()).hexdigest() == shipped.files[name].sha256
            for name in SNAPSHOT_FILES
        )
    except OSError:
        return False  # evicted by another worker process meanwhile


def run_saving(job: Job, snapshot: Snapshot, setup: RunnerSetup, cache: SnapshotCache | None) -> TaskResult:
    """Boot `job` to its point and save it: the partial run, and the snapshot's files if it saved one.

    The snapshot is written into a staging directory of this worker's cache and kept there, under
    its content address, for the tasks continuing from it here; without a cache (`worker_snapshots`
    could not make one), into a temporary directory, and not kept.
    """
    if cache is None:
        staging = Path(tempfile.mkdtemp(prefix="explorer-save-"))
    else:
        staging = cache.staging(snapshot.state_id, snapshot.point)
    try:
        outcome = run_job(replace(job, snapshot=replace(snapshot, directory=staging)), setup)
        if not (staging / MANIFEST_FILE).is_file():
            return TaskResult(outcome)
        try:
            contents = {name: (staging / name).read_bytes() for name in SNAPSHOT_FILES}
        except OSError:
            return TaskResult(outcome)  # an incomplete save: the children boot in full
        if cache is not None:
            cache.keep(staging, snapshot.state_id, snapshot.point)
        return TaskResult(outcome, contents)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def worker_snapshots(cache: Path, qemu_dir: Path) -> SnapshotCache | None:
    """This worker's snapshot cache, cache/ray/snapshots/; None when its disk refuses one (then a
    continue job boots in full, and a save is not kept here)."""
    try:
        return SnapshotCache(cache / "ray" / "snapshots", qemu_dir, WORKER_SNAPSHOT_LIMIT_BYTES)
    except OSError:
        return None


def run_shipped(shipped: ShippedJob, build: ShippedBuild, plugin_arguments: tuple[str, ...]) -> TaskResult:
    """A Ray task: boot one shipped job on this worker, with its copies of the files, the build
    and the snapshot."""
    config = MachineConfig()
    config.ParseFromString(shipped.job.config)
    own = os.environ.get("EXPLORER_QEMU")
    cache = cache_root()
    qemu_dir = worker_build(build, config.target, Path(own) if own else None, cache, ray.get)
    local = localized(config, shipped.files, cache, ray.get)
    job = replace(shipped.job, config=local.SerializeToString(), snapshot=None)
    setup = RunnerSetup(qemu_dir, Plugin(qemu_dir / PLUGIN, plugin_arguments))
    snapshot = shipped.job.snapshot
    if snapshot is None:
        return TaskResult(run_job(job, setup))
    snapshots = worker_snapshots(cache, qemu_dir)
    if snapshot.save:
        return run_saving(job, snapshot, setup, snapshots)
    directory = None
    if shipped.snapshot is not None and snapshots is not None:
        directory = received_snapshot(shipped.snapshot, snapshot, snapshots, ray.get)
    if directory is not None:
        job = replace(job, snapshot=replace(snapshot, directory=directory))
    return TaskResult(run_job(job, setup))
