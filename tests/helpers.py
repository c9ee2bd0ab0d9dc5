"""Small helpers the tests share (importable as `tests.helpers`)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from explorer.firmware.model import Arch, Endian, Firmware, Symbol, SymbolTable


def run(*command: str | Path, stdin: bytes | None = None) -> bytes:
    """Run a host tool (mkimage, a compressor) and return its stdout; fail the test if it fails."""
    return subprocess.run([str(c) for c in command], input=stdin, capture_output=True, check=True).stdout


def arm_firmware(symbols: tuple[Symbol, ...] = (), **facts: Any) -> Firmware:
    """A hand-made ARMv7 Firmware for unit tests: the given symbols and facts, the rest empty."""
    defaults: dict[str, Any] = {
        "sha256": "0" * 64,
        "size": 0,
        "arch": Arch.ARM,
        "endian": Endian.LITTLE,
        "cpu_class": "ARMv7",
        "version": None,
        "layers": (),
        "page_offset": 0xC0000000,
        "load_address": None,
        "entry": None,
        "symbols": SymbolTable(symbols, "kallsyms", symbols[0].address if symbols else 0, "hand-made"),
        "machines": (),
        "device_tree": None,
        "image_size": 0,
    }
    return Firmware(**{**defaults, **facts})
