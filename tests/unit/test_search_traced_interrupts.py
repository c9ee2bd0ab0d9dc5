"""The traced_interrupts operator: a tick and the timer's pending bit for a kernel without a device tree.

A board-file kernel like mach-orion5x's: init_IRQ clears the main controller's mask register
(and a GPIO bank's, in another page), time_init unmasks the timer's bit in it (and writes a
bridge mask register of many bits), and the IRQ entry's handler reads cause and mask.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from explorer.firmware.model import Symbol, SymbolTable
from explorer.runner.machine_config_pb2 import Device, Echo, MachineConfig, MmioRule, TickPending
from explorer.runner.rehost_pb2 import Exit, ExitReason, Milestone, MmioAccess, RunResult
from explorer.search.operators import Child, Context, Evaluated, traced_interrupts
from explorer.search.operators.interrupts import JIFFIES_CLOCK, TICK_PERIOD_NS
from explorer.search.state import Target, state_id
from tests.unit.test_search_engine import FIRMWARE
from tests.unit.test_search_interrupts import AM335X

CAUSE, MASK = 0xF1020200, 0xF1020204
HIGH_CAUSE, HIGH_MASK = 0xF1020210, 0xF1020214
BRIDGE_MASK = 0xF1020114
GPIO_MASK = 0xF1010114
HANDLER, INIT, OTHER = 0xC0100000, 0xC0100100, 0xC0100200
SYMBOLS = SymbolTable(
    (
        Symbol(0xC0008000, "T", "start_kernel"),
        Symbol(HANDLER, "T", "machine_legacy_handle_irq"),
        Symbol(INIT, "T", "irq_gc_mask_set_bit"),
        Symbol(OTHER, "T", "orion_time_init"),
        Symbol(0xC0100300, "T", "etext"),
    ),
    "kallsyms",
    0xC0008000,
    "a test",
)
BOARD_FILE = dataclasses.replace(FIRMWARE, symbols=SYMBOLS, device_tree=None)
TARGET = Target(Path("/k"), cmdline="rdinit=/init")
BARE = MachineConfig(target="arm", cpu="arm926", random_unruled_reads=True)
# Milestones: init_IRQ runs from 100, time_init from 200, calibrate_delay from 300.
MILESTONES = (
    Milestone(name="init_IRQ", icount=100),
    Milestone(name="time_init", icount=200),
    Milestone(name="calibrate_delay", icount=300),
)


def write(address: int, value: int, icount: int, order: int) -> MmioAccess:
    return MmioAccess(
        address=address, size=4, value=value, pc=INIT, is_write=True, order=order, icount=icount
    )


def read(address: int, order: int, pc: int = HANDLER + 8) -> MmioAccess:
    return MmioAccess(address=address, size=4, value=0x5A5A5A5A, pc=pc, order=order, icount=1000 + order)


# init_IRQ clears the main mask and a GPIO bank's; time_init writes the bridge's mask (many
# bits, a register init_IRQ never wrote), then unmasks the timer's bit 0.
SETUP = (
    write(MASK, 0, 110, 0),
    write(GPIO_MASK, 0, 120, 1),
    write(BRIDGE_MASK, 0x5A5A5A5A & ~1, 210, 2),
    write(MASK, 1, 220, 3),
)


def run(
    reason: ExitReason.ValueType, *accesses: MmioAccess, milestones: tuple[Milestone, ...] = ()
) -> RunResult:
    return RunResult(exit=Exit(reason=reason, icount=10_000), mmio_accesses=accesses, milestones=milestones)


def stalled(*accesses: MmioAccess) -> RunResult:
    return run(ExitReason.EXIT_BUDGET, *accesses, milestones=MILESTONES)


def context(*lineage: Evaluated, firmware: object = BOARD_FILE) -> Context:
    return Context(firmware, TARGET, lineage)  # type: ignore[arg-type]


def evaluated(state: MachineConfig, result: RunResult, made_by: Child | None = None) -> Evaluated:
    return Evaluated(state_id(state), state, result, made_by)


def tick_child(state: MachineConfig = BARE, result: RunResult | None = None) -> Child:
    (child,) = traced_interrupts.propose_tick(context(evaluated(state, result or stalled(*SETUP))))
    return child


def test_the_register_init_irq_wrote_and_time_init_unmasked_one_bit_of_gets_a_tick() -> None:
    child = tick_child()
    assert child.state.tick.period_ns == TICK_PERIOD_NS
    # Acked by the handler's first read: which register acks is not known yet.
    assert (child.state.tick.ack_base, child.state.tick.ack_size) == (0, 0)
    assert child.state.boot.cmdline == JIFFIES_CLOCK
    # The GPIO bank init_IRQ also wrote lies in another page: not the timer's controller.
    assert child.detail == {
        "step": "tick",
        "registers": [MASK],
        "mask": MASK,
        "bit": 0,
        "period_ns": TICK_PERIOD_NS,
        "argument": JIFFIES_CLOCK,
        "next": child.detail["next"],
    }
    # The registers init_IRQ wrote answer what the kernel wrote (a mask read back, unmasks seen).
    assert list(child.state.mmio_rules) == [MmioRule(address=MASK, echo=Echo())]
    assert "0xf1020204" in child.reason and "bit 0" in child.reason
    assert not BARE.HasField("tick")


def test_the_unmask_changes_one_bit_of_a_mask_cache_read_from_the_register_after_init_irqs_own() -> None:
    # irq_setup_generic_chip reads the mask into its cache (a random value here), init_IRQ's
    # chained handlers unmask bits 8 and 9 (one-bit changes, but not time_init's), the bridge's
    # mask in time_init changes one bit of a register init_IRQ never wrote; then the timer's.
    cache = 0xBFD8DCEE
    accesses = (
        write(MASK, 0, 110, 0),
        read(MASK, 1),
        write(MASK, cache | 1 << 8, 130, 2),
        write(MASK, cache | 3 << 8, 140, 3),
        read(BRIDGE_MASK, 4),
        write(BRIDGE_MASK, 0x5A5A5A5A ^ 1 << 1, 210, 5),
        write(MASK, cache | 3 << 8 | 1, 220, 6),
    )
    assert (
        tick_child(result=stalled(*accesses)).detail["mask"],
        tick_child(result=stalled(*accesses)).detail["bit"],
    ) == (MASK, 0)


def test_an_unmask_clearing_one_bit_of_a_set_mask_names_that_bit() -> None:
    accesses = (write(MASK, 0xFFFFFFFF, 110, 0), write(MASK, 0xFFFFFFFF ^ 1 << 5, 220, 1))
    assert tick_child(result=stalled(*accesses)).detail["bit"] == 5


def test_no_tick_without_the_kernels_evidence() -> None:
    # The unmask of many bits (a mask cache from random reads) names none.
    many = (write(MASK, 0, 110, 0), write(MASK, 0x5A5A5A5B, 220, 1))
    # A one-bit change in a register init_IRQ never wrote is not an unmask of its controller.
    elsewhere = (write(MASK, 0, 110, 0), write(BRIDGE_MASK, 0, 210, 1), write(BRIDGE_MASK, 1, 220, 2))
    # The unmask outside time_init's window (a driver's, later).
    later = (write(MASK, 0, 110, 0), write(MASK, 1, 320, 1))
    for accesses in (many, elsewhere, later):
        assert traced_interrupts.propose_tick(context(evaluated(BARE, stalled(*accesses)))) == []
    # A run without the milestones (continued from a snapshot taken after time_init).
    without = run(ExitReason.EXIT_BUDGET, *SETUP)
    assert traced_interrupts.propose_tick(context(evaluated(BARE, without))) == []


def test_the_evidence_of_an_earlier_run_of_the_lineage_serves_a_continued_one() -> None:
    child_state = MachineConfig(target="arm", cpu="arm926", random_unruled_reads=True, seed=7)
    continued = run(ExitReason.EXIT_BUDGET)
    lineage = (evaluated(child_state, continued), evaluated(BARE, stalled(*SETUP)))
    (child,) = traced_interrupts.propose_tick(context(*lineage))
    assert (child.detail["mask"], child.detail["bit"]) == (MASK, 0)


def test_no_tick_for_a_device_tree_a_model_a_tick_or_a_run_that_ended_on_its_own() -> None:
    assert traced_interrupts.propose_tick(context(evaluated(BARE, stalled(*SETUP)), firmware=AM335X)) == []
    with_controller = MachineConfig(
        target="arm", cpu="cortex-a9", interrupt_controller=Device(type="a9mpcore_priv")
    )
    assert traced_interrupts.propose_tick(context(evaluated(with_controller, stalled(*SETUP)))) == []
    assert traced_interrupts.propose_tick(context(evaluated(tick_child().state, stalled(*SETUP)))) == []
    for reason in (ExitReason.EXIT_PANIC, ExitReason.EXIT_USER_SPACE):
        result = run(reason, *SETUP, milestones=MILESTONES)
        assert traced_interrupts.propose_tick(context(evaluated(BARE, result))) == []
    mips = MachineConfig(target="mipsel", cpu="24Kf")
    assert traced_interrupts.propose_tick(context(evaluated(mips, stalled(*SETUP)))) == []


def ticking(*handler_reads: MmioAccess) -> Context:
    """The tick child's run, showing the handler's reads, with its parent's run before it."""
    tick = tick_child()
    return context(
        evaluated(tick.state, run(ExitReason.EXIT_BUDGET, *handler_reads), tick),
        evaluated(BARE, stalled(*SETUP)),
    )


