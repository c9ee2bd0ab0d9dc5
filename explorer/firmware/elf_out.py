"""An ELF of an ingested kernel for debuggers: its image at its proven base, and every recovered symbol.

ELF32 for 32-bit kernels, ELF64 for AArch64 ones (the same layout, with the wider headers).

A firmware's kernel usually comes without its vmlinux (a zImage, a uImage, a flash dump), so
gdb has no names for what it stops in. This module writes the ELF gdb would have wanted:
one loadable section holding the decompressed image at the symbol table's proven base, and a
symbol table with every symbol ingestion recovered (ELF or kallsyms), typed from its `nm`
letter (functions, objects, absolute addresses; local or global, weak), each sized up to the
next symbol. `file FILE` in gdb-multiarch then names the kernel's functions in `bt`, `x/i` and
`info symbol`, without debugging information.

It never reads a file or decompresses anything: it takes the firmware's facts and image bytes.
Its output is a pure function of them (no timestamps), so the same kernel gives the same bytes.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass

from explorer.firmware.model import Arch, Endian, Firmware, Symbol

# ELF constants (System V ABI; ARM, AArch64 and MIPS supplements).
_ELFCLASS32, _ELFCLASS64 = 1, 2
_ELFDATA = {Endian.LITTLE: 1, Endian.BIG: 2}
_EV_CURRENT = 1
_ET_EXEC = 2
_MACHINE = {Arch.ARM: 40, Arch.MIPS: 8, Arch.AARCH64: 183}  # EM_ARM, EM_MIPS, EM_AARCH64
# ARM: EABI version 5 (what Linux kernels are built for). MIPS: 32-bit ISA release 2, o32. AArch64: none.
_FLAGS = {Arch.ARM: 0x05000000, Arch.MIPS: 0x70001000, Arch.AARCH64: 0}
_PT_LOAD = 1
_PF_RWX = 7
_SHT_PROGBITS, _SHT_SYMTAB, _SHT_STRTAB = 1, 2, 3
_SHF_WRITE_ALLOC_EXEC = 0x1 | 0x2 | 0x4
_SHN_ABS = 0xFFF1
_STB_LOCAL, _STB_GLOBAL, _STB_WEAK = 0, 1, 2
_STT_NOTYPE, _STT_OBJECT, _STT_FUNC = 0, 1, 2
# The image's file offset: page aligned, as loaders and gdb expect of a PT_LOAD.
_IMAGE_OFFSET = 0x1000
# Section indices, in the order the section headers are written.
_TEXT, _SYMTAB, _STRTAB, _SHSTRTAB = 1, 2, 3, 4
_SECTION_NAMES = (b"", b".text", b".symtab", b".strtab", b".shstrtab")

# nm letters: code, data (initialised, zeroed, read-only, small), absolute. Lowercase: local.
_FUNCTION_LETTERS = frozenset("TtWw")
_OBJECT_LETTERS = frozenset("DdBbRrGgSsVv")
_ABSOLUTE_LETTERS = frozenset("Aa")
# Not addresses at all: undefined, debugging entries.
_SKIPPED_LETTERS = frozenset("UNn")


@dataclass(frozen=True)
class _Class:
    """The struct layouts of one ELF class (the fields in the order the struct packs them)."""

    ident: int
    header: str  # after e_ident: type, machine, version, entry, phoff, shoff, flags, and six sizes
    program_header: str  # type, offset, vaddr, paddr, filesz, memsz, flags, align (ELF32 order)
    section_header: str  # name, type, flags, addr, offset, size, link, info, addralign, entsize
    symbol: str
    word: int  # bytes of an address

    def sizes(self, endian: str) -> tuple[int, int, int, int]:
        return tuple(  # type: ignore[return-value]
            struct.calcsize(endian + f)
            for f in ("16x" + self.header, self.program_header, self.section_header, self.symbol)
        )


_ELF32 = _Class(_ELFCLASS32, "HHIIIIIHHHHHH", "8I", "10I", "IIIBBH", 4)
_ELF64 = _Class(_ELFCLASS64, "HHIQQQIHHHHHH", "IIQQQQQQ", "IIQQQQIIQQ", "IBBHQQ", 8)


@dataclass(frozen=True)
class _ElfSymbol:
    name_offset: int
    value: int
    size: int
    info: int
    section: int


def kernel_elf(firmware: Firmware, image: bytes) -> bytes:
    """The ELF of `firmware`'s kernel: `image` (its decompressed bytes) at the proven base, its symbols."""
    endian = "<" if firmware.endian is Endian.LITTLE else ">"
    elf = _ELF64 if firmware.arch is Arch.AARCH64 else _ELF32
    ehdr_size, phdr_size, shdr_size, sym_size = elf.sizes(endian)
    base = firmware.symbols.base
    symbols = [symbol for symbol in firmware.symbols.symbols if symbol.type not in _SKIPPED_LETTERS]
    strtab = bytearray(b"\0")
    entries = [_ElfSymbol(0, 0, 0, 0, 0)]
    sizes = _sizes(symbols)
    for symbol, size in zip(symbols, sizes, strict=True):
        name_offset = len(strtab)
        strtab += symbol.name.encode(errors="replace") + b"\0"
        inside = base <= symbol.address < base + len(image)
        section = _TEXT if inside and symbol.type not in _ABSOLUTE_LETTERS else _SHN_ABS
        entries.append(_ElfSymbol(name_offset, symbol.address, size, _info(symbol), section))
    # The symbol table lists its local symbols first; sh_info is the index of the first other one.
    entries[1:] = sorted(entries[1:], key=lambda entry: entry.info >> 4 != _STB_LOCAL)
    locals_end = 1 + sum(1 for entry in entries[1:] if entry.info >> 4 == _STB_LOCAL)
    symtab = b"".join(_symbol_entry(elf, endian, e) for e in entries)
    shstrtab = b"\0".join(_SECTION_NAMES) + b"\0"
    name_offsets = [shstrtab.index(name + b"\0") if name else 0 for name in _SECTION_NAMES]

    out = bytearray(_IMAGE_OFFSET)
    out += image
    sections: list[tuple[int, int, int, int, int, int, int, int, int]] = [(0,) * 9]  # the null section
    # (type, flags, address, offset, size, link, info, alignment, entry size)
    load = firmware.load_address if firmware.load_address is not None else base
    sections.append((_SHT_PROGBITS, _SHF_WRITE_ALLOC_EXEC, base, _IMAGE_OFFSET, len(image), 0, 0, 4, 0))
    for kind, data, link, info, entry_size in (
        (_SHT_SYMTAB, symtab, _STRTAB, locals_end, sym_size),
        (_SHT_STRTAB, bytes(strtab), 0, 0, 0),
        (_SHT_STRTAB, shstrtab, 0, 0, 0),
    ):
        out += b"\0" * (-len(out) % elf.word)
        alignment = elf.word if kind == _SHT_SYMTAB else 1
        sections.append((kind, 0, 0, len(out), len(data), link, info, alignment, entry_size))
        out += data
    out += b"\0" * (-len(out) % elf.word)
    section_headers = len(out)
    for name_offset, section in zip(name_offsets, sections, strict=True):
        out += struct.pack(endian + elf.section_header, name_offset, *section)
    entry = firmware.entry if firmware.entry is not None else base
    ident = struct.pack("4sBBBB8x", b"\x7fELF", elf.ident, _ELFDATA[firmware.endian], _EV_CURRENT, 0)
    header = ident + struct.pack(
        endian + elf.header,
        _ET_EXEC,
        _MACHINE[firmware.arch],
        _EV_CURRENT,
        entry,
        ehdr_size,  # the program header follows the ELF header
        section_headers,
        _FLAGS[firmware.arch],
        ehdr_size,
        phdr_size,
        1,
        shdr_size,
        len(sections),
        _SHSTRTAB,
    )
    out[: len(header)] = header
    out[len(header) : len(header) + phdr_size] = _program_header(elf, endian, base, load, len(image))
    return bytes(out)


