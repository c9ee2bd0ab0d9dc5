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

A job's part in one (`Snapshot`: save the boot of a state at a point, or continue from that
save) is one value from the search's engine to the runner, unchanged on its way but for where
its directory is on the machine that runs the job; its content address is `snapshot_key` (the
build, the state, the point), the name of its directory in every cache
(explorer.execution.snapshot_cache). How a run saves itself and continues from a snapshot (the
plugin's pause, QMP) is explorer.runner.save_restore's.

A snapshot is only valid with the build that made it: `read_manifest` refuses another. This
module knows nothing about which runs may share a snapshot: that is the search's to decide.
"""

from __future__ import annotations

import base64
import hashlib
import json
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


@dataclass(frozen=True)
class Snapshot:
    """A job's part in sharing a boot: the boot of `state_id` saved at `point`, in `directory`.

    With `save`, the job boots its config (the state's) to the point and saves it into
    `directory`; without, it continues from the save there instead of booting from reset.
    """

    # The state whose boot is saved (for the children continuing from it: their parent).
    state_id: str
    # The plugin's instruction count the save is asked for.
    point: int
    # Where the snapshot is, or is to be written, on the machine that runs the job.
    directory: Path
    save: bool


def snapshot_key(build: str, state_id: str, point: int) -> str:
    """The content address of a snapshot: the runner build, the state whose boot it saved, the point."""
    return hashlib.sha256(f"{build}\0{state_id}\0{point}".encode()).hexdigest()


@dataclass(frozen=True)
class Manifest:
    """What a snapshot directory says about itself."""

    build: str
    # The count asked for (Snapshot.point) and the plugin's count at the stop: the end of the block
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
