"""A file that is one compressed stream: Image.gz (what arm64 boot loaders load), Image.lz4, and the like.

Recognised only where the file starts (a compressed stream has no header to scan a flash image
for: a stream inside a flash dump is found through the uImage or FIT around it). The payload is
decompressed and handed back for `locate` to peel; what it holds is decided there. This module
never decides what a stream is.
"""

from __future__ import annotations

from explorer.errors import FirmwareError
from explorer.firmware.decompress import MAGICS, Codec, decompress
from explorer.firmware.formats import Wrapped
from explorer.firmware.model import Layer

KIND = "compressed"


def _codec(data: bytes, offset: int) -> Codec | None:
    return next((c for c, magic in MAGICS.items() if data.startswith(magic, offset)), None)


def probe(data: bytes, offset: int) -> bool:
    return _codec(data, offset) is not None


def unpack(data: bytes, offset: int) -> Wrapped:
    codec = _codec(data, offset)
    if codec is None:
        raise FirmwareError(f"no compressed stream at offset {offset:#x}")
    stream = decompress(codec, data, offset)
    detail = {"compression": codec.value, "image_size": len(stream.data)}
    return Wrapped(layer=Layer(KIND, offset, stream.consumed, detail), payload=stream.data)
