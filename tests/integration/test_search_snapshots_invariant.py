"""A search whose children continue from snapshots of their parent stores what a search without does.

The search: armmp on an am335x (BeagleBone Black) with only CPU and RAM, whose boot spins in
omap_irq_soft_reset at about 2.08e9 instructions polling the interrupt controller's SYSSTATUS
(tests/integration/test_search_values.py). Its bitwise children change only that register, which
the parent first reads there: they all share one snapshot of the parent's boot just before it.
Four of them are booted (the whole generation takes minutes without snapshots), by a search run
twice, without and with snapshots: the two stores must hold the same states, edges, scores and
byte-identical runs, and the second must really have continued its children from a snapshot.
The same for a lineage of lone children, each continuing from a save of its parent's or its
grandparent's boot (explorer.search.boot_sharing.inherited_point).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from explorer.corpus import Corpus
from explorer.execution.executor import Executor
from explorer.execution.jobs import Job, Outcome
from explorer.execution.local import LocalPool
from explorer.firmware.ingest import ingest
from explorer.search.boot_sharing import SAFETY_MARGIN, SNAPSHOTS_DIRECTORY, divergence_point, snapshot_cache
from explorer.search.engine import Search, SearchOptions, evaluated_state
from explorer.search.operators import Child, Context, bitwise
from explorer.search.proposal import OperatorPhases
from explorer.search.session import runner_setup
from explorer.search.state import State, Target
from explorer.store import Store

pytestmark = [pytest.mark.qemu, pytest.mark.corpus]

INSTRUCTION_BUDGET = 2_250_000_000
# am335x INTC_SYSSTATUS, the register the boot polls.
INTC_SYSSTATUS = 0x48200014
CHILDREN = 4


def first_bitwise_children(context: Context) -> list[Child]:
    """The first few bitwise children of the initial state; nothing for any other state."""
    return bitwise.propose(context)[:CHILDREN] if len(context.lineage) == 1 else []


def passing_children_and_their_next_poll(context: Context) -> list[Child]:
    """The initial state's all-ones and bit-0 children (both let the poll pass); for each of them,
    the first bitwise child of the register it polls next: a lineage in which each generation's
    change comes later than its parent's."""
    if len(context.lineage) == 1:
        return bitwise.propose(context)[1:3]
    return bitwise.propose(context)[:1] if len(context.lineage) == 2 else []


class Recording:
    """A local pool of one that keeps the jobs it was given."""

    def __init__(self, qemu_build: Path) -> None:
        self.pool = LocalPool(1, runner_setup(qemu_build))
        self.workers = 1
        self.jobs: list[Job] = []

    def run(self, jobs: Sequence[Job], stop_at: float | None = None) -> Iterator[Outcome]:
        self.jobs += jobs
        return self.pool.run(jobs, stop_at)

    def close(self) -> None:
        self.pool.close()


def searched(
    work: Path,
    corpus: Corpus,
    qemu_build: Path,
    snapshots: bool,
    executor: Executor | None = None,
    operator: Callable[[Context], list[Child]] = first_bitwise_children,
) -> dict[str, Any]:
    """What the search of the initial state's children by `operator` (default: its first bitwise
    children) stores, on `executor` (default: a local pool of one)."""
    target = Target(
        kernel=corpus.kernel("armmp"), dtb=corpus.dtb("armmp", "am335x-boneblack"), cmdline="console=ttyO0"
    )
    firmware = ingest(target.kernel, dtb=target.dtb)
    initial = State(target="arm", cpu="cortex-a8", instruction_budget=INSTRUCTION_BUDGET)
    initial.ram.add(base=0x80000000, size=0x20000000)
    options = SearchOptions(budget_seconds=1800, workers=1, snapshots=snapshots)
    setup = runner_setup(qemu_build)
    operators = OperatorPhases(structural=(operator,), stall_tiers=())
    with Store.create(work, {"options": options.to_dict()}) as store:
        cache = snapshot_cache(work, qemu_build) if snapshots else None
        pool = executor or LocalPool(1, setup)
        try:
            ended = Search(store, firmware, target, options, pool, None, operators, initial, cache).run()
        finally:
            if executor is None:
                pool.close()
        assert ended == "exhausted"
        return {
            "states": {edge.child: store.state(edge.child) for edge in store.edges()},
            "edges": sorted((edge.child, edge.parent, edge.operator, edge.reason) for edge in store.edges()),
            "runs": {run.state_id: run.result for run in store.runs()},
            "scores": {run.state_id: run.score for run in store.runs()},
            "counters": store.counters(),
            "initial": next(edge.child for edge in store.edges() if edge.parent is None),
        }


