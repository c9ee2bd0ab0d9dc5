"""Debian's arm64 kernels (bookworm's 6.1, trixie's 6.12) ingested from their Image: symbols and base
checked against what the image itself says independently of kallsyms.

Debian's packaged System.map is an 83-byte placeholder (the real one is in the 800 MB -dbg
package), so the references here are the kernel's own: the Image header's branch to its entry
point, the relocation table (every pointer the kernel relocates lies in its image), and the
header's image size. BENCHMARKS.md ("Symbol recovery", AArch64) compares every symbol with the
-dbg vmlinux's symbol table (benchmarks/arm64_symbols.py); the comparison with /proc/kallsyms
under stock QEMU -M virt is still to do (no qemu-system-aarch64 is built yet).
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from explorer.corpus import Corpus
from explorer.errors import BadInput
from explorer.firmware.ingest import ingest
from explorer.firmware.locate import locate_kernel
from explorer.firmware.model import Arch, Firmware
from explorer.firmware.relocations import find_relative_relocations
from explorer.search.initial import qemu_target

ARM64 = ["arm64", "arm64-6.12"]
B_OPCODE, B_MASK = 0x14000000, 0xFC000000  # A64 `b imm26`


@pytest.fixture(scope="module", params=ARM64)
def kernel(request: pytest.FixtureRequest, corpus: Corpus) -> tuple[Firmware, bytes]:
    path = corpus.kernel(request.param)
    return ingest(path, use_cache=False), path.read_bytes()


def test_an_arm64_kernel_is_an_aarch64_image_with_its_header_facts(kernel: tuple[Firmware, bytes]) -> None:
    firmware, _ = kernel
    assert (firmware.arch, firmware.cpu_class) == (Arch.AARCH64, "ARMv8-A")
    assert [layer.kind for layer in firmware.layers] == ["arm64-image"]
    assert firmware.page_size == 4096 and firmware.va_bits == 48
    assert firmware.page_offset == (1 << 64) - (1 << 48)


def test_the_headers_branch_lands_on_the_symbol_primary_entry(kernel: tuple[Firmware, bytes]) -> None:
    # With an EFI stub, code0 is "MZ" (an instruction that does nothing) and code1 the branch.
    firmware, image = kernel
    code1 = struct.unpack_from("<I", image, 4)[0]
    assert code1 & B_MASK == B_OPCODE
    target = firmware.symbols.base + 4 + 4 * (code1 & ~B_MASK)
    assert firmware.symbols.address_of("primary_entry") == target


def test_every_symbol_lies_in_the_image_the_header_sizes(kernel: tuple[Firmware, bytes]) -> None:
    firmware, image = kernel
    base, size = firmware.symbols.base, struct.unpack_from("<Q", image, 0x10)[0]
    symbols = firmware.symbols.symbols
    assert len(symbols) > 30000
    assert all(base <= s.address <= base + size for s in symbols)  # 6.12 lists _end, at the end
    text = [s for s in symbols if s.type in "Tt"]
    assert len({s.name for s in text}) > 0.9 * len(text)  # names, not noise
    assert all(firmware.symbols.address_of(name) for name in ("start_kernel", "do_one_initcall", "panic"))


def test_every_relocated_pointer_lies_in_the_image_at_the_proven_base(corpus: Corpus) -> None:
    # 6.1 carries .rela.dyn and leaves the pointers (kallsyms_relative_base among them) zero in the
    # image, so the relocation proves the base. 6.12 packs its relocations as RELR, which keeps
    # every pointer's value in the image: there the prologues and the pointer census prove it
    # (test_symbols_releases.py).
    path = corpus.kernel("arm64")
    firmware, image = ingest(path), path.read_bytes()
    assert "fills kallsyms_relative_base" in firmware.symbols.proof
    assert "pointed at" in firmware.symbols.proof
    relocations = find_relative_relocations(image, firmware.endian)
    assert relocations is not None and len(relocations.places) > 100000
    base, size = firmware.symbols.base, struct.unpack_from("<Q", image, 0x10)[0]
    places = [int(p) - base for p in relocations.places]
    assert min(places) >= 0 and max(places) < size


def test_searching_an_arm64_kernel_is_refused_in_one_line(kernel: tuple[Firmware, bytes]) -> None:
    firmware, _ = kernel
    with pytest.raises(BadInput, match=r"AArch64 kernels .* the search cannot place their devices yet"):
        qemu_target(firmware)


def test_explorer_search_on_an_arm64_kernel_exits_2_in_one_line_leaving_no_work_directory(
    corpus: Corpus, qemu_build: Path, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    completed = subprocess.run(
        [sys.executable, "-m", "explorer", "search", str(corpus.kernel("arm64")), "--work", str(work)],
        env={**os.environ, "EXPLORER_QEMU": str(qemu_build)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 2, completed.stderr
    assert completed.stderr.strip().splitlines() == [
        "explorer: error: AArch64 kernels are ingested (explorer inspect) and boot on the runner's "
        "AArch64 machine, but the search cannot place their devices yet"
    ]
    assert not work.exists()


def test_the_image_gzipped_is_the_same_kernel(corpus: Corpus) -> None:
    import gzip

    image = corpus.kernel("arm64").read_bytes()
    kernel = locate_kernel(gzip.compress(image, compresslevel=1, mtime=0))
    assert kernel.data == image and [layer.kind for layer in kernel.layers] == ["compressed", "arm64-image"]
