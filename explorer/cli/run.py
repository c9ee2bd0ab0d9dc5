"""`explorer run`: the found machine for people, its console on this terminal, no budget and no deadline.

Parsing and printing only; the run is `explorer.runner.interactive.run_interactive`.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from explorer.cli.options import QemuOption
from explorer.errors import BadInput
from explorer.firmware.ingest import ingest
from explorer.runner.build import PLUGIN, find_runner
from explorer.runner.config import read_config
from explorer.runner.interactive import QUIT_KEYS, Forward, Network, run_interactive
from explorer.runner.machine_config_pb2 import MachineConfig
from explorer.search.device_models import NIC_TYPES, PlacedNic, place_nic
from explorer.search.state import SHORT_ID

EXAMPLE = f"""
Examples:

\b
  explorer run work/armmp                 # the search's best state
  explorer run work/armmp 51c1c8f37265    # one state of it
  explorer run armmp-vexpress-best.json   # a config `explorer export` wrote
  explorer run work/armmp --gdb 1234      # then in gdb-multiarch: file armmp.elf; target remote :1234
  explorer run work/armmp --net user --forward 8080:80   # localhost:8080 reaches the guest's port 80

The machine is the one the search ran (devices, value rules, NOPs, boot files, seed, guest time
by instruction count), without its instruction budget or deadline, and the guest's console is
this terminal, input included. {QUIT_KEYS} quits, Ctrl-A c switches to QEMU's monitor and back,
Ctrl-C goes to the guest. `explorer inspect FIRMWARE --elf-out FILE` writes the ELF gdb loads.
With --net user, the Ethernet controller the device tree names gets QEMU's model on its
user-mode network (slirp, no root): DHCP gives the guest 10.0.2.15, and the host's loopback is
10.0.2.2 to it; nothing reaches the guest but the forwards.
"""


class NetKind(StrEnum):
    """The networks `explorer run` can give the guest."""

    user = "user"


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
    net: Annotated[
        NetKind | None,
        typer.Option(help="Connect the device tree's Ethernet controller to QEMU's user-mode network."),
    ] = None,
    forward: Annotated[
        list[str] | None,
        typer.Option(
            help="Forward the host's TCP port to the guest's, with --net user (repeatable; "
            "ADDRESS defaults to 127.0.0.1).",
            metavar="[ADDRESS:]HOSTPORT:GUESTPORT",
        ),
    ] = None,
    qemu: QemuOption = None,
) -> None:
    forwards = tuple(Forward.parse(text) for text in forward or ())
    if forwards and net is None:
        raise BadInput("--forward needs a network: add --net user")
    config, name = _machine(source, state)
    network = Network(forwards) if net is not None else None
    nic = _connect_nic(config) if network is not None else None
    qemu_dir = find_runner(qemu)
    plugin = qemu_dir / PLUGIN
    if nic is not None:
        _print_network(nic, forwards)
    print(f"explorer: running {name}; the console is this terminal: {QUIT_KEYS} quits", file=sys.stderr)
    if gdb is not None:
        print(f"explorer: gdb: target remote localhost:{gdb}", file=sys.stderr)
    ended = run_interactive(config, qemu_dir, plugin if plugin.is_file() else None, gdb, network)
    print(f"\nexplorer: the machine stopped (QEMU exit status {ended.status})", file=sys.stderr)
    if ended.status != 0:
        raise typer.Exit(1)


def _connect_nic(config: MachineConfig) -> PlacedNic:
    """Place the Ethernet controller of the config's device tree, or say why there is none."""
    kernel, dtb = Path(config.boot.kernel), Path(config.boot.dtb) if config.boot.dtb else None
    tree = ingest(kernel, dtb=dtb).device_tree if config.target == "arm" else None
    nic = place_nic(config, tree) if tree is not None else None
    if nic is None:
        raise BadInput(
            f"--net: the machine's device tree names no Ethernet controller QEMU models "
            f"({', '.join(sorted(NIC_TYPES))}), or the machine already maps its registers"
        )
    return nic


def _print_network(nic: PlacedNic, forwards: tuple[Forward, ...]) -> None:
    irqs = f"irq {', '.join(map(str, nic.irqs))}" if nic.irqs else "its interrupt unwired"
    print(f"explorer: net: {nic.type} for {nic.node.path} ({irqs}), user-mode network", file=sys.stderr)
    for forward in forwards:
        print(
            f"explorer: net: {forward.address}:{forward.host_port} -> guest port {forward.guest_port}",
            file=sys.stderr,
        )


def _machine(source: Path, state: str | None) -> tuple[MachineConfig, str]:
    """The config to run and how to name it: a search's state, or a config file."""
    if source.is_dir():
        # Imported here: the search's modules (LMDB, the engine) are not needed for a config file.
        from explorer.cli.search import stored_config

        config, identity = stored_config(source, state)
        return config, f"state {identity[:SHORT_ID]} of {source}"
    if state is not None:
        raise BadInput(f"{source} is a config file, one machine: give STATE only with a work directory")
    return read_config(source), str(source)
