"""Timer interrupts: a tick on a GIC input for a clock event device that has no QEMU model.

The kernel path it answers: time_init -> timer_probe calls each TIMER_OF_DECLARE init whose
compatible the device tree names (mct_init_dt, armada_370_xp_timer_init, mxc_timer_init_dt,
...). The init maps the timer's `reg`, programs it, requests its interrupt (request_irq, or
request_percpu_irq for a per-CPU PPI) and registers a clock_event_device
(clockevents_config_and_register) whose set_next_event writes the timer's compare registers;
the tick core picks the device of the highest rating. With no model behind those registers the
programmed event never fires: nothing calls the device's event_handler (tick_handle_periodic,
hrtimer_interrupt), jiffies stop and hrtimers never expire, and kernel_init waits for ever in
msleep, usleep_range or schedule_timeout with no timer armed (the run's exit says idle).

When the interrupt controller has a model (a GIC the device discovery placed), the timer's own
interrupt line can be driven. Two steps, one boot each:

1. tick: the machine's tick (MachineConfig.tick) with `irq`, a GIC interrupt ID, raises that GIC
   input every TICK_PERIOD_NS of guest time and lowers it at the first access to the timer's
   registers (`ack_reads`), where the driver's handler acknowledges: it reads its status
   (exynos4_mct_tick_isr, mxc_timer_interrupt) and clears it, or the event handler programs the
   next event. A read acknowledges too because a handler that writes its status only when it
   reads a pending bit writes nothing when the value model answers none: measured on
   exynos4412, whose collapsed status read 0, a write-only ack kept the line up and the
   interrupts stormed gic_handle_irq for 6e9 instructions. A read of the timer's counter with
   interrupts masked drops that tick (the next period raises again): jiffies slow down, nothing
   storms. The line is a level because the timers' interrupts are level-triggered in their
   trees, and QEMU's GIC latches a pulse only on an edge-triggered input (arm_gic.c
   gic_set_irq_generic): tried on the Exynos MCT, a pulse was never taken. The kernel's GIC
   driver takes the interrupt and calls the timer driver's handler, which calls the clock event's
   event_handler as the hardware's interrupt would have.
2. pending: the ticking run stalled inside the timer's handler (the exit's call stack holds the
   function a genirq flow handler called: handle_percpu_devid_irq, __handle_irq_event_percpu)
   and that handler read registers of the timer that do not read as pending. The child pins
   each such read to PENDING (every bit set): a handler that acts on its status only when a
   bit is set (`if (readl(cstat) & 1) writel(1, cstat)`) then sees its interrupt and clears it,
   as the hardware would have it.

The kernel boots with `clocksource=jiffies` (unless its command line chooses a clock): the same
timer's free-running counter has no model either, and a periodic tick that is not the
programmed event only makes time right when time is counted in ticks.

When: the state has a GIC and no tick, and its run ended idle with no timer armed (the machine's
idle end: the CPU waited for an interrupt and no QEMU timer could ever raise one) after
time_init ran. That is this mechanism's own signature, so the operator is asked with device
discovery rather than after it: where a modelled timer is the clock event (an arch timer that
a15mpcore_priv wires, an A9's TWD) a timer stays armed, and it proposes nothing.

Which timers: the device-tree nodes named as the Devicetree Specification's generic names
recommend for a timer ("timer", as in timer@10050000 or timer0@ffc02700; the kernel's trees
follow it) that the run wrote into during time_init (from the time_init milestone to the next
one: the TIMER_OF_DECLARE inits run there; a modelled node's accesses never reach the catch-all,
so only timers without a model count), whose interrupts reach the placed GIC: directly, or
through a forwarding controller (device_models.gic_route, which device placement shares: a
controller whose own interrupt parent is the GIC and whose specifiers have the GIC's three
cells, Linux's irq_domain_create_hierarchy children of the GIC such as the i.MX GPC, which
forward the same interrupt to the GIC: a chained controller with its own specifier format is
not followed). The
name matters because time_init runs of_clk_init first, whose clock controllers and analog blocks
have interrupts too: measured on imx6sl, whose timer init failed ("Failed to initialize
timer@2098000: -22"), a tick on the analog block's interrupt only cost a run. Of those, the node
with the most registers written first: a clock event is programmed (load, compare, control,
interrupt enable), a clock source only started.

What: one child per GIC interrupt of that node (SPI n is ID 32 + n, PPI n is 16 + n, as the DT's
cells say), at most MAX_CHILDREN: a timer block lists several (a global comparator and per-CPU
timers, one per channel) and which of them the tick core chose is the kernel's decision, so each
is booted and best-first keeps the one that got further. PPIs first: a PPI is a per-CPU timer,
and the tick core prefers a CPU-local clock event to a global one (kernel/time/tick-common.c,
tick_check_preferred).

Not answered here: a timer whose interrupt goes to a controller without a model (the interrupts
operator's tick on the CPU's line), a timer behind a chained controller, and a CPU whose generic
(arch) timer the DT lists: QEMU models it, a15mpcore_priv wires it, and the kernel uses it unless
a SoC timer rates higher (on 32-bit ARM the Exynos MCT does, by design: MCT_CLKEVENTS_RATING 500
above the arch timer's 450), which is then this operator's case.

Invariants: never modifies the given states; never adds a tick beside a tick; never proposes
without a GIC in the state or for an interrupt ID the GIC does not have; a tick child differs
from the expanded state in its tick (and the clock argument), a pending child in rules of the
timer's registers only; a register already PENDING is never proposed again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from explorer.firmware.model import DeviceTreeFacts, DtDevice, SymbolTable
from explorer.runner.analysis import milestone_window
from explorer.runner.config import GIC_FIRST_PPI
from explorer.runner.machine_config_pb2 import MmioRule
from explorer.runner.rehost_pb2 import MmioAccess, RunResult
from explorer.search.device_models import (
    GIC_FIRST_SPI,
    GIC_INTERRUPT_CELLS,
    GIC_SPI_TYPE,
    devices_by_path,
    gic_route,
    placement,
)
from explorer.search.operators import Child, Context
from explorer.search.operators.interrupts import JIFFIES_CLOCK, NO_TIMER_ARMED, TICK_PERIOD_NS
from explorer.search.operators.kernel_arguments import STUCK_ENDINGS
from explorer.search.state import State, derive

OPERATOR = "timer_interrupts"
# GIC binding (arm,gic): the first cell of a specifier is 0 for an SPI, 1 for a PPI; PPI n is
# interrupt ID GIC_FIRST_PPI + n.
GIC_PPI_TYPE = 1
# The milestone whose window holds the TIMER_OF_DECLARE inits (kernel_hooks.MILESTONES).
TIME_INIT = "time_init"
# The Devicetree Specification's generic node name for a timer (2.2.2, Generic Names Recommendation).
TIMER_NODE_NAME = "timer"
# The genirq flow handlers that call a driver's interrupt handler (kernel/irq/chip.c, handle.c):
# the frame they return to is the timer driver's handler.
GENIRQ_FLOW = frozenset(
    {
        "handle_percpu_devid_irq",
        "handle_percpu_irq",
        "__handle_irq_event_percpu",
        "handle_irq_event_percpu",
    }
)
# What a status register the handler reads answers in step 2: every bit set, so whichever bit
# the driver tests for its interrupt is pending.
PENDING = 0xFFFFFFFF
# Children per proposal: the interrupts of one timer block (Exynos's MCT lists a global
# comparator and a per-CPU PPI; Armada's timer one SPI per channel).
MAX_CHILDREN = 4


@dataclass(frozen=True)
class ClockEventTimer:
    """A timer node the kernel programmed in time_init, and the GIC interrupt IDs of its lines."""

    node: DtDevice
    registers_written: int
    interrupt_ids: tuple[int, ...]
    # The controller the node names, when it is not the GIC itself (a hierarchical one).
    through: str | None


def propose(context: Context) -> list[Child]:
    state, result = context.current.state, context.current.result
    tree = context.firmware.device_tree
    if state.target != "arm" or tree is None or not state.HasField("interrupt_controller"):
        return []
    if result.exit.reason not in STUCK_ENDINGS:
        return []
    if state.HasField("tick"):
        return _pending_children(context) if state.tick.irq else []
    if NO_TIMER_ARMED not in result.exit.detail:
        return []
    gic = placed_gic(state, tree)
    if gic is None:
        return []
    window = time_init_window(result)
    if window is None:
        return []
    timers = clock_event_timers(tree, gic, result.mmio_accesses, window, _irq_limit(state))
    if not timers:
        return []
    arguments = f"{context.target.cmdline} {state.boot.cmdline}".split()
    chooses_clock = any(argument.startswith("clocksource=") for argument in arguments)
    timer = timers[0]
    per_cpu_first = sorted(timer.interrupt_ids, key=lambda irq: irq >= GIC_FIRST_SPI)
    return [_child(state, timer, irq, chooses_clock) for irq in per_cpu_first[:MAX_CHILDREN]]


def placed_gic(state: State, tree: DeviceTreeFacts) -> DtDevice | None:
    """The DT node of the state's interrupt controller: the one whose model is the one placed."""
    mapped = state.interrupt_controller
    for node in tree.devices:
        if not node.reg:
            continue
        model = placement(node, tree, state.cpu)
        if (
            model is not None
            and model.interrupt_controller
            and model.type == mapped.type
            and tuple(model.mmio) == tuple(mapped.mmio)
        ):
            return node
    return None


