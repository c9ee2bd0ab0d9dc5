"""The engine's generation loop, with a fake executor and fake operators (the real ones, booting real
kernels, are tested in tests/integration/test_search_*.py).

The fake world: a state boots one milestone further per NOP it has, and reaches user space with
three. The structural operator proposes nothing once a state has a device; the stall operator adds
the next NOP. So the search must: run the initial state, map the device, stall, escalate NOPs,
and stop at user space, committing every generation, and a resumed search must not boot again
what is stored.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from explorer.cli import search as search_cli
from explorer.execution.jobs import Job, Outcome
from explorer.runner.kernel_hooks import MILESTONES
from explorer.runner.machine_config_pb2 import MachineConfig, Nop, RamRegion
from explorer.runner.rehost_pb2 import Exit, ExitReason, Milestone, RunResult
from explorer.runner.result import serialize
from explorer.search.engine import Search, SearchOptions
from explorer.search.findings import search_summary
from explorer.search.operators import Child, Context
from explorer.search.proposal import OperatorPhases
from explorer.search.state import Target, derive, parse_state
from explorer.store import Store
from tests.helpers import arm_firmware

FIRMWARE = arm_firmware(page_offset=None)
TARGET = Target(kernel=Path("/nonexistent/zImage"))
INITIAL = MachineConfig(target="arm", cpu="cortex-a9", seed=7, ram=[RamRegion(base=0x60000000, size=1 << 28)])


class FakeExecutor:
    """Boots nothing: a state's result is a function of its NOPs, as a real run is of its state."""

    workers = 2

    def __init__(self) -> None:
        self.booted: list[str] = []

    def run(self, jobs: Sequence[Job], stop_at: float | None = None) -> Iterator[Outcome]:
        # Every run finishes at once, before any budget runs out: stop_at never cuts one.
        for job in reversed(jobs):  # any order
            self.booted.append(job.state_id)
            config = parse_state(job.config)
            reached = len(config.nops)
            result = RunResult(milestones=[Milestone(name=name) for name in MILESTONES[: reached + 1]])
            if reached >= 3:
                result.exit.CopyFrom(Exit(reason=ExitReason.EXIT_USER_SPACE))
            yield Outcome(job, serialize(result), 0.01)

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


class CuttingExecutor(FakeExecutor):
    """Finishes only the first `finishing` jobs of each call: the budget cut the others short."""

    def __init__(self, finishing: int) -> None:
        super().__init__()
        self.finishing = finishing

    def run(self, jobs: Sequence[Job], stop_at: float | None = None) -> Iterator[Outcome]:
        yield from super().run(list(reversed(jobs))[: self.finishing], stop_at)


class Stalled(FakeExecutor):
    """Every run is still going when the budget runs out."""

    def run(self, jobs: Sequence[Job], stop_at: float | None = None) -> Iterator[Outcome]:
        assert stop_at is not None
        time.sleep(max(0.0, stop_at - time.monotonic()))
        yield from ()


def two_devices(context: Context) -> list[Child]:
    if context.current.state.devices:
        return []
    return [
        Child(
            derive(
                context.current.state, lambda state, base=base: state.devices.add(type="pl011", mmio=[base])
            ),
            "devices",
            f"pl011 at {base:#x}",
        )
        for base in (0x1000, 0x2000)
    ]


def test_runs_cut_by_the_budget_are_not_stored_and_run_again_later(tmp_path: Path) -> None:
    phases = OperatorPhases(structural=(two_devices,), stall_tiers=())
    executor = CuttingExecutor(finishing=1)
    with Store.create(tmp_path / "work", {}) as store:
        options = SearchOptions(budget_seconds=60, workers=2, seed=7)
        ended = Search(store, FIRMWARE, TARGET, options, executor, operators=phases, initial=INITIAL).run()
        assert ended == "exhausted"
        # initial; the parent with one child (the other's run cut); each child, a dead end; the
        # parent again, proposing the other child; the parent a last time, proposing nothing.
        assert store.generations() == 6
        assert len(executor.booted) == 3 == len(set(executor.booted))
        assert sorted(edge.reason for edge in store.edges() if edge.operator == "devices") == [
            "pl011 at 0x1000",
            "pl011 at 0x2000",
        ]
        assert store.check() == []


def test_a_generation_whose_every_run_was_cut_commits_nothing(tmp_path: Path) -> None:
    phases = OperatorPhases(structural=(two_devices,), stall_tiers=())
    with Store.create(tmp_path / "work", {}) as store:
        options = SearchOptions(budget_seconds=0.3, workers=2, seed=7)
        ended = Search(store, FIRMWARE, TARGET, options, Stalled(), operators=phases, initial=INITIAL).run()
        assert ended == "budget"
        assert store.generations() == 0
        assert list(store.runs()) == []
        assert store.check() == []
        # The search spent its budget waiting on the cut runs: that time is counted all the same.
        assert store.counters()["wall_seconds"] >= options.budget_seconds


def test_generations_record_the_search_wall_time(tmp_path: Path) -> None:
    with Store.create(tmp_path / "work", {}) as store:
        search(store, FakeExecutor())
        walls = [store.generation(number).wall_seconds for number in range(store.generations())]
        assert all(wall is not None for wall in walls)
        assert walls == sorted(walls)
        assert walls[-1] <= store.counters()["wall_seconds"]


REFUSED = "config: tick and interrupt_controller both drive the CPU's IRQ line: give one"


