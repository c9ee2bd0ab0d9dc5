"""Device interrupts: a tick on the GIC input of a device whose driver waits for its interrupt,
or the status its wait's condition reads pinned.

The kernel path it answers: a driver starts an operation on its device and sleeps until the
device's interrupt says it is done. An I2C controller's transfer (i2c_transfer -> the adapter's
master_xfer, which writes the message into the controller's FIFO, then
wait_for_completion_timeout(&msg_complete); the handler the driver registered with
request_irq reads the controller's status and calls complete()), a DMA engine's channel setup,
an MMC host's command, a SPI transfer: the waiting thread is in wait_for_completion*,
wait_event* (open-coded: the driver's own function calls schedule, explorer.runner.analysis's
"event" wait) or an msleep between reads of a status that the handler updates.
With no model behind the device's registers nothing ever raises that interrupt: each wait runs
to its timeout (or for ever, without one), and a probe that retries, or a bus with many
clients, keeps kernel_init waiting until the run's guest-time deadline; the run ends idle.

When: the state has a GIC (device discovery placed it) and no tick (the machine has one:
MachineConfig.tick; a state whose tick stands for a timer keeps it), and its run ended waiting
(out of instructions or time) with kernel_init, or a workqueue worker running a work item for
it (a deferred or asynchronous probe), blocked in one of the kernel's wait primitives (a
completion or a sleep: explorer.runner.analysis.WAIT_PRIMITIVES) or an open-coded wait_event.
Which devices: the
device-tree nodes the run's catch-all accesses fell in (so no model stands for them) whose
interrupts reach the placed GIC (device_models.gic_route: directly or through a forwarding
controller), those written by a function on the waiting thread's stack first (the driver's own
transfer function), then the most recently accessed (a driver writes its registers through
small helpers, so the access's function need not be on the stack): the device a driver touched
last before it slept is the one it waits for. At most MAX_CHILDREN, one child each.

What: the machine's tick on that node's first GIC interrupt (SPI n is ID 32 + n), raised every
TICK_PERIOD_NS of guest time as a held level and lowered at the first access to the node's
registers after it (`ack_reads`: the handler reads its status before it writes anything). The
kernel's GIC driver takes it and calls the driver's handler, which reads the status (the value
model's answer: an error bit or a done bit, either of which ends the wait: the handler completes
the transfer with its result) and calls complete() or wake_up(): the waiting thread runs on,
whatever the operation's outcome.

And, first, for the register of such a device that a function on the waiting thread's stack read
last (the wait's condition: wait_event(wq, !(readl(status) & DONE)) reads it before it sleeps and
after each wake-up, as a DMA channel's synchronize does for its end-of-transfer bit): two
children that pin it, to 0 and to every bit set, one of which satisfies a condition on one bit.
A tick does not reach such a wait when the device has an interrupt per channel and the waiting
channel's is not the node's first.
Not answered here: a state that already has a tick (the machine drives one interrupt source), a
device whose interrupt reaches a controller without a model or a chained controller, and a wait
on a timer (timer_interrupts) or on another thread (busy_workers names it; the wait it is in is
then its own).

Invariants: never modifies the given states; never proposes without a GIC, beside a tick, or for
an interrupt ID the GIC does not have; each child differs from the expanded state in its tick.
"""

from __future__ import annotations

from dataclasses import dataclass

from explorer.firmware.model import DeviceTreeFacts, DtDevice, SymbolTable
from explorer.runner.analysis import OPEN_CODED_WAIT, ThreadWait, analyse
from explorer.runner.machine_config_pb2 import MmioRule
from explorer.runner.rehost_pb2 import MmioAccess
from explorer.search.device_models import GIC_FIRST_SPI, devices_by_path, gic_interrupt_ids, gic_route
from explorer.search.operators import Child, Context
from explorer.search.operators.bitwise import with_rule
from explorer.search.operators.interrupts import TICK_PERIOD_NS
from explorer.search.operators.kernel_arguments import STUCK_ENDINGS
from explorer.search.operators.timer_interrupts import placed_gic
from explorer.search.state import State, derive

OPERATOR = "device_interrupts"
# The waits a device's interrupt ends (explorer.runner.analysis.WAIT_PRIMITIVES' kinds, and its
# open-coded wait_event).
DEVICE_WAITS = frozenset({"completion", "sleep", OPEN_CODED_WAIT})
# Tick children per proposal: the device the waiting driver touched, and the one touched before it.
MAX_CHILDREN = 2
# What a pinned condition register answers: nothing pending, or every bit set.
PINS = (0, 0xFFFFFFFF)


@dataclass(frozen=True)
class WaitedDevice:
    """A device a blocked thread's driver may wait for, and the GIC interrupt to raise for it."""

    node: DtDevice
    irq: int
    waiter: ThreadWait
    # A function on the waiting thread's stack accessed the device (else: touched last).
    by_waiter: bool


def propose(context: Context) -> list[Child]:
    state, result = context.current.state, context.current.result
    tree = context.firmware.device_tree
    if state.target != "arm" or tree is None or not state.HasField("interrupt_controller"):
        return []
    if state.HasField("tick") or result.exit.reason not in STUCK_ENDINGS:
        return []
    gic = placed_gic(state, tree)
    if gic is None:
        return []
    analysis = analyse(result, context.firmware.symbols)
    waiters = [
        wait
        for wait in (analysis.kernel_init, *analysis.workers)
        if wait is not None and DEVICE_WAITS & set(wait.waits)
    ]
    if not waiters:
        return []
    symbols = context.firmware.symbols
    accesses = list(result.mmio_accesses)
    devices = waited_devices(tree, gic, accesses, waiters, symbols, _irq_limit(state))
    pins = _condition_pins(state, accesses, waiters, symbols, {device.node.path for device in devices}, tree)
    return pins + [_child(state, device) for device in devices[:MAX_CHILDREN]]


