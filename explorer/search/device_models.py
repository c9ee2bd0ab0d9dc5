"""QEMU device models our build has, and how a device-tree node becomes one placed in a state.

Our ARM QEMU (native/devices/arm-softmmu.mak, native/patches/0001: the `rehosting` machine
selects A9MPCORE, A15MPCORE, ARM_GIC, ARM_TIMER, PL011, PL031, PL310, SERIAL_MM, REALVIEW, plus
what VEXPRESS pulls in, and the i.MX UART the stock i.MX boards pull in) provides the types named
here. A model is chosen by a node's
`compatible` only: the binding of a compatible fixes the register layout, so placing the
model at the node's `reg` is right by construction. Interrupts are translated from the GIC
binding's three cells (SPI n -> GIC interrupt ID 32 + n) into Device.irqs, the machine's
convention (native/rehosting_machine/rehosting_arm.c), for a node whose interrupts reach the
GIC directly or through a forwarding controller (`gic_route`, the one place that decides which
GIC input a DT interrupt reaches).

Ethernet controllers (`nic_placement`, `place_nic`) are kept apart from `placement`: only
`explorer run --net` places them, never a search. A NIC is a device the kernel probes, so placing
it changes the boot a search measures, and a search's run has no network behind it to gain from.

Invariants: a placement is a pure function of the DT node (and, for the GIC, the whole tree);
a compatible not listed here has no model (the search models it as plain registers instead);
models are for the ARM machine only (the MIPS build has Malta's devices, not these).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from google.protobuf.struct_pb2 import Value

from explorer.firmware.model import DeviceTreeFacts, DtDevice
from explorer.runner.machine_config_pb2 import Device, MachineConfig

# GIC interrupt IDs: SPI n is 32 + n (rehosting_arm.c wires device outputs to SPIs only).
GIC_FIRST_SPI = 32
# GIC interrupt specifier cells (arm,gic binding): type (0 SPI, 1 PPI), number, flags.
GIC_INTERRUPT_CELLS = 3
GIC_SPI_TYPE = 0
# QEMU's GIC takes num-irq in multiples of 32 up to the architecture's 1020 interrupt IDs, so
# at most 992 (SPIs above 959 cannot be wired); and at least 64 (32 + one bank of SPIs).
GIC_MAX_IRQ = 992
GIC_MIN_IRQ = 64
# The MPCore private blocks put the GIC distributor 0x1000 above their base; the A15's CPU
# interface sits 0x1000 above the distributor (a15mpcore.c, a9mpcore.c).
MPCORE_DISTRIBUTOR_OFFSET = 0x1000
A15_CPU_INTERFACE_OFFSET = 0x1000
# The A9's CPU interface sits 0x100 above the MPCore base (a9mpcore.c); QEMU's GICv1 (arm_gic's
# default revision, the A9's) has a CPU interface of 0x100 bytes (arm_gic_common.c).
A9_CPU_INTERFACE_OFFSET = 0x100
GIC_V1_CPU_INTERFACE_SPAN = 0x100
# Versatile Express motherboard and Cortex-A9 tile ids, as QEMU's vexpress.c gives them: the
# vexpress-sysreg driver checks the board id before it registers the config bus.
VEXPRESS_SYS_ID = 0x1190F500
VEXPRESS_PROC_ID = {"cortex-a9": 0x0C000191, "cortex-a15": 0x14000237, "cortex-a7": 0x14000237}
# A 16550 has 8 registers; a node whose reg spans 32 bytes or more spaces them 4 bytes apart
# (the DT `reg-shift` is 2 wherever a node spans that much, whichever driver binds it; a binding
# without reg-shift whose driver fixes 2 spans as much too, and its registers past the 16550's
# are left to the value model).
UART_8250_REGISTERS = 8
UART_8250_WIDE_SHIFT = 2
# Bytes each model's (first) MMIO region spans in our QEMU, to keep placements from overlapping.
MODEL_SPANS = {
    "a9mpcore_priv": 0x2000,
    "a15mpcore_priv": 0x8000,
    "arm_gic": 0x1000,
    "pl011": 0x1000,
    "sp804": 0x1000,
    "pl031": 0x1000,
    "pl061": 0x1000,
    "pl181": 0x1000,
    "l2x0": 0x1000,
    "realview_sysctl": 0x1000,
    "imx.serial": 0x1000,
    "lan9118": 0x100,
    "cadence_gem": 0x800,
    "imx.fec": 0x4000,
    "imx.enet": 0x4000,
    "allwinner-emac": 0x1000,
    "allwinner-sun8i-emac": 0x10000,
}
# The span assumed for a model not listed above.
UNKNOWN_SPAN = 0x1000
# QOM path of the machine's system memory (it has no owner, so QEMU files it under the machine's
# unattached objects): the DMA link of a model that does not default to it.
SYSTEM_MEMORY = "/machine/unattached/system[0]"


@dataclass(frozen=True)
class Placement:
    """A QEMU model for one DT node, ready to go into a state."""

    type: str
    mmio: tuple[int, ...]
    # The span of each mmio region, to keep placements from overlapping.
    sizes: tuple[int, ...]
    props: dict[str, int | str | bool] = field(default_factory=dict)
    # Which of the node's interrupts drive the model's IRQ outputs, in output order.
    irq_outputs: int = 0
    interrupt_controller: bool = False

    def overlaps(self, address: int, size: int) -> bool:
        return any(
            base < address + size and address < base + span
            for base, span in zip(self.mmio, self.sizes, strict=True)
        )

    def device(self, irqs: tuple[int | None, ...]) -> Device:
        """The Device config: `irqs` are GIC interrupt IDs (None: unwired), one per wired output."""
        device = Device(type=self.type, mmio=list(self.mmio), irqs=irq_values(irqs))
        device.props.update(self.props)
        return device


def irq_values(irqs: tuple[int | None, ...]) -> list[Value]:
    """Device.irqs entries: a GIC interrupt ID, or null for an output left unwired."""
    return [Value(null_value=0) if irq is None else Value(number_value=irq) for irq in irqs]


def placement(node: DtDevice, tree: DeviceTreeFacts, cpu: str) -> Placement | None:
    """The model of `node` at its address, or None when our QEMU has none (or its layout does not fit)."""
    for compatible in node.compatible:
        place = _PLACERS.get(compatible)
        if place is not None:
            return place(node, tree, cpu)
    return None


def devices_by_path(tree: DeviceTreeFacts) -> dict[str, DtDevice]:
    """The tree's nodes by path, for gic_route's look-ups."""
    return {node.path: node for node in tree.devices}


def gic_route(node: DtDevice, gic_path: str, by_path: Mapping[str, DtDevice]) -> str | None:
    """The controller through which `node`'s interrupts reach the GIC at `gic_path`: the GIC itself
    when it is the node's interrupt parent, or a forwarding controller; None when they do not
    reach it (another root, a chained controller, or a longer way).

    A forwarding controller is a hierarchical child of the GIC (Linux's
    irq_domain_create_hierarchy) that passes a specifier on unchanged (GIC_SPI n arrives as SPI
    n): a controller whose own interrupt parent is the GIC, whose specifiers have the GIC's three
    cells, and that is no GPIO controller (wake-up and interrupt-routing controllers in front of a
    GIC). A chained controller numbers its inputs in a format of its own, which says nothing
    about the GIC input: a GPIO bank (two cells), a pin controller (three: bank, pin, flags; it
    is also a GPIO controller). A controller behind a forwarding one is not followed: in the
    kernel's trees that is a crossbar choosing the GIC input at run time, or a GPIO bank.
    Hierarchical controllers of other shapes translate rather than forward (two cells through a
    table, or onto SPIs they allocate): not followed either. Which trees have which shape:
    BENCHMARKS.md, "Consoles behind a forwarding interrupt controller".
    """
    if node.interrupt_parent == gic_path:
        return gic_path
    parent = by_path.get(node.interrupt_parent or "")
    if (
        parent is not None
        and parent.path != gic_path
        and parent.interrupt_parent == gic_path
        and parent.interrupt_cells == GIC_INTERRUPT_CELLS
        and not parent.gpio_controller
    ):
        return parent.path
    return None


def gic_interrupt_ids(
    node: DtDevice, gic_path: str, by_path: Mapping[str, DtDevice]
) -> tuple[int | None, ...]:
    """The GIC interrupt IDs `node`'s interrupts reach at the GIC at `gic_path` (gic_route); PPIs are None."""
    if gic_route(node, gic_path, by_path) is None:
        return ()
    cells = node.interrupts
    ids: list[int | None] = []
    for start in range(0, len(cells) - GIC_INTERRUPT_CELLS + 1, GIC_INTERRUPT_CELLS):
        kind, number = cells[start], cells[start + 1]
        ids.append(GIC_FIRST_SPI + number if kind == GIC_SPI_TYPE else None)
    return tuple(ids)


