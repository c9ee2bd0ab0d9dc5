"""The bench report: results.jsonl rows turned into CSV, JSON, Markdown tables and PNG plots.

Per firmware and strategy (over its repeats): how many completed the boot, the furthest
milestone any reached, user space, the console (user space printed the marker on it), and the
medians of time to completion, runs, generations,
devices mapped, values pinned and NOPs. Per strategy (over all firmware): success rate, median
time to completion, and the spread over repeats (the lowest and highest success rate of one
repeat, the fastest and slowest completion).

Beside each firmware, the stock-QEMU ground truth (stock.jsonl, written by the bench's stock
phase): the machine and how far it booted, and its time to user space; a firmware without a
stock row shows "no model" and "not run".

The tables are functions of the rows (and stock rows) alone. write_report writes everything
beside results.jsonl: the tables, report.md with the plots (explorer.bench.plots) embedded, and
the plots, whose timelines it reads from the finished entries' stores (explorer.bench.timeline,
read-only). It runs nothing, so a report can be rebuilt from a bench directory at any time.
"Completed" is the search's own goal (explorer.search.score.boot_completed: the console
milestone where the console can be seen, else user space, or a clean power-off after init for
firmware without one). Rows written before the console milestone have no reached_console: read
as not reached.

Why searches stopped (`why_stopped`): the searches that did not complete, grouped by the kind of
blocker their furthest run stopped at (each row's `why`, explorer.bench.causes), the commonest
first, so that work goes there first; each search listed with its own cause and place.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from explorer.bench.campaign import STOCK_FILE, read_results
from explorer.bench.plots import (
    MILESTONE_PLOT,
    RUNS_PER_SECOND_PLOT,
    SUCCESS_RATE_PLOT,
    plot_best_milestone_over_time,
    plot_runs_per_second,
    plot_success_rate,
)
from explorer.bench.stock import NOT_IN_BUILD
from explorer.bench.timeline import Timeline, level_of, read_timelines
from explorer.search.engine import EXHAUSTED

# results.jsonl keys, in the CSV's column order.
COLUMNS = (
    "firmware",
    "strategy",
    "repeat",
    "ended",
    "budget_seconds",
    "boot_completed",
    "furthest_milestone",
    "reached_userspace",
    "reached_console",
    "wall_seconds",
    "wall_seconds_to_userspace",
    "runs",
    "generations",
    "devices",
    "values_pinned",
    "nops",
    "master_overhead",
)
REPORT_FILE = "report.md"
# The cause of a search whose row predates causes (explorer.bench.causes).
NOT_RECORDED = "not recorded"


def to_csv(rows: Iterable[dict[str, Any]]) -> str:
    """One line per entry, sorted by firmware, strategy and repeat."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(_sorted(rows))
    return text.getvalue()


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The report as data: {"firmware": [per firmware and strategy], "strategies": [per strategy]}."""
    return {
        "firmware": [
            _firmware_summary(firmware, strategy, group) for (firmware, strategy), group in _grouped(rows)
        ],
        "strategies": [_strategy_summary(strategy, group) for strategy, group in _by_strategy(rows)],
        "why_stopped": why_stopped(rows),
    }


def why_stopped(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The searches that did not complete the boot, grouped by the kind of their cause: per kind,
    how many, how many of them the search ended as exhausted, and each search with its cause.
    Most searches first, then by kind; a row written before causes were recorded is NOT_RECORDED.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in _sorted(rows):
        if row["boot_completed"]:
            continue
        why = row.get("why") or {"kind": NOT_RECORDED, "cause": NOT_RECORDED}
        groups.setdefault(why["kind"], []).append(
            {
                "firmware": row["firmware"],
                "strategy": row["strategy"],
                "repeat": row["repeat"],
                "ended": row["ended"],
                "cause": why["cause"],
            }
        )
    return [
        {
            "cause": kind,
            "count": len(searches),
            "exhausted": sum(search["ended"] == EXHAUSTED for search in searches),
            "searches": searches,
        }
        for kind, searches in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))
    ]


def why_stopped_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The "why searches stopped" table: kind, searches, how many exhausted, each search's cause."""
    groups = why_stopped(rows)
    stopped = sum(group["count"] for group in groups)
    # Each search is named by its firmware, and by strategy and repeat when the bench has several.
    several = len({(row["strategy"], row["repeat"]) for row in rows}) > 1
    lines = [
        f"{stopped} of {len(rows)} searches did not complete the boot. Why they stopped: the blocker "
        "their furthest run stopped at (its exit, call stack, MMIO polled), commonest first; "
        '"exhausted": the search ended with nothing left to try before its budget.',
        "",
        "| cause | searches | exhausted | firmware: where |",
        "|---|---|---|---|",
    ]
    for group in groups:
        searches = "; ".join(
            f"{search['firmware']}"
            + (f" ({search['strategy']} #{search['repeat']})" if several else "")
            + f": {search['cause']}"
            for search in group["searches"]
        )
        lines.append(f"| {group['cause']} | {group['count']} | {group['exhausted']} | {_cell(searches)} |")
    return "\n".join(lines) + "\n"