def _program_header(elf: _Class, endian: str, base: int, load: int, size: int) -> bytes:
    """The one PT_LOAD; ELF64 moves p_flags up to second place."""
    if elf is _ELF64:
        return struct.pack(
            endian + elf.program_header, _PT_LOAD, _PF_RWX, _IMAGE_OFFSET, base, load, size, size, 4
        )
    return struct.pack(
        endian + elf.program_header, _PT_LOAD, _IMAGE_OFFSET, base, load, size, size, _PF_RWX, 4
    )


def _symbol_entry(elf: _Class, endian: str, e: _ElfSymbol) -> bytes:
    """One Elf32_Sym or Elf64_Sym (whose value and size come after the section index)."""
    if elf is _ELF64:
        return struct.pack(endian + elf.symbol, e.name_offset, e.info, 0, e.section, e.value, e.size)
    return struct.pack(endian + elf.symbol, e.name_offset, e.value, e.size, e.info, 0, e.section)


def _info(symbol: Symbol) -> int:
    """st_info: binding (local for lowercase letters, weak for W/V, else global) and type."""
    if symbol.type in "WwVv":
        binding = _STB_WEAK
    elif symbol.type.islower():
        binding = _STB_LOCAL
    else:
        binding = _STB_GLOBAL
    if symbol.type in _FUNCTION_LETTERS:
        kind = _STT_FUNC
    elif symbol.type in _OBJECT_LETTERS:
        kind = _STT_OBJECT
    else:
        kind = _STT_NOTYPE
    return binding << 4 | kind


def _sizes(symbols: list[Symbol]) -> list[int]:
    """Each symbol's size: up to the next symbol at a higher address (0 for the last one)."""
    addresses = sorted({symbol.address for symbol in symbols})
    following = dict(itertools.pairwise(addresses))
    return [following.get(symbol.address, symbol.address) - symbol.address for symbol in symbols]
