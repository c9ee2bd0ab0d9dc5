"""The facts ingestion finds in a firmware image. Pure, immutable data; nothing here reads files.

Every type round-trips through plain JSON-able dicts (`to_dict` / `from_dict`) so that the
firmware cache, `explorer inspect --json` and the search store all share one representation.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Arch(StrEnum):
    ARM = "arm"  # 32-bit ARM (A32/T32)
    MIPS = "mips"
    AARCH64 = "aarch64"  # 64-bit ARM (A64): ingested, not yet run


class Endian(StrEnum):
    LITTLE = "little"
    BIG = "big"


@dataclass(frozen=True)
class Layer:
    """One wrapper peeled off on the way to the kernel: where it was and what it said."""

    kind: str  # "flash", "uimage", "zimage", "arm64-image", "compressed", "elf", "mips-vmlinuz", "image"
    offset: int  # byte offset of this layer inside its parent
    size: int  # bytes this layer occupies in its parent
    detail: dict[str, Any] = field(default_factory=dict)  # format-specific, JSON-able

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "offset": self.offset, "size": self.size, "detail": self.detail}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Layer:
        return cls(d["kind"], d["offset"], d["size"], dict(d["detail"]))


@dataclass(frozen=True, order=True)
class Symbol:
    """A kernel symbol in `nm` terms: address, type letter (T, t, W, ...), name."""

    address: int
    type: str
    name: str

    def nm_line(self) -> str:
        return f"{self.address:08x} {self.type} {self.name}"


@dataclass(frozen=True)
class KernelImage:
    """The kernel as it lies in memory before it runs, located and decompressed.

    `data[0]` is the first byte of kernel text (`_text`). Its virtual address is `base` when
    the format states it (ELF); otherwise symbol recovery finds and proves it.
    """

    arch: Arch
    endian: Endian
    data: bytes
    layers: tuple[Layer, ...]
    load_address: int | None = None  # physical load address, when a header states it
    entry: int | None = None  # entry point, when a header states it
    base: int | None = None  # virtual address of data[0], when the format states it
    elf_symbols: tuple[Symbol, ...] | None = None  # from an ELF symbol table
    appended_dtb: bytes | None = None  # a DTB concatenated after a zImage


@dataclass(frozen=True)
class SymbolTable:
    """Symbols sorted by address, plus the proven virtual address of image byte 0."""

    symbols: tuple[Symbol, ...]
    source: str  # "elf" or "kallsyms"
    base: int  # virtual address of KernelImage.data[0]
    proof: str  # one line: why `base` is right

    def __post_init__(self) -> None:
        by_name: dict[str, int] = {}
        for s in self.symbols:
            by_name.setdefault(s.name, s.address)
        object.__setattr__(self, "_by_name", by_name)
        object.__setattr__(self, "_addresses", [s.address for s in self.symbols])

    def address_of(self, name: str) -> int | None:
        """The address of the first symbol called `name`, or None."""
        return self._by_name.get(name)  # type: ignore[attr-defined]

    def containing(self, address: int) -> Symbol | None:
        """The symbol whose code contains `address` (the last one at or below it)."""
        i = bisect.bisect_right(self._addresses, address)  # type: ignore[attr-defined]
        return self.symbols[i - 1] if i else None

    def to_nm(self) -> str:
        return "".join(s.nm_line() + "\n" for s in self.symbols)

    @staticmethod
    def parse_nm(text: str) -> tuple[Symbol, ...]:
        out = []
        for line in text.splitlines():
            addr, typ, name = line.split(" ", 2)
            out.append(Symbol(int(addr, 16), typ, name))
        return tuple(out)


@dataclass(frozen=True)
class MachineDesc:
    """A machine descriptor compiled into the kernel: an ATAG board id and/or DT compatibles."""

    name: str
    nr: int | None  # ATAG machine id (r1 at boot); None for DT-only descriptors
    dt_compat: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "nr": self.nr, "dt_compat": list(self.dt_compat)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MachineDesc:
        return cls(d["name"], d["nr"], tuple(d["dt_compat"]))


@dataclass(frozen=True)
class DtDevice:
    """A device-tree node with a `reg`: its CPU-physical address ranges and interrupt wiring."""

    path: str
    compatible: tuple[str, ...]
    reg: tuple[tuple[int, int], ...]  # (address, size) after translation through parent `ranges`
    # Path of the effective interrupt parent: of a node with interrupts, or of an interrupt
    # controller without any (the controller it forwards its inputs to; None for the root).
    interrupt_parent: str | None
    interrupts: tuple[int, ...]  # raw cells of `interrupts`
    status: str  # "okay" unless the node says otherwise
    interrupt_cells: int = 0  # an interrupt controller's #interrupt-cells (0: not a controller)
    gpio_controller: bool = False  # the node has `gpio-controller` (a GPIO bank, a pin controller)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "compatible": list(self.compatible),
            "reg": [list(r) for r in self.reg],
            "interrupt_parent": self.interrupt_parent,
            "interrupts": list(self.interrupts),
            "status": self.status,
            "interrupt_cells": self.interrupt_cells,
            "gpio_controller": self.gpio_controller,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DtDevice:
        return cls(
            d["path"],
            tuple(d["compatible"]),
            tuple((a, s) for a, s in d["reg"]),
            d["interrupt_parent"],
            tuple(d["interrupts"]),
            d["status"],
            d["interrupt_cells"],
            d["gpio_controller"],
        )


@dataclass(frozen=True)
class DeviceTreeFacts:
    """What a DTB says about the board: identity, memory, devices, boot arguments."""

    source: str  # "given" or "appended"
    model: str | None
    compatible: tuple[str, ...]
    memory: tuple[tuple[int, int], ...]
    devices: tuple[DtDevice, ...]
    bootargs: str | None
    stdout_path: str | None
    cpus: tuple[str, ...] = ()  # the compatibles of the /cpus/cpu@N nodes, in order
    psci_method: str | None = None  # how the kernel calls PSCI firmware (/psci "method"), if it does
    # /aliases: name -> node path ("serial0" -> "/soc/serial@1c28000"), as the tree spells them
    aliases: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "model": self.model,
            "compatible": list(self.compatible),
            "memory": [list(m) for m in self.memory],
            "devices": [d.to_dict() for d in self.devices],
            "bootargs": self.bootargs,
            "stdout_path": self.stdout_path,
            "cpus": list(self.cpus),
            "psci_method": self.psci_method,
            "aliases": dict(self.aliases),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DeviceTreeFacts:
        return cls(
            d["source"],
            d["model"],
            tuple(d["compatible"]),
            tuple((a, s) for a, s in d["memory"]),
            tuple(DtDevice.from_dict(x) for x in d["devices"]),
            d["bootargs"],
            d["stdout_path"],
            tuple(d["cpus"]),
            d["psci_method"],
            dict(d["aliases"]),
        )


@dataclass(frozen=True)
class Firmware:
    """Everything ingestion learned about one firmware image (and, if given, its device tree).

    Pure data: built once per image hash by `explorer.firmware.ingest`, cached, and read by
    every later stage (search, runner configuration, reports).
    """

    sha256: str  # of the firmware file as given
    size: int
    arch: Arch
    endian: Endian
    cpu_class: str  # "ARMv5", "ARMv6", "ARMv7", "MIPS32r2", "ARMv8-A", ... (AArch64: the board's, given a DT)
    version: str | None  # the "Linux version ..." banner
    layers: tuple[Layer, ...]  # outermost first
    page_offset: int | None
    load_address: int | None  # physical address the kernel image expects to be loaded at
    entry: int | None
    symbols: SymbolTable
    machines: tuple[MachineDesc, ...]
    device_tree: DeviceTreeFacts | None  # the DTB given with --dtb, else the appended one
    image_size: int  # bytes of the decompressed kernel image
    page_size: int | None = None  # bytes, where the kernel states it (the AArch64 Image header)
    va_bits: int | None = None  # AArch64: virtual address bits of the kernel's half (VA_BITS_MIN)

    def facts_dict(self) -> dict[str, Any]:
        """JSON-able facts (everything but the symbol list itself, which is stored as nm text)."""
        return {
            "sha256": self.sha256,
            "size": self.size,
            "arch": self.arch.value,
            "endian": self.endian.value,
            "cpu_class": self.cpu_class,
            "version": self.version,
            "layers": [layer.to_dict() for layer in self.layers],
            "page_offset": self.page_offset,
            "load_address": self.load_address,
            "entry": self.entry,
            "text_base": self.symbols.base,
            "symbols": {
                "count": len(self.symbols.symbols),
                "source": self.symbols.source,
                "proof": self.symbols.proof,
            },
            "machines": [m.to_dict() for m in self.machines],
            "device_tree": self.device_tree.to_dict() if self.device_tree else None,
            "image_size": self.image_size,
            "page_size": self.page_size,
            "va_bits": self.va_bits,
        }

    @classmethod
    def from_facts(cls, facts: dict[str, Any], symbols: tuple[Symbol, ...]) -> Firmware:
        dt = facts["device_tree"]
        return cls(
            sha256=facts["sha256"],
            size=facts["size"],
            arch=Arch(facts["arch"]),
            endian=Endian(facts["endian"]),
            cpu_class=facts["cpu_class"],
            version=facts["version"],
            layers=tuple(Layer.from_dict(x) for x in facts["layers"]),
            page_offset=facts["page_offset"],
            load_address=facts["load_address"],
            entry=facts["entry"],
            symbols=SymbolTable(
                symbols, facts["symbols"]["source"], facts["text_base"], facts["symbols"]["proof"]
            ),
            machines=tuple(MachineDesc.from_dict(x) for x in facts["machines"]),
            device_tree=DeviceTreeFacts.from_dict(dt) if dt else None,
            image_size=facts["image_size"],
            page_size=facts["page_size"],
            va_bits=facts["va_bits"],
        )
