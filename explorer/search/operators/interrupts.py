"""Interrupt delivery: a timer tick for a board whose interrupt controller has no QEMU model.

Without a timer interrupt jiffies never advance: the kernel waits forever in calibrate_delay,
or later in any sleep (msleep, schedule_timeout, RCU grace periods). When the device tree's
interrupt controller has a model, device discovery maps it with the timers; when it has none
(am335x's ti,am33xx-intc, Orion's intc) there is nothing to map, and nobody writes a model of
each SoC's controller by hand. Instead the machine's tick (MachineConfig.tick) raises the CPU's
IRQ line periodically, and the kernel's own interrupt handler reads the controller's registers,
which the value model answers (mmio_rules, the random catch-all). Two steps, one boot each:

1. tick: the run stalled (its budget or deadline ran out) and the state has no interrupt
   controller and no tick: add a tick every TICK_PERIOD_NS, acknowledged by the first write into
   the controller's register block (its DT `reg`), where every controller's handler acks or
   masks; and boot with `clocksource=jiffies`. The board's timer has no model either, so its
   counter is answered by the value model: with random reads time leaps by minutes per read
   (measured on am335x: soft-lockup and RCU-stall reports until the budget ran out, fewer
   initcalls than without a tick), while jiffies advance by exactly one per tick. Once
   ticking, the handler reads which interrupt is pending from a register nobody pinned: random
   answers dispatch random interrupts.
2. pin: the state has a tick and the run shows interrupt handlers (functions named *handle*, as
   irqchip drivers name their root handler, *_handle_irq, and their chained ones,
   *_irq_handler, *_handle_cascade_irq) reading registers on the way from a timer of the
   device tree to the root controller. The way comes from the tree: the timer's interrupt
   parent, and while that is not the root, a chained controller (irq_set_chained_handler), one
   input of its own parent. One child per timer interrupt pins what those handlers read, so
   each tick is the timer's interrupt:
   - a root controller alone whose handler read one register names the pending interrupt by
     NUMBER (am335x's INTC_SIR, omap_intc_handle_irq): that register answers the number;
   - a handler that read several registers (a bank of 32 interrupts each: Orion's two cause
     registers, one per DT `reg` block; in one block, a run of consecutive words), or any
     controller on a chained way, reads a BIT MASK and dispatches each set bit
     (generic_handle_domain_irq(bank * 32 + bit)): the input's bank answers 1 << (input % 32)
     once per tick (a `tick_pending` rule: the value on the first read after each raise of
     the tick, then 0, so a handler that reads until nothing is pending stops), the other
     banks 0; and the tick is acked by the handler's first read (the timer's ack is written in
     a chained controller's block, which the root's never sees, or, for a sibling pin naming
     an interrupt the kernel never unmasked, nowhere).
   A device model's echo on such a register is replaced (its reads are a handler's, not a
   register's that keeps what was written). When the run touched some timers' registers,
   only those, the one with the most registers written first: the clock event is programmed
   (load, match, control, interrupt enable) while a clock source is only started (measured on
   am335x: timer2, the clock event, had 8 written registers, timer1, the clock source, 3); of
   a timer's interrupts, first those a one-bit write into their controller named (the unmask
   or the clear-on-write ack of the one the kernel handles). A chained handler the run never
   reached is pinned by a later pin step, for the same timer interrupt.

Measured on armmp + am335x-boneblack from RAM, a Cortex-A8 and random reads (with lpj=): the
tickless run idles forever after 841 initcalls; the tick's run idles reading INTC_SIR once per
tick until the stuck-read limit ends it; pinning INTC_SIR to 68 (timer2) reaches user space
(868 initcalls, 3.7e9 instructions, 10 s): three boots (the engine's generation also boots the
sibling pinned to 67, timer1, which stops in time_init). On marvell + kirkwood-b3 (orion-intc,
the clock event behind orion-bridge-intc): the tick's run ends at the stuck-read limit on the
root's cause register; pinning the root's bank 0 to bit 1, bank 1 to 0 and the bridge's cause
to bit 2 reaches user space (374 initcalls, 13 s).

Invariants: never modifies the given states; never adds a tick beside an interrupt controller
(the machine refuses it; device discovery, finding a controller model later, replaces the tick
with it) nor for a board without a device tree (no controller to ack on: a board
file's controller is not covered); never touches an address that has a rule but an echo; a
state it made proposes nothing again from the same run. Not covered: controllers whose
interrupt specifiers have more than one cell (bcm2835's <bank irq>), and timers whose handler
checks the timer's own status (the ARM arch timer behind bcm2836's local controller).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from explorer.firmware.model import DeviceTreeFacts, DtDevice, Firmware
from explorer.runner.analysis import place
from explorer.runner.machine_config_pb2 import MmioRule, TickPending
from explorer.runner.rehost_pb2 import MmioAccess
from explorer.search.device_models import placement
from explorer.search.operators import Child, Context
from explorer.search.operators.kernel_arguments import STUCK_ENDINGS
from explorer.search.state import State, derive

OPERATOR = "interrupts"
# One jiffy of the Debian ARM kernels: CONFIG_HZ=250 (armmp's log: "RCU calculated value of
# scheduler-enlistment delay is 25 jiffies", which is HZ / 10). A tick per jiffy is what a
# periodic clock event gives; faster only costs handler time, slower only slows sleeps down.
TICK_PERIOD_NS = 4_000_000
# Time from the tick alone: the kernel keeps jiffies as its clock source (and so a periodic tick).
JIFFIES_CLOCK = "clocksource=jiffies"
# How irqchip drivers name the handlers that read pending interrupts: the root's
# (omap_intc_handle_irq, orion_handle_irq, tzic_handle_irq, ...) and chained ones
# (orion_bridge_irq_handler, combiner_handle_cascade_irq, bcm2836_chained_handle_irq, ...).
HANDLER_NAME = "handle"
# Interrupts per register of a bit-mask controller, and its registers' stride in a bank run.
BANK_BITS = 32
BANK_MASK = (1 << BANK_BITS) - 1
WORD = 4
# Controllers between a timer and the root: deeper chains than this are not followed.
MAX_CHAIN = 4


@dataclass(frozen=True)
class Hop:
    """One controller on a timer interrupt's way to the CPU, and the input it arrives on."""

    controller: DtDevice
    input: int