def gic_irq_count(tree: DeviceTreeFacts, controller_path: str) -> int:
    """num-irq for the GIC at `controller_path`: room for every SPI the tree uses, in 32s."""
    by_path = devices_by_path(tree)
    highest = max(
        (
            irq
            for node in tree.devices
            for irq in gic_interrupt_ids(node, controller_path, by_path)
            if irq is not None
        ),
        default=GIC_FIRST_SPI,
    )
    rounded = (highest + 1 + 31) // 32 * 32
    return min(max(rounded, GIC_MIN_IRQ), GIC_MAX_IRQ)


def _a9_gic(node: DtDevice, tree: DeviceTreeFacts, cpu: str) -> Placement | None:
    # a9mpcore_priv holds the SCU, GIC CPU interface, global and private timers and the
    # distributor; the CPU finds it through CBAR (the machine sets it from mmio[0]). A tree
    # whose CPU interface is not where the MPCore block puts it (a SoC that moved its GIC out of
    # the private region) gets QEMU's plain GIC at the two addresses instead: with the MPCore
    # block there, the kernel's reads of the acknowledge register would fall to the value model,
    # and no interrupt would ever be taken.
    if cpu != "cortex-a9" or not node.reg:
        return None
    distributor = node.reg[0][0]
    mpcore_cpu_interface = distributor - MPCORE_DISTRIBUTOR_OFFSET + A9_CPU_INTERFACE_OFFSET
    if len(node.reg) > 1 and node.reg[1][0] != mpcore_cpu_interface:
        return Placement(
            "arm_gic",
            (distributor, node.reg[1][0]),
            (MODEL_SPANS["arm_gic"], GIC_V1_CPU_INTERFACE_SPAN),
            {"num-irq": gic_irq_count(tree, node.path)},
            interrupt_controller=True,
        )
    return Placement(
        "a9mpcore_priv",
        (distributor - MPCORE_DISTRIBUTOR_OFFSET,),
        (MODEL_SPANS["a9mpcore_priv"],),
        {"num-irq": gic_irq_count(tree, node.path)},
        interrupt_controller=True,
    )


