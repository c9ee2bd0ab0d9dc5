"""Which GIC input a device's DT interrupt reaches (device_models.gic_route), on real trees.

The device trees are the corpus's (Debian's armmp DTBs): the i.MX6 GPC, the Tegra ictlr, the
OMAP wugen and the Exynos PMU forward GIC-shaped specifiers unchanged; TI's crossbar (dra7)
chooses the GIC input at run time, and GPIO banks and Allwinner's pin controllers are chained
controllers, so none of those is followed.
"""

from __future__ import annotations

import pytest

from explorer.corpus import Corpus
from explorer.firmware.devicetree import parse_dtb
from explorer.firmware.model import DeviceTreeFacts, DtDevice, Symbol
from explorer.runner.machine_config_pb2 import Device
from explorer.runner.rehost_pb2 import MmioAccess, RunResult
from explorer.search.console import console_uart
from explorer.search.device_models import (
    GIC_INTERRUPT_CELLS,
    devices_by_path,
    gic_interrupt_ids,
    gic_irq_count,
    gic_route,
)
from explorer.search.operators import Context, Evaluated
from explorer.search.operators.devices import propose
from explorer.search.state import State, state_id
from tests.helpers import arm_firmware

GIC_INIT = Symbol(0xC0100000, "T", "gic_init_bases")
SYMBOLS = (GIC_INIT, Symbol(0xC0200000, "T", "_etext"))


def tree_of(corpus: Corpus, board: str) -> DeviceTreeFacts:
    return parse_dtb(corpus.dtb("armmp", board).read_bytes(), "given")


def root_gic(tree: DeviceTreeFacts) -> DtDevice:
    """The tree's GIC: the controller with the GIC's cells that forwards to nothing but itself."""
    (gic,) = (
        node
        for node in tree.devices
        if node.interrupt_cells == GIC_INTERRUPT_CELLS
        and node.interrupt_parent in (None, node.path)
        and any(compatible.startswith("arm,") for compatible in node.compatible)
    )
    return gic


def console_node(tree: DeviceTreeFacts) -> DtDevice:
    console = console_uart(arm_firmware(SYMBOLS, device_tree=tree))
    assert console is not None
    return console.node


# Board, the controller in front of the GIC (its compatible), the console UART's GIC interrupt ID
# (32 + the SPI its `interrupts` names, as the DTB's source gives it).
FORWARDED = [
    ("imx6q-sabrelite", "fsl,imx6q-gpc", 32 + 27),  # uart2: <GIC_SPI 27 IRQ_TYPE_LEVEL_HIGH>
    ("imx6dl-riotboard", "fsl,imx6q-gpc", 32 + 27),
    ("imx6q-wandboard", "fsl,imx6q-gpc", 32 + 26),  # uart1
    ("tegra124-jetson-tk1", "nvidia,tegra124-ictlr", 32 + 90),  # uartd
    ("omap4-panda", "ti,omap4-wugen-mpu", 32 + 74),  # uart3
]


@pytest.mark.parametrize(("board", "forwarder", "irq"), FORWARDED, ids=[row[0] for row in FORWARDED])
def test_the_console_uart_reaches_the_gic_through_the_controller_in_front_of_it(
    corpus: Corpus, board: str, forwarder: str, irq: int
) -> None:
    tree = tree_of(corpus, board)
    gic, uart, by_path = root_gic(tree), console_node(tree), devices_by_path(tree)
    through = by_path[uart.interrupt_parent or ""]
    assert through.compatible[0] == forwarder and through.interrupt_parent == gic.path
    assert gic_route(uart, gic.path, by_path) == through.path
    assert gic_interrupt_ids(uart, gic.path, by_path) == (irq,)
    # The GIC's model has room for the forwarded interrupts.
    assert gic_irq_count(tree, gic.path) > irq


def test_a_uart_on_the_gic_itself_is_wired_directly(corpus: Corpus) -> None:
    tree = tree_of(corpus, "rk3288-tinker")
    gic, uart = root_gic(tree), console_node(tree)
    assert uart.interrupt_parent == gic.path
    assert gic_interrupt_ids(uart, gic.path, devices_by_path(tree)) == (32 + 57,)  # uart2: SPI 57


def test_the_crossbar_before_the_wakeup_controller_is_not_followed(corpus: Corpus) -> None:
    # dra7: UART -> ti,irq-crossbar -> ti,omap5-wugen-mpu -> GIC. The crossbar's specifier names
    # its own input (67 for uart1); the GIC input it is routed to is allocated when the kernel maps it.
    tree = tree_of(corpus, "dra7-evm")
    gic, uart, by_path = root_gic(tree), console_node(tree), devices_by_path(tree)
    crossbar = by_path[uart.interrupt_parent or ""]
    assert crossbar.compatible == ("ti,irq-crossbar",)
    assert by_path[crossbar.interrupt_parent or ""].interrupt_parent == gic.path
    assert gic_route(uart, gic.path, by_path) is None and gic_interrupt_ids(uart, gic.path, by_path) == ()