@dataclass(frozen=True)
class Pin:
    """A rule for a register a handler read in a hop's controller, and how it encodes pending interrupts."""

    hop: Hop
    register: int
    rule: MmioRule
    encoding: str  # "number" or "mask"
    handler: str  # the function that read it


def propose(context: Context) -> list[Child]:
    state = context.current.state
    tree = context.firmware.device_tree
    if state.target != "arm" or state.HasField("interrupt_controller") or tree is None:
        return []
    controller = unmodelled_controller(tree, state.cpu)
    if controller is None:
        return []
    if not state.HasField("tick"):
        if context.current.result.exit.reason not in STUCK_ENDINGS:
            return []
        arguments = f"{context.target.cmdline} {state.boot.cmdline}".split()
        chooses_clock = any(argument.startswith("clocksource=") for argument in arguments)
        return [_tick_child(state, tree, controller, chooses_clock)]
    return _pin_children(context, tree, controller)


def unmodelled_controller(tree: DeviceTreeFacts, cpu: str) -> DtDevice | None:
    """The device tree's root interrupt controller (the parent most nodes name), if we have no model of it."""
    by_path = {node.path: node for node in tree.devices}
    parents = Counter(node.interrupt_parent for node in tree.devices if node.interrupt_parent in by_path)
    if not parents:
        return None
    controller = by_path[parents.most_common(1)[0][0]]
    model = placement(controller, tree, cpu) if controller.reg else None
    if not controller.reg or (model is not None and model.interrupt_controller):
        return None
    return controller


def _tick_child(state: State, tree: DeviceTreeFacts, controller: DtDevice, chooses_clock: bool) -> Child:
    """The tick, and jiffies as the clock unless the command line already chooses one."""
    chained = _chained_controllers(tree, controller)
    # A timer behind a chained controller has its interrupt acked or masked there: the root's
    # block sees no write, and a line acked only there would stay up, the handler running again
    # and again (kirkwood: a storm in time_init until the run's deadline). The handler's first
    # read acks instead: one handler run per tick.
    base, size = (0, 0) if chained else controller.reg[0]

    def add_tick(child: State) -> None:
        child.tick.period_ns = TICK_PERIOD_NS
        child.tick.ack_base = base
        child.tick.ack_size = size
        if not chooses_clock:
            child.boot.cmdline = f"{child.boot.cmdline} {JIFFIES_CLOCK}".strip()

    acked = (
        f"acked by the handler's first read (timers behind chained {', '.join(chained)})"
        if chained
        else f"acked by writes to 0x{base:x}+0x{size:x}"
    )
    reason = (
        f"the run stalled and interrupt controller {controller.path} ({', '.join(controller.compatible)}) "
        f"has no model: tick every {TICK_PERIOD_NS / 1e6:g} ms, {acked}, time from jiffies ({JIFFIES_CLOCK})"
    )
    detail = {
        "step": "tick",
        "controller": controller.path,
        "ack": [base, size],
        "period_ns": TICK_PERIOD_NS,
        "argument": JIFFIES_CLOCK,
        "next": "the next run shows which registers the handlers read: pin them to a timer's interrupt",
    }
    return Child(derive(state, add_tick), OPERATOR, reason, detail)


def _chained_controllers(tree: DeviceTreeFacts, root: DtDevice) -> list[str]:
    """The chained controllers between the device tree's timers and `root`, in tree order."""
    ways = (interrupt_path(tree, timer, timer.interrupts[0], root) or [] for timer in timers_of(tree, root))
    return list(dict.fromkeys(hop.controller.path for way in ways for hop in way[1:]))


