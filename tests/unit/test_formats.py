"""Firmware formats on small generated kernels: every container peels to the same bytes, and
anything that is not a supported kernel (random, truncated, bit-flipped, zeroed, foreign) raises
only FirmwareError, quickly."""

from __future__ import annotations

import bz2
import gzip
import lzma
import random
import struct
import subprocess
import zlib

import lz4.frame
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from explorer.errors import FirmwareError
from explorer.firmware.decompress import Codec, decompress, find_streams
from explorer.firmware.formats import mips_vmlinuz
from explorer.firmware.locate import locate_kernel
from explorer.firmware.model import Arch, Endian, KernelImage

BANNER = b"Linux version 6.1.0-test (builder@example) #1 SMP\n\0"


# ---- generated inputs ------------------------------------------------------------------------


def arm_image(size: int = 32 << 10, seed: int = 1, order: str = "<", be8: bool = False) -> bytes:
    """A fake ARM kernel Image: unconditional ARM instructions, then the banner."""
    rng = random.Random(seed)
    words = [0xE0000000 | rng.getrandbits(28) for _ in range(size // 8)]
    if be8:
        words[0] = 0xF1010200  # setend be
    code = struct.pack(f"{order}{len(words)}I", *words)
    return code + BANNER + bytes(rng.getrandbits(8) for _ in range(size - len(code) - len(BANNER)))


def arm64_image(
    size: int = 32 << 10, text_offset: int = 0, flags: int = 0b1010, image_size: int | None = None
) -> bytes:
    """A fake AArch64 Image: the 64-byte header (a branch, little-endian fields, ARM\x64), code, banner."""
    rng = random.Random(4)
    header = struct.pack(
        "<IIQQQQQQ4sI", 0x14000010, 0, text_offset, size if image_size is None else image_size, flags,
        0, 0, 0, b"ARM\x64", 0,
    )  # fmt: skip
    code = struct.pack(f"<{size // 8}I", *(rng.getrandbits(32) for _ in range(size // 8)))
    return header + code + BANNER + bytes(size - len(header) - len(code) - len(BANNER))


def mips_image(size: int = 32 << 10, order: str = "<") -> bytes:
    """A fake raw MIPS kernel: functions ending in `jr ra; nop`, then the banner."""
    rng = random.Random(2)
    words: list[int] = []
    while len(words) * 4 < size // 2:
        words += [rng.getrandbits(32) for _ in range(6)] + [0x03E00008, 0]
    code = struct.pack(f"{order}{len(words)}I", *words)
    return code + BANNER + bytes(size - len(code) - len(BANNER))


COMMANDS = {
    Codec.GZIP: ["gzip", "-n", "-c"],
    Codec.LZMA: ["lzma", "-c"],
    Codec.XZ: ["xz", "--check=crc32", "-c"],
    Codec.LZO: ["lzop", "-c"],
    Codec.LZ4_LEGACY: ["lz4", "-l", "-c"],
    Codec.ZSTD: ["zstd", "-q", "-c"],
    Codec.BZIP2: ["bzip2", "-c"],
}


def compress(codec: Codec, data: bytes) -> bytes:
    """`data` compressed by the same command line tool the kernel build uses."""
    if codec is Codec.LZ4_FRAME:
        return lz4.frame.compress(data)
    return subprocess.run(COMMANDS[codec], input=data, capture_output=True, check=True).stdout


def zimage(image: bytes, codec: Codec = Codec.GZIP, order: str = "<", dtb: bytes = b"") -> bytes:
    """A zImage-shaped file: stub words, the header, stub code, payload + size word, a tail."""
    stub = struct.pack(f"{order}9I", *([0xE1A00000] * 9))  # nop; the magic follows at 0x24
    payload = compress(codec, image) + struct.pack("<I", len(image))
    body = b"\0" * 0x100 + payload + b"\xaa" * 0x40  # stub code before, GOT-like tail after
    end = 0x34 + len(body)
    header = struct.pack(f"{order}IIII", 0x016F2818, 0, end, 0x04030201)
    return stub + header + body + dtb


def fdt(size: int = 64) -> bytes:
    return b"\xd0\x0d\xfe\xed" + struct.pack(">I", size) + bytes(size - 8)


def uimage(
    payload: bytes | list[bytes],
    arch: int = 2,
    image_type: int = 2,
    compression: int = 0,
    load: int = 0x80008000,
) -> bytes:
    """A U-Boot legacy image (as mkimage writes it); a list of payloads makes an IH_TYPE_MULTI image."""
    if isinstance(payload, list):
        sizes = b"".join(struct.pack(">I", len(p)) for p in payload) + b"\0\0\0\0"
        body = sizes + b"".join(p + bytes(-len(p) % 4) for p in payload)
    else:
        body = payload
    header = struct.pack(
        ">IIIIIIIBBBB32s", 0x27051956, 0, 0, len(body), load, load, zlib.crc32(body), 5, arch, image_type,
        compression, b"test kernel",
    )  # fmt: skip
    header = header[:4] + struct.pack(">I", zlib.crc32(header)) + header[8:]
    return header + body


def elf32(
    segments: list[tuple[int, int, bytes]],
    machine: int = 40,
    order: str = "<",
    symbols: list[tuple[str, int, int]] = (),  # type: ignore[assignment]
    entry: int = 0,
    exec_sections: int = 1,
) -> bytes:
    """A minimal ELF32 executable: one PT_LOAD and one section per (vaddr, paddr, bytes), then
    .symtab/.strtab/.shstrtab. The first `exec_sections` sections are code; symbols are
    (name, value, section index) globals of type FUNC."""
    ehsize, phentsize, shentsize = 52, 32, 40
    data_at = ehsize + phentsize * len(segments)
    blobs, offsets, pos = [], [], data_at
    for _, _, blob in segments:
        offsets.append(pos)
        blobs.append(blob)
        pos += len(blob)
    strtab = b"\0" + b"".join(name.encode() + b"\0" for name, _, _ in symbols)
    symtab = bytes(16)
    name_at = 1
    for name, value, shndx in symbols:
        symtab += struct.pack(f"{order}IIIBBH", name_at, value, 0, 0x12, 0, shndx)
        name_at += len(name) + 1
    names = [".text" if i < exec_sections else ".data" for i in range(len(segments))]
    shstrtab = b"\0" + b"".join(n.encode() + b"\0" for n in [*names, ".symtab", ".strtab", ".shstrtab"])
    symtab_at = pos
    strtab_at = symtab_at + len(symtab)
    shstrtab_at = strtab_at + len(strtab)
    shoff = shstrtab_at + len(shstrtab)
    shnum = len(segments) + 4
    ident = b"\x7fELF" + bytes([1, 1 if order == "<" else 2, 1]) + bytes(9)
    header = ident + struct.pack(
        f"{order}HHIIIIIHHHHHH", 2, machine, 1, entry, ehsize, shoff, 0, ehsize, phentsize, len(segments),
        shentsize, shnum, shnum - 1,
    )  # fmt: skip
    phdrs = b"".join(
        struct.pack(f"{order}8I", 1, off, vaddr, paddr, len(blob), len(blob), 7, 4)
        for (vaddr, paddr, blob), off in zip(segments, offsets, strict=True)
    )
    sh_name = {
        n: shstrtab.index(b"\0" + n.encode() + b"\0") + 1 for n in [*names, ".symtab", ".strtab", ".shstrtab"]
    }
    shdrs = bytes(shentsize)
    for i, ((vaddr, _, blob), off) in enumerate(zip(segments, offsets, strict=True)):
        flags = 0x6 if i < exec_sections else 0x3  # ALLOC|EXECINSTR or ALLOC|WRITE
        shdrs += struct.pack(f"{order}10I", sh_name[names[i]], 1, flags, vaddr, off, len(blob), 0, 0, 4, 0)
    shdrs += struct.pack(
        f"{order}10I", sh_name[".symtab"], 2, 0, 0, symtab_at, len(symtab), shnum - 2, 1, 4, 16
    )
    shdrs += struct.pack(f"{order}10I", sh_name[".strtab"], 3, 0, 0, strtab_at, len(strtab), 0, 0, 1, 0)
    shdrs += struct.pack(f"{order}10I", sh_name[".shstrtab"], 3, 0, 0, shstrtab_at, len(shstrtab), 0, 0, 1, 0)
    return header + phdrs + b"".join(blobs) + symtab + strtab + shstrtab + shdrs


def mips_vmlinuz_file(kernel: bytes, codec: Codec = Codec.XZ) -> bytes:
    """A MIPS self-decompressing vmlinuz: decompressor code with the load address and entry as
    `lui`/`addiu` constants, the compressed kernel in its data."""
    code = struct.pack(
        "<8I",
        0x3C048010,  # lui a0, 0x8010           (VMLINUX_LOAD_ADDRESS 0x80100000)
        0,
        0x3C198010,  # lui t9, 0x8010
        0x27390400,  # addiu t9, t9, 0x400       (KERNEL_ENTRY 0x80100400)
        0x03200008,  # jr t9
        0,
        0x3C058200,  # lui a1, 0x8200            (the decompressor's own address)
        0,
    )
    payload = compress(codec, kernel) + struct.pack("<I", len(kernel))
    return elf32([(0x82000000, 0x82000000, code), (0x82000020, 0x82000020, payload)], machine=8)


# ---- the happy paths ---------------------------------------------------------------------------

IMAGE = arm_image()


@pytest.mark.parametrize("codec", [c for c in Codec if c not in (Codec.BZIP2, Codec.LZ4_FRAME)])
def test_zimage_with_any_kernel_codec_peels_to_the_image(codec: Codec) -> None:
    kernel = locate_kernel(zimage(IMAGE, codec))
    assert kernel.data == IMAGE
    assert (kernel.arch, kernel.endian) == (Arch.ARM, Endian.LITTLE)
    assert kernel.layers[0].kind == "zimage"
    assert kernel.layers[0].detail["compression"] == codec.value
    assert kernel.layers[0].detail["size_word_ok"] is True
    assert kernel.appended_dtb is None


def test_zimage_with_appended_dtb_returns_the_dtb() -> None:
    dtb = fdt(96)
    kernel = locate_kernel(zimage(IMAGE, dtb=dtb))
    assert kernel.appended_dtb == dtb
    assert kernel.data == IMAGE


def test_big_endian_be8_zimage_is_big_endian_arm() -> None:
    image = arm_image(be8=True)
    kernel = locate_kernel(zimage(image, order=">"))
    assert (kernel.data, kernel.arch, kernel.endian) == (image, Arch.ARM, Endian.BIG)


@pytest.mark.parametrize(("image", "arch", "endian"), [
    (arm_image(), Arch.ARM, Endian.LITTLE),
    (arm_image(order=">"), Arch.ARM, Endian.BIG),
    (arm_image(be8=True), Arch.ARM, Endian.BIG),
    (mips_image(), Arch.MIPS, Endian.LITTLE),
    (mips_image(order=">"), Arch.MIPS, Endian.BIG),
])  # fmt: skip
def test_raw_image_is_recognised_with_its_byte_order(image: bytes, arch: Arch, endian: Endian) -> None:
    kernel = locate_kernel(image)
    assert (kernel.data, kernel.arch, kernel.endian) == (image, arch, endian)
    assert [layer.kind for layer in kernel.layers] == ["image"]


@pytest.mark.parametrize(("compression", "codec"), [
    (0, None), (1, Codec.GZIP), (2, Codec.BZIP2), (3, Codec.LZMA), (4, Codec.LZO), (5, Codec.LZ4_FRAME),
    (6, Codec.ZSTD),
])  # fmt: skip
def test_uimage_of_raw_image_decompresses_as_the_header_says(compression: int, codec: Codec | None) -> None:
    payload = IMAGE if codec is None else compress(codec, IMAGE)
    kernel = locate_kernel(uimage(payload, compression=compression, load=0x60008000))
    assert kernel.data == IMAGE
    assert [layer.kind for layer in kernel.layers] == ["uimage", "image"]
    assert (kernel.load_address, kernel.entry) == (0x60008000, 0x60008000)


def test_uimage_of_zimage_keeps_its_addresses_in_the_layer_only() -> None:
    kernel = locate_kernel(uimage(zimage(IMAGE)))
    assert kernel.data == IMAGE
    assert [layer.kind for layer in kernel.layers] == ["uimage", "zimage"]
    assert kernel.layers[0].detail["load_address"] == 0x80008000
    assert kernel.load_address is None  # it is where the zImage goes, not the Image


def test_multi_file_uimage_takes_the_first_image_as_kernel() -> None:
    kernel = locate_kernel(uimage([zimage(IMAGE), b"ramdisk" * 100], image_type=4))
    assert kernel.data == IMAGE
    assert kernel.layers[0].detail["images"] == [len(zimage(IMAGE)), 700]


def test_mips_uimage_of_raw_kernel_is_mips() -> None:
    image = mips_image()
    kernel = locate_kernel(uimage(image, arch=5, load=0x80100000))
    assert (kernel.arch, kernel.data) == (Arch.MIPS, image)


def test_elf_is_laid_out_by_load_address_with_symbols() -> None:
    text, vectors = IMAGE[:0x4000] + BANNER, b"\x01" * 0x20
    kernel = locate_kernel(elf32(
        [(0xC0008000, 0xC0008000, text), (0xFFFF0000, 0xC0010000, vectors)],  # linked high, loaded inside
        symbols=[("start_kernel", 0xC0008100, 1), ("$a", 0xC0008000, 1), ("vector_swi", 0xFFFF0008, 2)],
        entry=0xC0008000,
        exec_sections=2,
    ))  # fmt: skip
    assert kernel.base == 0xC0008000
    assert kernel.entry == 0xC0008000
    assert kernel.data[: len(text)] == text
    assert kernel.data[0x8000:] == vectors
    assert [(s.name, s.type, s.address) for s in kernel.elf_symbols or ()] == [
        ("start_kernel", "T", 0xC0008100),
        ("vector_swi", "T", 0xFFFF0008),
    ]


def test_big_endian_mips_elf_is_big_endian() -> None:
    kernel = locate_kernel(elf32([(0x80100000, 0x80100000, mips_image(order=">"))], machine=8, order=">"))
    assert (kernel.arch, kernel.endian, kernel.base) == (Arch.MIPS, Endian.BIG, 0x80100000)


@pytest.mark.parametrize("codec", [Codec.XZ, Codec.GZIP, Codec.LZMA, Codec.ZSTD])
def test_mips_vmlinuz_yields_kernel_load_address_and_entry(codec: Codec) -> None:
    image = mips_image()
    kernel = locate_kernel(mips_vmlinuz_file(image, codec))
    assert kernel.data == image
    assert (kernel.base, kernel.load_address, kernel.entry) == (0x80100000, 0x80100000, 0x80100400)
    assert kernel.layers[0].kind == "mips-vmlinuz"


def test_mips_load_address_is_left_unknown_when_ambiguous() -> None:
    two_candidates = {0x80100000, 0x80200000, 0x80200400, 0x80100400}
    assert mips_vmlinuz.load_and_entry(two_candidates, range(0x82000000, 0x82100000), 0x10000) == (None, None)


@pytest.mark.parametrize("offset", [1, 0x10001, 0x7FFFF])
def test_flash_finds_the_kernel_at_odd_offsets_past_a_ramdisk_image(offset: int) -> None:
    rng = random.Random(offset)
    boot = bytes(rng.getrandbits(8) for _ in range(offset))
    ramdisk = uimage(b"\x1f\x8b" + b"x" * 500, image_type=3)
    rootfs = bytes(rng.getrandbits(8) for _ in range(4096))
    wrapped = uimage(zimage(IMAGE))
    kernel = locate_kernel(boot + ramdisk + wrapped + rootfs)
    assert kernel.data == IMAGE
    assert [layer.kind for layer in kernel.layers] == ["flash", "uimage", "zimage"]
    at = offset + len(ramdisk)
    assert kernel.layers[0].detail["kernel_at"] == at
    assert {"offset": at, "format": "uimage"} in kernel.layers[0].detail["found"]
    assert {"offset": offset, "format": "uimage"} in kernel.layers[0].detail["found"]


def test_find_streams_reports_every_magic_in_order() -> None:
    blob = b"xx" + gzip.compress(b"a") + b"yy" + lzma.compress(b"b") + bz2.compress(b"c")
    found = [codec for _, codec in find_streams(blob)]
    assert found[:2] == [Codec.GZIP, Codec.XZ] and Codec.BZIP2 in found


def test_decompress_reports_the_bytes_the_stream_occupied() -> None:
    stream = zstandard.ZstdCompressor().compress(b"kernel" * 1000)
    result = decompress(Codec.ZSTD, b"junk" + stream + b"trailer", 4)
    assert (result.data, result.consumed) == (b"kernel" * 1000, len(stream))


# ---- what is not a kernel ----------------------------------------------------------------------


def x86_bzimage() -> bytes:
    data = bytearray(4096)
    data[0x1FE:0x200] = b"\x55\xaa"
    data[0x202:0x206] = b"HdrS"
    return bytes(data)


def arm64_image_with_reserved_flags() -> bytes:
    data = bytearray(4096)
    data[0:4] = (0x14000010).to_bytes(4, "little")  # b 0x40
    data[0x18] = 0x10  # flags bit 4: reserved
    data[0x38:0x3C] = b"ARM\x64"
    return bytes(data) + BANNER


@pytest.mark.parametrize(("data", "says"), [
    (b"", "empty"),
    (bytes(1 << 16), "all zero"),
    (x86_bzimage(), "x86"),
    (arm64_image_with_reserved_flags(), "AArch64 Image header .* reserved"),
    (elf32([(0x400000, 0x400000, b"\x90" * 64)], machine=62), "x86-64"),
    (elf32([(0x400000, 0x400000, b"\x90" * 64)], machine=183), "AArch64"),
    (uimage(b"x" * 64, arch=22), "uimage payload is not a kernel format"),
    (uimage(b"x" * 64, image_type=3), "ramdisk"),
    (zimage(IMAGE)[:-200], "truncated"),
    (uimage(IMAGE)[:-1] + b"!", "CRC"),
    (random.Random(3).randbytes(1 << 16), "no kernel found"),
    (uimage(b"\0" * 64 + b"nothing"), "not a kernel format"),
    (uimage(arm_image(), arch=5), "mislabelled"),
])  # fmt: skip
def test_what_is_not_a_supported_kernel_is_named_in_one_line(data: bytes, says: str) -> None:
    with pytest.raises(FirmwareError, match=says) as error:
        locate_kernel(data)
    assert "\n" not in str(error.value)


# ---- properties --------------------------------------------------------------------------------

SMALL_IMAGE = arm_image(8 << 10, seed=5)
VALID = {
    "zimage-xz": zimage(SMALL_IMAGE, Codec.XZ),
    "zimage-lz4": zimage(SMALL_IMAGE, Codec.LZ4_LEGACY),
    "zimage-lzo": zimage(SMALL_IMAGE, Codec.LZO),
    "uimage-gzip": uimage(compress(Codec.GZIP, SMALL_IMAGE), compression=1),
    "uimage-multi-zstd": uimage([compress(Codec.ZSTD, SMALL_IMAGE), b"rd"], image_type=4, compression=6),
    "elf": elf32([(0xC0008000, 0xC0008000, SMALL_IMAGE)], symbols=[("start_kernel", 0xC0008000, 1)]),
    "mips-vmlinuz": mips_vmlinuz_file(mips_image(8 << 10)),
    "arm64-image": arm64_image(8 << 10),
    "arm64-image-gz": compress(Codec.GZIP, arm64_image(8 << 10)),
    "uimage-arm64-lz4": uimage(compress(Codec.LZ4_FRAME, arm64_image(8 << 10)), arch=22, compression=5),
}
PROPERTY = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])


def only_firmware_error(data: bytes) -> None:
    """locate_kernel either finds a kernel (with its banner) or says why not with FirmwareError."""
    try:
        kernel = locate_kernel(data)
    except FirmwareError as e:
        assert str(e) and "\n" not in str(e)
    else:
        assert isinstance(kernel, KernelImage) and b"Linux version " in kernel.data


@PROPERTY
@given(st.binary(max_size=1 << 14))
def test_random_bytes_raise_only_firmware_error(data: bytes) -> None:
    only_firmware_error(data)


@PROPERTY
@given(st.sampled_from(sorted(VALID)), st.data())
def test_truncated_images_raise_only_firmware_error(name: str, draw: st.DataObject) -> None:
    valid = VALID[name]
    only_firmware_error(valid[: draw.draw(st.integers(0, len(valid) - 1))])


@pytest.mark.parametrize("name", sorted(VALID))
def test_every_cut_inside_the_headers_raises_only_firmware_error(name: str) -> None:
    valid = VALID[name]
    for cut in range(min(len(valid), 512)):
        only_firmware_error(valid[:cut])


@PROPERTY
@given(st.sampled_from(sorted(VALID)), st.data())
def test_bit_flipped_images_raise_only_firmware_error(name: str, draw: st.DataObject) -> None:
    damaged = bytearray(VALID[name])
    for _ in range(draw.draw(st.integers(1, 8))):
        at = draw.draw(st.integers(0, len(damaged) - 1))
        damaged[at] ^= 1 << draw.draw(st.integers(0, 7))
    only_firmware_error(bytes(damaged))


@PROPERTY
@given(st.sampled_from(sorted(VALID)), st.data())
def test_zero_filled_ranges_raise_only_firmware_error(name: str, draw: st.DataObject) -> None:
    damaged = bytearray(VALID[name])
    start = draw.draw(st.integers(0, len(damaged) - 1))
    length = draw.draw(st.integers(1, len(damaged) - start))
    damaged[start : start + length] = bytes(length)
    only_firmware_error(bytes(damaged))


# A bare Image states no end (its image_size counts bss), and a compressed file is only known where
# it starts: in a flash dump both need a container (tests/unit/test_formats_arm64.py).
BOUNDED = sorted(set(VALID) - {"arm64-image", "arm64-image-gz"})


@PROPERTY
@given(st.sampled_from(BOUNDED), st.binary(max_size=300), st.binary(max_size=300))
def test_a_valid_image_anywhere_in_a_flash_gives_the_same_kernel(
    name: str, before: bytes, after: bytes
) -> None:
    alone = locate_kernel(VALID[name])
    in_flash = locate_kernel(before + VALID[name] + after)
    assert in_flash.data == alone.data
