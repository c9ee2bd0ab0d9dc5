"""The QEMU command line of one run: the machine, deterministic time, the console's port, the plugin.

The machine is our `rehosting` machine built from the whole config, or one of QEMU's own boards
(`StockBoard`: the ground truth a rehosted boot is compared with), which takes only the config's
CPU, RAM size and boot files; both are watched by the same plugin, whose arguments say what the
config asks of it (`config_plugin_arguments`). Nothing here starts, limits or watches a process
(explorer.runner.launch does).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from explorer.errors import RunnerError
from explorer.runner.build import binary
from explorer.runner.machine_config_pb2 import HookKind, MachineConfig

# Deterministic time: the guest clock advances with instructions (2**4 ns each), never with
# the host's; the RTC starts at a fixed date and runs on that same clock.
# Guest time per instruction under DETERMINISTIC_TIME: 2**shift ns.
ICOUNT_SHIFT = 4
GUEST_NS_PER_INSTRUCTION = 1 << ICOUNT_SHIFT
DETERMINISTIC_TIME = (
    "-icount",
    f"shift={ICOUNT_SHIFT},align=off,sleep=off",
    "-rtc",
    "base=2020-01-01T00:00:00,clock=vm",
)


@dataclass(frozen=True)
class Plugin:
    """The rehost plugin (or any TCG plugin speaking proto/rehost.proto) and its extra arguments.

    The driver puts first what the config says (`config_plugin_arguments`) and appends
    `events_fd=N`: the inherited descriptor to write Event frames to.
    """

    path: Path
    arguments: tuple[str, ...] = ()


@dataclass(frozen=True)
class StockBoard:
    """One of QEMU's own machines (`-M NAME`), booting the config's kernel, DTB, initrd and command line.

    Of the config it takes the target, the CPU, the RAM's total size (the board places its RAM
    itself) and boot.{kernel,dtb,initrd,cmdline}; everything else a stock machine has is its own,
    so the rest of the machine part of the config is not used. Hooks, NOPs, the budget and the
    user-space bound still go to the plugin.
    """

    machine: str
    # Which QEMU serial port (0: the first) is wired to the UART the kernel's console is on: a
    # board's UARTs take QEMU's serial ports in order, and the console is not always on the first.
    console_port: int = 0


def qemu_binary(qemu_dir: Path, target: str) -> Path:
    """The qemu-system-TARGET of a runner build directory (explorer.runner.build)."""
    path = qemu_dir / binary(target)
    if not path.is_file():
        raise RunnerError(f"no QEMU for {target} at {path}: `explorer runner check` says what is wrong")
    return path


def stock_machines(qemu_dir: Path, target: str) -> frozenset[str]:
    """The names of the machines qemu-system-TARGET of this build offers (`-machine help`)."""
    qemu = qemu_binary(qemu_dir, target)
    listing = subprocess.run([str(qemu), "-machine", "help"], capture_output=True, text=True, check=False)
    if listing.returncode != 0:
        raise RunnerError(f"{qemu} -machine help failed: {last_lines(listing.stderr, 1)}")
    # A heading ("Supported machines are:"), then one "NAME  DESCRIPTION" line per machine.
    return frozenset(line.split()[0] for line in listing.stdout.splitlines()[1:] if line.strip())


# The plugin argument key of each hook kind. The plugin ends a power-off like a halt: it has one
# kind of halt hook, whose name says which function it was.
_HOOK_ARGUMENTS = {
    HookKind.HOOK_MILESTONE: "hook={name}@{address:#x}",
    HookKind.HOOK_INITCALL: "initcalls={address:#x}",
    HookKind.HOOK_PANIC: "panic={address:#x}",
    HookKind.HOOK_HALT: "halt={name}@{address:#x}",
    HookKind.HOOK_POWEROFF: "halt={name}@{address:#x}",
    HookKind.HOOK_LOG: "log={address:#x}",
    HookKind.HOOK_NOPS_AGAIN: "nops_again={address:#x}",
}


def config_plugin_arguments(config: MachineConfig) -> tuple[str, ...]:
    """The rehost plugin's arguments for what `config` asks of it: hooks, NOPs, budget, user space."""
    arguments = [
        _HOOK_ARGUMENTS[hook.kind].format(name=hook.name, address=hook.address) for hook in config.hooks
    ]
    arguments += [f"nop={nop.address:#x}:{nop.return_value:#x}" for nop in config.nops]
    if config.instruction_budget:
        arguments.append(f"budget={config.instruction_budget}")
    if config.user_space_below:
        arguments.append(f"user_below={config.user_space_below:#x}")
    if config.past_user_space:
        arguments.append("past_user=on")
    return tuple(arguments)


def command_line(
    qemu: Path,
    config: MachineConfig,
    config_path: Path,
    *,
    plugin: Plugin | None,
    events_fd: int | None,
    stock: StockBoard | None = None,
    console: str = "stdio",
) -> list[str]:
    """QEMU's arguments for one run; the console's port is stdio (a pipe to the driver, or the terminal).

    With `stock`, that board instead of the rehosting machine (`config_path` is then not used).
    `console` is the console port's -serial backend (explorer.runner.interactive: a multiplexer).
    """
    machine = ["-M", f"rehosting,config={config_path}"] if stock is None else _stock_arguments(config, stock)
    console_port = 0 if stock is None else stock.console_port
    command = [
        str(qemu),
        *machine,
        "-nodefaults",
        "-display",
        "none",
        *(["-serial", "null"] * console_port),
        "-serial",
        console,
        # A guest reset ends the run instead of booting again.
        "-no-reboot",
        *DETERMINISTIC_TIME,
    ]
    if plugin is not None:
        arguments = [str(plugin.path), *config_plugin_arguments(config), *plugin.arguments]
        if events_fd is not None:
            arguments.append(f"events_fd={events_fd}")
        command += ["-plugin", ",".join(arguments)]
    return command


def _stock_arguments(config: MachineConfig, stock: StockBoard) -> list[str]:
    ram_mib = sum(region.size for region in config.ram) >> 20
    arguments = ["-M", stock.machine, "-cpu", config.cpu, "-m", f"{ram_mib}M"]
    # A board's sound device (vexpress's PL041) needs an audio backend: the silent one.
    arguments += ["-audio", "none", "-kernel", config.boot.kernel]
    for option, path in (("-dtb", config.boot.dtb), ("-initrd", config.boot.initrd)):
        if path:
            arguments += [option, path]
    if config.boot.cmdline:
        arguments += ["-append", config.boot.cmdline]
    return arguments


def last_lines(text: str, count: int) -> str:
    """The last `count` non-blank lines of `text`, as one line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines[-count:])
