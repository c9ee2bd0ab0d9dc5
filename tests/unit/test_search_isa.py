"""The ISA operator: PC ports touched through a MIPS I/O window become an ISA bus with QEMU's models."""

from __future__ import annotations

from pathlib import Path

from explorer.runner.machine_config_pb2 import MachineConfig
from explorer.runner.rehost_pb2 import RunResult
from explorer.search.operators import Context, Evaluated, isa
from explorer.search.state import Target, state_id
from tests.helpers import arm_firmware

WINDOW = 0x1FD00000


def context(state: MachineConfig, addresses: list[int]) -> Context:
    result = RunResult()
    for order, address in enumerate(addresses):
        result.mmio_accesses.add(address=address, size=1, value=0, pc=0x80100000, order=order)
    return Context(arm_firmware(), Target(Path("vmlinuz")), (Evaluated(state_id(state), state, result),))


def test_rtc_ports_through_a_window_give_an_isa_bus_with_the_clock_and_the_uart_touched() -> None:
    state = MachineConfig(target="mipsel", cpu="24Kf")
    addresses = [WINDOW + 0x70, WINDOW + 0x71, WINDOW + 0x3FD, 0x1FE00000 + 0x70]
    (child,) = isa.propose(context(state, addresses))
    assert child.state.isa.io_base == WINDOW
    assert [device.type for device in child.state.isa_devices] == ["mc146818rtc", "isa-serial"]
    assert "MC146818" in child.reason and f"0x{WINDOW:x}" in child.reason
    assert not state.HasField("isa")
    # Once the bus is there, nothing more; and never without the clock's ports, nor for ARM.
    assert isa.propose(context(child.state, addresses)) == []
    assert isa.propose(context(state, [WINDOW + 0x3F8])) == []
    assert isa.propose(context(MachineConfig(target="arm", cpu="cortex-a9"), addresses)) == []
