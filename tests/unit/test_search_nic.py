"""Ethernet controllers for `explorer run --net`: placed from the device tree, wired to the placed
GIC, and never proposed by a search."""

from __future__ import annotations

import pytest

from explorer.firmware.model import DeviceTreeFacts, DtDevice
from explorer.runner.machine_config_pb2 import MachineConfig
from explorer.search.device_models import (
    GIC_FIRST_SPI,
    NIC_TYPES,
    SYSTEM_MEMORY,
    nic_placement,
    place_nic,
    placement,
)

GIC_PATH = "/interrupt-controller@1e001000"
GIC = DtDevice(
    GIC_PATH, ("arm,cortex-a9-gic",), ((0x1E001000, 0x1000), (0x1E000100, 0x100)), None, (), "okay"
)
LAN9118 = DtDevice(
    "/smb@4000000/motherboard/ethernet@2,02000000",
    ("smsc,lan9118", "smsc,lan9115"),
    ((0x4E000000, 0x10000),),
    GIC_PATH,
    (0, 15, 4),
    "okay",
)
FEC = DtDevice(
    "/soc/ethernet@2188000",
    ("fsl,imx6q-fec",),
    ((0x2188000, 0x4000),),
    GIC_PATH,
    (0, 118, 4, 0, 119, 4),
    "okay",
)


def tree(*devices: DtDevice) -> DeviceTreeFacts:
    return DeviceTreeFacts("given", None, (), ((0x60000000, 0x20000000),), (GIC, *devices), None, None)


def found_machine(facts: DeviceTreeFacts) -> MachineConfig:
    """A config as a search finds it: its GIC placed from the tree, a UART."""
    config = MachineConfig(target="arm", cpu="cortex-a9", seed=1)
    model = placement(GIC, facts, config.cpu)
    assert model is not None
    config.interrupt_controller.CopyFrom(model.device(()))
    config.devices.add(type="pl011", mmio=[0x10009000])
    return config


def test_the_nic_goes_after_the_machines_devices_at_its_reg_with_its_spi_on_the_placed_gic() -> None:
    facts = tree(LAN9118)
    config = found_machine(facts)
    placed = place_nic(config, facts)
    assert placed is not None and (placed.type, placed.node) == ("lan9118", LAN9118)
    assert placed.irqs == (GIC_FIRST_SPI + 15,)
    assert [device.type for device in config.devices] == ["pl011", "lan9118"]
    nic = config.devices[1]
    assert list(nic.mmio) == [0x4E000000] and [irq.number_value for irq in nic.irqs] == [47]


def test_every_interrupt_output_of_a_model_is_wired() -> None:
    facts = tree(FEC)
    config = found_machine(facts)
    placed = place_nic(config, facts)
    assert placed is not None and placed.type == "imx.enet"
    assert placed.irqs == (GIC_FIRST_SPI + 118, GIC_FIRST_SPI + 119)


def test_without_the_parent_controller_placed_the_nic_is_placed_unwired() -> None:
    facts = tree(LAN9118)
    config = MachineConfig(target="arm", cpu="cortex-a9", seed=1)
    placed = place_nic(config, facts)
    assert placed is not None and placed.irqs == ()
    assert [irq.WhichOneof("kind") for irq in config.devices[0].irqs] == []


@pytest.mark.parametrize(
    "devices",
    [(), (DtDevice("/eth@1000", ("snps,dwmac",), ((0x1000, 0x1000),), GIC_PATH, (0, 5, 4), "okay"),)],
)
def test_no_nic_is_placed_where_the_tree_names_none_qemu_models(devices: tuple[DtDevice, ...]) -> None:
    facts = tree(*devices)
    config = found_machine(facts)
    assert place_nic(config, facts) is None
    assert [device.type for device in config.devices] == ["pl011"]


def test_a_disabled_nic_or_one_the_machine_already_maps_is_not_placed() -> None:
    disabled = DtDevice(LAN9118.path, LAN9118.compatible, LAN9118.reg, GIC_PATH, (0, 15, 4), "disabled")
    facts = tree(disabled)
    assert place_nic(found_machine(facts), facts) is None
    facts = tree(LAN9118)
    config = found_machine(facts)
    config.devices.add(type="sp804", mmio=[0x4E000000])
    assert place_nic(config, facts) is None


def test_the_sun8i_emac_gets_the_system_memory_for_its_dma() -> None:
    emac = DtDevice(
        "/soc/ethernet@1c30000", ("allwinner,sun8i-h3-emac",), ((0x1C30000, 0x10000),), None, (), "okay"
    )
    model = nic_placement(emac)
    assert model is not None and model.props == {"dma-memory": SYSTEM_MEMORY}


def test_a_search_never_places_a_nic() -> None:
    # The search's placements (devices and console operators) come from `placement` alone.
    facts = tree(LAN9118, FEC)
    for node in facts.devices:
        model = placement(node, facts, "cortex-a9")
        assert model is None or model.type not in NIC_TYPES
