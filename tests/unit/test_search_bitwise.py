"""Bitwise value search on hand-made runs: which children a spin gets, and how a search narrows."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from explorer.firmware.model import Firmware, Symbol, SymbolTable
from explorer.runner.machine_config_pb2 import MmioRule
from explorer.runner.rehost_pb2 import CallStack, Exit, ExitReason, Frame, HotLoop, RunResult
from explorer.search.operators import Child, Context, Evaluated, bitwise
from explorer.search.state import State, Target, canonical_bytes
from tests.helpers import arm_firmware

# Shared cores: how long an example takes says nothing about the operator.
UNTIMED = settings(deadline=None)

SYMBOLS = SymbolTable(
    (
        Symbol(0xC0100000, "T", "_text"),
        Symbol(0xC0300000, "t", "calibrate_delay"),
        Symbol(0xC0400000, "t", "omap_irq_soft_reset"),
        Symbol(0xC0400080, "t", "intc_of_init"),
        Symbol(0xC1000000, "B", "_end"),
    ),
    "kallsyms",
    0xC0100000,
    "hand-made",
)
SYSSTATUS = 0x48200014
SYSCONFIG = 0x48200010
# The polling loop of omap_irq_soft_reset, and the pc of its read.
LOOP_START, LOOP_END, POLL_PC = 0xC0400010, 0xC0400020, 0xC0400014
OTHER_LOOP_START, OTHER_POLL_PC = 0xC0300010, 0xC0300014


def firmware() -> Firmware:
    return arm_firmware(symbols=SYMBOLS.symbols)


def base_state() -> State:
    state = State(target="arm", cpu="cortex-a8", seed=7, instruction_budget=1000)
    state.ram.add(base=0x80000000, size=0x20000000)
    return state


def spinning_run(
    polled: tuple[int, ...] = (SYSSTATUS,),
    size: int = 4,
    written: tuple[int, ...] = (),
    loop_start: int = LOOP_START,
    poll_pc: int = POLL_PC,
) -> RunResult:
    """A run that ran out of instructions polling `polled` in a loop at `loop_start`, after writing
    `written`; the loop's function is on the call stack at the exit."""
    result = RunResult(
        exit=Exit(reason=ExitReason.EXIT_BUDGET, icount=1000),
        hot_loops=[HotLoop(start_pc=loop_start, end_pc=loop_start + 0x10, iterations=1_000_000)],
        call_stack=CallStack(
            frames=[
                Frame(function=loop_start & ~0xFF, return_address=0xC04000A4),
                Frame(function=0xC0400080, return_address=0xC0100010),
            ]
        ),
    )
    order = 0
    for address in written:
        result.mmio_accesses.add(
            address=address, size=size, value=2, pc=poll_pc - 8, is_write=True, order=order
        )
        order += 1
    for _ in range(3):
        for address in polled:
            result.mmio_accesses.add(address=address, size=size, value=0, pc=poll_pc, order=order)
            order += 1
    return result


def evaluated(state: State, result: RunResult, made_by: Child | None = None) -> Evaluated:
    return Evaluated(state_id="-", state=state, result=result, made_by=made_by)


def context(*lineage: Evaluated) -> Context:
    return Context(firmware=firmware(), target=Target(kernel=Path("zImage")), lineage=lineage)


def rule_at(state: State, address: int) -> MmioRule:
    (rule,) = [rule for rule in state.mmio_rules if rule.address == address]
    return rule


def child_with(children: list[Child], kind: str, bits: list[int]) -> Child:
    (child,) = [c for c in children if c.detail["kind"] == kind and c.detail["bits"] == bits]
    return child


def test_a_spin_on_the_intc_reset_gets_each_bit_then_zero_and_ones_with_reasons() -> None:
    children = bitwise.propose(context(evaluated(base_state(), spinning_run())))
    assert len(children) == 34
    bit0 = child_with(children, "bit", [0])
    assert bit0.reason == "spins in omap_irq_soft_reset polling 0x48200014: try 0x48200014 bit 0 (0x1)"
    assert rule_at(bit0.state, SYSSTATUS) == MmioRule(address=SYSSTATUS, constant=1)
    assert child_with(children, "zero", []).reason.endswith("try 0x48200014 all zero (0x0)")
    assert bit0.detail["loop"] == LOOP_START and bit0.detail["polled"] == [SYSSTATUS]


@UNTIMED
@given(
    size=st.sampled_from([1, 2, 4, 8]),
    existing=st.lists(st.integers(0, 2**32 - 1), max_size=4, unique=True),
)
def test_one_child_per_bit_of_the_register_plus_all_zero_and_all_ones(size: int, existing: list[int]) -> None:
    parent = base_state()
    parent.mmio_rules.extend(MmioRule(address=a, constant=5) for a in existing if a != SYSSTATUS)
    children = bitwise.propose(context(evaluated(parent, spinning_run(size=size))))
    values = [rule_at(child.state, SYSSTATUS).constant for child in children]
    width = size * 8
    assert len(children) == width + 2
    assert sorted(values) == sorted({0, (1 << width) - 1} | {1 << bit for bit in range(width)})


