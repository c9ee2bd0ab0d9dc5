"""The fetched corpus on disk and a read-only, typed view of it (`Corpus`).

Everything here answers "where is file X" from the manifest. It must never download,
extract or build: that is `explorer.corpus.fetch`, and `load` tells the user to run it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from explorer.corpus.catalogue import KERNELS
from explorer.corpus.manifest import ArchRecord, KernelRecord, Manifest, read_manifest
from explorer.errors import BadInput, CorpusError
from explorer.paths import cache_root

_RUN_FETCH = "run `explorer corpus fetch`"


def corpus_root() -> Path:
    """The corpus directory inside the explorer cache."""
    return cache_root() / "corpus"


@dataclass(frozen=True)
class Corpus:
    """The real Debian kernels, device trees, busybox binaries and initramfs images, by name."""

    root: Path
    manifest: Manifest

    @property
    def flavours(self) -> list[str]:
        return sorted(self.manifest.kernels)

    @property
    def arches(self) -> list[str]:
        return sorted(self.manifest.arches)

    def kernel(self, flavour: str) -> Path:
        """The kernel image of `flavour` as Debian ships it: "armmp", "marvell", "rpi" and "4kc-malta"
        are bookworm's 6.1 kernels, "armmp-5.10", "armmp-6.12" and "rpi-6.12" those of bullseye
        and trixie (`explorer.corpus.catalogue`)."""
        return self.root / self._kernel_record(flavour).image.path

    def release(self, flavour: str) -> str:
        """The kernel release `uname -r` prints, e.g. "6.1.0-50-armmp" or "6.12.117+deb13-armmp"
        (from the package name)."""
        return self._kernel_record(flavour).package.removeprefix("linux-image-")

    def suite(self, flavour: str) -> str:
        """The Debian release `flavour` was fetched from (bookworm, bullseye, trixie)."""
        return self._kernel_record(flavour).suite

    def arch_of(self, flavour: str) -> str:
        """The Debian architecture `flavour` is built for (armhf, armel, mipsel)."""
        return self._kernel_record(flavour).arch

    def boards(self, flavour: str) -> list[str]:
        """The boards `flavour` ships device trees for, named as `dtb` accepts them: the DTB's path
        below the package's DTB directory without ".dtb" ("vendor/board" where there are vendor
        subdirectories). Empty for kernels without device trees."""
        dtb_dir = self._dtb_dir(flavour)
        if dtb_dir is None:
            return []
        return sorted(p.relative_to(dtb_dir).as_posix().removesuffix(".dtb") for p in dtb_dir.rglob("*.dtb"))

    def dtb(self, flavour: str, board: str) -> Path:
        """The DTB of `board` ("vexpress-v2p-ca9"; a "vendor/" prefix is optional), ".dtb" optional."""
        board = board.removesuffix(".dtb")
        dtb_dir = self._dtb_dir(flavour)
        if dtb_dir is not None and (dtb_dir / f"{board}.dtb").is_file():
            return dtb_dir / f"{board}.dtb"
        found = [b for b in self.boards(flavour) if b.rsplit("/", 1)[-1] == board]
        if len(found) != 1 or dtb_dir is None:
            what = "no" if not found else "more than one"
            raise BadInput(
                f"{what} device tree for '{board}' in the {flavour} kernel: "
                f"`explorer corpus list --dtbs {flavour}` shows its boards"
            )
        return dtb_dir / f"{found[0]}.dtb"

    def busybox(self, arch: str) -> Path:
        """The static busybox of Debian architecture `arch`."""
        return self.root / self._arch_record(arch).busybox.path

    def initramfs(self, arch: str) -> Path:
        """A gzip'd initramfs for `arch` whose /init prints `USERSPACE_MARKER` and powers off."""
        return self.root / self._arch_record(arch).initramfs.path

    def _kernel_record(self, flavour: str) -> KernelRecord:
        if flavour in self.manifest.kernels:
            return self.manifest.kernels[flavour]
        if flavour in KERNELS:
            raise CorpusError(
                f"the corpus holds no {flavour} kernel yet: run `explorer corpus fetch {flavour}`"
            )
        raise BadInput(f"unknown kernel flavour '{flavour}': choose one of {', '.join(sorted(KERNELS))}")

    def _dtb_dir(self, flavour: str) -> Path | None:
        dtb_dir = self._kernel_record(flavour).dtb_dir
        return None if dtb_dir is None else self.root / dtb_dir

    def _arch_record(self, arch: str) -> ArchRecord:
        if arch in self.manifest.arches:
            return self.manifest.arches[arch]
        flavours = sorted(f for f, source in KERNELS.items() if source.arch == arch)
        if flavours:
            raise CorpusError(
                f"the corpus holds nothing for {arch} yet: run `explorer corpus fetch {flavours[0]}`"
            )
        raise BadInput(f"unknown architecture '{arch}': choose one of {', '.join(self.arches)}")


def load(root: Path | None = None) -> Corpus:
    """The corpus fetched earlier. Checks that its files exist (not their digests: `fetch` does that)."""
    root = root or corpus_root()
    manifest = read_manifest(root)
    if manifest is None:
        raise CorpusError(f"no real-kernel corpus in {root}: {_RUN_FETCH}")
    missing = [f.path for f in manifest.product_files() if not (root / f.path).is_file()]
    if missing:
        raise CorpusError(f"the corpus in {root} lacks {missing[0]}: {_RUN_FETCH}")
    return Corpus(root, manifest)
