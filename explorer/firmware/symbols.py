"""Symbol recovery for a located kernel, and the proof of where the image sits in memory.

Symbols come from the ELF symbol table when the format has one, else from kallsyms. Either
way the table's `base` (the virtual address of image byte 0) is checked against the code: at
the right base, most text symbols land on a function prologue for the architecture; at any
other base they land mid-function. kallsyms addresses alone do not give the base (`_stext`
is not `_text`), so candidate bases are compared by that score and the winner must beat the
runner-up clearly. Place-relative kallsyms (7.0+, relocatable kernels) place every symbol in
the image exactly, so prologues cannot tell bases apart; there the base is the one at which
the image's own function pointers (ops tables, initcalls) point at the most sampled
functions. A relocatable 64-bit kernel whose kallsyms_relative_base the image leaves zero (arm64:
filled in at boot) proves its base by its relocation table instead: the one record that fills
that slot says both where the slot is (hence where image byte 0 is) and what the relative base
is; the pointer census, read from the relocation targets, must agree. Addresses are link-time
addresses: an arm64 kernel moves itself at boot when the device tree's /chosen gives it a
kaslr-seed (QEMU's virt board writes one) unless told `nokaslr`, which a runner must then pass,
as the search does for MIPS (explorer.search.initial). This module never decompresses or parses
containers (that is `locate`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from explorer.errors import FirmwareError
from explorer.firmware.kallsyms import Kallsyms, find_kallsyms
from explorer.firmware.model import Arch, Endian, KernelImage, Symbol, SymbolTable
from explorer.firmware.relocations import find_relative_relocations

TEXT_TYPES = frozenset("TtWw")
PROOF_SAMPLES = 1024  # text symbols checked per candidate base
BASE_GRID = 0x1000  # _text is page aligned on every kernel we know; exact candidates cover the rest
MIN_PROLOGUE_SHARE = 0.25  # of the sampled symbols, at the winning base
MIN_LEAD = 4  # the winner needs this many times the runner-up's hits
POINTER_SAMPLES = 256  # functions whose pointers are looked for, per image
MIN_POINTED_SHARE = 0.05  # of the sampled functions, pointed at from the image at the winning base
KERNEL_IMAGE_ALIGN = 2 << 20  # arm64 links its image 2 MiB aligned (MIN_KIMG_ALIGN)
A64_NOP, A64_PACIASP, A64_BTI_C, A64_BTI_JC = 0xD503201F, 0xD503233F, 0xD503245F, 0xD50324DF
A64_LOWEST_KERNEL_ADDRESS = (1 << 64) - (1 << 52)  # with 52 VA bits, the most arm64 has
# Bytes before a function that a pointer to it may hold (see prove_base_by_pointers).
A64_CALL_OPS_SITE = (0, 8)

# A prologue test maps instruction words (uint32, already in instruction byte order) to booleans.
PrologueTest = Callable[[np.ndarray], np.ndarray]


def recover_symbols(image: KernelImage) -> SymbolTable:
    """The image's symbols sorted by address, with a proven base; FirmwareError if there are none."""
    if image.elf_symbols is not None and image.base is not None:
        symbols = tuple(sorted(image.elf_symbols))
        hits, samples = _prologue_hits(image, symbols, np.array([image.base], dtype=np.uint64))
        proof = (
            f"base {image.base:#x} stated by the ELF headers; "
            f"{hits[0]}/{samples} sampled text symbols start with a prologue there"
        )
        return SymbolTable(symbols, "elf", image.base, proof)
    kallsyms = find_kallsyms(image.data, image.endian, 8 if image.arch is Arch.AARCH64 else 4)
    if kallsyms.layout.encoding == "place-relative":  # addresses are image offsets
        base, proof = prove_base_by_pointers(image, kallsyms.symbols)
        symbols = tuple(Symbol(base + s.address, s.type, s.name) for s in kallsyms.symbols)
        return SymbolTable(symbols, "kallsyms", base, proof)
    if _relative_base_filled_at_boot(kallsyms):  # addresses are offsets from the relative base
        return _placed_by_relocation(image, kallsyms)
    base, proof = prove_base(image, kallsyms.symbols)
    return SymbolTable(kallsyms.symbols, "kallsyms", base, proof)


def _relative_base_filled_at_boot(kallsyms: Kallsyms) -> bool:
    layout = kallsyms.layout
    return layout.pointer_size == 8 and layout.relative_base == 0 and layout.relative_base_at is not None


