"""ISA: the PC's legacy I/O ports behind a MIPS board's I/O window (Malta and its kin).

Such boards have no device tree to read, but their I/O is the PC's: the kernel reaches port N
at a fixed window base + N, and ports mean the same device on every board (0x70/0x71 the
MC146818 real-time clock, 0x3f8..0x3ff the first 16550 UART). When a run touched those ports
through a 64 KiB-aligned window the state has no ISA bus for, one child puts an ISA bus at that
base with QEMU's models of the devices whose ports were touched. The clock matters first: Malta's
time_init estimates the CPU's frequency by counting cycles between two of its update ticks, and
random answers make that estimate nonsense (the boot then drowns in timer interrupts).
It never touches a state that already has an ISA bus, and never proposes for ARM.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from explorer.runner.analysis import place
from explorer.runner.machine_config_pb2 import Device
from explorer.search.operators import Child, Context
from explorer.search.state import State, derive

OPERATOR = "isa"
# The I/O space of an ISA bus, and so the alignment of the window it sits behind.
ISA_IO_BYTES = 0x10000
MIPS_TARGETS = ("mipsel", "mips")


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
    current = context.current
    if current.state.target not in MIPS_TARGETS or current.state.HasField("isa"):
        return []
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

    def add_bus(state: State) -> None:
        state.isa.io_base = base
        for model in models:
            device = Device(type=model.qemu_type)
            device.props.update(model.props)
            state.isa_devices.append(device)

    touched = "; ".join(
        f"{model.what} at ports 0x{model.ports.start:x}.. (by "
        f"{place(first_toucher[(base, model.qemu_type)], context.firmware.symbols)})"
        for model in models
    )
    reason = f"PC I/O ports through a window at 0x{base:x}: an ISA bus there with {touched}"
    return [Child(derive(current.state, add_bus), OPERATOR, reason, {"io_base": base})]
