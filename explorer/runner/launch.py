"""One runner: one QEMU process that boots one MachineConfig, watched until it ends or its deadline.

`run` builds the command line (explorer.runner.command), starts QEMU in its own session under
resource limits (explorer.runner.containment), hands it the write end of a pipe for events
(never a network port), and reads the console, stderr and events as they come, each bounded,
so neither a chatty kernel nor a broken runner can grow the master's memory. Whatever happens
(the run ends, the deadline passes, the stream turns to garbage, the master is interrupted or
killed), the QEMU process and its group are killed and reaped: no orphans. How the run ended is
said here, once (`_Runner._result`); it must never interpret what the run saw beyond that: that
is the RunResult's reader's job.

A run may also stop at an instruction count and save itself as a snapshot, or continue from
one (explorer.runner.save_restore drives both; explorer.runner.snapshot holds what a snapshot
is); the continued run's RunResult is the one an uninterrupted run of its config would give,
byte for byte, as long as its config differs from the snapshotting one only in what the guest
first touches after the point.
"""

from __future__ import annotations

import dataclasses
import os
import selectors
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from explorer.errors import RunnerError, RunnerProtocolError
from explorer.runner.build import build_identity
from explorer.runner.command import (
    Plugin,
    StockBoard,
    command_line,
    config_plugin_arguments,
    last_lines,
    qemu_binary,
)
from explorer.runner.config import validate, write_config
from explorer.runner.containment import (
    RunnerLimits,
    child_limits,
    kill_group,
    terminal_restored,
    terminate_group,
)
from explorer.runner.machine_config_pb2 import MachineConfig
from explorer.runner.protocol import EventDecoder, encode_frame
from explorer.runner.rehost_pb2 import Event, Exit, ExitReason, RunResult
from explorer.runner.result import BoundedBytes, ResultBuilder
from explorer.runner.save_restore import Resuming, Saving, qmp_arguments
from explorer.runner.snapshot import Snapshot, read_manifest

_READ_CHUNK = 1 << 16
# How long a runner past its deadline may take to quit after SIGTERM before it is killed.
TERMINATE_GRACE_SECONDS = 3.0


@dataclass(frozen=True)
class Run:
    """A finished run: its deterministic result, and what was measured on this host."""

    result: RunResult
    wall_seconds: float
    # From process start to the first console byte (None: the guest printed nothing).
    first_console_seconds: float | None
    stderr: str


def run(
    config: MachineConfig,
    qemu_dir: Path,
    *,
    plugin: Plugin | None = None,
    limits: RunnerLimits | None = None,
    console: bool = False,
    stock: StockBoard | None = None,
    snapshot: Snapshot | None = None,
) -> Run:
    """Boot `config` in one QEMU until it ends or the deadline passes; always returns with QEMU reaped.

    Raises RunnerError when QEMU cannot start (no binary, a config the machine refuses, a board
    this build lacks); a run that starts and then fails is a partial RunResult instead. With
    `console`, the guest's serial port is the terminal (and the result's console is empty). With
    `stock`, the config boots on that QEMU board instead of the rehosting machine.

    With a `snapshot` to save, the run stops at the end of the first block entered once
    snapshot.point instructions have executed, saves itself into snapshot.directory and returns
    a partial result of what it saw so far, its exit's icount being the point; a run that ends
    before the point returns as usual and saves nothing (the directory then holds no manifest).
    With one to continue from, the run continues from that snapshot (made by this build, at that
    point) and its result starts with the snapshotting run's events.
    """
    validate(config)
    if plugin is None and config_plugin_arguments(config):
        raise RunnerError(
            "the config has hooks, NOPs, a budget or a user-space bound, but no plugin to apply them"
        )
    saving = resuming = None
    if snapshot is not None:
        if plugin is None or stock is not None or (console and snapshot.save):
            raise RunnerError(
                "a snapshot needs the rehost plugin, the rehosting machine and no terminal console"
            )
        if snapshot.save and snapshot.point <= 0:
            raise RunnerError(f"a snapshot is taken at a positive instruction count, not {snapshot.point}")
        if snapshot.save:
            saving = Saving(snapshot, build_identity(qemu_dir))
        else:
            resuming = Resuming(snapshot, read_manifest(snapshot.directory, qemu_dir, snapshot.point))
    limits = limits or RunnerLimits()
    if saving is not None:
        room = saving.file_size_bytes(config)
        limits = dataclasses.replace(limits, file_size_bytes=max(limits.file_size_bytes, room))
    with tempfile.TemporaryDirectory(prefix="explorer-run-") as scratch:
        qemu = qemu_binary(qemu_dir, config.target)
        machine = _Machine(config, qemu, plugin, stock, console)
        return _Runner(machine, Path(scratch), limits, saving, resuming).run()


@dataclass(frozen=True)
class _Machine:
    """What QEMU is started as: the config, the binary, the plugin, the board, where the console goes."""

    config: MachineConfig
    qemu: Path
    plugin: Plugin | None
    stock: StockBoard | None
    # The guest's serial port is the terminal (not captured).
    console: bool


