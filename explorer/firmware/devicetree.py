"""Device tree blobs: what a DTB says about a board, as `DeviceTreeFacts`.

The `fdt` library parses the blob; this module checks the header first (so that a bad blob
fails with one clear line) and then reads the tree the way Linux does: `#address-cells` and
`#size-cells` are inherited from the nearest ancestor that states them (default 1 and 1),
`reg` is translated to CPU-physical addresses through every parent bus's `ranges`, and the
effective interrupt parent is found by `of_irq_find_parent`'s walk: a device's, and an interrupt
controller's without interrupts of its own too (the controller it forwards to, as `of_irq_init`
finds it: a wake-up controller in front of the GIC), the root controller having none.

It never boots, patches or writes a tree, and never lets anything but `DeviceTreeError`
escape on a bad blob.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import fdt
import numpy as np

from explorer.errors import DeviceTreeError
from explorer.firmware.model import DeviceTreeFacts, DtDevice

FDT_MAGIC = b"\xd0\x0d\xfe\xed"
_HEADER = struct.Struct(">10I")  # magic .. size_dt_struct (version 17 header)
_BEGIN_NODE_TAG = 1
# libfdt's FDT_MAX_NCELLS: no real bus needs wider addresses or sizes.
_MAX_ADDRESS_CELLS = 4
# Linux's MAX_PHANDLE_ARGS bounds an interrupt specifier.
_MAX_INTERRUPT_CELLS = 16
# `fdt` checks node names for duplicates with a linear scan, so a blob of N sibling nodes
# costs O(N^2). Real trees have under 2,000 nodes (am572x-idk: ~1,800); this bound keeps a
# hostile blob to a couple of seconds.
_MAX_NODES = 10_000


@dataclass(eq=False)
class _Node:
    """A tree node with raw property bytes: `fdt` guesses property types, we want the bytes."""

    path: str
    parent: _Node | None
    props: dict[str, bytes] = field(default_factory=dict)


def parse_dtb(blob: bytes, source: str) -> DeviceTreeFacts:
    """Read board identity, CPUs, memory, memory-mapped devices and boot arguments from a DTB.

    `source` says where the blob came from ("given", "appended", "builtin"). Devices are the
    nodes with a `reg` that translates to CPU-physical addresses (so not i2c or spi children,
    not cpus, and not the memory nodes, which are in `memory`).
    """
    nodes = _read_tree(blob)
    root = nodes[0]
    phandles: dict[int, _Node] = {}
    for node in nodes:
        for name in ("phandle", "linux,phandle"):
            value = _u32(node, name)
            if value is not None:
                phandles.setdefault(value, node)
    chosen = next((n for n in nodes if n.path == "/chosen"), None)
    aliases = next((n for n in nodes if n.path == "/aliases"), None)
    memory: list[tuple[int, int]] = []
    devices: list[DtDevice] = []
    for node in nodes:
        if "reg" not in node.props or node.parent is None:
            continue
        if _string(node, "device_type") == "memory":
            if _status(node) in ("okay", "ok"):
                memory.extend(r for r in _translated_reg(node) if r[1] > 0)
            continue
        reg = _translated_reg(node)
        if not reg:
            continue
        interrupt_parent, interrupts = _interrupts(node, phandles, len(nodes))
        if interrupt_parent is None and "interrupt-controller" in node.props:
            interrupt_parent = _controller_parent(node, phandles, len(nodes))
        devices.append(
            DtDevice(
                path=node.path,
                compatible=_strings(node, "compatible"),
                reg=tuple(reg),
                interrupt_parent=interrupt_parent,
                interrupts=interrupts,
                status=_status(node),
                interrupt_cells=_interrupt_cells(node) if "interrupt-controller" in node.props else 0,
                gpio_controller="gpio-controller" in node.props,
            )
        )
    return DeviceTreeFacts(
        source=source,
        model=_string(root, "model"),
        compatible=_strings(root, "compatible"),
        memory=tuple(memory),
        devices=tuple(devices),
        bootargs=_string(chosen, "bootargs") if chosen else None,
        stdout_path=(_string(chosen, "stdout-path") or _string(chosen, "linux,stdout-path"))
        if chosen
        else None,
        psci_method=_psci_method(nodes),
        aliases=_aliases(aliases) if aliases else {},
        cpus=tuple(
            compatible
            for node in nodes
            if node.parent is not None and node.parent.path == "/cpus" and _is_cpu(node)
            for compatible in _strings(node, "compatible")
        ),
    )


def _aliases(node: _Node) -> dict[str, str]:
    """/aliases as name -> path: only the properties that are absolute node paths."""
    paths = {name: _string(node, name) for name in node.props if name not in ("phandle", "linux,phandle")}
    return {name: path for name, path in sorted(paths.items()) if path and path.startswith("/")}


def _psci_method(nodes: list[_Node]) -> str | None:
    """The /psci node's "method" ("smc" or "hvc"), when the tree has an enabled one: the kernel's
    drivers/firmware/psci calls the firmware that way from setup_arch (psci_dt_init)."""
    psci = next((n for n in nodes if n.path == "/psci"), None)
    if psci is None or _status(psci) not in ("okay", "ok"):
        return None
    return _string(psci, "method")


def _is_cpu(node: _Node) -> bool:
    """A CPU node: device_type "cpu", or named cpu@N (older trees omit the type)."""
    return _string(node, "device_type") == "cpu" or node.path.rsplit("/", 1)[-1].startswith("cpu@")


def find_dtbs(data: bytes) -> list[int]:
    """Offsets in `data` where a DTB with a sane header starts (e.g. DTBs built into a kernel)."""
    found = []
    offset = data.find(FDT_MAGIC)
    while offset >= 0:
        try:
            totalsize = _checked_header(data[offset:])
        except DeviceTreeError:
            offset = data.find(FDT_MAGIC, offset + 4)
            continue
        found.append(offset)
        offset = data.find(FDT_MAGIC, offset + totalsize)
    return found


def _checked_header(blob: bytes) -> int:
    """The blob's `totalsize` after checking every header field the parser relies on."""
    if len(blob) < _HEADER.size or not blob.startswith(FDT_MAGIC):
        raise DeviceTreeError("not a device tree blob (no 0xd00dfeed magic): give a .dtb file")
    (_, totalsize, off_struct, off_strings, off_rsvmap, version, last_comp, _, size_strings, size_struct) = (
        _HEADER.unpack_from(blob)
    )
    if totalsize > len(blob):
        raise DeviceTreeError(f"device tree blob truncated: header says {totalsize} bytes, got {len(blob)}")
    if version < 16 or last_comp > 17:
        raise DeviceTreeError(f"device tree blob version {version} (compatible {last_comp}) is not 16 or 17")
    for what, start, size, alignment in (
        ("memory reservation map", off_rsvmap, 16, 8),
        ("structure block", off_struct, size_struct, 4),
        ("strings block", off_strings, size_strings, 1),
    ):
        if start < _HEADER.size or start % alignment:
            raise DeviceTreeError(f"device tree blob has a misplaced {what} at offset {start:#x}")
        if start + size > totalsize:
            raise DeviceTreeError(f"device tree blob's {what} runs past its end ({totalsize} bytes)")
    return totalsize


