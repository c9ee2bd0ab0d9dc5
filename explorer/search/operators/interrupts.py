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
2. pin (explorer.search.operators.interrupt_pins): the state has a tick; its run shows the
   handlers' reads, which the pins answer with the timer's interrupt.

When the tick is asked: a run that stalled anywhere (stuck in a poll, out of budget) asks it
with the cheap fixes, once the structural operators have nothing new (`propose`, the stall
tier): a stuck poll is more often a device's than time's. A run that ended idle with no timer
armed asks it with device discovery (`propose_when_idle`, the structural tier): that end is
this mechanism's own signature. The kernel path: rest_init -> kernel_init waits (msleep,
schedule_timeout, wait_for_completion_timeout in an initcall or deferred_probe_initcall) while
the idle task halts in arch_cpu_idle (wfi) until an interrupt; with no controller model and no
tick nothing in the machine can raise one (the machine's idle end: rehosting_end_run_if_idle
found no QEMU timer armed), so no other operator's child of that state, which keeps the same
machine, gets past it. Asked only in the stall tier, the tick came on am335x after device
discovery and value collapse had each had their generations on the idle state and its
children (which idle at the same point): 13 generations, 233 s at low load; in the 5-minute
development-set bench (2026-12-08) it came in generation 5 and the pin generation that follows
did not finish within the budget. On the idle signature it is asked once a device-discovery or
value-collapse step is in the state's lineage: until pinned, the tick dispatches interrupts at
random (a random INTC_SIR number, random cause bits), and each handler a dispatch reaches
reads its device (a status, a chained controller's cause and mask); with those reads random
too, handlers misbehave (which read, per handler, was not traced). Measured: am335x's tick on
the lpj= state (nothing answered yet) died of "Fatal exception in interrupt", on its
collapsed child it idled ticking and the pin step followed; kirkwood-b3's tick on its first
state stormed in "unexpected IRQ trap at vector 00" to the 6e9-instruction budget (125-138 s
of a 3-minute search), on the device-discovery child it reached user space (the stall tier's
order, 12 s).

This module also owns the way a timer's interrupt takes to the root (interrupt_path): the
timer's interrupt parent and, while that is not the root, a chained controller (a node that is
an interrupt parent and has interrupts of its own, irq_set_chained_handler), one input of its
own parent. A tick for timers behind a chained controller is acked by the handler's first read:
their ack is written in the chained controller's block, which the root's never sees (acked only
in the root's, kirkwood-b3's tick run stormed in time_init until the run's deadline).

Measured on armmp + am335x-boneblack from RAM, a Cortex-A8 and random reads (with lpj=): the
tickless run idles forever after 841 initcalls; the tick's run idles reading INTC_SIR once per
tick until the stuck-read limit ends it; pinning INTC_SIR to 68 (timer2) reaches user space
(868 initcalls, 3.7e9 instructions, 10 s): three boots (the engine's generation also boots the
sibling pinned to 67, timer1, which stops in time_init). On marvell + kirkwood-b3 (orion-intc,
the clock event behind orion-bridge-intc), acked by writes to the root the tick's run stormed
in time_init; acked by the first read, with the controllers' echoes answered by the value
model, its random cause bits name the timer now and then and the search reaches user space in
4 runs (12 s); interrupt_pins makes every tick the timer's where they do not (dove-cubox).

Invariants: never modifies the given states; never adds a tick beside an interrupt controller
(the machine refuses it; device discovery, finding a controller model later, replaces the tick
with it) nor for a board without a device tree (no controller to ack on: a board file's
controller is not covered), nor a second tick.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from explorer.firmware.model import DeviceTreeFacts, DtDevice
from explorer.search.device_models import placement
from explorer.search.operators import Child, Context, collapse, devices
from explorer.search.operators.kernel_arguments import STUCK_ENDINGS
from explorer.search.state import State, derive

OPERATOR = "interrupts"
# One jiffy of the Debian ARM kernels: CONFIG_HZ=250 (armmp's log: "RCU calculated value of
# scheduler-enlistment delay is 25 jiffies", which is HZ / 10). A tick per jiffy is what a
# periodic clock event gives; faster only costs handler time, slower only slows sleeps down.
TICK_PERIOD_NS = 4_000_000
# Time from the tick alone: the kernel keeps jiffies as its clock source (and so a periodic tick).
JIFFIES_CLOCK = "clocksource=jiffies"
# Controllers between a timer and the root: deeper chains than this are not followed.
MAX_CHAIN = 4
# How the machine's idle end says that nothing could ever interrupt the guest
# (native/rehosting_machine/rehosting_clock.c, rehosting_end_run_if_idle).
NO_TIMER_ARMED = "with no timer armed"
# The operators whose step in a lineage makes the run's device reads answered by rules (device
# models, collapsed values) rather than at random: the tick's random dispatches then reach
# handlers that read those (see the module docstring).
SETTLING_OPERATORS = (devices.OPERATOR, collapse.OPERATOR)


@dataclass(frozen=True)
class Hop:
    """One controller on a timer interrupt's way to the CPU, and the input it arrives on."""

    controller: DtDevice
    input: int


def propose_when_idle(context: Context) -> list[Child]:
    """The tick step for a run that ended idle with no timer armed (the structural tier), on a
    state whose lineage device discovery or value collapse already answered."""
    if NO_TIMER_ARMED not in context.current.result.exit.detail:
        return []
    settled = any(
        evaluated.made_by is not None and evaluated.made_by.operator in SETTLING_OPERATORS
        for evaluated in context.lineage
    )
    return propose(context) if settled else []


def propose(context: Context) -> list[Child]:
    """The tick step, asked when the state stalled (explorer.search.proposal's first stall tier)."""
    state = context.current.state
    root = unmodelled_root(context)
    if root is None or state.HasField("tick") or context.current.result.exit.reason not in STUCK_ENDINGS:
        return []
    arguments = f"{context.target.cmdline} {state.boot.cmdline}".split()
    chooses_clock = any(argument.startswith("clocksource=") for argument in arguments)
    return [_tick_child(state, root[0], root[1], chooses_clock)]


def unmodelled_root(context: Context) -> tuple[DeviceTreeFacts, DtDevice] | None:
    """The device tree and its root controller without a model, for an ARM state with no controller."""
    state = context.current.state
    tree = context.firmware.device_tree
    if state.target != "arm" or state.HasField("interrupt_controller") or tree is None:
        return None
    controller = unmodelled_controller(tree, state.cpu)
    return None if controller is None else (tree, controller)


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
    # A device model's echo on these controllers' registers answers a handler its own last
    # write (the ack of the previous interrupt, or 0 from init): a cause register that never
    # names the timer, so the tick's run could tell nothing apart. The value model answers them.
    echoed = [
        rule.address
        for rule in state.mmio_rules
        if rule.WhichOneof("value") == "echo"
        and any(holds(node, rule.address) for node in (controller, *chained))
    ]
    # A timer behind a chained controller has its interrupt acked or masked there: the root's
    # block sees no write, and a line acked only there would stay up, the handler running again
    # and again (kirkwood: a storm in time_init until the run's deadline). The handler's first
    # read acks instead: one handler run per tick.
    base, size = (0, 0) if chained else controller.reg[0]

    def add_tick(child: State) -> None:
        kept = [rule for rule in child.mmio_rules if rule.address not in echoed]
        del child.mmio_rules[:]
        child.mmio_rules.extend(kept)
        child.tick.period_ns = TICK_PERIOD_NS
        child.tick.ack_base = base
        child.tick.ack_size = size
        if not chooses_clock:
            child.boot.cmdline = f"{child.boot.cmdline} {JIFFIES_CLOCK}".strip()

    paths = [node.path for node in chained]
    acked = (
        f"acked by the handler's first read (timers behind chained {', '.join(paths)})"
        if chained
        else f"acked by writes to 0x{base:x}+0x{size:x}"
    )
    reason = (
        f"the run stalled and interrupt controller {controller.path} ({', '.join(controller.compatible)}) "
        f"has no model: tick every {TICK_PERIOD_NS / 1e6:g} ms, {acked}, time from jiffies ({JIFFIES_CLOCK})"
        + (f"; {len(echoed)} echoed controller registers answered by the value model" if echoed else "")
    )
    detail = {
        "step": "tick",
        "controller": controller.path,
        "ack": [base, size],
        "period_ns": TICK_PERIOD_NS,
        "argument": JIFFIES_CLOCK,
        "unechoed": echoed,
        "next": "the next run shows which registers the handlers read: pin them to a timer's interrupt",
    }
    return Child(derive(state, add_tick), OPERATOR, reason, detail)


def _chained_controllers(tree: DeviceTreeFacts, root: DtDevice) -> list[DtDevice]:
    """The chained controllers between the device tree's timers and `root`, in tree order."""
    ways = (interrupt_path(tree, timer, timer.interrupts[0], root) or [] for timer in timers_of(tree, root))
    chained = {hop.controller.path: hop.controller for way in ways for hop in way[1:]}
    return list(chained.values())


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


def holds(node: DtDevice, address: int) -> bool:
    return any(base <= address < base + size for base, size in node.reg)
