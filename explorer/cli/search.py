"""`explorer search | resume | status | show | replay | export`: the search from the command line.

Parsing, progress and printing only: the search is explorer.search.engine, the store
explorer.store, the report explorer.search.findings. A search holds its work directory's writer
lock for its whole life; status and show are readers and work while it runs.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from explorer.cli.options import QemuOption
from explorer.errors import BadInput
from explorer.execution.executor import Executor
from explorer.execution.jobs import Outcome, RunnerSetup
from explorer.firmware.ingest import ingest
from explorer.firmware.model import Firmware
from explorer.runner.build import PLUGIN, find_runner
from explorer.runner.command import Plugin
from explorer.runner.config import write_config
from explorer.runner.containment import RunnerLimits
from explorer.runner.kernel_hooks import STANDARD_OBSERVATION
from explorer.runner.launch import run
from explorer.search.engine import SNAPSHOT_COUNTERS, GenerationReport, SearchOptions
from explorer.search.findings import best_run, search_summary, state_report
from explorer.search.score import Score
from explorer.search.session import (
    EXECUTORS,
    ExecutorChoice,
    create_search,
    opened_executor,
    resumed_session,
    run_search,
    runner_setup,
)
from explorer.search.state import SHORT_ID, Target, bootable, parse_state
from explorer.search.strategy import STRATEGIES
from explorer.store import Store

# Value rules (and dropped children) `show` prints before it only counts the rest (--json has them all).
RULES_SHOWN = 12
# Lines of the guest console `explorer show` prints (--json has all of it).
CONSOLE_TAIL_LINES = 10
BudgetOption = Annotated[str, typer.Option(help="Wall-clock budget: 90s, 15m, 2h, 1h30m.")]
# Not stored with the search: `resume` runs on whatever its own command line names.
ExecutorOption = Annotated[
    str,
    typer.Option(
        help=f"Where runs run, one of: {', '.join(EXECUTORS)} (a pool of --workers processes here; "
        "tasks on the Ray cluster at --address)."
    ),
]
AddressOption = Annotated[
    str | None,
    typer.Option(envvar="RAY_ADDRESS", help="The Ray cluster's HOST:PORT, for --executor ray."),
]
# Each session's own, as the executor is (resume does not inherit it): results are the same either way.
SnapshotsOption = Annotated[
    bool,
    typer.Option(
        "--snapshots/--no-snapshots",
        help="Children continue from a saved boot of their parent where they can, instead of booting "
        "from reset (same results, on either executor).",
    ),
]
SnapshotLimitOption = Annotated[
    str,
    typer.Option(
        help="Disk the snapshots in WORK/snapshots/ may take: 4G, 512M (least recently used go first)."
    ),
]
# On: a search stores the same states, edges and byte-identical runs either way (the bitwise search,
# tests/integration/test_search_snapshots_invariant.py, 4.2-4.4x faster; the whole am335x search
# to user space, 27 of 36 runs continued, 1.13x), and one whose generations have a single child
# (vexpress) takes none and runs as before (BENCHMARKS.md, "Snapshots in the search").
SNAPSHOTS_BY_DEFAULT = True
DEFAULT_SNAPSHOT_LIMIT = "4G"
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}

EXAMPLE = """
Example:

\b
  explorer search "$(explorer corpus path armmp)" \\
      --dtb "$(explorer corpus path armmp --dtb vexpress-v2p-ca9)" \\
      --initrd "$(explorer corpus path armmp --initramfs)" --budget 15m --work work/armmp

