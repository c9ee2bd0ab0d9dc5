"""One runner: one QEMU process that boots one MachineConfig, watched until it ends or its deadline.

The machine is our `rehosting` machine built from the whole config, or one of QEMU's own boards
(`StockBoard`: the ground truth a rehosted boot is compared with), which takes only the config's
CPU, RAM size and boot files; both are watched by the same plugin in the same way.
The driver builds the command line (deterministic time: icount and a VM-clock RTC), starts
QEMU in its own session under resource limits, hands it the write end of a pipe for events
(never a network port), and reads the console, stderr and events as they come, each bounded,
so neither a chatty kernel nor a broken runner can grow the master's memory. Whatever happens
(the run ends, the deadline passes, the stream turns to garbage, the master is interrupted or
killed), the QEMU process and its group are killed and reaped: no orphans. It must never
interpret what the run saw beyond how it ended: that is the RunResult's reader's job.

A run may also stop at an instruction count and save itself as a snapshot, or continue from
one (explorer/runner/snapshot.py holds what a snapshot is); the continued run's RunResult is
the one an uninterrupted run of its config would give, byte for byte, as long as its config
differs from the snapshotting one only in what the guest first touches after the point.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import resource
import selectors
import signal
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from explorer.errors import RunnerError, RunnerProtocolError
from explorer.runner.build import binary, build_identity
from explorer.runner.config import validate, write_config
from explorer.runner.machine_config_pb2 import HookKind, MachineConfig
from explorer.runner.protocol import EventDecoder, encode_frame
from explorer.runner.rehost_pb2 import Event, Exit, ExitReason, RunResult
from explorer.runner.result import BoundedBytes, ResultBounds, ResultBuilder
from explorer.runner.snapshot import (
    CONSOLE_FILE,
    EVENTS_FILE,
    MANIFEST_FILE,
    PLUGIN_STATE_FILE,
    VM_FILE,
    Manifest,
    Qmp,
    plugin_state_icount,
    read_manifest,
    resumed_capture,
    write_manifest,
)

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
# TCG's code buffer and QEMU's own mappings on top of guest RAM (measured: about 1.3 GiB).
QEMU_ADDRESS_SPACE_OVERHEAD = 2 << 30
_READ_CHUNK = 1 << 16
# How long a runner past its deadline may take to quit after SIGTERM before it is killed.
TERMINATE_GRACE_SECONDS = 3.0
_PR_SET_PDEATHSIG = 1
# A snapshotting run writes the whole VM to one file: room for its RAM plus the devices' state.
SNAPSHOT_FILE_OVERHEAD_BYTES = 64 << 20
# Resolved once, at import: looking a symbol up between fork and exec could deadlock.
_prctl = ctypes.CDLL(None, use_errno=True).prctl


@dataclass(frozen=True)
class RunnerLimits:
    """What one runner may use. The wall-clock deadline is enforced by the driver, the rest by the kernel."""

    deadline_seconds: float = 600.0
    # Default: guest RAM + QEMU_ADDRESS_SPACE_OVERHEAD.
    address_space_bytes: int | None = None
    # Default: the deadline plus a minute (a second guard should the driver die unnoticed).
    cpu_seconds: int | None = None
    open_files: int = 256
    file_size_bytes: int = 64 << 20
    console_bytes: int = 1 << 20
    stderr_bytes: int = 1 << 16
    result_bounds: ResultBounds = field(default_factory=ResultBounds)


@dataclass(frozen=True)
class Plugin:
    """The rehost plugin (or any TCG plugin speaking proto/rehost.proto) and its extra arguments.

    The driver puts first what the config says (`config_plugin_arguments`) and appends
    `events_fd=N`: the inherited descriptor to write Event frames to.
    """

    path: Path
    arguments: tuple[str, ...] = ()


@dataclass(frozen=True)
class Run:
    """A finished run: its deterministic result, and what was measured on this host."""

    result: RunResult
    wall_seconds: float
    # From process start to the first console byte (None: the guest printed nothing).
    first_console_seconds: float | None
    stderr: str


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
        raise RunnerError(f"{qemu} -machine help failed: {_last_lines(listing.stderr, 1)}")
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
) -> list[str]:
    """QEMU's arguments for one run; the console's port is stdio (a pipe to the driver, or the terminal).

    With `stock`, that board instead of the rehosting machine (`config_path` is then not used).
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
        "stdio",
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


@dataclass(frozen=True)
class _Snapshotting:
    """Where and at which instruction count a run stops to save itself."""

    icount: int
    directory: Path
    build: str


