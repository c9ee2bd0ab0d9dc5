"""A search with snapshots on a real local Ray cluster stores what it stores on the local pool.

The search is tests/integration/test_search_snapshots_invariant.py's: armmp on an am335x with only CPU and
RAM, whose bitwise children all continue from one snapshot of the parent's boot, taken just
before the register they change is first read. On Ray (the `ray_cluster` fixture: a head and a
worker node whose cache is its own), the save job runs on a node and its snapshot comes back to
the master's cache as the task's result; the children's tasks receive it through Ray, unpacked
into their node's cache under its content address. Nothing of the master's snapshot directory is visible
to a worker by path: the two stores must hold the same states, edges, runs and scores, and both
searches must have continued every child from the snapshot. Below the search, the executor
alone: a save on a worker comes back to the master's directory, and continuing from it on any
worker gives the full boot's result, as does continuing from a snapshot the master lost.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from explorer.corpus import Corpus
from explorer.execution.jobs import Job, run_job
from explorer.execution.local import LocalPool
from explorer.execution.ray_executor import RayExecutor
from explorer.execution.ray_shipping import SNAPSHOT_FILES
from explorer.runner.build import build_identity
from explorer.runner.snapshot import Snapshot, read_manifest, snapshot_key
from explorer.search.boot_sharing import SNAPSHOTS_DIRECTORY
from explorer.search.session import runner_setup
from tests.firmware import build as test_firmware
from tests.integration.conftest import LocalRayCluster
from tests.integration.test_search_firmware import program_config
from tests.integration.test_search_snapshots_invariant import (
    CHILDREN,
    searched,
)

pytestmark = [pytest.mark.qemu, pytest.mark.corpus]


def test_a_search_with_snapshots_on_ray_stores_what_it_does_on_the_local_pool(
    tmp_path: Path, corpus: Corpus, qemu_build: Path, ray_cluster: LocalRayCluster
) -> None:
    setup = runner_setup(qemu_build)
    pool = LocalPool(1, setup)
    try:
        local = searched(tmp_path / "local", corpus, qemu_build, snapshots=True, executor=pool)
    finally:
        pool.close()
    executor = RayExecutor(ray_cluster.address, setup)
    try:
        on_ray = searched(tmp_path / "ray", corpus, qemu_build, snapshots=True, executor=executor)
    finally:
        executor.close()

    assert len(on_ray["runs"]) == 1 + CHILDREN
    for part in ("states", "edges", "runs", "scores"):
        assert on_ray[part] == local[part], part
    for counters in (local["counters"], on_ray["counters"]):
        assert counters["snapshots_taken"] == 1 and counters["runs_from_snapshots"] == CHILDREN
    # The save came back whole into the master's cache, and the worker node holds the same
    # snapshot under the same content address: saved there, or received through Ray (it sees no
    # master path).
    (kept,) = (tmp_path / "ray" / SNAPSHOTS_DIRECTORY).iterdir()
    assert files_of(worker_snapshots(ray_cluster) / kept.name) == files_of(kept)


def worker_snapshots(cluster: LocalRayCluster) -> Path:
    """The worker node's snapshots (the head's cache is the user's own: not looked at)."""
    return cluster.directory / "worker-cache" / "ray" / "snapshots"


def files_of(directory: Path) -> dict[str, bytes]:
    return {name: (directory / name).read_bytes() for name in SNAPSHOT_FILES}


# spin.elf polls a register that never reads ready: its run goes on to its budget.
SPIN_BUDGET = 40_000_000
SPIN_POINT = 20_000_000
DEADLINE_SECONDS = 120


def test_a_save_on_a_worker_comes_back_and_continues_on_any_worker(
    tmp_path: Path, qemu_build: Path, ray_cluster: LocalRayCluster
) -> None:
    config = program_config(test_firmware.build().elf("spin"), instruction_budget=SPIN_BUDGET)
    serialized = config.SerializeToString()
    setup = runner_setup(qemu_build)
    staging = tmp_path / "staging"
    staging.mkdir()
    save = Job("spin", serialized, DEADLINE_SECONDS, Snapshot("spin", SPIN_POINT, staging, save=True))
    use = Snapshot("spin", SPIN_POINT, staging, save=False)
    # One task per node at a time, the first two on two nodes: both nodes continue from it, one of
    # them without having saved it.
    continued = [
        Job(f"child {number}", serialized, DEADLINE_SECONDS, use)
        for number in range(2 * len(ray_cluster.nodes))
    ]
    gone = Snapshot("spin", SPIN_POINT, tmp_path / "gone", save=False)
    lost = Job("lost", serialized, DEADLINE_SECONDS, gone)
    executor = RayExecutor(ray_cluster.address, setup)
    try:
        (saved,) = executor.run([save])
        assert read_manifest(staging, qemu_build, SPIN_POINT).config  # whole, of this build
        outcomes = {outcome.state_id: outcome.result for outcome in executor.run([*continued, lost])}
    finally:
        executor.close()
    assert saved.job == save
    # What the master continues from its own copy, every worker does from the one it received.
    here = run_job(replace(continued[0], state_id="here"), setup).result
    assert all(outcomes[job.state_id] == here for job in continued)
    # The worker node holds it under its content address (saved there, or received: no path of
    # the master's).
    key = snapshot_key(build_identity(qemu_build), "spin", SPIN_POINT)
    assert files_of(worker_snapshots(ray_cluster) / key) == files_of(staging)
    # The snapshot the master lost: a full boot.
    assert outcomes["lost"] == run_job(replace(lost, snapshot=None), setup).result
