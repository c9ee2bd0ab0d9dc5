"""Operators: each turns an evaluated state (a state and the run that booted it) into child states.

One module per operator. An operator is a function `propose(context) -> list[Child]`; it never
runs anything, never touches the store, and never modifies the states it is given (children are
made with explorer.search.state.derive). Every child carries the reason it was proposed, in
words a person can check ("NOP clk_prepare: panic stack 80% like the last one"), and a `detail`
dict (JSON-able) that later generations of the same operator read back from the lineage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from explorer.firmware.model import Firmware
from explorer.runner.rehost_pb2 import RunResult
from explorer.search.state import State, Target


@dataclass(frozen=True)
class Child:
    state: State
    operator: str
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Evaluated:
    """A state, the run that booted it, and how it was made (None for the initial state)."""

    state_id: str
    state: State
    result: RunResult
    made_by: Child | None = None


@dataclass(frozen=True)
class Context:
    """What an operator sees: the state being expanded and its ancestors."""

    firmware: Firmware
    target: Target
    # The state being expanded, then its parent, grandparent, ... up to the initial state.
    lineage: tuple[Evaluated, ...]

    @property
    def current(self) -> Evaluated:
        return self.lineage[0]

    @property
    def parent(self) -> Evaluated | None:
        return self.lineage[1] if len(self.lineage) > 1 else None


Operator = Callable[[Context], list[Child]]
