"""Traced interrupts: a tick, and the timer's pending bit, for a kernel with no device tree.

A board-file kernel (ATAGs and a machine number, no device tree) sets its interrupt controller
up in init_IRQ (the machine's init_irq: orion_irq_init writing the mask register, the generic
chip's irq_setup_generic_chip reading it into its mask cache) and its clock event in time_init
(the machine's init_time: request_irq or setup_irq of the timer's interrupt -> __setup_irq ->
irq_startup -> unmask_irq -> the controller chip's irq_unmask, irq_gc_mask_set_bit writing the
mask cache with the timer's bit set). When that controller has no model nothing ever raises the
timer's interrupt: jiffies stand still and kernel_init waits for ever in msleep or
schedule_timeout with no timer armed. explorer.search.operators.interrupts places a tick from the
device tree's controller and timer nodes; here there are none, so the controller and the timer's
bit are read from the kernel's own accesses instead. Two steps, one boot each:

1. tick: the state stalled (the stall tier), its run reached time_init, and it wrote registers
   in init_IRQ (from the init_IRQ milestone to the next: the controller's mask or enable
   registers) of which one got a write changing one bit in time_init (from the time_init
   milestone to the next: the timer's unmask; traced_controller). The child ticks every
   interrupts.TICK_PERIOD_NS, acknowledged by the first read after each raise (the IRQ entry's
   handler reads the controller first: handle_arch_irq -> the machine's handle_irq), answers
   the registers init_IRQ wrote in the controller's page with what the kernel wrote there (an
   echo: the generic chip's mask cache is read back from them, and a handler that reads a mask
   must see the unmasks; a constant that value collapse chose from a tickless run answers a mask
   with random bits), and boots with `clocksource=jiffies` (the timer's counter has no model
   either). The detail keeps the controller's registers and the timer's bit, for step 2.
2. pin: the state has this operator's tick and its run shows the IRQ entry's handler (a
   function named as irqchip drivers and machines name theirs: *handle_irq,
   orion5x_legacy_handle_irq, omap_intc_handle_irq; interrupt_pins.handler_reads) reading
   registers in the controller's page (the page of the timer's mask register). Those init_IRQ
   wrote are masks the handler combines with what is pending (`cause & mask`): they answer what
   the kernel wrote (an echo). The others are pending (cause) registers, read as bit masks: one
   bank of 32 interrupts per register in address order, the timer's bank (the rank of its mask
   register among the masks the handler read, the only bank when it read one cause register)
   answers 1 << bit on the first read after each tick (a `tick_pending` rule), the others 0.

Measured on board files of mach-orion5x (orion5x_init_irq's legacy handler reads cause and mask;
orion_time_init unmasks bit 0): the tick alone can suffice there (random cause bits, masked by
the echoed mask, name the timer's bit now and then) and the pin makes every tick the timer's;
numbers in BENCHMARKS.md (branch `atag-tick`).

Invariants: never modifies the given states; never adds a tick beside an interrupt controller
or another tick, nor for a board with a device tree (the interrupts operator's case); a pin
child differs from its state only in the rules of registers the handler read; a state this
operator pinned proposes nothing again. Not covered: controllers whose handler reads the
pending interrupt as a number (a register holding the active interrupt's index, as
omap_intc_handle_irq's INTC_SIR), a controller whose registers span pages, an unmask that
changes several bits at once, and chained controllers (a timer
behind a second controller: the root's cause bit then names the chained controller, whose own
handler reads would need a second pin).
"""

from __future__ import annotations

from dataclasses import dataclass

from explorer.runner.analysis import milestone_window
from explorer.runner.machine_config_pb2 import Echo, MmioRule, TickPending
from explorer.runner.rehost_pb2 import RunResult
from explorer.search.operators import Child, Context
from explorer.search.operators.interrupt_pins import BANK_BITS, BANK_MASK, answer, answer_with, handler_reads
from explorer.search.operators.interrupts import JIFFIES_CLOCK, TICK_PERIOD_NS
from explorer.search.operators.kernel_arguments import STUCK_ENDINGS
from explorer.search.state import State, derive

