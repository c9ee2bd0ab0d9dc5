"""Executors: run a generation's jobs (one bootable config each) and hand back their results.

The search sees only the `Executor` interface: `run(jobs)` yields each job's outcome as it
finishes, in any order. `LocalPool` runs them in a pool of worker processes on this machine;
another executor (a cluster) implements the same two methods. Invariants: a job's outcome is a
function of the job alone (the runner is deterministic), so which worker ran it never shows in
a result; a job that cannot start (QEMU refuses its config) is an outcome too, a crashed
partial run with QEMU's one line, never an exception that would lose the generation.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from explorer.errors import RunnerError
from explorer.runner.launch import Plugin, RunnerLimits, die_with_parent, run
from explorer.runner.machine_config_pb2 import MachineConfig
from explorer.runner.rehost_pb2 import Exit, ExitReason, RunResult
from explorer.runner.result import serialize


@dataclass(frozen=True)
class Job:
    state_id: str
    # The bootable MachineConfig (explorer.search.state.bootable), serialized.
    config: bytes
    deadline_seconds: float


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

    def run(self, jobs: Sequence[Job]) -> Iterator[Outcome]: ...

    def close(self) -> None: ...


def run_job(job: Job, setup: RunnerSetup) -> Outcome:
    """Boot one job in one runner (in whatever process calls it)."""
    config = MachineConfig()
    config.ParseFromString(job.config)
    try:
        finished = run(
            config,
            setup.qemu_dir,
            plugin=setup.plugin,
            limits=RunnerLimits(deadline_seconds=job.deadline_seconds),
        )
    except RunnerError as error:
        refused = RunResult(
            exit=Exit(reason=ExitReason.EXIT_CRASHED, detail=str(error)),
            partial=True,
            partial_reason=f"the runner did not start: {error}",
        )
        return Outcome(job.state_id, serialize(refused), 0.0)
    return Outcome(job.state_id, serialize(finished.result), finished.wall_seconds)


class LocalPool:
    """A pool of `workers` processes, each running one runner at a time.

    Workers are spawned (never forked: the master holds an LMDB environment, which must not
    cross a fork), ignore Ctrl-C (the master decides what an interrupt means) and die with the
    master, taking their QEMUs with them, even when the master is SIGKILLed.
    """

    def __init__(self, workers: int, setup: RunnerSetup) -> None:
        self.workers = workers
        self._setup = setup
        context = multiprocessing.get_context("spawn")
        self._pool = context.Pool(workers, initializer=_worker_started)

    def run(self, jobs: Sequence[Job]) -> Iterator[Outcome]:
        work = [(job, self._setup) for job in jobs]
        yield from self._pool.imap_unordered(_run_job_star, work)

    def close(self) -> None:
        """Stop at once: runs in flight are killed (their QEMUs die with their workers)."""
        self._pool.terminate()
        self._pool.join()


def _worker_started() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()


def _run_job_star(work: tuple[Job, RunnerSetup]) -> Outcome:
    return run_job(*work)
