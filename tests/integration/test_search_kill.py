"""A search killed with SIGKILL at random moments resumes every time and loses nothing it committed.

The firmware is the tests' own values.elf (tests/firmware/): it needs several generations
(a bitwise search, then value collapse), each of a few short runs, so kills land before, during
and between commits. After each kill the store must pass its integrity check and still hold every
run and state a reader saw committed before the kill; `explorer resume` must then take the
writer lock (the dead master's is released by the kernel) and carry on. A search interrupted
with Ctrl-C between its first generation and its end (on any machine: it is stopped while its
store is read) stops cleanly, and `explorer resume` finishes it.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from explorer.store import Store
from tests.firmware import build as test_firmware
from tests.helpers import interrupt_mid_search, mid_search, sigint_at_its_default

pytestmark = pytest.mark.qemu

KILLS = 10
# Enough for every test program's whole boot, and a stuck poll ends in well under a second.
INSTRUCTION_BUDGET = 50_000_000
EXPLORER = [sys.executable, "-m", "explorer"]


def committed(work: Path) -> tuple[set[str], set[str]]:
    """The run and state ids a reader sees (empty before the store exists)."""
    if not (work / "data.mdb").exists():
        return set(), set()
    with Store.open(work, writer=False) as store:
        runs = {run.state_id for run in store.runs()}
        states = {edge.child for edge in store.edges()}
    return runs, states


def start(command: list[str], qemu: Path, **popen: Any) -> subprocess.Popen[bytes]:
    environment = {**os.environ, "EXPLORER_QEMU": str(qemu)}
    return subprocess.Popen(
        command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **popen
    )


def test_sigkill_at_random_moments_then_resume(tmp_path: Path, qemu_build: Path) -> None:
    programs = test_firmware.build()
    work = tmp_path / "work"
    search = [*EXPLORER, "search", str(programs.elf("values")), "--work", str(work), "--budget", "10m"]
    search += ["--workers", "2", "--seed", "1", "--instruction-budget", str(INSTRUCTION_BUDGET)]
    resume = [*EXPLORER, "resume", str(work)]
    rng = random.Random(20261125)
    process = start(search, qemu_build)
    seen_runs: set[str] = set()
    seen_states: set[str] = set()
    kills = 0
    while kills < KILLS:
        time.sleep(rng.uniform(0.2, 3.0))
        runs, states = committed(work)
        finished = process.poll() is not None
        if not finished:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
        assert process.returncode in (0, -signal.SIGKILL), process.stderr.read() if process.stderr else ""
        after_runs, after_states = committed(work)
        # Nothing a reader saw committed is ever lost.
        assert runs <= after_runs and states <= after_states
        assert seen_runs <= after_runs and seen_states <= after_states
        seen_runs, seen_states = after_runs, after_states
        if (work / "data.mdb").exists():
            with Store.open(work, writer=False) as store:
                assert store.check() == []
        process = start(resume if (work / "data.mdb").exists() else search, qemu_build)
    process.wait(timeout=600)
    assert process.returncode == 0, process.stderr.read() if process.stderr else ""
    shown = subprocess.run(
        [*EXPLORER, "show", str(work), "--json"], capture_output=True, text=True, check=True
    ).stdout
    assert '"reached_userspace"' in shown
    with Store.open(work, writer=False) as store:
        assert store.check() == []
        assert seen_runs <= {run.state_id for run in store.runs()}


def test_ctrl_c_stops_cleanly_and_resume_finishes(tmp_path: Path, qemu_build: Path) -> None:
    programs = test_firmware.build()
    work = tmp_path / "work"
    search = [*EXPLORER, "search", str(programs.elf("spin")), "--work", str(work), "--budget", "10m"]
    search += ["--workers", "2", "--seed", "1", "--instruction-budget", str(INSTRUCTION_BUDGET)]
    process = start(search, qemu_build, preexec_fn=sigint_at_its_default)
    interrupt_mid_search(process, work)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert b"explorer resume" in stderr and b"Traceback" not in stderr
    assert mid_search(work)  # the generation in flight was dropped, the boot is still to do
    with Store.open(work, writer=False) as store:
        assert store.check() == []
        interrupted_runs = {run.state_id for run in store.runs()}
    resumed = start([*EXPLORER, "resume", str(work)], qemu_build)
    _, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr
    assert b"search boot completed" in stderr
    with Store.open(work, writer=False) as store:
        assert store.check() == []
        assert interrupted_runs < {run.state_id for run in store.runs()}
