"""`explorer search --snapshots --snapshot-limit` and `explorer resume` through the real command line.

The firmware is the tests' own values.elf (tests/firmware/): a whole search in seconds. Its runs
are too short for a child to share its parent's boot (every child diverges in the first half of
its parent's run: explorer.search.boot_sharing.WORTHWHILE_SHARE), so no snapshot is taken; what this
shows is that the options reach the search (it counts snapshot use, `status` and `show --json`
say so) and that a resume keeps the cache in WORK/snapshots/. Children that do continue
from a snapshot, on a real kernel: tests/integration/test_search_snapshots_invariant.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from explorer.search.boot_sharing import SNAPSHOTS_DIRECTORY
from tests.firmware import build as test_firmware

pytestmark = pytest.mark.qemu

# Enough for every test program's whole boot, and a stuck poll ends in well under a second.
INSTRUCTION_BUDGET = 50_000_000
EXPLORER = [sys.executable, "-m", "explorer"]


def explorer(qemu: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "EXPLORER_QEMU": str(qemu)}
    return subprocess.run(
        [*EXPLORER, *arguments], capture_output=True, text=True, env=environment, timeout=600, check=False
    )


def test_snapshot_options_reach_the_search_and_the_cache_survives_a_resume(
    tmp_path: Path, qemu_build: Path
) -> None:
    work = tmp_path / "work"
    values = str(test_firmware.build().elf("values"))
    searched = explorer(
        qemu_build, "search", values, "--work", str(work), "--budget", "5m", "--workers", "1", "--seed", "1",
        "--instruction-budget", str(INSTRUCTION_BUDGET), "--snapshots", "--snapshot-limit", "64M",
    )  # fmt: skip
    assert searched.returncode == 0, searched.stderr
    assert "search boot completed" in searched.stderr
    status = explorer(qemu_build, "status", str(work))
    assert status.returncode == 0, status.stderr
    assert "snapshots: 0 taken in 0 s, 0 runs continued from one" in status.stdout
    shown = json.loads(explorer(qemu_build, "show", str(work), "--json").stdout)
    assert shown["runs_from_snapshots"] == 0 and "snapshots_taken" not in shown
    # A resume opens the cache again: what earlier sessions kept stays, a save cut short (staged
    # by a process that is gone) goes.
    kept = work / SNAPSHOTS_DIRECTORY / "kept-by-an-earlier-session"
    kept.mkdir()
    staged = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from explorer.search.boot_sharing import snapshot_cache; "
            "print(snapshot_cache(Path(sys.argv[1]), Path(sys.argv[2])).staging('cut short', 1))",
            str(work),
            str(qemu_build),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    cut_short = Path(staged.stdout.strip())
    assert cut_short.is_dir()
    resumed = explorer(
        qemu_build, "resume", str(work), "--budget", "1m", "--snapshots", "--snapshot-limit", "1G"
    )
    assert resumed.returncode == 0, resumed.stderr
    assert kept.is_dir() and not cut_short.exists()
