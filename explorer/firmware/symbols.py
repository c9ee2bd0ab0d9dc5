"""Symbol recovery for a located kernel, and the proof of where the image sits in memory.

Symbols come from the ELF symbol table when the format has one, else from kallsyms. Either
way the table's `base` (the virtual address of image byte 0) is checked against the code: at
the right base, most text symbols land on a function prologue for the architecture; at any
other base they land mid-function. kallsyms addresses alone do not give the base (`_stext`
is not `_text`), so candidate bases are compared by that score and the winner must beat the
runner-up clearly. Place-relative kallsyms (7.0+, relocatable kernels) place every symbol in
the image exactly, so prologues cannot tell bases apart; there the base is the one at which
the image's own function pointers (ops tables, initcalls) point at the most sampled
functions. This module never decompresses or parses containers (that is `locate`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from explorer.errors import FirmwareError
from explorer.firmware.kallsyms import find_kallsyms
from explorer.firmware.model import Arch, Endian, KernelImage, Symbol, SymbolTable

TEXT_TYPES = frozenset("TtWw")
PROOF_SAMPLES = 1024  # text symbols checked per candidate base
BASE_GRID = 0x1000  # _text is page aligned on every kernel we know; exact candidates cover the rest
MIN_PROLOGUE_SHARE = 0.25  # of the sampled symbols, at the winning base
MIN_LEAD = 4  # the winner needs this many times the runner-up's hits
POINTER_SAMPLES = 256  # functions whose pointers are looked for, per image
MIN_POINTED_SHARE = 0.05  # of the sampled functions, pointed at from the image at the winning base

# A prologue test maps instruction words (uint32, already in instruction byte order) to booleans.
PrologueTest = Callable[[np.ndarray], np.ndarray]


def recover_symbols(image: KernelImage) -> SymbolTable:
    """The image's symbols sorted by address, with a proven base; FirmwareError if there are none."""
    if image.elf_symbols is not None and image.base is not None:
        symbols = tuple(sorted(image.elf_symbols))
        hits, samples = _prologue_hits(image, symbols, np.array([image.base], dtype=np.int64))
        proof = (
            f"base {image.base:#x} stated by the ELF headers; "
            f"{hits[0]}/{samples} sampled text symbols start with a prologue there"
        )
        return SymbolTable(symbols, "elf", image.base, proof)
    kallsyms = find_kallsyms(image.data, image.endian)
    if kallsyms.layout.encoding == "place-relative":  # addresses are image offsets
        base, proof = prove_base_by_pointers(image, kallsyms.symbols)
        symbols = tuple(Symbol(base + s.address, s.type, s.name) for s in kallsyms.symbols)
        return SymbolTable(symbols, "kallsyms", base, proof)
    base, proof = prove_base(image, kallsyms.symbols)
    return SymbolTable(kallsyms.symbols, "kallsyms", base, proof)


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
    functions have a pointer to them somewhere in the image, and the one-line proof."""
    text = _text_addresses(placed)
    if not len(text):
        raise FirmwareError(
            "the kernel's symbol table has no text symbols, so its load address cannot be proven"
        )
    sample = text[np.linspace(0, len(text) - 1, min(POINTER_SAMPLES, len(text))).astype(np.int64)]
    dtype = "<u4" if image.endian is Endian.LITTLE else ">u4"
    words = np.frombuffer(image.data, dtype, len(image.data) // 4).astype(np.int64)
    words = words[words != 0] & ~1  # bit 0 marks Thumb or microMIPS code, not an address bit
    # A pointer w to the function at offset s gives the base w - s, page aligned only when w and s
    # agree in their low 12 bits: group the words by those bits once, then look each sample up.
    words = words[np.argsort(words % BASE_GRID, kind="stable")]
    low_bits = words % BASE_GRID
    bases = []
    for offset in sample.tolist():
        same_page_offset = words[
            np.searchsorted(low_bits, offset % BASE_GRID) : np.searchsorted(
                low_bits, offset % BASE_GRID, side="right"
            )
        ]
        bases.append(np.unique(same_page_offset[same_page_offset >= offset] - offset))  # once per function
    candidates, pointed = np.unique(np.concatenate(bases), return_counts=True)
    if not len(candidates):
        raise FirmwareError(
            "cannot prove where the kernel image is loaded: nothing in it points at its functions"
        )
    ranked = np.argsort(-pointed, kind="stable")
    best, best_hits = int(candidates[ranked[0]]), int(pointed[ranked[0]])
    runner_hits = int(pointed[ranked[1]]) if len(ranked) > 1 else 0
    proof = f"{best_hits}/{len(sample)} sampled functions are pointed at from the image at base {best:#x}"
    if len(ranked) > 1:
        proof += f"; next best base {int(candidates[ranked[1]]):#x}: {runner_hits}/{len(sample)}"
    if best_hits < MIN_POINTED_SHARE * len(sample) or best_hits < MIN_LEAD * runner_hits:
        raise FirmwareError(
            f"cannot prove where the kernel image is loaded ({proof}); "
            "the image may not start at _text or the endianness is wrong"
        )
    return best, proof


def _text_addresses(symbols: tuple[Symbol, ...]) -> np.ndarray:
    return np.unique(np.array([s.address for s in symbols if s.type in TEXT_TYPES], dtype=np.int64))


def _candidate_bases(text: np.ndarray, symbols: tuple[Symbol, ...], size: int) -> np.ndarray:
    """Page-aligned bases that put (nearly) all text inside the image, plus `_text` and the lowest symbol.

    Quantiles rather than extremes bound the range, so that a few text symbols linked elsewhere
    (ARM vectors at 0xffff0000) do not empty it.
    """
    low = int(text[len(text) // 1000])
    high = int(text[len(text) - 1 - len(text) // 1000])
    first = max(0, high - size + 1)
    grid = np.arange(first - first % BASE_GRID, low + 1, BASE_GRID, dtype=np.int64)
    exact = [s.address for s in symbols if s.name == "_text"] + [int(text[0])]
    return np.unique(np.concatenate([grid, np.array(exact, dtype=np.int64)]))


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
    offsets = sample[None, :] - bases[:, None]
    inside = (offsets >= 0) & (offsets <= len(image_bytes) - 4)
    offsets = np.where(inside, offsets, 0)
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


def _is_mips_prologue(words: np.ndarray) -> np.ndarray:
    """`addiu sp, sp, -n`, or `move at, ra` (the -pg call to _mcount that precedes it)."""
    return (
        (((words >> 16) == 0x27BD) & ((words & 0x8000) != 0)) | (words == 0x03E00825) | (words == 0x03E00821)
    )
