"""The real-kernel corpus: Debian's embedded ARM and MIPS kernels, their device trees, and
busybox initramfs images, fetched by `explorer corpus fetch` into the explorer cache.

Use `load()` (fast, never touches the network) or `fetch()` (idempotent: makes the corpus
complete first) and ask the returned `Corpus` for paths. Nothing outside this package should
know how the corpus is laid out on disk.
"""

from explorer.corpus.fetch import FLAVOUR_ARCH, fetch
from explorer.corpus.initramfs import USERSPACE_MARKER
from explorer.corpus.layout import Corpus, corpus_root, load

__all__ = ["FLAVOUR_ARCH", "USERSPACE_MARKER", "Corpus", "corpus_root", "fetch", "load"]
