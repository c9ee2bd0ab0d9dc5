"""AArch64 `Image` (arch/arm64/boot/Image): the uncompressed 64-bit ARM kernel and its 64-byte header.

The header (Documentation/arch/arm64/booting.rst) is the first bytes of `_text`, always
little-endian whatever the kernel's endianness:

    0x00 code0, code1   two instructions (a branch to the kernel's entry; "MZ" for an EFI stub)
    0x08 text_offset    where the Image goes above a 2 MiB aligned base (0 since 5.8)
    0x10 image_size     bytes the kernel occupies once loaded, bss included (0 before 3.17)
    0x18 flags          bit 0 big-endian; bits 1-2 page size (0 unstated, 4K, 16K, 64K);
                        bit 3 the 2 MiB base may be anywhere in memory (else near DRAM's start)
    0x20 res2..res4     zero
    0x38 magic          "ARM\\x64"
    0x3c res5           offset of the PE header (EFI stub kernels)

The whole image is the kernel as it lies in memory (data[0] = `_text`); its virtual address is
not in the header (the kernel is relocatable: symbol recovery proves it). A header that fails
any of these rules is not an Image; one that passes but is cut short is a truncated file. This
module never decompresses (an Image.gz is peeled by `compressed`) and never looks for symbols.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from explorer.errors import FirmwareError
from explorer.firmware.model import Arch, Endian, KernelImage, Layer

KIND = "arm64-image"
MAGIC = b"ARM\x64"
MAGIC_AT = 0x38
HEADER = struct.Struct("<IIQQQQQQ4sI")
HEADER_SIZE = HEADER.size  # 64
PAGE_SIZES = {0: None, 1: 4 << 10, 2: 16 << 10, 3: 64 << 10}
KNOWN_FLAGS = 0xF  # bits 4-63 are reserved (zero)
MAX_TEXT_OFFSET = 2 << 20  # the Image goes above a 2 MiB aligned base, within its 2 MiB
TEXT_OFFSET_ALIGN = 4 << 10
IMAGE_ALIGN = 2 << 20  # the base the Image's text_offset counts from is 2 MiB aligned


@dataclass(frozen=True)
class Arm64Header:
    """What an Image header states."""

    code0: int
    code1: int
    text_offset: int
    image_size: int  # 0: a kernel before 3.17, which does not say
    big_endian: bool
    page_size: int | None  # bytes; None when the header does not say
    anywhere: bool  # the 2 MiB aligned base may be anywhere in memory, not only near DRAM's start
    pe_offset: int  # res5: where the PE/COFF header is, for EFI stub kernels (0: none)

    def detail(self) -> dict[str, Any]:
        """The JSON-able Layer detail `explorer inspect` shows."""
        return {
            "code0": self.code0,
            "code1": self.code1,
            "text_offset": self.text_offset,
            "image_size": self.image_size,
            "endian": "big" if self.big_endian else "little",
            "page_size": self.page_size,
            "placement": "anywhere" if self.anywhere else "near the start of DRAM",
            "efi_stub": self.pe_offset != 0,
        }


def parse_header(data: bytes, offset: int = 0) -> Arm64Header:
    """The header at `offset`; FirmwareError (one line) when there is none or it breaks the rules."""
    raw = data[offset : offset + HEADER_SIZE]
    if len(raw) < MAGIC_AT + len(MAGIC) or raw[MAGIC_AT : MAGIC_AT + len(MAGIC)] != MAGIC:
        raise FirmwareError(f"no AArch64 Image header at offset {offset:#x} (no ARM\\x64 magic at +0x38)")
    if len(raw) < HEADER_SIZE:
        raise FirmwareError(
            f"the AArch64 Image header at {offset:#x} is cut short ({len(raw)} of {HEADER_SIZE} bytes): "
            "the file is truncated"
        )
    code0, code1, text_offset, image_size, flags, res2, res3, res4, _, res5 = HEADER.unpack(raw)
    if code0 == 0:  # the first instruction is the kernel's branch to its entry (or "MZ")
        raise FirmwareError(
            f"the AArch64 Image header at {offset:#x} starts with no instruction: it is corrupt"
        )
    if flags & ~KNOWN_FLAGS or res2 or res3 or res4:
        raise FirmwareError(
            f"the AArch64 Image header at {offset:#x} sets reserved fields (flags {flags:#x}): "
            "it is corrupt or not an Image"
        )
    if text_offset >= MAX_TEXT_OFFSET or text_offset % TEXT_OFFSET_ALIGN:
        raise FirmwareError(
            f"the AArch64 Image header at {offset:#x} states text_offset {text_offset:#x}, which no "
            "kernel uses (below 2 MiB, 4 KiB aligned): the header is corrupt"
        )
    if image_size and image_size < HEADER_SIZE:
        raise FirmwareError(
            f"the AArch64 Image header at {offset:#x} states an image size of {image_size} bytes: "
            "the header is corrupt"
        )
    return Arm64Header(
        code0=code0,
        code1=code1,
        text_offset=text_offset,
        image_size=image_size,
        big_endian=bool(flags & 1),
        page_size=PAGE_SIZES[(flags >> 1) & 3],
        anywhere=bool(flags & 8),
        pe_offset=res5,
    )


def probe(data: bytes, offset: int) -> bool:
    try:
        parse_header(data, offset)
    except FirmwareError:
        return False
    return True


def candidates(data: bytes) -> Iterator[int]:
    pos = data.find(MAGIC)
    while pos >= 0:
        if pos >= MAGIC_AT:
            yield pos - MAGIC_AT
        pos = data.find(MAGIC, pos + 1)


def unpack(data: bytes, offset: int) -> KernelImage:
    header = parse_header(data, offset)
    image = data[offset:]
    layer = Layer(KIND, offset, len(image), header.detail())
    endian = Endian.BIG if header.big_endian else Endian.LITTLE
    return KernelImage(arch=Arch.AARCH64, endian=endian, data=image, layers=(layer,))


def header_of(layers: tuple[Layer, ...]) -> dict[str, Any] | None:
    """The Image header's detail among a firmware's layers, or None for other kernels."""
    return next((layer.detail for layer in layers if layer.kind == KIND), None)