def test_a_device_behind_a_chained_gpio_bank_is_not_wired(corpus: Corpus) -> None:
    # riotboard's FEC takes its interrupt from GPIO1 pin 6 (interrupts-extended, the i.MX6
    # ERR006687 workaround). A GPIO bank is a controller of two cells (pin, trigger) whose own
    # interrupts go to the GPC: a chained controller, whose pin says nothing of a GIC input.
    tree = tree_of(corpus, "imx6dl-riotboard")
    gic, by_path = root_gic(tree), devices_by_path(tree)
    fec = by_path["/soc/bus@2100000/ethernet@2188000"]
    gpio = by_path[fec.interrupt_parent or ""]
    assert (gpio.compatible[0], gpio.interrupt_cells, fec.interrupts) == ("fsl,imx6q-gpio", 2, (6, 4))
    assert gic_route(fec, gic.path, by_path) is None and gic_interrupt_ids(fec, gic.path, by_path) == ()


def test_the_exynos_pmu_forwards_the_rtcs_two_interrupts(corpus: Corpus) -> None:
    tree = tree_of(corpus, "exynos4412-odroidu3")
    gic, by_path = root_gic(tree), devices_by_path(tree)
    rtc = by_path["/soc/rtc@10070000"]  # <GIC_SPI 44 ...>, <GIC_SPI 45 ...> to the PMU
    assert by_path[rtc.interrupt_parent or ""].compatible[0] == "samsung,exynos4412-pmu"
    assert gic_interrupt_ids(rtc, gic.path, by_path) == (32 + 44, 32 + 45)


def test_a_pin_controller_with_the_gics_three_cells_is_not_taken_for_a_forwarding_one(corpus: Corpus) -> None:
    # The A20's pin controller: interrupt parent the GIC, three cells (bank, pin, flags), and a
    # GPIO controller: a node on bank A's pin 7 says nothing of SPI 7.
    tree = tree_of(corpus, "sun7i-a20-cubieboard2")
    gic, by_path = root_gic(tree), devices_by_path(tree)
    (pio,) = (node for node in tree.devices if node.compatible[:1] == ("allwinner,sun7i-a20-pinctrl",))
    assert (pio.interrupt_parent, pio.interrupt_cells, pio.gpio_controller) == (gic.path, 3, True)
    on_pin = DtDevice("/soc/sensor@1000", ("vendor,sensor",), ((0x1000, 0x10),), pio.path, (0, 7, 8), "okay")
    assert gic_route(on_pin, gic.path, by_path) is None and gic_interrupt_ids(on_pin, gic.path, by_path) == ()


def test_a_controller_without_interrupts_names_the_one_it_forwards_to_and_the_root_none(
    corpus: Corpus,
) -> None:
    tree = tree_of(corpus, "tegra124-jetson-tk1")
    by_path = devices_by_path(tree)
    ictlr = by_path["/interrupt-controller@60004000"]
    assert (ictlr.interrupts, ictlr.interrupt_cells) == ((), GIC_INTERRUPT_CELLS)
    assert ictlr.interrupt_parent == "/interrupt-controller@50041000"
    # An A9's GIC without interrupts of its own is the root: its own parent is no parent.
    sabrelite = devices_by_path(tree_of(corpus, "imx6q-sabrelite"))
    assert sabrelite["/soc/interrupt-controller@a01000"].interrupt_parent is None
    # A node that is not an interrupt controller has no cells.
    assert by_path["/serial@70006300"].interrupt_cells == 0


def irqs(device: Device) -> list[int | None]:
    return [None if irq.WhichOneof("kind") == "null_value" else int(irq.number_value) for irq in device.irqs]


def test_device_discovery_wires_the_console_uart_behind_the_gpc_when_the_gic_comes(corpus: Corpus) -> None:
    # The initial state has the console UART, unwired (no interrupt controller yet); the run
    # touches the GIC's distributor: the child places the GIC and wires the UART through the GPC.
    tree = tree_of(corpus, "imx6q-sabrelite")
    image = arm_firmware(SYMBOLS, device_tree=tree)
    console = console_uart(image)
    assert console is not None
    state = State(target="arm", cpu="cortex-a9", seed=1, random_unruled_reads=True)
    state.ram.add(base=0x10000000, size=0x40000000)
    state.devices.append(console.placement.device(()))
    distributor = root_gic(tree).reg[0][0]
    touched = MmioAccess(address=distributor, size=4, value=0, pc=GIC_INIT.address + 0x10, is_write=False)
    result = RunResult(mmio_accesses=[touched])
    context = Context(image, target=None, lineage=(Evaluated(state_id(state), state, result),))  # type: ignore[arg-type]
    (child,) = propose(context)
    assert child.state.interrupt_controller.type == "a9mpcore_priv"
    assert [(device.type, irqs(device)) for device in child.state.devices] == [("imx.serial", [32 + 27])]
    assert irqs(state.devices[0]) == []