class _Runner:
    """The state of one run while it is watched; used once."""

    def __init__(
        self,
        machine: _Machine,
        scratch: Path,
        limits: RunnerLimits,
        saving: Saving | None,
        resuming: Resuming | None,
    ) -> None:
        self._machine = machine
        self._config_path = scratch / "machine.json"
        self._qmp_path = scratch / "qmp.sock"
        self._limits = limits
        self._saving = saving
        self._resuming = resuming
        self._builder = ResultBuilder(limits.result_bounds)
        self._decoder = EventDecoder(self._receive)
        self._console_capture = BoundedBytes(limits.console_bytes)
        self._stderr_capture = BoundedBytes(limits.stderr_bytes)
        self._protocol_error: RunnerProtocolError | None = None
        self._timed_out = False
        self._first_console: float | None = None
        # Saving: every frame up to the point (the snapshot's events), the point once paused.
        self._frames = bytearray()
        self._paused_at: int | None = None
        self._saved = False
        self._process: subprocess.Popen[bytes] | None = None
        self._deadline = 0.0
        if resuming is not None:
            # The snapshotting run's events and console first, as if this run had seen them itself.
            self._console_capture = resuming.replay(self._receive, limits.console_bytes)

    def _receive(self, event: Event) -> None:
        if event.WhichOneof("kind") == "paused":
            self._paused_at = event.paused.icount
            return
        if self._saving is not None:
            self._frames += encode_frame(event)
        self._builder.add(event)

    def run(self) -> Run:
        events_read, events_write = os.pipe()
        if self._saving is not None:
            self._saving.prepare()
        try:
            if self._machine.stock is None:
                # The machine writes its MmioAccess events to the same pipe as the plugin.
                with_events = MachineConfig()
                with_events.CopyFrom(self._machine.config)
                with_events.events_fd = events_write
                write_config(with_events, self._config_path)
            with terminal_restored(self._machine.console):
                started = time.monotonic()
                self._deadline = started + self._limits.deadline_seconds
                process = self._start(events_write)
                self._process = process
                os.close(events_write)
                events_write = -1
                try:
                    if self._resuming is not None:
                        self._continue_restored(process, self._resuming)
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
        machine = self._machine
        command = command_line(
            machine.qemu,
            machine.config,
            self._config_path,
            plugin=self._plugin_with_snapshot_arguments(),
            events_fd=events_write,
            stock=machine.stock,
        )
        if self._saving is not None or self._resuming is not None:
            command += qmp_arguments(self._qmp_path)
        if self._resuming is not None:
            command += self._resuming.qemu_arguments()
        limit_child = child_limits(self._limits, machine.config)
        try:
            return subprocess.Popen(
                command,
                stdin=None if machine.console else subprocess.DEVNULL,
                stdout=None if machine.console else subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(events_write,),
                # Its own session, so that one kill reaches everything it started; on the
                # terminal it must stay in ours, or reading the tty would stop it (SIGTTIN).
                start_new_session=not machine.console,
                preexec_fn=limit_child,
            )
        except OSError as error:
            raise RunnerError(f"cannot start {machine.qemu}: {error.strerror}") from None

    def _plugin_with_snapshot_arguments(self) -> Plugin | None:
        plugin = self._machine.plugin
        if plugin is None:
            return None
        extra: tuple[str, ...] = ()
        if self._saving is not None:
            extra += self._saving.plugin_arguments()
        if self._resuming is not None:
            extra += self._resuming.plugin_arguments()
        return Plugin(plugin.path, plugin.arguments + extra)

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
                        terminate_group(process, self._machine.console)
                        deadline = time.monotonic() + TERMINATE_GRACE_SECONDS
                        continue
                    for key, _ in selector.select(remaining):
                        if key.fd == exited:
                            selector.unregister(exited)
                            # Whatever QEMU left behind would hold the pipes open: end it too.
                            kill_group(process, self._machine.console)
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
        assert self._saving is not None and self._process is not None
        self._saving.save(self._qmp_path, self._process.pid, self._deadline)
        self._saved = True

    def _continue_restored(self, process: subprocess.Popen[bytes], resuming: Resuming) -> None:
        try:
            resuming.continue_restored(self._qmp_path, process.pid, self._deadline)
        except RunnerError as error:
            assert process.stderr is not None
            kill_group(process, self._machine.console)
            process.wait()
            complaint = last_lines(process.stderr.read().decode(errors="replace"), 1)
            raise RunnerError(f"QEMU could not restore the snapshot: {complaint or error}") from None

    def _finish_snapshot(self) -> RunResult:
        """The saving run's result: what it saw up to where the VM stopped (its exit's icount)."""
        assert self._saving is not None and self._paused_at is not None
        stopped_at = self._saving.finish(
            self._machine.config, self._paused_at, bytes(self._frames), self._console_capture
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
        kill_group(process, self._machine.console)
        process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()

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
        last_line = last_lines(stderr, 1)
        if returncode == 1 and self._decoder.frames == 0 and not len(console):
            # Nothing ran: QEMU refused the config, a file it names, or the plugin's arguments
            # (then the plugin's complaint is the line before QEMU's).
            raise RunnerError(
                last_lines(stderr, 2)
                or f"{self._machine.qemu.name} exited with status 1 before the guest ran"
            )
        if returncode < 0:
            name = signal.Signals(-returncode).name
            reason = ExitReason.EXIT_KILLED if -returncode == signal.SIGKILL else ExitReason.EXIT_CRASHED
            detail = f"QEMU killed by {name}" + (f" ({last_line})" if last_line else "")
        else:
            reason = ExitReason.EXIT_CRASHED
            detail = f"QEMU exited with status {returncode}" + (f": {last_line}" if last_line else "")
        return self._builder.finish(_exit(reason, detail), console, detail)


def _exit(reason: ExitReason.ValueType, detail: str) -> Exit:
    return Exit(reason=reason, detail=detail)
