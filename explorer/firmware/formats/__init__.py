"""The registry of firmware container formats, and the one interface each format implements.

A format module knows one wrapper (ELF, zImage, uImage, ...) and exports:

- `KIND`: the Layer kind it produces;
- `probe(data, offset) -> bool`: a cheap check that the format's header is at `offset`;
- `unpack(data, offset) -> KernelImage | Wrapped`: either the kernel itself (a *terminal* format:
  its KernelImage carries only its own layer) or the payload it wraps, for `locate` to peel next;
- `candidates(data) -> Iterator[int]` (header formats only): offsets worth probing when
  scanning a flash image.

A format never peels another format's payload and never searches a file for kernels: the peeling
and scanning order live in `locate` (`flash` only lists what a scan finds). Shared parsing is
reused, not copied (the MIPS vmlinuz is read with `elf`'s helpers).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from explorer.firmware.model import Arch, Endian, KernelImage, Layer

RAW_KIND = "image"  # the Layer kind of a headerless kernel, whatever its architecture


@dataclass(frozen=True)
class Wrapped:
    """What a non-terminal format found: its own layer, the payload, and the facts its header states."""

    layer: Layer
    payload: bytes
    arch: Arch | None = None
    load_address: int | None = None
    entry: int | None = None


class Format(Protocol):
    KIND: str

    def probe(self, data: bytes, offset: int) -> bool: ...

    def unpack(self, data: bytes, offset: int) -> KernelImage | Wrapped: ...


class ScannableFormat(Format, Protocol):
    def candidates(self, data: bytes) -> Iterator[int]: ...


def header_formats() -> tuple[ScannableFormat, ...]:
    """Formats with a header magic, most specific first: recognised anywhere, so a flash scan finds them."""
    # Imported on use: every format module imports `Wrapped` from this package.
    from explorer.firmware.formats import arm64_image, elf, fit, mips_vmlinuz, uimage, zimage

    return (uimage, fit, zimage, arm64_image, mips_vmlinuz, elf)  # type: ignore[return-value]


def raw_formats() -> tuple[Format, ...]:
    """Headerless kernels, recognised by their contents, only where they start."""
    from explorer.firmware.formats import arm_image, mips_image

    return (arm_image, mips_image)  # type: ignore[return-value]


def stream_formats() -> tuple[Format, ...]:
    """A file that is one compressed stream (Image.gz), recognised only where it starts."""
    from explorer.firmware.formats import compressed

    return (compressed,)  # type: ignore[return-value]


def raw_kernel(arch: Arch, endian: Endian, data: bytes, offset: int) -> KernelImage:
    """A headerless kernel that starts at `offset` and runs to the end of `data`."""
    image = data[offset:]
    layer = Layer(RAW_KIND, offset, len(image), {"arch": arch.value, "endian": endian.value})
    return KernelImage(arch=arch, endian=endian, data=image, layers=(layer,))


def identify(data: bytes, offset: int, among: tuple[Format, ...]) -> Format | None:
    """The first format of `among` whose probe accepts `data` at `offset`, or None."""
    return next((f for f in among if f.probe(data, offset)), None)
