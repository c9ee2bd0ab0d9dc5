"""The kernel's own compressed symbol table (kallsyms), found and decoded in a raw kernel image.

`scripts/kallsyms` emits these tables into .rodata (in the kernel's endianness; PTR is a pointer,
32 or 64 bits, and every table starts aligned to a pointer on 64-bit kernels):

    kallsyms_addresses[N]   absolute addresses, PTR each    (older kernels, !KALLSYMS_BASE_RELATIVE)
      or kallsyms_offsets[N] (32-bit) + kallsyms_relative_base (PTR)
                                                            (4.6+; "absolute percpu" variant on x86-64)
    kallsyms_num_syms       N (32-bit)
    kallsyms_names          per symbol: length (1 byte; 6.1+: 2 bytes when bit 7 is set), token bytes
    kallsyms_markers        offset into names of every 256th symbol (32-bit; PTR before 6.1 on
                            64-bit kernels, which this module does not read)
    kallsyms_seqs_of_names  6.2/6.3 (and backported: Debian's arm64 6.1.0-57 has it) here: 3 bytes per symbol
    kallsyms_token_table    256 NUL-terminated strings, the expansion of each byte value
    kallsyms_token_index    256 u16 offsets into the token table

and from 6.4 on the order is num_syms, names, markers, token_table, token_index, then the
addresses/offsets, relative_base and seqs_of_names. Each table starts aligned (4 or 16 bytes).
7.0 dropped kallsyms_relative_base. A 32-bit kernel that is not relocatable (every 32-bit ARM)
stores absolute addresses in kallsyms_offsets, which decode as "absolute" (checked on Debian's
7.2 armmp against its /proc/kallsyms). 64-bit and relocatable kernels (MIPS with KASLR) store
place-relative offsets, each the symbol's address minus the entry's own. Those place every
symbol in the image but give no virtual address: their "addresses" here are image offsets,
and `symbols` proves the base separately. A relocatable 64-bit kernel linked with
--no-apply-dynamic-relocs (arm64) leaves kallsyms_relative_base zero in the image (the kernel
writes it while relocating itself at boot): its "addresses" are then offsets from the lowest
symbol, `relative_base` is 0 and `relative_base_at` says where the slot is, for `symbols` to
find the relocation that fills it.

The search anchors on token_index (256 ascending u16 starting at 0 whose strides are the
token lengths) and walks outward, verifying every step against the others. This module only
reads symbols and their link-time addresses; it never decides where the image lives in memory
(that proof is in `symbols`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from explorer.errors import FirmwareError
from explorer.firmware.model import Endian, Symbol

WORD = 4  # a .long: num_syms, markers, offsets, token_index pairs; PTR on 32-bit kernels
TOKENS = 256
MAX_TOKEN_LEN = 255  # a token is at most as long as a symbol name in practice
MAX_EMPTY_TOKENS = 64  # byte values neither used in names nor given a token; a zero-filled area has 256
MAX_ALIGN_PAD = 15  # tables are aligned to at most 16 bytes (".align 4" on ARM/MIPS means 2**4)
KSYM_NAME_LEN = 512  # longest name (6.1+), in bytes, including the type letter
NAMES_PER_MARKER = 256
MARKER_STRIDE_MIN = NAMES_PER_MARKER * 2  # each name: a length byte and at least one token byte
MARKER_STRIDE_MAX = NAMES_PER_MARKER * (2 + KSYM_NAME_LEN)
MARKER_SEARCH_WINDOW = 8 << 20  # markers (+ 6.2/6.3 seqs_of_names) lie within this of the token table


@dataclass(frozen=True)
class KallsymsLayout:
    """Where each table was found (byte offsets into the image) and how addresses are encoded."""

    endian: Endian
    num_syms: int  # offset of kallsyms_num_syms
    names: int
    markers: int
    token_table: int
    token_index: int
    addresses: int  # offset of kallsyms_addresses or kallsyms_offsets
    encoding: str  # "absolute", "base-relative", "base-relative-percpu" or "place-relative"
    relative_base: int | None  # value of kallsyms_relative_base, for the base-relative encodings
    relative_base_at: int | None = None  # its offset in the image, for the base-relative encodings
    pointer_size: int = WORD  # bytes of a PTR: 4, or 8 on 64-bit kernels


@dataclass(frozen=True)
class Kallsyms:
    """Decoded kallsyms: symbols with their link-time addresses, sorted by address.

    For the "place-relative" encoding the addresses are offsets into the image (base 0).
    """

    layout: KallsymsLayout
    symbols: tuple[Symbol, ...]


def find_kallsyms(data: bytes, endian: Endian, pointer_size: int = WORD) -> Kallsyms:
    """Locate and decode the kallsyms tables in `data`; `endian` is tried first, then the other one.

    `pointer_size` is the kernel's: 4 for 32-bit kernels, 8 for 64-bit ones."""
    for order in (endian, Endian.BIG if endian is Endian.LITTLE else Endian.LITTLE):
        for index_at in _token_index_candidates(data, order):
            found = _decode_around(data, order, index_at, pointer_size)
            if found is not None:
                return found
    raise FirmwareError(
        "no kallsyms table found in the kernel image: it was built without CONFIG_KALLSYMS "
        "or its tables are laid out as explorer does not know; supply an ELF vmlinux with a "
        "symbol table instead"
    )


