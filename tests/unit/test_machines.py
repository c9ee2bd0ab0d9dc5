"""find_machine_descs finds a kernel's machine_desc table by its shape, whatever the record size."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from explorer.firmware.machines import find_machine_descs
from explorer.firmware.model import Arch, Endian, KernelImage, MachineDesc, Symbol, SymbolTable

BASE = 0xC0008000
INIT_TEXT_END = 0x2000  # image offset of `_einittext`
TABLE = INIT_TEXT_END + 0x400  # exit text and the processor table lie in between
STRINGS = 0x8000

BOARDS = (
    MachineDesc("Generic DT based system", None, ()),
    MachineDesc("QNAP TS-109/TS-209", 1565, ()),
    MachineDesc("Marvell Kirkwood (Flattened Device Tree)", None, ("marvell,kirkwood",)),
    MachineDesc("Rockchip (Device Tree)", None, ("rockchip,rk3066a", "rockchip,rk3288")),
)


def kernel_with_table(boards: tuple[MachineDesc, ...], stride: int, endian: str = "<") -> bytes:
    """A fake image: text of zeros, then `struct machine_desc` records, then their strings."""
    image = bytearray(0x10000)
    strings = STRINGS

    def put_string(text: str) -> int:
        nonlocal strings
        address, raw = BASE + strings, text.encode() + b"\0"
        image[strings : strings + len(raw)] = raw
        strings += (len(raw) + 3) // 4 * 4
        return address

    for i, board in enumerate(boards):
        compat = 0
        if board.dt_compat:
            pointers = [put_string(c) for c in board.dt_compat] + [0]
            compat = BASE + strings
            image[strings : strings + 4 * len(pointers)] = struct.pack(f"{endian}{len(pointers)}I", *pointers)
            strings += 4 * len(pointers)
        nr = 0xFFFFFFFF if board.nr is None else board.nr
        atag_offset = 0 if board.nr is None else 0x100
        record = struct.pack(f"{endian}4I", nr, put_string(board.name), atag_offset, compat)
        image[TABLE + i * stride : TABLE + i * stride + 16] = record
    return bytes(image)


def symbols(with_init_text_end: bool = True) -> SymbolTable:
    names = [Symbol(BASE, "T", "_text")]
    if with_init_text_end:
        names.append(Symbol(BASE + INIT_TEXT_END, "T", "_einittext"))
    return SymbolTable(tuple(names), "kallsyms", BASE, "test")


def arm(data: bytes, endian: Endian = Endian.LITTLE) -> KernelImage:
    return KernelImage(Arch.ARM, endian, data, ())


@given(st.integers(8, 120).map(lambda words: words * 4))
def test_table_is_found_in_order_for_any_record_size(stride: int) -> None:
    found = find_machine_descs(arm(kernel_with_table(BOARDS, stride)), symbols())
    assert found == BOARDS


def test_big_endian_kernels() -> None:
    data = kernel_with_table(BOARDS, 0x6C, ">")
    assert find_machine_descs(arm(data, Endian.BIG), symbols()) == BOARDS


def test_lone_record_is_believed_only_right_after_init_text() -> None:
    data = kernel_with_table(BOARDS[1:2], 0x6C)
    assert find_machine_descs(arm(data), symbols()) == BOARDS[1:2]
    assert find_machine_descs(arm(data), symbols(with_init_text_end=False)) == ()


def test_no_table_gives_empty_tuple() -> None:
    assert find_machine_descs(arm(bytes(0x10000)), symbols()) == ()
    assert find_machine_descs(arm(b""), symbols()) == ()


def test_record_with_dangling_compatible_array_is_not_a_descriptor() -> None:
    data = bytearray(kernel_with_table(BOARDS, 0x6C))
    struct.pack_into("<I", data, TABLE + 2 * 0x6C + 12, BASE + 0x10)  # dt_compat -> zeros
    found = find_machine_descs(arm(bytes(data)), symbols())
    assert found == BOARDS[:2]
