"""The ISA operator: PC ports touched through a MIPS I/O window become an ISA bus with QEMU's models,
and the i8259 pair the kernel programs goes between the bus's IRQs and the CPU."""

from __future__ import annotations

from pathlib import Path

from explorer.runner.analysis import USER_SPACE_MILESTONE
from explorer.runner.machine_config_pb2 import MachineConfig
from explorer.runner.rehost_pb2 import RunResult
from explorer.search.device_models import irq_values
from explorer.search.operators import Context, Evaluated, isa
from explorer.search.state import Target, state_id
from tests.helpers import arm_firmware

WINDOW = 0x1FD00000


IRQ_PC = 0x80684000
# (address, pc, is_write)
Access = tuple[int, int, bool]


def run(accesses: list[Access], user_space: bool = False) -> RunResult:
    result = RunResult()
    if user_space:
        result.milestones.add(name=USER_SPACE_MILESTONE)
    for order, (address, pc, is_write) in enumerate(accesses):
        result.mmio_accesses.add(address=address, size=1, value=0, pc=pc, is_write=is_write, order=order)
    return result


def context(state: MachineConfig, addresses: list[int]) -> Context:
    result = run([(address, 0x80100000, False) for address in addresses])
    return Context(arm_firmware(), Target(Path("vmlinuz")), (Evaluated(state_id(state), state, result),))


def with_bus() -> MachineConfig:
    state = MachineConfig(target="mipsel", cpu="24Kf")
    state.isa.io_base = WINDOW
    state.isa_devices.add(type="mc146818rtc")
    state.isa_devices.add(type="isa-serial")
    return state


def lineage(*states_and_runs: tuple[MachineConfig, list[Access]]) -> Context:
    """The first (state, its run's accesses) is the state being expanded, then its parent, ..."""
    evaluated = tuple(Evaluated(state_id(state), state, run(accesses)) for state, accesses in states_and_runs)
    return Context(arm_firmware(), Target(Path("vmlinuz")), evaluated)


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


def test_a_bus_whose_kernel_programmed_the_i8259_ports_gets_the_pair_on_the_first_free_cpu_line() -> None:
    bus = with_bus()
    programs = [(WINDOW + 0x20, 0x80120000, True), (WINDOW + 0x21, 0x80120004, True)]
    (child,) = isa.propose(lineage((bus, programs)))
    assert child.state.isa.i8259.cpu_line == 2 and not child.state.isa.i8259.acknowledge
    assert "i8259" in child.reason and "line 2" in child.reason
    assert not bus.isa.HasField("i8259")
    # A line a device drives is not free; reads of the ports alone, or none, program nothing.
    bus.devices.add(type="serial-mm", mmio=[0x1F000900], irqs=irq_values((2,)))
    assert isa.propose(lineage((bus, programs)))[0].state.isa.i8259.cpu_line == 3
    assert isa.propose(lineage((with_bus(), [(WINDOW + 0x20, 0x80120000, False)]))) == []
    # ISA IRQs already wired to CPU lines are the config's own choice: no pair on top.
    wired = with_bus()
    wired.isa.irqs.extend(irq_values((None, 2)))
    assert isa.propose(lineage((wired, programs))) == []


def test_reads_the_pairs_interrupts_brought_become_acknowledge_candidates_most_read_first() -> None:
    bus = with_bus()
    pair = MachineConfig()
    pair.CopyFrom(bus)
    pair.isa.i8259.cpu_line = 2
    before = [(0x1FE80000, 0x80300000, False), (0x1FE00118, 0x80300000, False)]
    brought = [
        *before,
        (0x1FE00118, IRQ_PC, False),
        (0x1FE80000, IRQ_PC + 8, False),
        (0x1FE80000, IRQ_PC + 8, False),
        (0x1FE00118, IRQ_PC, True),  # a write is no acknowledge
        (WINDOW + 0x20, IRQ_PC, False),  # the bus's own ports are the pair's
    ]
    children = isa.propose(lineage((pair, brought), (bus, before)))
    assert [child.state.isa.i8259.acknowledge for child in children] == [0x1FE80000, 0x1FE00118]
    assert all(child.state.isa.i8259.cpu_line == 2 for child in children)
    # The latest reads first: an unanswered interrupt holds the CPU in the handler to the end.
    assert "0x1fe80000, among the last addresses read" in children[0].reason
    # Once an acknowledge is placed, nothing more.
    assert isa.propose(lineage((children[0].state, brought), (pair, brought), (bus, before))) == []


def test_a_pair_whose_run_reached_user_space_without_the_console_moves_to_the_next_line_up_to_the_last() -> (
    None
):
    bus = with_bus()
    pair = MachineConfig()
    pair.CopyFrom(bus)
    pair.isa.i8259.cpu_line = 2
    evaluated = (
        Evaluated(state_id(pair), pair, run([], user_space=True)),
        Evaluated(state_id(bus), bus, run([])),
    )
    (child,) = isa.propose(Context(arm_firmware(), Target(Path("vmlinuz")), evaluated))
    assert child.state.isa.i8259.cpu_line == 3 and "without the console" in child.reason
    pair.isa.i8259.cpu_line = isa.CASCADE_LINES[-1]
    evaluated = (Evaluated(state_id(pair), pair, run([], user_space=True)), evaluated[1])
    assert isa.propose(Context(arm_firmware(), Target(Path("vmlinuz")), evaluated)) == []


def test_the_bus_comes_with_the_i8259_pair_when_the_same_run_programmed_its_ports_through_the_window() -> (
    None
):
    state = MachineConfig(target="mipsel", cpu="24Kf")
    touched = [(WINDOW + 0x70, 0x80110000, True), (WINDOW + 0x71, 0x80110004, False)]
    (child,) = isa.propose(lineage((state, [*touched, (WINDOW + 0xA0, 0x80120000, True)])))
    assert child.state.isa.io_base == WINDOW and child.state.isa.i8259.cpu_line == 2
    assert "i8259" in child.reason and child.detail["i8259_line"] == 2
    # The pair's ports written through another window are another bus's.
    (alone,) = isa.propose(lineage((state, [*touched, (0x1FE00000 + 0xA0, 0x80120000, True)])))
    assert not alone.state.isa.HasField("i8259")
