"""Whole flash images: a boot loader, a kernel and a root file system (or anything) concatenated.

The kernel is found by scanning for every header format at every offset (odd ones too) with
`bytes.find`, keeping the offsets whose header probe passes. Which of them is the kernel is
decided by `locate`, which unpacks them in order; this module only finds and reports.
"""

from __future__ import annotations

from explorer.firmware.formats import ScannableFormat
from explorer.firmware.model import Layer

KIND = "flash"


def scan(data: bytes, formats: tuple[ScannableFormat, ...]) -> list[tuple[int, ScannableFormat]]:
    """(offset, format) of every header whose probe passes, by offset; the first format wins a tie."""
    found: dict[int, ScannableFormat] = {}
    for fmt in formats:
        for offset in fmt.candidates(data):
            if offset not in found and fmt.probe(data, offset):
                found[offset] = fmt
    return sorted(found.items(), key=lambda item: item[0])


def layer(data: bytes, found: list[tuple[int, ScannableFormat]], kernel_at: int) -> Layer:
    """The flash layer: what the scan found where, and which one held the kernel."""
    detail = {
        "found": [{"offset": offset, "format": fmt.KIND} for offset, fmt in found],
        "kernel_at": kernel_at,
    }
    return Layer(KIND, 0, len(data), detail)
