"""The bench: every (firmware, strategy, repeat) of a set searched from scratch, results kept as they come.

Layout under the output directory:

    <out>/<set>/results.jsonl                             one JSON object per finished entry
    <out>/<set>/<firmware>/<strategy>/<repeat>/           that entry's search (its store)
    <out>/<set>/stock.jsonl                               one JSON object per firmware booted on
                                                          its stock QEMU board (explorer.bench.stock)

An entry is a whole search (explorer.search.session, the same code `explorer search` runs) with
seed = repeat, one at a time, each with the bench's workers. Invariants:
- an entry is finished exactly when its line is in results.jsonl; a rerun skips it and never
  touches its work directory again (its snapshots, which only a resume could use, are removed
  just before its line is written);
- an entry with a store but no line was interrupted: a rerun resumes its search with what is left
  of its budget (a search whose budget was spent ends at once, and only its line is written);
- results.jsonl only grows, one complete line per entry, written and synced before the next entry
  starts; a line torn by a kill is dropped before the next append.
The ground truth comes after every entry (so an interrupted bench resumes its entries first, as
it always did): each firmware with a stock QEMU model is booted there once, and its row goes to
stock.jsonl under the same rules (a firmware with a row is never booted again).
The bench never scores runs itself: its numbers come from the search's store
(explorer.search.findings), and why a search stopped from its furthest run (explorer.bench.causes).
A search that raises a user-facing error (BadInput: a config the machine refuses, a kernel
ingestion rejects) is that entry's result, a row saying so, and the bench goes on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from explorer import corpus
from explorer.bench.causes import search_error, stop_cause
from explorer.bench.sets import BenchFirmware, BenchSet
from explorer.bench.stock import StockBooter, corpus_for, model_of
from explorer.errors import BadInput, StoreError
from explorer.execution.executor import Executor
from explorer.execution.jobs import RunnerSetup
from explorer.firmware.model import Firmware
from explorer.runner.result import deserialize
from explorer.search.boot_sharing import DEFAULT_SNAPSHOT_LIMIT_BYTES, remove_snapshots
from explorer.search.engine import Observer, SearchOptions
from explorer.search.findings import machine_summary, search_summary
from explorer.search.session import create_search, resumed_session, run_search
from explorer.search.state import parse_state
from explorer.search.strategy import strategy_named
from explorer.store import Store

RESULTS_FILE = "results.jsonl"
STOCK_FILE = "stock.jsonl"
STORE_FILE = "data.mdb"
# The `ended` of an entry whose search raised a user-facing error (error_row).
ERROR = "error"


@dataclass(frozen=True)
class BenchPlan:
    """What to run on every firmware of a set."""

    strategies: tuple[str, ...]
    repeats: int
    budget_seconds: float
    workers: int
    # Whether children continue from snapshots, and the disk each search's may take (as in
    # `explorer search`); a finished entry's are removed, since it is never resumed.
    snapshots: bool = False
    snapshot_limit_bytes: int = DEFAULT_SNAPSHOT_LIMIT_BYTES

    def __post_init__(self) -> None:
        for strategy in self.strategies:
            strategy_named(strategy)


@dataclass(frozen=True)
class Entry:
    firmware: BenchFirmware
    strategy: str
    repeat: int

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.firmware.name, self.strategy, self.repeat)


class BenchProgress(Observer, Protocol):
    """A search observer that also hears where the bench is."""

    def entry_started(self, entry: Entry, position: int, total: int, resumed: bool) -> None: ...

    def entry_finished(self, row: dict[str, Any]) -> None: ...

    def stock_started(self, firmware: BenchFirmware, machine: str) -> None: ...

    def stock_finished(self, row: dict[str, Any]) -> None: ...


def entries(bench_set: BenchSet, plan: BenchPlan) -> list[Entry]:
    """Every entry of the bench, in the order it runs: repeat, then firmware, then strategy.

    Repeats outermost: a bench stopped early has whole rounds, every firmware and strategy once,
    rather than every repeat of the first firmware only.
    """
    return [
        Entry(firmware, strategy, repeat)
        for repeat in range(plan.repeats)
        for firmware in bench_set.firmware
        for strategy in plan.strategies
    ]


def set_directory(out: Path, bench_set: BenchSet) -> Path:
    return out / bench_set.name


def entry_directory(out: Path, bench_set: BenchSet, entry: Entry) -> Path:
    return set_directory(out, bench_set) / entry.firmware.name / entry.strategy / str(entry.repeat)


def read_results(results: Path) -> list[dict[str, Any]]:
    """The rows of a results file (results.jsonl, stock.jsonl), in the order they were appended.

    A torn last line is not one.
    """
    if not results.is_file():
        return []
    return [json.loads(line) for line in _complete_lines(results.read_bytes())]


def run_bench(
    bench_set: BenchSet,
    plan: BenchPlan,
    out: Path,
    setup: RunnerSetup,
    progress: BenchProgress | None = None,
    executor: Executor | None = None,
) -> list[dict[str, Any]]:
    """Run what is missing of the bench, then of its ground truth; every finished entry's row.

    The searches run on `executor` (opened and closed by the caller; None: a local pool of
    the plan's workers for each search); the stock boots run here, one at a time.
    """
    rows = _run_entries(bench_set, plan, out, setup, progress, executor)
    run_ground_truth(bench_set, set_directory(out, bench_set) / STOCK_FILE, setup, progress)
    return rows


def _run_entries(
    bench_set: BenchSet,
    plan: BenchPlan,
    out: Path,
    setup: RunnerSetup,
    progress: BenchProgress | None,
    executor: Executor | None,
) -> list[dict[str, Any]]:
    results = set_directory(out, bench_set) / RESULTS_FILE
    rows = read_results(results)
    finished = {(row["firmware"], row["strategy"], row["repeat"]) for row in rows}
    planned = entries(bench_set, plan)
    for position, entry in enumerate(planned):
        if entry.key in finished:
            continue
        work = entry_directory(out, bench_set, entry)
        try:
            row = _run_entry(entry, work, plan, setup, progress, executor, position, len(planned))
        except BadInput as error:
            # One firmware the search cannot go on with is that firmware's result, not the bench's end.
            remove_snapshots(work)
            row = error_row(entry, plan, str(error))
        append_result(results, row)
        rows.append(row)
        if progress is not None:
            progress.entry_finished(row)
    return rows


def run_ground_truth(
    bench_set: BenchSet,
    stock: Path,
    setup: RunnerSetup,
    progress: BenchProgress | None = None,
    corpus_loader: Callable[[], corpus.Corpus] = corpus.load,
) -> list[dict[str, Any]]:
    """Boot each firmware with a stock QEMU model and no row in `stock` yet; every row of `stock`.

    `corpus_loader` is called only when a firmware's kernel lies in the corpus (only corpus
    kernels have stock models).
    """
    rows = read_results(stock)
    booted = {row["firmware"] for row in rows}
    waiting = [firmware for firmware in bench_set.firmware if firmware.name not in booted]
    kernels = corpus_for(tuple(waiting), corpus_loader)
    booter = StockBooter(setup)
    for firmware in waiting:
        model = model_of(firmware, kernels)
        if model is None:
            continue
        if progress is not None:
            progress.stock_started(firmware, model.machine)
        row = booter.boot(firmware, model)
        append_result(stock, row)
        rows.append(row)
        if progress is not None:
            progress.stock_finished(row)
    return rows


def _run_entry(
    entry: Entry,
    work: Path,
    plan: BenchPlan,
    setup: RunnerSetup,
    progress: BenchProgress | None,
    executor: Executor | None,
    position: int,
    total: int,
) -> dict[str, Any]:
    store = _existing_store(work)
    resumed = store is not None
    if store is None:
        options = SearchOptions(
            budget_seconds=plan.budget_seconds,
            workers=plan.workers,
            strategy=entry.strategy,
            seed=entry.repeat,
            instruction_budget=entry.firmware.instruction_budget,
        )
        store, _, _ = create_search(work, entry.firmware.target, options)
    with store:
        # A fresh store's remaining budget is the whole budget: one path for both cases.
        facts, target, options = resumed_session(
            store, None, plan.workers, plan.snapshots, plan.snapshot_limit_bytes
        )
        if progress is not None:
            progress.entry_started(entry, position, total, resumed)
        ended = run_search(store, facts, target, options, setup, progress, executor)
        row = result_row(entry, store, ended, facts)
    remove_snapshots(work)
    return row


def _existing_store(work: Path) -> Store | None:
    """The interrupted search's store in `work`, open for writing; None if there is none yet."""
    if not (work / STORE_FILE).exists():
        return None
    try:
        return Store.open(work, writer=True)
    except StoreError:
        # A create killed half-way leaves an LMDB environment with no store in it, which the
        # create that follows takes over; anything else, create refuses with its own message.
        return None


