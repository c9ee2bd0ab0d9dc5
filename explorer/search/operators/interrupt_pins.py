"""Interrupt pins: each tick the timer's interrupt, for a board whose interrupt controller has no model.

The second step after explorer.search.operators.interrupts' tick: the state has a tick and
its run shows interrupt handlers (functions named *handle*, as irqchip drivers name their root
handler, *_handle_irq, and their chained ones, *_irq_handler, *_handle_cascade_irq) reading
registers of the controllers on the way from a timer of the device tree to the root
(interrupts.interrupt_path). Asked for every state with the structural operators: a ticking
run whose handlers read unpinned registers is corrected at once, as collapse corrects values,
before other children run on its random dispatches (dove-cubox, asked only when stalled: five
such runs, each to the instruction budget, and no pin in 3 minutes). One child per timer
interrupt pins what those handlers read, so each tick is the timer's interrupt:
- a root controller alone whose handler read one register names the pending interrupt by
  NUMBER (am335x's INTC_SIR, omap_intc_handle_irq): that register answers the number;
- a handler that read several registers (a bank of 32 interrupts each: Orion's two cause
  registers, one per DT `reg` block; in one block, a run of consecutive words, the TZIC's
  HIPND0..3 and INTSEC0..3), or any controller on a chained way, reads a BIT MASK and
  dispatches each set bit (generic_handle_domain_irq(bank * 32 + bit)): the input's bank
  answers 1 << (input % 32) once per tick (a `tick_pending` rule: the value on the first read
  after each raise of the tick, then 0, so a handler that reads until nothing is pending
  stops), the other banks 0; and the tick is acked by the handler's first read (the timer's
  ack is written in a chained controller's block, which the root's never sees, or, for a
  sibling pin naming an interrupt the kernel never unmasked, nowhere).
A device model's echo on such a register is replaced (its reads are a handler's, not a
register's that keeps what was written). When the run touched some timers' registers, only
those: in the structural tier (`propose`) the timers with the most registers written, in the
stall tier (`propose_others`, once nothing structural is new for the ticking state) the others,
most written first. The kernel path: time_init -> timer_probe runs the timers'
TIMER_OF_DECLARE inits; the clock event's (clockevents_config_and_register, then
set_periodic/set_next_event) programs load, match, control and interrupt enable, while a
clock source is only started and other timers are only reset by their bus glue (ti-sysc's
sysc_reset: one write). So the clock event is the timer with the most written registers; pinning
every timer at once made a generation of storming or stalling runs beside the one that boots
(BENCHMARKS.md, "boneblack's tick early"). Of a timer's
interrupts, first those a one-bit write into their controller named (the unmask or the
clear-on-write ack of the one the kernel handles). A chained handler the run never reached is
pinned by a later pin step, for the same timer interrupt.

Measured: am335x (INTC_SIR pinned to 68: user space, 868 initcalls); kirkwood-b3 (root bank 0 bit
1, bank 1 0, the bridge's cause bit 2: user space, 374 initcalls, 2 s cpu); dove-cubox (the same
driver pair, root input 0); imx53-qsb (TZIC HIPND1 and INTSEC1 bit 7: user space, 868 initcalls).

Invariants: never modifies the given states; never touches an address that has a rule but an
echo; a state it made proposes nothing again from the same run. Not covered: controllers whose
interrupt specifiers have more than one cell (bcm2835's <bank irq>: the tree's raw cells are
read one per interrupt), and timers whose handler checks the timer's own status (the ARM arch
timer behind bcm2836's local controller).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from explorer.firmware.model import DeviceTreeFacts, DtDevice, Firmware
from explorer.runner.analysis import place
from explorer.runner.machine_config_pb2 import MmioRule, TickPending
from explorer.runner.rehost_pb2 import MmioAccess
from explorer.search.operators import Child, Context
from explorer.search.operators.interrupts import Hop, holds, interrupt_path, timers_of, unmodelled_root
from explorer.search.state import State, derive

OPERATOR = "interrupt_pins"
# How irqchip drivers name the handlers that read pending interrupts: the root's
# (omap_intc_handle_irq, orion_handle_irq, tzic_handle_irq, ...) and chained ones
# (orion_bridge_irq_handler, combiner_handle_cascade_irq, bcm2836_chained_handle_irq, ...).
HANDLER_NAME = "handle"
# Interrupts per register of a bit-mask controller, and its registers' stride in a bank run.
BANK_BITS = 32
BANK_MASK = (1 << BANK_BITS) - 1
WORD = 4


@dataclass(frozen=True)
class Pin:
    """A rule for a register a handler read in a hop's controller, and how it encodes pending interrupts."""

    hop: Hop
    register: int
    rule: MmioRule
    encoding: str  # "number" or "mask"
    handler: str  # the function that read it


