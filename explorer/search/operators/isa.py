"""ISA: the PC's legacy I/O ports behind a MIPS board's I/O window (Malta and its kin).

Such boards have no device tree to read, but their I/O is the PC's: the kernel reaches port N
at a fixed window base + N, and ports mean the same device on every board (0x70/0x71 the
MC146818 real-time clock, 0x3f8..0x3ff the first 16550 UART). When a run touched those ports
through a 64 KiB-aligned window the state has no ISA bus for, one child puts an ISA bus at that
base with QEMU's models of the devices whose ports were touched. The clock matters first: Malta's
time_init estimates the CPU's frequency by counting cycles between two of its update ticks, and
random answers make that estimate nonsense (the boot then drowns in timer interrupts).

The bus's devices' interrupts go through the PC's cascaded i8259 pair, as on the PC: when the
run programmed the pair's ports (0x20/0x21, 0xa0/0xa1) through the same window, the bus's child
has the pair too, its output on the first free CPU hardware interrupt line (the run cannot say
which line the kernel cascades it from: a later run that reaches user space without the console
moves it to the next). A kernel that learns the pending interrupt by polling the pair's ports
needs nothing more; one that reads a host bridge's interrupt acknowledge register (a PCI IACK
cycle) reads an unmapped address from its handler, which the value model answers at random, so
the console's first interrupt is never acknowledged and holds the CPU in the handler: then each
of the addresses last read by code that never read them before the pair was there gives a child
whose reads of it are the pair's acknowledge.

It never proposes for ARM, and never changes a bus, a pair or an acknowledge already placed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from explorer.runner.analysis import Place, place, reached_console, reached_user_space
from explorer.runner.machine_config_pb2 import Device
from explorer.search.operators import Child, Context
from explorer.search.state import State, derive

OPERATOR = "isa"
# The I/O space of an ISA bus, and so the alignment of the window it sits behind.
ISA_IO_BYTES = 0x10000
MIPS_TARGETS = ("mipsel", "mips")
# The i8259 pair's ports: the master's command and mask registers, then the slave's.
I8259_PORTS = (0x20, 0x21, 0xA0, 0xA1)
# CPU interrupt lines the pair's output may drive: the MIPS hardware lines (0 and 1 are software
# interrupts) but the last, where MIPS32r2 cores raise their own timer's interrupt (IntCtl.IPTI,
# 7 on every core QEMU models).
CASCADE_LINES = range(2, 7)
# Candidates for the acknowledge register: the most recently read new addresses, at most this many.
ACKNOWLEDGE_CANDIDATES = 4


@dataclass(frozen=True)
class IsaModel:
    """A QEMU ISA device model and the ports that identify it."""

    qemu_type: str
    ports: range
    props: dict[str, object]
    what: str


KNOWN_PORTS = (
    IsaModel("mc146818rtc", range(0x70, 0x72), {"base_year": 2000}, "MC146818 real-time clock"),
    IsaModel("isa-serial", range(0x3F8, 0x400), {"iobase": 0x3F8}, "16550 UART (COM1)"),
)


def propose(context: Context) -> list[Child]:
    state = context.current.state
    if state.target not in MIPS_TARGETS:
        return []
    if not state.HasField("isa"):
        return _bus(context)
    if not state.isa.HasField("i8259"):
        return _i8259(context)
    if not state.isa.i8259.acknowledge:
        return _acknowledge_or_next_line(context)
    return []


def _bus(context: Context) -> list[Child]:
    """An ISA bus where the run touched the clock's ports through a window, with the models touched."""
    current = context.current
    # (window base, model type) -> accesses, and the pc of the first
    hits: Counter[tuple[int, str]] = Counter()
    first_toucher: dict[tuple[int, str], int] = {}
    for access in current.result.mmio_accesses:
        base, port = access.address - access.address % ISA_IO_BYTES, access.address % ISA_IO_BYTES
        for model in KNOWN_PORTS:
            if port in model.ports:
                hits[(base, model.qemu_type)] += 1
                first_toucher.setdefault((base, model.qemu_type), access.pc)
    clock = KNOWN_PORTS[0].qemu_type
    clocks = [(count, base) for (base, qemu_type), count in hits.items() if qemu_type == clock]
    if not clocks:
        return []
    _, base = max(clocks)
    models = [model for model in KNOWN_PORTS if (base, model.qemu_type) in hits]
    pair = _pair_programmed(context, base)

    def add_bus(state: State) -> None:
        state.isa.io_base = base
        for model in models:
            device = Device(type=model.qemu_type)
            device.props.update(model.props)
            state.isa_devices.append(device)
        if pair is not None:
            state.isa.i8259.cpu_line = pair[0]

    touched = "; ".join(
        f"{model.what} at ports 0x{model.ports.start:x}.. (by "
        f"{place(first_toucher[(base, model.qemu_type)], context.firmware.symbols)})"
        for model in models
    )
    reason = f"PC I/O ports through a window at 0x{base:x}: an ISA bus there with {touched}"
    if pair is not None:
        reason += f"; {_pair_reason(*pair)}"
    detail = {"io_base": base} | ({"i8259_line": pair[0]} if pair is not None else {})
    return [Child(derive(current.state, add_bus), OPERATOR, reason, detail)]


