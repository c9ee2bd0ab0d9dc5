"""RunResult: folded from events within bounds, serialized to the same bytes for the same content."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from explorer.errors import BadInput
from explorer.runner.rehost_pb2 import Event, Exit, ExitReason, Log, Milestone, MmioAccess
from explorer.runner.result import BoundedBytes, ResultBounds, ResultBuilder, deserialize, serialize

# Speed is not the property: on a shared two-core machine a per-example deadline only flakes.
PROPERTY = settings(deadline=None)


@PROPERTY
@given(st.lists(st.binary(max_size=200), max_size=30), st.integers(min_value=0, max_value=300))
def test_bounded_bytes_keeps_head_and_tail_and_counts_the_rest(chunks: list[bytes], limit: int) -> None:
    captured = BoundedBytes(limit)
    for chunk in chunks:
        captured.append(chunk)
    stream = b"".join(chunks)
    kept = captured.value()
    assert len(kept) == min(len(stream), limit)
    assert len(kept) + captured.dropped == len(stream)
    head = limit // 2
    assert kept[:head] == stream[:head]
    tail = len(kept) - min(head, len(kept))
    assert kept[len(kept) - tail :] == stream[len(stream) - tail :]


def boot_events() -> list[Event]:
    return [
        Event(milestone=Milestone(name="start_kernel", address=0xC0B00A2C, icount=1000)),
        Event(log=Log(text=b"Booting Linux on physical CPU 0x0\n")),
        *(
            Event(mmio_access=MmioAccess(address=0x48200010, size=4, value=0, pc=0xC0123456, order=n))
            for n in range(10)
        ),
        Event(log=Log(text=b"Kernel panic - not syncing\n")),
        Event(exit=Exit(reason=ExitReason.EXIT_PANIC, icount=99_000, detail="not syncing")),
    ]


def build(events: list[Event], bounds: ResultBounds | None = None) -> ResultBuilder:
    builder = ResultBuilder(bounds)
    for event in events:
        builder.add(event)
    return builder


def test_events_fold_into_the_result_in_arrival_order() -> None:
    builder = build(boot_events())
    assert builder.exit is not None
    result = builder.finish(builder.exit, BoundedBytes(1024))
    assert [m.name for m in result.milestones] == ["start_kernel"]
    assert [a.order for a in result.mmio_accesses] == list(range(10))
    assert result.log == b"Booting Linux on physical CPU 0x0\nKernel panic - not syncing\n"
    assert result.exit.reason == ExitReason.EXIT_PANIC and not result.partial


def test_mmio_accesses_beyond_the_bound_are_counted_not_kept() -> None:
    builder = build(boot_events(), ResultBounds(mmio_accesses=3))
    result = builder.finish(Exit(reason=ExitReason.EXIT_TIMEOUT), BoundedBytes(0), "deadline")
    assert len(result.mmio_accesses) == 3 and result.mmio_accesses_dropped == 7
    assert result.partial and result.partial_reason == "deadline"


def test_the_first_exit_event_is_the_one_kept() -> None:
    builder = build([*boot_events(), Event(exit=Exit(reason=ExitReason.EXIT_HALT))])
    assert builder.exit is not None and builder.exit.reason == ExitReason.EXIT_PANIC


def test_same_content_serializes_to_the_same_bytes_and_reads_back() -> None:
    def one_run() -> bytes:
        builder = build(boot_events())
        console = BoundedBytes(64)
        console.append(b"Uncompressing Linux... done, booting the kernel.\n" * 3)
        assert builder.exit is not None
        return serialize(builder.finish(builder.exit, console))

    first = one_run()
    assert one_run() == first
    assert serialize(deserialize(first)) == first


def test_corrupt_stored_result_is_bad_input() -> None:
    with pytest.raises(BadInput, match="corrupt"):
        deserialize(b"\x0a\xff")