def _placed_by_relocation(image: KernelImage, kallsyms: Kallsyms) -> SymbolTable:
    """Symbols of a kernel whose relative base is relocated at boot, at their link-time addresses."""
    assert kallsyms.layout.relative_base_at is not None
    base, relative_base, proof = prove_base_by_relocation(image, kallsyms.layout.relative_base_at)
    placed = tuple(Symbol(relative_base - base + s.address, s.type, s.name) for s in kallsyms.symbols)
    census_base, census = prove_base_by_pointers(image, placed)
    if census_base != base:
        raise FirmwareError(
            f"the kernel's relocations disagree about where it is loaded ({proof}; but {census}): "
            "the image is damaged"
        )
    symbols = tuple(Symbol(base + s.address, s.type, s.name) for s in placed)
    return SymbolTable(symbols, "kallsyms", base, f"{proof}; {census}")


def prove_base_by_relocation(image: KernelImage, slot: int) -> tuple[int, int, str]:
    """(base, relative base, proof) from the one R_AARCH64_RELATIVE record that fills the pointer at
    image offset `slot` (kallsyms_relative_base): its place is base + slot, at a 2 MiB aligned base,
    and its target lies in the image."""
    relocations = find_relative_relocations(image.data, image.endian)
    if relocations is None:
        raise FirmwareError(
            "the kernel leaves its kallsyms base to be filled in at boot, but its image has no "
            "relocation table: it cannot be placed (is the image complete?)"
        )
    bases = relocations.places - np.uint64(slot)  # uint64: a place below the slot wraps and fails
    targets = relocations.targets - bases
    fits = (
        (relocations.places >= np.uint64(slot))
        & (bases % np.uint64(KERNEL_IMAGE_ALIGN) == 0)
        & (targets < np.uint64(len(image.data)))
    )
    found = np.flatnonzero(fits)
    if len(found) != 1:
        raise FirmwareError(
            f"{len(found)} of the kernel's {len(relocations.places)} relocations could fill its kallsyms "
            f"base at image offset {slot:#x} (one must): the image is damaged or laid out as explorer "
            "does not know"
        )
    i = int(found[0])
    base, relative_base = int(bases[i]), int(relocations.targets[i])
    proof = (
        f"the relocation at image offset {relocations.at + 24 * i:#x} fills kallsyms_relative_base "
        f"(image offset {slot:#x}) with {relative_base:#x}, so image byte 0 is at {base:#x}"
    )
    return base, relative_base, proof


def prove_base(image: KernelImage, symbols: tuple[Symbol, ...]) -> tuple[int, str]:
    """The base at which the most sampled text symbols start with a prologue, and the one-line proof."""
    text = _text_addresses(symbols)
    if not len(text):
        raise FirmwareError(
            "the kernel's symbol table has no text symbols, so its load address cannot be proven"
        )
    bases = _candidate_bases(text, symbols, len(image.data))
    hits, samples = _prologue_hits(image, symbols, bases)
    ranked = np.argsort(-hits, kind="stable")
    best, best_hits = int(bases[ranked[0]]), int(hits[ranked[0]])
    runner_up, runner_hits = (int(bases[ranked[1]]), int(hits[ranked[1]])) if len(ranked) > 1 else (None, 0)
    proof = f"{best_hits}/{samples} sampled text symbols start with a prologue at base {best:#x}"
    if runner_up is not None:
        proof += f"; next best base {runner_up:#x}: {runner_hits}/{samples}"
    if best_hits < MIN_PROLOGUE_SHARE * samples or best_hits < MIN_LEAD * runner_hits:
        raise FirmwareError(
            f"cannot prove where the kernel image is loaded ({proof}); "
            "the image may not start at _text or the architecture/endianness is wrong"
        )
    return best, proof


