"""`explorer boot CONFIG`: run one machine configuration by hand and print how far it got.

Parsing and printing only; the run itself is `explorer.runner.launch.run`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from explorer.runner.config import read_config
from explorer.runner.launch import Plugin, RunnerLimits, run
from explorer.runner.result import serialize, summary

EXAMPLE = """
Example:

  explorer boot vexpress-a9.json --qemu "$(python native/build.py | tail -1)" --console

CONFIG is a MachineConfig as JSON (proto/machine_config.proto; integers may be written "0x...").
The QEMU build directory is the last line `python native/build.py` prints.
"""


def register(app: typer.Typer) -> None:
    app.command(help="Boot one machine configuration in one runner and summarise the run." + EXAMPLE)(boot)


def boot(
    config: Annotated[Path, typer.Argument(help="MachineConfig JSON file.")],
    qemu: Annotated[
        Path,
        typer.Option(envvar="EXPLORER_QEMU", help="QEMU build directory (printed by native/build.py)."),
    ],
    console: Annotated[
        bool, typer.Option(help="Connect the guest console to this terminal instead of capturing it.")
    ] = False,
    deadline: Annotated[float, typer.Option(help="Wall-clock seconds before the run is killed.")] = 600.0,
    plugin: Annotated[Path | None, typer.Option(help="TCG plugin to load (e.g. lib/librehost.so).")] = None,
    plugin_arg: Annotated[
        list[str] | None, typer.Option(help="Plugin argument KEY=VALUE; repeatable.")
    ] = None,
    result_out: Annotated[
        Path | None, typer.Option(help="Write the serialized RunResult (rehost.proto) here.")
    ] = None,
) -> None:
    machine = read_config(config)
    loaded = Plugin(plugin, tuple(plugin_arg or ())) if plugin is not None else None
    limits = RunnerLimits(deadline_seconds=deadline)
    finished = run(machine, qemu, plugin=loaded, limits=limits, console=console)
    if result_out is not None:
        result_out.write_bytes(serialize(finished.result))
    for line in summary(finished.result):
        print(line)
    print(f"wall time: {finished.wall_seconds:.2f} s")