def _a15_gic(node: DtDevice, tree: DeviceTreeFacts, cpu: str) -> Placement | None:
    # a15mpcore_priv also wires the CPU's generic (arch) timers to their PPIs, which a plain
    # arm_gic would leave unconnected: that is why it is preferred where its layout fits.
    if cpu not in ("cortex-a15", "cortex-a7") or len(node.reg) < 2:
        return None
    distributor, cpu_interface = node.reg[0][0], node.reg[1][0]
    if cpu_interface != distributor + A15_CPU_INTERFACE_OFFSET:
        return None
    return Placement(
        "a15mpcore_priv",
        (distributor - MPCORE_DISTRIBUTOR_OFFSET,),
        (MODEL_SPANS["a15mpcore_priv"],),
        {"num-irq": gic_irq_count(tree, node.path)},
        interrupt_controller=True,
    )


def _vexpress_sysreg(node: DtDevice, tree: DeviceTreeFacts, cpu: str) -> Placement | None:
    proc_id = VEXPRESS_PROC_ID.get(cpu)
    if proc_id is None:
        return None
    return Placement(
        "realview_sysctl",
        (node.reg[0][0],),
        (MODEL_SPANS["realview_sysctl"],),
        {"sys_id": VEXPRESS_SYS_ID, "proc_id": proc_id},
    )


