"""`explorer bench SET`: every strategy on every firmware of a set, with a report.

Parsing, progress and printing only: the set is explorer.bench.sets, the runs
explorer.bench.campaign, the tables and plots explorer.bench.report. Killed or interrupted, the same
command continues where it stopped (finished entries are kept, an interrupted search is resumed);
--report-only rebuilds the report of the finished entries and runs nothing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from explorer.bench.campaign import RESULTS_FILE, BenchPlan, Entry, read_results, run_bench, set_directory
from explorer.bench.report import REPORT_FILE, write_report
from explorer.bench.sets import SETS_DIRECTORY, BenchFirmware, load_set, sliced
from explorer.cli.options import QemuOption
from explorer.cli.search import (
    DEFAULT_SNAPSHOT_LIMIT,
    SNAPSHOTS_BY_DEFAULT,
    AddressOption,
    ExecutorOption,
    SnapshotLimitOption,
    SnapshotsOption,
    parse_duration,
    parse_size,
)
from explorer.errors import BadInput
from explorer.execution.jobs import Outcome
from explorer.runner.build import find_runner
from explorer.search.engine import GenerationReport
from explorer.search.score import Score
from explorer.search.session import ExecutorChoice, opened_executor, runner_setup
from explorer.search.strategy import STRATEGIES

HELP = f"""Search every firmware of SET with each --strategy, --repeat times, and report.

SET is a set's name in {SETS_DIRECTORY} (dev, large, wide) or a set file; --only NAME
(repeatable) runs only those of its firmware, a slice of it. Results go to
OUT/SET/results.jsonl as each search ends; at the end, results.csv, results.json, report.md and
its PNG plots are written beside it. Each search's work directory is OUT/SET/FIRMWARE/STRATEGY/REPEAT
(`explorer show` reads it). Run the same command again after a kill or Ctrl-C: only what is missing
runs. --report-only rebuilds the report from the searches finished so far, without QEMU. With
--executor ray, every search's runs go to the Ray cluster at --address; the stock boots run here.
Children continue from snapshots as in `explorer search` (--no-snapshots: never); a finished
search's are removed.

Example:

\b
  explorer bench dev --strategy best-first --strategy breadth-first --strategy random \\
      --budget 10m --repeat 3 --out bench
  explorer bench dev --out bench --report-only
  explorer bench wide --budget 3m --only armmp-omap5-uevm --only marvell-kirkwood-b3 --out bench
