"""Find the kernel in a firmware file: peel wrappers until the kernel lies as it will in memory.

Order of search: a header format at offset 0 (uImage, FIT, zImage, AArch64 Image, MIPS vmlinuz, ELF),
then a flash scan for those headers at any offset, then a headerless raw Image at offset 0, then
a file that is one compressed stream (Image.gz). Each wrapper's
payload is peeled again, at most `MAX_DEPTH` times. The result always holds a "Linux version"
banner. Everything that is not a supported kernel ends in one FirmwareError saying what it is.
This module never parses a format itself: the format modules do.
"""

from __future__ import annotations

import dataclasses

from explorer.errors import FirmwareError
from explorer.firmware.formats import (
    Format,
    ScannableFormat,
    Wrapped,
    flash,
    header_formats,
    identify,
    raw_formats,
    stream_formats,
)
from explorer.firmware.formats.arm64_image import KIND as ARM64_IMAGE
from explorer.firmware.formats.arm64_image import parse_header
from explorer.firmware.formats.arm_image import is_arm64_image
from explorer.firmware.model import KernelImage

MAX_DEPTH = 8  # flash > uImage > zImage is three; anything deeper is a loop or a trick
BANNER = b"Linux version "


def locate_kernel(data: bytes) -> KernelImage:
    """The kernel inside `data`, decompressed, with every layer peeled on the way (outermost first)."""
    if not data:
        raise FirmwareError("the firmware file is empty: give the kernel or flash image file")
    if data.count(0) == len(data):
        raise FirmwareError(
            "the firmware file is all zero bytes (erased flash or a failed dump): dump it again"
        )
    fmt = identify(data, 0, header_formats())
    if fmt is not None:
        return _peel(data, 0, fmt)
    found = flash.scan(data, header_formats())
    for offset, fmt in found:
        try:
            kernel = _peel(data, offset, fmt)
        except FirmwareError:
            continue  # a header that is not (or does not hold) a kernel, e.g. a ramdisk uImage
        outer = flash.layer(data, found, offset)
        return dataclasses.replace(kernel, layers=(outer, *kernel.layers))
    fmt = identify(data, 0, raw_formats()) or identify(data, 0, stream_formats())
    if fmt is not None:
        return _peel(data, 0, fmt)
    raise FirmwareError(_what_it_is(data, found))


def _peel(data: bytes, offset: int, fmt: Format) -> KernelImage:
    wrappers: list[Wrapped] = []
    for _ in range(MAX_DEPTH):
        result = fmt.unpack(data, offset)
        if isinstance(result, KernelImage):
            return _finished(result, wrappers)
        wrappers.append(result)
        data, offset = result.payload, 0
        inner = identify(data, 0, header_formats()) or identify(data, 0, raw_formats())
        if inner is None and result.layer.kind != "compressed":  # no stream wraps a stream
            inner = identify(data, 0, stream_formats())
        if inner is None:
            raise FirmwareError(
                f"the {result.layer.kind} payload is not a kernel format explorer knows "
                "(ELF, zImage, uImage, FIT, AArch64 Image, raw ARM or MIPS Image)"
            )
        fmt = inner
    raise FirmwareError(f"the firmware nests more than {MAX_DEPTH} wrappers: it is corrupt or crafted")


def _finished(kernel: KernelImage, wrappers: list[Wrapped]) -> KernelImage:
    """`kernel` with the wrappers' layers in front; a wrapper's load address and entry are kept only
    when it holds the kernel image directly (a uImage's addresses for a zImage are the zImage's)."""
    for wrapper in wrappers:
        if wrapper.arch is not None and wrapper.arch is not kernel.arch:
            raise FirmwareError(
                f"the {wrapper.layer.kind} header says {wrapper.arch} but it holds a {kernel.arch} kernel: "
                "the image is mislabelled"
            )
    if BANNER not in kernel.data:
        raise FirmwareError(
            f"the {kernel.layers[-1].kind} holds no 'Linux version' banner: it is not a Linux kernel"
        )
    load_address, entry = kernel.load_address, kernel.entry
    if wrappers and kernel.layers[-1].kind in {raw.KIND for raw in raw_formats()} | {ARM64_IMAGE}:
        load_address = load_address if load_address is not None else wrappers[-1].load_address
        entry = entry if entry is not None else wrappers[-1].entry
    return dataclasses.replace(
        kernel,
        layers=(*(w.layer for w in wrappers), *kernel.layers),
        load_address=load_address,
        entry=entry,
    )


def _what_it_is(data: bytes, found: list[tuple[int, ScannableFormat]]) -> str:
    """One line naming what `data` is, when it is not a kernel explorer supports."""
    if data[0x202:0x206] == b"HdrS":
        return "this is an x86 Linux bzImage; explorer supports ARM, AArch64 and MIPS kernels"
    if is_arm64_image(data):
        try:
            parse_header(data)
        except FirmwareError as err:
            return str(err)
    if found:
        kinds = ", ".join(f"{fmt.KIND} at {offset:#x}" for offset, fmt in found[:5])
        return f"no kernel could be unpacked from the headers found ({kinds}): the image is damaged"
    if BANNER in data:
        return "the file holds a Linux banner but no kernel format explorer can unpack: check the image"
    return (
        "no kernel found: not an ELF vmlinux, zImage, uImage, AArch64 Image (or Image.gz), "
        "raw ARM/MIPS Image, nor a flash image containing one"
    )
