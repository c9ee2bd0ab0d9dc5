"""Firmware formats on the real Debian kernels: the armmp kernel in every container and every
compression the kernel build supports peels to byte-identical KernelImage.data; marvell, rpi and
malta are recognised with the right architecture, byte order and addresses."""

from __future__ import annotations

import random
import struct
import sys
from pathlib import Path

import pytest

from explorer.corpus import Corpus
from explorer.firmware.locate import locate_kernel
from explorer.firmware.model import Arch, Endian, KernelImage
from explorer.firmware.symbols import recover_symbols
from tests.helpers import run

VMLINUX_TO_ELF = Path(sys.executable).parent / "vmlinux-to-elf"  # a test dependency, in the venv
RECOMPRESS = {  # fast levels: the point is the format, not the ratio
    "gzip": ["gzip", "-n", "-1", "-c"],
    "lzma": ["lzma", "-1", "-c"],
    "xz": ["xz", "--check=crc32", "--arm", "--lzma2=preset=1", "-c"],  # BCJ filter as scripts/xz_wrap.sh
    "lzo": ["lzop", "-1", "-c"],
    "lz4-legacy": ["lz4", "-l", "-1", "-c"],
    "zstd": ["zstd", "-q", "-1", "-c"],
}


def rewrapped_zimage(zimage: bytes, kernel: KernelImage, payload: bytes) -> bytes:
    """The real zImage's decompressor stub and tail around a new payload, end offset fixed up."""
    layer = kernel.layers[-1]
    start = layer.detail["payload_offset"]
    tail = start + layer.detail["payload_size"] + 4  # past the old stream and its size word
    (link_start,) = struct.unpack_from("<I", zimage, 0x28)
    body = zimage[:start] + payload + struct.pack("<I", len(kernel.data)) + zimage[tail : layer.size]
    return body[:0x2C] + struct.pack("<I", link_start + len(body)) + body[0x30:]


def test_armmp_zimage_is_little_endian_arm_with_xz_payload(corpus: Corpus, armmp: KernelImage) -> None:
    assert (armmp.arch, armmp.endian) == (Arch.ARM, Endian.LITTLE)
    assert len(armmp.data) == armmp.layers[0].detail["image_size"]
    assert [layer.kind for layer in armmp.layers] == ["zimage"]
    assert armmp.layers[0].detail["compression"] == "xz"
    assert armmp.layers[0].detail["size_word_ok"] is True
    assert armmp.data.find(f"Linux version {corpus.release('armmp')} ".encode()) >= 0
    assert armmp.base is None and armmp.appended_dtb is None


@pytest.mark.parametrize("codec", sorted(RECOMPRESS))
def test_armmp_recompressed_with_each_codec_and_rewrapped_gives_identical_image(
    armmp_zimage: bytes, armmp: KernelImage, codec: str
) -> None:
    payload = run(*RECOMPRESS[codec], stdin=armmp.data)
    kernel = locate_kernel(rewrapped_zimage(armmp_zimage, armmp, payload))
    assert kernel.layers[-1].detail["compression"] == codec
    assert kernel.data == armmp.data


def test_armmp_with_appended_dtb_returns_it(corpus: Corpus, armmp_zimage: bytes, armmp: KernelImage) -> None:
    dtb = corpus.dtb("armmp", "vexpress-v2p-ca9").read_bytes()
    kernel = locate_kernel(armmp_zimage + dtb)
    assert (kernel.appended_dtb, kernel.data) == (dtb, armmp.data)


def test_armmp_decompressed_image_is_recognised_raw(armmp: KernelImage) -> None:
    kernel = locate_kernel(armmp.data)
    assert (kernel.data, kernel.arch, kernel.endian) == (armmp.data, Arch.ARM, Endian.LITTLE)
    assert [layer.kind for layer in kernel.layers] == ["image"]


