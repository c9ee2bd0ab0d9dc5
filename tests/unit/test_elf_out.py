"""The kernel ELF for gdb: pyelftools and gdb read back the image at its base and every symbol."""

from __future__ import annotations

import subprocess
from io import BytesIO
from pathlib import Path

from elftools.elf.elffile import ELFFile

from explorer.firmware.elf_out import kernel_elf
from explorer.firmware.model import Arch, Endian, Symbol
from tests.helpers import arm_firmware

BASE = 0xC0008000
# A32: push {r4, lr}; mov r0, #0; pop {r4, pc}, then a word of data.
IMAGE = bytes.fromhex("10402de90000a0e31080bde8") + b"\x2a\0\0\0"
SYMBOLS = (
    Symbol(BASE, "T", "stext"),
    Symbol(BASE + 4, "t", "local_helper"),
    Symbol(BASE + 8, "W", "weak_function"),
    Symbol(BASE + 12, "d", "answer"),
    Symbol(BASE + 0x1000, "B", "beyond_the_image"),
    Symbol(0x100, "A", "absolute_value"),
    Symbol(0, "U", "undefined_one"),
)


def symbols_of(elf: bytes) -> dict[str, tuple[int, int, str, str, object]]:
    symtab = ELFFile(BytesIO(elf)).get_section_by_name(".symtab")
    return {
        s.name: (s["st_value"], s["st_size"], s["st_info"]["type"], s["st_info"]["bind"], s["st_shndx"])
        for s in symtab.iter_symbols()
        if s.name
    }


def test_every_recovered_symbol_is_in_the_symbol_table_typed_bound_and_sized_to_the_next() -> None:
    firmware = arm_firmware(SYMBOLS)
    symbols = symbols_of(kernel_elf(firmware, IMAGE))
    assert symbols == {
        "stext": (BASE, 4, "STT_FUNC", "STB_GLOBAL", 1),
        "local_helper": (BASE + 4, 4, "STT_FUNC", "STB_LOCAL", 1),
        "weak_function": (BASE + 8, 4, "STT_FUNC", "STB_WEAK", 1),
        "answer": (BASE + 12, 0x1000 - 12, "STT_OBJECT", "STB_LOCAL", 1),
        "beyond_the_image": (BASE + 0x1000, 0, "STT_OBJECT", "STB_GLOBAL", "SHN_ABS"),
        "absolute_value": (0x100, BASE - 0x100, "STT_NOTYPE", "STB_GLOBAL", "SHN_ABS"),
    }


def test_the_image_is_one_loadable_section_at_the_proven_base() -> None:
    elf = ELFFile(BytesIO(kernel_elf(arm_firmware(SYMBOLS), IMAGE)))
    text = elf.get_section_by_name(".text")
    assert (text["sh_addr"], text.data()) == (BASE, IMAGE)
    (segment,) = elf.iter_segments()
    assert (segment["p_type"], segment["p_vaddr"], segment.data()) == ("PT_LOAD", BASE, IMAGE)
    assert (elf["e_machine"], elf.little_endian, elf.elfclass) == ("EM_ARM", True, 32)


def test_the_symbol_table_lists_locals_first_as_elf_requires() -> None:
    elf = ELFFile(BytesIO(kernel_elf(arm_firmware(SYMBOLS), IMAGE)))
    symtab = elf.get_section_by_name(".symtab")
    bindings = [s["st_info"]["bind"] for s in symtab.iter_symbols()][1:]
    first_other = symtab["sh_info"]
    assert set(bindings[: first_other - 1]) == {"STB_LOCAL"}
    assert "STB_LOCAL" not in bindings[first_other - 1 :]


def test_a_big_endian_mips_kernel_gets_its_machine_and_byte_order() -> None:
    firmware = arm_firmware(SYMBOLS, arch=Arch.MIPS, endian=Endian.BIG)
    elf = ELFFile(BytesIO(kernel_elf(firmware, IMAGE)))
    assert (elf["e_machine"], elf.little_endian) == ("EM_MIPS", False)
    assert elf.get_section_by_name(".symtab").get_symbol_by_name("stext")[0]["st_value"] == BASE


def test_the_same_kernel_gives_the_same_bytes() -> None:
    assert kernel_elf(arm_firmware(SYMBOLS), IMAGE) == kernel_elf(arm_firmware(SYMBOLS), IMAGE)


def test_gdb_names_and_disassembles_the_functions(tmp_path: Path) -> None:
    # gdb-multiarch: scripts/setup installs it; without it the test fails, it does not skip.
    path = tmp_path / "kernel.elf"
    path.write_bytes(kernel_elf(arm_firmware(SYMBOLS), IMAGE))
    gdb = subprocess.run(
        [
            "gdb-multiarch",
            "-nx",
            "-batch",
            "-ex",
            f"file {path}",
            "-ex",
            f"info symbol {BASE + 6:#x}",
            "-ex",
            "x/3i stext",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "local_helper + 2 in section .text" in gdb.stdout, gdb.stdout + gdb.stderr
    assert "<stext>:\tpush\t{r4, lr}" in gdb.stdout
    assert "<weak_function>:\tpop\t{r4, pc}" in gdb.stdout


def test_an_aarch64_kernel_gets_an_elf64_with_its_64_bit_addresses() -> None:
    base = 0xFFFF800008000000
    symbols = (Symbol(base, "T", "_text"), Symbol(base + 8, "t", "helper"))
    firmware = arm_firmware(symbols, arch=Arch.AARCH64)
    elf = ELFFile(BytesIO(kernel_elf(firmware, IMAGE)))
    assert (elf["e_machine"], elf.elfclass, elf.little_endian) == ("EM_AARCH64", 64, True)
    (segment,) = elf.iter_segments()
    assert (segment["p_type"], segment["p_vaddr"], segment.data()) == ("PT_LOAD", base, IMAGE)
    assert symbols_of(kernel_elf(firmware, IMAGE)) == {
        "_text": (base, 8, "STT_FUNC", "STB_GLOBAL", 1),
        "helper": (base + 8, 0, "STT_FUNC", "STB_LOCAL", 1),
    }
