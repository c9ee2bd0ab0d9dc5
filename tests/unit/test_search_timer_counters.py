"""The timer-counters operator on hand-made runs: a run that ended spinning gets its polled
registers counting up and down; nothing else does, and a register already counting is left."""

from __future__ import annotations

from pathlib import Path

from explorer.firmware.model import Firmware, Symbol, SymbolTable
from explorer.runner.machine_config_pb2 import Counter, MmioRule
from explorer.runner.rehost_pb2 import CallStack, Exit, ExitReason, Frame, HotLoop, RunResult
from explorer.search.operators import Context, Evaluated, timer_counters
from explorer.search.state import State, Target, canonical_bytes
from tests.helpers import arm_firmware

SYMBOLS = SymbolTable(
    (
        Symbol(0xC0100000, "T", "_text"),
        Symbol(0xC0300000, "t", "__timer_delay"),
        Symbol(0xC0300100, "t", "read_current_timer"),
        Symbol(0xC0400000, "t", "boot_secondary"),
        Symbol(0xC1000000, "B", "_end"),
    ),
    "kallsyms",
    0xC0100000,
    "hand-made",
)
COUNTER = 0x101C0008
STATUS = 0x10040000
LOOP_START, READ_PC = 0xC0300010, 0xC0300018


def firmware() -> Firmware:
    return arm_firmware(symbols=SYMBOLS.symbols)


def base_state() -> State:
    state = State(target="arm", cpu="cortex-a15", seed=3, instruction_budget=1000)
    state.ram.add(base=0x40000000, size=0x20000000)
    return state


def delay_loop_run(polled: tuple[int, ...] = (COUNTER,), ending: int = ExitReason.EXIT_BUDGET) -> RunResult:
    """A run that ended in __timer_delay (called by boot_secondary), reading `polled` in its loop."""
    result = RunResult(
        exit=Exit(reason=ending, icount=1000),
        hot_loops=[HotLoop(start_pc=LOOP_START, end_pc=LOOP_START + 0x10, iterations=1_000_000)],
        call_stack=CallStack(
            frames=[
                Frame(function=0xC0300000, return_address=0xC0400020),
                Frame(function=0xC0400000, return_address=0xC0100010),
            ]
        ),
    )
    for order in range(6):
        address = polled[order % len(polled)]
        result.mmio_accesses.add(address=address, size=4, value=0, pc=READ_PC, order=order)
    return result


def context(state: State, result: RunResult) -> Context:
    return Context(firmware(), Target(Path("/k")), (Evaluated("s", state, result),))


def counter_at(state: State, address: int) -> Counter | None:
    rules = [rule for rule in state.mmio_rules if rule.address == address]
    return rules[0].counter if rules and rules[0].WhichOneof("value") == "counter" else None


def test_a_run_stuck_in_a_delay_loop_gets_its_register_counting_up_and_down() -> None:
    state = base_state()
    before = canonical_bytes(state)
    up, down = timer_counters.propose(context(state, delay_loop_run()))
    assert counter_at(up.state, COUNTER) == Counter(hz=timer_counters.COUNTER_HZ, down=False)
    assert counter_at(down.state, COUNTER) == Counter(hz=timer_counters.COUNTER_HZ, down=True)
    assert "__timer_delay" in up.reason and "counts up" in up.reason and "counts down" in down.reason
    assert up.detail["address"] == COUNTER and down.detail["down"]
    assert canonical_bytes(state) == before


def test_a_rule_the_register_had_is_replaced_not_doubled() -> None:
    state = base_state()
    state.mmio_rules.append(MmioRule(address=COUNTER, constant=0x1234))
    up, _ = timer_counters.propose(context(state, delay_loop_run()))
    assert [rule.WhichOneof("value") for rule in up.state.mmio_rules] == ["counter"]


def test_a_counting_register_is_never_proposed_again() -> None:
    state = base_state()
    up, _ = timer_counters.propose(context(state, delay_loop_run()))
    assert timer_counters.propose(context(up.state, delay_loop_run())) == []
    # A loop that reads a status register beside the counter gets the status register tried.
    (status_up, status_down) = timer_counters.propose(context(up.state, delay_loop_run((COUNTER, STATUS))))
    assert status_up.detail["address"] == status_down.detail["address"] == STATUS


def test_at_most_max_addresses_registers_per_run() -> None:
    polled = (COUNTER, STATUS, STATUS + 4, STATUS + 8)
    children = timer_counters.propose(context(base_state(), delay_loop_run(polled)))
    assert len(children) == 2 * timer_counters.MAX_ADDRESSES
    assert [child.detail["address"] for child in children] == [COUNTER, COUNTER, STATUS, STATUS]


def test_nothing_for_a_run_that_ended_on_its_own_or_spun_reading_no_device() -> None:
    assert timer_counters.propose(context(base_state(), delay_loop_run(ending=ExitReason.EXIT_PANIC))) == []
    quiet = delay_loop_run()
    del quiet.mmio_accesses[:]
    assert timer_counters.propose(context(base_state(), quiet)) == []


def test_a_run_cut_at_the_stuck_read_limit_gets_the_stuck_address_first() -> None:
    # The delay loop's own code reads no device: the read is in the callee read_current_timer,
    # at the pc the runner's detail gives; no call stack came with the run.
    detail = f"stuck: 3000000 reads of 0x{COUNTER:x} (last at pc 0xc0300104)"
    stuck = RunResult(
        exit=Exit(reason=ExitReason.EXIT_BUDGET, detail=detail),
        hot_loops=[HotLoop(start_pc=0xC0400010, end_pc=0xC0400040, iterations=1_000_000)],
    )
    stuck.mmio_accesses.add(address=COUNTER, size=4, value=5, pc=0xC0300104, order=0)
    up, down = timer_counters.propose(context(base_state(), stuck))
    assert up.detail["address"] == down.detail["address"] == COUNTER
    assert up.detail["function"] == "read_current_timer"
    assert "read_current_timer" in up.reason


def test_nothing_for_a_register_whose_reads_already_moved() -> None:
    # Random answers to an unruled counter: the delay loop ends by chance, something else holds it.
    moving = delay_loop_run()
    for value, access in enumerate(moving.mmio_accesses):
        access.value = value * 7
    assert timer_counters.propose(context(base_state(), moving)) == []


def test_nothing_for_a_poll_where_the_kernel_was_not_telling_time() -> None:
    # The same spin, but under a driver's own wait (boot_secondary polling a register), no delay.
    run = delay_loop_run()
    del run.call_stack.frames[0]
    run.hot_loops[0].start_pc = 0xC0400010
    for access in run.mmio_accesses:
        access.pc = 0xC0400014
    assert timer_counters.propose(context(base_state(), run)) == []