def time_init_window(result: RunResult) -> tuple[int, int] | None:
    """Instruction counts from time_init to the next milestone (or the exit): the timer inits."""
    return milestone_window(result, TIME_INIT)


def clock_event_timers(
    tree: DeviceTreeFacts,
    gic: DtDevice,
    accesses: Iterable[MmioAccess],
    window: tuple[int, int],
    irq_limit: int,
) -> list[ClockEventTimer]:
    """Nodes named as timers, written during `window`, whose interrupts reach `gic`; the most
    registers written first."""
    start, end = window
    written = [access.address for access in accesses if access.is_write and start <= access.icount <= end]
    by_path = devices_by_path(tree)
    timers: list[ClockEventTimer] = []
    for node in tree.devices:
        if node.status not in ("okay", "ok") or not node.reg or not _named_timer(node):
            continue
        route = gic_route(node, gic.path, by_path)
        if route is None:
            continue
        ids = tuple(irq for irq in gic_interrupt_ids(node.interrupts) if irq < irq_limit)
        registers = len({address for address in written if _holds(node, address)})
        if ids and registers:
            timers.append(ClockEventTimer(node, registers, ids, None if route == gic.path else route))
    return sorted(timers, key=lambda timer: -timer.registers_written)


def gic_interrupt_ids(cells: tuple[int, ...]) -> tuple[int, ...]:
    """GIC interrupt IDs of a GIC-shaped specifier list (type, number, flags per interrupt), PPIs
    included; () when the cells are not that shape."""
    if not cells or len(cells) % GIC_INTERRUPT_CELLS:
        return ()
    ids: list[int] = []
    for start in range(0, len(cells), GIC_INTERRUPT_CELLS):
        kind, number = cells[start], cells[start + 1]
        if kind == GIC_SPI_TYPE:
            ids.append(GIC_FIRST_SPI + number)
        elif kind == GIC_PPI_TYPE and number < GIC_FIRST_SPI - GIC_FIRST_PPI:
            ids.append(GIC_FIRST_PPI + number)
        else:
            return ()
    return tuple(dict.fromkeys(ids))


