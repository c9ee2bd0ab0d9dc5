"""The Ray executor: a generation's jobs as Ray tasks on a cluster that shares nothing with the master.

The search sees only explorer.search.executor's `Executor`; this one submits each job as one Ray
task (one CPU) and yields outcomes as tasks finish (`ray.wait`). What a worker needs travels
through Ray's object store, never through an assumed shared filesystem:

- the files a job's config names (kernel, DTB, initrd) are put once per executor (one search
  session), named by their sha256; a worker writes each into its own cache under
  <cache>/ray/files/<sha256>/<name> and boots a copy of the config rewritten to those paths;
- the runner build: a worker runs its own build when it has one (the directory $EXPLORER_QEMU
  names on the worker, else <cache>/qemu/<hash> that native/build.py made there) and otherwise the
  master's, received as just bin/qemu-system-TARGET, lib/librehost.so and manifest.json into
  <cache>/ray/builds/<hash>/. The hash is the build directory's name (native/build.py's content
  hash of everything that makes the build).

The master puts the build's files whether or not a worker will need them (about 45 MB per target,
once per session); a worker fetches only what it lacks. Code is not shipped: every node runs the
same explorer and Ray as the master (installed there, or the same checkout).

Invariants: a file in a worker's cache is whole and has the content its name says: it is
written to a temporary name, checked against the sha256 the master sent, then renamed. A worker
never runs another build than the master's: its own build of another hash, or one lacking the
job's binaries or with another manifest, refuses with one line naming both hashes, and the
search stops there. A worker that dies mid-run (its process or its node) costs only that run:
Ray runs the task again elsewhere, up to WORKER_DEATH_RETRIES times; a run that fails for a
reason of its own job (QEMU refuses the config) is an outcome (`run_job`), never retried. At
`stop_at` the tasks still queued or running are cancelled with force (their QEMUs die with their
worker processes) and yield nothing, as with the local pool. It never reads or scores a result.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray.exceptions

from explorer.errors import BadInput, ExplorerError, RunnerError
from explorer.paths import cache_root
from explorer.runner.launch import Plugin
from explorer.runner.machine_config_pb2 import MachineConfig
from explorer.search.executor import Job, Outcome, RunnerSetup, run_job

# Attempts after the first when a task's worker process or node dies (never for a run's own failure).
WORKER_DEATH_RETRIES = 3
# How long the master waits for the cluster's address to accept a connection before giving up.
CONNECT_TIMEOUT_SECONDS = 5.0
# The MachineConfig.boot fields that name files on the master.
BOOT_FILES = ("kernel", "dtb", "initrd")
MANIFEST = "manifest.json"
PLUGIN = "lib/librehost.so"
_FILE_MODE = 0o644
_PROGRAM_MODE = 0o755

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

    # The build directory's name: native/build.py's hash of everything that makes the build.
    build_hash: str
    # By path in the build directory: bin/qemu-system-TARGET, lib/librehost.so, manifest.json.
    files: dict[str, ShippedFile]


@dataclass(frozen=True)
class ShippedJob:
    """A job whose config names files on the master, and those files' contents by boot field."""

    job: Job
    files: dict[str, ShippedFile]


def binary_path(target: str) -> str:
    """Where a build directory holds the QEMU of `target` (the config's target: arm, mips, mipsel)."""
    return f"bin/qemu-system-{target}"


class Shipper:
    """The master's side of shipping: each distinct file is read, hashed and put once.

    Kept for one executor, that is one search session, whose files do not change under it
    (a resumed session refuses a changed kernel).
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

    def job(self, job: Job) -> tuple[ShippedJob, ShippedBuild]:
        """`job` with its files, and the build its target needs."""
        config = MachineConfig()
        config.ParseFromString(job.config)
        files = {name: self.file(Path(path)) for name in BOOT_FILES if (path := getattr(config.boot, name))}
        return ShippedJob(job, files), self.build(config.target)

    def build(self, target: str) -> ShippedBuild:
        if target not in self._builds:
            paths = (binary_path(target), PLUGIN, MANIFEST)
            files = {path: self.file(self._qemu_dir / path) for path in paths}
            self._builds[target] = ShippedBuild(self._qemu_dir.name, files)
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

    Its own: `own` ($EXPLORER_QEMU on the worker), else cache/qemu/<hash> when native/build.py
    made it there. Without one, the shipped build, written under cache/ray/builds/<hash>/.
    """
    native = cache / "qemu" / build.build_hash
    if own is None and (native / MANIFEST).is_file():
        own = native
    if own is not None:
        refuse_another_build(own, build, (binary_path(target), PLUGIN))
        return own
    directory = cache / "ray" / "builds" / build.build_hash
    for path, shipped in build.files.items():
        materialized(shipped, directory / path, fetch, _FILE_MODE if path == MANIFEST else _PROGRAM_MODE)
    return directory


def refuse_another_build(directory: Path, build: ShippedBuild, needed: Sequence[str]) -> None:
    """RunnerError, in one line naming both hashes, unless `directory` is the build the master runs."""
    worker = f"worker {socket.gethostname()}: its runner build {directory.name}"
    fix = "build the master's there (native/build.py), or unset EXPLORER_QEMU there to receive it through Ray"
    if directory.name != build.build_hash:
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


def run_shipped(shipped: ShippedJob, build: ShippedBuild, plugin_arguments: tuple[str, ...]) -> Outcome:
    """A Ray task: boot one shipped job on this worker, with its copies of the files and the build."""
    config = MachineConfig()
    config.ParseFromString(shipped.job.config)
    own = os.environ.get("EXPLORER_QEMU")
    qemu_dir = worker_build(build, config.target, Path(own) if own else None, cache_root(), ray.get)
    local = localized(config, shipped.files, cache_root(), ray.get)
    job = Job(shipped.job.state_id, local.SerializeToString(), shipped.job.deadline_seconds)
    return run_job(job, RunnerSetup(qemu_dir, Plugin(qemu_dir / PLUGIN, plugin_arguments)))


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
            outcome: Outcome = ray.get(task)
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
        return outcome

    def _cancel_in_flight(self) -> None:
        for task in self._in_flight:
            ray.cancel(task, force=True)
        self._in_flight.clear()


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
