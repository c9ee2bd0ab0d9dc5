"""Kernel facts read from the image and its symbols: version banner, CPU class, PAGE_OFFSET,
the physical address the image must be loaded at, and for AArch64 the page size and VA bits.

Each fact comes from evidence in the kernel itself, and each function's docstring names the
evidence. Nothing here guesses a board or looks at how the kernel was packaged.
"""

from __future__ import annotations

import re

import numpy as np

from explorer.firmware.model import Arch, DeviceTreeFacts, Endian, KernelImage, SymbolTable

# `linux_banner`: "Linux version <release> (<builder>) #<build> <flags> <date>\n".
_BANNER = re.compile(rb"Linux version (\d[\x20-\x7e]{0,300})")

# Processor support files arch/arm/mm/proc-*.S define cpu_<name>_proc_init for every CPU
# they support; the architecture each one implements, oldest first.
_ARM_PROCESSORS = {
    "ARMv4": ("sa110", "sa1100", "fa526"),
    "ARMv4T": ("arm720", "arm740", "arm7tdmi", "arm920", "arm922", "arm925", "arm940", "arm9tdmi"),
    "ARMv5": (
        "arm926",
        "arm946",
        "arm1020",
        "arm1020e",
        "arm1022",
        "arm1026",
        "feroceon",
        "mohawk",
        "xscale",
        "xsc3",
    ),
    "ARMv6": ("v6",),
    "ARMv7-M": ("v7m",),
    "ARMv7": ("v7", "ca8", "ca9mp", "ca15", "pj4b", "b15", "krait"),
}
_PROC_INIT = re.compile(r"cpu_(\w+)_proc_init")

# Kconfig offers these PAGE_OFFSETs (VMSPLIT_3G, 3G_OPT, 2G, 1G); highest first.
_ARM_PAGE_OFFSETS = (0xC000_0000, 0xB000_0000, 0x8000_0000, 0x4000_0000)
# TEXT_OFFSET is 0x8000 above a 1 MiB step (0x8000, 0x108000, 0x208000, 0x308000, ...),
# room for the initial page tables below the kernel, and always below 16 MiB.
_TEXT_OFFSET_LOW_BITS, _TEXT_OFFSET_STEP, _MAX_TEXT_OFFSET = 0x8000, 0x10_0000, 0x100_0000
_MIPS_KSEG0, _MIPS_KSEG0_SIZE = 0x8000_0000, 0x2000_0000

# SPECIAL3 (opcode 31) with function EXT (0) or INS (4): MIPS32r2 bitfield instructions that
# gcc emits all over a kernel built for r2, and that do not exist in MIPS32r1.
_MIPS_SPECIAL3, _MIPS_EXT, _MIPS_INS = 0x1F, 0x00, 0x04
_MIPS_R2_MIN_SHARE = 0.001  # 0.1 % of text words; an r2 kernel has far more, an r1 kernel none

# Every arm64 kernel runs on ARMv8.0-A; the board's cores (its device tree) may be newer. The
# architecture each core implements, from Arm's technical reference manuals.
_A64_BASELINE = "ARMv8-A"
_A64_CORES = {
    "ARMv8-A": ("cortex-a35", "cortex-a53", "cortex-a57", "cortex-a72", "cortex-a73", "carmel"),
    "ARMv8.2-A": (
        "cortex-a55", "cortex-a65", "cortex-a75", "cortex-a76", "cortex-a77", "cortex-a78",
        "cortex-x1", "neoverse-n1", "neoverse-e1", "kryo-4xx", "kryo-5xx",
    ),
    "ARMv9-A": ("cortex-a510", "cortex-a520", "cortex-a710", "cortex-a715", "cortex-a720", "cortex-x2",
                "cortex-x3", "cortex-x4", "neoverse-n2"),
}  # fmt: skip
# The Image goes at a 2 MiB aligned physical base plus the header's text_offset (booting.rst).
_A64_IMAGE_ALIGN = 2 << 20


def kernel_version(image: KernelImage) -> str | None:
    """The `linux_banner` after "Linux version ", or None when the image has none.

    Some images hold a second, template copy of the banner without a build number; the
    printed one has "#<digits>".
    """
    banners = [m.group(1).decode("ascii").strip() for m in _BANNER.finditer(image.data)]
    numbered = [b for b in banners if re.search(r"#\d+", b)]
    return (numbered or banners or [None])[0]


def cpu_class(image: KernelImage, symbols: SymbolTable) -> str:
    """The CPU architecture the kernel runs on: "ARMv5", "ARMv7", "MIPS32r2", ...

    ARM: the newest architecture among the processors whose `cpu_<name>_proc_init` the kernel
    carries (a v6+v7 kernel runs on a v7 CPU). AArch64: ARMv8-A, which every arm64 kernel runs
    on (`board_cpu_class` says which the board's cores are). MIPS: MIPS32r2 when r2-only EXT/INS
    instructions are common in the kernel text, else MIPS32r1. "ARM" or "MIPS" alone when
    there is no evidence.
    """
    if image.arch is Arch.MIPS:
        return _mips_class(image, symbols)
    if image.arch is Arch.AARCH64:
        return _A64_BASELINE
    processors = {m.group(1) for s in symbols.symbols if (m := _PROC_INIT.fullmatch(s.name))}
    supported = [arch for arch, names in _ARM_PROCESSORS.items() if processors.intersection(names)]
    return supported[-1] if supported else "ARM"


