"""`explorer inspect`: what ingestion learned about a firmware image, for people and for scripts."""

import json
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from explorer.firmware.elf_out import kernel_elf
from explorer.firmware.ingest import ingest, kernel_image_bytes
from explorer.firmware.model import DtDevice, Firmware

EXAMPLE = """
Example:

  explorer inspect vmlinuz-6.1.0-50-armmp --dtb vexpress-v2p-ca9.dtb --symbols-out armmp.nm

--elf-out writes an ELF of the kernel (its image at the proven base, every recovered symbol)
that gdb loads as is: `file armmp.elf`, then `target remote :1234` to `explorer run --gdb 1234`.
"""


def register(app: typer.Typer) -> None:
    app.command(help="Identify a kernel image and recover its symbols and facts." + EXAMPLE)(inspect)


def inspect(
    firmware: Annotated[
        Path, typer.Argument(help="Kernel image or flash dump (zImage, uImage, Image, vmlinux).")
    ],
    dtb: Annotated[Path | None, typer.Option(help="Device tree blob to pair with the kernel.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the facts as JSON.")] = False,
    symbols_out: Annotated[
        Path | None, typer.Option(help="Write the symbols as `ADDRESS TYPE NAME` lines (nm format).")
    ] = None,
    elf_out: Annotated[
        Path | None,
        typer.Option(help="Write an ELF of the kernel with every recovered symbol, for gdb."),
    ] = None,
) -> None:
    fw = ingest(firmware, dtb)
    if symbols_out is not None:
        symbols_out.write_text(fw.symbols.to_nm())
    if elf_out is not None:
        elf_out.write_bytes(kernel_elf(fw, kernel_image_bytes(fw)))
    if as_json:
        print(json.dumps(fw.facts_dict(), indent=2))
    else:
        _print_report(fw, symbols_out, elf_out)


def _hex(value: int | None) -> str:
    return "unknown" if value is None else f"0x{value:08x}"


def _print_report(fw: Firmware, symbols_out: Path | None, elf_out: Path | None) -> None:
    console = Console()
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    facts.add_row("image", f"{fw.size} bytes, sha256 {fw.sha256[:16]}…")
    for layer in fw.layers:
        detail = ", ".join(f"{k}={_show(v)}" for k, v in layer.detail.items() if k != "found")
        facts.add_row("layer", f"{layer.kind} at offset 0x{layer.offset:x} ({layer.size} bytes) {detail}")
    facts.add_row("kernel", fw.version or "no version banner found")
    facts.add_row("architecture", f"{fw.arch.value} {fw.endian.value}-endian, {fw.cpu_class}")
    facts.add_row("text base", f"{_hex(fw.symbols.base)} (image {fw.image_size} bytes)")
    facts.add_row("PAGE_OFFSET", _hex(fw.page_offset))
    if fw.page_size is not None:
        facts.add_row("page size", f"{fw.page_size >> 10} KiB")
    if fw.va_bits is not None:
        facts.add_row("VA bits", f"{fw.va_bits} (the kernel's half: VA_BITS_MIN)")
    facts.add_row("load address", _hex(fw.load_address))
    facts.add_row("entry", _hex(fw.entry))
    facts.add_row("symbols", f"{len(fw.symbols.symbols)} from {fw.symbols.source}; {fw.symbols.proof}")
    if symbols_out is not None:
        facts.add_row("", f"written to {symbols_out}")
    if elf_out is not None:
        facts.add_row("", f"ELF for gdb written to {elf_out}")
    boards = [m for m in fw.machines if m.nr is not None]
    compat = sorted({c for m in fw.machines for c in m.dt_compat})
    facts.add_row("machines", f"{len(boards)} ATAG boards, {len(compat)} DT compatibles")
    for m in boards:
        facts.add_row("", f"board id {m.nr}: {m.name}")
    if compat:
        facts.add_row("", ", ".join(compat[:12]) + (" …" if len(compat) > 12 else ""))
    console.print(facts)
    if fw.device_tree is not None:
        _print_device_tree(console, fw)


def _print_device_tree(console: Console, fw: Firmware) -> None:
    tree = fw.device_tree
    assert tree is not None
    console.print(
        f"\n[bold]device tree[/] ({tree.source}): {tree.model or 'no model'}; "
        f"compatible {', '.join(tree.compatible)}"
    )
    for base, size in tree.memory:
        console.print(f"  memory 0x{base:08x} size 0x{size:x}")
    parents = Counter(d.interrupt_parent for d in tree.devices if d.interrupt_parent and d.interrupts)
    main_parent = parents.most_common(1)[0][0] if parents else None
    if main_parent:
        console.print(f"  interrupts go to {main_parent} unless a row names another controller")
    table = Table("address", "size", "compatible", "interrupts", box=None, pad_edge=False)
    for dev in sorted(tree.devices, key=lambda d: d.reg[0] if d.reg else (0, 0)):
        if dev.status != "okay" or not dev.reg:
            continue
        addr, size = dev.reg[0]
        table.add_row(
            f"0x{addr:08x}", f"0x{size:x}", ", ".join(dev.compatible[:2]), _interrupts(dev, main_parent)
        )
    console.print(table)


def _interrupts(dev: DtDevice, main_parent: str | None) -> str:
    """A device's interrupt specifier, e.g. `<0 5 4>`, with its controller when it is not the usual one."""
    if not dev.interrupts or dev.interrupt_parent is None:
        return ""
    cells = "<" + " ".join(str(c) for c in dev.interrupts) + ">"
    return cells if dev.interrupt_parent == main_parent else f"{cells} to {dev.interrupt_parent}"


def _show(value: object) -> str:
    return f"0x{value:x}" if isinstance(value, int) and value > 9 else str(value)
