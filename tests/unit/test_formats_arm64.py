"""AArch64 Images: the 64-byte header read exactly, and the Image found bare, gzip'd (Image.gz),
inside a uImage, inside a FIT and inside a flash dump; a damaged header or FIT is one
FirmwareError line."""

from __future__ import annotations

import random
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from explorer.errors import FirmwareError
from explorer.firmware.boot_files import boot_files
from explorer.firmware.decompress import Codec
from explorer.firmware.formats.arm64_image import HEADER_SIZE, parse_header
from explorer.firmware.locate import locate_kernel
from explorer.firmware.model import Arch, Endian
from tests.unit.test_formats import (
    PROPERTY,
    arm64_image,
    arm_image,
    compress,
    only_firmware_error,
    uimage,
)

text_offsets = st.integers(0, (2 << 20) // 4096 - 1).map(lambda pages: pages * 4096)
image_sizes = st.one_of(st.just(0), st.integers(HEADER_SIZE, 1 << 40))


@PROPERTY
@given(text_offsets, image_sizes, st.integers(0, 15), st.integers(0, 0xFFFFFFFF))
def test_the_header_says_back_what_was_written(text_offset: int, size: int, flags: int, pe: int) -> None:
    header = struct.pack("<IIQQQQQQ4sI", 1, 2, text_offset, size, flags, 0, 0, 0, b"ARM\x64", pe)
    parsed = parse_header(header)
    assert (parsed.code0, parsed.code1, parsed.text_offset, parsed.image_size) == (1, 2, text_offset, size)
    assert parsed.big_endian == bool(flags & 1)
    assert parsed.page_size == (None, 4096, 16384, 65536)[(flags >> 1) & 3]
    assert parsed.anywhere == bool(flags & 8)
    assert parsed.detail()["efi_stub"] == (pe != 0)


@PROPERTY
@given(st.integers(0x3C, HEADER_SIZE - 1))
def test_a_header_cut_after_its_magic_is_a_truncated_file(cut: int) -> None:
    with pytest.raises(FirmwareError, match="truncated") as error:
        parse_header(arm64_image()[:cut])
    assert "\n" not in str(error.value)


@PROPERTY
@given(st.binary(min_size=HEADER_SIZE - 8, max_size=HEADER_SIZE - 8), st.binary(min_size=4, max_size=4))
def test_any_header_with_the_magic_parses_or_raises_one_firmware_error_line(
    fields: bytes, res5: bytes
) -> None:
    header = fields[:0x38] + b"ARM\x64" + res5
    try:
        parsed = parse_header(header + bytes(64))
    except FirmwareError as error:
        assert "\n" not in str(error)
    else:
        assert parsed.text_offset < 2 << 20 and (parsed.image_size == 0 or parsed.image_size >= HEADER_SIZE)
    only_firmware_error(header + arm64_image()[HEADER_SIZE:])


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        (0x00, 0, "no instruction"),
        (0x18, 1 << 4, "reserved"),
        (0x20, 1, "reserved"),
        (0x08, 0x123, "text_offset"),
        (0x10, 8, "size"),
    ],
)
def test_each_broken_rule_is_named(field: int, value: int, says: str) -> None:
    image = bytearray(arm64_image())
    image[field : field + 8] = struct.pack("<Q", value)  # code0 and code1 together at 0
    with pytest.raises(FirmwareError, match=says) as error:
        locate_kernel(bytes(image))
    assert "\n" not in str(error.value)


def test_a_bare_image_is_the_kernel_from_its_first_byte() -> None:
    image = arm64_image(text_offset=0x80000)
    kernel = locate_kernel(image)
    assert (kernel.arch, kernel.endian, kernel.data) == (Arch.AARCH64, Endian.LITTLE, image)
    (layer,) = kernel.layers
    assert layer.kind == "arm64-image"
    assert layer.detail["text_offset"] == 0x80000 and layer.detail["page_size"] == 4096
    assert layer.detail["placement"] == "anywhere"


def test_the_endianness_flag_makes_a_big_endian_kernel() -> None:
    assert locate_kernel(arm64_image(flags=0b0011)).endian is Endian.BIG


@pytest.mark.parametrize("codec", [Codec.GZIP, Codec.XZ, Codec.LZ4_FRAME, Codec.ZSTD])
def test_a_compressed_image_peels_to_the_same_kernel(codec: Codec) -> None:
    image = arm64_image()
    kernel = locate_kernel(compress(codec, image))
    assert kernel.data == image and [layer.kind for layer in kernel.layers] == ["compressed", "arm64-image"]
    assert kernel.layers[0].detail["compression"] == codec.value


