"""The interrupts operator: a tick for a stalled board with an unmodelled controller, then the read pinned."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from explorer.firmware.model import DeviceTreeFacts, DtDevice, Symbol, SymbolTable
from explorer.runner.machine_config_pb2 import Device, MachineConfig, MmioRule
from explorer.runner.rehost_pb2 import Exit, ExitReason, MmioAccess, RunResult
from explorer.search.operators import Child, Context, Evaluated, interrupts
from explorer.search.state import Target, state_id
from tests.unit.test_search_engine import FIRMWARE

# am335x as its device tree says it: the intc, a touched timer, an untouched one, a UART.
INTC = "/ocp/interrupt-controller@48200000"
INTC_BASE = 0x48200000
INTC_SIR = INTC_BASE + 0x40
CLOCK_EVENT_TIMER = DtDevice(
    "/ocp/timer@48040000", ("ti,am335x-timer",), ((0x48040000, 0x400),), INTC, (68,), "okay"
)
OTHER_TIMER = DtDevice(
    "/ocp/timer@48042000", ("ti,am335x-timer",), ((0x48042000, 0x400),), INTC, (69,), "okay"
)
TREE = DeviceTreeFacts(
    source="given",
    model="TI AM335x BeagleBone Black",
    compatible=("ti,am335x-bone-black",),
    memory=((0x80000000, 0x20000000),),
    devices=(
        DtDevice(INTC, ("ti,am33xx-intc",), ((INTC_BASE, 0x1000),), None, (), "okay"),
        CLOCK_EVENT_TIMER,
        OTHER_TIMER,
        DtDevice("/ocp/serial@44e09000", ("ti,am3352-uart",), ((0x44E09000, 0x2000),), INTC, (72,), "okay"),
    ),
    bootargs=None,
    stdout_path=None,
)
HANDLER = 0xC0100000
SYMBOLS = SymbolTable(
    (
        Symbol(0xC0008000, "T", "start_kernel"),
        Symbol(HANDLER, "T", "omap_intc_handle_irq"),
        Symbol(0xC0100100, "T", "dmtimer_set_next_event"),
    ),
    "kallsyms",
    0xC0008000,
    "a test",
)
AM335X = dataclasses.replace(FIRMWARE, symbols=SYMBOLS, device_tree=TREE)
TARGET = Target(Path("/k"), cmdline="rdinit=/init lpj=100000")
BARE = MachineConfig(target="arm", cpu="cortex-a8", random_unruled_reads=True)


def run(reason: ExitReason.ValueType, *accesses: MmioAccess) -> RunResult:
    return RunResult(exit=Exit(reason=reason), mmio_accesses=accesses)


def context(state: MachineConfig, result: RunResult, firmware: object = AM335X) -> Context:
    return Context(firmware, TARGET, (Evaluated(state_id(state), state, result),))  # type: ignore[arg-type]


def handler_read(address: int = INTC_SIR, order: int = 0) -> MmioAccess:
    return MmioAccess(address=address, size=4, value=0x7F, pc=HANDLER + 8, order=order)


def timer_write(address: int, order: int) -> MmioAccess:
    return MmioAccess(address=address, size=4, value=1, pc=0xC0100108, is_write=True, order=order)


def tick_child(state: MachineConfig = BARE) -> Child:
    (child,) = interrupts.propose(context(state, run(ExitReason.EXIT_TIMEOUT)))
    return child


def test_a_stalled_run_gets_a_tick_acked_on_the_controllers_registers_and_jiffies_as_clock() -> None:
    child = tick_child()
    assert child.state.tick.period_ns == interrupts.TICK_PERIOD_NS
    assert (child.state.tick.ack_base, child.state.tick.ack_size) == (INTC_BASE, 0x1000)
    assert child.state.boot.cmdline == interrupts.JIFFIES_CLOCK
    assert child.detail["controller"] == INTC and "pin" in child.detail["next"]
    assert INTC in child.reason and "ti,am33xx-intc" in child.reason
    assert not BARE.HasField("tick")


def test_a_chosen_clock_source_is_kept() -> None:
    state = MachineConfig(target="arm", cpu="cortex-a8")
    state.boot.cmdline = "clocksource=dmtimer"
    assert tick_child(state).state.boot.cmdline == "clocksource=dmtimer"


def test_no_tick_for_a_run_that_ended_on_its_own_or_a_board_with_a_model_or_without_a_tree() -> None:
    assert interrupts.propose(context(BARE, run(ExitReason.EXIT_PANIC))) == []
    assert interrupts.propose(context(BARE, run(ExitReason.EXIT_USER_SPACE))) == []
    with_controller = MachineConfig(
        target="arm", cpu="cortex-a9", interrupt_controller=Device(type="a9mpcore_priv")
    )
    assert interrupts.propose(context(with_controller, run(ExitReason.EXIT_BUDGET))) == []
    no_tree = dataclasses.replace(AM335X, device_tree=None)
    assert interrupts.propose(context(BARE, run(ExitReason.EXIT_BUDGET), no_tree)) == []
    mips = MachineConfig(target="mipsel", cpu="24Kf")
    assert interrupts.propose(context(mips, run(ExitReason.EXIT_BUDGET))) == []


def test_a_gic_the_search_can_map_is_not_an_unmodelled_controller() -> None:
    gic = DtDevice(
        "/gic", ("arm,cortex-a9-gic",), ((0x1E001000, 0x1000), (0x1E000100, 0x100)), None, (), "okay"
    )
    child = DtDevice("/uart", ("arm,pl011",), ((0x10009000, 0x1000),), "/gic", (0, 5, 4), "okay")
    tree = dataclasses.replace(TREE, devices=(gic, child))
    assert interrupts.unmodelled_controller(tree, "cortex-a9") is None
    assert interrupts.unmodelled_controller(TREE, "cortex-a8") == TREE.devices[0]


def test_the_handlers_register_is_pinned_to_the_timer_the_kernel_programmed() -> None:
    ticking = tick_child().state
    result = run(
        ExitReason.EXIT_BUDGET, timer_write(0x48040038, 0), handler_read(order=1), handler_read(order=2)
    )
    (child,) = interrupts.propose(context(ticking, result))
    assert list(child.state.mmio_rules) == [MmioRule(address=INTC_SIR, constant=68)]
    assert (
        child.detail["timer"] == CLOCK_EVENT_TIMER.path and child.detail["handler"] == "omap_intc_handle_irq"
    )
    assert "omap_intc_handle_irq" in child.reason and "68" in child.reason
    # Pinned: the same run proposes nothing again.
    assert interrupts.propose(context(child.state, result)) == []


def test_of_the_touched_timers_the_one_with_most_registers_written_comes_first() -> None:
    # The clock source (only started) is first in the tree; the clock event is programmed.
    ticking = tick_child().state
    clock_source = [timer_write(0x48040038, 0)]
    clock_event = [
        timer_write(0x48042000 + offset, order) for order, offset in enumerate((0x38, 0x3C, 0x40), 1)
    ]
    result = run(ExitReason.EXIT_BUDGET, *clock_source, *clock_event, handler_read(order=9))
    assert [child.detail["value"] for child in interrupts.propose(context(ticking, result))] == [69, 68]


def test_without_a_touched_timer_every_timer_of_the_controller_is_tried() -> None:
    ticking = tick_child().state
    children = interrupts.propose(context(ticking, run(ExitReason.EXIT_BUDGET, handler_read())))
    assert [child.detail["value"] for child in children] == [68, 69]
    assert all(child.state.tick == ticking.tick for child in children)


def test_reads_outside_the_handler_or_the_controller_pin_nothing() -> None:
    ticking = tick_child().state
    elsewhere = MmioAccess(address=INTC_SIR, size=4, pc=0xC0100104)
    outside = handler_read(address=0x44E09014)
    assert interrupts.propose(context(ticking, run(ExitReason.EXIT_BUDGET, elsewhere, outside))) == []


@settings(deadline=None)
@given(st.lists(st.sampled_from([0x40, 0x44, 0x48, 0x80, 0x98]), min_size=1, max_size=6))
def test_the_pinned_register_is_the_first_unruled_one_the_handler_read(offsets: list[int]) -> None:
    ticking = tick_child().state
    reads = [handler_read(INTC_BASE + offset, order) for order, offset in enumerate(offsets)]
    children = interrupts.propose(context(ticking, run(ExitReason.EXIT_BUDGET, *reversed(reads))))
    assert {child.state.mmio_rules[-1].address for child in children} == {INTC_BASE + offsets[0]}
    assert all(len(child.state.mmio_rules) == len(ticking.mmio_rules) + 1 for child in children)
