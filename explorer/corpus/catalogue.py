"""What the corpus holds: each kernel by its corpus name, and the Debian release and package it comes from.

Names: the Debian flavour alone ("armmp", "marvell", "rpi", "4kc-malta") is the bookworm 6.1
kernel the corpus was built around; "<flavour>-<series>" ("armmp-5.10", "armmp-6.12",
"rpi-6.12") is the same flavour from an older or newer Debian release, so that symbol recovery
and kernel facts are checked across kernel versions. Which kernels exist is a fact of Debian's
archive, checked with apt on 2026-11-25: bullseye (5.10) only keeps armhf on the mirrors (its
armel and mipsel left with the end of regular support), and trixie (6.12) has no marvell
flavour and no mipsel port. "arm64" and "arm64-6.12" are Debian's one AArch64 flavour (an
uncompressed `Image` with the device trees of several hundred boards in vendor subfolders),
from bookworm and trixie like the others (checked 2026-12-07; both are served from the
releases' -security archives then). This module is pure data; it never touches the network or
the disk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class KernelSource:
    """Where one corpus kernel comes from: a Debian release, an architecture and a package name."""

    suite: str
    arch: str
    # The package name with "{abi}" where Debian's upload number goes: "linux-image-6.1.0-{abi}-armmp"
    # up to bookworm, "linux-image-6.12.{abi}+deb13-armmp" from trixie on (named after the upstream version).
    package_template: str

    def abi_of(self, package: str) -> int | None:
        """The upload number of `package` if it is a version of this kernel, else None."""
        prefix, suffix = self.package_template.split("{abi}")
        found = re.fullmatch(re.escape(prefix) + "([0-9]+)" + re.escape(suffix), package)
        return int(found.group(1)) if found else None


# The suite whose busybox-static every architecture's initramfs uses: a static binary runs on
# any of these kernels, and one busybox per architecture keeps one initramfs per architecture.
USERSPACE_SUITE = "bookworm"

KERNELS = {
    "armmp": KernelSource("bookworm", "armhf", "linux-image-6.1.0-{abi}-armmp"),
    "marvell": KernelSource("bookworm", "armel", "linux-image-6.1.0-{abi}-marvell"),
    "rpi": KernelSource("bookworm", "armel", "linux-image-6.1.0-{abi}-rpi"),
    "4kc-malta": KernelSource("bookworm", "mipsel", "linux-image-6.1.0-{abi}-4kc-malta"),
    "armmp-5.10": KernelSource("bullseye", "armhf", "linux-image-5.10.0-{abi}-armmp"),
    "armmp-6.12": KernelSource("trixie", "armhf", "linux-image-6.12.{abi}+deb13-armmp"),
    "rpi-6.12": KernelSource("trixie", "armel", "linux-image-6.12.{abi}+deb13-rpi"),
    "arm64": KernelSource("bookworm", "arm64", "linux-image-6.1.0-{abi}-arm64"),
    "arm64-6.12": KernelSource("trixie", "arm64", "linux-image-6.12.{abi}+deb13-arm64"),
}

# Corpus kernel name -> Debian architecture. The boards each one covers are in the corpus README.
FLAVOUR_ARCH = {name: source.arch for name, source in KERNELS.items()}
