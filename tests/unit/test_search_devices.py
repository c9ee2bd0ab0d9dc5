"""Device discovery: touched DT nodes become QEMU models with IRQs; the rest, registers that read back."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from explorer.firmware.model import (
    DeviceTreeFacts,
    DtDevice,
    Firmware,
    Symbol,
)
from explorer.runner.machine_config_pb2 import Device, MmioRule
from explorer.runner.rehost_pb2 import MmioAccess, RunResult
from explorer.search.device_models import gic_irq_count, placement
from explorer.search.operators import Child, Context, Evaluated
from explorer.search.operators.devices import propose
from explorer.search.state import State, canonical_bytes, state_id
from tests.helpers import arm_firmware

GIC_PATH = "/interrupt-controller@1e001000"
GIC = DtDevice(
    GIC_PATH, ("arm,cortex-a9-gic",), ((0x1E001000, 0x1000), (0x1E000100, 0x100)), None, (), "okay"
)
UART = DtDevice(
    "/iofpga/uart@9000", ("arm,pl011", "arm,primecell"), ((0x10009000, 0x1000),), GIC_PATH, (0, 5, 4), "okay"
)
SYSCTL = DtDevice("/iofpga/sysctl@1000", ("arm,sp810",), ((0x10001000, 0x1000),), None, (), "okay")
SYMBOLS = (Symbol(0xC0100000, "T", "gic_init_bases"), Symbol(0xC0200000, "T", "pl011_probe"))
SYMBOLS += (Symbol(0xC0300000, "T", "sp810_setup"), Symbol(0xC0400000, "T", "board_init"))
SYMBOLS += (Symbol(0xC0500000, "T", "_etext"),)
GIC_PC, UART_PC, SYSCTL_PC, BOARD_PC = 0xC0100010, 0xC0200010, 0xC0300010, 0xC0400010


def firmware(devices: tuple[DtDevice, ...] | None) -> Firmware:
    tree = (
        DeviceTreeFacts("given", None, (), ((0x60000000, 0x20000000),), devices, None, None)
        if devices is not None
        else None
    )
    return arm_firmware(SYMBOLS, device_tree=tree)


def machine() -> State:
    state = State(target="arm", cpu="cortex-a9", seed=1, random_unruled_reads=True)
    state.ram.add(base=0x60000000, size=0x20000000)
    return state


def access(address: int, pc: int, is_write: bool = False, order: int = 0) -> MmioAccess:
    return MmioAccess(address=address, size=4, value=0, pc=pc, is_write=is_write, order=order)


def children(state: State, image: Firmware, *accesses: MmioAccess) -> list[Child]:
    result = RunResult(mmio_accesses=list(accesses))
    context = Context(image, target=None, lineage=(Evaluated(state_id(state), state, result),))  # type: ignore[arg-type]
    return propose(context)


def irqs(device: Device) -> list[int | None]:
    return [None if irq.WhichOneof("kind") == "null_value" else int(irq.number_value) for irq in device.irqs]


def test_touched_gic_and_uart_become_a9mpcore_and_pl011_with_the_uarts_spi() -> None:
    found = children(
        machine(),
        firmware((GIC, UART, SYSCTL)),
        access(0x1E001000, GIC_PC, order=0),
        access(0x10009FE0, UART_PC, order=1),
    )
    assert len(found) == 1
    state = found[0].state
    # The a9mpcore_priv block sits 0x1000 below the distributor the DT names.
    assert (state.interrupt_controller.type, list(state.interrupt_controller.mmio)) == (
        "a9mpcore_priv",
        [0x1E000000],
    )
    assert [(d.type, list(d.mmio), irqs(d)) for d in state.devices] == [("pl011", [0x10009000], [32 + 5])]
    assert (
        "map pl011 at 0x10009000 (irq 37): DT node /iofpga/uart@9000 (arm,pl011) was touched by pl011_probe"
        in (found[0].reason)
    )


def test_the_interrupt_parent_of_a_touched_node_is_proposed_though_never_touched() -> None:
    (child,) = children(machine(), firmware((GIC, UART)), access(0x10009000, UART_PC))
    assert child.state.interrupt_controller.type == "a9mpcore_priv"
    assert irqs(child.state.devices[0]) == [37]
    assert "touched by its interrupt children" in child.reason


def test_devices_mapped_before_the_interrupt_controller_get_their_irqs_when_it_comes() -> None:
    (first,) = children(machine(), firmware((UART,)), access(0x10009000, UART_PC))
    assert not first.state.HasField("interrupt_controller") and irqs(first.state.devices[0]) == []
    (second,) = children(first.state, firmware((GIC, UART)), access(0x1E001000, GIC_PC))
    assert irqs(second.state.devices[0]) == [37]


def test_an_interrupt_controller_replaces_the_tick_that_stood_in_for_one() -> None:
    # A tick acked on a controller without a model (a SoC's wake-up controller in front of the
    # GIC); then the GIC's children are touched: the GIC drives the CPU's IRQ line instead.
    ticking = machine()
    ticking.tick.period_ns, ticking.tick.ack_base, ticking.tick.ack_size = 4_000_000, 0x020DC000, 0x4000
    (child,) = children(ticking, firmware((GIC, UART)), access(0x10009000, UART_PC))
    assert child.state.interrupt_controller.type == "a9mpcore_priv"
    assert not child.state.HasField("tick") and ticking.HasField("tick")
    assert child.reason.endswith("no tick: a9mpcore_priv drives the CPU's IRQ line instead")
    # A device alone leaves the tick as it is.
    (uart_only,) = children(ticking, firmware((UART,)), access(0x10009000, UART_PC))
    assert uart_only.state.tick == ticking.tick and not uart_only.state.HasField("interrupt_controller")


def test_a_node_without_a_model_reads_back_what_was_written_and_a_second_child_leaves_it_out() -> None:
    found = children(
        machine(),
        firmware((GIC, SYSCTL)),
        access(0x1E001000, GIC_PC, order=0),
        access(0x10001000, SYSCTL_PC, is_write=True, order=1),
        access(0x10001004, SYSCTL_PC, order=2),
    )
    with_registers, models_only = found
    # Only the written address: one only ever read keeps its random reads (status bits flip).
    assert [(rule.address, rule.WhichOneof("value")) for rule in with_registers.state.mmio_rules] == [
        (0x10001000, "echo")
    ]
    assert "DT node /iofpga/sysctl@1000 (arm,sp810) as registers" in with_registers.reason
    assert "touched by sp810_setup" in with_registers.reason
    assert not models_only.state.mmio_rules and models_only.state.HasField("interrupt_controller")


def test_a_written_register_that_one_instruction_polls_keeps_its_random_reads() -> None:
    # A reset bit the hardware clears: Echo would hold the driver in its wait loop forever.
    found = children(
        machine(),
        firmware(None),
        access(0xF1012010, BOARD_PC, is_write=True, order=0),
        access(0xF1012010, BOARD_PC + 4, order=1),
        access(0xF1012010, BOARD_PC + 4, order=2),
        access(0xF1012000, BOARD_PC, is_write=True, order=3),
    )
    assert [rule.address for child in found for rule in child.state.mmio_rules] == [0xF1012000]


def test_without_a_device_tree_written_pages_become_registers_named_by_the_driver() -> None:
    (child,) = children(
        machine(),
        firmware(None),
        access(0xF1012000, BOARD_PC, is_write=True, order=0),
        access(0xF1012004, BOARD_PC, is_write=True, order=1),
        access(0xF1020000, BOARD_PC, order=2),
    )
    assert [rule.address for rule in child.state.mmio_rules] == [0xF1012000, 0xF1012004]
    assert (
        child.reason
        == "model page 0xf1012000 (no DT node) as registers (echo on 2 written addresses): "
        + ("touched by board_init+0x10")
    )
    assert not child.state.devices


def test_nothing_new_proposes_nothing() -> None:
    state = machine()
    state.mmio_rules.append(MmioRule(address=0xF1012000, constant=1))
    assert children(state, firmware(None), access(0xF1012000, BOARD_PC, is_write=True)) == []
    assert children(state, firmware(None)) == []


def test_an_a15_gic_whose_cpu_interface_is_not_above_the_distributor_has_no_model() -> None:
    fits = DtDevice("/gic", ("arm,gic-400",), ((0x1C81000, 0x1000), (0x1C82000, 0x2000)), None, (), "okay")
    apart = DtDevice("/gic", ("arm,gic-400",), ((0x1C81000, 0x1000), (0x1C90000, 0x2000)), None, (), "okay")
    tree = DeviceTreeFacts("given", None, (), (), (fits,), None, None)
    model = placement(fits, tree, "cortex-a15")
    assert model is not None and (model.type, model.mmio) == ("a15mpcore_priv", (0x1C80000,))
    assert placement(apart, tree, "cortex-a15") is None
    # The MPCore blocks belong to their own CPU: an A9 block cannot serve an A15.
    assert placement(GIC, tree, "cortex-a15") is None


@given(spis=st.lists(st.integers(0, 987), min_size=1, max_size=8))
def test_gic_irq_count_has_room_for_every_spi_of_the_tree(spis: list[int]) -> None:
    nodes = tuple(
        DtDevice(f"/dev{index}", ("x",), ((0x1000 * index, 0x100),), GIC_PATH, (0, spi, 4), "okay")
        for index, spi in enumerate(spis)
    )
    count = gic_irq_count(DeviceTreeFacts("given", None, (), (), (GIC, *nodes), None, None), GIC_PATH)
    # QEMU's GIC takes multiples of 32, at most 992: higher SPIs stay unwired.
    assert count % 32 == 0 and count <= 992 and (32 + max(spis) < count or count == 992)


addresses = st.sampled_from(
    [0x1E001000, 0x1E000100, 0x10009000, 0x10009FFC, 0x10001000, 0x10001010, 0xF1000000]
)
accesses = st.lists(
    st.builds(access, addresses, st.sampled_from([GIC_PC, UART_PC, SYSCTL_PC]), st.booleans()), max_size=12
)


@given(touched=accesses, with_tree=st.booleans())
def test_children_leave_the_parent_alone_add_only_and_never_overlap(
    touched: list[MmioAccess], with_tree: bool
) -> None:
    parent = machine()
    before = canonical_bytes(parent)
    image = firmware((GIC, UART, SYSCTL) if with_tree else None)
    written = {item.address for item in touched if item.is_write}
    for child in children(parent, image, *touched):
        assert canonical_bytes(parent) == before and state_id(child.state) != state_id(parent)
        assert child.operator == "devices" and child.reason
        assert {rule.address for rule in child.state.mmio_rules} <= written
        bases = [base for device in child.state.devices for base in device.mmio]
        assert len(bases) == len(set(bases))
        assert list(child.state.ram) == list(parent.ram)
