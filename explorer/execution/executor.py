"""The executor interface: what the search (and the bench) sees of whatever runs its jobs.

`run(jobs, stop_at)` yields each job's outcome as it finishes, in any order, until the master's
monotonic clock reaches `stop_at` (the search's wall budget); runs still going then are abandoned
(killed), and their jobs yield nothing: a run cut short by the search's budget is not a result of
its state. `close()` stops at once, killing what is in flight. `workers` is how many jobs run at
once. Implementations: explorer.execution.local (a pool of processes on this machine) and
explorer.execution.ray_executor (tasks on a Ray cluster).

An executor only runs jobs: it never reads, scores or stores a result, and never chooses what
runs; a job's outcome never says which executor or worker ran it (explorer.execution.jobs).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from explorer.execution.jobs import Job, Outcome


class Executor(Protocol):
    workers: int

    def run(self, jobs: Sequence[Job], stop_at: float | None = None) -> Iterator[Outcome]: ...

    def close(self) -> None: ...
