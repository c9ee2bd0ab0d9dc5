"""The runner's event stream: length-delimited `Event` frames (proto/rehost.proto), decoded as bytes arrive.

A frame is a base-128 varint byte count followed by that many bytes of one serialized Event.
The decoder hands each event to a sink the moment its frame is complete, so whatever it has
delivered stays delivered when the stream later turns out to be broken. It must never trust
the stream: every length is bounded, every failure is a one-line RunnerProtocolError, and the
work done is linear in the bytes fed.
"""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf.message import DecodeError

from explorer.errors import RunnerProtocolError
from explorer.runner.rehost_pb2 import Event

# The largest legitimate event is a log chunk or a deep call stack: far below this.
MAX_FRAME_BYTES = 1 << 20


def encode_varint(value: int) -> bytes:
    """Base-128 varint, least significant group first (protobuf's encoding of lengths)."""
    if value < 0:
        raise ValueError(f"a varint cannot hold {value}")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_frame(event: Event) -> bytes:
    """One frame: the length prefix, then the event (the writer's side, for tests and fakes)."""
    body = event.SerializeToString(deterministic=True)
    return encode_varint(len(body)) + body


class EventDecoder:
    """Split a byte stream into frames and decode each into an Event for `sink`.

    Feed it chunks in arrival order with `feed`, then call `finish` at end of stream. The first
    malformed frame raises RunnerProtocolError and the decoder stays failed: later calls raise
    the same error, so a caller cannot accidentally resynchronise on garbage.
    """

    def __init__(self, sink: Callable[[Event], None], max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self._sink = sink
        self._max_frame_bytes = max_frame_bytes
        self._prefix_bytes = len(encode_varint(max_frame_bytes))
        self._pending = bytearray()
        self._frames = 0
        self._error: RunnerProtocolError | None = None

    @property
    def frames(self) -> int:
        """Frames decoded and delivered so far."""
        return self._frames

    def feed(self, chunk: bytes) -> None:
        self._raise_if_failed()
        self._pending += chunk
        consumed = 0
        try:
            while frame := self._next_frame(consumed):
                start, end = frame
                self._sink(self._decode(bytes(self._pending[start:end])))
                self._frames += 1
                consumed = end
        except RunnerProtocolError as error:
            self._error = error
            raise
        finally:
            del self._pending[:consumed]

    def finish(self) -> None:
        """End of stream: a partial frame left over means the writer stopped mid-frame."""
        self._raise_if_failed()
        if self._pending:
            self._error = RunnerProtocolError(
                f"event stream ends inside frame {self._frames + 1} ({len(self._pending)} bytes left over)"
            )
            raise self._error

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _next_frame(self, offset: int) -> tuple[int, int] | None:
        """(start, end) of the frame body at `offset` when all of it has arrived, else None."""
        length = 0
        for index in range(self._prefix_bytes):
            if offset + index >= len(self._pending):
                return None
            byte = self._pending[offset + index]
            length |= (byte & 0x7F) << (7 * index)
            if not byte & 0x80:
                break
        else:
            raise RunnerProtocolError(
                f"frame {self._frames + 1}: length prefix longer than {self._prefix_bytes} bytes"
            )
        if length > self._max_frame_bytes:
            raise RunnerProtocolError(
                f"frame {self._frames + 1}: {length} bytes, more than the {self._max_frame_bytes} allowed"
            )
        start = offset + index + 1
        if start + length > len(self._pending):
            return None
        return start, start + length

    def _decode(self, body: bytes) -> Event:
        event = Event()
        try:
            event.ParseFromString(body)
        except DecodeError as error:
            raise RunnerProtocolError(f"frame {self._frames + 1} is not an Event: {error}") from None
        if event.WhichOneof("kind") is None:
            raise RunnerProtocolError(f"frame {self._frames + 1} holds no known event")
        return event
