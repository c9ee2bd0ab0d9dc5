"""Timelines read from real stores (LMDB in tmp_path) and the report's PNG plots.

A store here is written as a search writes one: generations committed in order, each with its runs
(real RunResults, scored by the search's own score) and the wall time it added; an "old" store is
one whose generations add no wall time, as stores did before the time was recorded.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from explorer.bench.plots import (
    MILESTONE_PLOT,
    PANEL_COLUMNS,
    PANEL_MARGIN_INCHES,
    PANEL_ROW_INCHES,
    PLOT_DPI,
    PLOT_WIDTH_PIXELS,
    RUNS_PER_SECOND_PLOT,
    SMALL_PLOT_INCHES,
    SUCCESS_RATE_PLOT,
    strategy_colour,
)
from explorer.bench.report import write_report
from explorer.bench.timeline import LEVELS, USER_SPACE, entry_timeline, level_of, store_timeline
from explorer.corpus.initramfs import USERSPACE_MARKER
from explorer.runner.analysis import USER_SPACE_MILESTONE
from explorer.runner.kernel_hooks import MILESTONES
from explorer.runner.machine_config_pb2 import MachineConfig
from explorer.runner.rehost_pb2 import Exit, ExitReason, Milestone, RunResult
from explorer.runner.result import serialize
from explorer.search.score import CONSOLE, score
from explorer.search.state import canonical_bytes, state_id
from explorer.search.strategy import STRATEGIES
from explorer.store import Generation, RunRecord, Store

# One generation: the wall seconds it added (None: an old store's, which records none) and the
# level (explorer.bench.timeline.LEVELS) each of its runs reached.
GenerationPlan = tuple[float | None, Sequence[int]]
generation_plans = st.lists(
    st.tuples(
        st.floats(0.0, 120.0, allow_nan=False),
        st.lists(st.integers(0, len(LEVELS) - 1), min_size=1, max_size=4),
    ),
    max_size=6,
)


def run_result(level: int) -> RunResult:
    """A run that reached the milestone of `level` (all of them, then user space, then the console
    with the marker printed, at the top levels)."""
    result = RunResult(milestones=[Milestone(name=name) for name in MILESTONES[:level]])
    if LEVELS[level] == USER_SPACE:
        result.exit.CopyFrom(Exit(reason=ExitReason.EXIT_USER_SPACE))
    if LEVELS[level] == CONSOLE:
        result.milestones.append(Milestone(name=USER_SPACE_MILESTONE))
        result.exit.CopyFrom(Exit(reason=ExitReason.EXIT_HALT, detail="machine_power_off"))
        result.console = f"Run /init\n{USERSPACE_MARKER}\n".encode()
    return result


def write_store(directory: Path, plan: Sequence[GenerationPlan]) -> float:
    """A search's store with the generations of `plan`; the search's total wall seconds."""
    wall = 0.0
    with Store.create(directory, {"test": True}) as store:
        for number, (seconds, levels) in enumerate(plan):
            states, runs = [], []
            for index, level in enumerate(levels):
                data = canonical_bytes(MachineConfig(target="arm", seed=1000 * number + index))
                identity = state_id(MachineConfig(target="arm", seed=1000 * number + index))
                result = run_result(level)
                states.append((identity, data))
                runs.append(RunRecord(identity, serialize(result), score(result).to_bytes(), 1.0, number))
            counters = {} if seconds is None else {"wall_seconds": seconds}
            store.commit(
                Generation(number=number, expanded=None, states=states, runs=runs, counters=counters)
            )
            wall += seconds or 0.0
    return wall


def row(firmware: str, strategy: str, repeat: int, wall: float, levels: Sequence[int]) -> dict[str, Any]:
    """The results row of a finished entry whose runs reached `levels`."""
    best = LEVELS[max(levels, default=0)]
    completed = best in (USER_SPACE, CONSOLE)
    return {
        "firmware": firmware,
        "strategy": strategy,
        "repeat": repeat,
        "ended": "boot completed" if completed else "budget",
        "budget_seconds": 60.0,
        "boot_completed": completed,
        "furthest_milestone": best,
        "reached_userspace": completed,
        "reached_console": best == CONSOLE,
        "wall_seconds": wall,
        "wall_seconds_to_userspace": wall if completed else None,
        "runs": len(levels),
        "generations": 1,
        "devices": 0,
        "values_pinned": 0,
        "nops": 0,
        "master_overhead": 0.01,
    }


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@settings(max_examples=25, deadline=None)
@given(generation_plans)
def test_a_timeline_is_monotone_and_ends_at_the_best_run(tmp_path_factory: Any, plan: list) -> None:
    directory = tmp_path_factory.mktemp("store")
    write_store(directory, plan)
    with Store.open(directory, writer=False) as store:
        points = store_timeline(store)
    assert points is not None
    assert points[0] == (0.0, 0)
    assert len(points) == 1 + len(plan)
    times = [time for time, _ in points]
    levels = [level for _, level in points]
    assert times == sorted(times)
    assert levels == sorted(levels)
    assert levels[-1] == max((level for _, reached in plan for level in reached), default=0)


def test_a_store_without_generation_times_gives_no_timeline(tmp_path: Path) -> None:
    write_store(tmp_path / "tiny" / "a" / "best-first" / "0", [(None, [3]), (None, [5])])
    old = row("a", "best-first", 0, 30.0, [3, 5])
    assert entry_timeline(tmp_path / "tiny", old) is None


def test_an_entry_whose_store_is_gone_gives_no_timeline(tmp_path: Path) -> None:
    assert entry_timeline(tmp_path / "tiny", row("a", "best-first", 0, 30.0, [3])) is None


def test_levels_order_milestones_as_a_boot_reaches_them() -> None:
    assert [level_of(name) for name in (None, *MILESTONES, USER_SPACE, CONSOLE)] == list(range(len(LEVELS)))


def test_every_strategy_has_its_own_colour() -> None:
    colours = [strategy_colour(strategy) for strategy in STRATEGIES]
    assert len(set(colours)) == len(colours)


def test_the_report_writes_three_pngs_of_the_width_they_are_shown_at(tmp_path: Path) -> None:
    bench = tmp_path / "tiny"
    rows = []
    for firmware_index, firmware in enumerate(("a", "b", "c", "d")):
        for strategy in ("best-first", "random"):
            for repeat in (0, 1):
                plan = [(5.0 + repeat, [1]), (7.0, [firmware_index + repeat + 2]), (3.0, [1])]
                wall = write_store(bench / firmware / strategy / str(repeat), plan)
                rows.append(
                    row(firmware, strategy, repeat, wall, [level for _, run in plan for level in run])
                )
    write_store(bench / "d" / "breadth-first" / "0", [(None, [4])])  # an old store: no timeline
    rows.append(row("d", "breadth-first", 0, 12.0, [4]))
    rows.append(row("d", "depth-first", 0, 12.0, [4]))  # its store is gone: no timeline
    written = {path.name for path in write_report(rows, bench)}
    assert {MILESTONE_PLOT, RUNS_PER_SECOND_PLOT, SUCCESS_RATE_PLOT} <= written
    panel_rows = -(-4 // PANEL_COLUMNS)
    assert png_size(bench / MILESTONE_PLOT) == (
        PLOT_WIDTH_PIXELS,
        round((PANEL_MARGIN_INCHES + PANEL_ROW_INCHES * panel_rows) * PLOT_DPI),
    )
    for name in (RUNS_PER_SECOND_PLOT, SUCCESS_RATE_PLOT):
        assert png_size(bench / name) == (PLOT_WIDTH_PIXELS, round(SMALL_PLOT_INCHES * PLOT_DPI))
    report = (bench / "report.md").read_text()
    for name in (MILESTONE_PLOT, RUNS_PER_SECOND_PLOT, SUCCESS_RATE_PLOT):
        assert f"]({name})" in report
    assert f"Not drawn: 2 of {len(rows)} searches" in report