@UNTIMED
@given(
    existing=st.dictionaries(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), max_size=5),
    written=st.booleans(),
)
def test_children_never_modify_the_parent_and_differ_only_at_the_polled_register(
    existing: dict[int, int], written: bool
) -> None:
    parent = base_state()
    parent.mmio_rules.extend(MmioRule(address=a, constant=v) for a, v in existing.items())
    before = canonical_bytes(parent)
    result = spinning_run(written=(SYSSTATUS,) if written else ())
    for child in bitwise.propose(context(evaluated(parent, result))):
        assert canonical_bytes(parent) == before
        others = [rule for rule in child.state.mmio_rules if rule.address != SYSSTATUS]
        assert others == [rule for rule in parent.mmio_rules if rule.address != SYSSTATUS]
        # The rule at the register replaces the parent's in place: rule order is kept.
        assert [rule.address for rule in child.state.mmio_rules][: len(parent.mmio_rules)] == [
            rule.address for rule in parent.mmio_rules
        ]
        unruled = State()
        unruled.CopyFrom(child.state)
        del unruled.mmio_rules[:]
        assert canonical_bytes(unruled) == canonical_bytes(_without_rules(parent))


def _without_rules(state: State) -> State:
    copy = State()
    copy.CopyFrom(state)
    del copy.mmio_rules[:]
    return copy


def test_a_register_the_driver_writes_keeps_its_other_bits_echoing() -> None:
    children = bitwise.propose(context(evaluated(base_state(), spinning_run(written=(SYSSTATUS,)))))
    bit3 = child_with(children, "bit", [3])
    assert rule_at(bit3.state, SYSSTATUS).forced_bits.and_mask == 0xFFFFFFF7
    assert rule_at(bit3.state, SYSSTATUS).forced_bits.or_mask == 0x8
    assert bit3.reason.endswith("force 0x48200014 bit 3 (0x8), other bits echo the driver's writes")
    # All zero and all ones are every bit at once: constants.
    assert rule_at(child_with(children, "zero", []).state, SYSSTATUS) == MmioRule(
        address=SYSSTATUS, constant=0
    )


def test_a_write_after_the_last_read_does_not_make_the_register_echo() -> None:
    result = spinning_run()
    result.mmio_accesses.add(address=SYSSTATUS, size=4, value=1, pc=POLL_PC + 4, is_write=True, order=99)
    children = bitwise.propose(context(evaluated(base_state(), result)))
    assert rule_at(child_with(children, "bit", [0]).state, SYSSTATUS).WhichOneof("value") == "constant"


def test_a_run_that_ended_on_its_own_or_elsewhere_gets_nothing() -> None:
    panicked = spinning_run()
    panicked.exit.reason = ExitReason.EXIT_PANIC
    assert bitwise.propose(context(evaluated(base_state(), panicked))) == []
    # Ran out of instructions, but in calibrate_delay: the polling loop was left long before.
    elsewhere = spinning_run()
    elsewhere.call_stack.frames[0].function = 0xC0300000
    del elsewhere.call_stack.frames[1:]
    assert bitwise.propose(context(evaluated(base_state(), elsewhere))) == []
    no_reads = spinning_run(polled=())
    assert bitwise.propose(context(evaluated(base_state(), no_reads))) == []


def test_one_register_per_generation_the_first_polled() -> None:
    children = bitwise.propose(context(evaluated(base_state(), spinning_run(polled=(SYSSTATUS, SYSCONFIG)))))
    assert {child.detail["address"] for child in children} == {SYSSTATUS}
    assert children[0].reason.startswith("spins in omap_irq_soft_reset polling 0x48200014, 0x48200010: ")


def search_step(parent: State, parent_run: RunResult, choice: Child, child_run: RunResult) -> Context:
    """The context of expanding `choice` (a bitwise child of `parent`) after it ran as `child_run`."""
    return context(evaluated(choice.state, child_run, choice), evaluated(parent, parent_run))


def test_a_value_that_ended_the_loop_stays_and_the_next_spin_gets_a_fresh_search() -> None:
    first = bitwise.propose(context(evaluated(base_state(), spinning_run())))
    winner = child_with(first, "bit", [0])
    moved_on = spinning_run(polled=(0x44E00060,), loop_start=OTHER_LOOP_START, poll_pc=OTHER_POLL_PC)
    children = bitwise.propose(search_step(base_state(), spinning_run(), winner, moved_on))
    assert len(children) == 34
    assert {child.detail["address"] for child in children} == {0x44E00060}
    assert all(rule_at(child.state, SYSSTATUS).constant == 1 for child in children)
    assert children[0].reason.startswith("spins in calibrate_delay polling 0x44e00060: ")


