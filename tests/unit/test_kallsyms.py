"""kallsyms tables as scripts/kallsyms lays them out, in every layout since 2.6, found and decoded exactly."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from explorer.errors import FirmwareError
from explorer.firmware.kallsyms import find_kallsyms
from explorer.firmware.model import Endian, Symbol

# "tables-first" is 6.4 to 6.19; "tables-first-absolute" is 7.0 on for 32-bit kernels that are not
# relocatable (every 32-bit ARM): kallsyms_offsets holds the addresses themselves, with no base after.
LAYOUTS = (
    "absolute",
    "base-relative",
    "base-relative-percpu",
    "seqs-of-names",
    "tables-first",
    "tables-first-absolute",
)
NAME_CHARS = "abcdefghijklmnopqrstuvwxyz_0123456789"
EVERY_KERNEL_HAS = (
    "start_kernel", "setup_arch", "do_one_initcall", "kernel_init", "rest_init", "panic",
    "printk_sprint", "memcpy", "memset", "strcmp", "schedule", "mutex_lock", "kmalloc_trace",
    "platform_driver_register", "of_find_property", "irq_domain_add", "clk_prepare_enable",
)  # fmt: skip


def _tokens(names: list[str]) -> list[str]:
    """A token table like the kernel's: used characters stand for themselves, other bytes for pairs."""
    used = sorted({c for n in names for c in n})
    longer = (a + b * size for size in range(1, 256) for a in used for b in used)
    return [chr(b) if chr(b) in used else next(longer) for b in range(256)]


def _compress(name: str, tokens: list[str]) -> bytes:
    by_token = {t: b for b, t in enumerate(tokens) if t}
    out, at = bytearray(), 0
    while at < len(name):
        pair = name[at : at + 2]
        step = 2 if len(pair) == 2 and pair in by_token else 1
        out.append(by_token[name[at : at + step]])
        at += step
    return bytes(out)


def _align(blob: bytearray, alignment: int) -> None:
    blob += b"\0" * (-len(blob) % alignment)


def build_kallsyms(
    symbols: list[Symbol],
    layout: str,
    endian: Endian,
    alignment: int = 4,
    placed_at: int = 0,
    pointer: int = 4,
    stored_base: int | None = None,
) -> bytes:
    """The tables for `symbols` (sorted by address), laid out as the kernel of `layout` does.

    "place-relative" (7.0+, relocatable kernels) takes the symbols' image offsets as their
    addresses and `placed_at`, the image offset the tables will start at (alignment-aligned).
    `pointer` is the size of a PTR (8 on 64-bit kernels, whose tables are 8-aligned);
    `stored_base` is what the image holds as kallsyms_relative_base when it is not the lowest
    address (0: a relocatable arm64 kernel, which fills it in at boot).
    """
    e = "<" if endian is Endian.LITTLE else ">"
    full = [s.type + s.name for s in symbols]
    tokens = _tokens(full)
    names, markers = bytearray(), []
    for i, name in enumerate(full):
        if i % 256 == 0:
            markers.append(len(names))
        packed = _compress(name, tokens)
        length = len(packed)
        names += bytes([length]) if length < 0x80 else bytes([0x80 | (length & 0x7F), length >> 7])
        names += packed
    token_table = b"".join(t.encode() + b"\0" for t in tokens)
    token_index, at = [], 0
    for t in tokens:
        token_index.append(at)
        at += len(t) + 1

    addresses = [s.address for s in symbols]
    ptr = "I" if pointer == 4 else "Q"
    if layout in ("absolute", "tables-first-absolute"):
        address_table = struct.pack(f"{e}{len(addresses)}{ptr}", *addresses)
    elif layout == "base-relative-percpu":
        relative_base = min(a for a in addresses if a >= 0x80000000)
        offsets = [a if a < 0x80000000 else relative_base - 1 - a for a in addresses]
        address_table = struct.pack(f"{e}{len(offsets)}i", *offsets) + struct.pack(f"{e}I", relative_base)
    elif layout != "place-relative":
        address_table = struct.pack(f"{e}{len(addresses)}I", *[a - addresses[0] for a in addresses])
        address_table += bytes(-len(address_table) % pointer)
        address_table += struct.pack(f"{e}{ptr}", addresses[0] if stored_base is None else stored_base)

    def table(blob: bytearray, part: bytes) -> None:
        _align(blob, alignment)
        blob += part

    out = bytearray()
    tables_first = layout.startswith("tables-first") or layout == "place-relative"
    if not tables_first:
        table(out, address_table)
    table(out, struct.pack(f"{e}I", len(symbols)))
    table(out, names)
    table(out, struct.pack(f"{e}{len(markers)}I", *markers))
    if layout == "seqs-of-names":
        by_name = sorted(range(len(full)), key=lambda i: full[i][1:])
        table(out, b"".join(i.to_bytes(3, "big") for i in by_name))
    table(out, token_table)
    table(out, struct.pack(f"{e}256H", *token_index))
    if layout == "place-relative":
        _align(out, alignment)
        places = [placed_at + len(out) + 4 * i for i in range(len(addresses))]
        address_table = struct.pack(
            f"{e}{len(addresses)}i", *[a - p for a, p in zip(addresses, places, strict=True)]
        )
    if tables_first:
        table(out, address_table)
    _align(out, alignment)
    return bytes(out)


