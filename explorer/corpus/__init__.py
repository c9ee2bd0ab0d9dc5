"""The real-kernel corpus: Debian's embedded ARM, AArch64 and MIPS kernels, their device trees, and
busybox initramfs images, fetched by `explorer corpus fetch` into the explorer cache. Kernels
are named as in `explorer.corpus.catalogue`: "armmp" is bookworm's 6.1, "armmp-6.12" trixie's.

Use `load()` (fast, never touches the network) or `fetch()` (idempotent: makes the corpus
complete first) and ask the returned `Corpus` for paths. Nothing outside this package should
know how the corpus is laid out on disk.
"""

from explorer.corpus.catalogue import FLAVOUR_ARCH
from explorer.corpus.fetch import fetch
from explorer.corpus.initramfs import USERSPACE_MARKER
from explorer.corpus.layout import Corpus, corpus_root, load

__all__ = ["FLAVOUR_ARCH", "USERSPACE_MARKER", "Corpus", "corpus_root", "fetch", "load"]
