"""Device discovery: turn the MMIO regions a run touched, and the state does not map, into devices.

A run reports every access that fell to the catch-all (so, by construction, only addresses the
state maps to no device). Each access is attributed to the device-tree node whose `reg` holds
it (the smallest such node that our QEMU has a model for, else the smallest node) and, without
a node, to its 4 KiB page. Then:

- a node with a QEMU model (explorer.search.device_models) is placed at its address, its interrupts
  translated to GIC interrupt IDs where they reach the GIC, directly or through a forwarding
  controller (device_models.gic_route: a wake-up controller in front of the console UART's). The
  interrupt controller comes first: without one no device can have an IRQ, so it is proposed as
  soon as the run touched it or any touched node names it as interrupt parent, and adding it
  wires the devices mapped before it. It replaces the state's
  tick (explorer.search.operators.interrupts), if it has one: the tick stood in for a controller
  without a model (the node most others name as parent), and the machine lets only one thing
  drive the CPU's IRQ line; the model found since is the root that controller's interrupts reach
  (a GIC behind a SoC's wake-up controller), which delivers the timers' own interrupts;
- everything else becomes a modelled region: Echo rules on the addresses the driver wrote, so
  that configuration registers read back what was written. Addresses only read, and addresses
  polled (read again and again by one instruction), keep the state's read model (random by
  default: see explorer.search.initial), so that status bits keep flipping; an address that
  already has a rule is never touched (value collapse and bit search own those).

Children per generation, and why: the point is few boots. Every new device is proposed at once
(one boot learns them all; booting them one by one costs one boot each for the same progress).
When there are both models and register regions, a second child has the models alone: Echo on
a register the hardware changes (a start bit it clears when done) can hang a driver that
random reads let through, and the second child runs beside the first in the same generation,
so best-first keeps whichever got further at no extra wall time on two cores.

It never runs anything, never reads the store, never modifies the given states.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from explorer.firmware.model import DeviceTreeFacts, DtDevice, Firmware
from explorer.runner.analysis import place
from explorer.runner.machine_config_pb2 import Device, Echo, MmioRule
from explorer.runner.rehost_pb2 import MmioAccess
from explorer.search.device_models import MODEL_SPANS, Placement, gic_interrupt_ids, irq_values, placement
from explorer.search.operators import Child, Context
from explorer.search.state import State, derive

OPERATOR = "devices"
# Accesses without a device-tree node are grouped by page: drivers map whole pages.
PAGE_BYTES = 0x1000
# A device of a type we have no span for is assumed to take one page.
DEFAULT_SPAN = PAGE_BYTES


@dataclass(frozen=True)
class NewDevice:
    """A model proposed for a touched DT node."""

    node: DtDevice
    placement: Placement
    touched_by: str  # the function that made the first access


@dataclass(frozen=True)
class Region:
    """Touched registers with no model: a DT node without one, or a page without a node."""

    name: str  # the DT node's path and compatible, or the page's address
    touched_by: str
    written: tuple[int, ...]  # addresses written in the run, without a rule yet


def propose(context: Context) -> list[Child]:
    state, result = context.current.state, context.current.result
    accesses = [access for access in result.mmio_accesses if not _in_ram(state, access.address)]
    if not accesses:
        return []
    nodes = _NodeIndex(context.firmware.device_tree, state.cpu if state.target == "arm" else None)
    by_node, by_page = _attribute(accesses, nodes)
    controller = _interrupt_controller(state, nodes)
    devices = _new_devices(state, nodes, by_node, context.firmware)
    if controller is None:
        controller = next((device.node for device in devices if device.placement.interrupt_controller), None)
    regions = _regions(state, nodes, by_node, by_page, devices, context.firmware)
    children: list[Child] = []
    if devices or regions:
        children.append(_child(state, devices, regions, controller, nodes))
    if devices and regions:
        children.append(_child(state, devices, (), controller, nodes))
    return children


class _NodeIndex:
    """The DT nodes with their models (for the state's CPU), for address lookups."""

    def __init__(self, tree: DeviceTreeFacts | None, cpu: str | None) -> None:
        self.nodes = tuple(node for node in tree.devices if node.reg) if tree is not None else ()
        self.models = {
            node.path: model
            for node in self.nodes
            if tree is not None and cpu is not None and (model := placement(node, tree, cpu)) is not None
        }
        self.by_path = {node.path: node for node in self.nodes}
        # A run repeats addresses (up to 8 events per site): look each one up once.
        self._owners: dict[int, DtDevice | None] = {}

    def owner(self, address: int) -> DtDevice | None:
        """The node an access belongs to: the smallest holding it that has a model, else the smallest."""
        if address not in self._owners:
            self._owners[address] = self._find_owner(address)
        return self._owners[address]

    def _find_owner(self, address: int) -> DtDevice | None:
        holding = [
            (size, node) for node in self.nodes for base, size in node.reg if base <= address < base + size
        ]
        modelled = [entry for entry in holding if entry[1].path in self.models]
        chosen = min(modelled or holding, key=lambda entry: entry[0], default=None)
        return chosen[1] if chosen is not None else None


def _attribute(
    accesses: Iterable[MmioAccess], nodes: _NodeIndex
) -> tuple[dict[str, list[MmioAccess]], dict[int, list[MmioAccess]]]:
    """Accesses per DT node path and, for those no node holds, per page; both in order of first touch."""
    by_node: dict[str, list[MmioAccess]] = {}
    by_page: dict[int, list[MmioAccess]] = {}
    for access in sorted(accesses, key=lambda access: access.order):
        node = nodes.owner(access.address)
        if node is not None:
            by_node.setdefault(node.path, []).append(access)
        else:
            by_page.setdefault(access.address & ~(PAGE_BYTES - 1), []).append(access)
    return by_node, by_page


def _interrupt_controller(state: State, nodes: _NodeIndex) -> DtDevice | None:
    """The DT node of the interrupt controller the state already has, if it came from the tree."""
    if not state.HasField("interrupt_controller"):
        return None
    mapped = state.interrupt_controller
    for path, model in nodes.models.items():
        if (
            model.interrupt_controller
            and model.type == mapped.type
            and tuple(model.mmio) == tuple(mapped.mmio)
        ):
            return nodes.by_path[path]
    return None


def _new_devices(
    state: State,
    nodes: _NodeIndex,
    by_node: dict[str, list[MmioAccess]],
    firmware: Firmware,
) -> list[NewDevice]:
    """Models for the touched nodes, the interrupt controller first; none overlapping another."""
    modelled = [path for path in by_node if path in nodes.models]
    wanted = [path for path in modelled if not nodes.models[path].interrupt_controller]
    if not state.HasField("interrupt_controller"):
        parents = [nodes.by_path[path].interrupt_parent for path in by_node]
        candidates = dict.fromkeys([*modelled, *(parent for parent in parents if parent)])
        controllers = [
            path for path in candidates if path in nodes.models and nodes.models[path].interrupt_controller
        ]
        wanted = controllers[:1] + wanted
    taken = [(base, _span(device.type)) for device in _all_devices(state) for base in device.mmio]
    chosen: list[NewDevice] = []
    for path in wanted:
        model = nodes.models[path]
        if any(model.overlaps(base, span) for base, span in taken) or _overlaps_ram(state, model):
            continue
        taken += list(zip(model.mmio, model.sizes, strict=True))
        first = by_node[path][0] if path in by_node else None
        touched_by = _function(first.pc, firmware) if first is not None else "its interrupt children"
        chosen.append(NewDevice(nodes.by_path[path], model, touched_by))
    return chosen


def _regions(
    state: State,
    nodes: _NodeIndex,
    by_node: dict[str, list[MmioAccess]],
    by_page: dict[int, list[MmioAccess]],
    devices: list[NewDevice],
    firmware: Firmware,
) -> list[Region]:
    """Register regions for what no proposed model covers: Echo on the addresses written, not polled."""
    touched = [access for group in (*by_node.values(), *by_page.values()) for access in group]
    ruled = {rule.address for rule in state.mmio_rules} | _polled(touched)
    modelled = [device.placement for device in devices]
    groups: list[tuple[str, list[MmioAccess]]] = []
    for path, accesses in by_node.items():
        node = nodes.by_path[path]
        groups.append((f"DT node {path} ({', '.join(node.compatible[:1]) or 'no compatible'})", accesses))
    groups += [(f"page 0x{page:x} (no DT node)", accesses) for page, accesses in by_page.items()]
    regions: list[Region] = []
    for name, accesses in groups:
        written = dict.fromkeys(
            access.address
            for access in accesses
            if access.is_write
            and access.address not in ruled
            and not any(model.overlaps(access.address, access.size) for model in modelled)
        )
        if written:
            regions.append(Region(name, _function(accesses[0].pc, firmware), tuple(written)))
    return regions


def _polled(accesses: Iterable[MmioAccess]) -> set[int]:
    """Addresses one instruction read more than once: a driver waiting for the hardware to change them.

    Such a register (a reset bit the hardware clears, a busy flag) must not read back what was
    written: Echo would hold the driver in its loop forever, where random reads let it through
    (seen on am335x: the dmtimer's soft reset in SYSC). A poll that random reads passed on the
    first read goes unseen here; the second, models-only child is the fallback for that.
    """
    reads = Counter((access.address, access.pc) for access in accesses if not access.is_write)
    return {address for (address, _), count in reads.items() if count > 1}


def _child(
    state: State,
    devices: list[NewDevice],
    regions: Iterable[Region],
    controller: DtDevice | None,
    nodes: _NodeIndex,
) -> Child:
    regions = tuple(regions)
    new_controller = next((device for device in devices if device.placement.interrupt_controller), None)
    controller_irqs = _irq_limit(new_controller.placement if new_controller else None, state)

    def wire(node: DtDevice, model: Placement) -> tuple[int | None, ...]:
        if controller is None or not model.irq_outputs:
            return ()
        ids = gic_interrupt_ids(node, controller.path, nodes.by_path)[: model.irq_outputs]
        return tuple(irq if irq is not None and irq < controller_irqs else None for irq in ids)

    def change(child: State) -> None:
        for device in devices:
            config = device.placement.device(wire(device.node, device.placement))
            if device.placement.interrupt_controller:
                child.interrupt_controller.CopyFrom(config)
                child.ClearField("tick")
            else:
                child.devices.append(config)
        if new_controller is not None:
            _wire_earlier_devices(child, nodes, wire)
        for region in regions:
            child.mmio_rules.extend(MmioRule(address=address, echo=Echo()) for address in region.written)

    child = derive(state, change)
    parts = [_device_reason(device, wire(device.node, device.placement)) for device in devices]
    if new_controller is not None and state.HasField("tick"):
        parts.append(f"no tick: {new_controller.placement.type} drives the CPU's IRQ line instead")
    parts += [
        f"model {region.name} as registers (echo on {len(region.written)} written addresses): "
        f"touched by {region.touched_by}"
        for region in regions
    ]
    detail = {
        "devices": [
            {"type": d.placement.type, "mmio": list(d.placement.mmio), "node": d.node.path} for d in devices
        ],
        "echo": [address for region in regions for address in region.written],
    }
    return Child(child, OPERATOR, "; ".join(parts), detail)


def _device_reason(device: NewDevice, irqs: tuple[int | None, ...]) -> str:
    model, node = device.placement, device.node
    wired = [str(irq) for irq in irqs if irq is not None]
    at = ", ".join(f"0x{base:x}" for base in model.mmio)
    return (
        f"map {model.type} at {at}"
        + (f" (irq {', '.join(wired)})" if wired else "")
        + f": DT node {node.path} ({node.compatible[0]}) was touched by {device.touched_by}"
    )


Wiring = Callable[[DtDevice, Placement], tuple[int | None, ...]]


def _wire_earlier_devices(child: State, nodes: _NodeIndex, wire: Wiring) -> None:
    """Give the devices mapped before the interrupt controller existed their IRQs."""
    for device in child.devices:
        if device.irqs:
            continue
        for path, model in nodes.models.items():
            if model.type == device.type and tuple(model.mmio) == tuple(device.mmio):
                device.irqs.extend(irq_values(wire(nodes.by_path[path], model)))
                break


def _irq_limit(new_controller: Placement | None, state: State) -> int:
    """num-irq of the controller the child will have (IDs at or above it cannot be wired)."""
    if new_controller is not None:
        return int(new_controller.props.get("num-irq", 0))
    if state.HasField("interrupt_controller"):
        value = state.interrupt_controller.props.fields.get("num-irq")
        return int(value.number_value) if value is not None else 0
    return 0


def _all_devices(state: State) -> list[Device]:
    return (
        [state.interrupt_controller, *state.devices]
        if state.HasField("interrupt_controller")
        else list(state.devices)
    )


def _span(qom_type: str) -> int:
    return MODEL_SPANS.get(qom_type, DEFAULT_SPAN)


def _in_ram(state: State, address: int) -> bool:
    return any(region.base <= address < region.base + region.size for region in state.ram)


def _overlaps_ram(state: State, model: Placement) -> bool:
    return any(model.overlaps(region.base, region.size) for region in state.ram)


def _function(pc: int, firmware: Firmware) -> str:
    return str(place(pc, firmware.symbols))
