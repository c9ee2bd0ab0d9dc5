"""The timer_interrupts operator: a tick on the GIC input of a timer the kernel programmed in time_init."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from explorer.errors import BadInput
from explorer.firmware.model import DeviceTreeFacts, DtDevice, Symbol, SymbolTable
from explorer.runner.config import validate
from explorer.runner.machine_config_pb2 import MachineConfig, Tick
from explorer.runner.rehost_pb2 import Exit, ExitReason, Milestone, MmioAccess, RunResult
from explorer.search.device_models import placement
from explorer.search.operators import Context, Evaluated, timer_interrupts
from explorer.search.operators.interrupts import JIFFIES_CLOCK, TICK_PERIOD_NS
from explorer.search.proposal import unbootable
from explorer.search.state import Target, state_id
from tests.unit.test_search_engine import FIRMWARE

# A Cortex-A9 tree laid out as the Exynos 4 ones are: the GIC's CPU interface apart from the
# MPCore block (so the plain GIC model), a timer block with a global SPI and a per-CPU PPI, a
# clock controller the timer init also writes, a timer nobody programs, and a timer behind a
# wake-up controller that forwards GIC specifiers.
GIC = "/soc/interrupt-controller@10490000"
GIC_NODE = DtDevice(
    GIC, ("arm,cortex-a9-gic",), ((0x10490000, 0x1000), (0x10480000, 0x100)), None, (), "okay"
)
TIMER = DtDevice(
    "/soc/timer@10050000", ("vendor,mct",), ((0x10050000, 0x800),), GIC, (0, 57, 4, 1, 12, 4), "okay"
)
CLOCKS = DtDevice(
    "/soc/clock-controller@10030000", ("vendor,clock",), ((0x10030000, 0x20000),), None, (), "okay"
)
IDLE_TIMER = DtDevice("/soc/timer@10060000", ("vendor,pwm",), ((0x10060000, 0x100),), GIC, (0, 37, 4), "okay")
WAKEUP = DtDevice("/soc/gpc@20dc000", ("vendor,gpc",), ((0x20DC000, 0x4000),), GIC, (0, 89, 4), "okay", 3)
GPT = DtDevice("/soc/timer@2098000", ("vendor,gpt",), ((0x2098000, 0x4000),), WAKEUP.path, (0, 55, 4), "okay")
COMBINER = DtDevice(
    "/soc/combiner@10440000", ("vendor,combiner",), ((0x10440000, 0x1000),), GIC, (0, 0, 4), "okay", 2
)
CHAINED = DtDevice(
    "/soc/timer@101c0000", ("vendor,mct",), ((0x101C0000, 0x800),), COMBINER.path, (23, 3), "okay"
)
TREE = DeviceTreeFacts(
    source="given",
    model=None,
    compatible=(),
    memory=((0x40000000, 0x20000000),),
    devices=(GIC_NODE, CLOCKS, IDLE_TIMER, TIMER, WAKEUP, GPT, COMBINER, CHAINED),
    bootargs=None,
    stdout_path=None,
)
IMAGE = dataclasses.replace(FIRMWARE, device_tree=TREE)
TARGET = Target(Path("/k"), cmdline="rdinit=/init")
TIME_INIT, NEXT_MILESTONE = 1_000, 2_000


def gic_state() -> MachineConfig:
    state = MachineConfig(target="arm", cpu="cortex-a9", random_unruled_reads=True)
    state.ram.add(base=0x40000000, size=0x20000000)
    model = placement(GIC_NODE, TREE, "cortex-a9")
    assert model is not None
    state.interrupt_controller.CopyFrom(model.device(()))
    return state


def write(address: int, icount: int) -> MmioAccess:
    return MmioAccess(address=address, size=4, value=1, pc=0xC0100000, is_write=True, icount=icount)


IDLE = "idle: the guest waited for an interrupt with no timer armed at 96000 ms of its time"


def stalled(
    *accesses: MmioAccess, reason: ExitReason.ValueType = ExitReason.EXIT_BUDGET, detail: str = IDLE
) -> RunResult:
    milestones = [
        Milestone(name="init_IRQ", icount=500),
        Milestone(name="time_init", icount=TIME_INIT),
        Milestone(name="calibrate_delay", icount=NEXT_MILESTONE),
    ]
    exit = Exit(reason=reason, icount=9_000, detail=detail)
    return RunResult(exit=exit, milestones=milestones, mmio_accesses=accesses)


def propose(state: MachineConfig, result: RunResult, image: object = IMAGE) -> list:
    context = Context(image, TARGET, (Evaluated(state_id(state), state, result),))  # type: ignore[arg-type]
    return timer_interrupts.propose(context)


def timer_init(*nodes_and_counts: tuple[DtDevice, int]) -> list[MmioAccess]:
    """Writes during time_init: `count` registers of each node."""
    return [
        write(node.reg[0][0] + 4 * register, TIME_INIT + 10 * register)
        for node, count in nodes_and_counts
        for register in range(count)
    ]


def test_a_stalled_run_gets_a_tick_on_each_gic_interrupt_of_the_timer_time_init_programmed() -> None:
    state = gic_state()
    children = propose(state, stalled(*timer_init((CLOCKS, 9), (TIMER, 5))))
    # PPI 12 is ID 28, SPI 57 is ID 89: the per-CPU timer first, as the tick core prefers it.
    assert [child.state.tick.irq for child in children] == [28, 89]
    for child in children:
        assert child.state.tick.period_ns == TICK_PERIOD_NS
        assert (child.state.tick.ack_base, child.state.tick.ack_size) == TIMER.reg[0]
        assert child.state.tick.ack_reads
        assert child.state.boot.cmdline == JIFFIES_CLOCK
        assert child.detail["timer"] == TIMER.path and child.detail["registers_written"] == 5
        assert child.state.interrupt_controller == state.interrupt_controller
        assert TIMER.path in child.reason and "no model" in child.reason
        assert unbootable(child.state, TARGET, IMAGE) is None
    assert "PPI 12 (ID 28)" in children[0].reason
    assert not state.HasField("tick")


def test_only_writes_between_time_init_and_the_next_milestone_make_a_timer() -> None:
    later = [write(IDLE_TIMER.reg[0][0] + 4 * n, NEXT_MILESTONE + 1 + n) for n in range(8)]
    children = propose(gic_state(), stalled(*later, *timer_init((TIMER, 2))))
    assert {child.detail["timer"] for child in children} == {TIMER.path}
    # Without the time_init milestone (a run that never got there) nothing is proposed.
    result = stalled(*timer_init((TIMER, 2)))
    del result.milestones[1:]
    assert propose(gic_state(), result) == []


def test_of_the_programmed_timers_the_one_with_most_registers_written_is_ticked() -> None:
    children = propose(gic_state(), stalled(*timer_init((TIMER, 2), (IDLE_TIMER, 6))))
    assert [child.state.tick.irq for child in children] == [69]


def test_only_a_node_named_as_a_timer_counts_not_a_clock_controller_with_more_registers_written() -> None:
    # of_clk_init runs in time_init before timer_probe; a clock controller may have an interrupt.
    ccm = DtDevice(
        "/soc/clock-controller@20c4000", ("vendor,ccm",), ((0x20C4000, 0x4000),), GIC, (0, 87, 4), "okay"
    )
    image = dataclasses.replace(IMAGE, device_tree=dataclasses.replace(TREE, devices=(*TREE.devices, ccm)))
    children = propose(gic_state(), stalled(*timer_init((ccm, 15), (TIMER, 3))), image)
    assert {child.detail["timer"] for child in children} == {TIMER.path}
    assert propose(gic_state(), stalled(*timer_init((ccm, 15))), image) == []


def test_a_wake_up_controller_that_forwards_gic_specifiers_is_followed_and_a_chained_one_is_not() -> None:
    (child,) = propose(gic_state(), stalled(*timer_init((GPT, 3))))
    assert child.state.tick.irq == 32 + 55 and child.detail["through"] == WAKEUP.path
    assert WAKEUP.path in child.reason
    assert propose(gic_state(), stalled(*timer_init((CHAINED, 3)))) == []


def test_nothing_without_a_gic_with_a_tick_after_an_own_ending_or_beyond_the_gics_interrupts() -> None:
    programmed = timer_init((TIMER, 4))
    bare = MachineConfig(target="arm", cpu="cortex-a9")
    assert propose(bare, stalled(*programmed)) == []
    ticking = gic_state()
    ticking.tick.CopyFrom(Tick(period_ns=TICK_PERIOD_NS, irq=89))
    assert propose(ticking, stalled(*programmed)) == []
    for ending in (ExitReason.EXIT_PANIC, ExitReason.EXIT_USER_SPACE, ExitReason.EXIT_POWEROFF):
        assert propose(gic_state(), stalled(*programmed, reason=ending)) == []
    # Idle with a timer armed (a modelled clock event ticks), or stuck polling: not this mechanism.
    for detail in ("idle: the guest's clock reached 384000 ms", "stuck: 3000000 reads of 0x10050100", ""):
        assert propose(gic_state(), stalled(*programmed, detail=detail)) == []
    assert propose(gic_state(), stalled(*programmed), dataclasses.replace(IMAGE, device_tree=None)) == []
    small = gic_state()
    small.interrupt_controller.props["num-irq"] = 64
    assert [child.state.tick.irq for child in propose(small, stalled(*programmed))] == [28]


def test_a_chosen_clock_source_is_kept() -> None:
    state = gic_state()
    state.boot.cmdline = "clocksource=mct-frc"
    children = propose(state, stalled(*timer_init((TIMER, 4))))
    assert children and all(child.state.boot.cmdline == "clocksource=mct-frc" for child in children)


@settings(deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 200), st.integers(0, 15)), max_size=5))
def test_interrupt_ids_follow_the_gic_binding(cells: list[tuple[int, int, int]]) -> None:
    flat = tuple(value for triple in cells for value in triple)
    ids = timer_interrupts.gic_interrupt_ids(flat)
    valid = all(kind == 0 or number < 16 for kind, number, _ in cells)
    expected = [32 + number if kind == 0 else 16 + number for kind, number, _ in cells] if valid else []
    assert list(ids) == list(dict.fromkeys(expected))
    assert timer_interrupts.gic_interrupt_ids((*flat, 7)) == ()


def test_the_machine_config_takes_a_tick_on_a_gic_input_and_refuses_one_it_cannot_wire() -> None:
    state = gic_state()
    state.boot.kernel = "/k"
    state.tick.CopyFrom(Tick(period_ns=TICK_PERIOD_NS, irq=28))
    validate(state)
    state.tick.irq = 0
    with pytest.raises(BadInput, match="both drive the CPU's IRQ line"):
        validate(state)
    state.tick.irq = 15
    with pytest.raises(BadInput, match="not a GIC PPI or SPI"):
        validate(state)
    state.tick.irq = 500
    with pytest.raises(BadInput, match="not a GIC PPI or SPI"):
        validate(state)
    bare = MachineConfig()
    bare.CopyFrom(state)
    bare.ClearField("interrupt_controller")
    bare.tick.irq = 28
    with pytest.raises(BadInput, match="no GIC"):
        validate(bare)


def test_an_a9_gic_outside_the_mpcore_layout_is_the_plain_gic_at_its_two_addresses() -> None:
    model = placement(GIC_NODE, TREE, "cortex-a9")
    assert model is not None and model.interrupt_controller
    assert (model.type, model.mmio) == ("arm_gic", (0x10490000, 0x10480000))
    mpcore = DtDevice(
        "/gic", ("arm,cortex-a9-gic",), ((0x1E001000, 0x1000), (0x1E000100, 0x100)), None, (), "okay"
    )
    model = placement(mpcore, TREE, "cortex-a9")
    assert model is not None and (model.type, model.mmio) == ("a9mpcore_priv", (0x1E000000,))


HANDLER, FLOW = 0xC0200000, 0xC0300000
HANDLER_IMAGE = dataclasses.replace(
    IMAGE,
    symbols=SymbolTable(
        (
            Symbol(0xC0008000, "T", "start_kernel"),
            Symbol(HANDLER, "T", "vendor_timer_isr"),
            Symbol(FLOW, "T", "handle_percpu_devid_irq"),
            Symbol(0xC0400000, "T", "vendor_read_sched_clock"),
            Symbol(0xC0500000, "T", "_etext"),
        ),
        "kallsyms",
        0xC0008000,
        "a test",
    ),
)
STATUS = TIMER.reg[0][0] + 0x330


def ticking_state() -> MachineConfig:
    state = gic_state()
    state.tick.CopyFrom(
        Tick(period_ns=TICK_PERIOD_NS, irq=28, ack_base=TIMER.reg[0][0], ack_size=TIMER.reg[0][1])
    )
    state.mmio_rules.add(address=STATUS, constant=0)
    return state


def storming(*reads: MmioAccess, in_handler: bool = True) -> RunResult:
    # The instruction budget ends a storm: no idle, no detail.
    result = stalled(*reads, detail="")
    if in_handler:
        result.call_stack.frames.add(function=0xC0000100, return_address=HANDLER + 0x40)
        result.call_stack.frames.add(function=HANDLER, return_address=FLOW + 0x84)
    return result


def read(address: int, pc: int) -> MmioAccess:
    return MmioAccess(address=address, size=4, value=0, pc=pc, icount=5_000)


def test_a_run_stalled_in_the_timers_handler_gets_its_status_reads_pinned_to_pending() -> None:
    state = ticking_state()
    result = storming(
        read(STATUS, HANDLER + 8), read(TIMER.reg[0][0] + 0x100, 0xC0400010), read(0x10490000, HANDLER + 12)
    )
    (child,) = propose(state, result, HANDLER_IMAGE)
    assert child.detail["step"] == "pending" and child.detail["registers"] == [STATUS]
    assert [(rule.address, rule.constant) for rule in child.state.mmio_rules] == [
        (STATUS, timer_interrupts.PENDING)
    ]
    assert child.state.tick == state.tick and "vendor_timer_isr" in child.reason
    # Pinned: the same run proposes nothing again.
    assert propose(child.state, result, HANDLER_IMAGE) == []


def test_no_pending_rule_outside_the_handler_or_for_a_tick_on_the_cpus_line() -> None:
    reads = (read(STATUS, HANDLER + 8),)
    assert propose(ticking_state(), storming(*reads, in_handler=False), HANDLER_IMAGE) == []
    cpu_tick = ticking_state()
    cpu_tick.tick.irq = 0
    assert propose(cpu_tick, storming(*reads), HANDLER_IMAGE) == []
    assert propose(ticking_state(), storming(read(STATUS, 0xC0400010)), HANDLER_IMAGE) == []
