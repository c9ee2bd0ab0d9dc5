"""Compressed streams inside firmware: recognise one by its magic, find candidates, decompress one.

Every codec the Linux kernel and U-Boot use for a kernel payload lives here (gzip, bzip2, lzma,
xz, lzop, lz4 legacy and frame, zstd), behind one function, `decompress`, that reports how many
input bytes the stream occupied. Decompression is bounded (`MAX_OUTPUT`), so a hostile stream
cannot exhaust memory. This module never decides what a stream *is* (kernel, rootfs, DTB): the
format modules do that; it only turns compressed bytes into plain ones or raises FirmwareError.
"""

from __future__ import annotations

import bz2
import lzma
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import lz4.block
import lz4.frame
import lzo
import zstandard

from explorer.errors import FirmwareError

MAX_OUTPUT = 256 << 20  # no 32-bit embedded kernel image comes near this


class Codec(StrEnum):
    GZIP = "gzip"
    BZIP2 = "bzip2"
    LZMA = "lzma"
    XZ = "xz"
    LZO = "lzo"
    LZ4_LEGACY = "lz4-legacy"
    LZ4_FRAME = "lz4-frame"
    ZSTD = "zstd"


MAGICS: dict[Codec, bytes] = {
    Codec.GZIP: b"\x1f\x8b\x08",
    Codec.BZIP2: b"BZh",
    Codec.LZMA: b"\x5d\x00\x00",  # lzma -9 properties byte plus the low bytes of a large dictionary size
    Codec.XZ: b"\xfd7zXZ\x00",
    Codec.LZO: b"\x89LZO\x00\r\n\x1a\n",
    Codec.LZ4_LEGACY: b"\x02\x21\x4c\x18",
    Codec.LZ4_FRAME: b"\x04\x22\x4d\x18",
    Codec.ZSTD: b"\x28\xb5\x2f\xfd",
}


@dataclass(frozen=True)
class Decompressed:
    data: bytes
    consumed: int  # input bytes the stream occupied, trailer included


def _truncated(codec: Codec) -> FirmwareError:
    return FirmwareError(
        f"the {codec} stream ends early: the firmware file is truncated; use a complete image"
    )


def _too_big(codec: Codec) -> FirmwareError:
    return FirmwareError(
        f"the {codec} stream expands beyond {MAX_OUTPUT >> 20} MiB: this is not a kernel; check the image"
    )


class _StreamDecompressor(Protocol):
    """The interface zlib, bz2, lzma and lz4.frame decompressor objects share."""

    eof: bool
    unused_data: bytes | None

    def decompress(self, data: memoryview, max_length: int) -> bytes: ...


def _bounded(codec: Codec, decompressor: _StreamDecompressor, data: memoryview) -> Decompressed:
    """Decompress one stream with at most MAX_OUTPUT bytes of output; the stream must end."""
    out = decompressor.decompress(data, MAX_OUTPUT + 1)
    if len(out) > MAX_OUTPUT:
        raise _too_big(codec)
    if not decompressor.eof:
        raise _truncated(codec)
    unused = decompressor.unused_data or b""  # lz4.frame says None when nothing follows
    return Decompressed(out, len(data) - len(unused))


def _plausible_lzma_header(header: bytes) -> bool:
    """The 13-byte .lzma header: properties, dictionary size, uncompressed size (or -1 if streamed)."""
    if len(header) < 13 or header[0] >= 9 * 5 * 5:
        return False
    dictionary, size = struct.unpack_from("<IQ", header, 1)
    dictionary_ok = 1 << 12 <= dictionary <= 1 << 30 and (dictionary & (dictionary - 1) == 0)
    return dictionary_ok and (size == 0xFFFF_FFFF_FFFF_FFFF or size <= MAX_OUTPUT)


LZOP_MAX_BLOCK = 64 << 20  # lzop never writes larger blocks