def _child(state: State, timer: ClockEventTimer, irq: int, chooses_clock: bool) -> Child:
    base, size = timer.node.reg[0]

    def add_tick(child: State) -> None:
        child.tick.period_ns = TICK_PERIOD_NS
        child.tick.irq = irq
        child.tick.ack_base = base
        child.tick.ack_size = size
        child.tick.ack_reads = True
        if not chooses_clock:
            child.boot.cmdline = f"{child.boot.cmdline} {JIFFIES_CLOCK}".strip()

    kind = f"PPI {irq - GIC_FIRST_PPI}" if irq < GIC_FIRST_SPI else f"SPI {irq - GIC_FIRST_SPI}"
    route = f" through {timer.through}" if timer.through else ""
    reason = (
        f"the run stalled after time_init programmed timer {timer.node.path} "
        f"({', '.join(timer.node.compatible[:1])}: {timer.registers_written} registers written), "
        f"which has no model: raise its interrupt, GIC {kind} (ID {irq}){route}, every "
        f"{TICK_PERIOD_NS / 1e6:g} ms, acked by accesses to 0x{base:x}+0x{size:x}"
        + ("" if chooses_clock else f", time from jiffies ({JIFFIES_CLOCK})")
    )
    detail = {
        "timer": timer.node.path,
        "irq": irq,
        "through": timer.through,
        "registers_written": timer.registers_written,
        "ack": [base, size],
        "period_ns": TICK_PERIOD_NS,
    }
    return Child(derive(state, add_tick), OPERATOR, reason, detail)


