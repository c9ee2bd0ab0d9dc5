"""`explorer corpus fetch | path | list`: the real Debian kernels the tests and benchmarks boot.

Parsing and printing only; fetching and lookups live in `explorer.corpus`.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

import explorer.corpus
from explorer.corpus import FLAVOUR_ARCH, Corpus
from explorer.errors import BadInput, CorpusError

app = typer.Typer(
    help="The real-kernel corpus: Debian's ARM, AArch64 and MIPS kernels, their device trees, and busybox "
    "initramfs images."
    "\n\nExample:\n\n  explorer corpus fetch && explorer corpus list",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.command(
    help="Download (by package name, with a private apt) and prepare the corpus: the named kernel "
    "flavours, or all of them. Takes the versions the corpus lock (explorer/corpus/lock.json) names "
    "where Debian still serves them; idempotent, and offline when everything is already there. A "
    "flavour that cannot be had is reported in one line and the others complete (exit code 1)."
    "\n\nExample:\n\n  explorer corpus fetch armmp\n\n  explorer corpus fetch\n\n"
    "  explorer corpus fetch --update-lock"
)
def fetch(
    flavours: Annotated[
        list[str] | None,
        typer.Argument(help=f"Kernel flavours to fetch [default: all: {', '.join(sorted(FLAVOUR_ARCH))}]."),
    ] = None,
    update_lock: Annotated[
        bool,
        typer.Option(help="Take the newest packages Debian serves and move the corpus lock to them."),
    ] = False,
) -> None:
    console = Console(stderr=True, highlight=False)
    started = time.monotonic()
    with console.status("checking the corpus") as status:

        def report(step: str) -> None:
            console.print(f"[dim]{time.monotonic() - started:6.1f}s[/dim] {step}")
            status.update(step)

        outcome = explorer.corpus.fetch(flavours or None, update_lock=update_lock, report=report)
    console.print(f"corpus ready in {outcome.corpus.root} ({time.monotonic() - started:.2f} s)")
    _print_summary(outcome.corpus)
    for line in outcome.substitutions:
        console.print(f"explorer: warning: {line}", markup=False, soft_wrap=True)
    for flavour, why in sorted(outcome.missing.items()):
        console.print(
            f"explorer: warning: {flavour} could not be fetched: {why}", markup=False, soft_wrap=True
        )
    if outcome.missing:
        asked = len(flavours) if flavours else len(FLAVOUR_ARCH)
        raise CorpusError(
            f"{len(outcome.missing)} of {asked} kernel flavours could not be fetched "
            f"({', '.join(sorted(outcome.missing))}); the others are ready: run the fetch again later"
        )


@app.command(
    help="Print the path of a kernel (by flavour), one of its device trees, or an initramfs or busybox "
    "(by flavour or architecture)."
    "\n\nExample:\n\n  explorer corpus path armmp"
    "\n\n  explorer corpus path armmp --dtb vexpress-v2p-ca9"
    "\n\n  explorer corpus path armhf --initramfs"
)
def path(
    name: Annotated[
        str,
        typer.Argument(help="Kernel flavour (armmp, marvell, rpi, 4kc-malta, arm64, ...) or architecture."),
    ],
    dtb: Annotated[
        str | None, typer.Option(help="Board whose device tree to print, e.g. vexpress-v2p-ca9.")
    ] = None,
    initramfs: Annotated[
        bool, typer.Option("--initramfs", help="The initramfs for NAME's architecture.")
    ] = False,
    busybox: Annotated[
        bool, typer.Option("--busybox", help="The static busybox for NAME's architecture.")
    ] = False,
) -> None:
    if (dtb is not None) + initramfs + busybox > 1:
        raise BadInput("give at most one of --dtb, --initramfs, --busybox")
    corpus = explorer.corpus.load()
    if initramfs or busybox:
        arch = name if name in corpus.arches else corpus.arch_of(name)
        print(corpus.initramfs(arch) if initramfs else corpus.busybox(arch))
    elif dtb is not None:
        print(corpus.dtb(name, dtb))
    else:
        print(corpus.kernel(name))


@app.command(
    name="list",
    help="Show the fetched kernels, versions and initramfs images, or the boards one kernel has "
    "device trees for."
    "\n\nExample:\n\n  explorer corpus list\n\n  explorer corpus list --dtbs marvell",
)
def list_(
    dtbs: Annotated[
        str | None, typer.Option(help="List the device tree boards of this kernel flavour.")
    ] = None,
) -> None:
    corpus = explorer.corpus.load()
    if dtbs is None:
        _print_summary(corpus)
        return
    for board in corpus.boards(dtbs):
        print(board)


def _print_summary(corpus: Corpus) -> None:
    """Names and versions only; full paths are one `explorer corpus path` away."""
    kernels = Table("flavour", "arch", "package", "version", "DTBs", title=f"kernels in {corpus.root}")
    for flavour in corpus.flavours:
        record = corpus.manifest.kernels[flavour]
        boards = str(len(corpus.boards(flavour)))
        kernels.add_row(flavour, record.arch, record.package, record.version, boards)
    initramfs = Table("arch", "initramfs (/init prints the marker, then starts a shell)")
    for arch in corpus.arches:
        initramfs.add_row(arch, corpus.initramfs(arch).name)
    Console().print(kernels, initramfs)
