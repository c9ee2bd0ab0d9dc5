"""The reseed operator: another seed for a state nothing else helps, at most RESEEDS along a lineage,
never for a run past user space (unless its wired console UART stayed silent) or a state without
random answers."""

from __future__ import annotations

from pathlib import Path

from google.protobuf.struct_pb2 import Value

from explorer.runner.machine_config_pb2 import Device, MachineConfig, MmioRule
from explorer.runner.rehost_pb2 import Exit, ExitReason, Milestone, MmioAccess, RunResult
from explorer.search.operators import Child, Context, Evaluated, reseed
from explorer.search.state import Target, state_id
from tests.unit.test_search_engine import FIRMWARE

STUCK = RunResult(
    exit=Exit(reason=ExitReason.EXIT_BUDGET, detail="stuck: 3000000 reads of 0x1c20000"),
    mmio_accesses=[MmioAccess(address=0x1C20000, size=4, value=7, pc=0xC0100000)],
)


def evaluated(state: MachineConfig, result: RunResult = STUCK, made_by: Child | None = None) -> Evaluated:
    return Evaluated(state_id(state), state, result, made_by)


def context(*lineage: Evaluated) -> Context:
    return Context(FIRMWARE, Target(Path("/k")), lineage)


def test_a_stuck_state_gets_the_next_seed_and_nothing_else_changes() -> None:
    state = MachineConfig(target="arm", cpu="cortex-a7", seed=4, random_unruled_reads=True)
    state.boot.cmdline = "lpj=100000"
    (child,) = reseed.propose(context(evaluated(state)))
    assert child.operator == "reseed" and child.detail == {"seed": 5}
    assert child.state.seed == 5
    child.state.seed = 4
    assert child.state == state


def test_at_most_reseeds_draws_along_a_lineage() -> None:
    lineage: list[Evaluated] = [evaluated(MachineConfig(target="arm", seed=0, random_unruled_reads=True))]
    for _ in range(reseed.RESEEDS):
        (child,) = reseed.propose(context(*reversed(lineage)))
        lineage.append(evaluated(child.state, made_by=child))
    assert [entry.state.seed for entry in lineage] == list(range(reseed.RESEEDS + 1))
    assert reseed.propose(context(*reversed(lineage))) == []


def test_nothing_for_a_run_past_user_space_or_without_random_answers() -> None:
    past = RunResult(exit=Exit(reason=ExitReason.EXIT_USER_SPACE), milestones=[Milestone(name="user_space")])
    assert (
        reseed.propose(context(evaluated(MachineConfig(target="arm", random_unruled_reads=True), past))) == []
    )
    assert reseed.propose(context(evaluated(MachineConfig(target="arm", random_unruled_reads=False)))) == []


def test_nothing_when_every_read_had_a_rule_or_nothing_was_read() -> None:
    """Another seed would boot the same run: no unruled read takes a value from it."""
    ruled = MachineConfig(target="arm", random_unruled_reads=True)
    ruled.mmio_rules.append(MmioRule(address=0x1C20000, constant=1))
    assert reseed.propose(context(evaluated(ruled))) == []
    quiet = RunResult(exit=Exit(reason=ExitReason.EXIT_PANIC))
    assert (
        reseed.propose(context(evaluated(MachineConfig(target="arm", random_unruled_reads=True), quiet)))
        == []
    )


def test_nothing_for_a_panic_which_is_the_nop_operators() -> None:
    panicked = RunResult(exit=Exit(reason=ExitReason.EXIT_PANIC), mmio_accesses=STUCK.mmio_accesses)
    assert (
        reseed.propose(context(evaluated(MachineConfig(target="arm", random_unruled_reads=True), panicked)))
        == []
    )


def _with_console_uart(irq: int | None) -> MachineConfig:
    state = MachineConfig(target="arm", seed=2, random_unruled_reads=True)
    wired = Value(null_value=0) if irq is None else Value(number_value=irq)
    state.devices.append(Device(type="serial-mm", mmio=[0x48020000], irqs=[wired]))
    return state


def _user_space(console: bytes) -> RunResult:
    return RunResult(
        exit=Exit(reason=ExitReason.EXIT_HALT, detail="console_input"),
        milestones=[Milestone(name="user_space")],
        mmio_accesses=STUCK.mmio_accesses,
        console=console,
    )


def test_a_run_in_user_space_whose_wired_console_uart_stayed_silent_gets_the_next_seed() -> None:
    """Its console driver never registered the port under this draw: another draw may probe it."""
    state = _with_console_uart(106)
    (child,) = reseed.propose(context(evaluated(state, _user_space(b""))))
    assert child.state.seed == 3 and "console UART printed nothing" in child.reason
    child.state.seed = 2
    assert child.state == state


def test_nothing_for_user_space_with_console_bytes_or_an_unwired_console_uart() -> None:
    """Bytes on the console: its driver bound, another draw changes nothing there. A UART without its
    interrupt cannot print the marker whatever the draw (console_interrupt_wired): wiring it comes
    first."""
    assert reseed.propose(context(evaluated(_with_console_uart(106), _user_space(b"[ 0.0] Booting")))) == []
    assert reseed.propose(context(evaluated(_with_console_uart(None), _user_space(b"")))) == []