def _lzop(data: memoryview) -> Decompressed:
    """The lzop container (what the kernel's `lzop -9` and U-Boot's IH_COMP_LZO hold): header, then blocks."""
    try:
        pos = len(MAGICS[Codec.LZO])
        version, _lib_version = struct.unpack_from(">HH", data, pos)
        pos += 4
        if version >= 0x0940:
            pos += 2  # version needed to extract
        method = data[pos]
        pos += 1
        if version >= 0x0940:
            pos += 1  # level
        (flags,) = struct.unpack_from(">I", data, pos)
        pos += 4
        if flags & 0x800:  # F_H_FILTER
            pos += 4
        pos += 8  # mode, mtime low
        if version >= 0x0940:
            pos += 4  # mtime high
        pos += 1 + data[pos] + 4  # name length, name, header checksum
        if flags & 0x40:  # F_H_EXTRA_FIELD: length, data, checksum
            (extra,) = struct.unpack_from(">I", data, pos)
            pos += 4 + extra + 4
        if method not in (1, 2, 3):  # LZO1X-1, LZO1X-1(15), LZO1X-999
            raise FirmwareError(f"lzop method {method} is not LZO1X; recompress the payload with lzop")
        blocks: list[bytes] = []
        total = 0
        while True:  # each block consumes at least 4 input bytes, so this ends with the input
            (plain_size,) = struct.unpack_from(">I", data, pos)
            pos += 4
            if plain_size == 0:
                break
            (packed_size,) = struct.unpack_from(">I", data, pos)
            pos += 4
            pos += 4 * bool(flags & 0x1) + 4 * bool(flags & 0x100)  # checksums of the plain block
            if packed_size < plain_size:
                pos += 4 * bool(flags & 0x2) + 4 * bool(flags & 0x200)  # checksums of the packed block
            packed = data[pos : pos + packed_size]
            if len(packed) < packed_size:
                raise _truncated(Codec.LZO)
            pos += packed_size
            if plain_size > LZOP_MAX_BLOCK or packed_size > plain_size:
                raise FirmwareError("an lzop block header is impossible: the image is corrupt")
            total += plain_size
            if total > MAX_OUTPUT:
                raise _too_big(Codec.LZO)
            block = (
                bytes(packed)
                if packed_size == plain_size
                else lzo.decompress(bytes(packed), False, plain_size)
            )
            if len(block) != plain_size:
                raise FirmwareError("an lzop block decompresses to the wrong size: the image is corrupt")
            blocks.append(block)
    except (struct.error, IndexError) as e:
        raise _truncated(Codec.LZO) from e
    except lzo.error as e:
        raise FirmwareError(f"corrupt lzop data ({e}): the image is damaged") from e
    return Decompressed(b"".join(blocks), pos)


LZ4_LEGACY_BLOCK = 8 << 20  # each legacy block expands to at most 8 MiB


def _lz4_legacy(data: memoryview) -> Decompressed:
    """`lz4 -l` output: magic, then (little-endian size, block) pairs until the input or the blocks end.

    The stream has no end marker: it ends where the next word is not a plausible block size (the
    kernel appends the decompressed size there) or where the input ends.
    """
    magic = MAGICS[Codec.LZ4_LEGACY]
    pos = len(magic)
    blocks: list[bytes] = []
    total = 0
    bound = lz4_compress_bound(LZ4_LEGACY_BLOCK)
    while pos + 4 <= len(data):
        if data[pos : pos + 4] == magic:  # concatenated legacy streams
            pos += 4
            continue
        (packed_size,) = struct.unpack_from("<I", data, pos)
        if packed_size == 0 or packed_size > bound or pos + 4 + packed_size > len(data):
            break
        try:
            block = lz4.block.decompress(
                data[pos + 4 : pos + 4 + packed_size], uncompressed_size=LZ4_LEGACY_BLOCK
            )
        except lz4.block.LZ4BlockError:
            if blocks:
                break  # a trailer word that happened to look like a block size
            raise FirmwareError("corrupt lz4 data: the image is damaged") from None
        pos += 4 + packed_size
        total += len(block)
        if total > MAX_OUTPUT:
            raise _too_big(Codec.LZ4_LEGACY)
        blocks.append(block)
        if len(block) < LZ4_LEGACY_BLOCK:
            break  # only the last block is short
    if not blocks:
        raise _truncated(Codec.LZ4_LEGACY)
    return Decompressed(b"".join(blocks), pos)


