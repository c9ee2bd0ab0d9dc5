"""Console sink: a console UART no QEMU model stands for, found from the kernel's own console writes.

Where the kernel's console is named on a UART our QEMU has no model of
(explorer.search.console.console_without_model), the kernel still writes its log there, the
way every serial console driver does: it reads the UART's status register until that says the
transmitter has room, then writes one byte to the data register. From the run's recorded
accesses inside the UART's registers:
  * the data register is the address written most often, with byte values only;
  * the status register is the register read last before those writes, and each value it
    answered there is one the driver took for "ready" (its check passed: the write followed).
One child: a sink at the data register (MachineConfig.console_sink: its bytes are the console's)
and the status register answering the ready value the driver accepted most often, always. User
space's writes then go out too, on drivers that write while the status says ready and wait for
the UART's interrupt only when it does not (which no model raises here).

What counts as a ready value: the machine sends at most EVENTS_PER_SITE accesses per site, so
a read recorded last at a site that reached that cap may not be the read just before the write
(later reads went unrecorded): such pairs are left out.

Invariants: never names a board or an address (both come from the device tree and the run);
never proposes for a state that has a sink, or a rule at the data or status register; one
child at most.
"""

from __future__ import annotations

from collections import Counter

from explorer.runner.rehost_pb2 import MmioAccess, RunResult
from explorer.search.console import console_without_model
from explorer.search.operators import Child, Context
from explorer.search.operators.collapse import EVENTS_PER_SITE
from explorer.search.state import State, derive

OPERATOR = "console_sink"
# A byte: what a data register is written.
BYTE = 0x100


def propose(context: Context) -> list[Child]:
    state, result = context.current.state, context.current.result
    node = console_without_model(context.firmware, context.target.cmdline)
    if node is None or state.console_sink:
        return []
    base, size = node.reg[0]
    accesses = [access for access in result.mmio_accesses if base <= access.address < base + size]
    data = _data_register(accesses)
    if data is None:
        return []
    ready = _ready_reads(accesses, data, _capped_last_reads(result))
    ruled = {rule.address for rule in state.mmio_rules}
    if not ready or data in ruled:
        return []
    status = Counter(address for address, _ in ready).most_common(1)[0][0]
    values = Counter(value for address, value in ready if address == status)
    # The most accepted value; among equals the first accepted (Counter keeps insertion order).
    value = values.most_common(1)[0][0]
    if status in ruled:
        return []

    def add_sink(child: State) -> None:
        child.console_sink = data
        child.mmio_rules.add(address=status, constant=value)

    reason = (
        f"the console's UART {node.path} ({', '.join(node.compatible)}) has no model: its data "
        f"register 0x{data:x}, where the kernel wrote its console's bytes, as the console, and its "
        f"status register 0x{status:x} answering 0x{value:x}, the value its driver read before a "
        f"write {values[value]} of {values.total()} times"
    )
    return [
        Child(derive(state, add_sink), OPERATOR, reason, {"data": data, "status": status, "ready": value})
    ]


def _data_register(accesses: list[MmioAccess]) -> int | None:
    """The address written most often, with bytes only (None: no such writes)."""
    writes = Counter(access.address for access in accesses if access.is_write)
    wide = {access.address for access in accesses if access.is_write and access.value >= BYTE}
    candidates = [(count, -address) for address, count in writes.items() if address not in wide]
    return -max(candidates)[1] if candidates else None


def _capped_last_reads(result: RunResult) -> set[int]:
    """Orders of the last recorded read at each site whose reads reached the machine's cap."""
    last: dict[tuple[int, int], int] = {}
    count: Counter[tuple[int, int]] = Counter()
    for access in result.mmio_accesses:
        if not access.is_write:
            site = (access.address, access.pc)
            count[site] += 1
            last[site] = max(last.get(site, access.order), access.order)
    return {last[site] for site, reads in count.items() if reads >= EVENTS_PER_SITE}


def _ready_reads(accesses: list[MmioAccess], data: int, unsure: set[int]) -> list[tuple[int, int]]:
    """(address, value) of the UART's read recorded last before each write of `data`."""
    ready = []
    previous: MmioAccess | None = None
    for access in sorted(accesses, key=lambda access: access.order):
        written = access.is_write and access.address == data
        if written and previous is not None and not previous.is_write and previous.order not in unsure:
            ready.append((previous.address, previous.value))
        previous = access
    return ready
