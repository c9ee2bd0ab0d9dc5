"""How the engine shares a parent's boot among its children, with a fake executor that boots nothing.

The fake world: every state's run reads STATUS at READ_AT, then LATER, and ends at BOOT_END, and
children differ from their parent only in the value of STATUS (or, a generation later, of LATER),
so they all may continue from one snapshot of the parent saved just before READ_AT. The fake
executor "saves" by writing a snapshot directory with a real manifest (what the cache checks) and
gives a continued job the result of its full boot; that a real continued run is byte for byte its
full boot, and a real search stores the same either way, is
tests/integration/test_search_snapshots_invariant.py. Here: which jobs the engine asks for, what it
counts, and that the cache serves a later session and never fails a search.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from explorer.execution.jobs import Job, Outcome
from explorer.runner.machine_config_pb2 import MachineConfig, MmioRule, RamRegion
from explorer.runner.rehost_pb2 import Exit, ExitReason, MmioAccess, RunResult
from explorer.runner.result import serialize
from explorer.search.boot_sharing import SAFETY_MARGIN, snapshot_cache
from explorer.search.engine import Search, SearchOptions
from explorer.search.operators import Child, Context
from explorer.search.proposal import OperatorPhases
from explorer.search.score import Score
from explorer.search.state import Target, bootable, derive, parse_state
from explorer.store import Store
from tests.helpers import arm_firmware
from tests.unit.test_search_snapshots_cache import write_snapshot

FIRMWARE = arm_firmware(page_offset=None)
TARGET = Target(kernel=Path("/nonexistent/zImage"))
INITIAL = MachineConfig(
    target="arm",
    cpu="cortex-a9",
    seed=7,
    instruction_budget=1_000_000,
    ram=[RamRegion(base=0x60000000, size=1 << 28)],
)
STATUS = 0x10001000
READ_AT = 900_000
# An address every run reads after STATUS.
LATER = 0x10002000
LATER_AT = 950_000
BOOT_END = 1_000_000
CHILDREN = 3
SAVE_SECONDS = 0.5


def full_boot(config: MachineConfig) -> RunResult:
    answer = next((rule.constant for rule in config.mmio_rules if rule.address == STATUS), 0)
    return RunResult(
        exit=Exit(reason=ExitReason.EXIT_BUDGET, icount=BOOT_END, detail=f"read {answer:#x}"),
        mmio_accesses=[
            MmioAccess(address=STATUS, size=4, value=answer, icount=READ_AT),
            MmioAccess(address=LATER, size=4, value=0, icount=LATER_AT),
        ],
    )


class SnapshottingExecutor:
    """Saves by writing a snapshot that the cache accepts (unless `saves` is False: a save that
    ended early); a continued job gets its full boot's result."""

    workers = 1

    def __init__(self, qemu_dir: Path, saves: bool = True) -> None:
        self.qemu_dir = qemu_dir
        self.saves = saves
        self.jobs: list[Job] = []

    def run(self, jobs: Sequence[Job], stop_at: float | None = None) -> Iterator[Outcome]:
        for job in jobs:
            self.jobs.append(job)
            use = job.snapshot
            if use is not None and use.save:
                if self.saves:
                    write_snapshot(use.directory, self.qemu_dir.name, use.point)
                saved = RunResult(exit=Exit(reason=ExitReason.EXIT_BUDGET, icount=use.point), partial=True)
                yield Outcome(job, serialize(saved), SAVE_SECONDS)
            else:
                yield Outcome(job, serialize(full_boot(parse_state(job.config))), 0.01)

    def close(self) -> None:
        pass


def answering(bit: int) -> Callable[[MachineConfig], None]:
    def pin(state: MachineConfig) -> None:
        state.mmio_rules.append(MmioRule(address=STATUS, constant=bit))

    return pin


def status_values(context: Context) -> list[Child]:
    """CHILDREN children of the initial state, each answering STATUS with another bit."""
    if len(context.lineage) > 1:
        return []
    bits = [1 << index for index in range(CHILDREN)]
    return [Child(derive(context.current.state, answering(bit)), "bitwise", f"bit {bit}") for bit in bits]


class RunsSeen:
    def __init__(self) -> None:
        self.runs: list[str] = []

    def generation_started(self, number: int, expanded: str | None, children: int) -> None:
        pass

    def run_finished(self, outcome: Outcome, run_score: Score) -> None:
        self.runs.append(outcome.state_id)

    def generation_committed(self, report: object) -> None:
        pass


def searched(
    work: Path, executor: SnapshottingExecutor, snapshots: bool, observer: RunsSeen | None = None
) -> dict[str, object]:
    options = SearchOptions(budget_seconds=60, workers=1, snapshots=snapshots)
    phases = OperatorPhases(structural=(status_values,), stall_tiers=())
    with Store.create(work, {}) as store:
        cache = snapshot_cache(work, executor.qemu_dir) if snapshots else None
        Search(store, FIRMWARE, TARGET, options, executor, observer, phases, INITIAL, cache).run()
        return {
            "runs": {run.state_id: run.result for run in store.runs()},
            "edges": sorted((edge.child, edge.parent, edge.operator) for edge in store.edges()),
            "counters": store.counters(),
        }


