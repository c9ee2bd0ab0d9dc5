"""Driving a run's save and restore: what the plugin and QEMU are told, and QMP (qemu.qmp).

A saving run (`Saving`) has the plugin pause at an instruction count and write its state
(`pause_at=`, `state_out=`), keeps every Event frame it receives up to the point, and, once the
plugin's Paused frame has come, drives QEMU over QMP: waits until the VM is paused, `migrate
file:`, `quit`; then it checks where the VM really stopped and writes the rest of the snapshot
(events, console, the manifest last). A continued run (`Resuming`) starts QEMU with `-incoming
file:` and the plugin with `state_in=`, replays the snapshotting run's events and console as if
it had seen them itself, and once QEMU has loaded the VM, `cont`s it.

How the VM is stopped at the point: at the first block entered at or past the count, the plugin
says so with a Paused frame and asks the rehosting machine to stop the VM (a write only the
plugin can make: native/rehosting_machine/rehosting_control.h); the machine stops the guest's
clock and asks the vCPU to stop from the vCPU's own thread, so it stops at the end of that
block, the same instruction on every run, whatever the host's timing (a stop from outside, QMP
`stop` or a gdbstub breakpoint, lands wherever the vCPU happens to be).

QMP is QEMU's own Python library's synchronous client (qemu.qmp.legacy), in place of the
hand-written one this module had: it costs about 1 ms more per command (measured on one host
against an idle QEMU, 500 query-status: 1.2-1.6 ms each against 0.5-0.6 ms), a few ms per save
or restore of 0.1-0.3 s, and where the VM stops does not depend on it (the machine stops itself
at the plugin's request). Every wait is bounded by the run's deadline: a QEMU that stops
answering is the driver's to kill, never a reason to hang.

What a snapshot directory holds is explorer.runner.snapshot's; this module never starts,
watches or kills QEMU (explorer.runner.launch does) and knows nothing of which runs may share
a snapshot.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from qemu.qmp import ConnectError, ExecInterruptedError, ExecuteError, QMPError
from qemu.qmp.legacy import QEMUMonitorProtocol

from explorer.errors import RunnerError, RunnerProtocolError
from explorer.runner.machine_config_pb2 import MachineConfig
from explorer.runner.protocol import EventDecoder
from explorer.runner.rehost_pb2 import Event
from explorer.runner.result import BoundedBytes
from explorer.runner.snapshot import (
    CONSOLE_FILE,
    EVENTS_FILE,
    MANIFEST_FILE,
    PLUGIN_STATE_FILE,
    VM_FILE,
    Manifest,
    Snapshot,
    plugin_state_icount,
    resumed_capture,
    write_manifest,
)

# A snapshotting run writes the whole VM to one file: room for its RAM plus the devices' state.
SNAPSHOT_FILE_OVERHEAD_BYTES = 64 << 20
_POLL_SECONDS = 0.002
_TOO_SLOW = "QEMU did not save or restore the VM within the run's deadline"


@dataclass(frozen=True)
class Saving:
    """Where and at which instruction count a run stops to save itself, and with which build."""

    snapshot: Snapshot
    build: str

    @property
    def directory(self) -> Path:
        return self.snapshot.directory

    def prepare(self) -> None:
        """An empty place for this save: the manifest is written last, so a directory without one
        holds no snapshot, and a plugin state left by an earlier save must not pass for this one's."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in (MANIFEST_FILE, PLUGIN_STATE_FILE):
            (self.directory / stale).unlink(missing_ok=True)

    def file_size_bytes(self, config: MachineConfig) -> int:
        """The file size the runner needs to write the VM: its RAM and the devices' state."""
        return sum(region.size for region in config.ram) + SNAPSHOT_FILE_OVERHEAD_BYTES

    def plugin_arguments(self) -> tuple[str, ...]:
        return (f"pause_at={self.snapshot.point}", f"state_out={self.directory / PLUGIN_STATE_FILE}")

    def save(self, qmp_path: Path, pid: int, deadline: float) -> None:
        """The plugin has asked the machine to stop the VM at the point: once it has, save it, and
        have QEMU quit (its exit handler then writes the plugin's state: state_out)."""
        with _connected(qmp_path, pid, deadline) as qmp:
            _wait_until_paused(qmp, deadline)
            _execute(qmp, deadline, "migrate", uri=f"file:{self.directory / VM_FILE}")
            _wait_for_migration(qmp, deadline)
            _quit(qmp, deadline)

    def finish(self, config: MachineConfig, paused_at: int, frames: bytes, console: BoundedBytes) -> int:
        """Check that the VM stopped at the point, write the rest of the snapshot; where it stopped."""
        if not (self.directory / PLUGIN_STATE_FILE).is_file():
            raise RunnerError(f"QEMU quit without the plugin saving its state into {self.directory}")
        # The VM stops at the end of the paused block, or earlier when a device access inside it
        # hands the rest of the block to a one-instruction replay (the plugin then takes that rest
        # back); never later, unless the vCPU ran on before the stop reached it.
        stopped_at = plugin_state_icount(self.directory)
        if stopped_at > paused_at:
            raise RunnerError(
                f"the VM stopped at instruction {stopped_at}, past the pause ({paused_at}): "
                "the host was too slow to stop it in time, take the snapshot again"
            )
        (self.directory / EVENTS_FILE).write_bytes(frames)
        (self.directory / CONSOLE_FILE).write_bytes(console.value())
        write_manifest(
            self.directory,
            Manifest(
                build=self.build,
                requested_icount=self.snapshot.point,
                icount=stopped_at,
                config=config.SerializeToString(deterministic=True),
                console_dropped=console.dropped,
            ),
        )
        return stopped_at


