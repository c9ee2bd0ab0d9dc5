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
2. pin: the state has a tick and the run shows the handler (a function named *handle_irq, as
   irqchip drivers name their root handler) reading a register in the controller's block that
   has no rule: one child per timer of the device tree whose interrupt parent is that controller
   pins the register to the timer's interrupt number, so each tick is the timer's interrupt.
   When the run touched some timers' registers, only those, the one with the most registers
   written first: the clock event is programmed (load, match, control, interrupt enable) while
   a clock source is only started (measured on am335x: timer2, the clock event, had 8 written
   registers, timer1, the clock source, 3).

Measured on armmp + am335x-boneblack from RAM, a Cortex-A8 and random reads (with lpj=): the
tickless run idles forever after 841 initcalls; the tick's run idles reading INTC_SIR once per
tick until the stuck-read limit ends it; pinning INTC_SIR to 68 (timer2) reaches user space
(868 initcalls, 3.7e9 instructions, 10 s): three boots (the engine's generation also boots the
sibling pinned to 67, timer1, which stops in time_init).

Invariants: never modifies the given states; never adds a tick beside an interrupt controller
(the machine refuses it; device discovery, finding a controller model later, replaces the tick
with it) nor for a board without a device tree (no controller to ack on: a board
file's controller, such as Orion5x's, is not covered); never touches an address that has a rule;
a state it made proposes nothing again from the same run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from explorer.firmware.model import DeviceTreeFacts, DtDevice, Firmware
from explorer.runner.analysis import place
from explorer.runner.machine_config_pb2 import MmioRule
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
# How irqchip drivers name the root handler that reads the pending interrupt
# (omap_intc_handle_irq, orion_handle_irq, sun4i_handle_irq, ...).
HANDLER_NAME = "handle_irq"


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
        return [_tick_child(state, controller, chooses_clock)]
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


def handler_reads(accesses: list[MmioAccess], controller: DtDevice, firmware: Firmware) -> list[MmioAccess]:
    """The reads the root interrupt handler made in the controller's register block, in order."""
    base, size = controller.reg[0]
    return [
        access
        for access in sorted(accesses, key=lambda access: access.order)
        if not access.is_write
        and base <= access.address < base + size
        and HANDLER_NAME in (place(access.pc, firmware.symbols).function or "")
    ]


def timers_of(tree: DeviceTreeFacts, controller: DtDevice) -> list[DtDevice]:
    """The enabled timer nodes whose interrupts go to `controller`, in tree order."""
    return [
        node
        for node in tree.devices
        if node.interrupt_parent == controller.path
        and node.interrupts
        and node.status in ("okay", "ok")
        and any("timer" in compatible for compatible in node.compatible)
    ]


def _tick_child(state: State, controller: DtDevice, chooses_clock: bool) -> Child:
    """The tick, and jiffies as the clock unless the command line already chooses one."""
    base, size = controller.reg[0]

    def add_tick(child: State) -> None:
        child.tick.period_ns = TICK_PERIOD_NS
        child.tick.ack_base = base
        child.tick.ack_size = size
        if not chooses_clock:
            child.boot.cmdline = f"{child.boot.cmdline} {JIFFIES_CLOCK}".strip()

    reason = (
        f"the run stalled and interrupt controller {controller.path} ({', '.join(controller.compatible)}) "
        f"has no model: tick every {TICK_PERIOD_NS / 1e6:g} ms, acked by writes to 0x{base:x}+0x{size:x}, "
        f"time from jiffies ({JIFFIES_CLOCK})"
    )
    detail = {
        "step": "tick",
        "controller": controller.path,
        "ack": [base, size],
        "period_ns": TICK_PERIOD_NS,
        "argument": JIFFIES_CLOCK,
        "next": "the next run shows which register the handler reads: pin it to a timer's interrupt",
    }
    return Child(derive(state, add_tick), OPERATOR, reason, detail)


def _pin_children(context: Context, tree: DeviceTreeFacts, controller: DtDevice) -> list[Child]:
    state, result = context.current.state, context.current.result
    ruled = {rule.address for rule in state.mmio_rules}
    reads = handler_reads(list(result.mmio_accesses), controller, context.firmware)
    unruled = [read for read in reads if read.address not in ruled]
    if not unruled:
        return []
    register = unruled[0]
    handler = place(register.pc, context.firmware.symbols).function
    timers = timers_of(tree, controller)
    written = {timer.path: _registers_written(timer, result.mmio_accesses) for timer in timers}
    touched = [timer for timer in timers if _touched(timer, result.mmio_accesses)]
    children = []
    for timer in sorted(touched, key=lambda timer: -written[timer.path]) or timers:
        hwirq = timer.interrupts[0]

        def pin(child: State, value: int = hwirq) -> None:
            child.mmio_rules.append(MmioRule(address=register.address, constant=value))

        reason = (
            f"{handler} read 0x{register.address:x} to learn the pending interrupt: "
            f"answer {hwirq}, the interrupt of timer {timer.path}"
        )
        detail = {
            "step": "pin",
            "controller": controller.path,
            "register": register.address,
            "handler": handler,
            "timer": timer.path,
            "value": hwirq,
            "next": "every tick now reaches the timer's handler: jiffies advance",
        }
        children.append(Child(derive(state, pin), OPERATOR, reason, detail))
    return children


def _touched(node: DtDevice, accesses: Iterable[MmioAccess]) -> bool:
    return any(_holds(node, access.address) for access in accesses)


def _registers_written(node: DtDevice, accesses: Iterable[MmioAccess]) -> int:
    return len({access.address for access in accesses if access.is_write and _holds(node, access.address)})


def _holds(node: DtDevice, address: int) -> bool:
    return any(base <= address < base + size for base, size in node.reg)