@st.composite
def symbol_tables(draw: st.DrawFn, percpu: bool = False) -> list[Symbol]:
    count = draw(st.integers(16, 700))
    # C identifiers (a letter or underscore first), and among them names every kernel has: a
    # table of a few names over three characters ("a0", "a0", "b") is no kernel's table, and
    # the locator rightly finds none in it.
    identifiers = st.builds(str.__add__, st.sampled_from(NAME_CHARS[:27]), st.text(NAME_CHARS, max_size=39))
    names = [*EVERY_KERNEL_HAS, *draw(st.lists(identifiers, min_size=count, max_size=count))]
    count = len(names)
    gaps = draw(st.lists(st.integers(1, 0x400), min_size=count, max_size=count))
    start = draw(st.integers(0x80000000, 0xC0000000)) & ~3
    addresses = [start + sum(gaps[: i + 1]) * 4 for i in range(count)]
    if percpu:  # a few per-CPU variables at small absolute addresses come first
        addresses = [0, 0x10, 0x40, *addresses]
        names = ["cpu_a", "cpu_b", "cpu_c", *names]
    types = draw(st.lists(st.sampled_from("TtWwDdRrBb"), min_size=len(names), max_size=len(names)))
    return [Symbol(a, t, n) for a, t, n in zip(addresses, types, names, strict=True)]


def _embedded(tables: bytes, prefix: bytes, suffix: bytes) -> bytes:
    return prefix + b"\0" * (-len(prefix) % 16) + tables + suffix


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    symbols=symbol_tables(),
    layout=st.sampled_from([layout for layout in LAYOUTS if layout != "base-relative-percpu"]),
    endian=st.sampled_from(Endian),
    alignment=st.sampled_from([4, 16]),
    prefix=st.binary(max_size=2048),
    suffix=st.binary(max_size=2048),
)
def test_every_layout_decodes_to_exactly_the_symbols_encoded(
    symbols: list[Symbol], layout: str, endian: Endian, alignment: int, prefix: bytes, suffix: bytes
) -> None:
    image = _embedded(build_kallsyms(symbols, layout, endian, alignment), prefix, suffix)
    found = find_kallsyms(image, endian)
    assert list(found.symbols) == symbols
    assert found.layout.endian is endian
    assert found.layout.encoding == ("absolute" if layout.endswith("absolute") else "base-relative")


