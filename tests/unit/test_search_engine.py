"""The engine's generation loop, with a fake executor and fake operators (the real ones, booting real
kernels, are tested in tests/integration/test_search_*.py).

The fake world: a state boots one milestone further per NOP it has, and reaches user space with
three. The structural operator proposes nothing once a state has a device; the stall operator adds
the next NOP. So the search must: run the initial state, map the device, stall, escalate NOPs,
and stop at user space, committing every generation, and a resumed search must not boot again
what is stored.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from explorer.runner.kernel_hooks import MILESTONES
from explorer.runner.machine_config_pb2 import MachineConfig, Nop
from explorer.runner.rehost_pb2 import Exit, ExitReason, Milestone, RunResult
from explorer.runner.result import serialize
from explorer.search.engine import OperatorPhases, Search, SearchOptions
from explorer.search.executor import Job, Outcome
from explorer.search.operators import Child, Context
from explorer.search.state import Target, derive, parse_state
from explorer.store import Store
from tests.helpers import arm_firmware

FIRMWARE = arm_firmware(page_offset=None)
TARGET = Target(kernel=Path("/nonexistent/zImage"))
INITIAL = MachineConfig(target="arm", cpu="cortex-a9", seed=7)


class FakeExecutor:
    """Boots nothing: a state's result is a function of its NOPs, as a real run is of its state."""

    workers = 2

    def __init__(self) -> None:
        self.booted: list[str] = []

    def run(self, jobs: Sequence[Job]) -> Iterator[Outcome]:
        for job in reversed(jobs):  # any order
            self.booted.append(job.state_id)
            config = parse_state(job.config)
            reached = len(config.nops)
            result = RunResult(milestones=[Milestone(name=name) for name in MILESTONES[: reached + 1]])
            if reached >= 3:
                result.exit.CopyFrom(Exit(reason=ExitReason.EXIT_USER_SPACE))
            yield Outcome(job.state_id, serialize(result), 0.01)

    def close(self) -> None:
        pass


def map_a_device(context: Context) -> list[Child]:
    if context.current.state.devices:
        return []
    child = derive(context.current.state, lambda state: state.devices.add(type="pl011", mmio=[0x1000]))
    return [Child(child, "devices", "map pl011")]


def next_nop(context: Context) -> list[Child]:
    count = len(context.current.state.nops)
    child = derive(context.current.state, lambda state: state.nops.append(Nop(address=0x100 + count)))
    return [Child(child, "nops", f"NOP number {count + 1}", {"count": count + 1})]


PHASES = OperatorPhases(structural=(map_a_device,), stall_tiers=((), (next_nop,)))


def search(store: Store, executor: FakeExecutor, budget: float = 60.0) -> str:
    options = SearchOptions(budget_seconds=budget, workers=2, seed=7)
    return Search(store, FIRMWARE, TARGET, options, executor, operators=PHASES, initial=INITIAL).run()


def test_search_reaches_user_space_and_commits_every_generation(tmp_path: Path) -> None:
    executor = FakeExecutor()
    with Store.create(tmp_path / "work", {"test": True}) as store:
        assert search(store, executor) == "boot completed"
        # initial, device, then three NOPs.
        assert store.generations() == 5
        assert len(executor.booted) == 5 == len(set(executor.booted))
        operators = [edge.operator for edge in sorted(store.edges(), key=lambda edge: edge.generation)]
        assert operators == ["initial", "devices", "nops", "nops", "nops"]
        assert store.check() == []
        stalled = store.counters()["stalled_generations"]
        assert stalled == 3


def test_resume_never_boots_a_stored_state_again(tmp_path: Path) -> None:
    work = tmp_path / "work"
    first = FakeExecutor()
    with Store.create(work, {"test": True}) as store:
        assert search(store, first, budget=0.0) == "budget"
        assert store.generations() == 1
    second = FakeExecutor()
    with Store.open(work, writer=True) as store:
        assert search(store, second) == "boot completed"
        assert not set(first.booted) & set(second.booted)
        assert store.check() == []


def test_a_dead_end_empties_the_frontier(tmp_path: Path) -> None:
    nothing = OperatorPhases(structural=(), stall_tiers=())
    with Store.create(tmp_path / "work", {}) as store:
        options = SearchOptions(budget_seconds=60, workers=1)
        ended = Search(
            store, FIRMWARE, TARGET, options, FakeExecutor(), operators=nothing, initial=INITIAL
        ).run()
        assert ended == "exhausted"
        assert store.frontier() == []