def lz4_compress_bound(size: int) -> int:
    return size + size // 255 + 16


def _zstd(data: memoryview) -> Decompressed:
    try:
        declared = zstandard.frame_content_size(data)
    except zstandard.ZstdError as e:
        raise FirmwareError(f"corrupt zstd frame header ({e}): the image is damaged") from e
    if declared > MAX_OUTPUT:
        raise _too_big(Codec.ZSTD)
    decompressor = zstandard.ZstdDecompressor(max_window_size=1 << 31).decompressobj()
    chunks: list[bytes] = []
    total = 0
    step = 1 << 20  # feed the input in pieces so an undeclared size is still checked against the bound
    try:
        for start in range(0, len(data), step):
            chunk = decompressor.decompress(data[start : start + step])
            total += len(chunk)
            if total > MAX_OUTPUT:
                raise _too_big(Codec.ZSTD)
            chunks.append(chunk)
            if decompressor.eof:
                break
    except zstandard.ZstdError as e:
        raise FirmwareError(f"corrupt zstd data ({e}): the image is damaged") from e
    if not decompressor.eof:
        raise _truncated(Codec.ZSTD)
    return Decompressed(b"".join(chunks), len(data) - len(decompressor.unused_data))


def decompress(codec: Codec, data: bytes | memoryview, offset: int = 0) -> Decompressed:
    """Decompress the one `codec` stream that starts at `offset`; whatever follows it is ignored."""
    view = memoryview(data)[offset:]
    if bytes(view[: len(MAGICS[codec])]) != MAGICS[codec]:
        raise FirmwareError(f"no {codec} stream at offset {offset:#x}: the image is damaged")
    try:
        match codec:
            case Codec.GZIP:
                return _bounded(codec, zlib.decompressobj(wbits=31), view)
            case Codec.BZIP2:
                return _bounded(codec, bz2.BZ2Decompressor(), view)
            case Codec.LZMA:
                if not _plausible_lzma_header(bytes(view[:13])):
                    raise FirmwareError(f"no lzma stream at offset {offset:#x}: the header is implausible")
                return _bounded(codec, lzma.LZMADecompressor(lzma.FORMAT_ALONE), view)
            case Codec.XZ:
                return _bounded(codec, lzma.LZMADecompressor(lzma.FORMAT_XZ), view)
            case Codec.LZO:
                return _lzop(view)
            case Codec.LZ4_LEGACY:
                return _lz4_legacy(view)
            case Codec.LZ4_FRAME:
                return _bounded(codec, lz4.frame.LZ4FrameDecompressor(), view)
            case Codec.ZSTD:
                return _zstd(view)
    except (zlib.error, OSError, EOFError, lzma.LZMAError, RuntimeError, ValueError) as e:
        # zlib.error, bz2's OSError/EOFError, LZMAError, lz4.frame's RuntimeError
        raise FirmwareError(f"corrupt {codec} data at offset {offset:#x} ({e}): the image is damaged") from e


_ANY_MAGIC = re.compile(b"|".join(re.escape(m) for m in MAGICS.values()))
_CODEC_OF_MAGIC = {m: c for c, m in MAGICS.items()}


def find_streams(
    data: bytes | memoryview, start: int = 0, end: int | None = None
) -> Iterator[tuple[int, Codec]]:
    """Offsets in [start, end) where a compressed stream's magic is, in increasing order.

    A magic is only a candidate: callers validate by decompressing.
    """
    end = len(data) if end is None else end
    pos = start
    while (m := _ANY_MAGIC.search(data, pos, end)) is not None:
        yield m.start(), _CODEC_OF_MAGIC[m.group()]
        pos = m.start() + 1


def first_stream(
    data: bytes | memoryview, start: int = 0, end: int | None = None
) -> tuple[int, Codec, Decompressed]:
    """The first stream in [start, end) that decompresses; FirmwareError if there is none."""
    for offset, codec in find_streams(data, start, end):
        try:
            return offset, codec, decompress(codec, data, offset)
        except FirmwareError:
            continue
    raise FirmwareError(
        "no compressed kernel payload found: the image is damaged or uses an unknown compression"
    )
