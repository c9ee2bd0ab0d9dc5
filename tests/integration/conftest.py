"""The armmp kernel in every form a firmware may carry it: the fixtures several integration tests share."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from explorer.corpus import Corpus
from explorer.firmware.locate import locate_kernel
from explorer.firmware.model import KernelImage
from tests.helpers import run
from tests.integration.rehosting import build_native


@pytest.fixture(scope="session")
def armmp_zimage(corpus: Corpus) -> bytes:
    return corpus.kernel("armmp").read_bytes()


@pytest.fixture(scope="session")
def armmp(armmp_zimage: bytes) -> KernelImage:
    return locate_kernel(armmp_zimage)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("forms")


@pytest.fixture(scope="session")
def uimages(corpus: Corpus, workdir: Path, armmp_zimage: bytes, armmp: KernelImage) -> dict[str, bytes]:
    """mkimage's single-file, multi-file and gzip-compressed uImages of the armmp kernel."""
    zimage, image_gz = workdir / "zImage", workdir / "Image.gz"
    zimage.write_bytes(armmp_zimage)
    image_gz.write_bytes(run("gzip", "-n", "-1", "-c", stdin=armmp.data))
    initramfs = corpus.initramfs("armhf")
    common = ["-A", "arm", "-O", "linux", "-a", "0x60008000", "-e", "0x60008000", "-n", "armmp"]
    variants = {
        "single": ["-T", "kernel", "-C", "none", "-d", zimage],
        "multi": ["-T", "multi", "-C", "none", "-d", f"{zimage}:{initramfs}"],
        "gzip": ["-T", "kernel", "-C", "gzip", "-d", image_gz],
    }
    out = {}
    for name, args in variants.items():
        run("mkimage", *common, *args, workdir / f"uImage-{name}")
        out[name] = (workdir / f"uImage-{name}").read_bytes()
    return out


@pytest.fixture(scope="session")
def flash_with_uimage(uimages: dict[str, bytes]) -> bytes:
    """A flash-like dump: a bootloader, the multi-file uImage at the odd offset 0x20001, a rootfs."""
    rng = random.Random(20261125)
    return rng.randbytes(0x20001) + uimages["multi"] + rng.randbytes(3 << 20)


@pytest.fixture(scope="session")
def qemu_build() -> Path:
    """Our QEMU build (native/build.py): several minutes the first time, then cached by content.

    $EXPLORER_QEMU names a build directory to use instead (as `explorer boot --qemu` does)."""
    if env := os.environ.get("EXPLORER_QEMU"):
        return Path(env)
    return build_native()