def test_the_handlers_cause_register_answers_the_timers_bit_once_per_tick_and_its_mask_echoes() -> None:
    # A read of the cause register outside the handler, and the handler's reads of another page,
    # are not the controller's pending interrupts.
    reads = (read(CAUSE, 10, pc=OTHER), read(CAUSE, 11), read(MASK, 12), read(GPIO_MASK - 4, 13))
    (child,) = traced_interrupts.propose_pin(ticking(*reads))
    rules = {rule.address: rule for rule in child.state.mmio_rules}
    assert rules == {
        MASK: MmioRule(address=MASK, echo=Echo()),
        CAUSE: MmioRule(address=CAUSE, tick_pending=TickPending(value=1)),
    }
    assert child.detail["registers"] == {"0xf1020204": "echo", "0xf1020200": "0x1 once per tick"}
    assert child.state.tick.period_ns == TICK_PERIOD_NS


def test_a_rule_another_operator_chose_for_the_cause_register_is_replaced_and_others_stay() -> None:
    tick = tick_child()
    state = MachineConfig()
    state.CopyFrom(tick.state)
    state.mmio_rules.extend(
        [MmioRule(address=CAUSE, constant=0x40), MmioRule(address=0xF1000000, constant=3)]
    )
    result = run(ExitReason.EXIT_BUDGET, read(CAUSE, 1), read(MASK, 2))
    (child,) = traced_interrupts.propose_pin(context(evaluated(state, result, tick)))
    rules = {rule.address: rule for rule in child.state.mmio_rules}
    assert rules[CAUSE] == MmioRule(address=CAUSE, tick_pending=TickPending(value=1))
    assert rules[0xF1000000] == MmioRule(address=0xF1000000, constant=3)