def _pending_children(context: Context) -> list[Child]:
    """Step 2: the timer's registers its handler read, at the exit, pinned to PENDING."""
    state, result = context.current.state, context.current.result
    symbols = context.firmware.symbols
    handlers = {
        name
        for frame in result.call_stack.frames
        if _function(frame.return_address, symbols) in GENIRQ_FLOW
        and (name := _function(frame.function, symbols)) is not None
    }
    if not handlers:
        return []
    region = (state.tick.ack_base, state.tick.ack_base + state.tick.ack_size)
    pending = {
        rule.address
        for rule in state.mmio_rules
        if rule.WhichOneof("value") == "constant" and rule.constant == PENDING
    }
    reads = sorted(
        {
            access.address
            for access in result.mmio_accesses
            if not access.is_write
            and region[0] <= access.address < region[1]
            and access.address not in pending
            and _function(access.pc, symbols) in handlers
        }
    )
    if not reads:
        return []

    def pin(child: State) -> None:
        for address in reads:
            existing = next((rule for rule in child.mmio_rules if rule.address == address), None)
            if existing is None:
                child.mmio_rules.append(MmioRule(address=address, constant=PENDING))
            else:
                existing.CopyFrom(MmioRule(address=address, constant=PENDING))

    named = ", ".join(sorted(handlers))
    at = ", ".join(f"0x{address:x}" for address in reads)
    reason = (
        f"the ticking run stalled in the timer's interrupt handler ({named}), which read {at}: "
        f"answer pending (0x{PENDING:x}), so that the handler clears its interrupt and acknowledges the tick"
    )
    detail = {"step": "pending", "handlers": sorted(handlers), "registers": reads, "value": PENDING}
    return [Child(derive(state, pin), OPERATOR, reason, detail)]


def _function(address: int, symbols: SymbolTable) -> str | None:
    symbol = symbols.containing(address)
    return symbol.name if symbol is not None else None


def _irq_limit(state: State) -> int:
    value = state.interrupt_controller.props.fields.get("num-irq")
    return int(value.number_value) if value is not None else 0


def _named_timer(node: DtDevice) -> bool:
    """Whether the node's name is the generic one for a timer (timer@..., timer0@...)."""
    return node.path.rsplit("/", 1)[-1].startswith(TIMER_NODE_NAME)


def _holds(node: DtDevice, address: int) -> bool:
    return any(base <= address < base + size for base, size in node.reg)
