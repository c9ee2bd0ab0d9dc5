"""The report's "why searches stopped": hand-built results grouped by the kind of their cause,
the commonest first, in report.md and results.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from explorer.bench import causes
from explorer.bench.campaign import ERROR, RESULTS_FILE, BenchPlan, Entry, error_row, read_results, run_bench
from explorer.bench.report import NOT_RECORDED, report_markdown, to_json, why_stopped, write_report
from explorer.bench.sets import BenchFirmware, BenchSet
from explorer.execution.jobs import RunnerSetup
from explorer.runner.command import Plugin
from explorer.search.state import Target
from tests.unit.test_bench_plots import row


def stopped(firmware: str, kind: str, cause: str, ended: str = "budget", repeat: int = 0) -> dict[str, Any]:
    """A finished search's row that did not complete the boot, with its cause."""
    return {
        **row(firmware, "best-first", repeat, 180.0, [4, 6]),
        "ended": ended,
        "boot_completed": False,
        "reached_userspace": False,
        "wall_seconds_to_userspace": None,
        "why": {"kind": kind, "cause": cause},
    }


def completed(firmware: str) -> dict[str, Any]:
    return {**row(firmware, "best-first", 0, 40.0, [4, 10]), "why": {"kind": "boot completed", "cause": "-"}}


IDLE = "idle in kernel_init after {} initcalls (last {}), no interrupt came"
ROWS = [
    completed("vexpress"),
    stopped("imx6", causes.STUCK_POLLING, "stuck polling MMIO 0x20c4000 in imx_clk_wait"),
    stopped("tegra", causes.IDLE_NO_INTERRUPT, IDLE.format(40, "foo_init")),
    stopped("omap5", causes.STUCK_POLLING, "stuck polling MMIO 0x4a002000 in omap_poll", ended="exhausted"),
    stopped("sun9i", causes.UNDEFINED_INSTRUCTION, "undefined instruction in setup_arch", ended="exhausted"),
    stopped("armada", causes.IDLE_NO_INTERRUPT, IDLE.format(12, "bar_init")),
    stopped("ts409", causes.STUCK_POLLING, "stuck polling MMIO 0xf1012000 in orion_poll"),
]


def test_searches_are_grouped_by_kind_commonest_first_without_the_completed_ones() -> None:
    groups = why_stopped(ROWS)
    assert [(group["cause"], group["count"]) for group in groups] == [
        (causes.STUCK_POLLING, 3),
        (causes.IDLE_NO_INTERRUPT, 2),
        (causes.UNDEFINED_INSTRUCTION, 1),
    ]
    assert [group["exhausted"] for group in groups] == [1, 0, 1]
    stuck = groups[0]["searches"]
    assert [search["firmware"] for search in stuck] == ["imx6", "omap5", "ts409"]
    assert stuck[0]["cause"] == "stuck polling MMIO 0x20c4000 in imx_clk_wait"
    assert all(search["firmware"] != "vexpress" for group in groups for search in group["searches"])


def test_equal_counts_are_ordered_by_kind_and_an_older_row_is_not_recorded() -> None:
    older = {key: value for key, value in stopped("old", "-", "-").items() if key != "why"}
    rows = [stopped("b", causes.PANIC, "panic in foo"), stopped("a", causes.BUG, "BUG in bar"), older]
    assert [group["cause"] for group in why_stopped(rows)] == [causes.BUG, NOT_RECORDED, causes.PANIC]


def test_report_md_has_the_table_and_results_json_the_groups() -> None:
    markdown = report_markdown("wide", ROWS, None, without_timeline=0)
    section = markdown[markdown.index("## Why searches stopped") :]
    table = [line for line in section.splitlines() if line.startswith("| ")]
    assert table[0] == "| cause | searches | exhausted | firmware: where |"
    assert table[1].startswith(
        f"| {causes.STUCK_POLLING} | 3 | 1 | imx6: stuck polling MMIO 0x20c4000 in imx_clk_wait; "
    )
    assert table[2].startswith(f"| {causes.IDLE_NO_INTERRUPT} | 2 | 0 | armada: idle in kernel_init")
    assert "6 of 7 searches did not complete the boot" in section
    assert json.loads(to_json(ROWS))["why_stopped"] == why_stopped(ROWS)


def test_a_search_that_raised_is_a_row_whose_cause_is_its_error() -> None:
    entry = Entry(BenchFirmware("imx6ul", Target(kernel=Path("zImage"))), "best-first", 0)
    message = "config: tick and interrupt_controller both drive the CPU's IRQ line: give one"
    rejected = error_row(entry, BenchPlan(("best-first",), 1, 180.0, 2), message)
    (group,) = why_stopped([rejected])
    assert group["cause"] == causes.CONFIG_REJECTED
    assert group["searches"][0]["ended"] == "error"
    assert group["searches"][0]["cause"].startswith("config rejected: config: tick and interrupt_controller")


def test_a_bar_in_a_cause_does_not_break_the_table(tmp_path: Path) -> None:
    rows = [stopped("a", causes.PANIC, "panic in foo: bad | worse\nthen")]
    write_report(rows, tmp_path)
    line = next(
        line for line in (tmp_path / "report.md").read_text().splitlines() if line.startswith("| panic")
    )
    assert line == "| panic | 1 | 0 | a: panic in foo: bad \\| worse then |"


def test_a_firmware_the_search_refuses_is_its_entrys_row_and_the_bench_goes_on(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.elf"
    truncated.write_bytes(b"\x7fELF")
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    bench_set = BenchSet(
        "tiny", (BenchFirmware("truncated", Target(truncated)), BenchFirmware("empty", Target(empty)))
    )
    setup = RunnerSetup(tmp_path / "no-qemu", Plugin(tmp_path / "no-plugin.so"))
    rows = run_bench(bench_set, BenchPlan(("best-first",), 1, 60.0, 1), tmp_path / "out", setup)
    assert [(row["firmware"], row["ended"]) for row in rows] == [("truncated", ERROR), ("empty", ERROR)]
    assert read_results(tmp_path / "out" / "tiny" / RESULTS_FILE) == rows
    (group,) = why_stopped(rows)
    assert group["cause"] == causes.SEARCH_ERROR and group["count"] == 2
    assert "is empty" in group["searches"][0]["cause"]
