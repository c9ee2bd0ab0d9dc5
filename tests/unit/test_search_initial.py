"""The initial state: a CPU that runs the kernel, RAM where it can live, a budget, and nothing else."""

from __future__ import annotations

import fdt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from explorer.errors import BadInput
from explorer.firmware.devicetree import parse_dtb
from explorer.firmware.model import Arch, DeviceTreeFacts, DtDevice, Endian, Firmware
from explorer.search.initial import (
    DEFAULT_RAM_BYTES,
    INSTRUCTION_BUDGET,
    MAX_RAM_BYTES,
    initial_state,
)
from explorer.search.state import state_id
from tests.helpers import arm_firmware


def firmware(
    arch: Arch = Arch.ARM,
    endian: Endian = Endian.LITTLE,
    cpu_class: str = "ARMv7",
    load_address: int | None = None,
    memory: tuple[tuple[int, int], ...] = (),
    devices: tuple[tuple[int, int], ...] = (),
    with_tree: bool = True,
) -> Firmware:
    tree = DeviceTreeFacts(
        source="given",
        model=None,
        compatible=(),
        memory=memory,
        devices=tuple(
            DtDevice(f"/soc/dev@{base:x}", ("vendor,thing",), ((base, size),), None, (), "okay")
            for base, size in devices
        ),
        bootargs=None,
        stdout_path=None,
    )
    return arm_firmware(
        arch=arch,
        endian=endian,
        cpu_class=cpu_class,
        load_address=load_address,
        device_tree=tree if with_tree else None,
    )


def dtb_with_cpus(*compatibles: str) -> bytes:
    tree = fdt.FDT()
    for index, compatible in enumerate(compatibles):
        tree.add_item(fdt.PropStrings("compatible", compatible), f"/cpus/cpu@{index}", create=True)
    return bytes(tree.to_dtb(version=17))


regions = st.tuples(st.integers(0, 0xFFFF).map(lambda page: page << 16), st.integers(1, 0x4000000)).filter(
    lambda region: region[0] + region[1] <= 1 << 32
)


@given(
    cpu_class=st.sampled_from(["ARMv5", "ARMv6", "ARMv7"]),
    load_address=st.none() | st.integers(0, 0xFFFFFFFF),
    memory=st.lists(regions, max_size=2).map(tuple),
    seed=st.integers(0, 2**64 - 1),
)
def test_initial_state_is_cpu_ram_and_budget_only_and_a_pure_function(
    cpu_class: str, load_address: int | None, memory: tuple[tuple[int, int], ...], seed: int
) -> None:
    image = firmware(cpu_class=cpu_class, load_address=load_address, memory=memory)
    state = initial_state(image, seed)
    assert not state.HasField("interrupt_controller") and not state.devices and not state.mmio_rules
    assert not state.nops and not state.hooks
    assert len(state.ram) == 1 and 0 < state.ram[0].size <= MAX_RAM_BYTES
    assert state.seed == seed and state.random_unruled_reads
    assert state.instruction_budget == INSTRUCTION_BUDGET
    assert state_id(initial_state(image, seed)) == state_id(state)


def test_ram_is_the_device_trees_first_bank_capped() -> None:
    state = initial_state(firmware(memory=((0x60000000, 0x40000000), (0xA0000000, 0x1000))), 0)
    assert [(r.base, r.size) for r in state.ram] == [(0x60000000, MAX_RAM_BYTES)]


def test_without_a_memory_node_ram_surrounds_the_kernels_load_address() -> None:
    state = initial_state(firmware(load_address=0x80208000), 0)
    assert [(r.base, r.size) for r in state.ram] == [(0x80000000, DEFAULT_RAM_BYTES)]


def test_without_a_device_tree_or_load_address_arm_ram_starts_at_zero_as_atag_boards_have_it() -> None:
    state = initial_state(firmware(cpu_class="ARMv5", with_tree=False), 0)
    assert [(r.base, r.size) for r in state.ram] == [(0, DEFAULT_RAM_BYTES)]


@given(devices=st.lists(regions, max_size=6).map(tuple))
def test_ram_guessed_without_memory_or_load_address_overlaps_no_device(
    devices: tuple[tuple[int, int], ...],
) -> None:
    try:
        state = initial_state(firmware(devices=devices), 0)
    except BadInput:
        return
    base, size = state.ram[0].base, state.ram[0].size
    assert all(address + length <= base or base + size <= address for address, length in devices)


