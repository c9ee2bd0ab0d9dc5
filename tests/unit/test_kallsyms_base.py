"""The base address is the one where text symbols land on prologues, and it is never taken on trust."""

from __future__ import annotations

import random
import struct

import pytest

from explorer.errors import FirmwareError
from explorer.firmware.model import Arch, Endian, KernelImage, Symbol
from explorer.firmware.symbols import prove_base, recover_symbols

ARM_PUSH = 0xE92D4070  # push {r4, r5, r6, lr}
MIPS_ADDIU_SP = 0x27BDFFE0  # addiu sp, sp, -32
ARM_BODY = 0xE1A03000  # mov r3, r0: code that is no prologue
MIPS_BODY = 0x00801021  # move v0, a0


def _image(
    arch: Arch, endian: Endian, base: int, functions: int, prologue: int, body: int
) -> tuple[KernelImage, list[Symbol]]:
    """`functions` functions of random length starting with `prologue`, the first at image byte 0x8000."""
    rng = random.Random(functions)
    words: list[int] = [body] * (0x8000 // 4)
    symbols = []
    for i in range(functions):
        symbols.append(Symbol(base + 4 * len(words), "Tt"[i % 2], f"function_{i}"))
        words += [prologue] + [body] * rng.randrange(3, 60)
    order = "<" if endian is Endian.LITTLE else ">"
    return KernelImage(arch, endian, struct.pack(f"{order}{len(words)}I", *words), ()), symbols


@pytest.mark.parametrize(
    ("arch", "endian", "prologue", "body"),
    [
        (Arch.ARM, Endian.LITTLE, ARM_PUSH, ARM_BODY),
        (Arch.ARM, Endian.BIG, ARM_PUSH, ARM_BODY),
        (Arch.MIPS, Endian.LITTLE, MIPS_ADDIU_SP, MIPS_BODY),
        (Arch.MIPS, Endian.BIG, MIPS_ADDIU_SP, MIPS_BODY),
    ],
)
def test_the_base_is_where_text_symbols_start_with_prologues_not_the_lowest_symbol(
    arch: Arch, endian: Endian, prologue: int, body: int
) -> None:
    image, symbols = _image(arch, endian, 0xC0208000, 2000, prologue, body)
    base, proof = prove_base(image, tuple(symbols))
    assert base == 0xC0208000 != symbols[0].address
    assert proof.startswith(
        f"1024/1024 sampled text symbols start with a prologue at base {base:#x}; next best"
    )


def test_be8_arm_code_is_little_endian_inside_a_big_endian_kernel() -> None:
    image, symbols = _image(Arch.ARM, Endian.LITTLE, 0xC0008000, 500, ARM_PUSH, ARM_BODY)
    be8 = KernelImage(Arch.ARM, Endian.BIG, image.data, ())
    assert prove_base(be8, tuple(symbols))[0] == 0xC0008000


def test_symbols_that_do_not_land_on_code_are_a_firmware_error() -> None:
    image, symbols = _image(Arch.ARM, Endian.LITTLE, 0xC0008000, 500, ARM_BODY, ARM_BODY)
    with pytest.raises(FirmwareError, match="cannot prove where the kernel image is loaded"):
        prove_base(image, tuple(symbols))


def test_an_elf_symbol_table_is_used_as_given_with_its_base() -> None:
    image, symbols = _image(Arch.MIPS, Endian.LITTLE, 0x80100000, 300, MIPS_ADDIU_SP, MIPS_BODY)
    elf = KernelImage(
        Arch.MIPS, Endian.LITTLE, image.data, (), base=0x80100000, elf_symbols=tuple(reversed(symbols))
    )
    table = recover_symbols(elf)
    assert (table.source, table.base, list(table.symbols)) == ("elf", 0x80100000, symbols)
    assert "300/300 sampled text symbols start with a prologue" in table.proof
