"""`explorer inspect` reports the same kernel facts for every form the armmp kernel can take:
Debian's zImage, the decompressed Image, mkimage uImages, and a flash dump holding it at an odd
offset. Only what describes the container (hash, size, layers, header addresses) may differ."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from explorer.corpus import Corpus
from explorer.firmware.model import KernelImage

CONTAINER_FACTS = {"sha256", "size", "layers", "load_address", "entry"}


def inspect_json(path: Path, cache: Path, *extra: str) -> dict:
    env = {**os.environ, "EXPLORER_CACHE": str(cache)}
    out = subprocess.run(
        [sys.executable, "-m", "explorer", "inspect", str(path), "--json", *extra],
        capture_output=True, text=True, env=env, check=True, timeout=300,
    ).stdout  # fmt: skip
    return json.loads(out)


def kernel_facts(facts: dict) -> dict:
    return {k: v for k, v in facts.items() if k not in CONTAINER_FACTS}


@pytest.fixture(scope="module")
def forms(
    workdir: Path,
    armmp_zimage: bytes,
    armmp: KernelImage,
    uimages: dict[str, bytes],
    flash_with_uimage: bytes,
) -> dict[str, Path]:
    blobs = {
        "zImage": armmp_zimage,
        "Image": armmp.data,
        "uImage": uimages["single"],
        "uImage-multi": uimages["multi"],
        "uImage-gzip-Image": uimages["gzip"],
        "flash": flash_with_uimage,
    }
    paths = {}
    for name, blob in blobs.items():
        paths[name] = workdir / f"form-{name}"
        paths[name].write_bytes(blob)
    return paths


def test_every_form_of_armmp_gives_the_same_kernel_facts(forms: dict[str, Path], tmp_path: Path) -> None:
    reference = kernel_facts(inspect_json(forms["zImage"], tmp_path))
    assert reference["symbols"]["count"] > 40_000 and reference["text_base"] == 0xC0208000
    for name, path in forms.items():
        assert kernel_facts(inspect_json(path, tmp_path)) == reference, name


def test_dtb_and_symbols_out(corpus: Corpus, forms: dict[str, Path], tmp_path: Path) -> None:
    nm = tmp_path / "armmp.nm"
    dtb = corpus.dtb("armmp", "vexpress-v2p-ca9")
    facts = inspect_json(forms["flash"], tmp_path, "--dtb", str(dtb), "--symbols-out", str(nm))
    assert facts["device_tree"]["memory"] == [[0x60000000, 0x40000000]]
    lines = nm.read_text().splitlines()
    assert len(lines) == facts["symbols"]["count"]
    by_name = {line.split()[2]: int(line.split()[0], 16) for line in lines}
    assert by_name["start_kernel"] > facts["text_base"]
