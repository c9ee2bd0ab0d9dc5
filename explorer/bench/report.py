"""The bench report: results.jsonl rows turned into CSV, JSON and Markdown tables.

Per firmware and strategy (over its repeats): how many completed the boot, the furthest
milestone any reached, user space, and the medians of time to completion, runs, generations,
devices mapped, values pinned and NOPs. Per strategy (over all firmware): success rate, median
time to completion, and the spread over repeats (the lowest and highest success rate of one
repeat, the fastest and slowest completion).

Functions of the rows alone: it reads no store and runs nothing, so a report can be rebuilt
from a results.jsonl (write_report writes the three files beside it). "Completed" is the
search's own goal (explorer.search.score.boot_completed: user space, or a clean power-off after
init for firmware without one).
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from explorer.runner.kernel_hooks import MILESTONES

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
    "wall_seconds",
    "wall_seconds_to_userspace",
    "runs",
    "generations",
    "devices",
    "values_pinned",
    "nops",
    "master_overhead",
)
# How far a milestone is, user space last; None (no milestone reached) is -1.
_MILESTONE_ORDER = {name: index for index, name in enumerate([*MILESTONES, "user space"])}


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
    }


def to_json(rows: Sequence[dict[str, Any]]) -> str:
    return json.dumps({**summarize(rows), "entries": _sorted(rows)}, indent=1, sort_keys=True) + "\n"


def to_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """Two Markdown tables: per firmware (and strategy), then per strategy."""
    summary = summarize(rows)
    lines = [
        "| firmware | strategy | completed | furthest | user space | time to completion (s) | runs "
        "| generations | devices | values | NOPs |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for item in summary["firmware"]:
        lines.append(
            f"| {item['firmware']} | {item['strategy']} | {item['completed']}/{item['repeats']} "
            f"| {item['furthest_milestone'] or 'none'} | {'yes' if item['reached_userspace'] else 'no'} "
            f"| {_number(item['median_seconds_to_completion'])} | {_number(item['median_runs'])} "
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


def write_report(rows: Sequence[dict[str, Any]], directory: Path) -> list[Path]:
    """results.csv, results.json and report.md in `directory`; their paths."""
    written = []
    for name, text in (
        ("results.csv", to_csv(rows)),
        ("results.json", to_json(rows)),
        ("report.md", to_markdown(rows)),
    ):
        (directory / name).write_text(text)
        written.append(directory / name)
    return written


def _firmware_summary(firmware: str, strategy: str, group: list[dict[str, Any]]) -> dict[str, Any]:
    times = [row["wall_seconds_to_userspace"] for row in group if row["boot_completed"]]
    furthest = max(
        (row["furthest_milestone"] for row in group),
        key=lambda milestone: _MILESTONE_ORDER.get(milestone, -1),
    )
    return {
        "firmware": firmware,
        "strategy": strategy,
        "repeats": len(group),
        "completed": len(times),
        "furthest_milestone": furthest,
        "reached_userspace": any(row["reached_userspace"] for row in group),
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


def _range(values: Sequence[float], form: str) -> str:
    if not values:
        return "-"
    low, high = min(values), max(values)
    return form.format(low) if low == high else f"{form.format(low)}-{form.format(high)}"
