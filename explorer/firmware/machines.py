"""Machine descriptors: which boards a kernel was built for, read from the kernel itself.

ARM kernels carry a table of `struct machine_desc` (arch/arm/include/asm/mach/arch.h) in
`.arch.info.init`, one record per board file or DT machine. Its bounds are data symbols that a
kallsyms-only kernel does not have, so the table is found by scanning for records whose first
four fields look right (they have kept this order since 2.6):

    unsigned int nr;                  ATAG machine id, ~0 for DT-only descriptors
    const char *name;                 board name, a C string in the image
    unsigned long atag_offset;        where the boot loader puts ATAGs, relative to RAM
    const char *const *dt_compat;     NULL or a NULL-terminated array of C strings

The rest of the struct changes with version and config (ZONE_DMA, LPAE), so the record size
is not assumed: records are equally spaced, and the longest equally spaced run wins.

MIPS kernels have no such table; their boards are the DTBs built into the image.

This module only reads; it never decides which board to boot.
"""

from __future__ import annotations

import numpy as np

from explorer.errors import DeviceTreeError
from explorer.firmware.devicetree import find_dtbs, parse_dtb
from explorer.firmware.model import Arch, Endian, KernelImage, MachineDesc, SymbolTable

_DT_ONLY = 0xFFFFFFFF  # the `nr` of DT-only descriptors (~0)
_MAX_MACHINE_ID = 0xFFFF  # arch/arm/tools/mach-types ends below 5,000
_MAX_ATAG_OFFSET = 0x100_0000  # ATAGs lie in the first 16 MiB of RAM (usually at +0x100)
_MAX_NAME = 128
_MAX_COMPATIBLES = 64
# sizeof(struct machine_desc) is 60 bytes in 2.6.x and about 110 in 6.x.
_MIN_STRIDE, _MAX_STRIDE = 32, 512
_NEIGHBOURS = 8  # stride candidates: the distances to this many following records
_MAX_GAP_AFTER_INIT_TEXT = 0x10000  # exit text and processor table: 5 KiB on armmp


def find_machine_descs(image: KernelImage, symbols: SymbolTable) -> tuple[MachineDesc, ...]:
    """The boards the kernel supports, in table order; () when it has no table we can find."""
    if image.arch is Arch.MIPS:
        return _builtin_dtb_machines(image)
    if image.arch is Arch.AARCH64:
        return ()  # arm64 has no machine descriptors: every board is described by its device tree
    records = _candidate_records(image, symbols.base)
    table = _longest_equally_spaced_run(sorted(records), _table_window(symbols))
    if len(table) == 1 and _table_window(symbols) is None:
        return ()  # a lone record anywhere in the image is too weak a proof
    return tuple(records[offset] for offset in table)


def _candidate_records(image: KernelImage, base: int) -> dict[int, MachineDesc]:
    """Image offsets of every 4-aligned place whose first four words parse as a descriptor."""
    data = image.data
    dtype = "<u4" if image.endian is Endian.LITTLE else ">u4"
    words = np.frombuffer(data, dtype, len(data) // 4).astype(np.int64)
    if len(words) < 4:
        return {}
    nr, name, atag_offset, dt_compat = words[:-3], words[1:-2], words[2:-1], words[3:]
    end = base + len(data)
    plausible = (
        ((nr == _DT_ONLY) | (nr <= _MAX_MACHINE_ID))
        & (name >= base)
        & (name < end)
        & (atag_offset < _MAX_ATAG_OFFSET)
        & (atag_offset % 4 == 0)
        & ((dt_compat == 0) | ((dt_compat >= base) & (dt_compat < end) & (dt_compat % 4 == 0)))
    )
    records = {}
    for index in np.flatnonzero(plausible).tolist():
        board = _c_string(data, int(name[index]) - base)
        compatibles = _compatibles(data, int(dt_compat[index]), base, dtype)
        if board is None or compatibles is None:
            continue
        machine_id = int(nr[index])
        # A DT-only record without compatibles is real: "Generic DT based system", the
        # multiplatform fallback that takes any tree.
        records[index * 4] = MachineDesc(board, None if machine_id == _DT_ONLY else machine_id, compatibles)
    return records


def _c_string(data: bytes, offset: int) -> str | None:
    """The printable NUL-terminated string at `offset`, or None."""
    raw = data[offset : offset + _MAX_NAME + 1]
    end = raw.find(b"\0")
    if end <= 0 or not all(0x20 <= c < 0x7F for c in raw[:end]):
        return None
    return raw[:end].decode("ascii")


def _compatibles(data: bytes, pointer: int, base: int, dtype: str) -> tuple[str, ...] | None:
    """The strings of a NULL-terminated `dt_compat` array; () for NULL, None if it is not one."""
    if pointer == 0:
        return ()
    start = pointer - base
    count = min(_MAX_COMPATIBLES + 1, (len(data) - start) // 4)
    out = []
    for item in np.frombuffer(data, dtype, count, start).tolist():
        if item == 0:
            return tuple(out) if out else None
        text = _c_string(data, item - base) if base <= item < base + len(data) else None
        if text is None:
            return None
        out.append(text)
    return None


def _table_window(symbols: SymbolTable) -> range | None:
    """Image offsets where the table can start, when the symbols say.

    arch/arm/kernel/vmlinux.lds.S puts .arch.info.init right after the init text, the exit
    text and the processor table, so the table starts a few KiB after `_einittext`.
    """
    end_of_init_text = symbols.address_of("_einittext")
    if end_of_init_text is None:
        return None
    start = end_of_init_text - symbols.base
    return range(start, start + _MAX_GAP_AFTER_INIT_TEXT)


def _longest_equally_spaced_run(offsets: list[int], starts: range | None) -> list[int]:
    """The longest run offset, offset + s, offset + 2s, ... of `offsets`, for any stride s,
    that begins in `starts` (anywhere when None)."""
    present = set(offsets)
    if starts is not None:
        offsets = [o for o in offsets if o in starts]
    best: list[int] = offsets[:1]
    for i, start in enumerate(offsets):
        for following in offsets[i + 1 : i + 1 + _NEIGHBOURS]:
            stride = following - start
            if not _MIN_STRIDE <= stride <= _MAX_STRIDE or start - stride in present:
                continue  # not a stride we believe, or not the start of its run
            run = [start]
            while run[-1] + stride in present:
                run.append(run[-1] + stride)
            if len(run) > len(best):
                best = run
    return best


def _builtin_dtb_machines(image: KernelImage) -> tuple[MachineDesc, ...]:
    """One DT-only descriptor per DTB built into the image, named by its model."""
    machines = []
    for offset in find_dtbs(image.data):
        try:
            tree = parse_dtb(image.data[offset:], "builtin")
        except DeviceTreeError:
            continue  # a sane header in front of something else: not a built-in DTB
        if tree.compatible:
            machines.append(MachineDesc(tree.model or tree.compatible[0], None, tree.compatible))
    return tuple(machines)
