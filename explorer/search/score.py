"""Boot progress: how far one run got, as a score that orders runs.

Order, most significant first: user space printed the marker on the console (the console
milestone: explorer.runner.analysis.reached_console); reached user space; the furthest boot
milestone (in the order a boot reaches them, explorer.runner.kernel_hooks.MILESTONES);
initcalls completed; did not panic; unique instructions executed; guest log lines. A run that
panics keeps what it reached, but ranks below one that got as far without panicking: an oops
prints, and printing adds coverage, so without this a child that got past a panic would rank
below its panicking parent.
Invariant: the score is a function of the RunResult alone, so that it is the same on every host
and for every replay of a run.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from explorer.runner.analysis import reached_console, reached_user_space
from explorer.runner.kernel_hooks import MILESTONES
from explorer.runner.rehost_pb2 import ExitReason, RunResult

_KEY_FORMAT = ">BBBIBQI"
# Scores stored before the console milestone lack its leading byte: read as not reached.
_KEY_FORMAT_WITHOUT_CONSOLE = ">BBIBQI"


@dataclass(frozen=True, order=True)
class Score:
    console: bool
    user_space: bool
    # 1 + index in MILESTONES of the furthest milestone reached; 0: none.
    milestone_rank: int
    initcalls: int
    survived: bool
    instructions: int
    log_lines: int

    @property
    def furthest_milestone(self) -> str | None:
        if self.console:
            return CONSOLE
        if self.user_space:
            return "user space"
        return MILESTONES[self.milestone_rank - 1] if self.milestone_rank else None

    def to_bytes(self) -> bytes:
        """Big-endian, so that byte order is score order (the frontier's LMDB keys sort by it)."""
        return struct.pack(
            _KEY_FORMAT,
            int(self.console),
            int(self.user_space),
            self.milestone_rank,
            min(self.initcalls, 2**32 - 1),
            int(self.survived),
            self.instructions,
            min(self.log_lines, 2**32 - 1),
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Score:
        if len(data) == struct.calcsize(_KEY_FORMAT_WITHOUT_CONSOLE):
            data = b"\0" + data
        console, user_space, rank, initcalls, survived, instructions, lines = struct.unpack(_KEY_FORMAT, data)
        return cls(bool(console), bool(user_space), rank, initcalls, bool(survived), instructions, lines)

    def describe(self) -> str:
        where = self.furthest_milestone or "no milestone"
        panicked = "" if self.survived else ", panicked"
        return f"{where}, {self.initcalls} initcalls{panicked}, {self.instructions} instructions"


SCORE_BYTES = struct.calcsize(_KEY_FORMAT)
# The furthest milestone of a run whose user space printed the marker on the console.
CONSOLE = "console"


def score(result: RunResult) -> Score:
    reached = {milestone.name for milestone in result.milestones}
    rank = max((index + 1 for index, name in enumerate(MILESTONES) if name in reached), default=0)
    return Score(
        console=reached_console(result),
        user_space=reached_user_space(result),
        milestone_rank=rank,
        initcalls=len(result.initcalls),
        survived=result.exit.reason != ExitReason.EXIT_PANIC,
        instructions=result.coverage.instructions,
        log_lines=result.log.count(b"\n"),
    )


def boot_completed(result: RunResult, console_goal: bool = False) -> bool:
    """The search's goal: the console milestone when `console_goal`, else user space; or, for a
    program with no user space (the tests' bare-metal firmware), a clean power-off or halt after
    init was started.

    The console is the goal where it can be seen: the target's initrd prints the marker, the
    search can place the console's UART (explorer.search.console.console_expected) and the run's
    machine delivers its interrupt (console_interrupt_wired: user space's writes wait for it).
    Elsewhere nothing could print the marker, and the goal stays user space: a Linux kernel with
    an initramfs reaches it before anything else can end its run.
    """
    if console_goal:
        return reached_console(result)
    if reached_user_space(result):
        return True
    clean_end = result.exit.reason in (ExitReason.EXIT_POWEROFF, ExitReason.EXIT_HALT)
    init_started = any(milestone.name == MILESTONES[-1] for milestone in result.milestones)
    return clean_end and not result.partial and init_started
