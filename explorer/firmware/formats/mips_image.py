"""Raw MIPS kernel (vmlinux.bin, as a uImage or a boot loader carries it): data[0] = `_text`.

It has no header, so it is recognised by what it contains: the "Linux version" banner and many
`jr ra` (function return) instructions, whose byte order is the kernel's. This module never
scans: a raw kernel is only recognised where it starts.
"""

from __future__ import annotations

import struct

from explorer.errors import FirmwareError
from explorer.firmware.formats import RAW_KIND, raw_kernel
from explorer.firmware.model import Arch, Endian, KernelImage

KIND = RAW_KIND
BANNER = b"Linux version "
JR_RA = 0x03E00008
MIN_RETURNS = 100  # a kernel has tens of thousands of functions; a stray match is not code


def _endian(data: bytes, offset: int) -> Endian | None:
    if data.find(BANNER, offset) < 0:
        return None
    little = data.count(struct.pack("<I", JR_RA), offset)
    big = data.count(struct.pack(">I", JR_RA), offset)
    if max(little, big) < MIN_RETURNS:
        return None
    return Endian.LITTLE if little > big else Endian.BIG


def probe(data: bytes, offset: int) -> bool:
    return _endian(data, offset) is not None


def unpack(data: bytes, offset: int) -> KernelImage:
    endian = _endian(data, offset)
    if endian is None:
        raise FirmwareError(f"no raw MIPS kernel at offset {offset:#x}")
    return raw_kernel(Arch.MIPS, endian, data, offset)
