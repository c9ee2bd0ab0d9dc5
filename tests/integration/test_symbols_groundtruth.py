"""Recovered symbols and base against what the same kernel says about itself when stock QEMU boots it."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from groundtruth import WATCH_SPAN, Board, GroundTruth, capture, malta, vexpress_a9, virt_arm64

from explorer.corpus import Corpus
from explorer.firmware.locate import locate_kernel
from explorer.firmware.model import KernelImage, SymbolTable
from explorer.firmware.symbols import recover_symbols

WITNESSED = ("start_kernel", "panic", "do_one_initcall")
# What ftrace writes over the `bl __gnu_mcount_nc` / `jal _mcount` call sites once it has started:
FTRACE_NOPS = {
    0xE28DD004,  # ARM since 5.13: `add sp, sp, #4` (drops the lr pushed before the call)
    0xE8BD4000,  # ARM before: `pop {lr}`
    0x00000000,  # MIPS: `nop` (call and delay slot)
    # AArch64 (patchable function entries, 2 NOPs): ftrace_init_nop's `mov x9, x30` in the first
    0xAA1E03E9,
}


@dataclass(frozen=True)
class Booted:
    image: KernelImage
    table: SymbolTable
    truth: GroundTruth


def _boot(corpus: Corpus, flavour: str) -> Booted:
    image = locate_kernel(corpus.kernel(flavour).read_bytes())
    table = recover_symbols(image)
    watch = [table.address_of(name) for name in WITNESSED]
    assert None not in watch
    board = _stock_board(corpus, flavour)
    truth = capture(corpus.kernel(flavour), corpus.busybox(corpus.arch_of(flavour)), board, watch)  # type: ignore[arg-type]
    return Booted(image, table, truth)


def _stock_board(corpus: Corpus, flavour: str) -> Board:
    arch = corpus.arch_of(flavour)
    if arch == "mipsel":
        return malta()
    if arch == "arm64":
        return virt_arm64()
    return vexpress_a9(corpus.dtb(flavour, "vexpress-v2p-ca9"))


# Every kernel a stock QEMU board boots: the ARMv7 ones on vexpress-a9, the MIPS one on malta,
# the AArch64 ones on virt, from Debian 11 (5.10, kallsyms tables before token_index) to 13
# (6.12, after it).
@pytest.fixture(
    scope="module", params=["armmp", "4kc-malta", "armmp-5.10", "armmp-6.12", "arm64", "arm64-6.12"]
)
def booted(request: pytest.FixtureRequest, corpus: Corpus) -> Booted:
    return _boot(corpus, request.param)


def _image_word(booted: Booted, address: int, base: int) -> int:
    offset = address - base
    return int.from_bytes(booted.image.data[offset : offset + 4], booted.image.endian.value)


@pytest.mark.qemu
def test_recovered_names_and_addresses_match_proc_kallsyms(booted: Booted) -> None:
    truth = {(s.name, s.address) for s in booted.truth.proc_kallsyms}
    recovered = {(s.name, s.address) for s in booted.table.symbols}
    assert len(truth) > 30000
    matched = len(truth & recovered) / len(truth)
    assert matched >= 0.999, sorted(truth - recovered)[:20]
    assert len(recovered - truth) <= 0.001 * len(recovered), sorted(recovered - truth)[:20]


@pytest.mark.qemu
@pytest.mark.parametrize("name", WITNESSED)
def test_image_bytes_at_a_symbol_are_the_code_the_cpu_ran_there(booted: Booted, name: str) -> None:
    address = booted.table.address_of(name)
    assert address is not None
    executed = {a: w for a, w in booted.truth.executed.items() if address <= a < address + WATCH_SPAN}
    assert len(executed) == WATCH_SPAN // 4, f"the CPU never reached {name} at {address:#x}"
    differing = {a: w for a, w in executed.items() if _image_word(booted, a, booted.table.base) != w}
    # by the time panic and the initcalls run, ftrace has turned its mcount call sites into nops
    assert len(differing) <= 2 and set(differing.values()) <= FTRACE_NOPS, {
        hex(a): hex(w) for a, w in differing.items()
    }


@pytest.mark.qemu
def test_the_naive_base_puts_other_bytes_under_the_symbols(booted: Booted) -> None:
    naive_base = min(s.address for s in booted.table.symbols if s.type in "Tt")  # _stext
    if naive_base == booted.table.base:
        naive_base += 0x1000
    words = booted.truth.executed
    agreeing = sum(_image_word(booted, a, naive_base) == w for a, w in words.items())
    assert agreeing <= 0.1 * len(words)