def test_banks_of_cause_and_mask_registers_pin_the_timers_bank_only() -> None:
    setup = (
        write(MASK, 0, 110, 0),
        write(HIGH_MASK, 0, 111, 1),
        write(HIGH_MASK, 1 << 3, 220, 2),
    )
    tick = tick_child(result=stalled(*setup))
    assert tick.detail["registers"] == [MASK, HIGH_MASK]
    reads = (read(CAUSE, 10), read(MASK, 11), read(HIGH_CAUSE, 12), read(HIGH_MASK, 13))
    (child,) = traced_interrupts.propose_pin(
        context(evaluated(tick.state, run(ExitReason.EXIT_BUDGET, *reads), tick))
    )
    rules = {rule.address: rule for rule in child.state.mmio_rules}
    assert rules[CAUSE] == MmioRule(address=CAUSE, constant=0)
    assert rules[HIGH_CAUSE] == MmioRule(address=HIGH_CAUSE, tick_pending=TickPending(value=1 << 3))
    assert {rules[MASK].WhichOneof("value"), rules[HIGH_MASK].WhichOneof("value")} == {"echo"}


def test_nothing_to_pin_without_handler_reads_or_a_tick_of_its_own_or_after_a_pin() -> None:
    assert traced_interrupts.propose_pin(ticking()) == []
    assert traced_interrupts.propose_pin(ticking(read(MASK, 1))) == []
    # A tick this operator did not make (none in the lineage): nothing traced to pin.
    foreign = MachineConfig()
    foreign.CopyFrom(BARE)
    foreign.tick.period_ns = TICK_PERIOD_NS
    result = run(ExitReason.EXIT_BUDGET, read(CAUSE, 1))
    assert traced_interrupts.propose_pin(context(evaluated(foreign, result))) == []
    (pin,) = traced_interrupts.propose_pin(ticking(read(CAUSE, 1), read(MASK, 2)))
    again = context(
        evaluated(pin.state, run(ExitReason.EXIT_BUDGET, read(CAUSE, 1), read(MASK, 2)), pin),
        *ticking(read(CAUSE, 1)).lineage,
    )
    assert traced_interrupts.propose_pin(again) == []