Ctrl-C stops it cleanly (the generation in flight is dropped); `explorer resume work/armmp` continues.
"""


def register(app: typer.Typer) -> None:
    commands = (
        (search, "Search for a machine in which FIRMWARE boots as far as possible." + EXAMPLE),
        (resume, "Continue an interrupted or finished search in its work directory." + _example("resume")),
        (
            status,
            "How a search is doing: generations, runs, best milestone; works while it runs."
            + _example("status"),
        ),
        (
            show,
            "What a search found: the best state (or STATE), its machine, values, NOPs, log and why."
            + _example("show", "--json"),
        ),
        (
            replay,
            "Boot one state of a search again, with the guest console on this terminal."
            + _example("replay", "51c1c8f37265"),
        ),
        (
            export,
            "Write one state as a MachineConfig that `explorer boot FILE` boots anywhere."
            + _example("export", "51c1c8f37265 -o state.json"),
        ),
    )
    for command, help_text in commands:
        app.command(help=help_text)(command)


def _example(command: str, arguments: str = "") -> str:
    return f"\n\nExample:\n\n  explorer {command} work/armmp {arguments}".rstrip() + "\n"


def search(
    firmware: Annotated[
        Path, typer.Argument(help="Kernel image (zImage, uImage, Image, vmlinux) or flash dump.")
    ],
    qemu: QemuOption = None,
    dtb: Annotated[Path | None, typer.Option(help="Device tree blob to boot with.")] = None,
    board_id: Annotated[int | None, typer.Option(help="ARM machine type number for an ATAG boot.")] = None,
    initrd: Annotated[Path | None, typer.Option(help="Initial RAM disk (e.g. the marker initramfs).")] = None,
    cmdline: Annotated[str, typer.Option(help="Kernel command line.")] = "rdinit=/init",
    budget: BudgetOption = "15m",
    workers: Annotated[
        int, typer.Option(help="Runners at once, for --executor local [default: the number of cores].")
    ] = 0,
    work: Annotated[Path, typer.Option(help="Work directory (created; must not hold a search yet).")] = Path(
        "explorer-work"
    ),
    strategy: Annotated[str, typer.Option(help=f"One of: {', '.join(STRATEGIES)}.")] = "best-first",
    seed: Annotated[int, typer.Option(help="Seed of every random choice and value.")] = 0,
    instruction_budget: Annotated[
        int, typer.Option(help="Guest instructions per run [default: enough for a Linux boot].")
    ] = 0,
    executor: ExecutorOption = "local",
    address: AddressOption = None,
    snapshots: SnapshotsOption = SNAPSHOTS_BY_DEFAULT,
    snapshot_limit: SnapshotLimitOption = DEFAULT_SNAPSHOT_LIMIT,
) -> None:
    choice = ExecutorChoice(executor, address)
    if dtb is not None and board_id is not None:
        raise BadInput("give --dtb or --board-id, not both: a kernel boots with a device tree or with ATAGs")
    target = Target(
        kernel=firmware.resolve(),
        dtb=dtb.resolve() if dtb else None,
        initrd=initrd.resolve() if initrd else None,
        cmdline=cmdline,
        board_id=board_id,
    )
    for path in (target.dtb, target.initrd):
        if path is not None and not path.is_file():
            raise BadInput(f"{path} is not a file")
    options = SearchOptions(
        budget_seconds=parse_duration(budget),
        workers=workers or os.cpu_count() or 1,
        strategy=strategy,
        seed=seed,
        instruction_budget=instruction_budget,
        snapshots=snapshots,
        snapshot_limit_bytes=parse_size(snapshot_limit),
    )
    # The runner and the executor first: without them, no work directory is left behind.
    setup = runner_setup(find_runner(qemu))
    with opened_executor(choice, options.workers, setup) as runs:
        store, facts, target = create_search(work, target, options)
        for what, origin in store.metadata()["boot_files"].items():
            print(f"{what}: {origin}", file=sys.stderr)
        with store:
            _search(store, facts, target, options, setup, runs, work)


def resume(
    work: Annotated[Path, typer.Argument(help="Work directory of a search.")],
    qemu: QemuOption = None,
    budget: Annotated[
        str | None, typer.Option(help="Budget for this session [default: what is left of the search's].")
    ] = None,
    workers: Annotated[
        int, typer.Option(help="Runners at once, for --executor local [default: as the search was started].")
    ] = 0,
    executor: ExecutorOption = "local",
    address: AddressOption = None,
    snapshots: SnapshotsOption = SNAPSHOTS_BY_DEFAULT,
    snapshot_limit: SnapshotLimitOption = DEFAULT_SNAPSHOT_LIMIT,
) -> None:
    choice = ExecutorChoice(executor, address)
    limit_bytes = parse_size(snapshot_limit)
    with Store.open(work, writer=True) as store:
        facts, target, session = resumed_session(
            store, parse_duration(budget) if budget else None, workers, snapshots, limit_bytes
        )
        setup = runner_setup(find_runner(qemu))
        with opened_executor(choice, session.workers, setup) as runs:
            _search(store, facts, target, session, setup, runs, work)


def status(work: Annotated[Path, typer.Argument(help="Work directory of a search.")]) -> None:
    with Store.open(work, writer=False) as store:
        summary = search_summary(store)
        shared = _snapshot_counters(store)
    milestone = summary["furthest_milestone"] or "none yet"
    print(
        f"{work}: {summary['generations']} generations, {summary['runs']} runs, "
        f"frontier {summary['frontier']}, {summary['wall_seconds']:.0f} s; furthest: {milestone}"
    )
    if shared:
        print(
            f"snapshots: {shared.get('snapshots_taken', 0):.0f} taken in "
            f"{shared.get('snapshot_seconds', 0.0):.0f} s, "
            f"{shared.get('runs_from_snapshots', 0):.0f} runs continued from one"
        )
    print(f"stopped: {summary['stop']}")


def show(
    work: Annotated[Path, typer.Argument(help="Work directory of a search.")],
    state: Annotated[str | None, typer.Argument(help="State id or prefix [default: the best].")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    with Store.open(work, writer=False) as store:
        metadata = store.metadata()
        target = Target.from_dict(metadata["target"])
        summary = {**search_summary(store), **_snapshot_counters(store)}
        summary["boot_files"] = metadata.get("boot_files", {})
        chosen = store.resolve(state) if state else summary["best_state"]
        if chosen is None:
            raise BadInput(f"{work} has no run yet: let the search run a generation first")
        report = state_report(store, chosen, ingest(target.kernel, dtb=target.dtb))
    if as_json:
        print(json.dumps({**summary, "best" if state is None else "state": report}, indent=1))
        return
    _print_report(work, summary, report)


def replay(
    work: Annotated[Path, typer.Argument(help="Work directory of a search.")],
    state: Annotated[str, typer.Argument(help="State id or prefix.")],
    qemu: QemuOption = None,
    deadline: Annotated[float, typer.Option(help="Wall-clock seconds before the run is killed.")] = 600.0,
) -> None:
    qemu_dir = find_runner(qemu)
    config, _ = stored_config(work, state)
    plugin = Plugin(qemu_dir / PLUGIN, STANDARD_OBSERVATION)
    finished = run(
        config, qemu_dir, plugin=plugin, limits=RunnerLimits(deadline_seconds=deadline), console=True
    )
    reason = finished.result.exit.detail or "the run ended"
    print(f"\nexplorer: replay ended: {reason} ({finished.wall_seconds:.1f} s)")


def export(
    work: Annotated[Path, typer.Argument(help="Work directory of a search.")],
    state: Annotated[str, typer.Argument(help="State id or prefix (`explorer show DIR` names the best).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="MachineConfig JSON file to write.")],
) -> None:
    config, identity = stored_config(work, state)
    write_config(config, output)
    print(f"wrote state {identity[:SHORT_ID]} to {output}: boot it with `explorer boot {output}`")


def parse_duration(text: str) -> float:
    """Seconds in "90", "90s", "15m", "2h", "1h30m"; BadInput otherwise."""
    match = re.fullmatch(
        r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text
    )
    if not text.strip() or match is None or not any(match.groups()):
        raise BadInput(f"budget {text!r} is not a duration: write it like 90s, 15m, 2h or 1h30m")
    hours, minutes, seconds = (float(group) if group else 0.0 for group in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def parse_size(text: str) -> int:
    """Bytes in "4G", "512M", "1.5g", "4096" (binary units K, M, G, T, then B or iB if you like)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:([kmgt])(?:i?b)?|b)?\s*", text, re.IGNORECASE)
    size = int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()]) if match else 0
    if size <= 0:
        raise BadInput(
            f"--snapshot-limit {text!r} is not a size above zero: write it like 4G or 512M "
            "(--no-snapshots keeps none)"
        )
    return size


