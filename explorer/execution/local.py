"""The local pool: an executor whose workers are processes on this machine.

Each worker runs one job at a time (`run_job`); the snapshot directories a job names are read and
written in place, on this machine's disk. It never reads or scores a result, and it knows nothing
of Ray.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.pool
import signal
import time
from collections.abc import Iterator, Sequence

from explorer.execution.jobs import Job, Outcome, RunnerSetup, run_job
from explorer.runner.containment import die_with_parent


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
