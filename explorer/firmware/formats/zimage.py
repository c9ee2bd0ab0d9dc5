"""ARM zImage: the self-decompressing kernel (arch/arm/boot/compressed), peeled to the Image inside.

Header (in the kernel's data endianness): magic 0x016f2818 at 0x24, link-time start and end at
0x28/0x2c (end - start is the zImage size), and 0x04030201 at 0x30 telling the endianness. The
compressed Image is somewhere inside, followed by its decompressed size as a little-endian word;
a DTB may be appended right after the zImage end. This module never executes the stub.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from explorer.errors import FirmwareError
from explorer.firmware.decompress import first_stream
from explorer.firmware.model import Arch, Endian, KernelImage, Layer

KIND = "zimage"
MAGIC = 0x016F2818
ENDIAN_WORD = 0x04030201
HEADER_END = 0x34
FDT_MAGIC = b"\xd0\x0d\xfe\xed"


def _endian(data: bytes, offset: int) -> Endian | None:
    """The byte order of the zImage at `offset`, or None if there is no zImage header."""
    if offset < 0 or offset + HEADER_END > len(data):
        return None
    if struct.unpack_from("<I", data, offset + 0x24)[0] == MAGIC:
        order = Endian.LITTLE
    elif struct.unpack_from(">I", data, offset + 0x24)[0] == MAGIC:
        order = Endian.BIG
    else:
        return None
    endian_word = struct.unpack_from("<I", data, offset + 0x30)[0]
    if endian_word == ENDIAN_WORD:
        return Endian.LITTLE
    if endian_word == struct.unpack(">I", struct.pack("<I", ENDIAN_WORD))[0]:
        return Endian.BIG
    return order  # kernels before 3.17 have no endianness word: the magic's byte order tells


def probe(data: bytes, offset: int) -> bool:
    return _endian(data, offset) is not None


def candidates(data: bytes) -> Iterator[int]:
    for magic in (struct.pack("<I", MAGIC), struct.pack(">I", MAGIC)):
        pos = data.find(magic)
        while pos >= 0:
            if pos >= 0x24:
                yield pos - 0x24
            pos = data.find(magic, pos + 1)


def _appended_dtb(data: bytes, at: int) -> bytes | None:
    if data[at : at + 4] != FDT_MAGIC or at + 8 > len(data):
        return None
    (total,) = struct.unpack_from(">I", data, at + 4)
    if total < 40 or at + total > len(data):
        raise FirmwareError(f"the DTB appended at {at:#x} is truncated: re-append the complete DTB")
    return data[at : at + total]


def unpack(data: bytes, offset: int) -> KernelImage:
    endian = _endian(data, offset)
    if endian is None:
        raise FirmwareError(f"no zImage header at offset {offset:#x}")
    fmt = "<II" if endian is Endian.LITTLE else ">II"
    start, end = struct.unpack_from(fmt, data, offset + 0x28)
    size = (end - start) & 0xFFFF_FFFF
    if size <= HEADER_END:
        raise FirmwareError(f"the zImage at {offset:#x} states a size of {size} bytes: the header is corrupt")
    if offset + size > len(data):
        raise FirmwareError(
            f"the zImage at {offset:#x} is {size} bytes but only {len(data) - offset} are there: "
            "the file is truncated"
        )
    zimage = memoryview(data)[offset : offset + size]
    payload_offset, codec, payload = first_stream(zimage, HEADER_END)
    size_word_at = payload_offset + payload.consumed
    stated = zimage[size_word_at : size_word_at + 4]
    size_word_ok = len(stated) == 4 and struct.unpack("<I", stated)[0] == len(payload.data)
    detail = {
        "compression": codec.value,
        "payload_offset": payload_offset,
        "payload_size": payload.consumed,
        "image_size": len(payload.data),
        "size_word_ok": size_word_ok,
        "endian": endian.value,
    }
    dtb = _appended_dtb(data, offset + size)
    if dtb is not None:
        detail["appended_dtb_size"] = len(dtb)
    return KernelImage(
        arch=Arch.ARM,
        endian=endian,
        data=payload.data,
        layers=(Layer(KIND, offset, size, detail),),
        appended_dtb=dtb,
    )