def _snapshot_counters(store: Store) -> dict[str, float]:
    """What snapshots did for the search (explorer.search.engine.SNAPSHOT_COUNTERS), if it used any."""
    counters = store.counters()
    return {name: counters[name] for name in SNAPSHOT_COUNTERS if name in counters}


def stored_config(work: Path, prefix: str | None) -> tuple[Any, str]:
    """The config a runner boots for state `prefix` of the search in `work` (None: its best), and its id."""
    with Store.open(work, writer=False) as store:
        target = Target.from_dict(store.metadata()["target"])
        best = best_run(store) if prefix is None else None
        if prefix is None and best is None:
            raise BadInput(f"{work} has no run yet: let the search run a generation first")
        identity = store.resolve(prefix) if best is None else best.state_id
        data = store.state(identity)
    assert data is not None  # resolve returns only stored states
    return bootable(parse_state(data), target, ingest(target.kernel, dtb=target.dtb)), identity


def _search(
    store: Store,
    facts: Firmware,
    target: Target,
    options: SearchOptions,
    setup: RunnerSetup,
    runs: Executor,
    work: Path,
) -> None:
    console = Console(stderr=True)
    progress = _Progress(options, console)
    ended = "interrupted"
    try:
        if console.is_terminal:
            with Live(progress.render(), console=console, refresh_per_second=4) as live:
                progress.live = live
                ended = run_search(store, facts, target, options, setup, progress, runs)
        else:
            ended = run_search(store, facts, target, options, setup, progress, runs)
    finally:
        summary = search_summary(store)
        milestone = summary["furthest_milestone"] or "none"
        console.print(
            f"search {ended}: {summary['generations']} generations, {summary['runs']} runs, "
            f"{summary['wall_seconds']:.0f} s; furthest: {milestone}; "
            f"master overhead {summary['master_overhead']:.1%}"
        )
        if ended == "interrupted":
            console.print(f"continue with: explorer resume {work}")
        else:
            console.print(f"stopped: {summary['stop']}", highlight=False)
            console.print(f"report: explorer show {work}")


