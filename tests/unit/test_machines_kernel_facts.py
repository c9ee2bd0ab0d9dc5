"""Kernel facts (version banner, CPU class, PAGE_OFFSET, load address) from small synthetic kernels."""

from __future__ import annotations

import struct

import pytest

from explorer.firmware.kernel_facts import (
    board_cpu_class,
    cpu_class,
    kernel_version,
    load_address,
    page_offset,
    va_bits,
)
from explorer.firmware.model import Arch, DeviceTreeFacts, Endian, KernelImage, Symbol, SymbolTable


def table(base: int, *names: str) -> SymbolTable:
    symbols = [Symbol(base, "T", "_text")]
    symbols += [Symbol(base + 0x100 + 4 * i, "T", name) for i, name in enumerate(names)]
    return SymbolTable(tuple(sorted(symbols)), "kallsyms", base, "test")


def image(data: bytes = b"", arch: Arch = Arch.ARM) -> KernelImage:
    return KernelImage(arch, Endian.LITTLE, data, ())


def tree_with_memory(*banks: tuple[int, int]) -> DeviceTreeFacts:
    return DeviceTreeFacts("given", None, (), banks, (), None, None)


def test_version_prefers_the_printed_banner_over_the_template() -> None:
    data = b"\0Linux version 6.1.0 (x@y) # SMP\0\0Linux version 6.1.0 (x@y) #1 SMP Debian\n\0"
    assert kernel_version(image(data)) == "6.1.0 (x@y) #1 SMP Debian"
    assert kernel_version(image(b"no banner here")) is None


@pytest.mark.parametrize(
    ("processors", "expected"),
    [
        (("cpu_v7_proc_init", "cpu_ca9mp_proc_init"), "ARMv7"),
        (("cpu_feroceon_proc_init", "cpu_feroceon_reset"), "ARMv5"),
        (("cpu_arm926_proc_init",), "ARMv5"),
        (("cpu_v6_proc_init", "cpu_v7_proc_init"), "ARMv7"),
        (("cpu_v6_proc_init",), "ARMv6"),
        (("cpu_arm920_proc_init",), "ARMv4T"),
        (("printk",), "ARM"),
    ],
)
def test_arm_cpu_class_comes_from_processor_support_functions(
    processors: tuple[str, ...], expected: str
) -> None:
    assert cpu_class(image(), table(0xC0008000, *processors)) == expected


def mips_text(bitfield_share: float, words: int = 10_000) -> bytes:
    ext = 0x7C000000 | (4 << 21) | (2 << 16)  # ext $v0, $a0, 0, 1
    addiu = 0x24420001  # addiu $v0, $v0, 1 (MIPS I)
    count = int(words * bitfield_share)
    return struct.pack(f"<{words}I", *([ext] * count + [addiu] * (words - count)))


def test_mips_class_comes_from_r2_bitfield_instructions_in_text() -> None:
    base = 0x80100000
    r2 = mips_text(0.005)
    symbols = SymbolTable(
        (Symbol(base, "T", "_text"), Symbol(base + len(r2), "T", "_etext")), "kallsyms", base, "test"
    )
    assert cpu_class(image(r2, Arch.MIPS), symbols) == "MIPS32r2"
    assert cpu_class(image(mips_text(0.0), Arch.MIPS), symbols) == "MIPS32r1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (0xC0208000, 0xC0000000),  # armmp: TEXT_OFFSET 0x208000
        (0xC0008000, 0xC0000000),
        (0xB0008000, 0xB0000000),  # VMSPLIT_3G_OPT
        (0xB1008000, None),  # TEXT_OFFSET would be over 16 MiB; rounding down would say 0xB1000000
        (0x80008000, 0x80000000),
        (0x40308000, 0x40000000),
        (0xC0300000, None),  # `_stext`, not `_text`: no TEXT_OFFSET ends in 0x8000
    ],
)
def test_arm_page_offset_from_kconfig_choices_and_text_offset_convention(
    text: int, expected: int | None
) -> None:
    assert page_offset(image(), table(text)) == expected


def test_mips_page_offset_is_kseg0_and_load_address_its_physical_alias() -> None:
    symbols = table(0x80100000)
    assert page_offset(image(arch=Arch.MIPS), symbols) == 0x80000000
    assert load_address(Arch.MIPS, symbols, 0x80000000, None) == 0x100000
    assert page_offset(image(arch=Arch.MIPS), table(0xC0000000)) is None


def test_arm_load_address_is_lowest_ram_bank_plus_text_offset() -> None:
    symbols = table(0xC0208000)
    tree = tree_with_memory((0x80000000, 0x1000), (0x60000000, 0x20000000))
    assert load_address(Arch.ARM, symbols, 0xC0000000, tree) == 0x60208000
    assert load_address(Arch.ARM, symbols, 0xC0000000, None) is None
    assert load_address(Arch.ARM, symbols, 0xC0000000, tree_with_memory()) is None
    assert load_address(Arch.ARM, symbols, None, tree) is None


@pytest.mark.parametrize(
    ("text", "bits"),
    [
        (0xFFFF800008000000, 48),  # 6.1, 48-bit VA: KIMAGE_VADDR = modules' end
        (0xFFFF800080000000, 48),  # 6.12 (52-bit VA kernels link there too)
        (0xFFFFFFC008000000, 39),
        (0xFFFFC00008000000, 47),
        (0xFFFFFE0008000000, 42),
    ],
)
def test_aarch64_va_bits_and_page_offset_come_from_the_link_address(text: int, bits: int) -> None:
    symbols = table(text)
    assert va_bits(image(arch=Arch.AARCH64), symbols) == bits
    assert page_offset(image(arch=Arch.AARCH64), symbols) == (1 << 64) - (1 << bits)
    assert va_bits(image(), table(0xC0008000)) is None


def test_aarch64_loads_at_the_first_2_mib_boundary_of_ram_plus_text_offset() -> None:
    symbols = table(0xFFFF800008000000)
    tree = tree_with_memory((0x40100000, 0x40000000), (0x80000000, 0x1000))
    assert load_address(Arch.AARCH64, symbols, None, tree, text_offset=0) == 0x40200000
    assert load_address(Arch.AARCH64, symbols, None, tree, text_offset=0x80000) == 0x40280000
    assert load_address(Arch.AARCH64, symbols, None, None, text_offset=0) is None


def test_aarch64_class_is_armv8_a_and_the_boards_cores_refine_it() -> None:
    assert cpu_class(image(arch=Arch.AARCH64), table(0xFFFF800008000000)) == "ARMv8-A"

    def cores(*compatibles: str) -> DeviceTreeFacts:
        return DeviceTreeFacts("given", None, (), (), (), None, None, cpus=compatibles)

    assert board_cpu_class(cores("arm,cortex-a53", "arm,cortex-a72")) == "ARMv8-A"
    assert board_cpu_class(cores("arm,cortex-a55", "arm,cortex-a55")) == "ARMv8.2-A"
    assert board_cpu_class(cores("arm,cortex-a76", "arm,cortex-a510")) == "ARMv8.2-A"
    assert board_cpu_class(cores("arm,cortex-a53", "vendor,unknown-core")) is None
    assert board_cpu_class(cores()) is None
