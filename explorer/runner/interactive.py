"""The found machine for people: one QEMU in the foreground, its console on the terminal, no end but theirs.

A search's run is a measurement: an instruction budget, a wall-clock deadline, the end at user
space, the plugin's events. Here the same machine runs for a person: the config's devices, value
rules, RAM, boot files, seed, CPU and deterministic time exactly as the search ran them, and its
NOPs written by the rehost plugin at the same points (the first kernel block, and again where
the kernel has patched its own code), but nothing that ends or watches the run: no budget, no
stuck-poll or idle end (they need the events pipe, which this run has none of), no milestone,
initcall, panic or halt hooks (a panic shows on the console as it would on the board), and user
space is passed (`past_user=on`) instead of ending the run. A state without NOPs runs without
the plugin, which never changes the guest otherwise. So the console prints, up to the marker,
what the search's run of the same config printed, byte for byte (tests/integration/
test_run_console.py). The guest's clock is counted in instructions as in the search: while the
guest idles it jumps to the next timer, so it runs ahead of the wall clock.

The guest's first serial port and QEMU's monitor share the terminal through QEMU's multiplexer:
Ctrl-A x quits, Ctrl-A c switches to the monitor and back, Ctrl-A h lists the keys; Ctrl-C goes
to the guest. With a gdb port, QEMU's gdbstub listens on localhost only. With a network, the
config's NIC (explorer.search.device_models.place_nic) takes QEMU's user-mode network (slirp: the
guest is 10.0.2.15 by DHCP, the host is 10.0.2.2 to it, DNS 10.0.2.3) with a TCP forward from
the host for each `Forward`. A driver built into the kernel then finds the NIC as it boots, and
what the network brings, and when, is the host's: from there the run is no longer the search's
bit for bit. The run lasts until the
person quits or the guest powers off or resets; QEMU dies with the driver (never orphaned).
It never reads what the run does: there is no RunResult.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from explorer.errors import BadInput, RunnerError
from explorer.runner.command import Plugin, command_line, config_plugin_arguments, qemu_binary
from explorer.runner.config import validate, write_config
from explorer.runner.containment import die_with_parent, terminal_restored
from explorer.runner.machine_config_pb2 import HookKind, MachineConfig

# QEMU's multiplexer escape (its -echr default): Ctrl-A, then x to quit, c for the monitor.
ESCAPE_KEY = "Ctrl-A"
QUIT_KEYS = f"{ESCAPE_KEY} x"
# The console and the monitor on one stdio backend; signal=off: Ctrl-C is the guest's.
_CONSOLE_CHARDEV = "console"
_TERMINAL = (
    "-chardev",
    f"stdio,id={_CONSOLE_CHARDEV},mux=on,signal=off",
    "-mon",
    f"chardev={_CONSOLE_CHARDEV},mode=readline",
)
# The rehost plugin goes on past the first user-mode instruction instead of ending the run there.
PAST_USER_SPACE = "past_user=on"


# `[ADDRESS:]HOSTPORT:GUESTPORT`: an IPv4 address, then two ports.
_FORWARD = re.compile(r"^(?:(?P<address>[0-9.]+):)?(?P<host>\d+):(?P<guest>\d+)$")
# A forward without an address listens on the host's loopback only, as the gdbstub does.
FORWARD_DEFAULT_ADDRESS = "127.0.0.1"


@dataclass(frozen=True)
class Forward:
    """A TCP port of the host forwarded to one of the guest's (slirp's hostfwd)."""

    address: str
    host_port: int
    guest_port: int

    @classmethod
    def parse(cls, text: str) -> Forward:
        """`[ADDRESS:]HOSTPORT:GUESTPORT`, e.g. `8080:80` or `0.0.0.0:2222:22`."""
        match = _FORWARD.match(text)
        if match is None:
            raise BadInput(f"--forward {text}: give [ADDRESS:]HOSTPORT:GUESTPORT, e.g. 127.0.0.1:8080:80")
        address = match["address"] or FORWARD_DEFAULT_ADDRESS
        try:
            ipaddress.IPv4Address(address)
        except ValueError:
            raise BadInput(f"--forward {text}: {address} is not an IPv4 address") from None
        ports = int(match["host"]), int(match["guest"])
        if not all(1 <= port <= 65535 for port in ports):
            raise BadInput(f"--forward {text}: ports go from 1 to 65535")
        return cls(address, *ports)

    def hostfwd(self) -> str:
        return f"hostfwd=tcp:{self.address}:{self.host_port}-:{self.guest_port}"


@dataclass(frozen=True)
class Network:
    """The guest's network in a person's run: QEMU's user-mode network with these forwards."""

    forwards: tuple[Forward, ...] = ()

    def arguments(self) -> list[str]:
        # No model named: the -nic goes to the first NIC the machine creates (its only one).
        return ["-nic", ",".join(["user", *(forward.hostfwd() for forward in self.forwards)])]


