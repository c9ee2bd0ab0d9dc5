"""MIPS self-decompressing "vmlinuz" (arch/mips/boot/compressed): an ELF whose code is only the
decompressor and whose data holds the compressed raw vmlinux.bin.

The kernel's load address and entry are compiled into the decompressor as constants
(VMLINUX_LOAD_ADDRESS, KERNEL_ENTRY), built by `lui` (+ `addiu`/`ori`) pairs. We read those
constants and keep the load address only when exactly one of them fits: a KSEG0/KSEG1 page
outside the decompressor with another constant (the entry) inside the decompressed kernel.
This module never runs the decompressor and never guesses when the constants are ambiguous.
"""

from __future__ import annotations

import numpy as np
from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import Section

from explorer.errors import FirmwareError
from explorer.firmware.decompress import find_streams, first_stream
from explorer.firmware.formats import elf
from explorer.firmware.model import Arch, Endian, KernelImage, Layer

KIND = "mips-vmlinuz"
BANNER = b"Linux version "
OP_LUI, OP_ADDIU, OP_ORI = 0x0F, 0x09, 0x0D
PAIR_WINDOW = 8  # instructions after a `lui` in which the compiler puts its low half
KSEG0, KSEG2 = 0x8000_0000, 0xC000_0000
MAX_DECOMPRESSOR_CODE = 1 << 20


def probe(data: bytes, offset: int) -> bool:
    """A 32-bit MIPS ELF with decompressor-sized code (a vmlinux has megabytes) and a compressed
    stream ahead of any kernel banner (lz4, lzo and zstd keep the banner as a literal)."""
    if not elf.probe(data, offset) or data[offset + 4] != 1:
        return False
    machine = int.from_bytes(data[offset + 18 : offset + 20], "little" if data[offset + 5] == 1 else "big")
    if machine != elf.EM_MIPS:
        return False
    try:
        code_size = sum(s["sh_size"] for s in _code_sections(elf.open_elf(data, offset)[0]))
    except (FirmwareError, *elf.ELF_ERRORS):
        return False
    if not 0 < code_size < MAX_DECOMPRESSOR_CODE:
        return False
    banner = data.find(BANNER, offset)
    stream = next(find_streams(data, offset, None if banner < 0 else banner), None)
    return stream is not None


def _code_sections(vmlinuz: ELFFile) -> list[Section]:
    return [
        s
        for s in vmlinuz.iter_sections()
        if s["sh_flags"] & SH_FLAGS.SHF_EXECINSTR and s["sh_type"] == "SHT_PROGBITS"
    ]


candidates = elf.candidates


def code_constants(code: bytes, endian: Endian) -> set[int]:
    """32-bit constants built by `lui rt, hi` followed by `addiu`/`ori rt, rt, lo`, or by `lui` alone.

    (A `lui` whose high half feeds an `addiu`/`ori` is not counted alone: it is not an address.)
    """
    words = np.frombuffer(code, "<u4" if endian is Endian.LITTLE else ">u4", count=len(code) // 4).tolist()
    constants: set[int] = set()
    for i, word in enumerate(words):
        if word >> 26 != OP_LUI:
            continue
        reg, high = (word >> 16) & 31, (word & 0xFFFF) << 16
        for follower in words[i + 1 : i + 1 + PAIR_WINDOW]:
            if (follower >> 21) & 31 == reg and (follower >> 16) & 31 == reg:
                low = follower & 0xFFFF
                if follower >> 26 == OP_ADDIU:
                    constants.add((high + low - ((low & 0x8000) << 1)) & 0xFFFF_FFFF)
                    break
                if follower >> 26 == OP_ORI:
                    constants.add(high | low)
                    break
        else:
            constants.add(high)  # a high half with no low half is a constant by itself
    return constants


def load_and_entry(
    constants: set[int], decompressor: range, kernel_size: int
) -> tuple[int | None, int | None]:
    """The kernel's load address and entry among the decompressor's constants, when they are unambiguous."""
    fits = []
    for load in constants:
        if not (KSEG0 <= load < KSEG2) or load % 0x1000 or load in decompressor:
            continue
        inside = [c for c in constants if load < c < load + kernel_size and c not in decompressor]
        if inside:
            fits.append((load, inside))
    if len(fits) != 1:
        return None, None
    load, inside = fits[0]
    return load, inside[0] if len(inside) == 1 else None


def unpack(data: bytes, offset: int) -> KernelImage:
    vmlinuz, arch, endian = elf.open_elf(data, offset)
    if arch is not Arch.MIPS:
        raise FirmwareError(f"no MIPS vmlinuz at offset {offset:#x}")
    try:
        size = elf.elf_size(vmlinuz)
        segments = [s for s in vmlinuz.iter_segments() if s["p_type"] == "PT_LOAD"]
        if not segments:
            raise FirmwareError("the MIPS vmlinuz has no loadable segment: the file is corrupt")
        code = b"".join(s.data() for s in _code_sections(vmlinuz))
        low = min(s["p_vaddr"] for s in segments)
        decompressor = range(low, max(s["p_vaddr"] + s["p_memsz"] for s in segments))
        file_start = min(s["p_offset"] for s in segments)
        file_end = max(s["p_offset"] + s["p_filesz"] for s in segments)
    except elf.ELF_ERRORS as e:
        raise FirmwareError(f"the MIPS vmlinuz at {offset:#x} is corrupt ({e})") from e
    view = memoryview(data)[offset : offset + size]
    payload_offset, codec, payload = first_stream(view, file_start, file_end)
    load, entry = load_and_entry(code_constants(code, endian), decompressor, len(payload.data))
    detail = {
        "compression": codec.value,
        "payload_offset": payload_offset,
        "payload_size": payload.consumed,
        "image_size": len(payload.data),
        "decompressor_address": low,
        "load_address": load,
        "entry": entry,
    }
    return KernelImage(
        arch=Arch.MIPS,
        endian=endian,
        data=payload.data,
        layers=(Layer(KIND, offset, size, detail),),
        load_address=load,
        entry=entry,
        base=load,
    )
