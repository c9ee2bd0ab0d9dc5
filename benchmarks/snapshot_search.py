"""Snapshots in the search, side by side: the same searches with and without snapshots, alternating.

Each search runs once without and once with snapshots in every round, alternating which goes first
(the machine is shared), one runner at a time (per-run times stay comparable):

- vexpress: exactly the search `explorer search` runs (explorer.search.session) of Debian's armmp
  kernel with the vexpress-v2p-ca9 device tree and the marker initramfs, to user space;
- am335x bitwise: armmp with the am335x-boneblack device tree on only a CPU and RAM, whose boot
  spins at about 2.08e9 instructions polling the interrupt controller's SYSSTATUS; the search is
  the initial state and then the bitwise generation on that register (`--children` of its
  children), which all diverge from the parent just before the poll;
- am335x: the `explorer search` of armmp with the am335x-boneblack device tree and the initramfs,
  to user space (several operators, generations of one to a few dozen children);
- cubieboard2: the same with the sun7i-a20-cubieboard2 device tree (a GIC-400, RTC registers
  pinned until they agree: more generations).

Reported per search: the end-to-end wall time of each, runs, the snapshot counters (prefix boots,
snapshots taken, runs continued from one), when runs continued from a snapshot the median
child-run wall time with and without snapshots, and whether both stores hold the same states, edges and
byte-identical runs (if not, which RunResult fields differ). Issue 6's targets: a child from a
snapshot at most 30 % of its full boot, the whole search at least 2x faster, identical results.

    .venv/bin/python benchmarks/snapshot_search.py [--rounds 2] [--children 34] [--search NAME]...
        [--qemu DIR]

With --why WORK..., nothing runs: over stored searches, each booted child is counted as one that
may continue from a save of its parent's boot (explorer.search.boot_sharing.divergence_point), one
that may only from a save of an older ancestor's (inherited_point's bound), or one that must boot
from reset, and why (sharing_obstacle: what differs in what boots; or the change is read too early);
for a NOP, whether the function NOP'd is an initcall the parent entered (its first entry counted)
or one whose first entry no run records. Whether the save was really taken (one per point, at most
MAX_SNAPSHOTS_PER_GENERATION a generation, the cache's limit) is the search's: its counters say.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from explorer import corpus
from explorer.execution.local import LocalPool
from explorer.firmware.ingest import ingest
from explorer.runner.build import find_runner
from explorer.runner.result import deserialize
from explorer.search.boot_sharing import divergence_point, sharing_obstacle, snapshot_cache
from explorer.search.engine import LINEAGE_DEPTH, SNAPSHOT_COUNTERS, Search, SearchOptions, evaluated_state
from explorer.search.operators import Child, Context, bitwise
from explorer.search.proposal import OperatorPhases
from explorer.search.session import create_search, run_search, runner_setup
from explorer.search.state import State, Target
from explorer.store import Store

# The budget the parked bitwise search was measured with: past the poll, short of the next stop.
AM335X_INSTRUCTION_BUDGET = 2_250_000_000
BUDGET_SECONDS = 1800.0
SEARCHES = ("vexpress", "am335x bitwise", "am335x", "cubieboard2")


def cli_search(board: str) -> Callable[[Path, Path, bool], None]:
    def search(work: Path, qemu: Path, snapshots: bool) -> None:
        """The CLI's search of armmp with `board`'s device tree and the marker initramfs, to user space."""
        catalogue = corpus.load()
        target = Target(
            kernel=catalogue.kernel("armmp"),
            dtb=catalogue.dtb("armmp", board),
            initrd=catalogue.initramfs("armhf"),
            cmdline="rdinit=/init",
        )
        options = SearchOptions(budget_seconds=BUDGET_SECONDS, workers=1, snapshots=snapshots)
        store, facts = create_search(work, target, options)
        with store:
            ended = run_search(store, facts, target, options, runner_setup(qemu))
        if ended != "boot completed":
            raise SystemExit(f"the {board} search ended with {ended!r}, not in user space")

    return search


def am335x_bitwise_search(children: int) -> Callable[[Path, Path, bool], None]:
    def search(work: Path, qemu: Path, snapshots: bool) -> None:
        """The initial state of armmp on an am335x with only CPU and RAM, then its bitwise children."""
        catalogue = corpus.load()
        target = Target(
            kernel=catalogue.kernel("armmp"),
            dtb=catalogue.dtb("armmp", "am335x-boneblack"),
            cmdline="console=ttyO0",
        )
        firmware = ingest(target.kernel, dtb=target.dtb)
        initial = State(target="arm", cpu="cortex-a8", instruction_budget=AM335X_INSTRUCTION_BUDGET)
        initial.ram.add(base=0x80000000, size=0x20000000)

        def bitwise_of_the_initial_state(context: Context) -> list[Child]:
            return bitwise.propose(context)[:children] if len(context.lineage) == 1 else []

        options = SearchOptions(
            budget_seconds=BUDGET_SECONDS, workers=1, snapshots=snapshots, max_children=children
        )
        operators = OperatorPhases(structural=(bitwise_of_the_initial_state,), stall_tiers=())
        with Store.create(work, {"options": options.to_dict()}) as store:
            cache = snapshot_cache(work, qemu) if snapshots else None
            pool = LocalPool(1, runner_setup(qemu))
            try:
                Search(store, firmware, target, options, pool, None, operators, initial, cache).run()
            finally:
                pool.close()

    return search


def timed(
    search: Callable[[Path, Path, bool], None], work: Path, qemu: Path, snapshots: bool
) -> dict[str, Any]:
    """Run `search` into `work`; its wall time and what its store holds."""
    started = time.monotonic()
    search(work, qemu, snapshots)
    wall = time.monotonic() - started
    with Store.open(work, writer=False) as store:
        runs = list(store.runs())
        counters = store.counters()
        return {
            "wall": wall,
            "runs": {run.state_id: run.result for run in runs},
            "child_walls": [run.wall_seconds for run in runs if run.generation > 0],
            "edges": sorted((edge.child, edge.parent, edge.operator, edge.reason) for edge in store.edges()),
            "states": {edge.child: store.state(edge.child) for edge in store.edges()},
            "counters": {name: counters[name] for name in SNAPSHOT_COUNTERS if name in counters},
        }


def differing_fields(first: bytes, second: bytes) -> list[str]:
    a, b = deserialize(first), deserialize(second)
    return [field.name for field in a.DESCRIPTOR.fields if getattr(a, field.name) != getattr(b, field.name)]


def compared(name: str, full: dict[str, Any], shared: dict[str, Any]) -> None:
    # A run that differs can change the search's path: then each store has states the other lacks.
    differing = {
        state: differing_fields(result, shared["runs"][state])
        for state, result in full["runs"].items()
        if state in shared["runs"] and shared["runs"][state] != result
    }
    fields = sorted({field for names in differing.values() for field in names})
    only_one = len(full["runs"].keys() ^ shared["runs"].keys())
    same = full["states"] == shared["states"] and full["edges"] == shared["edges"] and not differing
    counters = shared["counters"]
    print(
        f"  {name}: wall {full['wall']:.1f} s without, {shared['wall']:.1f} s with snapshots "
        f"({full['wall'] / shared['wall']:.2f}x); runs {len(full['runs'])} / {len(shared['runs'])}; "
        f"identical stores: {same}"
        + (
            f" (runs differing: {len(differing)} {fields}; states in one store only: {only_one})"
            if not same
            else ""
        )
    )
    print(
        f"    prefix boots {counters.get('snapshot_seconds', 0.0):.2f} s, "
        f"{counters.get('snapshots_taken', 0):.0f} snapshots taken, "
        f"{counters.get('runs_from_snapshots', 0):.0f} runs continued from one",
        end="",
    )
    # Without a continued run the two child medians only differ by noise: not a measure of snapshots.
    if counters.get("runs_from_snapshots"):
        child_full = statistics.median(full["child_walls"])
        child_shared = statistics.median(shared["child_walls"])
        print(
            f"; median child run {child_full:.2f} s full boot, {child_shared:.2f} s with snapshots "
            f"({100 * child_shared / child_full:.0f} %)",
            end="",
        )
    print(flush=True)


def why_from_reset(works: list[Path]) -> None:
    """Print, over the stored searches in `works`, which children may continue from which save."""
    counts: Counter[str] = Counter()
    for work in works:
        with Store.open(work, writer=False) as store:
            edges = {edge.child: edge for edge in store.edges()}
            for edge in edges.values():
                if edge.parent is None or edge.dropped is not None or store.run(edge.child) is None:
                    continue
                child = evaluated_state(store, edge.child)[0]
                lineage = []
                ancestor: str | None = edge.parent
                while ancestor is not None and len(lineage) < LINEAGE_DEPTH:
                    evaluated, ancestor = evaluated_state(store, ancestor)
                    lineage.append(evaluated)
                parent = lineage[0]
                if divergence_point(parent.state, parent.result, child.state) is not None:
                    counts["may continue from a save of its parent's boot"] += 1
                elif any(divergence_point(a.state, a.result, child.state) is not None for a in lineage[1:]):
                    counts["may continue only from a save of an older ancestor's boot"] += 1
                else:
                    obstacle = sharing_obstacle(parent.state, parent.result, child.state)
                    counts[f"from reset: {obstacle or 'its change is read too early'}"] += 1
                    if obstacle == "differs in nops":
                        entered = {initcall.address for initcall in parent.result.initcalls}
                        added = {nop.address for nop in child.state.nops} - {
                            nop.address for nop in parent.state.nops
                        }
                        known = (
                            "an initcall the parent entered"
                            if added <= entered
                            else "first entry not recorded"
                        )
                        counts[f"  NOP of {known}"] += 1
    for reason, count in sorted(counts.items(), key=lambda item: (item[0].startswith("  "), -item[1])):
        print(f"{count:5d}  {reason}")


def main() -> None:
    if sys.argv[1:2] == ["--why"]:
        why_from_reset([Path(work) for work in sys.argv[2:]])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--children", type=int, default=34)
    parser.add_argument(
        "--search", action="append", choices=SEARCHES, help="Only this search (repeatable) [default: all]."
    )
    parser.add_argument("--qemu", type=Path, default=os.environ.get("EXPLORER_QEMU"))
    args = parser.parse_args()
    args.qemu = find_runner(args.qemu)
    searches = dict(
        zip(
            SEARCHES,
            (
                cli_search("vexpress-v2p-ca9"),
                am335x_bitwise_search(args.children),
                cli_search("am335x-boneblack"),
                cli_search("sun7i-a20-cubieboard2"),
            ),
            strict=True,
        )
    )
    searches = {name: search for name, search in searches.items() if name in (args.search or searches)}
    print(f"build {args.qemu.resolve()}, load average {os.getloadavg()[0]:.1f}", flush=True)
    for number in range(args.rounds):
        order = (False, True) if number % 2 == 0 else (True, False)
        print(f"round {number + 1} (first: {'with' if order[0] else 'without'} snapshots)", flush=True)
        for name, search in searches.items():
            with tempfile.TemporaryDirectory(prefix="snapshot-search-") as scratch:
                results = {
                    snapshots: timed(search, Path(scratch) / str(snapshots), args.qemu, snapshots)
                    for snapshots in order
                }
            compared(name, results[False], results[True])
        print(f"  load average {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
