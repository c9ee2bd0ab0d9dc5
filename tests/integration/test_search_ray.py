"""`explorer search --executor ray` on a real local Ray cluster gives the local pool's search, run for run.

The cluster (the `ray_cluster` fixture) is a head node that has our QEMU build as its own and a
worker node with an empty cache, which gets the build and the firmware through Ray. The firmware
is the tests' own values.elf (tests/firmware/): a search of four generations and 38 short runs
that ends by booting it to the end, so its stored runs are a function of the search alone, and
the same on any executor: the same state ids with the same serialized results. A node killed
while one of its workers runs a QEMU costs only that run, which Ray runs again on another node.
A search interrupted on Ray resumes on the local pool (the executor is not stored) to the same end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from explorer.execution.jobs import Job
from explorer.execution.ray_executor import RayExecutor
from explorer.runner.build import binary
from explorer.search.session import runner_setup
from explorer.store import Store
from tests.firmware import build as test_firmware
from tests.helpers import interrupt_mid_search, mid_search, sigint_at_its_default
from tests.integration.conftest import LocalRayCluster, RayNode, processes
from tests.integration.test_search_firmware import program_config

pytestmark = pytest.mark.qemu

EXPLORER = [sys.executable, "-m", "explorer"]
# Enough for every test program's whole boot; a stuck poll ends in about a second.
INSTRUCTION_BUDGET = 10_000_000
SEARCH_DEADLINE_SECONDS = 600


def search(work: Path, qemu: Path, *executor: str) -> subprocess.Popen[str]:
    command = [*EXPLORER, "search", str(test_firmware.build().elf("values")), "--work", str(work)]
    command += ["--budget", "10m", "--seed", "1", "--workers", "2"]
    command += ["--instruction-budget", str(INSTRUCTION_BUDGET), *executor]
    environment = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    return subprocess.Popen(
        command,
        env={**environment, "EXPLORER_QEMU": str(qemu)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_at_its_default,  # as from a terminal, where Ctrl-C interrupts it
    )


def finished(process: subprocess.Popen[str]) -> None:
    _, stderr = process.communicate(timeout=SEARCH_DEADLINE_SECONDS)
    assert process.returncode == 0, stderr
    assert "search boot completed" in stderr, stderr


def stored_runs(work: Path) -> dict[str, bytes]:
    with Store.open(work, writer=False) as store:
        assert store.check() == []
        return {run.state_id: run.result for run in store.runs()}


@pytest.fixture(scope="module")
def local_runs(tmp_path_factory: pytest.TempPathFactory, qemu_build: Path) -> dict[str, bytes]:
    work = tmp_path_factory.mktemp("local") / "work"
    finished(search(work, qemu_build))
    return stored_runs(work)


def test_ray_stores_the_same_runs_as_the_local_pool(
    tmp_path: Path, qemu_build: Path, ray_cluster: LocalRayCluster, local_runs: dict[str, bytes]
) -> None:
    work = tmp_path / "work"
    finished(search(work, qemu_build, "--executor", "ray", "--address", ray_cluster.address))
    assert stored_runs(work) == local_runs
    # The worker node had neither: both came through Ray, into its own cache.
    worker_cache = ray_cluster.directory / "worker-cache" / "ray"
    assert (worker_cache / "builds" / qemu_build.name / binary("arm")).is_file()
    assert [path.name for path in (worker_cache / "files").glob("*/*")] == ["values.elf"]


def test_a_node_killed_mid_run_costs_only_its_run(
    tmp_path: Path, qemu_build: Path, ray_cluster: LocalRayCluster, local_runs: dict[str, bytes]
) -> None:
    doomed = ray_cluster.add_node({key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"})
    process = search(tmp_path / "work", qemu_build, "--executor", "ray", "--address", ray_cluster.address)
    worker = worker_running_qemu_on(doomed, process)
    doomed.kill()  # the whole node at once, as when its machine dies
    doomed.process.wait()
    assert worker is not None, "the search ended before the doomed node ran anything"
    finished(process)
    assert stored_runs(tmp_path / "work") == local_runs


def test_a_search_started_on_ray_resumes_on_the_local_pool(
    tmp_path: Path, qemu_build: Path, ray_cluster: LocalRayCluster, local_runs: dict[str, bytes]
) -> None:
    work = tmp_path / "work"
    process = search(work, qemu_build, "--executor", "ray", "--address", ray_cluster.address)
    interrupt_mid_search(process, work)
    _, stderr = process.communicate(timeout=SEARCH_DEADLINE_SECONDS)
    assert process.returncode == 130, stderr
    assert mid_search(work)
    # The executor is the resuming command line's own: nothing in the store asks for Ray.
    resumed = subprocess.run(
        [*EXPLORER, "resume", str(work)],
        env={**os.environ, "EXPLORER_QEMU": str(qemu_build)},
        capture_output=True,
        text=True,
        timeout=SEARCH_DEADLINE_SECONDS,
    )
    assert resumed.returncode == 0 and "search boot completed" in resumed.stderr, resumed.stderr
    assert stored_runs(work) == local_runs


def test_runs_still_going_at_stop_at_are_killed_and_yield_nothing(
    qemu_build: Path, ray_cluster: LocalRayCluster
) -> None:
    # spin.elf polls a register that never reads ready: a run goes on for its whole budget.
    config = program_config(test_firmware.build().elf("spin"), instruction_budget=10**12).SerializeToString()
    jobs = [Job(f"spin {number}", config, SEARCH_DEADLINE_SECONDS) for number in range(2)]
    executor = RayExecutor(ray_cluster.address, runner_setup(qemu_build))
    try:
        outcomes = list(executor.run(jobs, stop_at=time.monotonic() + 10))
    finally:
        executor.close()
    assert outcomes == []
    deadline = time.monotonic() + SEARCH_DEADLINE_SECONDS  # a hang guard: they die at once
    while any(qemus_under(node) for node in ray_cluster.nodes):
        assert time.monotonic() < deadline, "a cancelled run's QEMU outlived its worker"
        time.sleep(0.2)


def qemus_under(node: RayNode) -> dict[int, int]:
    """The QEMUs the worker processes of `node` run now, each with its worker's pid."""
    workers = set(node.workers())
    return {
        pid: parent
        for pid, (parent, _) in processes().items()
        if parent in workers and pid_name(pid).startswith("qemu-system")
    }


