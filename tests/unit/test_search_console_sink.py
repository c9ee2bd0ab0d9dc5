"""The console_sink operator: a console UART without a model becomes a sink at the register the
kernel wrote its console's bytes to, its status register answering what the driver took for ready."""

from __future__ import annotations

from pathlib import Path

from explorer.runner.machine_config_pb2 import MachineConfig
from explorer.runner.rehost_pb2 import RunResult
from explorer.search.operators import Context, Evaluated, console_sink
from explorer.search.operators.collapse import EVENTS_PER_SITE
from explorer.search.state import Target, state_id
from tests.unit.test_search_console import board_firmware

UART = 0xC81004C0
DATA, CONTROL, STATUS = UART, UART + 0x8, UART + 0xC
NAMED = 'stdout-path = "serial4:115200n8";'
POLL_PC, WRITE_PC = 0xC096E238, 0xC096E254
# (address, value, is_write, pc)
Access = tuple[int, int, bool, int]


def context(accesses: list[Access], chosen: str = NAMED, state: MachineConfig | None = None) -> Context:
    result = RunResult()
    for order, (address, value, is_write, pc) in enumerate(accesses):
        result.mmio_accesses.add(address=address, size=4, value=value, pc=pc, is_write=is_write, order=order)
    state = state or MachineConfig(target="arm", cpu="cortex-a9")
    return Context(
        board_firmware(chosen), Target(Path("zImage")), (Evaluated(state_id(state), state, result),)
    )


def console_writes(text: bytes, ready: list[int]) -> list[Access]:
    """The driver's putchar: a status read it accepts, then the byte (a control write first)."""
    accesses: list[Access] = [(CONTROL, 0x1234, True, 0xC096DD1C)]
    for byte, value in zip(text, ready, strict=True):
        accesses += [(STATUS, value, False, POLL_PC), (DATA, byte, True, WRITE_PC)]
    return accesses


def test_the_data_register_becomes_the_sink_and_the_status_answers_the_value_most_accepted() -> None:
    (child,) = console_sink.propose(context(console_writes(b"[ 0", [0x4C498A45, 0x771C35AD, 0x771C35AD])))
    assert child.state.console_sink == DATA
    assert [(rule.address, rule.constant) for rule in child.state.mmio_rules] == [(STATUS, 0x771C35AD)]
    assert "0xc81004c0" in child.reason and "0xc81004cc" in child.reason and "2 of 3" in child.reason
    # Once the sink is there, nothing more.
    assert console_sink.propose(context(console_writes(b"[", [1]), state=child.state)) == []


def test_a_read_the_machine_stopped_recording_before_a_write_is_no_ready_value() -> None:
    # The status site reached the cap: its last recorded read need not be the one before the write.
    polls: list[Access] = [(STATUS, 0xBAD, False, POLL_PC)] * EVENTS_PER_SITE
    (child,) = console_sink.propose(
        context([*console_writes(b"[", [0x600D]), *polls, (DATA, 0x20, True, WRITE_PC)])
    )
    assert [rule.constant for rule in child.state.mmio_rules] == [0x600D]
    assert console_sink.propose(context([*polls, (DATA, 0x20, True, WRITE_PC)])) == []


def test_nothing_without_a_named_console_lacking_a_model_or_without_byte_writes_there() -> None:
    writes = console_writes(b"ok", [1, 1])
    assert console_sink.propose(context(writes, chosen='stdout-path = "serial0";')) == []
    assert console_sink.propose(context(writes, chosen="")) == []
    # Wider values than bytes are no console's data.
    assert console_sink.propose(context([(STATUS, 1, False, POLL_PC), (DATA, 0x1234, True, WRITE_PC)])) == []
    # Outside the UART's registers is someone else's.
    assert console_sink.propose(context([(0x1000, 1, False, POLL_PC), (0x1004, 0x41, True, WRITE_PC)])) == []
