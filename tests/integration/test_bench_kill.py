"""`explorer bench` killed halfway and run again completes only what is missing.

The set is written by the test: the tests' bare-metal probe_panic.elf (NOP escalation: three
runs) and spin.elf (a bitwise search: about 35 runs, some seconds), each with two strategies.
The bench is killed with SIGKILL while spin's first search runs, after both probe_panic
searches have finished. Run again, it must keep the finished lines and their work directories
untouched, resume the interrupted search (keeping every run it had committed), run the one
never started, and write the report; its searches use snapshots and keep none once finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from explorer.errors import StoreError
from explorer.store import Store
from tests.firmware import build as test_firmware

pytestmark = pytest.mark.qemu

INSTRUCTION_BUDGET = 50_000_000
EXPLORER = [sys.executable, "-m", "explorer"]


def write_set(directory: Path) -> Path:
    programs = test_firmware.build()
    tables = [
        f'[[firmware]]\nname = "{name}"\nkernel = "{programs.elf(name)}"\n'
        f"instruction_budget = {INSTRUCTION_BUDGET}\n"
        for name in ("probe_panic", "spin")
    ]
    path = directory / "tiny.toml"
    path.write_text("\n".join(tables))
    return path


def result_lines(out: Path) -> list[str]:
    results = out / "tiny" / "results.jsonl"
    return results.read_text().splitlines() if results.is_file() else []


def digest(work: Path) -> str:
    return hashlib.sha256((work / "data.mdb").read_bytes()).hexdigest()


def committed_runs(work: Path) -> set[str]:
    with Store.open(work, writer=False) as store:
        return {run.state_id for run in store.runs()}


def test_a_killed_bench_completes_only_what_is_missing(tmp_path: Path, qemu_build: Path) -> None:
    out = tmp_path / "out"
    command = [*EXPLORER, "bench", str(write_set(tmp_path)), "--strategy", "best-first"]
    command += ["--strategy", "breadth-first", "--budget", "5m", "--workers", "2", "--out", str(out)]
    environment = {**os.environ, "EXPLORER_QEMU": str(qemu_build)}
    interrupted = out / "tiny" / "spin" / "best-first" / "0"
    bench = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # Wait for spin's search to commit its first generation (the initial run), then kill it.
    while bench.poll() is None and not committed_runs_or_empty(interrupted):
        time.sleep(0.1)
    assert bench.poll() is None, "the bench ended before it could be killed"
    bench.send_signal(signal.SIGKILL)
    bench.wait()

    before = result_lines(out)
    assert [json.loads(line)["firmware"] for line in before] == ["probe_panic", "probe_panic"]
    finished = [out / "tiny" / "probe_panic" / strategy / "0" for strategy in ("best-first", "breadth-first")]
    finished_digests = [digest(work) for work in finished]
    runs_before_kill = committed_runs(interrupted)
    assert not (out / "tiny" / "spin" / "breadth-first").exists()

    rerun = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    after = result_lines(out)
    assert after[: len(before)] == before
    rows = [json.loads(line) for line in after]
    assert [(row["firmware"], row["strategy"]) for row in rows] == [
        ("probe_panic", "best-first"),
        ("probe_panic", "breadth-first"),
        ("spin", "best-first"),
        ("spin", "breadth-first"),
    ]
    assert all(row["boot_completed"] and row["budget_seconds"] == 300 for row in rows), rows
    assert [digest(work) for work in finished] == finished_digests
    assert runs_before_kill <= committed_runs(interrupted)
    assert rows[2]["values_pinned"] >= 1 and rows[0]["nops"] >= 1
    report = (out / "tiny" / "report.md").read_text()
    assert "| spin | breadth-first | 1/1 |" in report and "| best-first | 2/2 (100%) |" in report
    assert len((out / "tiny" / "results.csv").read_text().splitlines()) == 1 + len(rows)
    assert "4 searches, 4 completed the boot" in rerun.stderr
    # Snapshots by default, as in `explorer search` (a search with them counts their use, here none:
    # these runs are too short to share, see test_search_snapshots_cli_boot.py); a finished entry
    # keeps no snapshot directory, which its search created (it never resumes).
    with Store.open(interrupted, writer=False) as store:
        assert "runs_from_snapshots" in store.counters()
    assert not list(out.glob("tiny/*/*/0/snapshots"))


def committed_runs_or_empty(work: Path) -> set[str]:
    """The runs committed in `work` so far; none while its store does not exist or is being created."""
    try:
        return committed_runs(work)
    except StoreError:
        return set()