class _Progress:
    """The live view: generation, best milestone, frontier size, runs per second.

    Not on a terminal (a log, CI), one line per generation instead.
    """

    def __init__(self, options: SearchOptions, console: Console) -> None:
        self.live: Live | None = None
        self._options = options
        self._console = console
        self._started = time.monotonic()
        self._generation = 0
        self._children = 0
        self._finished = 0
        self._runs = 0
        self._frontier = 0
        self._best: Score | None = None
        self._expanded: str | None = None

    def generation_started(self, number: int, expanded: str | None, children: int) -> None:
        self._generation, self._expanded, self._children, self._finished = number, expanded, children, 0
        self._refresh()

    def run_finished(self, outcome: Outcome, run_score: Score) -> None:
        self._finished += 1
        self._runs += 1
        if self._best is None or run_score > self._best:
            self._best = run_score
        self._refresh()

    def generation_committed(self, report: GenerationReport) -> None:
        self._best, self._frontier = report.best, report.frontier
        self._refresh()
        if self.live is None:
            stalled = ", stalled" if report.stalled else ""
            dropped = f", {report.dropped} dropped" if report.dropped else ""
            self._console.print(
                f"generation {report.number}: {report.children} runs{stalled}{dropped}; "
                f"best {report.best.describe()}; frontier {report.frontier}; {report.wall_seconds:.0f} s",
                highlight=False,
            )

    def render(self) -> Table:
        elapsed = time.monotonic() - self._started
        table = Table.grid(padding=(0, 2))
        table.add_row("generation", f"{self._generation}  ({self._finished}/{self._children} runs)")
        table.add_row("best", self._best.describe() if self._best else "-")
        table.add_row("frontier", str(self._frontier))
        table.add_row("runs/s", f"{self._runs / elapsed:.2f}" if elapsed > 0 else "-")
        table.add_row("elapsed", f"{elapsed:.0f} s of {self._options.budget_seconds:.0f} s")
        if self._expanded:
            table.add_row("expanding", self._expanded[:SHORT_ID])
        return table

    def _refresh(self) -> None:
        if self.live is not None:
            self.live.update(self.render())


