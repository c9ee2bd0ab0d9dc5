"""`explorer runner build | path | check`: this explorer's runner build (our QEMU and the rehost plugin).

Parsing and printing only; which build, where it is and what it must hold is
explorer.runner.build, the build itself native/build.py (through explorer.runner.build.build).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer

from explorer.cli.options import QemuOption
from explorer.runner import build as runner_build

app = typer.Typer(
    help="The runner build: our pinned QEMU with the rehosting machines and the rehost plugin, built "
    "once per version of explorer's native sources into the cache, where boot, search, resume, "
    "replay and bench find it (--qemu or EXPLORER_QEMU name another)."
    "\n\nExample:\n\n  explorer runner build && explorer runner check",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.command(
    help="Build this explorer's runner, with progress on stderr (minutes the first time; seconds when "
    "it is already built), and print its directory last."
    "\n\nExample:\n\n  explorer runner build"
)
def build(
    jobs: Annotated[int, typer.Option(help="Parallel compile jobs [default: the number of cores].")] = 0,
    tarball: Annotated[
        Path | None,
        typer.Option(help="Build this local QEMU source tarball instead of fetching Debian's pinned one."),
    ] = None,
) -> None:
    started = time.monotonic()
    directory = runner_build.build(tarball, jobs or os.cpu_count() or 1)
    typer.echo(f"runner build ready ({time.monotonic() - started:.0f} s)", err=True)
    typer.echo(str(directory))


@app.command(
    help="Print the directory of the runner build that boot, search and the rest would use; exit 2 if "
    "there is none yet."
    '\n\nExample:\n\n  ls "$(explorer runner path)"/bin'
)
def path(qemu: QemuOption = None) -> None:
    typer.echo(str(runner_build.find_runner(qemu)))


@app.command(
    help="Check the runner build that boot, search and the rest would use: its binaries, its plugin, "
    "and that its identity and manifest are those of this explorer's native sources."
    "\n\nExample:\n\n  explorer runner check"
)
def check(qemu: QemuOption = None) -> None:
    directory = runner_build.find_runner(qemu)
    runner_build.check_build(directory)
    targets = ", ".join(runner_build.TARGETS)
    typer.echo(
        f"{directory}: this explorer's runner build {runner_build.build_identity(directory)}, "
        f"whole (QEMU for {targets}, the rehost plugin, the manifest)"
    )