@pytest.mark.parametrize(
    ("compatibles", "cpu_class", "model"),
    [
        (("arm,cortex-a9", "arm,cortex-a9"), "ARMv7", "cortex-a9"),
        (("arm,cortex-a8",), "ARMv7", "cortex-a8"),
        (("arm,cortex-a7",), "ARMv7", "cortex-a7"),
        # No QEMU model of an A12: the A15 runs the same ARMv7-A code.
        (("arm,cortex-a12",), "ARMv7", "cortex-a15"),
        (("vendor,unknown-core",), "ARMv7", "cortex-a15"),
        # A DT CPU of another class than the kernel's is not trusted.
        (("arm,cortex-a9",), "ARMv5", "arm926"),
        (("arm,arm1176jzf-s",), "ARMv6", "arm1176"),
    ],
)
def test_cpu_comes_from_the_device_trees_cpus_when_we_have_a_model_of_the_kernels_class(
    compatibles: tuple[str, ...], cpu_class: str, model: str
) -> None:
    tree = parse_dtb(dtb_with_cpus(*compatibles), "appended")
    assert tree.cpus == compatibles
    image = arm_firmware(cpu_class=cpu_class, device_tree=tree)
    assert initial_state(image, 0).cpu == model


@pytest.mark.parametrize(
    ("cpu_class", "model"), [("ARMv5", "arm926"), ("ARMv6", "arm1176"), ("ARMv7", "cortex-a15")]
)
def test_cpu_without_a_device_tree_is_the_class_default(cpu_class: str, model: str) -> None:
    state = initial_state(firmware(cpu_class=cpu_class, with_tree=False), 0)
    assert state.target == "arm" and state.cpu == model


@pytest.mark.parametrize(("endian", "target"), [(Endian.LITTLE, "mipsel"), (Endian.BIG, "mips")])
def test_mips_kernels_get_a_24kf_ram_at_zero_and_the_memory_size_in_the_environment(
    endian: Endian, target: str
) -> None:
    state = initial_state(firmware(Arch.MIPS, endian, "MIPS32r2", with_tree=False), 0)
    assert (state.target, state.cpu) == (target, "24Kf")
    assert [(r.base, r.size) for r in state.ram] == [(0, DEFAULT_RAM_BYTES)]
    assert state.boot.env["memsize"] == str(DEFAULT_RAM_BYTES)


@pytest.mark.parametrize(
    ("image", "complaint"),
    [
        (firmware(endian=Endian.BIG), "big-endian ARM"),
        (firmware(cpu_class="ARMv4T", with_tree=False), "no QEMU CPU model runs ARMv4T kernels"),
    ],
)
def test_a_kernel_we_cannot_run_is_refused_in_one_line(image: Firmware, complaint: str) -> None:
    with pytest.raises(BadInput, match=complaint):
        initial_state(image, 0)


def test_a_device_tree_without_cpus_gives_no_cpu_compatibles() -> None:
    tree = fdt.FDT()
    tree.add_item(fdt.PropWords("#address-cells", 1))
    assert parse_dtb(bytes(tree.to_dtb(version=17)), "given").cpus == ()


def psci_tree(method: str, status: str = "okay") -> bytes:
    tree = fdt.FDT()
    tree.add_item(fdt.PropStrings("compatible", "arm,psci-1.0"), "/psci", create=True)
    tree.add_item(fdt.PropStrings("method", method), "/psci")
    tree.add_item(fdt.PropStrings("status", status), "/psci")
    return bytes(tree.to_dtb(version=17))


@pytest.mark.parametrize(
    ("method", "status", "conduit"), [("smc", "okay", "smc"), ("hvc", "okay", "hvc"), ("smc", "disabled", "")]
)
def test_psci_calls_the_device_tree_declares_are_answered_by_qemu_from_the_start(
    method: str, status: str, conduit: str
) -> None:
    tree = parse_dtb(psci_tree(method, status), "given")
    assert tree.psci_method == (method if status == "okay" else None)
    assert initial_state(arm_firmware(device_tree=tree), 0).psci_conduit == conduit


def test_a_device_tree_without_psci_leaves_the_machine_without_it() -> None:
    assert initial_state(firmware(), 0).psci_conduit == ""
