"""Ray against the local pool: runs per second of the same jobs on the same two cores.

The jobs are real kernel runs: Debian's armmp kernel with the vexpress-v2p-ca9 device tree and the
marker initramfs, from the search's initial state with `--jobs` different seeds (so as many
different states) and a short instruction budget. They run alternately, in pairs, on
`LocalPool(2)` and on `RayExecutor` on a local Ray cluster of two one-CPU nodes (a head and a
worker on loopback, started here as the tests start theirs: tests/integration/conftest.py), so a
noisy shared machine slows both alike. One untimed round on each first: the pool's processes and
Ray's workers start, and the worker gets its files. Every round's results must be the same bytes on
both (the runner is deterministic), or the benchmark fails. The last line printed is the median
of the per-pair ratios of runs per second (Ray / pool); issue 6's target is at least 0.85.

    .venv/bin/python benchmarks/ray_vs_pool.py [--jobs 8] [--pairs 5] [--instruction-budget 1000000000]
        [--qemu DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from explorer import corpus
from explorer.execution.executor import Executor
from explorer.execution.jobs import Job
from explorer.execution.local import LocalPool
from explorer.execution.ray_executor import RayExecutor
from explorer.firmware.ingest import ingest
from explorer.runner.build import find_runner
from explorer.search.initial import initial_state
from explorer.search.session import runner_setup
from explorer.search.state import Target, bootable, state_id

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.integration.conftest import LocalRayCluster

BOARD = "vexpress-v2p-ca9"
RUN_DEADLINE_SECONDS = 300.0


def kernel_jobs(count: int, instruction_budget: int) -> list[Job]:
    """`count` initial states of armmp on BOARD, one per seed, each with `instruction_budget`."""
    catalogue = corpus.load()
    target = Target(
        kernel=catalogue.kernel("armmp"),
        dtb=catalogue.dtb("armmp", BOARD),
        initrd=catalogue.initramfs("armhf"),
        cmdline="rdinit=/init",
        board_id=None,
    )
    firmware = ingest(target.kernel, dtb=target.dtb)
    jobs = []
    for seed in range(count):
        state = initial_state(firmware, seed)  # a new state, not stored yet: ours to finish
        state.instruction_budget = instruction_budget
        config = bootable(state, target, firmware).SerializeToString()
        jobs.append(Job(state_id(state), config, RUN_DEADLINE_SECONDS))
    return jobs


def timed_round(executor: Executor, jobs: list[Job]) -> tuple[float, dict[str, bytes]]:
    """Runs per second of one round of `jobs`, and each job's serialized result."""
    started = time.monotonic()
    results = {outcome.state_id: outcome.result for outcome in executor.run(jobs)}
    wall = time.monotonic() - started
    if len(results) != len(jobs):
        raise SystemExit(f"{len(jobs) - len(results)} runs gave no outcome")
    return len(jobs) / wall, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--instruction-budget", type=int, default=1_000_000_000)
    parser.add_argument("--qemu", type=Path, default=os.environ.get("EXPLORER_QEMU"))
    args = parser.parse_args()
    setup = runner_setup(find_runner(args.qemu))
    jobs = kernel_jobs(args.jobs, args.instruction_budget)
    directory = Path(tempfile.mkdtemp(prefix="explorer-ray-"))
    cluster = LocalRayCluster(directory)
    environment = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    pool: LocalPool | None = None
    ray: RayExecutor | None = None
    try:
        cluster.add_node(environment)
        cluster.add_node({**environment, "EXPLORER_CACHE": str(directory / "worker-cache")})
        pool, ray = LocalPool(2, setup), RayExecutor(cluster.address, setup)
        print(f"{len(jobs)} jobs of armmp + {BOARD}, {args.instruction_budget:,} instructions each")
        _, expected = timed_round(pool, jobs)
        _, warm = timed_round(ray, jobs)
        if warm != expected:
            raise SystemExit("Ray's results differ from the pool's")
        ratios = []
        for pair in range(args.pairs):
            pool_rate, pool_results = timed_round(pool, jobs)
            ray_rate, ray_results = timed_round(ray, jobs)
            if pool_results != expected or ray_results != expected:
                raise SystemExit(f"pair {pair + 1}: results differ between rounds")
            ratios.append(ray_rate / pool_rate)
            print(
                f"pair {pair + 1}: pool {pool_rate:.3f} runs/s, ray {ray_rate:.3f} runs/s, "
                f"ratio {ratios[-1]:.3f}",
                flush=True,
            )
        print(f"ratios: min {min(ratios):.3f}, max {max(ratios):.3f}")
        print(f"ray / pool runs per second, median of {len(ratios)} pairs: {statistics.median(ratios):.3f}")
    finally:
        if ray is not None:
            ray.close()
        if pool is not None:
            pool.close()
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
