"""ELF vmlinux (32-bit ARM or MIPS, either endianness): the image as `objcopy -O binary` lays it out.

Loadable segments are placed by their load (physical) addresses relative to the lowest one, as
objcopy does (so ARM's vectors, linked at 0xffff0000 but loaded inside the image, land where the
Image has them); `base` is the virtual address of the lowest segment. Symbols come from .symtab
with `nm`-style type letters. This module never guesses symbols: no .symtab, no `elf_symbols`.
"""

from __future__ import annotations

import io
import itertools
import struct
from collections.abc import Iterator

import numpy as np
from elftools.common.exceptions import ELFError
from elftools.construct import ConstructError
from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile

from explorer.errors import FirmwareError
from explorer.firmware.decompress import MAX_OUTPUT
from explorer.firmware.model import Arch, Endian, KernelImage, Layer, Symbol

KIND = "elf"
MAGIC = b"\x7fELF"
EM_MIPS, EM_ARM = 8, 40
MACHINES = {EM_MIPS: Arch.MIPS, EM_ARM: Arch.ARM}
EM_AARCH64 = 183
FOREIGN_MACHINES = {3: "x86", 62: "x86-64", 20: "PowerPC", 243: "RISC-V"}
ELF_ERRORS = (ELFError, ConstructError, struct.error, ValueError, IndexError, KeyError, UnicodeDecodeError)


def probe(data: bytes, offset: int) -> bool:
    """An ELF identification at `offset` (any machine: `unpack` names a foreign one)."""
    ident = data[offset : offset + 16]
    return len(ident) == 16 and ident[:4] == MAGIC and ident[4] in (1, 2) and ident[5] in (1, 2)


def candidates(data: bytes) -> Iterator[int]:
    pos = data.find(MAGIC)
    while pos >= 0:
        yield pos
        pos = data.find(MAGIC, pos + 1)


def open_elf(data: bytes, offset: int) -> tuple[ELFFile, Arch, Endian]:
    """Parse the ELF header at `offset`; FirmwareError unless it is a 32-bit ARM or MIPS executable."""
    if not probe(data, offset):
        raise FirmwareError(f"no ELF header at offset {offset:#x}")
    if len(data) < offset + 52:  # the 32-bit ELF header
        raise FirmwareError(f"the ELF header at offset {offset:#x} is truncated: the file is cut short")
    endian = Endian.LITTLE if data[offset + 5] == 1 else Endian.BIG
    (machine,) = struct.unpack_from("<H" if endian is Endian.LITTLE else ">H", data, offset + 18)
    if machine == EM_AARCH64:
        raise FirmwareError(
            "this is an AArch64 (arm64) ELF vmlinux; explorer reads AArch64 kernels from their Image "
            "(arch/arm64/boot/Image, or Image.gz): give that file"
        )
    if machine in FOREIGN_MACHINES:
        raise FirmwareError(
            f"this is an {FOREIGN_MACHINES[machine]} ELF; explorer supports 32-bit ARM and MIPS kernels"
        )
    if machine not in MACHINES:
        raise FirmwareError(
            f"this ELF is for machine {machine}; explorer supports 32-bit ARM and MIPS kernels"
        )
    if data[offset + 4] != 1:
        raise FirmwareError("this is a 64-bit ELF; explorer supports 32-bit ARM and MIPS kernels")
    try:
        return ELFFile(io.BytesIO(data[offset:])), MACHINES[machine], endian
    except ELF_ERRORS as e:
        raise FirmwareError(f"the ELF header at {offset:#x} is corrupt ({e})") from e


def elf_size(elf: ELFFile) -> int:
    """Bytes the ELF file occupies: up to the end of its last section, segment or header table."""
    header = elf.header
    ends = [
        header.e_shoff + header.e_shnum * header.e_shentsize,
        header.e_phoff + header.e_phnum * header.e_phentsize,
    ]
    ends += [seg["p_offset"] + seg["p_filesz"] for seg in elf.iter_segments()]
    ends += [s["sh_offset"] + s["sh_size"] for s in elf.iter_sections() if s["sh_type"] != "SHT_NOBITS"]
    return max(ends)


def _loadable(elf: ELFFile, size: int) -> list[tuple[int, int, int, int]]:
    """(paddr, vaddr, file offset, file size) of each PT_LOAD segment with bytes in the file."""
    segments = []
    for seg in elf.iter_segments():
        if seg["p_type"] != "PT_LOAD" or seg["p_filesz"] == 0:
            continue
        if seg["p_offset"] + seg["p_filesz"] > size:
            raise FirmwareError("an ELF segment extends past the end of the file: the file is truncated")
        segments.append((seg["p_paddr"], seg["p_vaddr"], seg["p_offset"], seg["p_filesz"]))
    if not segments:
        raise FirmwareError("the ELF has no loadable segment with contents: it is not a kernel")
    return segments