def prove_base_by_pointers(image: KernelImage, placed: tuple[Symbol, ...]) -> tuple[int, str]:
    """For symbols known by their image offsets: the page-aligned base at which the most sampled
    functions have a pointer to them somewhere in the image, and the one-line proof.

    A pointer to a function holds its address; ftrace's table of call sites (__mcount_loc), which
    covers nearly every function, holds each one's patch site instead, which on arm64 with
    DYNAMIC_FTRACE_WITH_CALL_OPS (6.x) is 8 bytes before the entry (-fpatchable-function-entry=4,2
    puts two of its four NOPs ahead of the symbol). So AArch64 kernels are counted both ways, and
    the count with the clearer winner proves the base."""
    text = _text_addresses(placed)
    if not len(text):
        raise FirmwareError(
            "the kernel's symbol table has no text symbols, so its load address cannot be proven"
        )
    sample = text[np.linspace(0, len(text) - 1, min(POINTER_SAMPLES, len(text))).astype(np.int64)]
    words = _pointer_values(image)
    words = words[words != 0] & ~np.uint64(1)  # bit 0 marks Thumb or microMIPS code, not an address bit
    # A pointer w to the function at offset s gives the base w - s, page aligned only when w and s
    # agree in their low 12 bits: group the words by those bits once, then look each sample up.
    grid = np.uint64(BASE_GRID)
    words = words[np.argsort(words % grid, kind="stable")]
    low_bits = words % grid
    counts = [
        (*_pointer_census(words, low_bits, sample, before), before)
        for before in (A64_CALL_OPS_SITE if image.arch is Arch.AARCH64 else (0,))
    ]
    candidates, pointed, before = max(counts, key=lambda count: int(count[1].max(initial=0)))
    if not len(candidates):
        raise FirmwareError(
            "cannot prove where the kernel image is loaded: nothing in it points at its functions"
        )
    ranked = np.argsort(-pointed, kind="stable")
    best, best_hits = int(candidates[ranked[0]]), int(pointed[ranked[0]])
    runner_hits = int(pointed[ranked[1]]) if len(ranked) > 1 else 0
    what = (
        "sampled functions are pointed at"
        if not before
        else f"sampled functions' ftrace sites ({before} bytes before them) are pointed at"
    )
    proof = f"{best_hits}/{len(sample)} {what} from the image at base {best:#x}"
    if len(ranked) > 1:
        proof += f"; next best base {int(candidates[ranked[1]]):#x}: {runner_hits}/{len(sample)}"
    if best_hits < MIN_POINTED_SHARE * len(sample) or best_hits < MIN_LEAD * runner_hits:
        raise FirmwareError(
            f"cannot prove where the kernel image is loaded ({proof}); "
            "the image may not start at _text or the endianness is wrong"
        )
    return best, proof