def propose(context: Context) -> list[Child]:
    """The structural tier: one child per interrupt of the likeliest clock event (the timers with
    the most registers written, or every timer when the run touched none) whose way's handler
    reads are not all pinned yet, for a ticking state."""
    return _pin_children(context, likeliest=True)


def propose_others(context: Context) -> list[Child]:
    """The stall tier: the same for every other timer the run touched, most registers written first."""
    return _pin_children(context, likeliest=False)


def _pin_children(context: Context, likeliest: bool) -> list[Child]:
    found = unmodelled_root(context)
    if found is None or not context.current.state.HasField("tick"):
        return []
    tree, root = found
    state, result = context.current.state, context.current.result
    # An echo (the devices operator's "a register reads what was written") is a guess a handler's
    # read outranks; any other rule was chosen for what the run showed, and stays.
    ruled = {rule.address for rule in state.mmio_rules if rule.WhichOneof("value") != "echo"}
    pinned = _pinned_before(context)
    candidates = _candidate_timers(tree, root, result.mmio_accesses)
    most = candidates[0][1] if candidates else 0
    # A later pin step follows the timer an earlier one chose, in the structural tier only.
    chosen = [
        timer
        for timer, written in candidates
        if (pinned is None and (written == most) == likeliest)
        or (pinned is not None and likeliest and timer.path == pinned[0])
    ]
    children = []
    for timer in chosen:
        for hwirq in _interrupts_handled_first(timer, tree, result.mmio_accesses):
            if pinned is not None and pinned != (timer.path, hwirq):
                continue
            path = interrupt_path(tree, timer, hwirq, root)
            if path is None:
                continue
            pins = pins_for(path, result.mmio_accesses, context.firmware, ruled)
            if pins:
                children.append(_pin_child(state, timer, hwirq, path, pins))
    return children


def pins_for(
    path: list[Hop], accesses: Iterable[MmioAccess], firmware: Firmware, ruled: set[int]
) -> list[Pin]:
    """The rules that make a tick the timer's interrupt, for each register a handler read and no rule answers.

    A root controller whose handler read one register of its block, with nothing chained, names
    the pending interrupt by NUMBER (am335x's INTC_SIR): that register answers the interrupt. A
    handler that read several registers (one per bank: orion_handle_irq's cause registers, the
    i.MX TZIC's HIPND and INTSEC words), or a path through a chained controller, reads a BIT MASK:
    the bank of the input answers 1 << (input % 32) once per tick (a `tick_pending` rule, so a
    handler that reads until nothing is pending sees the interrupt once), every other bank 0.
    """
    pins = []
    for hop in path:
        handlers: dict[int, str] = {}
        for read in handler_reads(accesses, hop.controller.reg, firmware):
            handlers.setdefault(read.address, place(read.pc, firmware.symbols).function or "")
        registers = list(handlers)
        unruled = [register for register in registers if register not in ruled]
        if not unruled:
            continue
        if len(path) == 1 and len(registers) == 1:
            pins.append(
                Pin(
                    hop,
                    unruled[0],
                    MmioRule(address=unruled[0], constant=hop.input),
                    "number",
                    handlers[unruled[0]],
                )
            )
            continue
        for register, bank in _banks(hop.controller, registers).items():
            if register not in unruled:
                continue
            if bank == hop.input // BANK_BITS:
                rule = MmioRule(address=register, tick_pending=TickPending(value=1 << hop.input % BANK_BITS))
            else:
                rule = MmioRule(address=register, constant=0)
            pins.append(Pin(hop, register, rule, "mask", handlers[register]))
    return pins


def handler_reads(
    accesses: Iterable[MmioAccess], blocks: Iterable[tuple[int, int]], firmware: Firmware
) -> list[MmioAccess]:
    """The reads interrupt handlers made in a controller's register blocks ((base, size) each), in order."""
    blocks = tuple(blocks)
    return [
        access
        for access in sorted(accesses, key=lambda access: access.order)
        if not access.is_write
        and any(base <= access.address < base + size for base, size in blocks)
        and HANDLER_NAME in (place(access.pc, firmware.symbols).function or "")
    ]


def _banks(controller: DtDevice, registers: list[int]) -> dict[int, int]:
    """Which bank of 32 interrupts each read register serves.

    A controller with several `reg` blocks has one bank per block (Orion's two cause registers);
    in one block, a run of consecutive words read by the handler is one word per bank, in order
    (a register per bank of 32: the TZIC's HIPND0..3, INTSEC0..3).
    """
    if len(controller.reg) > 1:
        return {
            register: next(
                index for index, (base, size) in enumerate(controller.reg) if base <= register < base + size
            )
            for register in registers
        }
    banks: dict[int, int] = {}
    for register in sorted(registers):
        previous = banks.get(register - WORD)
        banks[register] = 0 if previous is None else previous + 1
    return banks