def _pair_programmed(context: Context, base: int) -> tuple[int, Place] | None:
    """The first free CPU line for the i8259 pair, and where the run wrote the pair's ports through
    the window at `base` (None: it did not, or no line is free).

    Placed with the bus itself, not after it: a bus without the pair boots to user space and a
    pair without its acknowledge may not (its interrupts then arrive unanswered), and a
    best-first search would keep expanding the first and never the second."""
    ports = {base + port for port in I8259_PORTS}
    accesses = context.current.result.mmio_accesses
    programmed = next((access for access in accesses if access.is_write and access.address in ports), None)
    line = _free_line(context.current.state, after=CASCADE_LINES.start - 1)
    if programmed is None or line is None:
        return None
    return line, place(programmed.pc, context.firmware.symbols)


def _pair_reason(line: int, by: Place) -> str:
    return (
        f"the i8259 interrupt controllers' ports written through the ISA window (by {by}): the PC's "
        f"cascaded pair there, its output on CPU interrupt line {line}"
    )


def _i8259(context: Context) -> list[Child]:
    """The i8259 pair on the first free CPU line, for a bus placed without it."""
    state = context.current.state
    pair = None if state.isa.irqs else _pair_programmed(context, state.isa.io_base)
    if pair is None:
        return []
    line = pair[0]

    def add_pair(child: State) -> None:
        child.isa.i8259.cpu_line = line

    return [Child(derive(state, add_pair), OPERATOR, _pair_reason(*pair), {"i8259_line": line})]


def _acknowledge_or_next_line(context: Context) -> list[Child]:
    """Where the run reached user space, the pair's output on the next free line; else an
    acknowledge at each of the unmapped addresses last read by code that never read them before
    the pair was there.

    The console's UART raises its interrupt when the kernel opens the console, before user space:
    on the line the kernel cascades the pair from, that interrupt is either answered (the console
    works and the search is done) or, without the acknowledge the kernel reads, never
    acknowledged, and it holds the CPU in its handler from then on (the run never reaches user
    space, and the handler's reads are the last the run records). A run that reached user space
    without the console had the pair on a line the kernel does not take."""
    current = context.current
    if reached_user_space(current.result):
        return [] if reached_console(current.result) else _next_line(current.state)
    # The run to compare with: the nearest ancestor's without the pair.
    baseline = next((older for older in context.lineage[1:] if not older.state.isa.HasField("i8259")), None)
    if baseline is None:
        return []
    window = range(current.state.isa.io_base, current.state.isa.io_base + ISA_IO_BYTES)
    before = {(access.address, access.pc) for access in baseline.result.mmio_accesses if not access.is_write}
    latest: dict[int, int] = {}
    for access in current.result.mmio_accesses:
        new = not access.is_write and (access.address, access.pc) not in before
        if new and access.address not in window:
            latest[access.address] = max(latest.get(access.address, 0), access.order)
    children = []
    for address in sorted(latest, key=lambda address: -latest[address])[:ACKNOWLEDGE_CANDIDATES]:

        def add_acknowledge(child: State, address: int = address) -> None:
            child.isa.i8259.acknowledge = address

        reason = (
            f"the run stopped before user space with the i8259 pair: 0x{address:x}, among the last "
            f"addresses read by code that never read them without the pair, as the pair's interrupt "
            f"acknowledge (the pending interrupt's number, which the handler reads)"
        )
        children.append(
            Child(derive(current.state, add_acknowledge), OPERATOR, reason, {"acknowledge": address})
        )
    return children


def _next_line(state: State) -> list[Child]:
    line = _free_line(state, after=state.isa.i8259.cpu_line)
    if line is None:
        return []

    def move(child: State) -> None:
        child.isa.i8259.cpu_line = line

    reason = (
        f"user space reached without the console with the i8259 pair on CPU interrupt line "
        f"{state.isa.i8259.cpu_line} (the kernel does not take its interrupts there): its output on "
        f"line {line}"
    )
    return [Child(derive(state, move), OPERATOR, reason, {"i8259_line": line})]


def _free_line(state: State, after: int) -> int | None:
    """The first CPU line above `after` that the pair may drive and no device does."""
    taken = {
        int(irq.number_value)
        for device in state.devices
        for irq in device.irqs
        if irq.HasField("number_value")
    }
    return next((line for line in CASCADE_LINES if line > after and line not in taken), None)
