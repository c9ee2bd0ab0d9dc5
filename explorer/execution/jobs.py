"""Jobs: what an executor runs (one bootable config each), what it hands back, and one job's run.

`Job`, `RunnerSetup` and `Outcome` are what travel between the master and a
worker, whichever executor carries them (explorer.execution.local, explorer.execution.ray_executor);
`run_job` boots one job in one runner, in whatever process calls it. Nothing here schedules,
reads or scores a result: an outcome's RunResult stays serialized bytes until the search decodes it.

Invariants: a job's outcome is a function of the job alone (the runner is deterministic), so
which worker ran it never shows in a result; a job that cannot start (QEMU refuses its config)
is an outcome too, a crashed partial run with QEMU's one line, never an exception that would
lose the generation.

Snapshots (explorer.search.boot_sharing decides which): a job may boot its config only to a point
and save the VM there (its `snapshot`, an explorer.runner.snapshot.Snapshot, with save), or
continue from such a save instead of booting from reset; either way its outcome is what a full
boot gives (a continued run's RunResult is byte for byte the full boot's), and a save that
cannot be used falls back to a full boot, never to a different result.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from explorer.errors import RunnerError
from explorer.runner.command import Plugin
from explorer.runner.containment import RunnerLimits
from explorer.runner.launch import Run, run
from explorer.runner.machine_config_pb2 import MachineConfig
from explorer.runner.rehost_pb2 import Exit, ExitReason, RunResult
from explorer.runner.result import serialize
from explorer.runner.snapshot import Snapshot


@dataclass(frozen=True)
class Job:
    state_id: str
    # The bootable MachineConfig (explorer.search.state.bootable), serialized.
    config: bytes
    deadline_seconds: float
    # Passed to the runner unchanged (but for where its directory is: explorer.execution.ray_worker).
    snapshot: Snapshot | None = None


@dataclass(frozen=True)
class Outcome:
    # The job as its executor was given it.
    job: Job
    # The serialized RunResult (explorer.runner.result.serialize).
    result: bytes
    wall_seconds: float

    @property
    def state_id(self) -> str:
        return self.job.state_id


@dataclass(frozen=True)
class RunnerSetup:
    """What every worker needs to start runners: the QEMU build and the plugin's observation."""

    qemu_dir: Path
    plugin: Plugin


def run_job(job: Job, setup: RunnerSetup) -> Outcome:
    """Boot one job in one runner (in whatever process calls it).

    A save job's outcome is the partial run up to its point (the snapshot is in its directory, or
    the directory holds no manifest when the run ended first). A job continuing from a snapshot
    that this build cannot restore boots in full instead.
    """
    config = MachineConfig()
    config.ParseFromString(job.config)
    limits = RunnerLimits(deadline_seconds=job.deadline_seconds)
    try:
        if job.snapshot is not None and not job.snapshot.save:
            finished = _continued_or_full(config, setup, limits, job.snapshot)
        else:
            finished = run(config, setup.qemu_dir, plugin=setup.plugin, limits=limits, snapshot=job.snapshot)
    except RunnerError as error:
        refused = RunResult(
            exit=Exit(reason=ExitReason.EXIT_CRASHED, detail=str(error)),
            partial=True,
            partial_reason=f"the runner did not start: {error}",
        )
        return Outcome(job, serialize(refused), 0.0)
    return Outcome(job, serialize(finished.result), finished.wall_seconds)


def _continued_or_full(
    config: MachineConfig, setup: RunnerSetup, limits: RunnerLimits, snapshot: Snapshot
) -> Run:
    try:
        return run(config, setup.qemu_dir, plugin=setup.plugin, limits=limits, snapshot=snapshot)
    except RunnerError:
        # The snapshot is gone or damaged (the cache never fails a search): boot from reset.
        return run(config, setup.qemu_dir, plugin=setup.plugin, limits=limits)
