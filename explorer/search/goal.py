"""What a search is after, and what it has so far: the goal its runs are judged against.

The goal is the console milestone (user space printing the marker on the console) where the
target's initrd prints the marker and the search can place the console's UART
(explorer.search.console), for the runs whose machine delivers that UART's interrupt or whose
descendants' can (user space's writes to the console wait for it), and for every run of a
firmware whose console UART has no model (a sink stands for it, which needs no interrupt where
the driver writes while its status says ready); for every other run it is user space
(explorer.search.score.boot_completed).

Invariant: whether a run reached the goal is a pure function of the firmware, the target, the
run's state and its result, so a resumed search judges the stored runs as the session that made
them did. Never runs anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from explorer.firmware.model import Firmware
from explorer.runner.rehost_pb2 import RunResult
from explorer.runner.result import deserialize
from explorer.search.console import console_expected, console_interrupt_reachable, console_without_model
from explorer.search.score import Score, boot_completed
from explorer.search.state import State, Target, parse_state
from explorer.store import Store


@dataclass(frozen=True)
class Goal:
    """The boot a search completes: whether the console can be its finish line at all."""

    console: bool
    # The console's UART has no model: the console_sink operator's sink stands for it, which
    # needs no interrupt where the driver writes while the status register says ready.
    sink: bool = False

    @classmethod
    def of(cls, firmware: Firmware, target: Target) -> Goal:
        return cls(
            target.prints_marker and console_expected(firmware, target.cmdline),
            console_without_model(firmware, target.cmdline) is not None,
        )

    def reached_by(self, state: State, result: RunResult) -> bool:
        """Did this run of `state` complete the boot: the console milestone where it can be seen
        and the state's machine delivers the console's interrupt (or a descendant's can, or a
        sink stands for the console), else user space."""
        return boot_completed(result, self.console and (self.sink or console_interrupt_reachable(state)))

    def reached_in(self, store: Store) -> bool:
        """Has any stored run completed the boot?"""
        return any(
            self.reached_by(_stored_state(store, run.state_id), deserialize(run.result))
            for run in store.runs()
        )


def best_score(store: Store) -> Score:
    """The best score of any stored run (all zero before the first run)."""
    nothing = Score(False, False, 0, 0, False, 0, 0)
    return max((Score.from_bytes(run.score) for run in store.runs()), default=nothing)


def _stored_state(store: Store, identity: str) -> State:
    data = store.state(identity)
    assert data is not None  # every stored run's state is stored with it
    return parse_state(data)
