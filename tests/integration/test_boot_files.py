"""Firmware as it comes: the kernel and initrd a flash image or a multi-file uImage carries are
what the machine boots (explorer.firmware.boot_files), and a search of such a file, with no other
argument, boots them to user space."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from explorer.corpus import Corpus
from explorer.firmware.boot_files import boot_files
from explorer.firmware.locate import locate_kernel
from tests.helpers import run

SEARCH_DEADLINE_SECONDS = 900
LOAD = ["-A", "arm", "-O", "linux", "-a", "0x60008000", "-e", "0x60008000"]


def _mkimage(workdir: Path, name: str, *arguments: str | Path) -> bytes:
    run("mkimage", *LOAD, "-n", name, *arguments, workdir / name)
    return (workdir / name).read_bytes()


@pytest.fixture(scope="module")
def images(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The armmp zImage with the vexpress device tree appended (as NAS and plug kernels are
    flashed), its uImage, the marker initramfs as a ramdisk uImage, and a flash dump holding both:
    a boot loader's 0x80 bytes, the kernel, then the ramdisk, then a root file system."""
    workdir = tmp_path_factory.mktemp("carried")
    zimage_dtb = corpus.kernel("armmp").read_bytes() + corpus.dtb("armmp", "vexpress-v2p-ca9").read_bytes()
    (workdir / "zImage-dtb").write_bytes(zimage_dtb)
    initramfs = corpus.initramfs("armhf")
    kernel = _mkimage(workdir, "uImage-kernel", "-T", "kernel", "-C", "none", "-d", workdir / "zImage-dtb")
    ramdisk = _mkimage(workdir, "uImage-ramdisk", "-T", "ramdisk", "-C", "none", "-d", initramfs)
    multi = _mkimage(
        workdir, "uImage-multi", "-T", "multi", "-C", "none", "-d", f"{workdir / 'zImage-dtb'}:{initramfs}"
    )
    rng = random.Random(20261207)
    flash = rng.randbytes(0x80) + kernel + rng.randbytes(0x1003) + ramdisk + rng.randbytes(1 << 20)
    return {
        "zimage_dtb": zimage_dtb, "initramfs": initramfs.read_bytes(), "kernel": kernel,
        "ramdisk": ramdisk, "multi": multi, "flash": flash,
    }  # fmt: skip


def test_a_flash_image_carries_the_kernel_uimage_and_the_ramdisk_after_it(images: dict[str, bytes]) -> None:
    carried = boot_files(images["flash"], locate_kernel(images["flash"]).layers)
    assert carried.kernel is not None and carried.kernel.data == images["kernel"]
    assert carried.kernel.origin == "the uimage at 0x80 of the flash image"
    assert carried.initrd is not None and carried.initrd.data == images["initramfs"]
    assert carried.initrd.origin.startswith("the ramdisk uImage at ")


def test_a_multi_file_uimage_is_split_into_its_kernel_and_initrd(images: dict[str, bytes]) -> None:
    carried = boot_files(images["multi"], locate_kernel(images["multi"]).layers)
    assert carried.kernel is not None and carried.kernel.data == images["zimage_dtb"]
    assert carried.initrd is not None and carried.initrd.data == images["initramfs"]


@pytest.mark.parametrize("form", ["zimage_dtb", "kernel"])
def test_a_kernel_the_loader_reads_is_booted_as_it_is(images: dict[str, bytes], form: str) -> None:
    carried = boot_files(images[form], locate_kernel(images[form]).layers)
    assert (carried.kernel, carried.initrd) == (None, None)


def test_a_search_of_a_flash_image_alone_boots_its_kernel_and_initrd_to_user_space(
    images: dict[str, bytes], qemu_build: Path, tmp_path: Path
) -> None:
    flash, work = tmp_path / "flash.bin", tmp_path / "work"
    flash.write_bytes(images["flash"])
    env = {**os.environ, "EXPLORER_QEMU": str(qemu_build)}
    explorer = [sys.executable, "-m", "explorer"]
    searched = subprocess.run(
        [*explorer, "search", flash, "--work", work, "--budget", "4m", "--workers", "2"],
        env=env, capture_output=True, text=True, timeout=SEARCH_DEADLINE_SECONDS, check=False,
    )  # fmt: skip
    assert searched.returncode == 0, searched.stderr[-3000:]
    assert f"kernel: the uimage at 0x80 of the flash image of {flash}" in searched.stderr
    assert "initrd: the ramdisk uImage at " in searched.stderr
    shown = subprocess.run(
        [*explorer, "show", work, "--json"], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    summary = json.loads(shown.stdout)
    assert summary["reached_userspace"], summary["furthest_milestone"]
    assert summary["boot_files"]["initrd"].endswith(f"of {flash}")
    kept = sorted(p.name for p in (work / "boot").iterdir())
    assert [name.split("-")[0] for name in kept] == ["initrd", "kernel"]