def _fmt(order: Endian, code: str) -> str:
    return ("<" if order is Endian.LITTLE else ">") + code


def _token_index_candidates(data: bytes, order: Endian) -> Iterator[int]:
    """Word-aligned offsets where 256 u16 start at 0 and rise by 1..MAX_TOKEN_LEN+1 each step."""
    halves = np.frombuffer(data, dtype=_fmt(order, "u2"), count=len(data) // 2)
    if len(halves) < TOKENS + 1:
        return
    span = len(halves) - TOKENS + 1
    alive = np.flatnonzero(halves[:span:2] == 0) * 2  # u16 index of a word-aligned zero
    for k in range(1, TOKENS):
        # uint16 arithmetic: a stride of 0 wraps to 65535 and fails the bound
        stride = halves[alive + k] - halves[alive + k - 1] - np.uint16(1)
        alive = alive[stride <= MAX_TOKEN_LEN]
        if not len(alive):
            return
    for u16_index in alive:
        yield int(u16_index) * 2


def _decode_around(data: bytes, order: Endian, index_at: int, pointer: int) -> Kallsyms | None:
    """Walk outward from a token_index candidate; None unless every table checks out."""
    token_index = np.frombuffer(data, dtype=_fmt(order, "u2"), count=TOKENS, offset=index_at)
    table = _token_table(data, token_index, index_at)
    if table is None:
        return None
    table_at, table_end = table
    tokens = data[table_at:table_end].split(b"\0")
    if sum(not t for t in tokens) > MAX_EMPTY_TOKENS or not b"".join(tokens).isascii():
        return None
    for markers_at, markers in _marker_candidates(data, order, table_at):
        names = _names_before(data, order, markers_at, markers)
        if names is None:
            continue
        num_syms_at, count, spans = names
        located = _addresses(data, order, num_syms_at, count, index_at + TOKENS * 2, pointer)
        if located is None:
            continue
        addresses_at, encoding, relative_base_at, relative_base, addresses = located
        layout = KallsymsLayout(
            order, num_syms_at, _after_padding(data, num_syms_at + WORD), markers_at, table_at, index_at,
            addresses_at, encoding, relative_base, relative_base_at, pointer,
        )  # fmt: skip
        return Kallsyms(layout, _symbols(data, tokens, spans, addresses))
    return None


def _token_table(data: bytes, token_index: np.ndarray, index_at: int) -> tuple[int, int] | None:
    """(start, end) of token_table, the end at the last token's NUL: the NULs fall where token_index says."""
    last = int(token_index[-1])
    latest = index_at - last - 2  # the last token is at least one byte and its NUL
    for table_at in range(latest - latest % WORD, latest - MAX_TOKEN_LEN - MAX_ALIGN_PAD - 1, -WORD):
        if table_at < 0:
            return None
        end = data.find(0, table_at + last, index_at)
        if end < 0 or data[end:index_at].strip(b"\0") or index_at - end > MAX_ALIGN_PAD + 1:
            continue
        body = np.frombuffer(data, dtype=np.uint8, count=end - table_at, offset=table_at)
        nuls = np.flatnonzero(body == 0)
        if len(nuls) == TOKENS - 1 and np.array_equal(nuls + 1, token_index[1:]):
            return table_at, end
    return None


def _marker_candidates(data: bytes, order: Endian, table_at: int) -> Iterator[tuple[int, np.ndarray]]:
    """Runs of words before the token table that start at 0 and rise by plausible name-block sizes.

    Nearest the token table first: that is where markers sit, except on 6.2/6.3 where
    seqs_of_names (3 bytes per symbol) comes between them.
    """
    start = max(0, table_at - MARKER_SEARCH_WINDOW)
    start += -start % WORD
    words = np.frombuffer(data, dtype=_fmt(order, "u4"), count=(table_at - start) // WORD, offset=start)
    strides = np.diff(words.astype(np.int64))
    plausible = (strides >= MARKER_STRIDE_MIN) & (strides <= MARKER_STRIDE_MAX)
    zeros = np.flatnonzero(words == 0)
    # run length of plausible strides from each zero, found by walking all candidates together
    lengths = np.ones(len(zeros), dtype=np.int64)
    alive = np.arange(len(zeros))
    while len(alive):
        at = zeros[alive] + lengths[alive] - 1
        ok = at < len(plausible)
        ok[ok] = plausible[at[ok]]
        alive = alive[ok]
        lengths[alive] += 1
    # the gap up to the token table is alignment, or seqs_of_names: at most 4 bytes per symbol
    gaps = table_at - (start + (zeros + lengths) * WORD)
    reachable = np.flatnonzero(gaps <= lengths * NAMES_PER_MARKER * WORD + MAX_ALIGN_PAD)
    for i in reachable[np.argsort(gaps[reachable], kind="stable")]:
        zero, length = int(zeros[i]), int(lengths[i])
        # the word after the markers may rise plausibly by chance: also try the run without it
        for markers_len in (length, length - 1)[: 2 if length > 1 else 1]:
            yield start + zero * WORD, words[zero : zero + markers_len]


def _name_length(data: bytes, at: int) -> tuple[int, int]:
    """(header bytes, compressed length) of the name at `at`: 6.1+ spends 2 bytes on long names."""
    first = data[at]
    if first & 0x80:
        return 2, (first & 0x7F) | (data[at + 1] << 7)
    return 1, first


def _names_before(
    data: bytes, order: Endian, markers_at: int, markers: np.ndarray
) -> tuple[int, int, list[tuple[int, int]]] | None:
    """Find num_syms before the names that `markers` index; (its offset, N, name spans) or None.

    num_syms sits right before the names, which end (up to alignment) where the markers begin,
    and N must need exactly len(markers) markers.
    """
    last_block = int(markers[-1])
    latest = markers_at - last_block - 2 * WORD
    earliest = max(0, latest - MARKER_STRIDE_MAX - MAX_ALIGN_PAD)
    earliest += -earliest % WORD
    if latest < earliest:
        return None
    words = np.frombuffer(
        data, dtype=_fmt(order, "u4"), count=(latest - earliest) // WORD + 1, offset=earliest
    )
    fits = np.flatnonzero((words + NAMES_PER_MARKER - 1) // NAMES_PER_MARKER == len(markers))
    for i in fits[::-1]:
        num_syms_at = earliest + int(i) * WORD
        names_at = _after_padding(data, num_syms_at + WORD)
        spans = _name_spans(data, names_at, int(words[i]), markers, markers_at)
        if spans is not None:
            return num_syms_at, int(words[i]), spans
    return None


def _name_spans(
    data: bytes, names_at: int, count: int, markers: np.ndarray, names_end: int
) -> list[tuple[int, int]] | None:
    """(offset, length) of each compressed name, or None if the walk disagrees with the markers."""
    spans = []
    at = names_at
    for i in range(count):
        if i % NAMES_PER_MARKER == 0 and at - names_at != markers[i // NAMES_PER_MARKER]:
            return None
        if at >= names_end:
            return None
        header, length = _name_length(data, at)
        if length == 0:
            return None
        spans.append((at + header, length))
        at += header + length
    if not 0 <= names_end - at <= MAX_ALIGN_PAD or data[at:names_end].strip(b"\0"):
        return None
    return spans


def _after_padding(data: bytes, at: int) -> int:
    """Skip the zero words that align the next table (which never starts with a zero word)."""
    for pad in range(0, MAX_ALIGN_PAD + 1, WORD):
        if data[at + pad : at + pad + WORD] != bytes(WORD):
            return at + pad
    return at


def _before_padding(data: bytes, at: int) -> int:
    """Step back over the zero words that aligned the table before `at` (whose last word is never zero)."""
    for pad in range(0, MAX_ALIGN_PAD + 1, WORD):
        if data[max(0, at - pad - WORD) : at - pad] != bytes(WORD):
            return at - pad
    return at


def _addresses(
    data: bytes, order: Endian, num_syms_at: int, count: int, after_index: int, pointer: int
) -> tuple[int, str, int | None, int | None, np.ndarray] | None:
    """Find the address table: before num_syms (up to 6.3) or right after token_index (6.4+).

    (its offset, encoding, kallsyms_relative_base's offset and value (None for the encodings
    without one), the addresses), or None. token_index is 512 bytes from an aligned start, so
    nothing pads the offsets that follow it.
    """
    before_num_syms = _before_padding(data, num_syms_at)
    if pointer == WORD:
        relative_base_at = before_num_syms - WORD
        offsets_end = after_index + count * WORD
        relative_base_after_index = _after_padding(data, offsets_end)
    else:
        # A 64-bit relative base is a pointer-aligned PTR that may be zero in the image (filled in
        # at boot), so it cannot be told from padding by its value: its place is fixed instead,
        # right before num_syms (which is pointer aligned), or pointer aligned after the offsets.
        relative_base_at = num_syms_at - pointer
        offsets_end = after_index + count * WORD
        relative_base_after_index = offsets_end + -offsets_end % pointer
    # Where the table may be, the size of its entries, kallsyms_relative_base's place (None for
    # the encodings that have none), and the decoders for those. Place-relative is 7.0+, so only
    # after token_index. Absolute kernel addresses (0x80000000 up) read as place-relative land
    # before the image, so trying it first never mistakes one for the other, while a
    # place-relative table of text symbols (all below the table) would read as a rising run of
    # huge absolute addresses.
    candidates: list[tuple[int, int, int | None, tuple[tuple[_Decoder, str], ...]]] = [
        (_before_padding(data, relative_base_at) - count * WORD, WORD, relative_base_at, ()),
        (before_num_syms - count * pointer, pointer, None, ((_absolute, "absolute"),)),
        (after_index, WORD, relative_base_after_index, ()),
        (after_index, WORD, None, ((_place_relative, "place-relative"),)),
        (after_index, pointer, None, ((_absolute, "absolute"),)),
    ]
    for table_at, size, base_at, decoders in candidates:
        if (
            table_at < 0
            or table_at + count * size > len(data)
            or (base_at is not None and base_at + pointer > len(data))
        ):
            continue
        words = np.frombuffer(data, dtype=_fmt(order, f"u{size}"), count=count, offset=table_at)
        if base_at is not None:
            base_word = np.frombuffer(data, dtype=_fmt(order, f"u{pointer}"), count=1, offset=base_at)
            relative_base = int(base_word[0])
            decoded, encoding = _relative(words, relative_base, pointer)
            if decoded is not None:
                return table_at, encoding, base_at, relative_base, decoded
        for decode, encoding in decoders:
            decoded = decode(words, table_at, len(data))
            if decoded is not None:
                return table_at, encoding, None, None, decoded
    return None


_Decoder = Callable[[np.ndarray, int, int], "np.ndarray | None"]


def _is_symbol_order(addresses: np.ndarray) -> bool:
    """scripts/kallsyms sorts by address, and a real table spans more than one address."""
    return bool(np.all(addresses[1:] >= addresses[:-1])) and addresses[-1] > addresses[0]


def _absolute(words: np.ndarray, _table_at: int, _image_size: int) -> np.ndarray | None:
    addresses = words.astype(np.uint64)  # 64-bit kernel addresses do not fit an int64
    return addresses if _is_symbol_order(addresses) else None


def _place_relative(words: np.ndarray, table_at: int, image_size: int) -> np.ndarray | None:
    """Image offsets of the symbols (7.0+): each entry is the symbol minus the entry's own place.

    The first symbol (text) must then lie in the image before the table, which is in .rodata,
    and the last in the image or just past it (bss, when KALLSYMS_ALL is on). Small absolute
    addresses (a kernel linked at 0) read this way all land after the table.
    """
    places = table_at + WORD * np.arange(len(words), dtype=np.int64)
    offsets = places + words.astype(np.int32).astype(np.int64)
    if not 0 <= offsets[0] < table_at or offsets[-1] >= 2 * image_size or not _is_symbol_order(offsets):
        return None
    return offsets


def _relative(offsets: np.ndarray, relative_base: int, pointer: int) -> tuple[np.ndarray | None, str]:
    """Decode kallsyms_offsets; the percpu variant (32-bit here) stores most symbols as base - 1 - offset."""
    signed = offsets.astype(np.int32).astype(np.int64)
    if np.count_nonzero(signed < 0) * 2 > len(signed):
        if pointer != WORD:  # only x86-64 has it, and explorer reads no x86 kernel
            return None, "base-relative-percpu"
        addresses = np.where(signed >= 0, signed, relative_base - 1 - signed)
        encoding = "base-relative-percpu"
    else:
        if signed[0] != 0:  # the relative base is the lowest address, so the first offset is 0
            return None, "base-relative"
        if relative_base + int(offsets.max()) >= 1 << (8 * pointer):
            return None, "base-relative"
        addresses = np.uint64(relative_base) + offsets.astype(np.uint64)
        encoding = "base-relative"
    if int(addresses.max()) >= 1 << (8 * pointer) or not _is_symbol_order(addresses):
        return None, encoding
    return addresses, encoding


def _symbols(
    data: bytes, tokens: list[bytes], spans: list[tuple[int, int]], addresses: np.ndarray
) -> tuple[Symbol, ...]:
    """Expand each name through the token table; its first character is the nm type letter."""
    expand = [t.decode("ascii") for t in tokens].__getitem__
    out = []
    for (at, length), address in zip(spans, addresses.tolist(), strict=True):
        name = "".join(map(expand, data[at : at + length]))
        out.append(Symbol(address, name[:1], name[1:]))
    out.sort(key=lambda s: s.address)  # stable: equal addresses keep the kernel's order
    return tuple(out)
