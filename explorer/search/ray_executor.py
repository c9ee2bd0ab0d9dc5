"""The Ray executor: a generation's jobs as Ray tasks on a cluster that shares nothing with the master.

The search sees only explorer.search.executor's `Executor`; this one submits each job as one Ray
task (one CPU) and yields outcomes as tasks finish (`ray.wait`). What a worker needs travels
through Ray's object store, never through an assumed shared filesystem:

- the files a job's config names (kernel, DTB, initrd) are put once per executor (one search
  session), named by their sha256; a worker writes each into its own cache under
  <cache>/ray/files/<sha256>/<name> and boots a copy of the config rewritten to those paths;
- the runner build: a worker runs its own build when it has one (the directory $EXPLORER_QEMU
  names on the worker, else the master's build by hash in the worker's cache, where
  `explorer runner build` made it) and otherwise the master's, received as just its QEMU for the
  target, its plugin and its manifest into <cache>/ray/builds/<hash>/. The hash is the build
  identity (explorer.runner.build: native/build.py's content hash of everything that makes it).

- snapshots (explorer.search.snapshots, the engine's `Job.snapshot`): a save job boots on a
  worker into a directory of the worker's own, and the snapshot's files come back as the task's
  result; the master writes them into the directory the job names (the engine's staging in
  WORK/snapshots/, whose one writer the master stays). A continue job's snapshot is read and put
  by the master once per directory while it is among the SHIPPED_SNAPSHOTS_KEPT last used (a
  generation's), and unpacked on the worker into <cache>/ray/snapshots/<digest>/, the digest
  being the sha256 of its files' names and sha256s; later tasks on that worker reuse it, every
  file checked against its sha256 before each use (measured on one host, a 34 MB snapshot: put
  0.11 s, received 0.23 s, checked for reuse 0.06 s). A worker keeps the snapshots it saved or
  received within WORKER_SNAPSHOT_LIMIT_BYTES, the least recently used evicted first.

The master puts the build's files whether or not a worker will need them (about 45 MB per target,
once per session); a worker fetches only what it lacks. Code is not shipped: every node runs the
same explorer and Ray as the master (installed there, or the same checkout).

Invariants: a file in a worker's cache is whole and has the content its name says: it is
written to a temporary name, checked against the sha256 the master sent, then renamed. A worker
never runs another build than the master's: its own build of another hash, or one lacking the
job's binaries or with another manifest, refuses with one line naming both hashes, and the
search stops there. A snapshot that cannot reach a worker whole (gone from the master, content
other than its digest, an object Ray lost) makes that job a full boot, the same outcome by the
engine's invariant, never a failure; a worker never uses a path of the master's. A worker that
dies mid-run (its process or its node) costs only that run: Ray runs the task again elsewhere,
up to WORKER_DEATH_RETRIES times; a run that fails for a reason of its own job (QEMU refuses the
config) is an outcome (`run_job`), never retried. At `stop_at` the tasks still queued or running
are cancelled with force (their QEMUs die with their worker processes) and yield nothing, as
with the local pool. It never reads or scores a result.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import socket
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ray
import ray.exceptions

from explorer.errors import BadInput, ExplorerError, RunnerError
from explorer.paths import cache_root
from explorer.runner.build import MANIFEST, PLUGIN, binary, build_identity, builds_directory
from explorer.runner.launch import Plugin
from explorer.runner.machine_config_pb2 import MachineConfig
from explorer.runner.snapshot import CONSOLE_FILE, EVENTS_FILE, MANIFEST_FILE, PLUGIN_STATE_FILE, VM_FILE
from explorer.search.executor import Job, Outcome, RunnerSetup, SnapshotUse, run_job
from explorer.search.snapshots import MAX_SNAPSHOTS_PER_GENERATION

# Attempts after the first when a task's worker process or node dies (never for a run's own failure).
WORKER_DEATH_RETRIES = 3
# How long the master waits for the cluster's address to accept a connection before giving up.
CONNECT_TIMEOUT_SECONDS = 5.0
# The MachineConfig.boot fields that name files on the master.
BOOT_FILES = ("kernel", "dtb", "initrd")
_FILE_MODE = 0o644
_PROGRAM_MODE = 0o755
# A snapshot directory's files (explorer.runner.snapshot), the manifest last: it is written last,
# because a directory without one holds no snapshot.
SNAPSHOT_FILES = (VM_FILE, PLUGIN_STATE_FILE, EVENTS_FILE, CONSOLE_FILE, MANIFEST_FILE)
# Snapshots the master keeps put (their ObjectRefs held) after use: one generation's at most.
SHIPPED_SNAPSHOTS_KEPT = MAX_SNAPSHOTS_PER_GENERATION
# What a worker's cache keeps of snapshots (30-45 MB each on a Linux boot).
WORKER_SNAPSHOT_LIMIT_BYTES = 2 << 30
# A save a worker is writing lives in <cache>/ray/snapshots/<SAVING_PREFIX>*, never taken for a
# snapshot; one older than STALE_SAVE_SECONDS was left by a worker that died, and eviction removes it.
SAVING_PREFIX = ".saving-"
STALE_SAVE_SECONDS = 24 * 3600

# Reads a shipped file's content back from where the master put it (ray.get on a worker).
Fetch = Callable[[Any], bytes]
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


def received_snapshot(shipped: ShippedSnapshot, snapshots: Path, fetch: Fetch) -> Path | None:
    """This worker's copy of a shipped snapshot, under snapshots/<digest>/; None if it cannot be had whole.

    A file already there is checked against its sha256 first and fetched again if it differs;
    fetched content that is not its sha256 is never written (`materialized`).
    """
    directory = snapshots / shipped.digest
    try:
        for name in SNAPSHOT_FILES:
            path = directory / name
            if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() != shipped.files[name].sha256:
                path.unlink()
            materialized(shipped.files[name], path, fetch, _FILE_MODE)
        os.utime(directory)
    except (RunnerError, OSError, ray.exceptions.RayError):
        return None
    evict_snapshots(snapshots, WORKER_SNAPSHOT_LIMIT_BYTES, keep=directory)
    return directory


def run_saving(job: Job, point: int, setup: RunnerSetup, snapshots: Path) -> TaskResult:
    """Boot `job` to `point` and save it: the partial run, and the snapshot's files if it saved one.

    The snapshot is written into a directory of this worker's and kept in its cache, under its
    digest, for the tasks continuing from it here.
    """
    snapshots.mkdir(parents=True, exist_ok=True)
    saving = Path(tempfile.mkdtemp(dir=snapshots, prefix=SAVING_PREFIX))
    try:
        outcome = run_job(replace(job, snapshot=SnapshotUse(saving, point, save=True)), setup)
        if not (saving / MANIFEST_FILE).is_file():
            return TaskResult(outcome)
        try:
            contents = {name: (saving / name).read_bytes() for name in SNAPSHOT_FILES}
        except OSError:
            return TaskResult(outcome)  # an incomplete save: the children boot in full
        digest = snapshot_digest(
            {name: hashlib.sha256(content).hexdigest() for name, content in contents.items()}
        )
        kept = snapshots / digest
        # Another worker process may have kept the same snapshot first: then theirs stays.
        with contextlib.suppress(OSError):
            saving.rename(kept)
        evict_snapshots(snapshots, WORKER_SNAPSHOT_LIMIT_BYTES, keep=kept)
        return TaskResult(outcome, contents)
    finally:
        shutil.rmtree(saving, ignore_errors=True)


def evict_snapshots(snapshots: Path, limit_bytes: int, keep: Path) -> None:
    """Remove the least recently used snapshots (directory mtime) until the rest fit in `limit_bytes`.

    `keep` (the one a task is about to use) is never removed, nor a save still being written;
    one older than STALE_SAVE_SECONDS is a dead worker's leftover and goes. Other worker
    processes of this node may evict at the same time: what is already gone is skipped.
    """
    entries: list[tuple[float, int, Path]] = []
    now = time.time()
    for entry in snapshots.iterdir():
        try:
            used = entry.stat().st_mtime
            if entry.name.startswith(SAVING_PREFIX):
                if now - used > STALE_SAVE_SECONDS:
                    shutil.rmtree(entry, ignore_errors=True)
                continue
            size = sum(path.stat().st_size for path in entry.iterdir())
        except OSError:
            continue
        if entry != keep:
            entries.append((used, size, entry))
        else:
            limit_bytes -= size
    total = sum(size for _, size, _ in entries)
    for _, size, entry in sorted(entries):
        if total <= limit_bytes:
            return
        shutil.rmtree(entry, ignore_errors=True)
        total -= size


def run_shipped(shipped: ShippedJob, build: ShippedBuild, plugin_arguments: tuple[str, ...]) -> TaskResult:
    """A Ray task: boot one shipped job on this worker, with its copies of the files, the build
    and the snapshot."""
    config = MachineConfig()
    config.ParseFromString(shipped.job.config)
    own = os.environ.get("EXPLORER_QEMU")
    cache = cache_root()
    qemu_dir = worker_build(build, config.target, Path(own) if own else None, cache, ray.get)
    local = localized(config, shipped.files, cache, ray.get)
    job = replace(shipped.job, config=local.SerializeToString())
    setup = RunnerSetup(qemu_dir, Plugin(qemu_dir / PLUGIN, plugin_arguments))
    snapshots = cache / "ray" / "snapshots"
    if shipped.save_at is not None:
        return run_saving(job, shipped.save_at, setup, snapshots)
    if shipped.resume is not None:
        directory = received_snapshot(shipped.resume, snapshots, ray.get)
        if directory is not None:
            job = replace(job, snapshot=SnapshotUse(directory, shipped.resume.point, save=False))
    return TaskResult(run_job(job, setup))


_run_remotely = ray.remote(num_cpus=1, max_retries=WORKER_DEATH_RETRIES)(run_shipped)


def cluster_address(address: str) -> tuple[str, int]:
    """HOST (an IPv6 one without its brackets) and PORT of a Ray cluster's address (what `ray start
    --head` prints); BadInput otherwise."""
    host, _, port = address.strip().rpartition(":")
    if not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536 or "/" in host:
        raise BadInput(f"Ray address {address!r} is not HOST:PORT (the address `ray start --head` prints)")
    return host.removeprefix("[").removesuffix("]"), int(port)


class RayExecutor:
    """Runs each job as a Ray task on the cluster at `address`, as many at once as it has CPUs.

    The master joins the cluster as a Ray driver for the executor's life and leaves it at
    `close()`; one executor at a time per process (Ray has one driver connection per process).
    """

    def __init__(self, address: str, setup: RunnerSetup) -> None:
        self._shipper = Shipper(setup, ray.put)
        self._plugin_arguments = setup.plugin.arguments
        self._in_flight: dict[Any, Job] = {}
        _join(address)
        self.workers = int(ray.cluster_resources().get("CPU", 0))

    def run(self, jobs: Sequence[Job], stop_at: float | None = None) -> Iterator[Outcome]:
        for job in jobs:
            shipped, build = self._shipper.job(job)
            self._in_flight[_run_remotely.remote(shipped, build, self._plugin_arguments)] = job
        while self._in_flight:
            timeout = None if stop_at is None else max(0.0, stop_at - time.monotonic())
            finished, _ = ray.wait(list(self._in_flight), num_returns=1, timeout=timeout)
            if not finished:
                self._cancel_in_flight()
                return
            yield self._outcome(finished[0], self._in_flight.pop(finished[0]))

    def close(self) -> None:
        """Cancel what is still queued or running (their QEMUs die with their workers) and leave."""
        self._cancel_in_flight()
        ray.shutdown()

    def _outcome(self, task: Any, job: Job) -> Outcome:
        try:
            result: TaskResult = ray.get(task)
        except ray.exceptions.RayTaskError as error:
            # A worker's refusal (another build) is the user's to fix; anything else is a bug.
            if isinstance(error.cause, ExplorerError):
                raise error.cause from None
            raise
        except ray.exceptions.RayError as error:
            raise ExplorerError(
                f"Ray lost the run of state {job.state_id[:12]} {WORKER_DEATH_RETRIES + 1} times "
                f"({type(error).__name__}): the cluster's workers keep dying; see `ray status`"
            ) from None
        if result.saved is not None and job.snapshot is not None:
            # A save the master cannot write (its disk full) is no snapshot: the children boot in full.
            with contextlib.suppress(OSError):
                write_snapshot(result.saved, job.snapshot.directory)
        return result.outcome

    def _cancel_in_flight(self) -> None:
        for task in self._in_flight:
            ray.cancel(task, force=True)
        self._in_flight.clear()


def write_snapshot(files: Mapping[str, bytes], directory: Path) -> None:
    """Write a snapshot's files into `directory` (the engine's staging), the manifest last."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in SNAPSHOT_FILES:
        (directory / name).write_bytes(files[name])


def _join(address: str) -> None:
    """Connect to the cluster as a driver; one line instead of Ray's minute of retries if nothing answers."""
    host, port = cluster_address(address)
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_SECONDS).close()
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        raise ExplorerError(
            f"no Ray cluster answers at {address} ({reason}): "
            "start one with `ray start --head`, or fix --address"
        ) from None
    try:
        ray.init(address=address.strip(), logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExplorerError(f"cannot join the Ray cluster at {address}: {first_line}") from None