@dataclass(frozen=True)
class Ended:
    """How the person's run ended: QEMU's exit status (0: quit, powered off or reset)."""

    status: int


def for_people(config: MachineConfig) -> MachineConfig:
    """A copy of `config` that changes the guest exactly as the search's run did, and ends only by the person.

    Kept: everything that is the machine (devices, rules, RAM, boot, seed, CPU), the NOPs, the
    hooks that rewrite them, and user_space_below (where the plugin writes NOPs from). Dropped:
    the budget, the stuck-poll and idle ends, the events, and the observing hooks.
    """
    machine = MachineConfig()
    machine.CopyFrom(config)
    machine.instruction_budget = 0
    machine.stuck_reads = 0
    machine.idle_deadline_ns = 0
    machine.mmio_event_limit = 0
    machine.events_fd = 0
    kept = [hook for hook in config.hooks if hook.kind == HookKind.HOOK_NOPS_AGAIN and config.nops]
    del machine.hooks[:]
    machine.hooks.extend(kept)
    if not config.nops:
        machine.user_space_below = 0
    return machine


def interactive_command(
    qemu: Path,
    config: MachineConfig,
    config_path: Path,
    plugin: Path | None,
    gdb_port: int | None,
    network: Network | None = None,
) -> list[str]:
    """QEMU's arguments for a `for_people` config on the terminal (the plugin only for NOPs to write)."""
    arguments = config_plugin_arguments(config)
    loaded = Plugin(plugin, (PAST_USER_SPACE,)) if plugin is not None and arguments else None
    if arguments and loaded is None:
        raise RunnerError("the config has NOPs, but this runner build has no rehost plugin to write them")
    command = command_line(
        qemu, config, config_path, plugin=loaded, events_fd=None, console=f"chardev:{_CONSOLE_CHARDEV}"
    )
    command += _TERMINAL
    if gdb_port is not None:
        command += ["-gdb", f"tcp:127.0.0.1:{gdb_port}"]
    if network is not None:
        command += network.arguments()
    return command


def run_interactive(
    config: MachineConfig,
    qemu_dir: Path,
    plugin: Path | None,
    gdb_port: int | None = None,
    network: Network | None = None,
) -> Ended:
    """Run `for_people(config)` with the console on this process's terminal until QEMU exits."""
    machine = for_people(config)
    validate(machine)
    qemu = qemu_binary(qemu_dir, machine.target)
    with tempfile.TemporaryDirectory(prefix="explorer-run-") as scratch:
        config_path = Path(scratch) / "machine.json"
        write_config(machine, config_path)
        command = interactive_command(qemu, machine, config_path, plugin, gdb_port, network)
        with terminal_restored(True):
            try:
                # In our session and process group: QEMU reads the terminal (a process of another
                # group would be stopped by SIGTTIN), and dies with this one.
                process = subprocess.Popen(command, preexec_fn=die_with_parent)
            except OSError as error:
                raise RunnerError(f"cannot start {qemu}: {error.strerror}") from None
            try:
                status = process.wait()
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
    return Ended(status)