def _interrupts_handled_first(
    timer: DtDevice, tree: DeviceTreeFacts, accesses: Iterable[MmioAccess]
) -> list[int]:
    """The timer's interrupts, first those a write into its controller's block named alone.

    A timer node may list several interrupts of which the kernel requests one (orion-timer: the
    clock event is the second). The kernel names the ones it handles in writes of one bit: an
    unmask or enable (irq_gc_mask_set_bit with nothing else enabled: 1 << bit) or a
    clear-on-write ack (irq_gc_ack_clr_bit: every bit but that one). A write of several bits
    (a mask cache holding random reads) names none.
    """
    by_path = {node.path: node for node in tree.devices}
    controller = by_path.get(timer.interrupt_parent or "")
    named = {
        bit
        for access in accesses
        if access.is_write and controller is not None and holds(controller, access.address)
        for bit in range(BANK_BITS)
        if access.value & BANK_MASK in (1 << bit, BANK_MASK ^ 1 << bit)
    }
    interrupts = list(dict.fromkeys(timer.interrupts))
    return sorted(interrupts, key=lambda hwirq: hwirq % BANK_BITS not in named)


def _pinned_before(context: Context) -> tuple[str, int] | None:
    """The timer and interrupt an earlier pin of this lineage chose: later pins follow the same path."""
    for evaluated in context.lineage:
        made_by = evaluated.made_by
        if made_by is not None and made_by.operator == OPERATOR and made_by.detail.get("step") == "pin":
            return made_by.detail["timer"], made_by.detail["value"]
    return None


def _pin_child(state: State, timer: DtDevice, hwirq: int, path: list[Hop], pins: list[Pin]) -> Child:
    """The pins; with bit masks, the tick acknowledged by the handler's first read.

    A bit-mask handler's ack or mask may be written into another controller (a chained one) or
    never (a pin naming an interrupt the kernel left masked, which nothing dispatches): acked
    only by a write, the line would stay up and the handler run again and again. The first read
    acks it once per tick, and a tick_pending register answers its first read after each raise
    whether the tick was acked since or not.
    """
    masks = any(pin.encoding == "mask" for pin in pins)
    ack_base, ack_size = (0, 0) if masks else path[-1].controller.reg[0]

    def apply(child: State) -> None:
        answer_with(child, [pin.rule for pin in pins])
        child.tick.ack_base, child.tick.ack_size = ack_base, ack_size

    answers = ", ".join(f"{pin.handler}'s 0x{pin.register:x} {answer(pin.rule)}" for pin in pins)
    chain = " -> ".join(f"{hop.controller.path} input {hop.input}" for hop in path)
    reason = (
        f"interrupt handlers read pending interrupts: answer {answers}, "
        f"so each tick is timer {timer.path}'s interrupt {hwirq} ({chain})"
    )
    detail = {
        "step": "pin",
        "controller": path[0].controller.path,
        "chain": [[hop.controller.path, hop.input] for hop in path],
        "registers": {f"0x{pin.register:x}": [pin.encoding, answer(pin.rule)] for pin in pins},
        "register": pins[0].register,
        "handler": pins[0].handler,
        "timer": timer.path,
        "value": hwirq,
        "ack": [ack_base, ack_size],
        "next": "every tick now reaches the timer's handler: jiffies advance",
    }
    return Child(derive(state, apply), OPERATOR, reason, detail)


def answer(rule: MmioRule) -> str:
    """What a pin's rule answers, for people: "0x4 once per tick", "0", "echo"."""
    if rule.WhichOneof("value") == "echo":
        return "echo"
    if rule.WhichOneof("value") == "tick_pending":
        return f"0x{rule.tick_pending.value:x} once per tick"
    return f"{rule.constant}"


def _candidate_timers(
    tree: DeviceTreeFacts, root: DtDevice, accesses: Sequence[MmioAccess]
) -> list[tuple[DtDevice, int]]:
    """The timers behind `root` the run touched (every one, when it touched none), each with the
    registers the run wrote in it, the most first."""
    timers = timers_of(tree, root)
    touched = [timer for timer in timers if _touched(timer, accesses)] or timers
    written = [(timer, _registers_written(timer, accesses)) for timer in touched]
    return sorted(written, key=lambda entry: -entry[1])


def _touched(node: DtDevice, accesses: Iterable[MmioAccess]) -> bool:
    return any(holds(node, access.address) for access in accesses)


def _registers_written(node: DtDevice, accesses: Iterable[MmioAccess]) -> int:
    return len({access.address for access in accesses if access.is_write and holds(node, access.address)})


def answer_with(state: State, rules: list[MmioRule]) -> None:
    """`rules` in place of whatever answered their registers before."""
    replaced = {rule.address for rule in rules}
    kept = [rule for rule in state.mmio_rules if rule.address not in replaced]
    del state.mmio_rules[:]
    state.mmio_rules.extend([*kept, *rules])
