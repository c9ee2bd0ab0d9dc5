"""The bench's bookkeeping and report: entries in order, results.jsonl that survives torn writes,
and tables whose numbers are the rows' numbers."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from explorer.bench.campaign import BenchPlan, append_result, entries, read_results
from explorer.bench.report import summarize, to_csv, to_json, to_markdown
from explorer.bench.sets import BenchFirmware, BenchSet
from explorer.errors import BadInput
from explorer.runner.kernel_hooks import MILESTONES
from explorer.search.state import Target

FIRMWARE = ("spin", "probe_panic", "values")
STRATEGY_NAMES = ("best-first", "breadth-first", "random")


@st.composite
def rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    keys = draw(
        st.lists(
            st.tuples(st.sampled_from(FIRMWARE), st.sampled_from(STRATEGY_NAMES), st.integers(0, 3)),
            min_size=1,
            max_size=12,
            unique=True,
        )
    )
    drawn = []
    for firmware, strategy, repeat in keys:
        completed = draw(st.booleans())
        wall = draw(st.floats(0.1, 900, allow_nan=False))
        drawn.append(
            {
                "firmware": firmware,
                "strategy": strategy,
                "repeat": repeat,
                "ended": "boot completed" if completed else "budget",
                "boot_completed": completed,
                "furthest_milestone": draw(st.sampled_from([None, *MILESTONES])),
                "reached_userspace": completed and draw(st.booleans()),
                "wall_seconds": wall,
                "wall_seconds_to_userspace": wall if completed else None,
                **{key: draw(st.integers(0, 500)) for key in ("runs", "generations", "devices")},
                **{key: draw(st.integers(0, 50)) for key in ("values_pinned", "nops")},
                "master_overhead": draw(st.floats(0, 1)),
            }
        )
    return drawn


def tiny_set(names: tuple[str, ...]) -> BenchSet:
    return BenchSet("tiny", tuple(BenchFirmware(name, Target(kernel=Path(name))) for name in names))


def test_entries_run_in_whole_rounds_repeat_by_repeat() -> None:
    plan = BenchPlan(("best-first", "random"), 2, 60.0, 2)
    keys = [entry.key for entry in entries(tiny_set(("a", "b")), plan)]
    assert keys == [
        (firmware, strategy, repeat)
        for repeat in (0, 1)
        for firmware in ("a", "b")
        for strategy in ("best-first", "random")
    ]


def test_a_plan_with_an_unknown_strategy_is_bad_input() -> None:
    with pytest.raises(BadInput, match="unknown strategy"):
        BenchPlan(("best-first", "simulated-annealing"), 1, 60.0, 2)


@given(rows(), st.binary(max_size=40).filter(lambda torn: b"\n" not in torn))
def test_results_keep_every_complete_line_and_drop_a_torn_one(
    tmp_path_factory: Any, drawn: list[dict[str, Any]], torn: bytes
) -> None:
    results = tmp_path_factory.mktemp("bench") / "results.jsonl"
    first, rest = drawn[:1], drawn[1:]
    for row in first:
        append_result(results, row)
    with open(results, "ab") as file:
        file.write(torn)  # a kill in the middle of the next line's write
    assert read_results(results) == first
    for row in rest:
        append_result(results, row)
    assert read_results(results) == drawn
    if rest:
        assert results.read_bytes().endswith(b"\n")


@given(rows())
def test_the_csv_has_one_line_per_entry_with_its_numbers(drawn: list[dict[str, Any]]) -> None:
    parsed = list(csv.DictReader(io.StringIO(to_csv(drawn))))
    assert len(parsed) == len(drawn)
    by_key = {(row["firmware"], row["strategy"], int(row["repeat"])): row for row in parsed}
    for row in drawn:
        assert int(by_key[(row["firmware"], row["strategy"], row["repeat"])]["runs"]) == row["runs"]


@given(rows())
def test_a_strategys_success_rate_is_its_completed_entries_over_its_entries(
    drawn: list[dict[str, Any]],
) -> None:
    summary = summarize(drawn)
    for item in summary["strategies"]:
        own = [row for row in drawn if row["strategy"] == item["strategy"]]
        assert item["entries"] == len(own)
        assert item["success_rate"] == sum(row["boot_completed"] for row in own) / len(own)
        rates = item["success_rate_per_repeat"]
        assert min(rates) <= item["success_rate"] <= max(rates)
        times = item["seconds_to_completion"]
        if times:
            assert min(times) <= item["median_seconds_to_completion"] <= max(times)
        else:
            assert item["median_seconds_to_completion"] is None
    assert sum(item["entries"] for item in summary["strategies"]) == len(drawn)


@given(rows())
def test_a_firmwares_furthest_milestone_is_the_furthest_any_repeat_reached(
    drawn: list[dict[str, Any]],
) -> None:
    order = {name: index for index, name in enumerate(MILESTONES)}
    for item in summarize(drawn)["firmware"]:
        reached = [
            row["furthest_milestone"]
            for row in drawn
            if (row["firmware"], row["strategy"]) == (item["firmware"], item["strategy"])
        ]
        furthest = item["furthest_milestone"]
        assert furthest in reached
        assert all(order.get(milestone, -1) <= order.get(furthest, -1) for milestone in reached)


@given(rows())
def test_the_markdown_has_a_row_per_firmware_and_strategy_and_per_strategy(
    drawn: list[dict[str, Any]],
) -> None:
    markdown = to_markdown(drawn)
    pairs = {(row["firmware"], row["strategy"]) for row in drawn}
    strategies = {row["strategy"] for row in drawn}
    table_rows = [line for line in markdown.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(table_rows) == 2 + len(pairs) + len(strategies)
    assert json.loads(to_json(drawn))["entries"] == sorted(
        drawn, key=lambda row: (row["firmware"], row["strategy"], row["repeat"])
    )
