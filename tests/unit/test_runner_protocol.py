"""The event stream: frames round-trip whatever the chunking; a broken stream fails one way, fast."""

from __future__ import annotations

import itertools

import pytest
from google.protobuf.internal.encoder import _VarintBytes  # the reference encoder, private
from hypothesis import given, settings
from hypothesis import strategies as st

from explorer.errors import RunnerProtocolError
from explorer.runner.protocol import MAX_FRAME_BYTES, EventDecoder, encode_frame, encode_varint
from explorer.runner.rehost_pb2 import (
    CallStack,
    Event,
    Exit,
    ExitReason,
    Frame,
    HotLoop,
    Initcall,
    Log,
    Milestone,
    MmioAccess,
)

# Speed is not the property: on a shared two-core machine a per-example deadline only flakes.
PROPERTY = settings(deadline=None)

u64 = st.integers(min_value=0, max_value=2**64 - 1)

events = st.one_of(
    st.builds(lambda n, a, i: Event(milestone=Milestone(name=n, address=a, icount=i)), st.text(), u64, u64),
    st.builds(lambda a, i: Event(initcall=Initcall(address=a, icount=i)), u64, u64),
    st.builds(
        lambda a, s, v, pc, w, o: Event(
            mmio_access=MmioAccess(address=a, size=s, value=v, pc=pc, is_write=w, order=o)
        ),
        u64,
        st.sampled_from([1, 2, 4, 8]),
        u64,
        u64,
        st.booleans(),
        u64,
    ),
    st.builds(lambda t: Event(log=Log(text=t)), st.binary(max_size=300)),
    st.builds(
        lambda s, e, n, r: Event(hot_loop=HotLoop(start_pc=s, end_pc=e, iterations=n, mmio_reads=r)),
        u64,
        u64,
        u64,
        st.lists(u64, max_size=5),
    ),
    st.builds(
        lambda frames: Event(
            call_stack=CallStack(frames=[Frame(function=f, return_address=r) for f, r in frames])
        ),
        st.lists(st.tuples(u64, u64), max_size=8),
    ),
    st.builds(
        lambda r, i, d: Event(exit=Exit(reason=r, icount=i, detail=d)),
        st.sampled_from(list(ExitReason.values())),
        u64,
        st.text(),
    ),
)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[start:end] for start, end in itertools.pairwise(points)]


def decode_all(chunks: list[bytes]) -> list[Event]:
    received: list[Event] = []
    decoder = EventDecoder(received.append)
    for chunk in chunks:
        decoder.feed(chunk)
    decoder.finish()
    return received


@PROPERTY
@given(st.lists(events, max_size=20), st.lists(st.integers(min_value=0), max_size=30))
def test_frames_round_trip_whatever_the_chunking(sent: list[Event], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(event) for event in sent)
    assert decode_all(chunked(stream, cuts)) == sent


@PROPERTY
@given(st.binary(max_size=4096), st.lists(st.integers(min_value=0), max_size=20))
def test_garbage_only_ever_raises_the_protocol_error(garbage: bytes, cuts: list[int]) -> None:
    # Terminates by construction (work is linear in the input); hypothesis' deadline guards speed.
    try:
        decode_all(chunked(garbage, cuts))
    except RunnerProtocolError as error:
        assert "\n" not in str(error)


@PROPERTY
@given(st.lists(events, min_size=1, max_size=10), st.binary(min_size=1, max_size=512))
def test_events_before_garbage_are_kept(sent: list[Event], garbage: bytes) -> None:
    received: list[Event] = []
    decoder = EventDecoder(received.append)
    stream = b"".join(encode_frame(event) for event in sent)
    try:
        decoder.feed(stream + garbage)
        decoder.finish()
    except RunnerProtocolError:
        pass
    assert received[: len(sent)] == sent


def test_truncated_last_frame_fails_at_finish_after_delivering_the_complete_ones() -> None:
    first, second = Event(log=Log(text=b"Booting Linux")), Event(initcall=Initcall(address=0xC0A00000))
    received: list[Event] = []
    decoder = EventDecoder(received.append)
    decoder.feed(encode_frame(first) + encode_frame(second)[:-1])
    assert received == [first]
    with pytest.raises(RunnerProtocolError, match="ends inside frame 2"):
        decoder.finish()


def test_oversize_length_fails_before_the_body_arrives() -> None:
    decoder = EventDecoder(lambda event: None)
    with pytest.raises(RunnerProtocolError, match="more than the"):
        decoder.feed(encode_varint(MAX_FRAME_BYTES + 1))


def test_endless_length_prefix_fails_within_a_few_bytes() -> None:
    decoder = EventDecoder(lambda event: None)
    with pytest.raises(RunnerProtocolError, match="length prefix longer"):
        decoder.feed(b"\xff" * 8)


def test_frame_without_an_event_is_rejected() -> None:
    decoder = EventDecoder(lambda event: None)
    with pytest.raises(RunnerProtocolError, match="frame 1 holds no known event"):
        decoder.feed(b"\x00")


def test_a_failed_decoder_stays_failed() -> None:
    received: list[Event] = []
    decoder = EventDecoder(received.append)
    with pytest.raises(RunnerProtocolError):
        decoder.feed(b"\x02\xff\xff")
    with pytest.raises(RunnerProtocolError):
        decoder.feed(encode_frame(Event(log=Log(text=b"after the garbage"))))
    assert received == []


@PROPERTY
@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_varint_is_protobufs_own_encoding(value: int) -> None:
    assert encode_varint(value) == _VarintBytes(value)