OPERATOR = "traced_interrupts"
# The milestones whose windows hold the controller's setup and the timer's (kernel_hooks.MILESTONES).
INIT_IRQ = "init_IRQ"
TIME_INIT = "time_init"
# A controller's cause and mask registers lie in one page of its register block.
PAGE = 0x1000


@dataclass(frozen=True)
class TracedController:
    """What a run's accesses say of the root interrupt controller and the timer's input."""

    registers: tuple[int, ...]  # written in init_IRQ, in the timer's mask register's page
    mask: int  # the register time_init's write named the timer's bit in
    bit: int

    @property
    def page(self) -> int:
        return self.mask - self.mask % PAGE


def propose_tick(context: Context) -> list[Child]:
    """The tick step, asked when the state stalled (explorer.search.proposal's first stall tier)."""
    state = context.current.state
    if (
        not _board_file(context)
        or state.HasField("tick")
        or context.current.result.exit.reason not in STUCK_ENDINGS
    ):
        return []
    controller = next(
        (found for found in (traced_controller(each.result) for each in context.lineage) if found), None
    )
    if controller is None:
        return []
    arguments = f"{context.target.cmdline} {state.boot.cmdline}".split()
    chooses_clock = any(argument.startswith("clocksource=") for argument in arguments)
    return [_tick_child(state, controller, chooses_clock)]


def propose_pin(context: Context) -> list[Child]:
    """The pin step, asked for every state with the structural operators: a ticking run whose
    handler reads unpinned registers is corrected before other children run on its random
    dispatches (as interrupt_pins)."""
    if not _board_file(context) or not context.current.state.HasField("tick"):
        return []
    return _pin_children(context)


def _board_file(context: Context) -> bool:
    """An ARM state with no interrupt controller model, of a kernel booted without a device tree."""
    state = context.current.state
    return (
        state.target == "arm"
        and not state.HasField("interrupt_controller")
        and context.firmware.device_tree is None
    )


def traced_controller(result: RunResult) -> TracedController | None:
    """The controller's registers and the timer's bit, from the accesses of init_IRQ and time_init.

    The timer's unmask is the first write in time_init, into a register init_IRQ wrote, that
    changes one bit of what the kernel last wrote there or read from it: the generic chip's
    irq_gc_mask_set_bit writes its mask cache (filled from a read in irq_setup_generic_chip,
    then changed by init_IRQ's own unmasks, a chained handler's) with the timer's bit set;
    irq_gc_mask_clr_bit and enable-clear registers clear it. init_IRQ's own one-bit changes are
    its chained controllers', not the timer's, and a one-bit change in a register init_IRQ never
    wrote is the timer's own block (its interrupt enable), not the controller. The controller's
    registers are those init_IRQ wrote in the unmasked register's page. None when the run lacks
    either window (it continued from a snapshot taken later, or never reached time_init) or made
    no such write.
    """
    init_irq, time_init = milestone_window(result, INIT_IRQ), milestone_window(result, TIME_INIT)
    if init_irq is None or time_init is None:
        return None
    accesses = sorted(result.mmio_accesses, key=lambda access: access.order)
    initialised = {
        access.address
        for access in accesses
        if access.is_write and init_irq[0] <= access.icount < init_irq[1]
    }
    known: dict[int, int] = {}
    for access in accesses:
        previous = known.get(access.address)
        known[access.address] = access.value
        if not (access.is_write and access.address in initialised and previous is not None):
            continue
        changed = (access.value ^ previous) & BANK_MASK
        if time_init[0] <= access.icount < time_init[1] and changed and not changed & (changed - 1):
            page = access.address - access.address % PAGE
            registers = tuple(sorted(address for address in initialised if address - address % PAGE == page))
            return TracedController(registers, access.address, changed.bit_length() - 1)
    return None