def _pin_children(context: Context, tree: DeviceTreeFacts, root: DtDevice) -> list[Child]:
    state, result = context.current.state, context.current.result
    # An echo (the devices operator's "a register reads what was written") is a guess a handler's
    # read outranks; any other rule was chosen for what the run showed, and stays.
    ruled = {rule.address for rule in state.mmio_rules if rule.WhichOneof("value") != "echo"}
    pinned = _pinned_before(context)
    timers = timers_of(tree, root)
    written = {timer.path: _registers_written(timer, result.mmio_accesses) for timer in timers}
    touched = [timer for timer in timers if _touched(timer, result.mmio_accesses)]
    children = []
    for timer in sorted(touched, key=lambda timer: -written[timer.path]) or timers:
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


def timers_of(tree: DeviceTreeFacts, root: DtDevice) -> list[DtDevice]:
    """The enabled timer nodes whose interrupts reach `root`, directly or through chained controllers."""
    return [
        node
        for node in tree.devices
        if node.interrupts
        and node.status in ("okay", "ok")
        and _is_timer(node)
        and interrupt_path(tree, node, node.interrupts[0], root) is not None
    ]


def _is_timer(node: DtDevice) -> bool:
    """A timer by its compatible ("marvell,orion-timer") or by the generic node name the device
    tree specification gives timers (timer@53fa0000: "fsl,imx53-gpt")."""
    name = node.path.rsplit("/", 1)[-1].split("@", 1)[0]
    return name == "timer" or any("timer" in compatible for compatible in node.compatible)


def interrupt_path(tree: DeviceTreeFacts, timer: DtDevice, hwirq: int, root: DtDevice) -> list[Hop] | None:
    """Each controller from `root` down to the timer's, with the input the timer's interrupt arrives on.

    A chained controller (a node that is an interrupt parent and has interrupts of its own) is one
    input of its parent: the root's handler dispatches that input, whose handler
    (irq_set_chained_handler) reads the chained controller's cause register in turn. Each
    controller's input is the first cell of the interrupt it names (one-cell specifiers, as
    these controllers' bindings give); None when the timer's interrupt never reaches `root`.
    """
    by_path = {node.path: node for node in tree.devices}
    path = []
    node, input_ = by_path.get(timer.interrupt_parent or ""), hwirq
    while node is not None and len(path) < MAX_CHAIN:
        path.append(Hop(node, input_))
        if node.path == root.path:
            return path[::-1]
        if not node.interrupts or not node.reg:
            return None
        node, input_ = by_path.get(node.interrupt_parent or ""), node.interrupts[0]
    return None


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
        for read in handler_reads(accesses, hop.controller, firmware):
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
    accesses: Iterable[MmioAccess], controller: DtDevice, firmware: Firmware
) -> list[MmioAccess]:
    """The reads interrupt handlers made in the controller's register blocks, in order."""
    return [
        access
        for access in sorted(accesses, key=lambda access: access.order)
        if not access.is_write
        and _holds(controller, access.address)
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
        if access.is_write and controller is not None and _holds(controller, access.address)
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
        replaced = {pin.register for pin in pins}
        kept = [rule for rule in child.mmio_rules if rule.address not in replaced]
        del child.mmio_rules[:]
        child.mmio_rules.extend([*kept, *(pin.rule for pin in pins)])
        child.tick.ack_base, child.tick.ack_size = ack_base, ack_size

    answers = ", ".join(f"{pin.handler}'s 0x{pin.register:x} {_answer(pin.rule)}" for pin in pins)
    chain = " -> ".join(f"{hop.controller.path} input {hop.input}" for hop in path)
    reason = (
        f"interrupt handlers read pending interrupts: answer {answers}, "
        f"so each tick is timer {timer.path}'s interrupt {hwirq} ({chain})"
    )
    detail = {
        "step": "pin",
        "controller": path[0].controller.path,
        "chain": [[hop.controller.path, hop.input] for hop in path],
        "registers": {f"0x{pin.register:x}": [pin.encoding, _answer(pin.rule)] for pin in pins},
        "register": pins[0].register,
        "handler": pins[0].handler,
        "timer": timer.path,
        "value": hwirq,
        "ack": [ack_base, ack_size],
        "next": "every tick now reaches the timer's handler: jiffies advance",
    }
    return Child(derive(state, apply), OPERATOR, reason, detail)


def _answer(rule: MmioRule) -> str:
    if rule.WhichOneof("value") == "tick_pending":
        return f"0x{rule.tick_pending.value:x} once per tick"
    return f"{rule.constant}"


def _touched(node: DtDevice, accesses: Iterable[MmioAccess]) -> bool:
    return any(_holds(node, access.address) for access in accesses)


def _registers_written(node: DtDevice, accesses: Iterable[MmioAccess]) -> int:
    return len({access.address for access in accesses if access.is_write and _holds(node, access.address)})


def _holds(node: DtDevice, address: int) -> bool:
    return any(base <= address < base + size for base, size in node.reg)