def result_row(entry: Entry, store: Store, ended: str, firmware: Firmware) -> dict[str, Any]:
    """The numbers of one finished entry, from its store, and why it stopped (`why`: its furthest
    run's explorer.bench.causes.StopCause, named with `firmware`'s symbols).

    wall_seconds_to_userspace: the search's wall time when its boot completed (the console
    milestone, or user space where no console can be seen; for firmware without one, such as
    the tests' bare-metal programs, the clean power-off after init:
    explorer.search.score.boot_completed), None if it did not. A search stops right after the
    generation that completes the boot is committed, so this is the store's wall-time counter then.
    """
    summary = search_summary(store)
    completed = ended == "boot completed"
    machine: dict[str, Any] = {"devices": [], "interrupt_controller": None, "mmio_rules": [], "nops": []}
    furthest = None
    if summary["best_state"] is not None:
        data, run = store.state(summary["best_state"]), store.run(summary["best_state"])
        assert data is not None and run is not None  # the best state is a stored run's state
        machine = machine_summary(parse_state(data))
        furthest = deserialize(run.result)
    return {
        "firmware": entry.firmware.name,
        "strategy": entry.strategy,
        "repeat": entry.repeat,
        "ended": ended,
        "budget_seconds": store.metadata()["options"]["budget_seconds"],
        "boot_completed": completed,
        "furthest_milestone": summary["furthest_milestone"],
        "reached_userspace": summary["reached_userspace"],
        "reached_console": summary["reached_console"],
        "wall_seconds": summary["wall_seconds"],
        "wall_seconds_to_userspace": summary["wall_seconds"] if completed else None,
        "runs": summary["runs"],
        "generations": summary["generations"],
        "devices": len(machine["devices"]) + (machine["interrupt_controller"] is not None),
        "values_pinned": len(machine["mmio_rules"]),
        "nops": len(machine["nops"]),
        "master_overhead": summary["master_overhead"],
        "why": stop_cause(ended, furthest, firmware.symbols).to_dict(),
    }