def _uart_8250(node: DtDevice, tree: DeviceTreeFacts, cpu: str) -> Placement:
    address, size = node.reg[0]
    shift = UART_8250_WIDE_SHIFT if size >= UART_8250_REGISTERS << UART_8250_WIDE_SHIFT else 0
    return Placement(
        "serial-mm", (address,), (UART_8250_REGISTERS << shift,), {"regshift": shift}, irq_outputs=1
    )


def _simple(qom_type: str, irq_outputs: int) -> Callable[[DtDevice, DeviceTreeFacts, str], Placement]:
    """A model with one MMIO region at the node's first reg and `irq_outputs` interrupts."""

    def place(node: DtDevice, tree: DeviceTreeFacts, cpu: str) -> Placement:
        return Placement(qom_type, (node.reg[0][0],), (MODEL_SPANS[qom_type],), irq_outputs=irq_outputs)

    return place


# Compatible -> how to place its model.
_PLACERS: dict[str, Callable[[DtDevice, DeviceTreeFacts, str], Placement | None]] = {
    "arm,cortex-a9-gic": _a9_gic,
    "arm,cortex-a15-gic": _a15_gic,
    "arm,cortex-a7-gic": _a15_gic,
    "arm,gic-400": _a15_gic,
    "arm,pl011": _simple("pl011", 1),
    "arm,sp804": _simple("sp804", 1),
    "arm,pl031": _simple("pl031", 1),
    "arm,pl061": _simple("pl061", 1),
    "arm,pl180": _simple("pl181", 2),
    "arm,pl181": _simple("pl181", 2),
    "arm,pl310-cache": _simple("l2x0", 0),
    "arm,vexpress-sysreg": _vexpress_sysreg,
    "ns16550a": _uart_8250,
    "ns16550": _uart_8250,
    "snps,dw-apb-uart": _uart_8250,
    "ti,omap2-uart": _uart_8250,
    "ti,omap3-uart": _uart_8250,
    "ti,omap4-uart": _uart_8250,
    "ti,am3352-uart": _uart_8250,
    "ti,dra742-uart": _uart_8250,
    # Served by the 8250 core (8250_of, 8250_bcm2835aux): the 16550's registers, 4 bytes apart.
    "nvidia,tegra20-uart": _uart_8250,
    "brcm,bcm2835-aux-uart": _uart_8250,
    "fsl,imx6ul-uart": _simple("imx.serial", 1),
    "fsl,imx6q-uart": _simple("imx.serial", 1),
    "fsl,imx21-uart": _simple("imx.serial", 1),
}

# The name the kernel gives a model's serial ports (ttyS0, ttyAMA1, ...), for a console=
# argument: drivers number a DT port by its `serialN` alias.
TTY_PREFIX = {"pl011": "ttyAMA", "serial-mm": "ttyS", "imx.serial": "ttymxc"}
# Compatibles that a second driver also serves under its own tty name: the OMAP UART is ttyS with
# 8250_omap and ttyO with omap-serial, whichever the kernel was built with.
OTHER_TTY_PREFIX = {
    "ti,omap2-uart": "ttyO",
    "ti,omap3-uart": "ttyO",
    "ti,omap4-uart": "ttyO",
    "ti,am3352-uart": "ttyO",
    "ti,dra742-uart": "ttyO",
}