def board_cpu_class(tree: DeviceTreeFacts) -> str | None:
    """The architecture of an AArch64 board's cores, from the device tree's /cpus compatibles: the
    oldest among them (the kernel runs on every core), or None when a core is one we do not know."""
    classes = []
    for compatible in tree.cpus:
        core = compatible.removeprefix("arm,")
        known = [arch for arch, cores in _A64_CORES.items() if core in cores]
        if not known:
            return None
        classes.append(known[0])
    order = list(_A64_CORES)
    return min(classes, key=order.index) if classes else None


def fixed_page_size(image: KernelImage) -> int | None:
    """The page size an architecture fixes: 4 KiB on 32-bit ARM; None where a kernel chooses
    (MIPS, AArch64: its Image header says)."""
    return 4096 if image.arch is Arch.ARM else None


def va_bits(image: KernelImage, symbols: SymbolTable) -> int | None:
    """AArch64: the virtual address bits of the kernel's half (VA_BITS_MIN), or None elsewhere.

    The kernel is linked at KIMAGE_VADDR, a little above the start of the upper half of a
    VA_BITS_MIN address space (0xffff800008000000 on 6.1 with 48 bits, 0xffff800080000000 on
    6.12), so the run of leading one bits of its link address gives VA_BITS_MIN. A kernel built
    for 52-bit VAs links in the 48-bit half too (and uses 52 bits only on CPUs that have them):
    this is then 48.
    """
    if image.arch is not Arch.AARCH64:
        return None
    text = _text_address(symbols)
    leading_ones = 64 - (~text & ((1 << 64) - 1)).bit_length()
    bits = 64 - leading_ones + 1
    return bits if 36 <= bits <= 52 else None


def page_offset(image: KernelImage, symbols: SymbolTable) -> int | None:
    """The virtual address of the start of RAM (PAGE_OFFSET), or None when the evidence is missing.

    ARM: `_text` = PAGE_OFFSET + TEXT_OFFSET, PAGE_OFFSET is one of Kconfig's choices and
    TEXT_OFFSET follows the 0x8000-above-a-MiB convention, which together pick one answer
    (rounding `_text` down to 16 MiB would be wrong for a 0xB0000000 split with a big
    TEXT_OFFSET, for instance). MIPS32: KSEG0 when the kernel is linked there. AArch64 (5.4+
    layout): the linear map starts the kernel's half, at -(1 << VA_BITS_MIN) (`va_bits`).
    """
    text = _text_address(symbols)
    if image.arch is Arch.AARCH64:
        bits = va_bits(image, symbols)
        return None if bits is None else (1 << 64) - (1 << bits)
    if image.arch is Arch.MIPS:
        return _MIPS_KSEG0 if _MIPS_KSEG0 <= text < _MIPS_KSEG0 + _MIPS_KSEG0_SIZE else None
    for candidate in _ARM_PAGE_OFFSETS:
        text_offset = text - candidate
        if 0 <= text_offset < _MAX_TEXT_OFFSET and text_offset % _TEXT_OFFSET_STEP == _TEXT_OFFSET_LOW_BITS:
            return candidate
    return None


def load_address(
    arch: Arch,
    symbols: SymbolTable,
    kernel_page_offset: int | None,
    tree: DeviceTreeFacts | None,
    text_offset: int | None = None,
) -> int | None:
    """The physical address of `_text` when no header states it, or None without evidence.

    ARM: PHYS_OFFSET + TEXT_OFFSET, with PHYS_OFFSET the lowest RAM bank of the device tree
    (a multiplatform kernel works out PHYS_OFFSET from where it was loaded, so only the board
    says). MIPS: KSEG0 maps physical memory one to one, so `_text` - KSEG0. AArch64: the Image
    header's `text_offset` above the first 2 MiB boundary of the lowest RAM bank (where the boot
    protocol says to put it; a relocatable kernel runs from any such base).
    """
    if arch is Arch.AARCH64:
        if tree is None or not tree.memory or text_offset is None:
            return None
        lowest = min(start for start, _ in tree.memory)
        return lowest + -lowest % _A64_IMAGE_ALIGN + text_offset
    if kernel_page_offset is None:
        return None
    text_offset = _text_address(symbols) - kernel_page_offset
    if arch is Arch.MIPS:
        return text_offset
    if tree is None or not tree.memory:
        return None
    return min(start for start, _ in tree.memory) + text_offset


def _text_address(symbols: SymbolTable) -> int:
    return symbols.address_of("_text") or symbols.base


def _mips_class(image: KernelImage, symbols: SymbolTable) -> str:
    text_end = symbols.address_of("_etext") or (
        symbols.symbols[-1].address if symbols.symbols else symbols.base
    )
    text_size = min(len(image.data), max(0, text_end - symbols.base)) // 4
    if text_size == 0:
        return "MIPS"
    dtype = "<u4" if image.endian is Endian.LITTLE else ">u4"
    words = np.frombuffer(image.data, dtype, text_size)
    function = words & 0x3F
    bitfield_ops = np.count_nonzero(
        (words >> 26 == _MIPS_SPECIAL3) & ((function == _MIPS_EXT) | (function == _MIPS_INS))
    )
    return "MIPS32r2" if bitfield_ops > _MIPS_R2_MIN_SHARE * text_size else "MIPS32r1"