def error_row(entry: Entry, plan: BenchPlan, message: str) -> dict[str, Any]:
    """The row of an entry whose search raised `message` instead of stopping: nothing reached."""
    return {
        "firmware": entry.firmware.name,
        "strategy": entry.strategy,
        "repeat": entry.repeat,
        "ended": ERROR,
        "budget_seconds": plan.budget_seconds,
        "boot_completed": False,
        "furthest_milestone": None,
        "reached_userspace": False,
        "reached_console": False,
        "wall_seconds": 0.0,
        "wall_seconds_to_userspace": None,
        **dict.fromkeys(("runs", "generations", "devices", "values_pinned", "nops"), 0),
        "master_overhead": 0.0,
        "why": search_error(message).to_dict(),
    }


def append_result(results: Path, row: dict[str, Any]) -> None:
    """Add one row (an entry's, a stock boot's) to a results file, synced; first drop a line a kill tore."""
    results.parent.mkdir(parents=True, exist_ok=True)
    with open(results, "ab+") as file:
        file.seek(0)
        kept = sum(len(line) + 1 for line in _complete_lines(file.read()))
        file.truncate(kept)
        file.seek(kept)
        file.write(json.dumps(row, sort_keys=True).encode() + b"\n")
        file.flush()
        os.fsync(file.fileno())


def _complete_lines(data: bytes) -> Iterator[bytes]:
    """The newline-terminated lines of `data` (what follows the last newline was torn by a kill)."""
    yield from data.split(b"\n")[:-1]
