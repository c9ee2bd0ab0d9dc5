"""U-Boot FIT image (mkimage -f): a flattened device tree whose /images nodes carry the kernel.

The kernel is the image the default configuration names (/configurations/default ->
its `kernel`), else the first image of type "kernel"; its bytes are the node's `data`, or with
external data (mkimage -E) `data-size` bytes at `data-offset` past the tree's end (or at
`data-position` from its start). `compression`, `arch`, `load` and `entry` are read as U-Boot
reads them. The tree is walked here directly rather than with the device tree parser: a FIT's
`data` is the whole kernel, which that parser would turn into millions of integers. This module
checks no hashes or signatures and never peels the payload (`locate` does).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from explorer.errors import FirmwareError
from explorer.firmware.decompress import MAGICS, Codec, decompress
from explorer.firmware.formats import Wrapped
from explorer.firmware.model import Arch, Layer

KIND = "fit"
MAGIC = b"\xd0\x0d\xfe\xed"
HEADER = struct.Struct(">10I")
BEGIN_NODE, END_NODE, PROP, NOP, END = 1, 2, 3, 4, 9
MAX_DEPTH = 16  # /images/kernel/hash is three levels; anything deeper is not a FIT
ARCHES = {"arm": Arch.ARM, "arm64": Arch.AARCH64, "mips": Arch.MIPS}
COMPRESSIONS = {
    "none": (),
    "gzip": (Codec.GZIP,),
    "bzip2": (Codec.BZIP2,),
    "lzma": (Codec.LZMA,),
    "lzo": (Codec.LZO,),
    "lz4": (Codec.LZ4_FRAME, Codec.LZ4_LEGACY),
    "zstd": (Codec.ZSTD,),
}
KERNEL_TYPES = ("kernel", "kernel_noload")

Nodes = dict[str, dict[str, bytes]]  # node path -> property name -> raw bytes


def _tree(data: bytes, offset: int) -> tuple[int, Nodes] | None:
    """(total size, the nodes) of the flattened tree at `offset`, or None if it is not a sane one."""
    if data[offset : offset + 4] != MAGIC or offset + HEADER.size > len(data):
        return None
    (_, totalsize, off_struct, off_strings, _, version, _, _, size_strings, size_struct) = HEADER.unpack_from(
        data, offset
    )
    if (
        version < 16
        or off_struct % 4
        or max(off_struct + size_struct, off_strings + size_strings) > totalsize
    ):
        return None
    if offset + totalsize > len(data):
        return None
    strings = data[offset + off_strings : offset + off_strings + size_strings]
    nodes: Nodes = {}
    path: list[str] = []
    at, end = offset + off_struct, offset + off_struct + size_struct
    while at + 4 <= end:
        (tag,) = struct.unpack_from(">I", data, at)
        at += 4
        if tag == BEGIN_NODE:
            name_end = data.find(b"\0", at, end)
            if name_end < 0 or len(path) >= MAX_DEPTH:
                return None
            path.append(data[at:name_end].decode("latin-1"))
            nodes["/".join(path) or "/"] = {}
            at = offset + ((name_end + 4 - offset) & ~3)  # aligned within the tree, which may start anywhere
        elif tag == END_NODE:
            if not path:
                return None
            path.pop()
        elif tag == PROP:
            if at + 8 > end or not path:
                return None
            size, name_at = struct.unpack_from(">II", data, at)
            name_end = strings.find(b"\0", name_at)
            if at + 8 + size > end or name_end < 0:
                return None
            nodes["/".join(path) or "/"][strings[name_at:name_end].decode("latin-1")] = data[
                at + 8 : at + 8 + size
            ]
            at = offset + ((at + 8 + size + 3 - offset) & ~3)
        elif tag == END:
            return totalsize, nodes
        elif tag != NOP:
            return None
    return None


def _string(props: dict[str, bytes], name: str) -> str | None:
    value = props.get(name)
    return None if value is None else value.split(b"\0", 1)[0].decode("latin-1")


def _number(props: dict[str, bytes], name: str) -> int | None:
    value = props.get(name)
    if value is None or len(value) not in (4, 8):
        return None
    return int.from_bytes(value, "big")


def _kernel_node(nodes: Nodes) -> str | None:
    """The path of the kernel image node: the default configuration's, else the first kernel."""
    default = _string(nodes.get("/configurations", {}), "default")
    named = _string(nodes.get(f"/configurations/{default}", {}), "kernel") if default else None
    if named is not None and f"/images/{named}" in nodes:
        return f"/images/{named}"
    images = (path for path in nodes if path.startswith("/images/") and path.count("/") == 2)
    return next((path for path in images if _string(nodes[path], "type") in KERNEL_TYPES), None)


def probe(data: bytes, offset: int) -> bool:
    """A sane flattened tree at `offset` with a kernel image under /images."""
    tree = _tree(data, offset)
    return tree is not None and _kernel_node(tree[1]) is not None


def candidates(data: bytes) -> Iterator[int]:
    pos = data.find(MAGIC)
    while pos >= 0:
        yield pos
        pos = data.find(MAGIC, pos + 1)


def _payload(data: bytes, offset: int, totalsize: int, props: dict[str, bytes]) -> tuple[bytes, int]:
    """The kernel image's bytes and the end of the FIT (its tree, and external data past it)."""
    if "data" in props:
        return props["data"], offset + totalsize
    size = _number(props, "data-size")
    position = _number(props, "data-position")
    relative = _number(props, "data-offset")
    if size is None or (position is None and relative is None):
        raise FirmwareError("the FIT's kernel image has no data: the image is corrupt")
    # data-position counts from the FIT's start; data-offset from the 4-aligned end of its tree
    after_tree = offset + ((totalsize + 3) & ~3)
    start = offset + position if position is not None else after_tree + (relative or 0)
    if start + size > len(data):
        raise FirmwareError(
            f"the FIT's kernel data ({size} bytes) runs past the end of the file: it is truncated"
        )
    return data[start : start + size], max(offset + totalsize, start + size)


def unpack(data: bytes, offset: int) -> Wrapped:
    tree = _tree(data, offset)
    node = None if tree is None else _kernel_node(tree[1])
    if tree is None or node is None:
        raise FirmwareError(f"no FIT image with a kernel at offset {offset:#x}")
    totalsize, nodes = tree
    props = nodes[node]
    arch_name = _string(props, "arch") or ""
    if arch_name not in ARCHES:
        raise FirmwareError(
            f"this FIT's kernel is for the '{arch_name}' architecture; "
            "explorer supports ARM, AArch64 and MIPS"
        )
    compression = _string(props, "compression") or "none"
    if compression not in COMPRESSIONS:
        raise FirmwareError(
            f"the FIT's kernel uses compression '{compression}', which explorer does not know"
        )
    payload, end = _payload(data, offset, totalsize, props)
    codecs = COMPRESSIONS[compression]
    if codecs:
        codec = next((c for c in codecs if payload.startswith(MAGICS[c])), None)
        if codec is None:
            raise FirmwareError(
                f"the FIT says {compression} but its kernel data is not: the image is corrupt"
            )
        payload = decompress(codec, payload).data
    load, entry = _number(props, "load"), _number(props, "entry")
    detail = {
        "image": node.rsplit("/", 1)[-1],
        "arch": ARCHES[arch_name].value,
        "compression": compression,
        "load_address": load,
        "entry": entry,
        "external_data": "data" not in props,
    }
    return Wrapped(Layer(KIND, offset, end - offset, detail), payload, ARCHES[arch_name], load, entry)
