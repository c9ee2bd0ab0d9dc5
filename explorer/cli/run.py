"""`explorer run`: the found machine for people, its console on this terminal, no budget and no deadline.

Parsing and printing only; the run is `explorer.runner.interactive.run_interactive`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from explorer.cli.options import QemuOption
from explorer.errors import BadInput
from explorer.runner.build import PLUGIN, find_runner
from explorer.runner.config import read_config
from explorer.runner.interactive import QUIT_KEYS, run_interactive
from explorer.search.state import SHORT_ID

EXAMPLE = f"""
Examples:

\b
  explorer run work/armmp                 # the search's best state
  explorer run work/armmp 51c1c8f37265    # one state of it
  explorer run armmp-vexpress-best.json   # a config `explorer export` wrote
  explorer run work/armmp --gdb 1234      # then in gdb-multiarch: file armmp.elf; target remote :1234

The machine is the one the search ran (devices, value rules, NOPs, boot files, seed, guest time
by instruction count), without its instruction budget or deadline, and the guest's console is
this terminal, input included. {QUIT_KEYS} quits, Ctrl-A c switches to QEMU's monitor and back,
Ctrl-C goes to the guest. `explorer inspect FIRMWARE --elf-out FILE` writes the ELF gdb loads.
"""


def register(app: typer.Typer) -> None:
    app.command(help="Run a found machine with its console on this terminal, until you quit." + EXAMPLE)(run)


def run(
    source: Annotated[
        Path, typer.Argument(help="Work directory of a search, or a MachineConfig JSON (`explorer export`).")
    ],
    state: Annotated[
        str | None, typer.Argument(help="State id or prefix, in a work directory [default: the best].")
    ] = None,
    gdb: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Serve QEMU's gdbstub on localhost:PORT.", metavar="PORT"),
    ] = None,
    qemu: QemuOption = None,
) -> None:
    config, name = _machine(source, state)
    qemu_dir = find_runner(qemu)
    plugin = qemu_dir / PLUGIN
    print(f"explorer: running {name}; the console is this terminal: {QUIT_KEYS} quits", file=sys.stderr)
    if gdb is not None:
        print(f"explorer: gdb: target remote localhost:{gdb}", file=sys.stderr)
    ended = run_interactive(config, qemu_dir, plugin if plugin.is_file() else None, gdb)
    print(f"\nexplorer: the machine stopped (QEMU exit status {ended.status})", file=sys.stderr)
    if ended.status != 0:
        raise typer.Exit(1)


def _machine(source: Path, state: str | None) -> tuple[object, str]:
    """The config to run and how to name it: a search's state, or a config file."""
    if source.is_dir():
        # Imported here: the search's modules (LMDB, the engine) are not needed for a config file.
        from explorer.cli.search import stored_config

        config, identity = stored_config(source, state)
        return config, f"state {identity[:SHORT_ID]} of {source}"
    if state is not None:
        raise BadInput(f"{source} is a config file, one machine: give STATE only with a work directory")
    return read_config(source), str(source)
