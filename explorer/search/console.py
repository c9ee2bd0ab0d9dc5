"""The console UART: which device-tree node the kernel writes its console to, and its QEMU model.

Linux chooses its console from the kernel arguments first (the last `console=ttyXXN`, the port
numbered N by its driver, which numbers a DT port by its `serialN` alias), else from the
device tree's /chosen `stdout-path` (a node path or an alias, with options after a colon), else
from its first registered console. `console_uart` follows the same order to the node, and
places our QEMU model of it (explorer.search.device_models) at its address. Where neither names a
console it takes the tree's `serial0` alias, the board's first serial port, and says which
`console=` argument makes the kernel write there (the model's tty name, e.g. ttyAMA0 for a
PL011), so the kernel does not pick a virtual terminal nobody sees.

The machine feeds QEMU's first serial port (the runner's console, explorer.runner.launch) to the
first device with a serial port in the state's device order (native/rehosting_machine), so the
console UART must come first: the initial state puts it there (explorer.search.initial).

Invariants: a pure function of the firmware's device tree and the given kernel arguments; it
never guesses an address (the node comes from the tree, the model from its compatible) and never
names a board. It does not handle boards without a device tree (ATAGs): it returns None. Where
the named console's UART has no model, `console_without_model` gives its node, whose data
register the console_sink operator finds from the kernel's own console writes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from explorer.firmware.model import Arch, DtDevice, Firmware
from explorer.search.device_models import OTHER_TTY_PREFIX, TTY_PREFIX, Placement, placement
from explorer.search.state import State

# QEMU's ISA 16550 and the ISA IRQ of the first one (COM1), the console of PC-style MIPS boards.
ISA_SERIAL = "isa-serial"
ISA_SERIAL_IRQ = 4
# The alias of the board's first serial port, the console when nothing names one.
FIRST_SERIAL_ALIAS = "serial0"
# console=ttyS2,115200n8: the tty's name and its number.
_CONSOLE_ARGUMENT = re.compile(r"^console=(?P<name>tty[A-Za-z]+)(?P<index>\d+)(?:,.*)?$")
# UART models do not depend on the CPU (only interrupt controllers' do): no CPU is named.
_ANY_CPU = ""


@dataclass(frozen=True)
class ConsoleUart:
    """The UART the kernel's console is on, and the model that stands for it."""

    node: DtDevice
    placement: Placement
    # How it was found, for people: "stdout-path serial2:115200n8", "console=ttyS0", ...
    found_by: str
    # The kernel argument that makes the kernel write its console there (None: the firmware's
    # own arguments or device tree already do).
    argument: str | None = None


def console_uart(firmware: Firmware, cmdline: str = "") -> ConsoleUart | None:
    """The kernel's console UART and its QEMU model, or None when it cannot be placed.

    `cmdline`: the kernel arguments the machine passes (they replace the tree's bootargs, as
    QEMU's loader does when it has any).
    """
    named = _named_console(firmware, cmdline)
    if named is not None:
        node, found_by, tty = named
        model = _model(node, firmware)
        if node is None or model is None or (tty is not None and tty not in _tty_names(node, model)):
            return None
        return ConsoleUart(node, model, found_by)
    tree = firmware.device_tree
    if tree is None or firmware.arch != Arch.ARM:
        return None
    node = {node.path: node for node in tree.devices}.get(tree.aliases.get(FIRST_SERIAL_ALIAS, ""))
    model = _model(node, firmware)
    if node is None or model is None:
        return None
    argument = f"console={TTY_PREFIX[model.type]}0"
    return ConsoleUart(node, model, f"alias {FIRST_SERIAL_ALIAS} (no console named)", argument)


def console_without_model(firmware: Firmware, cmdline: str = "") -> DtDevice | None:
    """The UART the kernel's console is named on (a `console=` argument, or stdout-path) when our
    QEMU has no model of it: the console_sink operator makes a sink of its data register."""
    named = _named_console(firmware, cmdline)
    node = named[0] if named is not None else None
    if (
        node is None
        or node.status not in ("okay", "ok")
        or not node.reg
        or _model(node, firmware) is not None
    ):
        return None
    return node