def _overlap(placed: list[tuple[int, int]]) -> bool:
    placed = sorted(placed)
    return any(a_start + a_size > b_start for (a_start, a_size), (b_start, _) in itertools.pairwise(placed))


def memory_image(data: bytes, offset: int, elf: ELFFile) -> tuple[bytes, int, int]:
    """(image, virtual address of image[0], load address of image[0]) from the loadable segments."""
    segments = _loadable(elf, len(data) - offset)
    by_paddr = [(p, size) for p, _, _, size in segments]
    use_paddr = not _overlap(by_paddr)  # some linkers leave every paddr 0: then place by vaddr
    key = 0 if use_paddr else 1
    lowest = min(segments, key=lambda s: s[key])
    span = max(s[key] + s[3] for s in segments) - lowest[key]
    if span > MAX_OUTPUT:
        raise FirmwareError(f"the ELF's segments span {span >> 20} MiB: this is not a 32-bit kernel image")
    image = bytearray(span)
    for seg in segments:
        at = seg[key] - lowest[key]
        image[at : at + seg[3]] = data[offset + seg[2] : offset + seg[2] + seg[3]]
    return bytes(image), lowest[1], lowest[0]


def _nm_letter(bind: int, shndx: int, section_flags: dict[int, tuple[int, bool]]) -> str | None:
    """The `nm` type letter of a symbol, or None for ones nm users never want (undefined, debug)."""
    if shndx == 0xFFF1:  # SHN_ABS
        letter = "a"
    elif shndx in section_flags:
        flags, nobits = section_flags[shndx]
        if not flags & SH_FLAGS.SHF_ALLOC:
            return None
        if flags & SH_FLAGS.SHF_EXECINSTR:
            letter = "t"
        elif flags & SH_FLAGS.SHF_WRITE:
            letter = "b" if nobits else "d"
        else:
            letter = "r"
    else:
        return None
    if bind == 2:  # STB_WEAK
        return "W" if letter == "t" else "V"
    return letter.upper() if bind == 1 else letter


def symbols(elf: ELFFile, data: bytes, offset: int, endian: Endian) -> tuple[Symbol, ...] | None:
    """Named code and data symbols from .symtab, sorted by address; None if there is no .symtab."""
    symtab = elf.get_section_by_name(".symtab")
    if symtab is None or symtab["sh_type"] != "SHT_SYMTAB":
        return None
    strtab = elf.get_section(symtab["sh_link"])
    order = "<" if endian is Endian.LITTLE else ">"
    entry = np.dtype(
        [("name", order + "u4"), ("value", order + "u4"), ("size", order + "u4"), ("info", "u1"),
         ("other", "u1"), ("shndx", order + "u2")]
    )  # fmt: skip
    start, size = offset + symtab["sh_offset"], symtab["sh_size"] - symtab["sh_size"] % entry.itemsize
    table = np.frombuffer(data, entry, count=size // entry.itemsize, offset=start)
    strings = data[offset + strtab["sh_offset"] : offset + strtab["sh_offset"] + strtab["sh_size"]]
    section_flags = {
        i: (s["sh_flags"], s["sh_type"] == "SHT_NOBITS") for i, s in enumerate(elf.iter_sections())
    }
    out = []
    for name_at, value, info, shndx in zip(
        table["name"].tolist(),
        table["value"].tolist(),
        table["info"].tolist(),
        table["shndx"].tolist(),
        strict=True,
    ):
        if info & 0xF not in (0, 1, 2):  # NOTYPE, OBJECT, FUNC: not SECTION or FILE
            continue
        letter = _nm_letter(info >> 4, shndx, section_flags)
        end = strings.find(b"\0", name_at)
        if letter is None or name_at == 0 or end < 0:
            continue
        name = strings[name_at:end].decode("latin-1")
        if name.startswith("$"):  # ARM mapping symbols ($a, $d, $t) mark code/data, not functions
            continue
        out.append(Symbol(value, letter, name))
    return tuple(sorted(out))


def unpack(data: bytes, offset: int) -> KernelImage:
    elf, arch, endian = open_elf(data, offset)
    try:
        if elf.header.e_type != "ET_EXEC":
            raise FirmwareError(f"this ELF is {elf.header.e_type}, not an executable vmlinux")
        image, base, load = memory_image(data, offset, elf)
        syms = symbols(elf, data, offset, endian)
        size = elf_size(elf)
    except ELF_ERRORS as e:
        raise FirmwareError(f"the ELF at {offset:#x} is corrupt ({e})") from e
    detail = {"machine": arch.value, "entry": elf.header.e_entry, "base": base, "symbols": len(syms or ())}
    return KernelImage(
        arch=arch,
        endian=endian,
        data=image,
        layers=(Layer(KIND, offset, size, detail),),
        load_address=load,
        entry=elf.header.e_entry,
        base=base,
        elf_symbols=syms,
    )