def _forget_reservations() -> None:
    """Empty the list `fdt` keeps /memreserve/ entries in: FDT.__init__'s default `entries=[]` is
    one list shared by every tree parse_dtb makes, and each parse appends its reservations to it,
    so without this a process that parses many DTBs (a bench, the wide set's draw) grows it without
    bound, and every later FDT serialises all of them (to_dtb slowed to minutes in the test suite).
    We never read the reservations."""
    shared = fdt.FDT.__init__.__defaults__[1]
    shared.clear()


def _read_tree(blob: bytes) -> list[_Node]:
    """All nodes, root first, parents before children, with their raw property bytes."""
    totalsize = _checked_header(blob)
    blob = bytes(blob[:totalsize])
    off_struct = _HEADER.unpack_from(blob)[2]
    words = np.frombuffer(blob, ">u4", (totalsize - off_struct) // 4, off_struct)
    if np.count_nonzero(words == _BEGIN_NODE_TAG) > _MAX_NODES:
        raise DeviceTreeError(f"device tree blob has more than {_MAX_NODES} nodes: not a real board's tree")
    try:
        tree = fdt.parse_dtb(blob)
    except Exception as e:  # `fdt` raises bare Exception, struct.error, IndexError, ... on bad blobs
        raise DeviceTreeError(f"malformed device tree blob: {e or type(e).__name__}") from None
    finally:
        _forget_reservations()
    if tree.root is None:
        raise DeviceTreeError("device tree blob has no root node")
    root = _Node("/", None)
    nodes = []
    pending: list[tuple[fdt.Node, _Node]] = [(tree.root, root)]
    while pending:
        library_node, node = pending.pop()
        nodes.append(node)
        node.props = {p.name: _raw_value(p) for p in library_node.props}
        prefix = node.path.rstrip("/") + "/"
        pending.extend((child, _Node(prefix + child.name, node)) for child in reversed(library_node.nodes))
    return nodes


def _raw_value(prop: fdt.Property) -> bytes:
    """The property's bytes as they were in the blob, undoing `fdt`'s type guess."""
    if isinstance(prop, fdt.PropStrings):
        return b"".join(s.encode("ascii") + b"\0" for s in prop.data)
    if isinstance(prop, fdt.PropWords):
        return struct.pack(f">{len(prop.data)}I", *prop.data)
    if isinstance(prop, fdt.PropBytes):
        return bytes(prop.data)
    return b""


def _cells(raw: bytes) -> tuple[int, ...]:
    return struct.unpack(f">{len(raw) // 4}I", raw[: len(raw) // 4 * 4])


def _number(cells: tuple[int, ...]) -> int:
    value = 0
    for cell in cells:
        value = value << 32 | cell
    return value


def _u32(node: _Node, name: str) -> int | None:
    raw = node.props.get(name)
    return _cells(raw)[0] if raw is not None and len(raw) >= 4 else None


def _strings(node: _Node, name: str) -> tuple[str, ...]:
    raw = node.props.get(name, b"")
    return tuple(s.decode("utf-8", "replace") for s in raw.split(b"\0") if s)


def _string(node: _Node, name: str) -> str | None:
    values = _strings(node, name)
    return values[0] if values else None


def _status(node: _Node) -> str:
    return _string(node, "status") or "okay"


def _bus_cells(bus: _Node, name: str, default: int) -> int:
    """`#address-cells` or `#size-cells` of the children of `bus`, inherited as Linux does."""
    node: _Node | None = bus
    while node is not None:
        value = _u32(node, name)
        if value is not None:
            if value > _MAX_ADDRESS_CELLS:
                raise DeviceTreeError(f"device tree node {node.path} has {name} = {value}, more than 4")
            return value
        node = node.parent
    return default


def _translated_reg(node: _Node) -> list[tuple[int, int]]:
    """The node's (address, size) pairs that map to CPU-physical addresses."""
    bus = node.parent
    assert bus is not None
    address_cells = _bus_cells(bus, "#address-cells", 1)
    size_cells = _bus_cells(bus, "#size-cells", 1)
    cells = _cells(node.props["reg"])
    width = address_cells + size_cells
    if width == 0:
        return []
    out = []
    for i in range(0, len(cells) - width + 1, width):
        address = _translate(bus, _number(cells[i : i + address_cells]))
        if address is not None:
            out.append((address, _number(cells[i + address_cells : i + width])))
    return out


def _translate(bus: _Node, address: int) -> int | None:
    """`address` on `bus` as a CPU-physical address, or None when no `ranges` maps it there."""
    while bus.parent is not None:
        ranges = bus.props.get("ranges")
        if ranges is None:
            return None  # e.g. i2c, spi, mdio: addresses on that bus are not memory-mapped
        if ranges:
            child_cells = _bus_cells(bus, "#address-cells", 1)
            parent_cells = _bus_cells(bus.parent, "#address-cells", 1)
            width = child_cells + parent_cells + _bus_cells(bus, "#size-cells", 1)
            cells = _cells(ranges)
            for i in range(0, len(cells) - width + 1, width):
                child_base = _number(cells[i : i + child_cells])
                size = _number(cells[i + child_cells + parent_cells : i + width])
                if child_base <= address < child_base + size:
                    address += _number(cells[i + child_cells : i + child_cells + parent_cells]) - child_base
                    break
            else:
                return None
        bus = bus.parent
    return address


def _interrupts(
    node: _Node, phandles: dict[int, _Node], node_count: int
) -> tuple[str | None, tuple[int, ...]]:
    """(effective interrupt parent's path, raw specifier cells) of a node.

    With `interrupts-extended`, the parent is the first entry's controller and the cells are
    the specifiers of the entries that go to that controller.
    """
    if "interrupts-extended" in node.props:
        cells = _cells(node.props["interrupts-extended"])
        first: _Node | None = None
        specifiers: list[int] = []
        i = 0
        while i < len(cells):
            controller = phandles.get(cells[i])
            if controller is None:
                break  # without the controller we cannot know how wide its specifier is
            width = _interrupt_cells(controller)
            first = first or controller
            if controller is first:
                specifiers.extend(cells[i + 1 : i + 1 + width])
            i += 1 + width
        return (first.path if first else None), tuple(specifiers)
    if "interrupts" not in node.props:
        return None, ()
    parent = _interrupt_parent(node, phandles, node_count)
    specifier = _cells(node.props["interrupts"])
    if parent is not None and "interrupt-map" in parent.props:
        parent, specifier = _through_interrupt_maps(node, parent, specifier, phandles, node_count)
    return (parent.path if parent else None), specifier


def _through_interrupt_maps(
    node: _Node, nexus: _Node, specifier: tuple[int, ...], phandles: dict[int, _Node], node_count: int
) -> tuple[_Node | None, tuple[int, ...]]:
    """Follow `interrupt-map` nexus nodes (Linux's of_irq_parse_raw) to the real controller.

    A bus such as vexpress's motherboard routes its children's interrupts to the GIC through a
    map; the device's interrupt line is the one at the end of the chain, so that is what we report.
    """
    unit = _cells(node.props.get("reg", b""))
    for _ in range(node_count):
        if "interrupt-map" not in nexus.props:
            return nexus, specifier
        address_cells = _u32(nexus, "#address-cells")
        child_width = (2 if address_cells is None else address_cells) + _interrupt_cells(nexus)
        key = (unit + (0,) * child_width)[: child_width - len(specifier)] + specifier
        mask = _cells(nexus.props.get("interrupt-map-mask", b"")) or (0xFFFFFFFF,) * child_width
        masked = tuple(k & m for k, m in zip(key, mask, strict=False))
        table = _cells(nexus.props["interrupt-map"])
        i, found = 0, None
        while i + child_width < len(table):
            target = phandles.get(table[i + child_width])
            if target is None:
                return None, specifier
            target_address = _u32(target, "#address-cells") or 0
            width = child_width + 1 + target_address + _interrupt_cells(target)
            entry = table[i : i + width]
            if tuple(e & m for e, m in zip(entry, mask, strict=False)) == masked:
                found = target, entry[child_width + 1 :]
                break
            i += width
        if found is None:
            return None, specifier  # unrouted: Linux would fail to map this interrupt too
        nexus, routed = found
        unit, specifier = (
            routed[: len(routed) - _interrupt_cells(nexus)],
            routed[len(routed) - _interrupt_cells(nexus) :],
        )
    raise DeviceTreeError(f"device tree interrupt-map chain loops, starting at {node.path}")


def _interrupt_parent(node: _Node, phandles: dict[int, _Node], node_count: int) -> _Node | None:
    """Linux's of_irq_find_parent: follow `interrupt-parent` or the tree up to an interrupt controller."""
    current: _Node | None = node
    for _ in range(node_count + 1):
        assert current is not None
        phandle = _u32(current, "interrupt-parent")
        current = current.parent if phandle is None else phandles.get(phandle)
        if current is None or "#interrupt-cells" in current.props:
            return current
    raise DeviceTreeError(f"device tree interrupt-parent phandles loop, starting at {node.path}")


def _controller_parent(controller: _Node, phandles: dict[int, _Node], node_count: int) -> str | None:
    """The controller an interrupt controller without interrupts of its own sends its inputs on
    to; None for the root (of_irq_init: a controller that is its own parent has none)."""
    parent = _interrupt_parent(controller, phandles, node_count)
    return parent.path if parent is not None and parent is not controller else None


def _interrupt_cells(controller: _Node) -> int:
    value = _u32(controller, "#interrupt-cells") or 0
    if value > _MAX_INTERRUPT_CELLS:
        raise DeviceTreeError(f"device tree node {controller.path} has #interrupt-cells = {value}")
    return value
