"""`explorer boot CONFIG`: run one machine configuration by hand and say, by name, how far it got.

Parsing and printing only; the run is `explorer.runner.launch.run`, the naming
`explorer.runner.analysis`, the standard hooks `explorer.runner.kernel_hooks`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from explorer.cli.options import QemuOption
from explorer.errors import BadInput
from explorer.firmware.ingest import ingest
from explorer.firmware.model import Firmware, SymbolTable
from explorer.runner.analysis import analyse
from explorer.runner.build import PLUGIN, find_runner
from explorer.runner.command import Plugin
from explorer.runner.config import read_config
from explorer.runner.containment import RunnerLimits
from explorer.runner.kernel_hooks import STANDARD_OBSERVATION, watching_kernel
from explorer.runner.launch import run
from explorer.runner.result import serialize
from explorer.runner.summary import describe, to_dict

EXAMPLE = """
Example:

  explorer boot vexpress-a9.json --console

CONFIG is a MachineConfig as JSON (proto/machine_config.proto; integers may be written "0x...").
It runs on this explorer's runner build (`explorer runner build` makes it) unless --qemu names
another build directory. Its rehost plugin is loaded unless --plugin names another, with the
call stack, coverage and hot loops on. The kernel's recovered symbols name what the run reached,
and give the standard hooks (boot milestones, initcalls, panic, halts, user space) the config
does not list itself.
"""

_NO_SYMBOLS = SymbolTable((), "none", 0, "the kernel could not be ingested")


def register(app: typer.Typer) -> None:
    app.command(help="Boot one machine configuration in one runner and summarise the run." + EXAMPLE)(boot)


def boot(
    config: Annotated[Path, typer.Argument(help="MachineConfig JSON file.")],
    qemu: QemuOption = None,
    console: Annotated[
        bool, typer.Option(help="Connect the guest console to this terminal instead of capturing it.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the named result as JSON.")] = False,
    deadline: Annotated[float, typer.Option(help="Wall-clock seconds before the run is killed.")] = 600.0,
    plugin: Annotated[Path | None, typer.Option(help=f"TCG plugin to load [default: QEMU/{PLUGIN}].")] = None,
    plugin_arg: Annotated[
        list[str] | None,
        typer.Option(
            help="Plugin argument KEY=VALUE besides the config's; repeatable; replaces the default."
        ),
    ] = None,
    kernel_hooks: Annotated[
        bool, typer.Option(help="Add the standard hooks the kernel's symbols give.")
    ] = True,
    result_out: Annotated[
        Path | None, typer.Option(help="Write the serialized RunResult (rehost.proto) here.")
    ] = None,
) -> None:
    machine = read_config(config)
    qemu_dir = find_runner(qemu)
    plugin_path = plugin or _build_plugin(qemu_dir)
    firmware = _firmware(Path(machine.boot.kernel))
    if firmware is not None and kernel_hooks and plugin_path is not None:
        machine = watching_kernel(machine, firmware)
    observation = STANDARD_OBSERVATION if plugin_arg is None else tuple(plugin_arg)
    loaded = Plugin(plugin_path, observation) if plugin_path is not None else None
    finished = run(
        machine, qemu_dir, plugin=loaded, limits=RunnerLimits(deadline_seconds=deadline), console=console
    )
    if result_out is not None:
        result_out.write_bytes(serialize(finished.result))
    analysis = analyse(finished.result, firmware.symbols if firmware is not None else _NO_SYMBOLS)
    if as_json:
        print(json.dumps({**to_dict(analysis), "wall_seconds": round(finished.wall_seconds, 3)}, indent=1))
        return
    for line in describe(analysis):
        print(line)
    print(f"wall time: {finished.wall_seconds:.2f} s")


def _build_plugin(qemu: Path) -> Path | None:
    """The rehost plugin of the runner build, when it has one."""
    candidate = qemu / PLUGIN
    return candidate if candidate.is_file() else None


def _firmware(kernel: Path) -> Firmware | None:
    """The ingested kernel, or None: an image ingestion cannot read still runs, with bare addresses."""
    try:
        return ingest(kernel)
    except BadInput as error:
        print(f"explorer: note: addresses stay unnamed: {error}", file=sys.stderr)
        return None
