"""Value collapse on hand-made runs: what gets pinned, what stays random, and when nothing is proposed."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from explorer.runner.machine_config_pb2 import MmioRule, Sequence
from explorer.runner.rehost_pb2 import ExitReason, Milestone, RunResult
from explorer.search.operators import Child, collapse
from explorer.search.state import SEARCH_MMIO_EVENT_LIMIT, State, canonical_bytes
from tests.unit.test_search_bitwise import SYSSTATUS, UNTIMED, base_state, context, evaluated, spinning_run

ADDRESSES = st.sampled_from([0x44E00000 + 4 * index for index in range(6)])
# Reads as (address, value, pc): pcs from a small set, so that several reads share a site.
READS = st.lists(
    st.tuples(ADDRESSES, st.integers(0, 2**32 - 1), st.sampled_from([0xC0500000, 0xC0500004, 0xC0500008])),
    max_size=40,
)


def random_state() -> State:
    state = base_state()
    state.random_unruled_reads = True
    return state


def further(result: RunResult) -> RunResult:
    """`result`, having reached one milestone more than the parent's run (which reaches none)."""
    result.milestones.append(Milestone(name="start_kernel", address=0xC0B00000, icount=10))
    return result


def run_reading(reads: list[tuple[int, int, int]]) -> RunResult:
    result = RunResult()
    result.exit.reason = ExitReason.EXIT_PANIC
    for order, (address, value, pc) in enumerate(reads):
        result.mmio_accesses.add(address=address, size=4, value=value, pc=pc, order=order)
    return further(result)


def propose(state: State, result: RunResult) -> list[Child]:
    """Collapse for `state` after its run `result`, its parent's run having reached nothing."""
    return collapse.propose(context(evaluated(state, result), evaluated(base_state(), RunResult())))


def answers(rule: MmioRule, count: int) -> list[int]:
    """What the machine's catch-all answers to `count` reads of a pinned address (rehosting_catch_all.c)."""
    if rule.WhichOneof("value") == "constant":
        return [rule.constant] * count
    values = list(rule.sequence.values)
    return [values[min(index, len(values) - 1)] for index in range(count)]


def fully_seen(reads: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """The reads, without those at a site read EVENTS_PER_SITE times or more (collapse leaves those)."""
    sites = [(address, pc) for address, _, pc in reads]
    return [read for read in reads if sites.count((read[0], read[2])) < collapse.EVENTS_PER_SITE]


@UNTIMED
@given(READS)
def test_collapse_pins_exactly_the_observed_values(reads: list[tuple[int, int, int]]) -> None:
    children = propose(random_state(), run_reading(reads))
    # An address is partly seen when any of its read sites is at the cap, whatever its other sites.
    seen = fully_seen(reads)
    partly_seen = {read[0] for read in reads if read not in seen}
    pinned = {rule.address: rule for child in children for rule in child.state.mmio_rules}
    for address in {address for address, _, _ in reads} - partly_seen:
        observed = [value for a, value, _ in reads if a == address]
        assert answers(pinned[address], len(observed)) == observed
    assert not partly_seen & pinned.keys()


@UNTIMED
@given(READS)
def test_collapse_never_modifies_the_parent_and_adds_rules_only(reads: list[tuple[int, int, int]]) -> None:
    state = random_state()
    state.mmio_rules.append(MmioRule(address=0x44E00000, constant=0x1234))
    before = canonical_bytes(state)
    for child in propose(state, run_reading(reads)):
        assert canonical_bytes(state) == before
        assert child.state.mmio_rules[0] == MmioRule(address=0x44E00000, constant=0x1234)
        del child.state.mmio_rules[1:]
        assert canonical_bytes(child.state) == before


@UNTIMED
@given(READS)
def test_collapsing_an_already_collapsed_state_proposes_nothing_new(
    reads: list[tuple[int, int, int]],
) -> None:
    result = run_reading(reads)
    for child in propose(random_state(), result):
        # The collapsed state booted as the run it was collapsed from: every read it saw is ruled.
        assert propose(child.state, result) == []


def test_a_sequence_drops_its_trailing_repeats_and_a_single_value_is_a_constant() -> None:
    assert collapse.pinned(0x10, [1, 2, 3, 3, 3]) == MmioRule(
        address=0x10, sequence=Sequence(values=[1, 2, 3])
    )
    assert collapse.pinned(0x10, [7, 7, 7]) == MmioRule(address=0x10, constant=7)
    assert collapse.pinned(0x10, list(range(collapse.MAX_SEQUENCE_VALUES))) is not None
    assert collapse.pinned(0x10, list(range(collapse.MAX_SEQUENCE_VALUES + 1))) is None


def test_the_reason_says_how_many_were_pinned_and_why() -> None:
    reads = [(0x44E00000, 1, 0xC0500000), (0x44E00004, 5, 0xC0500000), (0x44E00004, 6, 0xC0500000)]
    (child,) = propose(random_state(), run_reading(reads))
    assert child.operator == "collapse"
    assert child.reason == (
        "got further than its parent (start_kernel, 0 initcalls, panicked, 0 instructions, was no milestone, "
        "0 initcalls, 0 instructions): pin the reads of 2 addresses (1 constants, 1 sequences) "
        "so that it is reproducible"
    )


def test_a_register_read_past_the_machines_per_site_cap_stays_random() -> None:
    polled = [(0x44E00008, value, 0xC0500000) for value in range(collapse.EVENTS_PER_SITE)]
    (child,) = propose(random_state(), run_reading([(0x44E00000, 1, 0xC0500000), *polled]))
    assert [rule.address for rule in child.state.mmio_rules] == [0x44E00000]
    assert child.reason.endswith("; left random: 1 with reads never reported")


def test_the_registers_the_run_ended_spinning_on_are_left_to_the_bitwise_search() -> None:
    result = further(spinning_run())
    result.mmio_accesses.add(address=0x44E00000, size=4, value=3, pc=0xC0500000, order=100)
    (child,) = propose(random_state(), result)
    assert [rule.address for rule in child.state.mmio_rules] == [0x44E00000]
    assert child.detail["spin_registers"] == [SYSSTATUS]


def test_a_cut_event_stream_is_said_in_the_reason() -> None:
    result = run_reading([(0x44E00000, 1, 0xC0500000)])
    result.mmio_accesses_dropped = SEARCH_MMIO_EVENT_LIMIT
    (child,) = propose(random_state(), result)
    assert child.detail["stream_cut"]
    assert child.reason.endswith("the runner stopped reporting accesses part way, later reads are unknown")


def test_nothing_is_proposed_without_progress_a_parent_or_random_reads() -> None:
    reads = [(0x44E00000, 1, 0xC0500000)]
    not_further = run_reading(reads)
    del not_further.milestones[:]
    assert propose(random_state(), not_further) == []
    assert collapse.propose(context(evaluated(random_state(), run_reading(reads)))) == []
    # Unruled reads are 0 wherever they happen: already reproducible.
    assert propose(base_state(), run_reading(reads)) == []
