"""Executors: run a generation's jobs (one bootable config each) and hand back their results.

The search sees only the `Executor` interface: `run(jobs, stop_at)` yields each job's outcome
as it finishes, in any order, until the master's monotonic clock reaches `stop_at` (the search's
wall budget); runs still going then are abandoned (killed), and their jobs yield nothing: a run
cut short by the search's budget is not a result of its state. `LocalPool` runs them in a pool of
worker processes on this machine; another executor (a cluster) implements the same two methods.
Invariants: a job's outcome is a function of the job alone (the runner is deterministic), so
which worker ran it never shows in a result; a job that cannot start (QEMU refuses its config)
is an outcome too, a crashed partial run with QEMU's one line, never an exception that would
lose the generation.

Snapshots (explorer.search.snapshots): a job may boot its config only to a point and save the
VM there (`SnapshotUse(save=True)`), or continue from such a save (`save=False`) instead of
booting from reset; either way its outcome is what a full boot gives (a continued run's
RunResult is byte for byte the full boot's), and a save that cannot be used falls back to a
full boot, never to a different result. The local pool's workers read and write the snapshot
directories on this machine; the Ray executor (explorer.search.ray_executor) ships them through
its object store instead.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.pool
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from explorer.errors import RunnerError
from explorer.runner.launch import Plugin, Run, RunnerLimits, die_with_parent, run
from explorer.runner.machine_config_pb2 import MachineConfig
from explorer.runner.rehost_pb2 import Exit, ExitReason, RunResult
from explorer.runner.result import serialize


@dataclass(frozen=True)
class SnapshotUse:
    """A job's part in sharing a boot: save the VM at `point` into `directory`, or continue from it."""

    directory: Path
    # The plugin's instruction count the save was asked for (explorer.runner.launch.run's snapshot_at).
    point: int
    save: bool


@dataclass(frozen=True)
class Job:
    state_id: str
    # The bootable MachineConfig (explorer.search.state.bootable), serialized.
    config: bytes
    deadline_seconds: float
    snapshot: SnapshotUse | None = None


@dataclass(frozen=True)
class Outcome:
    state_id: str
    # The serialized RunResult (explorer.runner.result.serialize).
    result: bytes
    wall_seconds: float


@dataclass(frozen=True)
class RunnerSetup:
    """What every worker needs to start runners: the QEMU build and the plugin's observation."""

    qemu_dir: Path
    plugin: Plugin


class Executor(Protocol):
    workers: int

    def run(self, jobs: Sequence[Job], stop_at: float | None = None) -> Iterator[Outcome]: ...

    def close(self) -> None: ...


def run_job(job: Job, setup: RunnerSetup) -> Outcome:
    """Boot one job in one runner (in whatever process calls it).

    A save job's outcome is the partial run up to its point (the snapshot is in its directory, or
    the directory holds no manifest when the run ended first). A job continuing from a snapshot
    that this build cannot restore boots in full instead.
    """
    config = MachineConfig()
    config.ParseFromString(job.config)
    limits = RunnerLimits(deadline_seconds=job.deadline_seconds)
    snapshot = job.snapshot
    try:
        if snapshot is not None and snapshot.save:
            finished = run(
                config,
                setup.qemu_dir,
                plugin=setup.plugin,
                limits=limits,
                snapshot_at=snapshot.point,
                snapshot_dir=snapshot.directory,
            )
        elif snapshot is not None:
            finished = _continued_or_full(config, setup, limits, snapshot)
        else:
            finished = run(config, setup.qemu_dir, plugin=setup.plugin, limits=limits)
    except RunnerError as error:
        refused = RunResult(
            exit=Exit(reason=ExitReason.EXIT_CRASHED, detail=str(error)),
            partial=True,
            partial_reason=f"the runner did not start: {error}",
        )
        return Outcome(job.state_id, serialize(refused), 0.0)
    return Outcome(job.state_id, serialize(finished.result), finished.wall_seconds)


def _continued_or_full(
    config: MachineConfig, setup: RunnerSetup, limits: RunnerLimits, snapshot: SnapshotUse
) -> Run:
    try:
        return run(
            config,
            setup.qemu_dir,
            plugin=setup.plugin,
            limits=limits,
            resume_from=snapshot.directory,
            resume_at=snapshot.point,
        )
    except RunnerError:
        # The snapshot is gone or damaged (the cache never fails a search): boot from reset.
        return run(config, setup.qemu_dir, plugin=setup.plugin, limits=limits)


class LocalPool:
    """A pool of `workers` processes, each running one runner at a time.

    Workers are spawned (never forked: the master holds an LMDB environment, which must not
    cross a fork), ignore Ctrl-C (the master decides what an interrupt means) and die with the
    master, taking their QEMUs with them, even when the master is SIGKILLed.
    """

    def __init__(self, workers: int, setup: RunnerSetup) -> None:
        self.workers = workers
        self._setup = setup
        self._pool = self._start()

    def run(self, jobs: Sequence[Job], stop_at: float | None = None) -> Iterator[Outcome]:
        work = [(job, self._setup) for job in jobs]
        finished = self._pool.imap_unordered(_run_job_star, work)
        for _ in work:
            timeout = None if stop_at is None else max(0.0, stop_at - time.monotonic())
            try:
                yield finished.next(timeout)
            except multiprocessing.TimeoutError:
                # The runs in flight die with their workers; a fresh pool serves the next call.
                self.close()
                self._pool = self._start()
                return

    def close(self) -> None:
        """Stop at once: runs in flight are killed (their QEMUs die with their workers)."""
        self._pool.terminate()
        self._pool.join()

    def _start(self) -> multiprocessing.pool.Pool:
        return multiprocessing.get_context("spawn").Pool(self.workers, initializer=_worker_started)


def _worker_started() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()


def _run_job_star(work: tuple[Job, RunnerSetup]) -> Outcome:
    return run_job(*work)