"""


def register(app: typer.Typer) -> None:
    app.command(help=HELP)(bench)


def bench(
    set_name: Annotated[str, typer.Argument(metavar="SET", help="Set name or set file.")],
    qemu: QemuOption = None,
    strategy: Annotated[
        list[str] | None,
        typer.Option(help=f"Repeatable; one of: {', '.join(STRATEGIES)} [default: best-first]."),
    ] = None,
    budget: Annotated[str, typer.Option(help="Wall-clock budget of each search: 90s, 15m, 2h.")] = "10m",
    repeat: Annotated[int, typer.Option(help="Searches per firmware and strategy (seeds 0..N-1).")] = 1,
    only: Annotated[
        list[str] | None,
        typer.Option(
            help="Repeatable: search only this firmware of the set (a slice; results join the set's)."
        ),
    ] = None,
    workers: Annotated[int, typer.Option(help="Runners at once [default: the number of cores].")] = 0,
    out: Annotated[Path, typer.Option(help="Output directory (created; reused to continue).")] = Path(
        "bench"
    ),
    report_only: Annotated[
        bool,
        typer.Option(
            "--report-only", help="Only rebuild OUT/SET's report from its finished searches; run nothing."
        ),
    ] = False,
    executor: ExecutorOption = "local",
    address: AddressOption = None,
    snapshots: SnapshotsOption = SNAPSHOTS_BY_DEFAULT,
    snapshot_limit: SnapshotLimitOption = DEFAULT_SNAPSHOT_LIMIT,
) -> None:
    bench_set = load_set(set_name)
    if only:
        bench_set = sliced(bench_set, only)
    directory = set_directory(out, bench_set)
    if report_only:
        _rebuild_report(directory)
        return
    if repeat < 1:
        raise BadInput(f"--repeat {repeat}: give at least 1")
    strategies = tuple(dict.fromkeys(strategy or ["best-first"]))
    plan = BenchPlan(
        strategies,
        repeat,
        parse_duration(budget),
        workers or os.cpu_count() or 1,
        snapshots,
        parse_size(snapshot_limit),
    )
    choice = ExecutorChoice(executor, address)
    setup = runner_setup(find_runner(qemu))
    console = Console(stderr=True)
    progress = _Progress(console)
    try:
        with opened_executor(choice, plan.workers, setup) as runs:
            if console.is_terminal:
                with Live(progress.render(), console=console, refresh_per_second=4) as live:
                    progress.live = live
                    rows = run_bench(bench_set, plan, out, setup, progress, runs)
            else:
                rows = run_bench(bench_set, plan, out, setup, progress, runs)
    except KeyboardInterrupt:
        console.print(f"bench interrupted: run the same command again to continue ({out / bench_set.name})")
        raise
    write_report(rows, directory)
    completed = sum(row["boot_completed"] for row in rows)
    console.print(
        f"bench {bench_set.name}: {len(rows)} searches, {completed} completed the boot; "
        f"report: {directory / REPORT_FILE} (results: {directory / RESULTS_FILE})",
        soft_wrap=True,
        highlight=False,
    )


def _rebuild_report(directory: Path) -> None:
    rows = read_results(directory / RESULTS_FILE)
    if not rows:
        raise BadInput(f"no finished search in {directory}: run the bench first (without --report-only)")
    written = write_report(rows, directory)
    Console(stderr=True).print(
        f"report of {len(rows)} finished searches: {directory / REPORT_FILE} "
        f"({', '.join(path.name for path in written)})",
        soft_wrap=True,
        highlight=False,
    )


class _Progress:
    """The live view: which search of how many, its generation and best so far, runs per second.

    Not on a terminal, one line per finished search instead.
    """

    def __init__(self, console: Console) -> None:
        self.live: Live | None = None
        self._console = console
        self._entry = "-"
        self._started = time.monotonic()
        self._runs = 0
        self._generation = 0
        self._best: Score | None = None

    def entry_started(self, entry: Entry, position: int, total: int, resumed: bool) -> None:
        how = "resumed" if resumed else "started"
        self._entry = f"{position + 1}/{total} {entry.firmware.name} {entry.strategy} #{entry.repeat} ({how})"
        self._best, self._generation = None, 0
        self._refresh()

    def entry_finished(self, row: dict[str, Any]) -> None:
        if self.live is None:
            milestone = "completed" if row["boot_completed"] else row["furthest_milestone"] or "none"
            why = "" if row["boot_completed"] else f": {row['why']['cause']}"
            self._console.print(
                f"{row['firmware']} {row['strategy']} #{row['repeat']}: {milestone}, {row['runs']} runs, "
                f"{row['wall_seconds']:.0f} s ({row['ended']}){why}",
                soft_wrap=True,
                highlight=False,
            )

    def stock_started(self, firmware: BenchFirmware, machine: str) -> None:
        self._entry = f"{firmware.name} on stock QEMU -M {machine} (ground truth)"
        self._best, self._generation = None, 0
        self._refresh()

    def stock_finished(self, row: dict[str, Any]) -> None:
        if self.live is None:
            self._console.print(
                f"{row['firmware']} on stock -M {row['machine']}: {row['furthest_milestone'] or 'none'}, "
                f"{row['wall_seconds']:.0f} s ({row['ended']})",
                soft_wrap=True,
                highlight=False,
            )

    def generation_started(self, number: int, expanded: str | None, children: int) -> None:
        self._generation = number
        self._refresh()

    def run_finished(self, outcome: Outcome, run_score: Score) -> None:
        self._runs += 1
        if self._best is None or run_score > self._best:
            self._best = run_score
        self._refresh()

    def generation_committed(self, report: GenerationReport) -> None:
        self._best = report.best
        self._refresh()

    def render(self) -> Table:
        elapsed = time.monotonic() - self._started
        table = Table.grid(padding=(0, 2))
        table.add_row("search", self._entry)
        table.add_row("generation", str(self._generation))
        table.add_row("best", self._best.describe() if self._best else "-")
        table.add_row("runs/s", f"{self._runs / elapsed:.2f}" if elapsed > 0 else "-")
        table.add_row("elapsed", f"{elapsed:.0f} s")
        return table

    def _refresh(self) -> None:
        if self.live is not None:
            self.live.update(self.render())