def _tick_child(state: State, controller: TracedController, chooses_clock: bool) -> Child:
    def add_tick(child: State) -> None:
        answer_with(child, [MmioRule(address=address, echo=Echo()) for address in controller.registers])
        child.tick.period_ns = TICK_PERIOD_NS
        # Acked by the first read after each raise: the IRQ entry's handler reads the controller
        # before anything else, and which register acks on this controller is not known yet.
        child.tick.ack_base = 0
        child.tick.ack_size = 0
        if not chooses_clock:
            child.boot.cmdline = f"{child.boot.cmdline} {JIFFIES_CLOCK}".strip()

    registers = ", ".join(f"0x{address:x}" for address in controller.registers)
    reason = (
        f"the run stalled with no device tree: init_IRQ wrote interrupt controller registers {registers} "
        f"and time_init unmasked bit {controller.bit} of 0x{controller.mask:x} (the timer's interrupt): "
        f"echo them, tick every {TICK_PERIOD_NS / 1e6:g} ms, acked by the handler's first read, "
        f"time from jiffies ({JIFFIES_CLOCK})"
    )
    detail = {
        "step": "tick",
        "registers": list(controller.registers),
        "mask": controller.mask,
        "bit": controller.bit,
        "period_ns": TICK_PERIOD_NS,
        "argument": JIFFIES_CLOCK,
        "next": "the next run shows the registers the IRQ handler reads: pin them to the timer's bit",
    }
    return Child(derive(state, add_tick), OPERATOR, reason, detail)


def _traced_before(context: Context) -> tuple[TracedController, bool] | None:
    """The controller this operator's tick traced in the lineage, and whether a pin followed it."""
    pinned = False
    for evaluated in context.lineage:
        made_by = evaluated.made_by
        if made_by is None or made_by.operator != OPERATOR:
            continue
        if made_by.detail.get("step") == "pin":
            pinned = True
        elif made_by.detail.get("step") == "tick":
            detail = made_by.detail
            return TracedController(tuple(detail["registers"]), detail["mask"], detail["bit"]), pinned
    return None


def _pin_children(context: Context) -> list[Child]:
    traced = _traced_before(context)
    if traced is None or traced[1]:
        return []
    controller = traced[0]
    reads = handler_reads(context.current.result.mmio_accesses, [(controller.page, PAGE)], context.firmware)
    read_registers = list(dict.fromkeys(read.address for read in reads))
    masks = sorted(register for register in read_registers if register in controller.registers)
    causes = sorted(register for register in read_registers if register not in controller.registers)
    if not causes:
        return []
    if len(causes) == 1:
        bank = 0
    elif controller.mask in masks and len(masks) == len(causes):
        bank = masks.index(controller.mask)
    else:
        return []
    rules = [MmioRule(address=register, echo=Echo()) for register in masks]
    rules += [
        MmioRule(address=register, tick_pending=TickPending(value=1 << controller.bit % BANK_BITS))
        if index == bank
        else MmioRule(address=register, constant=0)
        for index, register in enumerate(causes)
    ]
    return [_pin_child(context.current.state, controller, rules)]


def _pin_child(state: State, controller: TracedController, rules: list[MmioRule]) -> Child:
    def apply(child: State) -> None:
        answer_with(child, rules)

    answers = ", ".join(f"0x{rule.address:x} {answer(rule)}" for rule in rules)
    reason = (
        f"the IRQ handler read the controller's registers: answer {answers}, so each tick is "
        f"bit {controller.bit} of 0x{controller.mask:x}, the timer's interrupt"
    )
    detail = {
        "step": "pin",
        "registers": {f"0x{rule.address:x}": answer(rule) for rule in rules},
        "mask": controller.mask,
        "bit": controller.bit,
        "next": "every tick now reaches the timer's handler: jiffies advance",
    }
    return Child(derive(state, apply), OPERATOR, reason, detail)
