"""The dynamic relocations a relocatable 64-bit kernel carries in its image, found without an ELF header.

A relocatable arm64 kernel (CONFIG_RELOCATABLE, always on with KASLR) is linked with -pie and
keeps its `.rela.dyn` in the Image: Elf64_Rela records (r_offset, r_info, r_addend), almost all
R_AARCH64_RELATIVE, whose r_offset is the link-time virtual address of a pointer in the image
and r_addend the link-time address it points at. Linked with --no-apply-dynamic-relocs, the
image holds zeros at those places: the kernel writes them while relocating itself at boot.
So the table is both where the image's pointers are and, read without the image, what they are.

It is found as the longest run of 24-byte records whose r_info is R_AARCH64_RELATIVE. This
module only reads the table; what the addresses prove is decided in `symbols`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from explorer.firmware.model import Endian

R_AARCH64_RELATIVE = 1027
RECORD_WORDS = 3  # r_offset, r_info, r_addend: 64 bits each
MIN_RECORDS = 64  # a kernel has tens of thousands; a few records in a row are chance


@dataclass(frozen=True)
class RelativeRelocations:
    """The R_AARCH64_RELATIVE records of an image, in table order (both arrays uint64)."""

    at: int  # byte offset of the first record in the image
    places: np.ndarray  # r_offset: link-time address of each pointer
    targets: np.ndarray  # r_addend: link-time address each pointer holds once relocated


def find_relative_relocations(data: bytes, endian: Endian) -> RelativeRelocations | None:
    """The longest run of R_AARCH64_RELATIVE records (8-byte aligned) in `data`, or None."""
    words = np.frombuffer(data, "<u8" if endian is Endian.LITTLE else ">u8", count=len(data) // 8)
    if len(words) < RECORD_WORDS:
        return None
    info = np.flatnonzero(words[1:-1] == R_AARCH64_RELATIVE) + 1  # r_info has a record on each side
    if len(info) < MIN_RECORDS:
        return None
    breaks = np.flatnonzero(np.diff(info) != RECORD_WORDS)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [len(info) - 1]])
    longest = int(np.argmax(ends - starts))
    first, last = int(info[starts[longest]]), int(info[ends[longest]])
    if (last - first) // RECORD_WORDS + 1 < MIN_RECORDS:
        return None
    return RelativeRelocations(
        at=(first - 1) * 8,
        places=words[first - 1 : last : RECORD_WORDS].copy(),
        targets=words[first + 1 : last + 2 : RECORD_WORDS].copy(),
    )