def test_a_poll_that_appears_in_the_same_loop_is_searched_keeping_the_value() -> None:
    first = bitwise.propose(context(evaluated(base_state(), spinning_run())))
    bit2 = child_with(first, "bit", [2])
    children = bitwise.propose(
        search_step(base_state(), spinning_run(), bit2, spinning_run(polled=(SYSSTATUS, SYSCONFIG)))
    )
    assert len(children) == 34 and {child.detail["address"] for child in children} == {SYSCONFIG}
    assert all(rule_at(child.state, SYSSTATUS).constant == 4 for child in children)
    assert "with 0x48200014 = 0x4 it also polls 0x48200010; try 0x48200010 bit 0" in children[2].reason


def test_a_bit_that_changed_what_the_loop_polls_but_did_not_end_it_is_tried_in_pairs() -> None:
    parent_run = spinning_run(polled=(SYSSTATUS, SYSCONFIG))
    first = bitwise.propose(context(evaluated(base_state(), parent_run)))
    bit5 = child_with(first, "bit", [5])
    children = bitwise.propose(search_step(base_state(), parent_run, bit5, spinning_run(polled=(SYSSTATUS,))))
    assert len(children) == 31
    assert sorted(rule_at(child.state, SYSSTATUS).constant for child in children) == sorted(
        (1 << 5) | (1 << other) for other in range(32) if other != 5
    )
    assert "0x48200014 = 0x20 stopped it polling 0x48200010 but not the loop, so pairs" in children[0].reason


def test_pairs_reached_from_either_bit_are_the_same_state() -> None:
    parent_run = spinning_run(polled=(SYSSTATUS, SYSCONFIG))
    first = bitwise.propose(context(evaluated(base_state(), parent_run)))
    after = spinning_run(polled=(SYSSTATUS,))
    from_1 = bitwise.propose(search_step(base_state(), parent_run, child_with(first, "bit", [1]), after))
    from_4 = bitwise.propose(search_step(base_state(), parent_run, child_with(first, "bit", [4]), after))
    assert canonical_bytes(child_with(from_1, "pair", [1, 4]).state) == canonical_bytes(
        child_with(from_4, "pair", [4, 1]).state
    )


def test_only_the_all_zero_child_moves_on_to_the_next_polled_register() -> None:
    parent_run = spinning_run(polled=(SYSSTATUS, SYSCONFIG))
    first = bitwise.propose(context(evaluated(base_state(), parent_run)))
    zero, bit0 = child_with(first, "zero", []), child_with(first, "bit", [0])
    next_register = bitwise.propose(search_step(base_state(), parent_run, zero, parent_run))
    assert {child.detail["address"] for child in next_register} == {SYSCONFIG}
    assert all(rule_at(child.state, SYSSTATUS).constant == 0 for child in next_register)
    assert "0x48200014 = 0x0 did not end the loop, so the next register" in next_register[0].reason
    # A single bit that changed nothing is a dead end: its siblings cover the other values.
    assert bitwise.propose(search_step(base_state(), parent_run, bit0, parent_run)) == []


def test_a_search_looks_through_other_operators_steps_in_between() -> None:
    first = bitwise.propose(context(evaluated(base_state(), spinning_run())))
    bit0 = child_with(first, "bit", [0])
    collapsed = Child(bit0.state, "collapse", "pinned", {})
    lineage = (
        evaluated(bit0.state, spinning_run(), collapsed),
        evaluated(bit0.state, spinning_run(), bit0),
        evaluated(base_state(), spinning_run()),
    )
    # Still the same loop, nothing changed: bit 0 was a dead end, not a fresh spin to search again.
    assert bitwise.propose(context(*lineage)) == []


def test_several_polled_addresses_also_get_a_child_pinning_each_to_its_last_value() -> None:
    run = spinning_run(polled=(SYSSTATUS, SYSCONFIG))
    run.mmio_accesses.add(address=SYSCONFIG, size=4, value=0x1234, pc=POLL_PC, order=99)
    (steady,) = [
        child
        for child in bitwise.propose(context(evaluated(base_state(), run)))
        if child.detail["kind"] == "steady"
    ]
    assert rule_at(steady.state, SYSSTATUS).constant == 0
    assert rule_at(steady.state, SYSCONFIG).constant == 0x1234
    assert "so reads agree" in steady.reason
    single = bitwise.propose(context(evaluated(base_state(), spinning_run())))
    assert all(child.detail["kind"] != "steady" for child in single)