@dataclass(frozen=True)
class _Resuming:
    """The snapshot a run continues from."""

    directory: Path
    manifest: Manifest


def run(
    config: MachineConfig,
    qemu_dir: Path,
    *,
    plugin: Plugin | None = None,
    limits: RunnerLimits | None = None,
    console: bool = False,
    stock: StockBoard | None = None,
    snapshot_at: int | None = None,
    snapshot_dir: Path | None = None,
    resume_from: Path | None = None,
    resume_at: int | None = None,
) -> Run:
    """Boot `config` in one QEMU until it ends or the deadline passes; always returns with QEMU reaped.

    Raises RunnerError when QEMU cannot start (no binary, a config the machine refuses, a board
    this build lacks); a run that starts and then fails is a partial RunResult instead. With
    `console`, the guest's serial port is the terminal (and the result's console is empty). With
    `stock`, the config boots on that QEMU board instead of the rehosting machine.

    With `snapshot_at` (and `snapshot_dir`), the run stops at the end of the first block entered
    once that many instructions have executed, saves itself into `snapshot_dir` and returns a
    partial result of what it saw so far, its exit's icount being the point; a run that ends
    before the point returns as usual and saves nothing (`snapshot_dir` then holds no
    manifest). With `resume_from`, the run continues from that snapshot (made by this build;
    at `resume_at`, when given) and its result starts with the snapshotting run's events.
    """
    validate(config)
    if plugin is None and config_plugin_arguments(config):
        raise RunnerError(
            "the config has hooks, NOPs, a budget or a user-space bound, but no plugin to apply them"
        )
    snapshotting = _snapshotting(qemu_dir, plugin, console, stock, snapshot_at, snapshot_dir)
    resuming = None
    if resume_from is not None:
        if plugin is None or stock is not None:
            raise RunnerError("resuming from a snapshot needs the rehost plugin and the rehosting machine")
        resuming = _Resuming(resume_from, read_manifest(resume_from, qemu_dir, resume_at))
    limits = limits or RunnerLimits()
    if snapshotting is not None:
        ram = sum(region.size for region in config.ram)
        room = ram + SNAPSHOT_FILE_OVERHEAD_BYTES
        limits = dataclasses.replace(limits, file_size_bytes=max(limits.file_size_bytes, room))
    with tempfile.TemporaryDirectory(prefix="explorer-run-") as scratch:
        qemu = qemu_binary(qemu_dir, config.target)
        runner = _Runner(config, qemu, Path(scratch), plugin, limits, console, stock, snapshotting, resuming)
        return runner.run()


def _snapshotting(
    qemu_dir: Path,
    plugin: Plugin | None,
    console: bool,
    stock: StockBoard | None,
    snapshot_at: int | None,
    snapshot_dir: Path | None,
) -> _Snapshotting | None:
    if snapshot_at is None and snapshot_dir is None:
        return None
    if snapshot_at is None or snapshot_dir is None or snapshot_at <= 0:
        raise RunnerError("a snapshot needs both a positive snapshot_at and a snapshot_dir")
    if plugin is None or stock is not None or console:
        raise RunnerError("a snapshot needs the rehost plugin, the rehosting machine and no terminal console")
    return _Snapshotting(snapshot_at, snapshot_dir, build_identity(qemu_dir))


