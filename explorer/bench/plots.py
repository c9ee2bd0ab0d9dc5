"""The bench report's plots: PNG files drawn from results rows, timelines and stock-QEMU rows.

Three plots, one message each, sized to be read where BENCHMARKS.md shows them (PLOT_WIDTH_PIXELS
wide, no scaling):
- best_milestone_over_time.png: how far each search had booted over its wall time, one panel per
  firmware, with the stock-QEMU milestone where the firmware has a stock model that this QEMU build
  has (a stock row that says the build lacks the board is not a measurement, so it draws nothing);
- runs_per_second.png: how fast each strategy's searches evaluated states;
- success_rate.png: which share of each strategy's searches completed the boot.
A strategy has the same colour in every plot (and every bench): its place in
explorer.search.strategy.STRATEGIES picks it.

It draws what it is given and computes nothing a table does not show: success rates come from
explorer.bench.report's summary. Figures are matplotlib Figure objects rendered by the Agg canvas,
never pyplot: no display, no global figure registry.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from explorer.bench.stock import NOT_IN_BUILD
from explorer.bench.timeline import LEVELS, USER_SPACE, Timeline, level_of
from explorer.search.strategy import STRATEGIES

MILESTONE_PLOT = "best_milestone_over_time.png"
RUNS_PER_SECOND_PLOT = "runs_per_second.png"
SUCCESS_RATE_PLOT = "success_rate.png"
PLOT_DPI = 100
PLOT_WIDTH_PIXELS = 900
# Milestone panels per row of the grid: three keep a firmware name and the axes legible at 900 px.
PANEL_COLUMNS = 3
PANEL_ROW_INCHES = 2.25
# Above and below the panels: the title and the legend.
PANEL_MARGIN_INCHES = 1.0
SMALL_PLOT_INCHES = 4.0
# Colour-blind-safe palette (Okabe-Ito), one per strategy in STRATEGIES order; later ones reuse it.
_PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9")
_STOCK_COLOUR = "#444444"
_LEVEL_NAMES = [name or "none" for name in LEVELS]
_GOLDEN_RATIO = (1 + 5**0.5) / 2


def strategy_colour(strategy: str) -> str:
    """The colour of a strategy in every plot."""
    names = list(STRATEGIES)
    index = names.index(strategy) if strategy in names else len(names)
    return _PALETTE[index % len(_PALETTE)]


def plot_best_milestone_over_time(
    timelines: Sequence[Timeline],
    firmware: Sequence[str],
    stock: dict[str, dict[str, Any]],
    without_timeline: int,
    path: Path,
) -> None:
    """One panel per firmware (in `firmware`'s order): a step line per entry, the stock milestone dashed.

    `without_timeline` counts the finished entries that have none (their stores record no
    generation times); the title says how many are missing instead of drawing anything for them.
    """
    rows = max(1, math.ceil(len(firmware) / PANEL_COLUMNS))
    columns = min(PANEL_COLUMNS, max(1, len(firmware)))
    figure = _figure(PANEL_MARGIN_INCHES + PANEL_ROW_INCHES * rows)
    grid = figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False)
    latest = max([1.0, *(timeline.end_seconds for timeline in timelines)])
    strategies = list(dict.fromkeys(timeline.strategy for timeline in timelines))
    for index, axes in enumerate(grid.flat):
        if index >= len(firmware):
            axes.set_visible(False)
            continue
        name = firmware[index]
        own = [timeline for timeline in timelines if timeline.firmware == name]
        _milestone_panel(axes, name, own, strategies, stock.get(name), latest)
        if index % columns == 0:
            axes.set_yticks(range(len(LEVELS)), _LEVEL_NAMES, fontsize=7.5)
        if index >= len(firmware) - columns:
            axes.set_xlabel("search wall time (s)", fontsize=8)
            axes.tick_params(axis="x", labelbottom=True, labelsize=8)
    handles = [
        Line2D([], [], color=strategy_colour(strategy), linewidth=2, label=strategy)
        for strategy in strategies
    ]
    if any(timeline.points[-1][1] >= level_of(USER_SPACE) for timeline in timelines):
        handles.append(Line2D([], [], color="grey", marker="o", linestyle="", label="reached user space"))
    if any(name in stock and stock[name]["ended"] != NOT_IN_BUILD for name in firmware):
        handles.append(Line2D([], [], color=_STOCK_COLOUR, linestyle="--", label="stock QEMU"))
    figure.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=9, frameon=False)
    title = "Best milestone reached over each search's wall time, per firmware"
    if without_timeline:
        title += f" (not drawn: {without_timeline} without a timeline)"
    figure.suptitle(title, fontsize=11)
    _save(figure, path)


def _milestone_panel(
    axes: Axes,
    firmware: str,
    timelines: Sequence[Timeline],
    strategies: Sequence[str],
    stock: dict[str, Any] | None,
    latest: float,
) -> None:
    axes.set_title(firmware, fontsize=8.5)
    axes.set_ylim(-0.5, len(LEVELS) - 0.4)
    axes.set_xlim(0, latest * 1.02)
    axes.grid(axis="y", color="#dddddd", linewidth=0.6)
    for timeline in timelines:
        # Strategies that reach the same level at the same time would hide one another: each is
        # drawn a little above or below the level, by its place among the strategies.
        offset = 0.12 * (strategies.index(timeline.strategy) - (len(strategies) - 1) / 2)
        times = [time for time, _ in timeline.points] + [timeline.end_seconds]
        levels = [level + offset for _, level in timeline.points]
        levels.append(levels[-1])
        colour = strategy_colour(timeline.strategy)
        axes.step(times, levels, where="post", color=colour, linewidth=1.4)
        if timeline.points[-1][1] >= level_of(USER_SPACE):
            axes.plot(times[-1], levels[-1], marker="o", markersize=4, color=colour)
    if stock is not None and stock["ended"] != NOT_IN_BUILD:
        level = level_of(stock["furthest_milestone"])
        axes.axhline(level, color=_STOCK_COLOUR, linestyle="--", linewidth=1)
        axes.text(
            0.98,
            level - 0.35,
            f"stock QEMU: {stock['furthest_milestone'] or 'none'}",
            transform=axes.get_yaxis_transform(),
            ha="right",
            va="top",
            fontsize=7,
            color=_STOCK_COLOUR,
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1},
        )
    if not timelines:
        axes.text(0.5, 0.5, "no timeline", transform=axes.transAxes, ha="center", fontsize=8, color="grey")


def plot_runs_per_second(by_strategy: Sequence[tuple[str, Sequence[dict[str, Any]]]], path: Path) -> None:
    """Per strategy (results rows grouped by strategy), each search's runs per second (runs / its wall
    time) as a point, the median as a bar."""
    figure = _figure(SMALL_PLOT_INCHES)
    axes = figure.subplots()
    for position, (strategy, group) in enumerate(by_strategy):
        rates = [row["runs"] / row["wall_seconds"] for row in group if row["wall_seconds"] > 0]
        if not rates:
            continue
        # Spread a strategy's points across its slot, so that equal rates stay countable; the
        # golden-ratio sequence spreads them evenly without tying a point's place to its value.
        spread = [position + 0.3 * ((index * _GOLDEN_RATIO) % 1 - 0.5) for index in range(len(rates))]
        axes.scatter(spread, rates, color=strategy_colour(strategy), s=22, alpha=0.8, zorder=3)
        median = statistics.median(rates)
        axes.hlines(median, position - 0.3, position + 0.3, color="black", linewidth=2.5, zorder=4)
        axes.annotate(
            f"median {median:.2f}/s",
            (position + 0.32, median),
            va="center",
            fontsize=8,
        )
    axes.set_xticks(range(len(by_strategy)), [strategy for strategy, _ in by_strategy], fontsize=9)
    axes.set_xlim(-0.6, len(by_strategy) - 0.4 + 0.4)
    axes.set_ylim(bottom=0)
    axes.set_xlabel("strategy", fontsize=9)
    axes.set_ylabel("runs per second (runs / search wall time)", fontsize=9)
    axes.grid(axis="y", color="#dddddd", linewidth=0.6)
    figure.legend(
        handles=[
            Line2D([], [], marker="o", linestyle="", color="grey", label="one search"),
            Line2D([], [], color="black", linewidth=2.5, label="median of the strategy's searches"),
        ],
        fontsize=8.5,
        loc="outside lower center",
        ncols=2,
        frameon=False,
    )
    axes.set_title("Runs per second of each search, by strategy", fontsize=11)
    _save(figure, path)


def plot_success_rate(strategy_summaries: Sequence[dict[str, Any]], path: Path) -> None:
    """Per strategy (explorer.bench.report's summary): the bar is the success rate over all repeats,
    the error bar spans the lowest to the highest rate of one repeat."""
    figure = _figure(SMALL_PLOT_INCHES)
    axes = figure.subplots()
    for position, item in enumerate(strategy_summaries):
        rate = 100 * item["success_rate"]
        per_repeat = [100 * value for value in item["success_rate_per_repeat"]]
        axes.bar(position, rate, width=0.6, color=strategy_colour(item["strategy"]), zorder=2)
        axes.errorbar(
            position,
            rate,
            yerr=[[rate - min(per_repeat)], [max(per_repeat) - rate]],
            color="black",
            capsize=6,
            linewidth=1.2,
            zorder=3,
        )
        axes.annotate(
            f"{rate:.0f}% ({item['completed']}/{item['entries']})",
            (position, rate),
            xytext=(12, 3),
            textcoords="offset points",
            fontsize=8,
        )
    axes.set_xticks(range(len(strategy_summaries)), [item["strategy"] for item in strategy_summaries])
    axes.set_ylim(0, 105)
    axes.set_xlabel("strategy", fontsize=9)
    axes.set_ylabel("searches that completed the boot (%)", fontsize=9)
    axes.grid(axis="y", color="#dddddd", linewidth=0.6, zorder=0)
    figure.legend(
        handles=[
            Patch(color="grey", label="over all repeats"),
            Line2D([], [], color="black", marker="_", markersize=10, label="lowest to highest of one repeat"),
        ],
        fontsize=8.5,
        loc="outside lower center",
        ncols=2,
        frameon=False,
    )
    axes.set_title("Share of searches that completed the boot, by strategy", fontsize=11)
    _save(figure, path)


def _figure(height_inches: float) -> Figure:
    return Figure(figsize=(PLOT_WIDTH_PIXELS / PLOT_DPI, height_inches), dpi=PLOT_DPI, layout="constrained")


def _save(figure: Figure, path: Path) -> None:
    # No bbox_inches="tight": the file must keep the width it was drawn for.
    figure.savefig(path, dpi=PLOT_DPI, format="png")