@pytest.mark.parametrize(("variant", "kinds"), [
    ("single", ["uimage", "zimage"]),
    ("multi", ["uimage", "zimage"]),
    ("gzip", ["uimage", "image"]),
])  # fmt: skip
def test_armmp_uimage_made_by_mkimage_gives_identical_image(
    uimages: dict[str, bytes], armmp: KernelImage, variant: str, kinds: list[str]
) -> None:
    kernel = locate_kernel(uimages[variant])
    assert kernel.data == armmp.data
    assert [layer.kind for layer in kernel.layers] == kinds
    assert kernel.layers[0].detail["load_address"] == 0x60008000


def test_armmp_uimage_inside_a_flash_at_an_odd_offset_gives_identical_image(
    flash_with_uimage: bytes, armmp: KernelImage
) -> None:
    kernel = locate_kernel(flash_with_uimage)
    assert kernel.data == armmp.data
    assert [layer.kind for layer in kernel.layers] == ["flash", "uimage", "zimage"]
    assert kernel.layers[0].detail["kernel_at"] == 0x20001


def test_armmp_zimage_inside_a_flash_at_an_odd_offset_gives_identical_image(
    armmp_zimage: bytes, armmp: KernelImage
) -> None:
    rng = random.Random(7)
    kernel = locate_kernel(rng.randbytes(0x3_0003) + armmp_zimage + rng.randbytes(1 << 20))
    assert kernel.data == armmp.data
    assert [(layer.kind, layer.offset) for layer in kernel.layers] == [("flash", 0), ("zimage", 0x3_0003)]


@pytest.mark.skipif(not VMLINUX_TO_ELF.exists(), reason="vmlinux-to-elf (a test dependency) is missing")
def test_armmp_as_elf_gives_identical_image_and_its_symbols(workdir: Path, armmp: KernelImage) -> None:
    image, elf = workdir / "Image", workdir / "vmlinux"
    image.write_bytes(armmp.data)
    run(VMLINUX_TO_ELF, image, elf)
    kernel = locate_kernel(elf.read_bytes())
    assert kernel.data == armmp.data
    assert kernel.base == 0xC0300000  # what vmlinux-to-elf states (it guesses _stext, not _text)
    assert kernel.elf_symbols is not None
    # Every symbol vmlinux-to-elf read from the kallsyms tables, at its address: the same table our
    # own kallsyms recovery reads (checked against the running kernel in test_symbols_groundtruth).
    from_elf = {(symbol.name, symbol.address) for symbol in kernel.elf_symbols}
    assert from_elf == {(symbol.name, symbol.address) for symbol in recover_symbols(armmp).symbols}
    assert len(from_elf) > 40_000 and any(name == "start_kernel" for name, _ in from_elf)


@pytest.mark.parametrize("flavour", ["marvell", "rpi"])
def test_armel_zimages_are_little_endian_arm(corpus: Corpus, flavour: str) -> None:
    if flavour not in corpus.flavours:
        pytest.skip(f"the corpus has no {flavour} kernel")
    kernel = locate_kernel(corpus.kernel(flavour).read_bytes())
    assert (kernel.arch, kernel.endian) == (Arch.ARM, Endian.LITTLE)
    assert kernel.data.find(f"Linux version {corpus.release(flavour)} ".encode()) >= 0


def test_malta_vmlinuz_is_mipsel_with_load_address_and_entry(corpus: Corpus) -> None:
    kernel = locate_kernel(corpus.kernel("4kc-malta").read_bytes())
    assert (kernel.arch, kernel.endian) == (Arch.MIPS, Endian.LITTLE)
    assert [layer.kind for layer in kernel.layers] == ["mips-vmlinuz"]
    assert (kernel.base, kernel.load_address) == (0x80100000, 0x80100000)
    assert kernel.entry is not None and kernel.base < kernel.entry < kernel.base + len(kernel.data)
    assert kernel.data.find(f"Linux version {corpus.release('4kc-malta')} ".encode()) >= 0
    assert locate_kernel(kernel.data).data == kernel.data  # and the vmlinux.bin inside is recognised raw