def worker_running_qemu_on(node: RayNode, search: subprocess.Popen[str]) -> int | None:
    """The pid of a worker process of `node` (a child of its raylet) that runs a QEMU, once there
    is one while the search runs (None: the search ended first)."""
    while search.poll() is None:
        if running := qemus_under(node):
            return next(iter(running.values()))
        time.sleep(0.05)
    return None


def pid_name(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "comm").read_text().strip()
    except OSError:
        return ""


def bench(out: Path, set_file: Path, qemu: Path, *executor: str) -> list[dict]:
    command = [*EXPLORER, "bench", str(set_file), "--out", str(out), "--budget", "10m", "--workers", "2"]
    environment = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    completed = subprocess.run(
        [*command, *executor],
        env={**environment, "EXPLORER_QEMU": str(qemu)},
        capture_output=True,
        text=True,
        timeout=SEARCH_DEADLINE_SECONDS,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return [json.loads(line) for line in (out / "tiny" / "results.jsonl").read_text().splitlines()]


def test_a_bench_on_ray_finds_what_it_finds_on_the_local_pool(
    tmp_path: Path, qemu_build: Path, ray_cluster: LocalRayCluster
) -> None:
    set_file = tmp_path / "tiny.toml"
    set_file.write_text(
        f'[[firmware]]\nname = "values"\nkernel = "{test_firmware.build().elf("values")}"\n'
        f"instruction_budget = {INSTRUCTION_BUDGET}\n"
    )
    local = bench(tmp_path / "local", set_file, qemu_build)
    on_ray = bench(
        tmp_path / "ray", set_file, qemu_build, "--executor", "ray", "--address", ray_cluster.address
    )
    timing = {"wall_seconds", "wall_seconds_to_userspace", "master_overhead"}
    assert [{k: v for k, v in row.items() if k not in timing} for row in on_ray] == [
        {k: v for k, v in row.items() if k not in timing} for row in local
    ]
    assert on_ray[0]["boot_completed"]
    work = Path("tiny") / "values" / "best-first" / "0"
    assert stored_runs(tmp_path / "ray" / work) == stored_runs(tmp_path / "local" / work)
