"""Kernel facts (version banner, CPU class, PAGE_OFFSET, load address) from small synthetic kernels."""

from __future__ import annotations

import struct

import pytest

from explorer.firmware.kernel_facts import cpu_class, kernel_version, load_address, page_offset
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