def _condition_pins(
    state: State,
    accesses: list[MmioAccess],
    waiters: list[ThreadWait],
    symbols: SymbolTable,
    devices: set[str],
    tree: DeviceTreeFacts,
) -> list[Child]:
    """The last read by a waiting thread's own function of a waited device's register, pinned to
    each of PINS it does not answer yet."""
    on_stack = _on_stack(waiters)
    reads: list[tuple[MmioAccess, ThreadWait]] = []
    for access in sorted(accesses, key=lambda access: access.order):
        symbol = symbols.containing(access.pc)
        node = _owner(tree, access.address) if not access.is_write else None
        if symbol is not None and symbol.address in on_stack and node is not None and node.path in devices:
            reads.append((access, on_stack[symbol.address]))
    if not reads:
        return []
    last, waiter = reads[-1]
    pinned = {
        rule.constant
        for rule in state.mmio_rules
        if rule.address == last.address and rule.WhichOneof("value") == "constant"
    }
    children = []
    for value in PINS:
        if value in pinned:
            continue
        rule = MmioRule(address=last.address, constant=value)
        reason = (
            f"{waiter.thread} waits ({', '.join(waiter.waits)}) in {_where(waiter)} on a condition that read "
            f"0x{last.address:x} (0x{last.value:x}) last: answer 0x{value:x}"
        )
        detail = {"pin": last.address, "value": value, "waiter": waiter.thread}
        children.append(Child(with_rule(state, rule), OPERATOR, reason, detail))
    return children


def _on_stack(waiters: list[ThreadWait]) -> dict[int, ThreadWait]:
    """The entry addresses of the waiting threads' functions, and whose they are."""
    return {frame.function.address - frame.function.offset: wait for wait in waiters for frame in wait.frames}


def _where(waiter: ThreadWait) -> str:
    return " <- ".join(str(frame.function) for frame in waiter.frames[:4])


def waited_devices(
    tree: DeviceTreeFacts,
    gic: DtDevice,
    accesses: list[MmioAccess],
    waiters: list[ThreadWait],
    symbols: SymbolTable,
    irq_limit: int,
) -> list[WaitedDevice]:
    """Nodes the run accessed whose first interrupt reaches `gic` below `irq_limit`: those a
    waiting thread's own functions accessed first, then by their latest access, latest first."""
    by_path = devices_by_path(tree)
    on_stack = _on_stack(waiters)
    latest: dict[str, int] = {}
    touched_by: dict[str, ThreadWait] = {}
    owners: dict[int, DtDevice | None] = {}
    for access in accesses:
        if access.address not in owners:
            owners[access.address] = _owner(tree, access.address)
        node = owners[access.address]
        if node is None:
            continue
        latest[node.path] = max(latest.get(node.path, -1), access.order)
        symbol = symbols.containing(access.pc)
        if symbol is not None and symbol.address in on_stack:
            touched_by.setdefault(node.path, on_stack[symbol.address])
    found: list[WaitedDevice] = []
    for path in sorted(latest, key=lambda path: (path not in touched_by, -latest[path])):
        node = by_path[path]
        if node.status not in ("okay", "ok") or gic_route(node, gic.path, by_path) is None:
            continue
        irq = next((irq for irq in gic_interrupt_ids(node, gic.path, by_path) if irq is not None), None)
        if irq is None or irq >= irq_limit or irq < GIC_FIRST_SPI:
            continue
        found.append(WaitedDevice(node, irq, touched_by.get(path, waiters[0]), path in touched_by))
    return found


def _owner(tree: DeviceTreeFacts, address: int) -> DtDevice | None:
    """The smallest node whose `reg` holds `address`."""
    holding = [
        (size, node) for node in tree.devices for base, size in node.reg if base <= address < base + size
    ]
    return min(holding, key=lambda entry: entry[0])[1] if holding else None


def _child(state: State, device: WaitedDevice) -> Child:
    base, size = device.node.reg[0]

    def add_tick(child: State) -> None:
        child.tick.period_ns = TICK_PERIOD_NS
        child.tick.irq = device.irq
        child.tick.ack_base = base
        child.tick.ack_size = size
        child.tick.ack_reads = True

    waiter = device.waiter
    where = _where(waiter)
    how = "accessed by the waiting code" if device.by_waiter else "the device touched last"
    reason = (
        f"{waiter.thread} waits ({', '.join(waiter.waits)}) in {where}"
        + (f" (initcall {waiter.initcall})" if waiter.initcall else "")
        + f" for a device's interrupt: raise {device.node.path} ({', '.join(device.node.compatible[:1])}, "
        f"{how})'s GIC SPI {device.irq - GIC_FIRST_SPI} (ID {device.irq}) every "
        f"{TICK_PERIOD_NS / 1e6:g} ms, acked by accesses to 0x{base:x}+0x{size:x}"
    )
    detail = {
        "device": device.node.path,
        "irq": device.irq,
        "waiter": waiter.thread,
        "by_waiter": device.by_waiter,
        "ack": [base, size],
        "period_ns": TICK_PERIOD_NS,
    }
    return Child(derive(state, add_tick), OPERATOR, reason, detail)


def _irq_limit(state: State) -> int:
    value = state.interrupt_controller.props.fields.get("num-irq")
    return int(value.number_value) if value is not None else 0
