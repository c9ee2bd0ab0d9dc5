"""The corpus manifest: which Debian packages were fetched and the SHA-256 of every file we hand out.

The manifest is the corpus's single source of truth; paths in it are relative to the corpus
directory so the cache can move. This module reads, writes and checks manifests; it must
never download or build anything.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Bump when the layout changes. `read_manifest` upgrades the versions it knows (1: every
# kernel from one suite, named at the top) and treats any other as absent, so it is refetched.
# Optional fields with a default (DebRecord.lock_sha256) are no change of layout: an older
# explorer ignores them, and a manifest without them reads as taken for no lock entry.
FORMAT_VERSION = 2
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class FileRecord:
    """A file inside the corpus directory and the digest it must have."""

    path: str  # relative to the corpus directory
    sha256: str
    size: int

    def matches(self, root: Path, *, hash_contents: bool) -> bool:
        """Whether the file is there with the recorded size (and, if asked, the recorded digest)."""
        try:
            if (root / self.path).stat().st_size != self.size:
                return False
        except OSError:
            return False
        return not hash_contents or sha256_file(root / self.path) == self.sha256


@dataclass(frozen=True)
class DebRecord:
    """One downloaded Debian package and the directory it was extracted into."""

    package: str
    version: str
    arch: str
    deb: FileRecord
    root: str  # extraction directory, relative to the corpus directory
    # The SHA-256 of the locked package this one was taken for (explorer.corpus.lock): the same as
    # deb.sha256 unless the archive no longer served the locked one; None when nothing was locked.
    lock_sha256: str | None = None

    def stands_for(self, locked_sha256: str | None) -> bool:
        """Whether this package is what a fetch takes for a lock entry of that digest (None: no entry)."""
        return locked_sha256 is None or locked_sha256 in (self.deb.sha256, self.lock_sha256)


@dataclass(frozen=True)
class KernelRecord:
    """One kernel flavour: its image and, for device-tree kernels, the directory of its DTBs."""

    flavour: str  # the corpus name: "armmp", "armmp-6.12", ... (see explorer.corpus.catalogue)
    suite: str  # the Debian release it was fetched from
    arch: str
    package: str
    version: str
    image: FileRecord
    dtb_dir: str | None  # relative to the corpus directory; None when the kernel ships no DTBs


@dataclass(frozen=True)
class ArchRecord:
    """The user-space side of one architecture: static busybox and the initramfs built from it."""

    arch: str
    busybox: FileRecord
    initramfs: FileRecord
    # Of the /init the initramfs was built with (explorer.corpus.initramfs.MARKER_INIT_SHA256):
    # another means a rebuild; empty in manifests written before it was recorded.
    init_sha256: str = ""


@dataclass(frozen=True)
class Manifest:
    userspace_marker: str  # what the initramfs's /init prints; a changed marker means a rebuild
    debs: tuple[DebRecord, ...]
    kernels: dict[str, KernelRecord]  # by flavour; only those fetched (a flavour may be missing)
    arches: dict[str, ArchRecord]  # by Debian architecture

    def deb_of(self, package: str, arch: str) -> DebRecord | None:
        """The downloaded package of that name and architecture, if the corpus holds it."""
        return next((d for d in self.debs if (d.package, d.arch) == (package, arch)), None)

    def product_files(self) -> list[FileRecord]:
        """The files tests and runs use directly: kernels, busybox binaries and initramfs images."""
        files = [k.image for k in self.kernels.values()]
        for a in self.arches.values():
            files += [a.busybox, a.initramfs]
        return files

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "userspace_marker": self.userspace_marker,
            "debs": [asdict(d) for d in self.debs],
            "kernels": {name: asdict(k) for name, k in self.kernels.items()},
            "arches": {name: asdict(a) for name, a in self.arches.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        def file(f: dict[str, Any]) -> FileRecord:
            return FileRecord(f["path"], f["sha256"], f["size"])

        return cls(
            userspace_marker=d["userspace_marker"],
            debs=tuple(
                DebRecord(
                    x["package"], x["version"], x["arch"], file(x["deb"]), x["root"], x.get("lock_sha256")
                )
                for x in d["debs"]
            ),
            kernels={
                name: KernelRecord(
                    k["flavour"],
                    k["suite"],
                    k["arch"],
                    k["package"],
                    k["version"],
                    file(k["image"]),
                    k["dtb_dir"],
                )
                for name, k in d["kernels"].items()
            },
            arches={
                name: ArchRecord(
                    a["arch"], file(a["busybox"]), file(a["initramfs"]), a.get("init_sha256", "")
                )
                for name, a in d["arches"].items()
            },
        )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(root: Path) -> Manifest | None:
    """The manifest in `root`, or None if there is none or it is unreadable or of another format."""
    try:
        d = json.loads((root / MANIFEST_NAME).read_text())
        if d.get("format_version") == 1:
            d = _upgraded_from_v1(d)
        if d.get("format_version") != FORMAT_VERSION:
            return None
        return Manifest.from_dict(d)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _upgraded_from_v1(d: dict[str, Any]) -> dict[str, Any]:
    """Version 1 named one suite for the whole corpus; version 2 names each kernel's own."""
    kernels = {name: {**k, "suite": d["suite"]} for name, k in d["kernels"].items()}
    return {**d, "format_version": 2, "kernels": kernels}


def write_manifest(root: Path, manifest: Manifest) -> None:
    """Replace the manifest atomically, so a reader never sees half of one."""
    partial = root / f".{MANIFEST_NAME}.partial"
    partial.write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n")
    os.replace(partial, root / MANIFEST_NAME)
