"""Ingestion: firmware file (and optional DTB) -> `Firmware`, cached by the image's hash.

Phases, in order: locate (peel containers, decompress) -> symbols (ELF or kallsyms, base
proven) -> facts (version, CPU class, machine descriptors, PAGE_OFFSET) -> device tree.
Everything derived from the image alone is cached under
`<cache>/firmware/<INGEST_VERSION>-<sha256>/`; the given DTB is parsed on every call (it is
cheap, and the same kernel is paired with many DTBs). This module never runs a guest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from explorer.errors import BadInput, FirmwareError
from explorer.firmware import devicetree, kernel_facts, machines
from explorer.firmware.formats import arm64_image
from explorer.firmware.locate import locate_kernel
from explorer.firmware.model import Arch, Firmware, KernelImage, Layer, SymbolTable
from explorer.firmware.symbols import recover_symbols
from explorer.paths import cache_root

# Bump when ingestion would give different facts for the same image: old cache entries are then ignored.
# 2: the device tree's CPU compatibles and PSCI method; 3: its aliases; 4: AArch64; 5: interrupt
# controllers' #interrupt-cells, the parents of those without interrupts, and gpio-controller
INGEST_VERSION = 5

_FACTS = "facts.json"
_SYMBOLS = "symbols.nm"
_IMAGE = "image.bin"


def read_input(path: Path, what: str) -> bytes:
    """The bytes of a user-given file, or a one-line BadInput saying why not."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise BadInput(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise BadInput(f"{what} {path} is a directory, not a file") from None
    except OSError as err:
        raise BadInput(f"cannot read {what} {path}: {err.strerror}") from None


def cache_dir(sha256: str) -> Path:
    return cache_root() / "firmware" / f"{INGEST_VERSION}-{sha256}"


def ingest(path: Path, dtb: Path | None = None, use_cache: bool = True) -> Firmware:
    """All we can learn about the firmware at `path` without running it."""
    data = read_input(path, "firmware")
    if not data:
        raise FirmwareError(
            f"{path} is empty: give a kernel image (zImage, uImage, Image, vmlinux) or a flash dump"
        )
    sha256 = hashlib.sha256(data).hexdigest()
    firmware = _load_cached(sha256) if use_cache else None
    if firmware is None:
        image = locate_kernel(data)
        firmware = _analyse(data, sha256, image)
        _store(firmware, image)
    if dtb is not None:
        firmware = with_device_tree(firmware, read_input(dtb, "device tree"))
    return firmware


def kernel_image_bytes(firmware: Firmware) -> bytes:
    """The decompressed kernel image of an ingested firmware (from the cache)."""
    return (cache_dir(firmware.sha256) / _IMAGE).read_bytes()


def with_device_tree(firmware: Firmware, blob: bytes) -> Firmware:
    """`firmware` paired with a given DTB: its facts, the load address the DTB's memory implies,
    and for AArch64 the class of the board's cores."""
    tree = devicetree.parse_dtb(blob, "given")
    load = kernel_facts.load_address(
        firmware.arch, firmware.symbols, firmware.page_offset, tree, _text_offset(firmware.layers)
    )
    cpu_class = firmware.cpu_class
    if firmware.arch is Arch.AARCH64:
        cpu_class = kernel_facts.board_cpu_class(tree) or cpu_class
    return dataclasses.replace(
        firmware, device_tree=tree, load_address=firmware.load_address or load, cpu_class=cpu_class
    )


def _text_offset(layers: tuple[Layer, ...]) -> int | None:
    header = arm64_image.header_of(layers)
    return None if header is None else int(header["text_offset"])


def _analyse(data: bytes, sha256: str, image: KernelImage) -> Firmware:
    symbols = recover_symbols(image)
    tree = devicetree.parse_dtb(image.appended_dtb, "appended") if image.appended_dtb else None
    page_offset = kernel_facts.page_offset(image, symbols)
    load = image.load_address
    if load is None:
        load = kernel_facts.load_address(image.arch, symbols, page_offset, tree, _text_offset(image.layers))
    header = arm64_image.header_of(image.layers)
    cpu_class = kernel_facts.cpu_class(image, symbols)
    if image.arch is Arch.AARCH64 and tree is not None:
        cpu_class = kernel_facts.board_cpu_class(tree) or cpu_class
    return Firmware(
        sha256=sha256,
        size=len(data),
        arch=image.arch,
        endian=image.endian,
        cpu_class=cpu_class,
        version=kernel_facts.kernel_version(image),
        layers=image.layers,
        page_offset=page_offset,
        load_address=load,
        entry=image.entry,
        symbols=symbols,
        machines=machines.find_machine_descs(image, symbols),
        device_tree=tree,
        image_size=len(image.data),
        page_size=header["page_size"] if header is not None else kernel_facts.fixed_page_size(image),
        va_bits=kernel_facts.va_bits(image, symbols),
    )


def _load_cached(sha256: str) -> Firmware | None:
    where = cache_dir(sha256)
    try:
        facts = json.loads((where / _FACTS).read_text())
        symbols = SymbolTable.parse_nm((where / _SYMBOLS).read_text())
    except (OSError, ValueError, KeyError):
        return None  # absent or damaged: ingest again and overwrite
    return Firmware.from_facts(facts, symbols)


def _store(firmware: Firmware, image: KernelImage) -> None:
    """Write the cache entry atomically: a temporary directory renamed into place."""
    final = cache_dir(firmware.sha256)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=".tmp-"))
    (tmp / _FACTS).write_text(json.dumps(firmware.facts_dict(), indent=1))
    (tmp / _SYMBOLS).write_text(firmware.symbols.to_nm())
    (tmp / _IMAGE).write_bytes(image.data)
    shutil.rmtree(final, ignore_errors=True)  # a damaged entry: we only store after a failed load
    try:
        os.rename(tmp, final)
    except OSError:  # a concurrent ingestion of the same image stored it first
        shutil.rmtree(tmp, ignore_errors=True)