def _print_dropped(console: Console, dropped: list[dict[str, Any]]) -> None:
    """The children the search dropped unbooted: who proposed each, and why no runner would boot it."""
    if not dropped:
        return
    console.print(f"[bold]dropped unbooted[/] ({len(dropped)}):")
    for child in dropped[:RULES_SHOWN]:
        console.print(
            f"  gen {child['generation']} {child['operator']} from {child['parent']}: {child['reason']}  "
            f"-> dropped: {child['dropped']}",
            markup=False,
            highlight=False,
        )
    if len(dropped) > RULES_SHOWN:
        console.print(f"  ... {len(dropped) - RULES_SHOWN} more (--json lists them)")


def _print_report(work: Path, summary: dict[str, Any], report: dict[str, Any]) -> None:
    console = Console()
    milestone = summary["furthest_milestone"] or "none"
    console.print(
        f"[bold]{work}[/]: {summary['generations']} generations, {summary['runs']} runs, "
        f"{summary['wall_seconds']:.0f} s; furthest: {milestone}"
    )
    console.print(f"[bold]stopped[/]: {summary['stop']}", highlight=False)
    for what, origin in summary["boot_files"].items():
        console.print(f"{what}: {origin}", highlight=False)
    console.print(f"state {report['state'][:SHORT_ID]}: {report['score']}")
    machine = report["machine"]
    console.print(
        f"[bold]machine[/]: cpu {machine['cpu']}, ram "
        + ", ".join(f"{region['base']}+{region['size']}" for region in machine["ram"])
        + (f", PSCI calls by {machine['psci_conduit']} answered by QEMU" if machine["psci_conduit"] else "")
        + (", entered in the secure world" if machine.get("secure_entry") else "")
    )
    for device in [machine["interrupt_controller"], *machine["devices"]]:
        if device:
            console.print(f"  {device['type']} at {', '.join(device['mmio'])} irqs {device['irqs']}")
    if machine["tick"]:
        tick = machine["tick"]
        console.print(f"  tick every {tick['period_ns']} ns, acknowledged in {tick['ack']}")
    if machine["kernel_arguments"]:
        console.print(f"  kernel arguments added: {machine['kernel_arguments']}")
    rules = machine["mmio_rules"]
    for rule in rules[:RULES_SHOWN]:
        value = {key: item for key, item in rule.items() if key not in ("address", "kind")}
        console.print(f"  reads of {rule['address']}: {rule['kind']} {value or ''}".rstrip(), highlight=False)
    if len(rules) > RULES_SHOWN:
        console.print(f"  ... {len(rules) - RULES_SHOWN} more pinned addresses (--json lists them)")
    for nop in machine["nops"]:
        console.print(f"  NOP {nop['function']} returns {nop['returns']}")
    console.print("[bold]how it was found[/]:")
    for step in report["path"]:
        console.print(f"  gen {step['generation']} {step['operator']}: {step['reason']}  -> {step['score']}")
    console.print("[bold]its run[/]:")
    for line in report["run_summary"]:
        console.print("  " + line, markup=False, highlight=False)
    if report["console"]:
        console.print("[bold]its console[/] (the last lines):")
        for line in report["console"].splitlines()[-CONSOLE_TAIL_LINES:]:
            console.print("  " + line, markup=False, highlight=False)
    _print_dropped(console, summary["dropped"])
    console.print(f"replay: explorer replay {work} {report['state'][:SHORT_ID]}")
    console.print(f"export: explorer export {work} {report['state'][:SHORT_ID]} -o state.json")