@settings(max_examples=20, deadline=None)
@given(symbols=symbol_tables(percpu=True), endian=st.sampled_from(Endian))
def test_absolute_percpu_offsets_decode_to_absolute_and_relative_addresses(
    symbols: list[Symbol], endian: Endian
) -> None:
    found = find_kallsyms(build_kallsyms(symbols, "base-relative-percpu", endian), endian)
    assert list(found.symbols) == symbols
    assert found.layout.encoding == "base-relative-percpu"


@settings(max_examples=30, deadline=None)
@given(
    symbols=symbol_tables(),
    endian=st.sampled_from(Endian),
    alignment=st.sampled_from([4, 16]),
    prefix_pages=st.integers(0, 3),
)
def test_place_relative_offsets_decode_to_the_image_offsets_of_the_symbols(
    symbols: list[Symbol], endian: Endian, alignment: int, prefix_pages: int
) -> None:
    # Code first, the tables after it, as in a real image: offsets into the code before them.
    code_size = (symbols[-1].address - symbols[0].address + 0x1000 * (1 + prefix_pages) + 15) & ~15
    placed = [Symbol(s.address - symbols[0].address + 0x1000 * prefix_pages, s.type, s.name) for s in symbols]
    image = bytes(code_size) + build_kallsyms(
        placed, "place-relative", endian, alignment, placed_at=code_size
    )
    found = find_kallsyms(image, endian)
    assert found.layout.encoding == "place-relative"
    assert list(found.symbols) == placed


def test_the_endianness_is_found_when_the_caller_guessed_wrong() -> None:
    symbols = [Symbol(0xC0008000 + 4 * i, "T", f"func_{i}") for i in range(300)]
    found = find_kallsyms(build_kallsyms(symbols, "base-relative", Endian.BIG), Endian.LITTLE)
    assert found.layout.endian is Endian.BIG
    assert list(found.symbols) == symbols


def test_names_longer_than_127_compressed_bytes_use_the_two_byte_length() -> None:
    long_name = NAME_CHARS * 10  # compresses to at least half its 370 characters
    symbols = [
        Symbol(0xC0008000, "T", "short"),
        Symbol(0xC0008040, "t", long_name),
        Symbol(0xC0008080, "T", "x"),
    ]
    found = find_kallsyms(build_kallsyms(symbols, "tables-first", Endian.LITTLE), Endian.LITTLE)
    assert list(found.symbols) == symbols


def test_symbols_are_returned_in_address_order_keeping_the_kernel_order_for_aliases() -> None:
    symbols = [
        Symbol(0x80100000, "T", "_stext"),
        Symbol(0x80100000, "T", "__kernel_entry"),
        Symbol(0x80100010, "t", "a"),
    ]
    found = find_kallsyms(build_kallsyms(symbols, "base-relative", Endian.LITTLE), Endian.LITTLE)
    assert [s.name for s in found.symbols] == ["_stext", "__kernel_entry", "a"]


def test_an_image_without_kallsyms_is_a_firmware_error_naming_the_fix() -> None:
    with pytest.raises(FirmwareError, match="CONFIG_KALLSYMS"):
        find_kallsyms(bytes(range(256)) * 64 + b"\0" * 4096, Endian.LITTLE)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4096), st.sampled_from(Endian))
def test_arbitrary_bytes_give_symbols_or_a_firmware_error_never_a_crash(data: bytes, endian: Endian) -> None:
    with contextlib.suppress(FirmwareError):
        find_kallsyms(data, endian)


@settings(max_examples=100, deadline=None)
@given(symbols=symbol_tables(), layout=st.sampled_from(LAYOUTS[:2]), flip=st.data())
def test_a_corrupted_table_gives_symbols_or_a_firmware_error_never_a_crash(
    symbols: list[Symbol], layout: str, flip: st.DataObject
) -> None:
    image = bytearray(build_kallsyms(symbols, layout, Endian.LITTLE))
    at = flip.draw(st.integers(0, len(image) - 1))
    image[at] ^= flip.draw(st.integers(1, 255))
    with contextlib.suppress(FirmwareError):
        find_kallsyms(bytes(image), Endian.LITTLE)