def _named_console(firmware: Firmware, cmdline: str) -> tuple[DtDevice | None, str, str | None] | None:
    """The node the kernel's arguments or the tree's stdout-path name as the console (None: not
    in the tree), how it was named, and the tty name a `console=` argument gave it (None: named
    by stdout-path); None when nothing names a console."""
    tree = firmware.device_tree
    if tree is None or firmware.arch != Arch.ARM:
        return None
    by_path = {node.path: node for node in tree.devices}
    arguments = (cmdline or tree.bootargs or "").split()
    named = [match for argument in arguments if (match := _CONSOLE_ARGUMENT.match(argument))]
    if named:
        # The last console= is the one /dev/console is.
        last = named[-1]
        return by_path.get(tree.aliases.get(f"serial{last['index']}", "")), last.group(0), last["name"]
    if tree.stdout_path:
        target = tree.stdout_path.split(":", 1)[0]
        node = by_path.get(target if target.startswith("/") else tree.aliases.get(target, ""))
        return node, f"stdout-path {tree.stdout_path}", None
    return None


def console_interrupt_wired(state: State) -> bool:
    """Does the machine deliver the interrupt of its console UART (the first device with a serial
    port, in the machine's order: memory-mapped devices, then ISA devices)?

    The kernel writes its own lines to the console by polling, but user space's writes wait for
    the UART's transmit interrupt: without it the marker is never printed, however the boot goes
    (a board whose interrupt controller has no model: the search's tick stands in for the timer's
    interrupt only).
    """
    for device in state.devices:
        if device.type in TTY_PREFIX:
            return any(irq.WhichOneof("kind") == "number_value" for irq in device.irqs)
    for device in state.isa_devices:
        if device.type == ISA_SERIAL:
            lines = state.isa.irqs
            through_pair = state.isa.HasField("i8259")
            return through_pair or (
                len(lines) > ISA_SERIAL_IRQ and lines[ISA_SERIAL_IRQ].WhichOneof("kind") == "number_value"
            )
    return False


def console_interrupt_reachable(state: State) -> bool:
    """Does the machine deliver its console UART's interrupt, or can a descendant's?

    An ISA UART's can always be: the isa operator puts the PC's i8259 pair between the ISA IRQs
    and the CPU once the kernel programs it (explorer.search.operators.isa), so a state with the
    UART and not yet the pair is no finish line at user space. A memory-mapped UART's is
    delivered or not by the state's interrupt controller.
    """
    return console_interrupt_wired(state) or any(device.type == ISA_SERIAL for device in state.isa_devices)


def console_expected(firmware: Firmware, cmdline: str = "") -> bool:
    """Can a search place the console at all: a console UART with a model, a MIPS board's ISA
    COM1 (the PC's first 16550, which the isa operator places once the kernel touches its ports),
    or a named console UART without a model (the console_sink operator's sink)."""
    return (
        firmware.arch == Arch.MIPS
        or console_uart(firmware, cmdline) is not None
        or console_without_model(firmware, cmdline) is not None
    )


def _tty_names(node: DtDevice, model: Placement) -> set[str]:
    """The names the kernel may give the node's ports: its model's, and another driver's."""
    return {TTY_PREFIX[model.type]} | {OTHER_TTY_PREFIX[c] for c in node.compatible if c in OTHER_TTY_PREFIX}


def _model(node: DtDevice | None, firmware: Firmware) -> Placement | None:
    """The UART model of `node` (None: no node, a disabled one, or no UART model of it)."""
    if node is None or firmware.device_tree is None or node.status not in ("okay", "ok"):
        return None
    model = placement(node, firmware.device_tree, _ANY_CPU)
    return model if model is not None and model.type in TTY_PREFIX else None