def test_children_continue_from_one_save_of_their_parent_just_before_what_they_change(
    tmp_path: Path,
) -> None:
    qemu = tmp_path / "build"
    full = searched(tmp_path / "full", SnapshottingExecutor(qemu), snapshots=False)
    executor = SnapshottingExecutor(qemu)
    seen = RunsSeen()
    shared = searched(tmp_path / "shared", executor, snapshots=True, observer=seen)
    assert shared["runs"] == full["runs"] and shared["edges"] == full["edges"]
    assert len(shared["runs"]) == 1 + CHILDREN  # type: ignore[arg-type]
    initial, save, *continued = executor.jobs
    point = READ_AT - SAFETY_MARGIN
    assert initial.snapshot is None
    assert save.snapshot is not None and save.snapshot.save and save.snapshot.point == point
    assert save.state_id == initial.state_id and save.snapshot.state_id == initial.state_id
    assert save.config == bootable(INITIAL, TARGET, FIRMWARE).SerializeToString()
    assert {job.state_id for job in continued} == set(shared["runs"]) - {initial.state_id}  # type: ignore[arg-type]
    for job in continued:
        assert job.snapshot is not None and not job.snapshot.save and job.snapshot.point == point
        assert (
            job.snapshot.directory.is_dir()
            and job.snapshot.directory.parent == tmp_path / "shared" / "snapshots"
        )
    counters = shared["counters"]
    assert counters["snapshots_taken"] == 1 and counters["runs_from_snapshots"] == CHILDREN  # type: ignore[index]
    assert counters["snapshot_seconds"] == SAVE_SECONDS  # type: ignore[index]
    assert not {"snapshots_taken", "runs_from_snapshots", "snapshot_seconds"} & set(full["counters"])  # type: ignore[arg-type]
    # A save is master-side work: never a run to the observer, never stored.
    assert sorted(seen.runs) == sorted(shared["runs"])  # type: ignore[arg-type]


def test_a_later_session_continues_from_the_kept_snapshot_without_saving_again(tmp_path: Path) -> None:
    qemu = tmp_path / "build"
    first = SnapshottingExecutor(qemu)
    searched(tmp_path / "first", first, snapshots=True)
    assert sum(job.snapshot is not None and job.snapshot.save for job in first.jobs) == 1
    # A new store beside the first one's snapshots (as a resumed search finds them): the
    # parent's run is the same, so is the point, and the kept snapshot is used.
    (tmp_path / "second").mkdir()
    (tmp_path / "first" / "snapshots").rename(tmp_path / "second" / "snapshots")
    second = SnapshottingExecutor(qemu)
    shared = searched(tmp_path / "second", second, snapshots=True)
    assert not any(job.snapshot is not None and job.snapshot.save for job in second.jobs)
    assert sum(job.snapshot is not None for job in second.jobs) == CHILDREN
    assert "snapshots_taken" not in shared["counters"]  # type: ignore[operator]


def test_a_save_that_fails_leaves_the_children_to_boot_in_full(tmp_path: Path) -> None:
    qemu = tmp_path / "build"
    full = searched(tmp_path / "full", SnapshottingExecutor(qemu), snapshots=False)
    executor = SnapshottingExecutor(qemu, saves=False)
    shared = searched(tmp_path / "shared", executor, snapshots=True)
    assert shared["runs"] == full["runs"]
    saves = [job for job in executor.jobs if job.snapshot is not None and job.snapshot.save]
    children = [job for job in executor.jobs[1:] if job not in saves]
    assert len(children) == CHILDREN and all(job.snapshot is None for job in children)
    counters = shared["counters"]
    assert counters["snapshots_taken"] == 0 and counters["runs_from_snapshots"] == 0  # type: ignore[index]
    assert list((tmp_path / "shared" / "snapshots").iterdir()) == []


def one_pin_a_generation(context: Context) -> list[Child]:
    """A lineage of lone children: the initial state's pins STATUS, its child's pins LATER."""
    pinned = {rule.address for rule in context.current.state.mmio_rules}
    address = STATUS if STATUS not in pinned else LATER
    if address in pinned:
        return []

    def pin(state: MachineConfig) -> None:
        state.mmio_rules.append(MmioRule(address=address, constant=1))

    return [Child(derive(context.current.state, pin), "pin", f"{address:#x}")]


def test_a_lone_child_saves_its_parent_and_its_own_child_continues_from_that_save(tmp_path: Path) -> None:
    qemu = tmp_path / "build"
    phases = OperatorPhases(structural=(one_pin_a_generation,), stall_tiers=())
    stores = {}
    executors = {}
    for name, snapshots in (("full", False), ("shared", True)):
        executors[name] = executor = SnapshottingExecutor(qemu)
        work = tmp_path / name
        options = SearchOptions(budget_seconds=60, workers=1, snapshots=snapshots)
        with Store.create(work, {}) as store:
            cache = snapshot_cache(work, qemu) if snapshots else None
            Search(store, FIRMWARE, TARGET, options, executor, None, phases, INITIAL, cache).run()
            stores[name] = ({run.state_id: run.result for run in store.runs()}, store.counters())
    assert stores["shared"][0] == stores["full"][0] and len(stores["full"][0]) == 3
    initial, save, child, grandchild = executors["shared"].jobs
    point = READ_AT - SAFETY_MARGIN
    assert initial.snapshot is None
    assert save.snapshot is not None and save.snapshot.save and save.snapshot.point == point
    # The grandchild's own change is read later than its parent's (LATER_AT), but a save of its
    # parent there would skip too little more: it continues from its grandparent's save.
    for continued in (child, grandchild):
        assert continued.snapshot is not None and not continued.snapshot.save
        assert (continued.snapshot.state_id, continued.snapshot.point) == (initial.state_id, point)
    counters = stores["shared"][1]
    assert counters["snapshots_taken"] == 1 and counters["runs_from_snapshots"] == 2
