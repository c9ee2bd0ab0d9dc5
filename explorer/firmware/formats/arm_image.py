"""Raw ARM Image: an already decompressed 32-bit ARM kernel (arch/arm/boot/Image), data[0] = `_text`.

It has no header, so it is recognised by what it contains: the "Linux version" banner and code
whose instructions are overwhelmingly unconditional (condition field 0xE), read in one byte order.
Instructions in big-endian words mean a BE32 kernel; little-endian words starting with
`setend be` mean a BE8 kernel (big-endian data, little-endian code). AArch64 Images are refused
by name. This module never scans: a raw Image is only recognised where it starts.
"""

from __future__ import annotations

import numpy as np

from explorer.errors import FirmwareError
from explorer.firmware.formats import RAW_KIND, raw_kernel
from explorer.firmware.model import Arch, Endian, KernelImage

KIND = RAW_KIND
BANNER = b"Linux version "
ARM64_MAGIC = b"ARM\x64"  # at 0x38 of an AArch64 Image header
SETEND_BE = 0xF1010200
SAMPLE = 1 << 20  # the head of the image is enough to know its code
MIN_WORDS = 64
UNCONDITIONAL_SHARE = 0.5  # ARM kernel code: ~80%; other data or architectures: well below


def is_arm64_image(data: bytes, offset: int = 0) -> bool:
    return data[offset + 0x38 : offset + 0x3C] == ARM64_MAGIC


def unconditional_share(code: bytes, order: str) -> float:
    """The share of non-zero 32-bit words whose ARM condition field is 0xE ("always")."""
    words = np.frombuffer(code, order + "u4", count=len(code) // 4)
    words = words[words != 0]
    return float(np.mean((words >> 28) == 0xE)) if len(words) >= MIN_WORDS else 0.0


def _endian(data: bytes, offset: int) -> Endian | None:
    sample = data[offset : offset + SAMPLE]
    if is_arm64_image(sample) or data.find(BANNER, offset) < 0:
        return None
    if unconditional_share(sample, "<") >= UNCONDITIONAL_SHARE:
        head = np.frombuffer(sample[:16], "<u4", count=len(sample[:16]) // 4)
        return Endian.BIG if SETEND_BE in head.tolist() else Endian.LITTLE
    if unconditional_share(sample, ">") >= UNCONDITIONAL_SHARE:
        return Endian.BIG
    return None


def probe(data: bytes, offset: int) -> bool:
    return _endian(data, offset) is not None


def unpack(data: bytes, offset: int) -> KernelImage:
    endian = _endian(data, offset)
    if endian is None:
        raise FirmwareError(f"no raw ARM kernel Image at offset {offset:#x}")
    return raw_kernel(Arch.ARM, endian, data, offset)