@dataclass(frozen=True)
class Resuming:
    """The snapshot a run continues from (its manifest read and checked: explorer.runner.snapshot)."""

    snapshot: Snapshot
    manifest: Manifest

    @property
    def directory(self) -> Path:
        return self.snapshot.directory

    def plugin_arguments(self) -> tuple[str, ...]:
        return (f"state_in={self.directory / PLUGIN_STATE_FILE}",)

    def qemu_arguments(self) -> list[str]:
        return ["-incoming", f"file:{self.directory / VM_FILE}"]

    def replay(self, receive: Callable[[Event], None], console_bytes: int) -> BoundedBytes:
        """Hand the snapshotting run's events to `receive`; its console as a capture of `console_bytes`."""
        replay = EventDecoder(receive)
        try:
            replay.feed((self.directory / EVENTS_FILE).read_bytes())
            replay.finish()
        except RunnerProtocolError as error:
            raise RunnerError(f"snapshot {self.directory}: its events are corrupt ({error})") from None
        held = (self.directory / CONSOLE_FILE).read_bytes()
        return resumed_capture(console_bytes, held, self.manifest.console_dropped)

    def continue_restored(self, qmp_path: Path, pid: int, deadline: float) -> None:
        """QEMU loads the snapshot as it starts, and leaves the VM stopped as it was saved: continue it."""
        with _connected(qmp_path, pid, deadline) as qmp:
            _wait_for_migration(qmp, deadline)
            _execute(qmp, deadline, "cont")


def qmp_arguments(qmp_path: Path) -> list[str]:
    """QEMU's side of the QMP socket: it listens (without waiting for us) at `qmp_path`."""
    return ["-qmp", f"unix:{qmp_path},server=on,wait=off"]


@contextlib.contextmanager
def _connected(path: Path, pid: int, deadline: float) -> Iterator[QEMUMonitorProtocol]:
    """A QMP session with the QEMU `pid` (capabilities negotiated), closed on the way out."""
    qmp = QEMUMonitorProtocol(str(path))
    # QEMU creates the socket as it starts: until then, connecting fails.
    while True:
        try:
            qmp.connect()
            break
        except ConnectError:
            if not _running(pid):
                raise RunnerError("QEMU exited before it opened its QMP socket") from None
            _remaining(deadline)
            time.sleep(_POLL_SECONDS)
    try:
        yield qmp
    finally:
        # Closing re-raises what ended the session (QEMU closing its end after `quit`).
        with contextlib.suppress(QMPError, OSError, EOFError):
            qmp.close()


def _execute(qmp: QEMUMonitorProtocol, deadline: float, command: str, **arguments: object) -> object:
    qmp.settimeout(_remaining(deadline))
    try:
        return qmp.cmd(command, **arguments)
    except ExecuteError as error:
        raise RunnerError(f"QEMU refused {command}: {error}") from None
    except TimeoutError:
        raise RunnerError(_TOO_SLOW) from None
    except (QMPError, OSError, EOFError) as error:
        raise RunnerError(f"QEMU's QMP session ended during {command} ({type(error).__name__})") from None


def _quit(qmp: QEMUMonitorProtocol, deadline: float) -> None:
    """Have QEMU quit, waiting until it took the command (its reply, or its end of the socket
    closing): QEMU drops the commands still queued of a client that disconnects, so closing at
    once could lose the `quit`, and the run would wait for its deadline."""
    qmp.settimeout(_remaining(deadline))
    with contextlib.suppress(ExecInterruptedError, OSError, EOFError):
        qmp.cmd("quit")


def _wait_until_paused(qmp: QEMUMonitorProtocol, deadline: float) -> None:
    """Until the VM is paused (the machine stopped it at the plugin's request)."""
    while True:
        status = _execute(qmp, deadline, "query-status")
        if isinstance(status, dict) and status.get("status") == "paused":
            return
        time.sleep(_POLL_SECONDS)


def _wait_for_migration(qmp: QEMUMonitorProtocol, deadline: float) -> None:
    """Until the migration (outgoing or incoming) has completed; RunnerError if it fails."""
    while True:
        info = _execute(qmp, deadline, "query-migrate")
        status = info.get("status") if isinstance(info, dict) else None
        if status == "completed":
            return
        if status in ("failed", "cancelled"):
            detail = info.get("error-desc", status) if isinstance(info, dict) else status
            raise RunnerError(f"QEMU could not migrate the VM: {detail}")
        time.sleep(_POLL_SECONDS * 5)


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise RunnerError(_TOO_SLOW)
    return remaining


def _running(pid: int) -> bool:
    """Whether the child `pid` has not exited yet (without reaping it: see launch._Runner._watch)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
