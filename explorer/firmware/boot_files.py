"""The files a machine boots, as the firmware carries them: its kernel, and the initrd beside it.

Firmware arrives as it is flashed: a flash dump with a uImage somewhere inside and a ramdisk
uImage after it, a multi-file uImage holding a kernel and an initrd, or a bare kernel. Ingestion
(explorer.firmware.locate) finds the kernel; this module says which bytes to hand the machine's
loader for it, and which initrd the firmware carries:

- a kernel file the loader reads as it is (a zImage, an ELF, a single-file uImage, whose header
  QEMU's loader obeys) is booted unchanged, the whole file;
- inside a flash dump, the kernel's own container is cut out at the offset the scan found it;
- a multi-file uImage, which QEMU's loader does not read, is split: its first sub-image is the
  kernel (decompressed as its header says) and its second, when there is one, the initrd;
- a ramdisk uImage in the same flash dump is the initrd (its payload).
A device tree appended to a zImage stays appended (the kernel's decompressor finds it there), so
the kernel boots with the tree it was flashed with. Pure function of the bytes: this module
never reads or writes files.
"""

from __future__ import annotations

from dataclasses import dataclass

from explorer.errors import FirmwareError
from explorer.firmware.formats import fit, uimage
from explorer.firmware.model import Layer

FLASH = "flash"


@dataclass(frozen=True)
class Carried:
    """One file the firmware carries, and where in the firmware it was found (for the user)."""

    data: bytes
    origin: str  # e.g. "the uImage at 0x80 of the flash image"


@dataclass(frozen=True)
class BootFiles:
    """What to boot: the kernel (`None`: the firmware file itself, unchanged) and the initrd the
    firmware carries (`None`: none)."""

    kernel: Carried | None
    initrd: Carried | None


def boot_files(data: bytes, layers: tuple[Layer, ...]) -> BootFiles:
    """The kernel and initrd to boot for the firmware `data`, whose kernel ingestion found inside
    `layers` (outermost first: Firmware.layers, KernelImage.layers)."""
    outer = layers[0]
    if outer.kind != FLASH:
        return _from_container(data, outer, "the firmware file", whole_file=True)
    kernel_at = int(outer.detail["kernel_at"])
    inner = layers[1]
    carried = _from_container(
        data[kernel_at:], inner, f"the {inner.kind} at {kernel_at:#x} of the flash image"
    )
    if carried.initrd is not None:
        return carried
    return BootFiles(carried.kernel, _ramdisk_in_flash(data, outer, kernel_at))


def _from_container(data: bytes, layer: Layer, where: str, whole_file: bool = False) -> BootFiles:
    """The kernel and initrd of the container `layer` that starts at data[0]."""
    if layer.kind == fit.KIND:  # QEMU loads a uImage as the kernel, but no FIT
        raise FirmwareError(
            f"{where} is a FIT image: explorer reads its kernel (explorer inspect) but cannot boot a "
            "FIT yet; extract the kernel with `dumpimage -T flat_dt -p 0 -o kernel FILE` and give that"
        )
    if layer.kind == uimage.KIND and layer.detail.get("type") == "multi":
        kernel, initrd = _multi_sub_images(data)
        return BootFiles(
            Carried(kernel, f"the first image of the multi-file uImage ({where})"),
            None
            if initrd is None
            else Carried(initrd, f"the second image of the multi-file uImage ({where})"),
        )
    if whole_file:
        return BootFiles(None, None)
    size = layer.size + int(layer.detail.get("appended_dtb_size", 0))
    return BootFiles(Carried(data[:size], where), None)


def _multi_sub_images(data: bytes) -> tuple[bytes, bytes | None]:
    """The kernel (decompressed as the header says) and the second sub-image, if any, of the
    multi-file uImage at data[0]."""
    size = uimage.HEADER.unpack_from(data)[3]
    images = uimage.sub_images(data[uimage.HEADER_SIZE : uimage.HEADER_SIZE + size])
    return uimage.unpack(data, 0).payload, images[1] if len(images) > 1 else None


def _ramdisk_in_flash(data: bytes, flash: Layer, kernel_at: int) -> Carried | None:
    """The payload of the first ramdisk uImage the flash scan found after the kernel (else before)."""
    offsets = [int(f["offset"]) for f in flash.detail["found"] if f["format"] == uimage.KIND]
    for offset in sorted(offsets, key=lambda o: (o < kernel_at, o)):
        if offset != kernel_at and (payload := uimage.ramdisk_payload(data, offset)) is not None:
            return Carried(payload, f"the ramdisk uImage at {offset:#x} of the flash image")
    return None