def _pointer_census(
    words: np.ndarray, low_bits: np.ndarray, sample: np.ndarray, before: int
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate bases and, for each, how many sampled functions have a pointer to `before` bytes
    ahead of them (`words` sorted by their low bits, `low_bits` those bits)."""
    bases = [np.zeros(0, dtype=np.uint64)]
    for function in sample.tolist():
        offset = function - before
        if offset < 0:
            continue
        low = np.uint64(offset % BASE_GRID)
        same_page_offset = words[
            np.searchsorted(low_bits, low) : np.searchsorted(low_bits, low, side="right")
        ]
        pointing = same_page_offset[same_page_offset >= np.uint64(offset)]
        bases.append(np.unique(pointing - np.uint64(offset)))  # once per function
    return np.unique(np.concatenate(bases), return_counts=True)


def _pointer_values(image: KernelImage) -> np.ndarray:
    """Every value the image may hold as a pointer (uint64): its words, and for a relocatable
    64-bit kernel the targets of its relocations (the image holds zeros there until boot)."""
    width = 8 if image.arch is Arch.AARCH64 else 4
    dtype = ("<" if image.endian is Endian.LITTLE else ">") + f"u{width}"
    words = np.frombuffer(image.data, dtype, len(image.data) // width).astype(np.uint64)
    if image.arch is not Arch.AARCH64:
        return words
    # An arm64 kernel lives at the top of the address space (TTBR1, at most 52 VA bits): only
    # words at or above its lowest possible address can point at it (6-9% of the words).
    words = words[words >= np.uint64(A64_LOWEST_KERNEL_ADDRESS)]
    relocations = find_relative_relocations(image.data, image.endian)
    return words if relocations is None else np.concatenate([words, relocations.targets])


def _text_addresses(symbols: tuple[Symbol, ...]) -> np.ndarray:
    """The distinct text symbol addresses, uint64 (64-bit kernel addresses do not fit an int64)."""
    return np.unique(np.array([s.address for s in symbols if s.type in TEXT_TYPES], dtype=np.uint64))


def _candidate_bases(text: np.ndarray, symbols: tuple[Symbol, ...], size: int) -> np.ndarray:
    """Page-aligned bases that put (nearly) all text inside the image, plus `_text` and the lowest symbol.

    Quantiles rather than extremes bound the range, so that a few text symbols linked elsewhere
    (ARM vectors at 0xffff0000) do not empty it.
    """
    low = int(text[len(text) // 1000])
    high = int(text[len(text) - 1 - len(text) // 1000])
    first = max(0, high - size + 1)
    first -= first % BASE_GRID
    steps = max(0, (low - first) // BASE_GRID + 1)
    grid = np.uint64(first) + np.arange(steps, dtype=np.uint64) * np.uint64(BASE_GRID)
    exact = [s.address for s in symbols if s.name == "_text"] + [int(text[0])]
    return np.unique(np.concatenate([grid, np.array(exact, dtype=np.uint64)]))


def _prologue_hits(
    image: KernelImage, symbols: tuple[Symbol, ...], bases: np.ndarray
) -> tuple[np.ndarray, int]:
    """For each base, how many sampled text symbols start with a prologue; and the sample size."""
    text = _text_addresses(symbols)
    sample = (
        text[np.linspace(0, len(text) - 1, min(PROOF_SAMPLES, len(text))).astype(np.int64)]
        if len(text)
        else text
    )
    if not len(sample):
        return np.zeros(len(bases), dtype=np.int64), 0
    image_bytes = np.frombuffer(image.data, dtype=np.uint8)
    offsets = sample[None, :] - bases[:, None]  # uint64: a symbol below the base wraps and is outside
    inside = offsets <= np.uint64(max(0, len(image_bytes) - 4))
    offsets = np.where(inside, offsets, np.uint64(0)).astype(np.int64)
    best = np.zeros(len(bases), dtype=np.int64)
    for order, is_prologue in _prologue_tests(image):
        words = _words_at(image_bytes, offsets, order)
        best = np.maximum(best, np.count_nonzero(is_prologue(words) & inside, axis=1))
    return best, len(sample)


def _words_at(image_bytes: np.ndarray, offsets: np.ndarray, order: Endian) -> np.ndarray:
    """The 32-bit word at each (possibly unaligned) offset, in `order`."""
    shifts = (0, 8, 16, 24) if order is Endian.LITTLE else (24, 16, 8, 0)
    words = np.zeros(offsets.shape, dtype=np.uint32)
    for i, shift in enumerate(shifts):
        words |= image_bytes[offsets + i].astype(np.uint32) << np.uint32(shift)
    return words


def _prologue_tests(image: KernelImage) -> list[tuple[Endian, PrologueTest]]:
    """Instruction byte orders to try, each with the arch's prologue test.

    Big-endian ARMv6+ kernels (BE8) keep instructions little-endian; ARMv5 (BE32) does not.
    """
    if image.arch is Arch.MIPS:
        return [(image.endian, _is_mips_prologue)]
    if image.arch is Arch.AARCH64:  # A64 instructions are little-endian whatever the data's order
        return [(Endian.LITTLE, _is_a64_prologue)]
    orders = [Endian.LITTLE] if image.endian is Endian.LITTLE else [Endian.BIG, Endian.LITTLE]
    return [(order, _is_arm_prologue) for order in orders]


def _is_arm_prologue(words: np.ndarray) -> np.ndarray:
    """A32 `push {...}` / `str lr, [sp, #-4]!` / `sub sp, sp, #n` / `mov ip, sp`, or Thumb `push`."""
    halfword = words & 0xFFFF  # the first Thumb halfword of a little-endian word
    return (
        ((words & 0xFFFF0000) == 0xE92D0000)
        | (words == 0xE52DE004)
        | ((words & 0xFFFFF000) == 0xE24DD000)
        | (words == 0xE1A0C00D)
        | ((halfword & 0xFF00) == 0xB500)
        | (halfword == 0xE92D)
    )


def _is_a64_prologue(words: np.ndarray) -> np.ndarray:
    """`paciasp` / `bti c` / `bti jc` (pointer authentication and branch target landing pads), the
    `nop` ftrace patches (-fpatchable-function-entry), `stp x29, x30, [sp, #-n]!`, `sub sp, sp, #n`."""
    return (
        np.isin(words, (A64_PACIASP, A64_BTI_C, A64_BTI_JC, A64_NOP))
        | ((words & 0xFFC07FFF) == 0xA9807BFD)
        | ((words & 0xFF8003FF) == 0xD10003FF)
    )


def _is_mips_prologue(words: np.ndarray) -> np.ndarray:
    """`addiu sp, sp, -n`, or `move at, ra` (the -pg call to _mcount that precedes it)."""
    return (
        (((words >> 16) == 0x27BD) & ((words & 0x8000) != 0)) | (words == 0x03E00825) | (words == 0x03E00821)
    )
