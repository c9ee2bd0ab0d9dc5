"""The interrupts and interrupt_pins operators: a tick for a stalled board, then the handlers' reads pinned.

am335x (a root controller naming the pending interrupt by number) and an Orion-like tree (a root
with two banks of cause bits, a chained controller behind its input 1, the timer behind that).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from explorer.firmware.model import DeviceTreeFacts, DtDevice, Symbol, SymbolTable
from explorer.runner.machine_config_pb2 import Device, Echo, MachineConfig, MmioRule, TickPending
from explorer.runner.rehost_pb2 import Exit, ExitReason, MmioAccess, RunResult
from explorer.search import proposal
from explorer.search.operators import Child, Context, Evaluated, interrupt_pins, interrupts
from explorer.search.proposal import OperatorPhases
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


def test_a_ticking_state_gets_no_second_tick_and_a_state_without_one_no_pin() -> None:
    ticking = tick_child().state
    assert interrupts.propose(context(ticking, run(ExitReason.EXIT_BUDGET, handler_read()))) == []
    assert interrupt_pins.propose(context(BARE, run(ExitReason.EXIT_BUDGET, handler_read()))) == []


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


IDLE = "idle: the guest waited for an interrupt with no timer armed at 96000 ms of its time"
STUCK = "stuck: 3000000 reads of 0x44e31010 (last at pc 0xc127a390)"


def settled(state: MachineConfig, result: RunResult, operator: str = "collapse") -> Context:
    """`state` with `result`, made by `operator` from a parent that idled the same way."""
    made_by = Child(state, operator, "a test")
    parent = MachineConfig(target="arm", cpu="cortex-a8")
    lineage = (
        Evaluated(state_id(state), state, result, made_by),
        Evaluated(state_id(parent), parent, result),
    )
    return Context(AM335X, TARGET, lineage)


def test_a_run_idle_with_no_timer_armed_gets_its_tick_with_device_discovery_once_settled() -> None:
    idle = RunResult(exit=Exit(reason=ExitReason.EXIT_BUDGET, detail=IDLE))
    stuck = RunResult(exit=Exit(reason=ExitReason.EXIT_BUDGET, detail=STUCK))
    (child,) = interrupts.propose_when_idle(settled(BARE, idle))
    assert child.state == tick_child().state
    (_,) = interrupts.propose_when_idle(settled(BARE, idle, "devices"))
    # Nothing in the lineage answered the run's reads yet: the tick would dispatch at random
    # into handlers reading random values; device discovery and collapse go first.
    assert interrupts.propose_when_idle(context(BARE, idle)) == []
    assert interrupts.propose_when_idle(settled(BARE, idle, "kernel_arguments")) == []
    # Any other stall asks the tick only in the stall tier.
    assert interrupts.propose_when_idle(settled(BARE, stuck)) == []
    assert len(interrupts.propose(context(BARE, stuck))) == 1
    # The same guards: no second tick, none beside a controller.
    assert interrupts.propose_when_idle(settled(child.state, idle)) == []
    with_controller = MachineConfig(
        target="arm", cpu="cortex-a9", interrupt_controller=Device(type="a9mpcore_priv")
    )
    assert interrupts.propose_when_idle(settled(with_controller, idle)) == []


def test_the_idle_runs_tick_is_proposed_before_the_state_is_stalled_and_a_stuck_runs_after() -> None:
    idle = RunResult(exit=Exit(reason=ExitReason.EXIT_BUDGET, detail=IDLE))
    stuck = RunResult(exit=Exit(reason=ExitReason.EXIT_BUDGET, detail=STUCK))
    state = MachineConfig()
    state.CopyFrom(BARE)
    state.ram.add(base=0x80000000, size=0x20000000)
    at_idle = proposal.propose(settled(state, idle), OperatorPhases(), lambda _: False, 40)
    assert not at_idle.stalled and not at_idle.dropped
    assert [child.operator for child in at_idle.children] == [interrupts.OPERATOR]
    at_stuck = proposal.propose(settled(state, stuck), OperatorPhases(), lambda _: False, 40)
    assert at_stuck.stalled and interrupts.OPERATOR in [child.operator for child in at_stuck.children]


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
    (child,) = interrupt_pins.propose(context(ticking, result))
    assert list(child.state.mmio_rules) == [MmioRule(address=INTC_SIR, constant=68)]
    assert (
        child.detail["timer"] == CLOCK_EVENT_TIMER.path and child.detail["handler"] == "omap_intc_handle_irq"
    )
    assert "omap_intc_handle_irq" in child.reason and "68" in child.reason
    # Pinned: the same run proposes nothing again.
    assert interrupt_pins.propose(context(child.state, result)) == []


def test_of_the_touched_timers_the_one_with_most_registers_written_comes_first() -> None:
    # The clock source (only started) is first in the tree; the clock event is programmed.
    ticking = tick_child().state
    clock_source = [timer_write(0x48040038, 0)]
    clock_event = [
        timer_write(0x48042000 + offset, order) for order, offset in enumerate((0x38, 0x3C, 0x40), 1)
    ]
    result = run(ExitReason.EXIT_BUDGET, *clock_source, *clock_event, handler_read(order=9))
    # The structural tier pins the clock event alone; the stall tier, later, the others.
    assert [child.detail["value"] for child in interrupt_pins.propose(context(ticking, result))] == [69]
    assert [child.detail["value"] for child in interrupt_pins.propose_others(context(ticking, result))] == [
        68
    ]


def test_timers_with_as_many_registers_written_are_pinned_together_and_untouched_ones_not() -> None:
    ticking = tick_child().state
    both = [timer_write(0x48040038, 0), timer_write(0x48042038, 1)]
    result = run(ExitReason.EXIT_BUDGET, *both, handler_read(order=2))
    assert [child.detail["value"] for child in interrupt_pins.propose(context(ticking, result))] == [68, 69]
    assert interrupt_pins.propose_others(context(ticking, result)) == []
    one = run(ExitReason.EXIT_BUDGET, timer_write(0x48040038, 0), handler_read(order=1))
    assert interrupt_pins.propose_others(context(ticking, one)) == []


def test_without_a_touched_timer_every_timer_of_the_controller_is_tried() -> None:
    ticking = tick_child().state
    children = interrupt_pins.propose(context(ticking, run(ExitReason.EXIT_BUDGET, handler_read())))
    assert [child.detail["value"] for child in children] == [68, 69]
    assert all(child.state.tick == ticking.tick for child in children)
    assert interrupt_pins.propose_others(context(ticking, run(ExitReason.EXIT_BUDGET, handler_read()))) == []


def test_reads_outside_the_handler_or_the_controller_pin_nothing() -> None:
    ticking = tick_child().state
    elsewhere = MmioAccess(address=INTC_SIR, size=4, pc=0xC0100104)
    outside = handler_read(address=0x44E09014)
    assert interrupt_pins.propose(context(ticking, run(ExitReason.EXIT_BUDGET, elsewhere, outside))) == []


def test_a_lone_controller_whose_handler_read_one_register_gets_the_interrupt_number() -> None:
    ticking = tick_child().state
    child = interrupt_pins.propose(context(ticking, run(ExitReason.EXIT_BUDGET, handler_read())))[0]
    assert child.detail["registers"] == {f"0x{INTC_SIR:x}": ["number", "68"]}
    assert (child.state.tick.ack_base, child.state.tick.ack_size) == (INTC_BASE, 0x1000)


# Orion as its device tree says it: a root with two banks (one `reg` block each), a chained
# controller on the root's input 1, the timer's two interrupts on the chained one's inputs 1 and 2.
ROOT = "/ocp/interrupt-controller@20200"
ROOT_CAUSE, ROOT_CAUSE_HIGH = 0xF1020200, 0xF1020210
BRIDGE = "/ocp/bridge-interrupt-ctrl@20110"
BRIDGE_CAUSE, BRIDGE_MASK = 0xF1020110, 0xF1020114
ORION_TIMER = DtDevice(
    "/ocp/timer@20300", ("marvell,orion-timer",), ((0xF1020300, 0x20),), BRIDGE, (1, 2), "okay"
)
ORION_TREE = dataclasses.replace(
    TREE,
    devices=(
        DtDevice(BRIDGE, ("marvell,orion-bridge-intc",), ((0xF1020110, 0x8),), ROOT, (1,), "okay"),
        DtDevice(
            ROOT, ("marvell,orion-intc",), ((ROOT_CAUSE, 0x10), (ROOT_CAUSE_HIGH, 0x10)), None, (), "okay"
        ),
        ORION_TIMER,
        DtDevice("/ocp/serial@12000", ("ns16550a",), ((0xF1012000, 0x100),), ROOT, (33,), "okay"),
        DtDevice("/ocp/gpio@10100", ("marvell,orion-gpio",), ((0xF1010100, 0x40),), ROOT, (35,), "okay"),
    ),
)
ROOT_HANDLER, BRIDGE_HANDLER = 0xC0100200, 0xC0100300
ORION = dataclasses.replace(
    FIRMWARE,
    symbols=SymbolTable(
        (
            Symbol(0xC0008000, "T", "start_kernel"),
            Symbol(ROOT_HANDLER, "T", "orion_handle_irq"),
            Symbol(BRIDGE_HANDLER, "T", "orion_bridge_irq_handler"),
            Symbol(0xC0100400, "T", "irq_gc_mask_set_bit"),
        ),
        "kallsyms",
        0xC0008000,
        "a test",
    ),
    device_tree=ORION_TREE,
)
ARM926 = MachineConfig(target="arm", cpu="arm926", random_unruled_reads=True)


def read_by(handler: int, address: int, order: int) -> MmioAccess:
    return MmioAccess(address=address, size=4, value=0xFFFFFFFF, pc=handler + 4, order=order)


def unmask(value: int, order: int) -> MmioAccess:
    return MmioAccess(address=BRIDGE_MASK, size=4, value=value, pc=0xC0100404, is_write=True, order=order)


def orion_tick() -> MachineConfig:
    (child,) = interrupts.propose(context(ARM926, run(ExitReason.EXIT_BUDGET), ORION))
    assert child.detail["controller"] == ROOT
    return child.state


def test_a_tick_for_timers_behind_a_chained_controller_is_acked_by_the_handlers_first_read() -> None:
    # The timer's interrupt is acked in the bridge's block, a write the root's never sees.
    (child,) = interrupts.propose(context(ARM926, run(ExitReason.EXIT_BUDGET), ORION))
    assert (child.state.tick.ack_base, child.state.tick.ack_size) == (0, 0)
    assert BRIDGE in child.reason and "first read" in child.reason


TICKING_ORION_RUN = run(
    ExitReason.EXIT_BUDGET,
    unmask(0b100, 0),  # request_irq of the clock event (the timer's interrupt 2) unmasks its bit
    read_by(ROOT_HANDLER, ROOT_CAUSE, 1),
    read_by(ROOT_HANDLER, ROOT_CAUSE_HIGH, 2),
    read_by(BRIDGE_HANDLER, BRIDGE_CAUSE, 3),
)


def test_a_timer_behind_a_chained_controller_gets_each_cause_register_pinned_to_its_bit() -> None:
    first, second = interrupt_pins.propose(context(orion_tick(), TICKING_ORION_RUN, ORION))
    assert first.detail["chain"] == [[ROOT, 1], [BRIDGE, 2]]
    assert list(first.state.mmio_rules) == [
        MmioRule(address=ROOT_CAUSE, tick_pending=TickPending(value=1 << 1)),
        MmioRule(address=ROOT_CAUSE_HIGH, constant=0),
        MmioRule(address=BRIDGE_CAUSE, tick_pending=TickPending(value=1 << 2)),
    ]
    # The timer's interrupt is acked (handle_edge_irq) in the chained controller, where the root
    # controller sees no write: the handler's first read acks the tick.
    assert (first.state.tick.ack_base, first.state.tick.ack_size) == (0, 0)
    assert "orion_bridge_irq_handler" in first.reason and "0x4 once per tick" in first.reason
    # The timer's other interrupt, never unmasked, comes second.
    assert second.detail["chain"] == [[ROOT, 1], [BRIDGE, 1]]
    assert interrupt_pins.propose(context(first.state, TICKING_ORION_RUN, ORION)) == []


def test_a_clear_on_write_ack_names_the_interrupt_handled_and_a_mask_of_many_bits_names_none() -> None:
    # irq_gc_ack_clr_bit writes every bit but the acked one; a mask cache of random reads, many.
    ack = MmioAccess(address=BRIDGE_CAUSE, size=4, value=0xFFFFFFFB, pc=0xC0100404, is_write=True)
    acked = run(ExitReason.EXIT_BUDGET, unmask(0x3344BFA6, 0), ack, *TICKING_ORION_RUN.mmio_accesses[1:])
    assert [
        child.detail["value"] for child in interrupt_pins.propose(context(orion_tick(), acked, ORION))
    ] == [
        2,
        1,
    ]
    unnamed = run(ExitReason.EXIT_BUDGET, unmask(0x3344BFA6, 0), *TICKING_ORION_RUN.mmio_accesses[1:])
    assert [
        child.detail["value"] for child in interrupt_pins.propose(context(orion_tick(), unnamed, ORION))
    ] == [
        1,
        2,
    ]


def test_a_register_a_device_model_echoes_is_pinned_and_one_the_run_chose_stays() -> None:
    state = orion_tick()
    state.mmio_rules.extend(
        [MmioRule(address=BRIDGE_CAUSE, echo=Echo()), MmioRule(address=ROOT_CAUSE_HIGH, constant=7)]
    )
    first = interrupt_pins.propose(context(state, TICKING_ORION_RUN, ORION))[0]
    rules = {rule.address: rule for rule in first.state.mmio_rules}
    assert rules[BRIDGE_CAUSE] == MmioRule(address=BRIDGE_CAUSE, tick_pending=TickPending(value=1 << 2))
    assert rules[ROOT_CAUSE_HIGH] == MmioRule(address=ROOT_CAUSE_HIGH, constant=7)
    assert len(first.state.mmio_rules) == len(state.mmio_rules) + 1


def test_a_chained_handler_seen_only_after_the_root_is_pinned_follows_the_same_timer() -> None:
    # The first ticking run never dispatched the chained controller: only the root is pinned.
    root_only = run(ExitReason.EXIT_BUDGET, unmask(0b100, 0), *TICKING_ORION_RUN.mmio_accesses[1:3])
    tick = orion_tick()
    children = interrupt_pins.propose(context(tick, root_only, ORION))
    pinned = children[0]
    assert {rule.address for rule in pinned.state.mmio_rules} == {ROOT_CAUSE, ROOT_CAUSE_HIGH}
    # Its run shows the chained handler; the next pin keeps the lineage's timer interrupt (2)
    # even when the run's writes would now rank the other first.
    later = run(ExitReason.EXIT_BUDGET, unmask(0b10, 0), *TICKING_ORION_RUN.mmio_accesses[1:])
    lineage = (
        Evaluated(state_id(pinned.state), pinned.state, later, pinned),
        Evaluated(state_id(tick), tick, root_only),
    )
    (bridge,) = interrupt_pins.propose(Context(ORION, TARGET, lineage))
    assert list(bridge.state.mmio_rules)[-1] == MmioRule(
        address=BRIDGE_CAUSE, tick_pending=TickPending(value=1 << 2)
    )
    assert bridge.detail["value"] == 2
    # The lineage's timer is followed in the structural tier; the stall tier adds no other.
    assert interrupt_pins.propose_others(Context(ORION, TARGET, lineage)) == []


def test_a_timer_whose_interrupts_never_reach_the_root_is_not_pinned() -> None:
    orphan = DtDevice("/ocp/timer@30000", ("vendor,timer",), ((0xF1030000, 0x20),), "/nowhere", (4,), "okay")
    tree = dataclasses.replace(ORION_TREE, devices=(*ORION_TREE.devices, orphan))
    root = tree.devices[1]
    assert interrupts.interrupt_path(tree, orphan, 4, root) is None
    assert interrupts.timers_of(tree, root) == [ORION_TIMER]


@settings(deadline=None)
@given(st.integers(min_value=0, max_value=63), st.sampled_from([1, 2, 4]))
def test_one_block_of_banked_registers_answers_the_bit_in_the_inputs_bank_only(
    hwirq: int, groups: int
) -> None:
    # One reg block holding a run of two words per register kind (cause, enable, ...): word k
    # of each run serves interrupts 32k..32k+31, as the TZIC's HIPND0..3 and INTSEC0..3 do.
    timer = dataclasses.replace(CLOCK_EVENT_TIMER, interrupts=(hwirq,))
    firmware = dataclasses.replace(
        AM335X, device_tree=dataclasses.replace(TREE, devices=(TREE.devices[0], timer))
    )
    reads = [
        handler_read(INTC_BASE + 0x80 * group + 4 * bank, order=2 * group + bank)
        for group in range(groups)
        for bank in range(2)
    ]
    (child,) = interrupt_pins.propose(
        context(tick_child().state, run(ExitReason.EXIT_BUDGET, *reads), firmware)
    )
    answered = {rule.address: rule for rule in child.state.mmio_rules}
    for read in reads:
        bank = (read.address - INTC_BASE) % 0x80 // 4
        if bank == hwirq // 32:
            assert answered[read.address].tick_pending.value == 1 << hwirq % 32
        else:
            assert answered[read.address] == MmioRule(address=read.address, constant=0)


def test_a_timer_is_known_by_its_generic_node_name_too() -> None:
    # i.MX's general-purpose timer: "fsl,imx53-gpt", whose node the tree names timer@53fa0000.
    gpt = DtDevice("/soc/timer@53fa0000", ("fsl,imx53-gpt",), ((0x53FA0000, 0x4000),), INTC, (39,), "okay")
    pwm = DtDevice("/soc/pwm@53fb4000", ("fsl,imx53-pwm",), ((0x53FB4000, 0x4000),), INTC, (61,), "okay")
    tree = dataclasses.replace(TREE, devices=(TREE.devices[0], gpt, pwm))
    assert interrupts.timers_of(tree, tree.devices[0]) == [gpt]


def test_a_tick_answers_the_controllers_echoed_registers_from_the_value_model() -> None:
    # The devices operator's echo on a cause register answers the handler its own last ack.
    state = MachineConfig(target="arm", cpu="arm926", random_unruled_reads=True)
    state.mmio_rules.extend(
        [
            MmioRule(address=BRIDGE_CAUSE, echo=Echo()),
            MmioRule(address=ROOT_CAUSE + 4, echo=Echo()),
            MmioRule(address=0xF1020300, echo=Echo()),
            MmioRule(address=ROOT_CAUSE_HIGH, constant=5),
        ]
    )
    (child,) = interrupts.propose(context(state, run(ExitReason.EXIT_BUDGET), ORION))
    assert [rule.address for rule in child.state.mmio_rules] == [0xF1020300, ROOT_CAUSE_HIGH]
    assert child.detail["unechoed"] == [BRIDGE_CAUSE, ROOT_CAUSE + 4]
