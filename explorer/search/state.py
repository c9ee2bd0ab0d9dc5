"""A state: one machine the search can boot, immutable and named by its content.

A state is a MachineConfig (proto/machine_config.proto) holding only what the search decides:
CPU, RAM, interrupt controller, devices, the value model of unmapped addresses (mmio_rules),
NOPs, the seed, the instruction budget, the kernel arguments it added (boot.cmdline). It holds
nothing that depends on the host or on what is being rehosted (file paths, hooks, the events
pipe): `bootable` adds those at launch from the Target. Invariants: a state is never modified
once built (operators derive children with `derive`); its id is the SHA-256 of its deterministic
serialization, so equal states have equal ids on every host, and a stored state can be checked
against its key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from explorer.firmware.model import Firmware
from explorer.runner.command import GUEST_NS_PER_INSTRUCTION
from explorer.runner.kernel_hooks import watching_kernel
from explorer.runner.machine_config_pb2 import MachineConfig

# Hex digits of a state id shown to people (the full id is 64).
SHORT_ID = 12
# MMIO access events a search run reports: enough to see every device a boot touches, while
# bounded (the runner counts the rest).
SEARCH_MMIO_EVENT_LIMIT = 20_000
# Reads of one unmapped address that end a run as stuck (MachineConfig.stuck_reads). A poll
# that random values or a pinned value cannot satisfy ends in a second or two instead of
# spending the instruction budget; the busiest honest address of a boot (a UART's status
# register answered at random, two reads per character of a verbose log) stays far below.
# Above the plugin's hot-loop threshold (STANDARD_OBSERVATION: a million iterations), so that a
# poll reading the address up to twice per iteration is reported as a hot loop first.
SEARCH_STUCK_READS = 3_000_000

State = MachineConfig


@dataclass(frozen=True)
class Target:
    """What is being rehosted: fixed for a whole search, stored in its metadata."""

    kernel: Path
    dtb: Path | None = None
    initrd: Path | None = None
    cmdline: str = ""
    board_id: int | None = None
    # The initrd's /init prints the marker line on the console (the marker initramfs): runs go
    # on past user space to see it (MachineConfig.past_user_space).
    prints_marker: bool = False

    def to_dict(self) -> dict[str, object]:
        return {
            "kernel": str(self.kernel),
            "dtb": str(self.dtb) if self.dtb else None,
            "initrd": str(self.initrd) if self.initrd else None,
            "cmdline": self.cmdline,
            "board_id": self.board_id,
            "prints_marker": self.prints_marker,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Target:
        board_id = data.get("board_id")
        return cls(
            kernel=Path(str(data["kernel"])),
            dtb=Path(str(data["dtb"])) if data.get("dtb") else None,
            initrd=Path(str(data["initrd"])) if data.get("initrd") else None,
            cmdline=str(data.get("cmdline") or ""),
            board_id=int(board_id) if isinstance(board_id, int) else None,
            prints_marker=bool(data.get("prints_marker", False)),
        )


def canonical_bytes(state: State) -> bytes:
    """The bytes a state is stored as and named by: protobuf's deterministic serialization."""
    return state.SerializeToString(deterministic=True)


def state_id(state: State) -> str:
    """The content address of a state (64 hex digits)."""
    return hashlib.sha256(canonical_bytes(state)).hexdigest()


def parse_state(data: bytes) -> State:
    state = State()
    state.ParseFromString(data)
    return state


def derive(parent: State, change: Callable[[State], None]) -> State:
    """A new state: a copy of `parent` with `change` applied to the copy (the parent is untouched)."""
    child = State()
    child.CopyFrom(parent)
    change(child)
    return child


def bootable(state: State, target: Target, firmware: Firmware) -> MachineConfig:
    """The config a runner boots for `state`: the target's files, and the standard kernel hooks."""
    config = derive(state, lambda _: None)
    config.boot.kernel = str(target.kernel)
    if target.dtb is not None:
        config.boot.dtb = str(target.dtb)
    if target.initrd is not None:
        config.boot.initrd = str(target.initrd)
    # The state's command line holds only the arguments the search added.
    config.boot.cmdline = f"{target.cmdline} {state.boot.cmdline}".strip()
    if target.board_id is not None:
        config.boot.board_id.value = target.board_id
    config.mmio_event_limit = SEARCH_MMIO_EVENT_LIMIT
    config.stuck_reads = SEARCH_STUCK_READS
    # A guest idle with no timer armed ends when its clock reaches the time its instruction
    # budget stands for, instead of at the wall-clock deadline.
    config.idle_deadline_ns = state.instruction_budget * GUEST_NS_PER_INSTRUCTION
    config.past_user_space = target.prints_marker
    return watching_kernel(config, firmware)