def to_json(rows: Sequence[dict[str, Any]], stock: Sequence[dict[str, Any]] = ()) -> str:
    ground_truth = sorted(stock, key=lambda row: row["firmware"])
    report = {**summarize(rows), "entries": _sorted(rows), "stock": ground_truth}
    return json.dumps(report, indent=1, sort_keys=True) + "\n"


def to_markdown(rows: Sequence[dict[str, Any]], stock: Sequence[dict[str, Any]] = ()) -> str:
    """Two Markdown tables: per firmware (and strategy), with stock QEMU beside it, then per strategy."""
    summary = summarize(rows)
    stock_of = {row["firmware"]: row for row in stock}
    lines = [
        "| firmware | strategy | completed | furthest | stock QEMU | user space | console "
        "| time to completion (s) | stock time to user space (s) | runs | generations | devices | values "
        "| NOPs |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for item in summary["firmware"]:
        ground = stock_of.get(item["firmware"])
        lines.append(
            f"| {item['firmware']} | {item['strategy']} | {item['completed']}/{item['repeats']} "
            f"| {item['furthest_milestone'] or 'none'} | {_stock_reached(ground)} "
            f"| {'yes' if item['reached_userspace'] else 'no'} "
            f"| {'yes' if item['reached_console'] else 'no'} "
            f"| {_number(item['median_seconds_to_completion'])} "
            f"| {_number(ground['wall_seconds_to_userspace']) if ground else 'not run'} "
            f"| {_number(item['median_runs'])} "
            f"| {_number(item['median_generations'])} | {_number(item['median_devices'])} "
            f"| {_number(item['median_values_pinned'])} | {_number(item['median_nops'])} |"
        )
    lines += [
        "",
        "| strategy | success rate | median time to completion (s) | success per repeat "
        "| fastest-slowest completion (s) |",
        "|---|---|---|---|---|",
    ]
    for item in summary["strategies"]:
        lines.append(
            f"| {item['strategy']} | {item['completed']}/{item['entries']} ({item['success_rate']:.0%}) "
            f"| {_number(item['median_seconds_to_completion'])} "
            f"| {_range(item['success_rate_per_repeat'], '{:.0%}')} "
            f"| {_range(item['seconds_to_completion'], '{:.0f}')} |"
        )
    return "\n".join(lines) + "\n"


def report_markdown(
    set_name: str,
    rows: Sequence[dict[str, Any]],
    stock: Sequence[dict[str, Any]] | None,
    without_timeline: int,
) -> str:
    """report.md: what was run, the tables, and the three plots under captions saying what to read.

    `stock` is None when the bench has no stock.jsonl (its stock phase has not run yet).
    """
    strategies = sorted({row["strategy"] for row in rows})
    budgets = sorted({row["budget_seconds"] for row in rows})
    repeats = len({row["repeat"] for row in rows})
    firmware = len({row["firmware"] for row in rows})
    stock_note = (
        "Stock QEMU has not been run for this bench yet (no stock.jsonl)."
        if stock is None
        else "Stock QEMU: the same kernel, device tree, initrd and command line on QEMU's own model of "
        "the board, measured by the same plugin (one boot, so its time is one boot's, where the "
        "rehosted time is the whole search's)."
    )
    missing_note = (
        f" Not drawn: {without_timeline} of {len(rows)} searches, whose stores record no "
        "generation times (older stores) or are gone."
        if without_timeline
        else ""
    )
    return "\n".join(
        [
            f"# Bench `{set_name}`",
            "",
            f"{len(rows)} searches (firmware: {firmware}; strategies: {', '.join(strategies)}; "
            f"repeats: {repeats}; budget per search: {' / '.join(_number(budget) for budget in budgets)} s).",
            "",
            stock_note,
            "",
            to_markdown(rows, stock or ()),
            "## Why searches stopped",
            "",
            why_stopped_markdown(rows),
            "How far each search had booted over its wall time (one line per search, colour = "
            "strategy, dashed = how far stock QEMU boots the same kernel): the earlier a line climbs "
            f"and the higher it ends, the better the strategy did on that firmware.{missing_note}",
            "",
            f"![best milestone over time]({MILESTONE_PLOT})",
            "",
            "Runs each search evaluated per second of its wall time (dots) and each strategy's median "
            "(bar): how much wall time a strategy spends per state it tries.",
            "",
            f"![runs per second]({RUNS_PER_SECOND_PLOT})",
            "",
            "Share of each strategy's searches that completed the boot over all repeats (bar) and "
            "the lowest to highest share of one repeat (error bar): which strategy boots most "
            "firmware, and how much that varies between repeats.",
            "",
            f"![success rate]({SUCCESS_RATE_PLOT})",
            "",
        ]
    )


def write_report(rows: Sequence[dict[str, Any]], directory: Path) -> list[Path]:
    """results.csv, results.json, report.md and its plots in `directory` (the bench's set
    directory, beside results.jsonl and stock.jsonl); their paths.

    Reads the finished entries' stores for the timelines, and nothing else but stock.jsonl.
    """
    stock_file = directory / STOCK_FILE
    stock = read_results(stock_file) if stock_file.is_file() else None
    timelines = read_timelines(directory, rows)
    drawn = [timeline for timeline in timelines if timeline is not None]
    without_timeline = len(timelines) - len(drawn)
    written = []
    for name, text in (
        ("results.csv", to_csv(rows)),
        ("results.json", to_json(rows, stock or ())),
        (REPORT_FILE, report_markdown(directory.name, rows, stock, without_timeline)),
    ):
        (directory / name).write_text(text)
        written.append(directory / name)
    written += _write_plots(rows, drawn, stock or (), without_timeline, directory)
    return written


def _write_plots(
    rows: Sequence[dict[str, Any]],
    timelines: Sequence[Timeline],
    stock: Sequence[dict[str, Any]],
    without_timeline: int,
    directory: Path,
) -> list[Path]:
    firmware = list(dict.fromkeys(row["firmware"] for row in rows))
    stock_of = {row["firmware"]: row for row in stock}
    plot_best_milestone_over_time(timelines, firmware, stock_of, without_timeline, directory / MILESTONE_PLOT)
    plot_runs_per_second(_by_strategy(rows), directory / RUNS_PER_SECOND_PLOT)
    plot_success_rate(summarize(rows)["strategies"], directory / SUCCESS_RATE_PLOT)
    return [directory / name for name in (MILESTONE_PLOT, RUNS_PER_SECOND_PLOT, SUCCESS_RATE_PLOT)]


def _stock_reached(ground: dict[str, Any] | None) -> str:
    """The stock column: the machine and how far it booted (and why it stopped short), or "no model"."""
    if ground is None:
        return "no model"
    if ground["ended"] == NOT_IN_BUILD:
        return f"{ground['machine']}: {NOT_IN_BUILD}"
    reached = f"{ground['machine']}: {ground['furthest_milestone'] or 'none'}"
    return reached if ground["reached_userspace"] else f"{reached} ({ground['ended']})"


def _firmware_summary(firmware: str, strategy: str, group: list[dict[str, Any]]) -> dict[str, Any]:
    times = [row["wall_seconds_to_userspace"] for row in group if row["boot_completed"]]
    furthest = max(
        (row["furthest_milestone"] for row in group),
        key=level_of,
    )
    return {
        "firmware": firmware,
        "strategy": strategy,
        "repeats": len(group),
        "completed": len(times),
        "furthest_milestone": furthest,
        "reached_userspace": any(row["reached_userspace"] for row in group),
        "reached_console": any(row.get("reached_console", False) for row in group),
        "median_seconds_to_completion": _median(times),
        **{f"median_{key}": _median([row[key] for row in group]) for key in _COUNTED},
    }


_COUNTED = ("runs", "generations", "devices", "values_pinned", "nops")


def _strategy_summary(strategy: str, group: list[dict[str, Any]]) -> dict[str, Any]:
    times = sorted(row["wall_seconds_to_userspace"] for row in group if row["boot_completed"])
    per_repeat: dict[int, list[bool]] = {}
    for row in group:
        per_repeat.setdefault(row["repeat"], []).append(row["boot_completed"])
    return {
        "strategy": strategy,
        "entries": len(group),
        "completed": len(times),
        "success_rate": len(times) / len(group),
        "median_seconds_to_completion": _median(times),
        "success_rate_per_repeat": [sum(done) / len(done) for _, done in sorted(per_repeat.items())],
        "seconds_to_completion": times,
    }


def _grouped(rows: Iterable[dict[str, Any]]) -> list[tuple[tuple[str, str], list[dict[str, Any]]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in _sorted(rows):
        groups.setdefault((row["firmware"], row["strategy"]), []).append(row)
    return list(groups.items())


def _by_strategy(rows: Iterable[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in _sorted(rows):
        groups.setdefault(row["strategy"], []).append(row)
    return sorted(groups.items())


def _sorted(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda row: (row["firmware"], row["strategy"], row["repeat"]))


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 10 or float(value).is_integer() else f"{value:.1f}"


def _cell(text: str) -> str:
    """`text` inside a Markdown table cell (a guest's panic message may hold a bar or a newline)."""
    return text.replace("|", "\\|").replace("\n", " ")


def _range(values: Sequence[float], form: str) -> str:
    if not values:
        return "-"
    low, high = min(values), max(values)
    return form.format(low) if low == high else f"{form.format(low)}-{form.format(high)}"
