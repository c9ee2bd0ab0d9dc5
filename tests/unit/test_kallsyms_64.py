"""kallsyms of 64-bit kernels: 8-aligned tables, a 64-bit relative base (which a relocatable arm64
kernel leaves zero in its image, to be filled in at boot), and the base such a kernel proves with
its own relocation table."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_kallsyms import build_kallsyms, symbol_tables

from explorer.errors import FirmwareError
from explorer.firmware.kallsyms import find_kallsyms
from explorer.firmware.model import Arch, Endian, KernelImage, Symbol
from explorer.firmware.relocations import R_AARCH64_RELATIVE
from explorer.firmware.symbols import recover_symbols

KIMAGE_VADDR = 0xFFFF800008000000  # 6.1, 48-bit VA
LAYOUTS_64 = ("absolute", "base-relative", "seqs-of-names", "tables-first")
A64_PACIASP, A64_BODY = 0xD503233F, 0x8B010000  # paciasp; add x0, x0, x1


def _to_64_bit(symbols: list[Symbol]) -> list[Symbol]:
    return [Symbol(s.address - 0x80000000 + KIMAGE_VADDR, s.type, s.name) for s in symbols]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    symbols=symbol_tables().map(_to_64_bit),
    layout=st.sampled_from(LAYOUTS_64),
    endian=st.sampled_from(Endian),
    prefix=st.binary(max_size=2048),
)
def test_every_64_bit_layout_decodes_to_exactly_the_symbols_encoded(
    symbols: list[Symbol], layout: str, endian: Endian, prefix: bytes
) -> None:
    tables = build_kallsyms(symbols, layout, endian, alignment=8, pointer=8)
    image = prefix + bytes(-len(prefix) % 8) + tables + bytes(64)
    found = find_kallsyms(image, endian, pointer_size=8)
    assert list(found.symbols) == symbols
    assert found.layout.pointer_size == 8
    assert found.layout.encoding == ("absolute" if layout == "absolute" else "base-relative")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(symbols=symbol_tables().map(_to_64_bit), layout=st.sampled_from(LAYOUTS_64[1:]))
def test_a_relative_base_left_zero_gives_offsets_from_the_lowest_symbol_and_its_slot(
    symbols: list[Symbol], layout: str
) -> None:
    tables = build_kallsyms(symbols, layout, Endian.LITTLE, alignment=8, pointer=8, stored_base=0)
    found = find_kallsyms(tables, Endian.LITTLE, pointer_size=8)
    lowest = symbols[0].address
    assert list(found.symbols) == [Symbol(s.address - lowest, s.type, s.name) for s in symbols]
    slot = found.layout.relative_base_at
    assert found.layout.relative_base == 0 and slot is not None and tables[slot : slot + 8] == bytes(8)


FUNCTIONS = 400
TEXT_AT = 0x10000  # _stext: the lowest kallsyms symbol, above the Image header's page


def _relocatable_arm64_kernel(base: int, slot_records: int = 1) -> tuple[KernelImage, list[Symbol]]:
    """An arm64-like image: code, kallsyms with a zero relative base, then .rela.dyn with a record
    per pointer the image holds (zero in the image) and `slot_records` for the relative base."""
    rng = random.Random(FUNCTIONS)
    words = [A64_BODY] * (TEXT_AT // 4)
    placed = []
    for i in range(FUNCTIONS):
        placed.append(Symbol(4 * len(words), "Tt"[i % 2], f"function_{i}"))
        words += [A64_PACIASP] + [A64_BODY] * rng.randrange(3, 60)
    words += [0] * (len(words) % 2)
    code = struct.pack(f"<{len(words)}I", *words)
    pointers_at = len(code)
    pointed = rng.sample(placed, FUNCTIONS // 3)
    data = bytes(8 * len(pointed))  # the pointers, left for the kernel to fill in
    symbols = [Symbol(base + s.address, s.type, s.name) for s in placed]
    tables_at = pointers_at + len(data)
    tables = build_kallsyms(symbols, "seqs-of-names", Endian.LITTLE, 8, pointer=8, stored_base=0)
    slot = tables_at + find_kallsyms(tables, Endian.LITTLE, 8).layout.relative_base_at  # type: ignore[operator]
    records = [(base + pointers_at + 8 * i, base + s.address) for i, s in enumerate(pointed)]
    records[len(records) // 2 : len(records) // 2] = [(base + slot, base + TEXT_AT)] * slot_records
    rela = b"".join(struct.pack("<QQQ", place, R_AARCH64_RELATIVE, target) for place, target in records)
    image = code + data + tables + bytes(-len(tables) % 8) + rela
    return KernelImage(Arch.AARCH64, Endian.LITTLE, image, ()), symbols


@pytest.mark.parametrize("base", [KIMAGE_VADDR, 0xFFFF800080000000, 0xFFFFFFC008000000])
def test_the_relocation_that_fills_the_relative_base_places_the_kernel(base: int) -> None:
    image, symbols = _relocatable_arm64_kernel(base)
    table = recover_symbols(image)
    assert table.base == base
    assert list(table.symbols) == symbols
    assert "fills kallsyms_relative_base" in table.proof and "pointed at" in table.proof


@pytest.mark.parametrize(("records", "says"), [(0, "0 of the kernel's"), (2, "2 of the kernel's")])
def test_no_or_two_relocations_for_the_relative_base_is_a_firmware_error(records: int, says: str) -> None:
    image, _ = _relocatable_arm64_kernel(KIMAGE_VADDR, slot_records=records)
    with pytest.raises(FirmwareError, match=says) as error:
        recover_symbols(image)
    assert "\n" not in str(error.value)