class _Runner:
    """The state of one run while it is watched; used once."""

    def __init__(
        self,
        config: MachineConfig,
        qemu: Path,
        scratch: Path,
        plugin: Plugin | None,
        limits: RunnerLimits,
        console: bool,
        stock: StockBoard | None,
        snapshotting: _Snapshotting | None,
        resuming: _Resuming | None,
    ) -> None:
        self._config = config
        self._qemu = qemu
        self._config_path = scratch / "machine.json"
        self._qmp_path = scratch / "qmp.sock"
        self._plugin = plugin
        self._limits = limits
        self._console = console
        self._stock = stock
        self._snapshotting = snapshotting
        self._resuming = resuming
        self._builder = ResultBuilder(limits.result_bounds)
        self._decoder = EventDecoder(self._receive)
        self._console_capture = BoundedBytes(limits.console_bytes)
        self._stderr_capture = BoundedBytes(limits.stderr_bytes)
        self._protocol_error: RunnerProtocolError | None = None
        self._timed_out = False
        self._first_console: float | None = None
        # Snapshots: every frame up to the point (the snapshot's events), the point once paused.
        self._frames = bytearray()
        self._paused_at: int | None = None
        self._saved = False
        self._process: subprocess.Popen[bytes] | None = None
        self._deadline = 0.0
        if resuming is not None:
            self._replay_prefix(resuming)

    def _replay_prefix(self, resuming: _Resuming) -> None:
        """The snapshotting run's events and console first, as if this run had seen them itself."""
        prefix = (resuming.directory / EVENTS_FILE).read_bytes()
        replay = EventDecoder(self._receive)
        try:
            replay.feed(prefix)
            replay.finish()
        except RunnerProtocolError as error:
            raise RunnerError(f"snapshot {resuming.directory}: its events are corrupt ({error})") from None
        self._console_capture = resumed_capture(
            self._limits.console_bytes,
            (resuming.directory / CONSOLE_FILE).read_bytes(),
            resuming.manifest.console_dropped,
        )

    def _receive(self, event: Event) -> None:
        if event.WhichOneof("kind") == "paused":
            self._paused_at = event.paused.icount
            return
        if self._snapshotting is not None:
            self._frames += encode_frame(event)
        self._builder.add(event)

    def run(self) -> Run:
        events_read, events_write = os.pipe()
        if self._snapshotting is not None:
            self._snapshotting.directory.mkdir(parents=True, exist_ok=True)
            # The manifest is written last: a directory without one holds no snapshot. A plugin
            # state left by an earlier snapshot must not pass for this run's.
            for stale in (MANIFEST_FILE, PLUGIN_STATE_FILE):
                (self._snapshotting.directory / stale).unlink(missing_ok=True)
        try:
            if self._stock is None:
                # The machine writes its MmioAccess events to the same pipe as the plugin.
                with_events = MachineConfig()
                with_events.CopyFrom(self._config)
                with_events.events_fd = events_write
                write_config(with_events, self._config_path)
            with _terminal_restored(self._console):
                started = time.monotonic()
                self._deadline = started + self._limits.deadline_seconds
                process = self._start(events_write)
                self._process = process
                os.close(events_write)
                events_write = -1
                try:
                    if self._resuming is not None:
                        self._continue_restored(process)
                    self._watch(process, events_read, self._deadline)
                finally:
                    self._kill(process)
                wall = time.monotonic() - started
        finally:
            for descriptor in (events_read, events_write):
                if descriptor >= 0:
                    os.close(descriptor)
        stderr = self._stderr_capture.value().decode(errors="replace")
        result = self._finish_snapshot() if self._saved else self._result(process.returncode, stderr)
        first = None if self._first_console is None else self._first_console - started
        return Run(result, wall, first, stderr)

    def _start(self, events_write: int) -> subprocess.Popen[bytes]:
        command = command_line(
            self._qemu,
            self._config,
            self._config_path,
            plugin=self._plugin_with_snapshot_arguments(),
            events_fd=events_write,
            stock=self._stock,
        )
        if self._snapshotting is not None or self._resuming is not None:
            command += ["-qmp", f"unix:{self._qmp_path},server=on,wait=off"]
        if self._resuming is not None:
            command += ["-incoming", f"file:{self._resuming.directory / VM_FILE}"]
        limit_child = _child_limits(self._limits, self._config)
        try:
            return subprocess.Popen(
                command,
                stdin=None if self._console else subprocess.DEVNULL,
                stdout=None if self._console else subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(events_write,),
                # Its own session, so that one kill reaches everything it started; on the
                # terminal it must stay in ours, or reading the tty would stop it (SIGTTIN).
                start_new_session=not self._console,
                preexec_fn=limit_child,
            )
        except OSError as error:
            raise RunnerError(f"cannot start {self._qemu}: {error.strerror}") from None

    def _plugin_with_snapshot_arguments(self) -> Plugin | None:
        if self._plugin is None:
            return None
        extra: tuple[str, ...] = ()
        if self._snapshotting is not None:
            directory = self._snapshotting.directory
            extra += (
                f"pause_at={self._snapshotting.icount}",
                f"state_out={directory / PLUGIN_STATE_FILE}",
            )
        if self._resuming is not None:
            extra += (f"state_in={self._resuming.directory / PLUGIN_STATE_FILE}",)
        return Plugin(self._plugin.path, self._plugin.arguments + extra)

    def _watch(self, process: subprocess.Popen[bytes], events_read: int, deadline: float) -> None:
        """Read every stream until QEMU has exited and all are drained, the deadline, or garbage.

        QEMU's exit is seen through a pidfd, which does not reap it: its pid and process group
        stay QEMU's until `_kill` has killed the group, so no kill can reach a stranger.
        """
        assert process.stderr is not None
        streams: dict[int, Callable[[bytes], None]] = {
            events_read: self._feed_events,
            process.stderr.fileno(): self._stderr_capture.append,
        }
        if process.stdout is not None:
            streams[process.stdout.fileno()] = self._feed_console
        exited = os.pidfd_open(process.pid)
        try:
            with selectors.DefaultSelector() as selector:
                for descriptor in streams:
                    os.set_blocking(descriptor, False)
                    selector.register(descriptor, selectors.EVENT_READ)
                selector.register(exited, selectors.EVENT_READ)
                while selector.get_map() and self._protocol_error is None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 and self._timed_out:
                        return
                    if remaining <= 0:
                        # Ask QEMU to quit: its exit runs the plugin's exit handler, which sends
                        # the call stack and coverage of a guest that idled or crawled; a QEMU
                        # that does not quit within the grace period is killed.
                        self._timed_out = True
                        self._terminate_group(process)
                        deadline = time.monotonic() + TERMINATE_GRACE_SECONDS
                        continue
                    for key, _ in selector.select(remaining):
                        if key.fd == exited:
                            selector.unregister(exited)
                            # Whatever QEMU left behind would hold the pipes open: end it too.
                            self._kill_group(process)
                            continue
                        chunk = os.read(key.fd, _READ_CHUNK)
                        if chunk:
                            streams[key.fd](chunk)
                            continue
                        selector.unregister(key.fd)
                        if key.fd == events_read:
                            self._finish_events()
        finally:
            os.close(exited)

    def _feed_console(self, chunk: bytes) -> None:
        if self._first_console is None:
            self._first_console = time.monotonic()
        self._console_capture.append(chunk)

    def _feed_events(self, chunk: bytes) -> None:
        try:
            self._decoder.feed(chunk)
        except RunnerProtocolError as error:
            self._protocol_error = error
        if self._paused_at is not None and not self._saved:
            self._save_vm()

    def _save_vm(self) -> None:
        """The plugin has asked the machine to stop the VM at the point: once it has, save it, and
        have QEMU quit (explorer/runner/snapshot.py)."""
        assert self._snapshotting is not None and self._process is not None
        qmp = Qmp(self._qmp_path, self._process.pid, self._deadline)
        try:
            qmp.wait_until_paused()
            qmp.execute("migrate", uri=f"file:{self._snapshotting.directory / VM_FILE}")
            qmp.wait_for_migration()
            # QEMU quits at once; the plugin's exit handler writes its state (state_out).
            qmp.quit()
        finally:
            qmp.close()
        self._saved = True

    def _continue_restored(self, process: subprocess.Popen[bytes]) -> None:
        """QEMU loads the snapshot as it starts, and leaves the VM stopped as it was saved: continue it."""
        try:
            qmp = Qmp(self._qmp_path, process.pid, self._deadline)
            try:
                qmp.wait_for_migration()
                qmp.execute("cont")
            finally:
                qmp.close()
        except RunnerError as error:
            assert process.stderr is not None
            self._kill_group(process)
            process.wait()
            complaint = _last_lines(process.stderr.read().decode(errors="replace"), 1)
            raise RunnerError(f"QEMU could not restore the snapshot: {complaint or error}") from None

    def _finish_snapshot(self) -> RunResult:
        """Check that the VM stopped at the point, write the rest of the snapshot, and return its result."""
        assert self._snapshotting is not None and self._paused_at is not None
        directory = self._snapshotting.directory
        if not (directory / PLUGIN_STATE_FILE).is_file():
            raise RunnerError(f"QEMU quit without the plugin saving its state into {directory}")
        # The VM stops at the end of the paused block, or earlier when a device access inside it
        # hands the rest of the block to a one-instruction replay (the plugin then takes that rest
        # back); never later, unless the vCPU ran on before the stop reached it.
        stopped_at = plugin_state_icount(directory)
        if stopped_at > self._paused_at:
            raise RunnerError(
                f"the VM stopped at instruction {stopped_at}, past the pause ({self._paused_at}): "
                "the host was too slow to stop it in time, take the snapshot again"
            )
        (directory / EVENTS_FILE).write_bytes(bytes(self._frames))
        (directory / CONSOLE_FILE).write_bytes(self._console_capture.value())
        write_manifest(
            directory,
            Manifest(
                build=self._snapshotting.build,
                requested_icount=self._snapshotting.icount,
                icount=stopped_at,
                config=self._config.SerializeToString(deterministic=True),
                console_dropped=self._console_capture.dropped,
            ),
        )
        detail = f"stopped at instruction {stopped_at} for a snapshot"
        ending = Exit(reason=ExitReason.EXIT_REASON_UNSPECIFIED, icount=stopped_at, detail=detail)
        return self._builder.finish(ending, self._console_capture, detail)

    def _finish_events(self) -> None:
        try:
            self._decoder.finish()
        except RunnerProtocolError as error:
            self._protocol_error = error

    def _kill(self, process: subprocess.Popen[bytes]) -> None:
        """Kill the runner and its process group, then reap it (the group first: see `_watch`)."""
        self._kill_group(process)
        process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()

    def _terminate_group(self, process: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self._console:
                process.terminate()
            else:
                os.killpg(process.pid, signal.SIGTERM)

    def _kill_group(self, process: subprocess.Popen[bytes]) -> None:
        # Only before QEMU is reaped. On the terminal it shares our group, so only it is killed.
        with contextlib.suppress(ProcessLookupError):
            if self._console:
                process.kill()
            else:
                os.killpg(process.pid, signal.SIGKILL)

    def _result(self, returncode: int, stderr: str) -> RunResult:
        received = self._builder.exit
        console = self._console_capture
        if self._protocol_error is not None:
            ending = received or _exit(ExitReason.EXIT_CRASHED, "the runner's event stream broke")
            return self._builder.finish(ending, console, f"protocol error: {self._protocol_error}")
        if received is not None:
            return self._builder.finish(received, console)
        if self._timed_out:
            seconds = self._limits.deadline_seconds
            detail = f"no exit within the wall-clock deadline of {seconds:g} s"
            return self._builder.finish(_exit(ExitReason.EXIT_TIMEOUT, detail), console, detail)
        if returncode == 0:
            detail = "QEMU exited with status 0: the guest powered off or reset"
            return self._builder.finish(_exit(ExitReason.EXIT_POWEROFF, detail), console)
        last_line = _last_lines(stderr, 1)
        if returncode == 1 and self._decoder.frames == 0 and not len(console):
            # Nothing ran: QEMU refused the config, a file it names, or the plugin's arguments
            # (then the plugin's complaint is the line before QEMU's).
            raise RunnerError(
                _last_lines(stderr, 2) or f"{self._qemu.name} exited with status 1 before the guest ran"
            )
        if returncode < 0:
            name = signal.Signals(-returncode).name
            reason = ExitReason.EXIT_KILLED if -returncode == signal.SIGKILL else ExitReason.EXIT_CRASHED
            detail = f"QEMU killed by {name}" + (f" ({last_line})" if last_line else "")
        else:
            reason = ExitReason.EXIT_CRASHED
            detail = f"QEMU exited with status {returncode}" + (f": {last_line}" if last_line else "")
        return self._builder.finish(_exit(reason, detail), console, detail)


@contextlib.contextmanager
def _terminal_restored(console: bool) -> Iterator[None]:
    """On the terminal QEMU switches it to raw mode, and a killed QEMU cannot switch it back."""
    if not (console and sys.stdin.isatty()):
        yield
        return
    saved = termios.tcgetattr(sys.stdin.fileno())
    try:
        yield
    finally:
        termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)


def _child_limits(limits: RunnerLimits, config: MachineConfig) -> Callable[[], None]:
    """What the child runs between fork and exec: die with the driver, then cap resources.

    PR_SET_PDEATHSIG fires when the thread that started QEMU ends, so start runners from a
    thread that outlives them (the main thread, or a pool's worker that waits for its runs).
    """
    ram = sum(region.size for region in config.ram)
    address_space = limits.address_space_bytes or ram + QEMU_ADDRESS_SPACE_OVERHEAD
    cpu_seconds = limits.cpu_seconds or int(limits.deadline_seconds) + 60
    driver = os.getpid()

    def limit_child() -> None:
        die_with_parent()
        if os.getppid() != driver:  # the driver died before the line above took effect
            os._exit(1)
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_bytes, limits.file_size_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return limit_child


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when the thread that started it ends (Linux only)."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _exit(reason: ExitReason.ValueType, detail: str) -> Exit:
    return Exit(reason=reason, detail=detail)


def _last_lines(text: str, count: int) -> str:
    """The last `count` non-blank lines of `text`, as one line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines[-count:])