def test_a_uimage_for_arm64_gives_the_image_and_its_load_address() -> None:
    image = arm64_image()
    kernel = locate_kernel(uimage(compress(Codec.GZIP, image), arch=22, compression=1, load=0x40080000))
    assert (kernel.arch, kernel.data, kernel.load_address) == (Arch.AARCH64, image, 0x40080000)
    assert [layer.kind for layer in kernel.layers] == ["uimage", "arm64-image"]


def test_a_uimage_that_says_arm_around_an_arm64_image_is_mislabelled() -> None:
    with pytest.raises(FirmwareError, match="mislabelled"):
        locate_kernel(uimage(arm64_image(), arch=2))


def test_an_image_inside_a_flash_dump_is_found_at_its_offset() -> None:
    rng = random.Random(7)
    image = arm64_image()
    kernel = locate_kernel(rng.randbytes(0x10003) + image)
    assert kernel.arch is Arch.AARCH64 and kernel.data.startswith(image)
    assert kernel.layers[0].kind == "flash" and kernel.layers[0].detail["kernel_at"] == 0x10003


def fit_image(
    payload: bytes, arch: str = "arm64", compression: str = "gzip", external: bool = False
) -> bytes:
    """mkimage's FIT (-f auto) around `payload` (already compressed as `compression` says)."""
    with tempfile.TemporaryDirectory() as tmp:
        source, out = Path(tmp) / "kernel", Path(tmp) / "fit.itb"
        source.write_bytes(payload)
        options = ["-A", arch, "-O", "linux", "-T", "kernel", "-C", compression, "-a", "0x40080000"]
        options += ["-e", "0x40080000", "-n", "test", "-d", str(source), *(["-E"] if external else [])]
        subprocess.run(["mkimage", "-f", "auto", *options, str(out)], check=True, capture_output=True)
        return out.read_bytes()


FIT = fit_image(compress(Codec.GZIP, arm64_image(8 << 10)))


@pytest.mark.parametrize("external", [False, True])
def test_a_fit_gives_its_kernel_with_the_load_address_it_states(external: bool) -> None:
    image = arm64_image()
    kernel = locate_kernel(fit_image(compress(Codec.GZIP, image), external=external))
    assert (kernel.arch, kernel.data, kernel.load_address, kernel.entry) == (
        Arch.AARCH64, image, 0x40080000, 0x40080000,
    )  # fmt: skip
    assert [layer.kind for layer in kernel.layers] == ["fit", "arm64-image"]
    assert kernel.layers[0].detail["external_data"] is external


def test_a_fit_of_a_32_bit_arm_kernel_is_an_arm_kernel() -> None:
    kernel = locate_kernel(fit_image(arm_image(), arch="arm", compression="none"))
    assert kernel.arch is Arch.ARM and kernel.data == arm_image()


def test_a_fit_for_another_architecture_is_named_in_one_line() -> None:
    with pytest.raises(FirmwareError, match="'riscv' architecture") as error:
        locate_kernel(fit_image(arm64_image(), arch="riscv", compression="none"))
    assert "\n" not in str(error.value)


def test_a_fit_inside_a_flash_dump_is_found() -> None:
    kernel = locate_kernel(random.Random(9).randbytes(0x3001) + FIT + bytes(0x1000))
    assert [layer.kind for layer in kernel.layers] == ["flash", "fit", "arm64-image"]


@PROPERTY
@given(st.data())
def test_a_cut_or_bit_flipped_fit_raises_only_firmware_error(draw: st.DataObject) -> None:
    damaged = bytearray(FIT[: draw.draw(st.integers(0, len(FIT)))])
    for _ in range(draw.draw(st.integers(0, 4))):
        if damaged:
            damaged[draw.draw(st.integers(0, len(damaged) - 1))] ^= 1 << draw.draw(st.integers(0, 7))
    only_firmware_error(bytes(damaged))


def test_a_fit_is_ingested_but_not_handed_to_the_runner_as_its_kernel() -> None:
    with pytest.raises(FirmwareError, match="cannot boot a FIT yet") as error:
        boot_files(FIT, locate_kernel(FIT).layers)
    assert "\n" not in str(error.value)