# Ethernet controllers: compatible -> QOM type, interrupt outputs, and properties. The i.MX6 and
# later FEC is QEMU's imx.enet (the stock i.MX6 and i.MX7 boards'), the i.MX25/27 one imx.fec.
_NICS: dict[str, tuple[str, int, dict[str, int | str | bool]]] = {
    "smsc,lan9115": ("lan9118", 1, {}),
    "smsc,lan9118": ("lan9118", 1, {}),
    "cdns,gem": ("cadence_gem", 1, {}),
    "cdns,macb": ("cadence_gem", 1, {}),
    "cdns,zynq-gem": ("cadence_gem", 1, {}),
    "fsl,imx25-fec": ("imx.fec", 1, {}),
    "fsl,imx27-fec": ("imx.fec", 1, {}),
    "fsl,imx6q-fec": ("imx.enet", 2, {}),
    "fsl,imx6sx-fec": ("imx.enet", 2, {}),
    "fsl,imx6ul-fec": ("imx.enet", 2, {}),
    "fsl,imx7d-fec": ("imx.enet", 2, {}),
    "allwinner,sun4i-a10-emac": ("allwinner-emac", 1, {}),
    "allwinner,sun8i-h3-emac": ("allwinner-sun8i-emac", 1, {"dma-memory": SYSTEM_MEMORY}),
    "allwinner,sun8i-a83t-emac": ("allwinner-sun8i-emac", 1, {"dma-memory": SYSTEM_MEMORY}),
    "allwinner,sun8i-v3s-emac": ("allwinner-sun8i-emac", 1, {"dma-memory": SYSTEM_MEMORY}),
}
NIC_TYPES = frozenset(qom_type for qom_type, _, _ in _NICS.values())


@dataclass(frozen=True)
class PlacedNic:
    """The Ethernet controller `place_nic` added to a config, for people to be told about."""

    node: DtDevice
    type: str
    # The GIC interrupt IDs its outputs raise; empty when its interrupts do not reach the config's
    # interrupt controller (gic_route; the guest's driver then waits for interrupts that never come).
    irqs: tuple[int, ...]


def nic_placement(node: DtDevice) -> Placement | None:
    """The model of an Ethernet controller `node` at its address, or None when our QEMU has none."""
    for compatible in node.compatible:
        if compatible in _NICS and node.reg:
            qom_type, outputs, props = _NICS[compatible]
            return Placement(qom_type, (node.reg[0][0],), (MODEL_SPANS[qom_type],), dict(props), outputs)
    return None


def place_nic(config: MachineConfig, tree: DeviceTreeFacts) -> PlacedNic | None:
    """Add to `config` the model of the tree's first enabled Ethernet controller our QEMU has (None:
    there is none, or the config already maps its address), wired like the search wires a device:
    to the config's interrupt controller where the node's interrupts reach it (gic_route)."""
    controller = _placed_controller(config, tree)
    limit = int(config.interrupt_controller.props["num-irq"]) if controller is not None else 0
    for node in tree.devices:
        model = nic_placement(node)
        if model is None or node.status not in ("okay", "ok") or _mapped(config, model):
            continue
        ids = (
            gic_interrupt_ids(node, controller.path, devices_by_path(tree))[: model.irq_outputs]
            if controller is not None
            else ()
        )
        irqs = tuple(irq if irq is not None and irq < limit else None for irq in ids)
        config.devices.append(model.device(irqs))
        return PlacedNic(node, model.type, tuple(irq for irq in irqs if irq is not None))
    return None


def _placed_controller(config: MachineConfig, tree: DeviceTreeFacts) -> DtDevice | None:
    """The DT node of the config's interrupt controller, when it is the model of one."""
    if not config.HasField("interrupt_controller"):
        return None
    placed = config.interrupt_controller
    for node in tree.devices:
        model = placement(node, tree, config.cpu)
        if (
            model is not None
            and model.interrupt_controller
            and (model.type, model.mmio) == (placed.type, tuple(placed.mmio))
        ):
            return node
    return None


def _mapped(config: MachineConfig, model: Placement) -> bool:
    """Does a device of `config` already take part of the model's registers?"""
    devices = [
        *config.devices,
        *([config.interrupt_controller] if config.HasField("interrupt_controller") else []),
    ]
    return any(
        model.overlaps(address, MODEL_SPANS.get(device.type, UNKNOWN_SPAN))
        for device in devices
        for address in device.mmio[:1]
    )
