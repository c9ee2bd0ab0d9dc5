"""Runner-level VM snapshots: one run's machine, plugin and events saved at an instruction count.

A snapshot is one directory holding what a later run needs to continue exactly where the
snapshotting run stopped, as if it were one uninterrupted run:

- `vm.mig`: QEMU's migration stream of the whole VM (RAM, devices, icount, the virtual clock,
  the machine's recorder state: native/rehosting_machine/rehosting_snapshot.c);
- `plugin.state`: the rehost plugin's state (native/rehost_plugin/state_file.c: state_out);
- `events`: every Event frame the run sent up to the point, in the pipe's own framing;
- `console`: the console as the run's bounded capture held it (its head and tail; the bytes
  dropped between them are counted in the manifest);
- `manifest.json`: the build that made it, the point asked for and the point reached, and the
  snapshotting config's bytes (for the master, which decides which children may share it).

How the VM is stopped at the point: at the first block entered at or past the count, the plugin
says so with a Paused frame and asks the rehosting machine to stop the VM (a write only the
plugin can make: native/rehosting_machine/rehosting_control.h); the machine stops the guest's
clock and asks the vCPU to stop from the vCPU's own thread, so it stops at the end of that
block, the same instruction on every run, whatever the host's timing (a stop from outside, QMP
`stop` or a gdbstub breakpoint, lands wherever the vCPU happens to be). The driver waits for
the VM to be paused, then `migrate file:` and `quit`.

A snapshot is only valid with the build that made it: `read_manifest` refuses another. This
module knows nothing about which runs may share a snapshot: that is the search's to decide.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from explorer.errors import RunnerError
from explorer.runner.build import build_identity
from explorer.runner.result import BoundedBytes

VM_FILE = "vm.mig"
PLUGIN_STATE_FILE = "plugin.state"
EVENTS_FILE = "events"
CONSOLE_FILE = "console"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1
# The plugin's state file starts with its magic word, then the instruction count at the save.
_PLUGIN_STATE_COUNT_OFFSET = 8
_POLL_SECONDS = 0.002


@dataclass(frozen=True)
class Manifest:
    """What a snapshot directory says about itself."""

    build: str
    # The count asked for (snapshot_at) and the plugin's count at the stop: the end of the block
    # entered at or past the requested count.
    requested_icount: int
    icount: int
    config: bytes
    console_dropped: int


def write_manifest(directory: Path, manifest: Manifest) -> None:
    body = {
        "format": MANIFEST_FORMAT,
        "build": manifest.build,
        "requested_icount": manifest.requested_icount,
        "icount": manifest.icount,
        "config": base64.b64encode(manifest.config).decode(),
        "console_dropped": manifest.console_dropped,
    }
    (directory / MANIFEST_FILE).write_text(json.dumps(body, indent=1) + "\n")


def read_manifest(directory: Path, qemu_dir: Path, requested_icount: int | None = None) -> Manifest:
    """The manifest of the snapshot in `directory`, refused unless made by this build (and at that point)."""
    path = directory / MANIFEST_FILE
    try:
        body = json.loads(path.read_text())
        manifest = Manifest(
            build=str(body["build"]),
            requested_icount=int(body["requested_icount"]),
            icount=int(body["icount"]),
            config=base64.b64decode(body["config"], validate=True),
            console_dropped=int(body["console_dropped"]),
        )
        format_version = body["format"]
    except FileNotFoundError:
        raise RunnerError(f"{directory} is not a snapshot: it has no {MANIFEST_FILE}") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RunnerError(f"{path} is not a snapshot manifest ({error}): take the snapshot again") from None
    if format_version != MANIFEST_FORMAT:
        raise RunnerError(
            f"{path} has format {format_version}, not {MANIFEST_FORMAT}: take the snapshot again"
        )
    build = build_identity(qemu_dir)
    if manifest.build != build:
        raise RunnerError(
            f"snapshot {directory} is of build {manifest.build}, not {build}: take it again with this one"
        )
    if requested_icount is not None and manifest.requested_icount != requested_icount:
        raise RunnerError(
            f"snapshot {directory} is at instruction {manifest.requested_icount}, not {requested_icount}"
        )
    parts = (VM_FILE, PLUGIN_STATE_FILE, EVENTS_FILE, CONSOLE_FILE)
    missing = [name for name in parts if not (directory / name).is_file()]
    if missing:
        raise RunnerError(f"snapshot {directory} lacks {', '.join(missing)}: take it again")
    return manifest


def resumed_capture(limit: int, held: bytes, dropped: int) -> BoundedBytes:
    """A bounded capture in the state another of the same limit was in: holding `held`, `dropped` dropped.

    One that dropped nothing holds all it got; one that dropped bytes holds a full head and a
    full tail. Either way, appending what it held to an empty one and setting the count gives
    the same state, so the rest of the stream appended to it gives what one capture of all would.
    """
    capture = BoundedBytes(limit)
    capture.append(held)
    capture.dropped = dropped
    return capture


def plugin_state_icount(directory: Path) -> int:
    """The instruction count the plugin saved: where the VM really stopped."""
    with (directory / PLUGIN_STATE_FILE).open("rb") as state:
        state.seek(_PLUGIN_STATE_COUNT_OFFSET)
        return int.from_bytes(state.read(8), "little")


class QmpClosed(RunnerError):
    """QEMU closed its end of the QMP socket (it is exiting)."""


class Qmp:
    """Just enough of QMP (JSON lines over a unix socket) to save, restore and quit one QEMU.

    Every wait is bounded by the run's deadline: a QEMU that stops answering is the driver's to
    kill, never a reason to hang.
    """

    def __init__(self, path: Path, pid: int, deadline: float) -> None:
        self._deadline = deadline
        self._socket = socket.socket(socket.AF_UNIX)
        # QEMU creates the socket as it starts: until then, connecting fails.
        while True:
            try:
                self._socket.connect(str(path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if not _running(pid):
                    self._socket.close()
                    raise RunnerError("QEMU exited before it opened its QMP socket") from None
                self._remaining()
                time.sleep(_POLL_SECONDS)
        self._buffer = b""
        self._read_message()  # the greeting
        self.execute("qmp_capabilities")

    def close(self) -> None:
        self._socket.close()

    def send(self, command: str, **arguments: object) -> None:
        """Send a command without waiting for its reply (`reply` reads it)."""
        message = {"execute": command, **({"arguments": arguments} if arguments else {})}
        self._socket.settimeout(self._remaining())
        self._socket.sendall(json.dumps(message).encode() + b"\n")

    def reply(self, command: str) -> object:
        """The reply to the oldest command sent and not yet answered (events in between are skipped)."""
        while True:
            message = self._read_message()
            if "error" in message:
                raise RunnerError(f"QEMU refused {command}: {message['error'].get('desc', message['error'])}")
            if "return" in message:
                return message["return"]

    def execute(self, command: str, **arguments: object) -> object:
        self.send(command, **arguments)
        return self.reply(command)

    def quit(self) -> None:
        """Have QEMU quit, waiting until it took the command (its reply, or its end of the socket
        closing): QEMU drops the commands still queued of a client that disconnects, so closing at
        once could lose the `quit`, and the run would wait for its deadline."""
        self.send("quit")
        with contextlib.suppress(QmpClosed):
            self.reply("quit")

    def wait_until_paused(self) -> None:
        """Until the VM is paused (the machine stopped it at the plugin's request)."""
        while True:
            status = self.execute("query-status")
            if isinstance(status, dict) and status.get("status") == "paused":
                return
            self._remaining()
            time.sleep(_POLL_SECONDS)

    def wait_for_migration(self) -> None:
        """Until the migration (outgoing or incoming) has completed; RunnerError if it fails."""
        while True:
            info = self.execute("query-migrate")
            status = info.get("status") if isinstance(info, dict) else None
            if status == "completed":
                return
            if status in ("failed", "cancelled"):
                detail = info.get("error-desc", status) if isinstance(info, dict) else status
                raise RunnerError(f"QEMU could not migrate the VM: {detail}")
            self._remaining()
            time.sleep(_POLL_SECONDS * 5)

    def _remaining(self) -> float:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise RunnerError("QEMU did not save or restore the VM within the run's deadline")
        return remaining

    def _read_message(self) -> dict:
        while b"\n" not in self._buffer:
            self._socket.settimeout(self._remaining())
            try:
                chunk = self._socket.recv(1 << 16)
            except TimeoutError:
                raise RunnerError("QEMU did not save or restore the VM within the run's deadline") from None
            if not chunk:
                raise QmpClosed("QEMU closed its QMP socket")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)


def _running(pid: int) -> bool:
    """Whether the child `pid` has not exited yet (without reaping it: see launch._Runner._watch)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
