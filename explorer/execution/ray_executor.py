"""The Ray executor: a generation's jobs as Ray tasks on a cluster that shares nothing with the master.

The search sees only explorer.execution.executor's `Executor`; this one submits each job as one
Ray task (one CPU, explorer.execution.ray_worker's `run_shipped`) with what the worker needs put
in Ray's object store (explorer.execution.ray_shipping), and yields outcomes as tasks finish
(`ray.wait`). A save job's snapshot comes back as the task's result and the master writes it into
the directory the job names (the engine's staging in WORK/snapshots/, whose one writer the master
stays).

Invariants: a worker that dies mid-run (its process or its node) costs only that run: Ray runs
the task again elsewhere, up to WORKER_DEATH_RETRIES times; a run that fails for a reason of its
own job (QEMU refuses the config) is an outcome (`run_job`), never retried, and a worker's refusal
of the build is raised here as the user's error. At `stop_at` the tasks still queued or running
are cancelled with force (their QEMUs die with their worker processes) and yield nothing, as
with the local pool. It never reads or scores a result.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray
import ray.exceptions

from explorer.errors import BadInput, ExplorerError
from explorer.execution.jobs import Job, Outcome, RunnerSetup
from explorer.execution.ray_shipping import SNAPSHOT_FILES, Shipper, TaskResult
from explorer.execution.ray_worker import run_shipped

# Attempts after the first when a task's worker process or node dies (never for a run's own failure).
WORKER_DEATH_RETRIES = 3
# How long the master waits for the cluster's address to accept a connection before giving up.
CONNECT_TIMEOUT_SECONDS = 5.0

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
        for job, (shipped, build) in zip(jobs, self._shipper.jobs(jobs), strict=True):
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
        # The job as the master gave it: the worker ran a copy with its own paths.
        return replace(result.outcome, job=job)

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
