"""RunResult: what one run observed, folded from the runner's events, stored as deterministic bytes.

The protobuf message (proto/rehost.proto) is the type: the master keeps no second copy of
the schema. A RunResult holds nothing about the host (no wall time, no pid), so the same state
and seed give the same bytes. It must never score or interpret: that is explorer.runner.analysis.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import DecodeError

from explorer.errors import BadInput
from explorer.runner.rehost_pb2 import Event, Exit, RunResult


@dataclass(frozen=True)
class ResultBounds:
    """What the master keeps of one run, whatever the runner sends."""

    mmio_accesses: int = 65536
    log_bytes: int = 1 << 20
    hot_loops: int = 256
    initcalls: int = 16384
    milestones: int = 1024
    # The plugin tracks at most 128 kernel threads (THREADS_MAX in native/rehost_plugin/rehost.h).
    threads: int = 128


class BoundedBytes:
    """A byte stream kept as its first and last `limit // 2` bytes plus a count of the rest."""

    def __init__(self, limit: int) -> None:
        self._head_limit = limit // 2
        self._tail_limit = limit - self._head_limit
        self._head = bytearray()
        self._tail = bytearray()
        self.dropped = 0

    def append(self, chunk: bytes) -> None:
        room = self._head_limit - len(self._head)
        self._head += chunk[:room]
        self._tail += chunk[room:] if room > 0 else chunk
        excess = len(self._tail) - self._tail_limit
        if excess > 0:
            del self._tail[:excess]
            self.dropped += excess

    def value(self) -> bytes:
        return bytes(self._head + self._tail)

    def __len__(self) -> int:
        return len(self._head) + len(self._tail)


class ResultBuilder:
    """The events sink of one run: keeps them in arrival order, bounded, until `finish`."""

    def __init__(self, bounds: ResultBounds | None = None) -> None:
        self._bounds = bounds or ResultBounds()
        self._result = RunResult()
        self._log = BoundedBytes(self._bounds.log_bytes)
        self.exit: Exit | None = None

    def add(self, event: Event) -> None:
        result, bounds = self._result, self._bounds
        kind = event.WhichOneof("kind")
        if kind == "milestone" and len(result.milestones) < bounds.milestones:
            result.milestones.append(event.milestone)
        elif kind == "initcall" and len(result.initcalls) < bounds.initcalls:
            result.initcalls.append(event.initcall)
        elif kind == "mmio_access":
            if len(result.mmio_accesses) < bounds.mmio_accesses:
                result.mmio_accesses.append(event.mmio_access)
            else:
                result.mmio_accesses_dropped += 1
        elif kind == "log":
            self._log.append(event.log.text)
        elif kind == "hot_loop" and len(result.hot_loops) < bounds.hot_loops:
            result.hot_loops.append(event.hot_loop)
        elif kind == "call_stack":
            result.call_stack.CopyFrom(event.call_stack)
        elif kind == "thread_stack" and len(result.threads) < bounds.threads:
            result.threads.append(event.thread_stack)
        elif kind == "coverage":
            result.coverage.CopyFrom(event.coverage)
        elif kind == "exit" and self.exit is None:
            self.exit = event.exit

    def finish(self, ending: Exit, console: BoundedBytes, partial_reason: str = "") -> RunResult:
        """The result: `ending` as decided by whoever ran it, partial when `partial_reason` is given."""
        result = RunResult()
        result.CopyFrom(self._result)
        result.exit.CopyFrom(ending)
        result.partial = bool(partial_reason)
        result.partial_reason = partial_reason
        result.log = self._log.value()
        result.log_dropped = self._log.dropped
        result.console = console.value()
        result.console_dropped = console.dropped
        return result


def serialize(result: RunResult) -> bytes:
    """Bytes that depend only on the result's content (the master stores and compares these)."""
    return result.SerializeToString(deterministic=True)


def deserialize(data: bytes) -> RunResult:
    result = RunResult()
    try:
        result.ParseFromString(data)
    except DecodeError as error:
        raise BadInput(f"stored run result is corrupt: {error}") from None
    return result