def a_tick_beside_the_controller(context: Context) -> list[Child]:
    """A machine no runner boots, proposed beside the device until a device is mapped."""
    if context.current.state.devices:
        return []

    def both(state: MachineConfig) -> None:
        state.interrupt_controller.type = "a9mpcore_priv"
        state.tick.period_ns = 4_000_000

    return [Child(derive(context.current.state, both), "interrupts", "a tick beside the controller")]


def test_a_child_no_runner_boots_is_dropped_with_why_and_the_search_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def invalid_and_device(context: Context) -> list[Child]:
        return [*a_tick_beside_the_controller(context), *map_a_device(context)]

    phases = OperatorPhases(structural=(invalid_and_device,), stall_tiers=((), (next_nop,)))
    executor = FakeExecutor()
    work = tmp_path / "work"
    with Store.create(work, {"target": TARGET.to_dict()}) as store:
        options = SearchOptions(budget_seconds=60, workers=2, seed=7)
        assert Search(
            store, FIRMWARE, TARGET, options, executor, operators=phases, initial=INITIAL
        ).run() == ("boot completed")
        # The same five generations and runs as without it: initial, device, three NOPs.
        assert store.generations() == 5 and len(executor.booted) == 5
        (dropped,) = [edge for edge in store.edges() if edge.dropped is not None]
        assert (dropped.operator, dropped.reason, dropped.dropped) == (
            "interrupts",
            "a tick beside the controller",
            REFUSED,
        )
        assert dropped.generation == 1 and dropped.child not in executor.booted
        assert store.run(dropped.child) is None and store.state(dropped.child) is not None
        assert store.counters()["dropped_children"] == 1
        assert store.metadata()["stopped"] == {
            "why": "boot completed",
            "generations": 5,
            "frontier": 5,
            "dropped": 1,
        }
        assert store.check() == []
    # `explorer show` (its kernel's facts are the fake firmware's: no kernel file to ingest here).
    monkeypatch.setattr(search_cli, "ingest", lambda kernel, dtb=None: FIRMWARE)
    application = typer.Typer()
    search_cli.register(application)
    # Wide enough that rich wraps no line.
    shown = CliRunner().invoke(application, ["show", str(work)], env={"COLUMNS": "400"})
    assert shown.exit_code == 0, shown.output
    assert "stopped: a run completed the boot after 5 generations" in shown.output
    assert "dropped unbooted (1):" in shown.output
    assert (
        f"gen 1 interrupts from {dropped.parent[:12]}: a tick beside the controller  -> dropped: {REFUSED}"
        in (shown.output)
    )
    state = CliRunner().invoke(application, ["show", str(work), dropped.child[:12]])
    assert state.exit_code != 0 and "was dropped unbooted" in str(state.exception)


def test_a_tier_that_proposed_only_dropped_children_hands_on_to_the_next(tmp_path: Path) -> None:
    phases = OperatorPhases(structural=(a_tick_beside_the_controller,), stall_tiers=((next_nop,),))
    executor = FakeExecutor()
    with Store.create(tmp_path / "work", {}) as store:
        options = SearchOptions(budget_seconds=60, workers=2, seed=7)
        ended = Search(store, FIRMWARE, TARGET, options, executor, operators=phases, initial=INITIAL).run()
        assert ended == "boot completed"
        # Generation 1 drops the tick and boots the first NOP in the same generation.
        first = [edge for edge in store.edges() if edge.generation == 1]
        assert sorted((edge.operator, edge.dropped is not None) for edge in first) == [
            ("interrupts", True),
            ("nops", False),
        ]
        # Stored, the dropped child is never proposed again: each NOP state drops its own once.
        assert len(executor.booted) == len(set(executor.booted)) == 4
        assert store.check() == []


def test_a_state_whose_every_child_is_dropped_leaves_the_frontier_and_the_stop_says_so(
    tmp_path: Path,
) -> None:
    phases = OperatorPhases(structural=(a_tick_beside_the_controller,), stall_tiers=())
    work = tmp_path / "work"
    with Store.create(work, {}) as store:
        options = SearchOptions(budget_seconds=60, workers=1)
        ended = Search(
            store, FIRMWARE, TARGET, options, FakeExecutor(), operators=phases, initial=INITIAL
        ).run()
        assert ended == "exhausted" and store.frontier() == []
        assert store.metadata()["stopped"] == {
            "why": "exhausted",
            "generations": 2,
            "frontier": 0,
            "dropped": 1,
        }
        summary = search_summary(store)
        assert [child["dropped"] for child in summary["dropped"]] == [REFUSED]
        assert summary["stop"] == (
            "nothing left to try after 2 generations: no state's operators proposed anything new; "
            "1 proposed children were dropped unbooted (`explorer show` says why)"
        )
        assert store.check() == []


def test_the_stop_record_says_the_budget_and_what_was_left_and_a_running_search_has_none(
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    with Store.create(work, {}) as store:
        assert search(store, FakeExecutor(), budget=0.0) == "budget"
        assert store.metadata()["stopped"] == {"why": "budget", "generations": 1, "frontier": 1, "dropped": 0}
        assert (
            search_summary(store)["stop"]
            == "the budget was spent after 1 generations, 1 states still on the frontier"
        )

        class Watching(FakeExecutor):
            def run(self, jobs: Sequence[Job], stop_at: float | None = None) -> Iterator[Outcome]:
                # While a session runs, the search has not stopped (status and show say so).
                assert store.metadata()["stopped"] is None
                yield from super().run(jobs, stop_at)

        assert search(store, Watching()) == "boot completed"
        assert store.metadata()["stopped"]["why"] == "boot completed"