def test_a_search_with_snapshots_stores_exactly_what_one_without_does(
    tmp_path: Path, corpus: Corpus, qemu_build: Path
) -> None:
    full = searched(tmp_path / "full", corpus, qemu_build, snapshots=False)
    shared = searched(tmp_path / "shared", corpus, qemu_build, snapshots=True)
    assert len(full["runs"]) == 1 + CHILDREN
    for part in ("states", "edges", "runs", "scores"):
        assert shared[part] == full[part], part
    counters = shared["counters"]
    assert counters["snapshots_taken"] == 1 and counters["runs_from_snapshots"] == CHILDREN
    assert "snapshots_taken" not in full["counters"]
    # The snapshot stays beside the store, under its key, for a resumed search.
    assert len(list((tmp_path / "shared" / SNAPSHOTS_DIRECTORY).iterdir())) == 1
    # QEMU's icount on the MMIO events placed the point: after most of the boot, before the poll.
    with Store.open(tmp_path / "full", writer=False) as store:
        parent, _ = evaluated_state(store, full["initial"])
        children = [
            evaluated_state(store, edge.child)[0] for edge in store.edges() if edge.parent == parent.state_id
        ]
    accesses = parent.result.mmio_accesses
    first_poll = min(access.icount for access in accesses if access.address == INTC_SYSSTATUS)
    # The parent ends on the machine's stuck-poll exit, which carries no count: its last access
    # is the latest count its run is known to have reached.
    last_access = max(access.icount for access in accesses)
    init_irq = next(m.icount for m in parent.result.milestones if m.name == "init_IRQ")
    assert init_irq < first_poll <= last_access
    for child in children:
        point = divergence_point(parent.state, parent.result, child.state)
        assert point == first_poll - SAFETY_MARGIN and point > last_access / 2


def test_a_grandchild_continuing_from_its_grandparents_save_is_its_full_boot(
    tmp_path: Path, corpus: Corpus, qemu_build: Path
) -> None:
    """Each child is alone in its own generation of the lineage: the first takes a save of the
    initial state's boot before the poll, and each grandchild, whose change its grandparent's run
    never reads, continues from that save (a save of its parent's boot before its own change would
    skip less than MIN_SHARED_INSTRUCTIONS more: not taken)."""
    operator = passing_children_and_their_next_poll
    full = searched(tmp_path / "full", corpus, qemu_build, snapshots=False, operator=operator)
    recording = Recording(qemu_build)
    try:
        shared = searched(tmp_path / "shared", corpus, qemu_build, True, recording, operator)
    finally:
        recording.close()
    for part in ("states", "edges", "runs", "scores"):
        assert shared[part] == full[part], part
    parents = {child: parent for child, parent, _, _ in full["edges"]}
    grandchildren = [child for child, parent in parents.items() if parents.get(parent) == full["initial"]]
    assert grandchildren and len(full["runs"]) == 3 + len(grandchildren)
    # Every run but the initial one continued from a save, the grandchildren from one of their lineage's.
    counters = shared["counters"]
    assert counters["runs_from_snapshots"] == len(full["runs"]) - 1 and counters["snapshots_taken"] == 1
    for job in recording.jobs:
        if job.state_id in grandchildren:
            assert job.snapshot is not None and not job.snapshot.save
            assert job.snapshot.state_id == full["initial"]
