"""The report beside stock QEMU, and `explorer bench --report-only`, which rebuilds it and runs nothing.

Stock rows are what the bench's stock phase writes to stock.jsonl; a firmware without one (no stock
model, or the phase has not run) shows "no model" and "not run".
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from explorer.bench.campaign import RESULTS_FILE, STOCK_FILE, append_result
from explorer.bench.plots import MILESTONE_PLOT, RUNS_PER_SECOND_PLOT, SUCCESS_RATE_PLOT
from explorer.bench.report import REPORT_FILE, report_markdown, to_markdown, write_report
from explorer.bench.stock import NOT_IN_BUILD
from explorer.bench.timeline import LEVELS, USER_SPACE
from tests.unit.test_bench_plots import row, write_store

STOCK_ROW = {
    "firmware": "vexpress",
    "machine": "vexpress-a9",
    "furthest_milestone": "user space",
    "reached_userspace": True,
    "wall_seconds": 4.3,
    "ended": "user space",
    "wall_seconds_to_userspace": 4.3,
}
ROWS = [row("vexpress", "best-first", 0, 20.0, [4, 10]), row("boneblack", "best-first", 0, 60.0, [4, 7])]


def table_rows(markdown: str) -> dict[str, dict[str, str]]:
    """The per-firmware table's cells by column name, one dict per firmware."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    cells = {}
    for line in lines[1:]:
        values = [cell.strip() for cell in line.strip("|").split("|")]
        if len(values) != len(header):
            break  # the per-strategy table starts
        cells[values[0]] = dict(zip(header, values, strict=True))
    return cells


def test_the_firmware_table_shows_stock_qemu_beside_the_rehosted_numbers() -> None:
    cells = table_rows(to_markdown(ROWS, [STOCK_ROW]))
    assert cells["vexpress"]["stock QEMU"] == "vexpress-a9: user space"
    assert cells["vexpress"]["stock time to user space (s)"] == "4.3"
    assert cells["vexpress"]["time to completion (s)"] == "20"
    assert cells["boneblack"]["stock QEMU"] == "no model"
    assert cells["boneblack"]["stock time to user space (s)"] == "not run"


def test_the_console_column_says_which_searches_saw_the_marker_and_old_rows_read_as_not() -> None:
    console, user_space = len(LEVELS) - 1, LEVELS.index(USER_SPACE)
    old = row("old", "best-first", 0, 5.0, [console])
    del old["reached_console"]
    printed = row("printed", "best-first", 0, 9.0, [console])
    rows = [printed, row("silent", "best-first", 0, 9.0, [user_space]), old]
    cells = table_rows(to_markdown(rows))
    assert [cells[name]["console"] for name in ("printed", "silent", "old")] == ["yes", "no", "no"]
    assert [cells[name]["user space"] for name in ("printed", "silent")] == ["yes", "yes"]


def test_a_stock_boot_that_stopped_short_says_where_and_why() -> None:
    stopped = {
        **STOCK_ROW,
        "furthest_milestone": "time_init",
        "reached_userspace": False,
        "ended": "deadline",
        "wall_seconds_to_userspace": None,
    }
    cells = table_rows(to_markdown(ROWS, [stopped]))
    assert cells["vexpress"]["stock QEMU"] == "vexpress-a9: time_init (deadline)"
    assert cells["vexpress"]["stock time to user space (s)"] == "-"
    missing = {**stopped, "furthest_milestone": None, "ended": NOT_IN_BUILD}
    assert (
        table_rows(to_markdown(ROWS, [missing]))["vexpress"]["stock QEMU"] == f"vexpress-a9: {NOT_IN_BUILD}"
    )


def test_without_stock_jsonl_every_firmware_is_no_model_and_not_run(tmp_path: Path) -> None:
    write_report(ROWS, tmp_path)
    report = (tmp_path / REPORT_FILE).read_text()
    assert "no stock.jsonl" in report
    for cells in table_rows(report).values():
        assert (cells["stock QEMU"], cells["stock time to user space (s)"]) == ("no model", "not run")


def test_write_report_reads_stock_jsonl_and_drops_a_torn_line(tmp_path: Path) -> None:
    append_result(tmp_path / STOCK_FILE, STOCK_ROW)
    with open(tmp_path / STOCK_FILE, "ab") as file:
        file.write(b'{"firmware": "boneb')  # the stock phase killed mid-line
    write_report(ROWS, tmp_path)
    cells = table_rows((tmp_path / REPORT_FILE).read_text())
    assert cells["vexpress"]["stock QEMU"] == "vexpress-a9: user space"
    assert cells["boneblack"]["stock QEMU"] == "no model"


def test_the_report_says_what_was_run() -> None:
    markdown = report_markdown("dev", ROWS, [STOCK_ROW], without_timeline=0)
    assert markdown.startswith("# Bench `dev`\n")
    assert (
        "2 searches (firmware: 2; strategies: best-first; repeats: 1; budget per search: 60 s)." in markdown
    )


def explorer(*args: str, cache: Path | None = None) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if key != "EXPLORER_QEMU"}
    if cache is not None:
        environment["EXPLORER_CACHE"] = str(cache)
    return subprocess.run(
        [sys.executable, "-m", "explorer", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )


def tiny_set(tmp_path: Path) -> Path:
    (tmp_path / "zImage").write_bytes(b"not booted by a report")
    set_file = tmp_path / "tiny.toml"
    set_file.write_text('[[firmware]]\nname = "vexpress"\nkernel = "zImage"\n')
    return set_file


def test_report_only_rebuilds_the_report_of_finished_searches_without_qemu(tmp_path: Path) -> None:
    bench = tmp_path / "out" / "tiny"
    finished: dict[str, Any] = row("vexpress", "best-first", 0, 0.0, [4, 10])
    finished["wall_seconds"] = write_store(
        bench / "vexpress" / "best-first" / "0", [(12.0, [4]), (8.0, [10])]
    )
    append_result(bench / RESULTS_FILE, finished)
    result = explorer("bench", str(tiny_set(tmp_path)), "--out", str(tmp_path / "out"), "--report-only")
    assert result.returncode == 0, result.stderr
    report = (bench / REPORT_FILE).read_text()
    assert "| vexpress | best-first | 1/1 | user space | no model |" in report
    assert "Not drawn" not in report
    assert {path.name for path in bench.glob("*.png")} == {
        MILESTONE_PLOT,
        RUNS_PER_SECOND_PLOT,
        SUCCESS_RATE_PLOT,
    }


def test_report_only_without_finished_searches_is_one_line(tmp_path: Path) -> None:
    result = explorer("bench", str(tiny_set(tmp_path)), "--out", str(tmp_path / "out"), "--report-only")
    assert result.returncode == 2
    assert "no finished search" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_bench_without_a_runner_build_is_one_line(tmp_path: Path) -> None:
    result = explorer(
        "bench", str(tiny_set(tmp_path)), "--out", str(tmp_path / "out"), cache=tmp_path / "empty-cache"
    )
    assert result.returncode == 2
    assert "explorer runner build" in result.stderr
    assert "Traceback" not in result.stderr
