"""U-Boot legacy uImage (mkimage): a 64-byte big-endian header, CRC-checked, around a kernel payload.

Single-file images hold the kernel directly; IH_TYPE_MULTI images hold a zero-terminated table of
sub-image sizes and the kernel is the first sub-image. The payload is decompressed as the header
says and handed back for `locate` to peel further (it is often a zImage). This module never
guesses: a header CRC that does not match means "not a uImage".
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

from explorer.errors import FirmwareError
from explorer.firmware.decompress import MAGICS, Codec, decompress
from explorer.firmware.formats import Wrapped
from explorer.firmware.model import Arch, Layer

KIND = "uimage"
MAGIC = b"\x27\x05\x19\x56"
HEADER = struct.Struct(">IIIIIIIBBBB32s")
HEADER_SIZE = HEADER.size  # 64

ARCHES = {2: Arch.ARM, 5: Arch.MIPS, 22: Arch.AARCH64}
FOREIGN_ARCHES = {
    3: "x86",
    6: "MIPS64",
    7: "PowerPC",
    24: "x86-64",
    26: "RISC-V",
}
TYPE_KERNEL, TYPE_RAMDISK, TYPE_MULTI, TYPE_KERNEL_NOLOAD = 2, 3, 4, 14
TYPE_NAMES = {1: "standalone", 3: "ramdisk", 5: "firmware", 6: "script", 7: "filesystem", 8: "flat_dt"}
TYPES = {TYPE_KERNEL: "kernel", TYPE_MULTI: "multi", TYPE_KERNEL_NOLOAD: "kernel_noload"}
COMPRESSIONS: dict[int, tuple[Codec, ...]] = {
    0: (),
    1: (Codec.GZIP,),
    2: (Codec.BZIP2,),
    3: (Codec.LZMA,),
    4: (Codec.LZO,),
    5: (Codec.LZ4_FRAME, Codec.LZ4_LEGACY),
    6: (Codec.ZSTD,),
}
COMPRESSION_NAMES = {0: "none", 1: "gzip", 2: "bzip2", 3: "lzma", 4: "lzo", 5: "lz4", 6: "zstd"}


def probe(data: bytes, offset: int) -> bool:
    """A uImage magic at `offset` whose header CRC is right."""
    header = data[offset : offset + HEADER_SIZE]
    if len(header) < HEADER_SIZE or header[:4] != MAGIC:
        return False
    stated = struct.unpack_from(">I", header, 4)[0]
    return zlib.crc32(header[:4] + b"\0\0\0\0" + header[8:]) == stated


def candidates(data: bytes) -> Iterator[int]:
    pos = data.find(MAGIC)
    while pos >= 0:
        yield pos
        pos = data.find(MAGIC, pos + 1)


def sub_images(body: bytes) -> list[bytes]:
    """The sub-images of an IH_TYPE_MULTI body, in order: after the zero-terminated size table,
    each starts 4-byte aligned (as mkimage lays them out)."""
    sizes: list[int] = []
    pos = 0
    while pos + 4 <= len(body):
        (size,) = struct.unpack_from(">I", body, pos)
        pos += 4
        if size == 0:
            break
        sizes.append(size)
    else:
        raise FirmwareError("the multi-file uImage has no end to its size table: the image is corrupt")
    if not sizes or pos + sizes[0] > len(body):
        raise FirmwareError("the multi-file uImage's first sub-image is missing or truncated")
    images = []
    for size in sizes:
        images.append(body[pos : pos + size])
        pos += (size + 3) & ~3
    return images


def ramdisk_payload(data: bytes, offset: int) -> bytes | None:
    """The data of the ramdisk uImage at `offset` (as stored: a ramdisk is handed over as it is),
    or None if there is no intact ramdisk uImage there."""
    if not probe(data, offset):
        return None
    (_, _, _, size, _, _, data_crc, _, _, image_type, _, _) = HEADER.unpack_from(data, offset)
    body = data[offset + HEADER_SIZE : offset + HEADER_SIZE + size]
    if image_type != TYPE_RAMDISK or len(body) < size or zlib.crc32(body) != data_crc:
        return None
    return body


def _decompressed(compression: int, payload: bytes) -> bytes:
    if compression not in COMPRESSIONS:
        raise FirmwareError(
            f"uImage compression type {compression} is unknown; rebuild it with mkimage -C none"
        )
    codecs = COMPRESSIONS[compression]
    if not codecs:
        return payload
    for codec in codecs:
        if payload.startswith(MAGICS[codec]):
            return decompress(codec, payload).data
    names = " or ".join(codecs)
    raise FirmwareError(f"the uImage header says {names} but the payload is not: the image is corrupt")


def unpack(data: bytes, offset: int) -> Wrapped:
    if not probe(data, offset):
        raise FirmwareError(f"no valid uImage header at offset {offset:#x}")
    (_, _, _, size, load, entry, data_crc, _os, arch, image_type, compression, name) = HEADER.unpack_from(
        data, offset
    )
    if arch in FOREIGN_ARCHES:
        raise FirmwareError(
            f"this uImage is for {FOREIGN_ARCHES[arch]}; explorer supports ARM, AArch64 and MIPS kernels"
        )
    if arch not in ARCHES:
        raise FirmwareError(
            f"this uImage is for U-Boot architecture {arch}; explorer supports ARM, AArch64 and MIPS"
        )
    if image_type not in TYPES:
        what = TYPE_NAMES.get(image_type, f"type {image_type}")
        raise FirmwareError(f"this uImage holds a {what}, not a kernel: give the kernel image")
    body = data[offset + HEADER_SIZE : offset + HEADER_SIZE + size]
    if len(body) < size:
        raise FirmwareError(
            f"the uImage at {offset:#x} states {size} bytes of data, but the file is truncated"
        )
    if zlib.crc32(body) != data_crc:
        raise FirmwareError(f"the uImage at {offset:#x} fails its data CRC: the image is corrupt")
    detail: dict[str, object] = {
        "name": name.split(b"\0", 1)[0].decode("latin-1"),
        "type": TYPES[image_type],
        "arch": ARCHES[arch].value,
        "compression": COMPRESSION_NAMES.get(compression, str(compression)),
        "load_address": load,
        "entry": entry,
    }
    kernel = body
    if image_type == TYPE_MULTI:
        images = sub_images(body)
        kernel = images[0]
        detail["images"] = [len(image) for image in images]
    return Wrapped(
        layer=Layer(KIND, offset, HEADER_SIZE + size, detail),
        payload=_decompressed(compression, kernel),
        arch=ARCHES[arch],
        load_address=load,
        entry=entry,
    )
