"""7.0+ place-relative kallsyms: symbols are placed in the image by the table itself, and the base
is proven by the image's own pointers to its functions, never guessed."""

from __future__ import annotations

import random
import struct

import pytest
from test_kallsyms import build_kallsyms

from explorer.errors import FirmwareError
from explorer.firmware.model import Arch, Endian, KernelImage, Symbol
from explorer.firmware.symbols import recover_symbols

MIPS_ADDIU_SP = 0x27BDFFE0  # addiu sp, sp, -32
MIPS_BODY = 0x00801021  # move v0, a0
FUNCTIONS = 400


def _relocatable_kernel(base: int, pointed_share: float, endian: Endian) -> tuple[KernelImage, list[Symbol]]:
    """Functions, then a data area holding pointers to `pointed_share` of them, then kallsyms."""
    rng = random.Random(FUNCTIONS)
    words = [MIPS_BODY] * 0x40
    placed = []
    for i in range(FUNCTIONS):
        placed.append(Symbol(4 * len(words), "Tt"[i % 2], f"function_{i}"))
        words += [MIPS_ADDIU_SP] + [MIPS_BODY] * rng.randrange(3, 60)
    pointed = rng.sample(placed, int(pointed_share * FUNCTIONS))
    words += [base + s.address for s in pointed] + [0] * (-len(pointed) % 4)
    order = "<" if endian is Endian.LITTLE else ">"
    code_and_data = struct.pack(f"{order}{len(words)}I", *words)
    tables = build_kallsyms(placed, "place-relative", endian, 16, placed_at=len(code_and_data))
    return KernelImage(Arch.MIPS, endian, code_and_data + tables, ()), placed


@pytest.mark.parametrize("endian", list(Endian))
@pytest.mark.parametrize("base", [0x80100000, 0x80001000, 0xC0008000])
def test_the_base_is_where_the_images_pointers_point_at_the_functions(endian: Endian, base: int) -> None:
    image, placed = _relocatable_kernel(base, 0.3, endian)
    table = recover_symbols(image)
    assert table.base == base
    assert list(table.symbols) == [Symbol(base + s.address, s.type, s.name) for s in placed]
    assert "pointed at" in table.proof


def test_an_image_that_never_points_at_its_functions_has_no_provable_base() -> None:
    image, _ = _relocatable_kernel(0x80100000, 0.0, Endian.LITTLE)
    with pytest.raises(FirmwareError, match="cannot prove where the kernel image is loaded"):
        recover_symbols(image)
