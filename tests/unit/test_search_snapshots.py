"""Where a child may continue from its parent's snapshot: divergence_point on hand-made states and runs."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from explorer.runner.machine_config_pb2 import Device, MmioRule, Nop
from explorer.runner.rehost_pb2 import Exit, ExitReason, MmioAccess, RunResult
from explorer.search.boot_sharing import (
    MAX_SNAPSHOTS_PER_GENERATION,
    MIN_SHARED_INSTRUCTIONS,
    MIN_SHARING_CHILDREN,
    SAFETY_MARGIN,
    divergence_point,
    inherited_point,
    sharing_obstacle,
    sharing_plan,
)
from explorer.search.state import State, derive

# Shared cores: how long an example takes says nothing about the function.
UNTIMED = settings(deadline=None)

BOOT_END = 1_000_000
UART = 0x10009000
STATUS = 0x10001000
OTHER = 0x10002000


def parent_state() -> State:
    state = State(target="arm", cpu="cortex-a9", seed=3, instruction_budget=2_000_000)
    state.ram.add(base=0x60000000, size=0x20000000)
    state.mmio_rules.append(MmioRule(address=OTHER, constant=1))
    return state


def parent_run(accesses: list[tuple[int, int]], *, partial: bool = False, dropped: int = 0) -> RunResult:
    """A run that ended at BOOT_END after reading each (address, icount) in turn."""
    return RunResult(
        exit=Exit(reason=ExitReason.EXIT_BUDGET, icount=BOOT_END),
        partial=partial,
        mmio_accesses=[
            MmioAccess(address=address, size=4, pc=0xC0001000, order=order, icount=icount)
            for order, (address, icount) in enumerate(accesses)
        ],
        mmio_accesses_dropped=dropped,
    )


def with_rule(address: int, value: int):
    def add(state: State) -> None:
        state.mmio_rules.append(MmioRule(address=address, constant=value))

    return add


RUN = parent_run([(OTHER, 600_000), (STATUS, 800_000), (STATUS, 850_000)])


def test_a_changed_rule_diverges_a_margin_before_its_first_access() -> None:
    child = derive(parent_state(), with_rule(STATUS, 0))
    assert divergence_point(parent_state(), RUN, child) == 800_000 - SAFETY_MARGIN


def test_a_rule_changed_in_place_counts_as_changed() -> None:
    child = derive(parent_state(), lambda state: setattr(state.mmio_rules[0], "constant", 2))
    # OTHER's first access (600,000) is above the floor of half the boot: shared up to it.
    assert divergence_point(parent_state(), RUN, child) == 600_000 - SAFETY_MARGIN


def test_a_rule_on_an_address_the_parent_never_read_shares_up_to_the_parents_end() -> None:
    child = derive(parent_state(), with_rule(0x1FFF0000, 0))
    assert divergence_point(parent_state(), RUN, child) == BOOT_END - SAFETY_MARGIN


def test_a_point_before_half_of_the_parents_boot_is_not_worth_a_snapshot() -> None:
    early = parent_run([(STATUS, 400_000)])
    assert divergence_point(parent_state(), early, derive(parent_state(), with_rule(STATUS, 0))) is None


def test_a_truncated_stream_bounds_the_point_by_its_last_recorded_access() -> None:
    cut = parent_run([(OTHER, 600_000), (STATUS, 700_000)], dropped=5)
    child = derive(parent_state(), with_rule(0x1FFF0000, 0))
    assert divergence_point(parent_state(), cut, child) == 700_000 - SAFETY_MARGIN


def test_a_partial_parent_run_shares_nothing() -> None:
    child = derive(parent_state(), with_rule(STATUS, 0))
    assert divergence_point(parent_state(), parent_run([], partial=True), child) is None


def test_a_new_device_diverges_at_the_first_access_to_its_region() -> None:
    def add_uart(state: State) -> None:
        state.devices.append(Device(type="pl011", mmio=[UART]))

    run = parent_run([(OTHER, 600_000), (UART + 0x18, 900_000)])
    assert divergence_point(parent_state(), run, derive(parent_state(), add_uart)) == 900_000 - SAFETY_MARGIN


def test_a_device_of_unknown_size_shares_nothing() -> None:
    child = derive(parent_state(), lambda state: state.devices.append(Device(type="mystery", mmio=[UART])))
    assert divergence_point(parent_state(), RUN, child) is None


def test_a_parent_device_the_child_lacks_shares_nothing() -> None:
    parent = derive(parent_state(), lambda state: state.devices.append(Device(type="pl011", mmio=[UART])))
    assert divergence_point(parent, RUN, parent_state()) is None


def test_different_nops_share_nothing() -> None:
    child = derive(parent_state(), lambda state: state.nops.append(Nop(address=0xC0100000, name="f")))
    assert divergence_point(parent_state(), RUN, child) is None


def test_a_ticking_parent_shares_like_any_other() -> None:
    # The tick wakes an idle guest at the same instruction on every run (patch 0005), so a ticking
    # parent's point is where the answers differ, as without one.
    ticking = derive(parent_state(), lambda state: setattr(state.tick, "period_ns", 4_000_000))
    quiet = divergence_point(parent_state(), RUN, derive(parent_state(), with_rule(STATUS, 1)))
    assert quiet is not None
    assert divergence_point(ticking, RUN, derive(ticking, with_rule(STATUS, 1))) == quiet


BOOT_INPUT_CHANGES = [
    lambda state: setattr(state, "cpu", "cortex-a15"),
    lambda state: setattr(state, "instruction_budget", 3_000_000),
    lambda state: setattr(state.boot, "cmdline", "nosmp"),
    lambda state: state.ram.add(base=0x90000000, size=0x1000),
    lambda state: state.interrupt_controller.CopyFrom(Device(type="a9mpcore_priv", mmio=[0x1E000000])),
    lambda state: setattr(state, "random_unruled_reads", True),
    lambda state: setattr(state.tick, "period_ns", 1000),
]


@UNTIMED
@given(change=st.sampled_from(BOOT_INPUT_CHANGES), also_rule=st.booleans())
def test_any_difference_in_what_boots_shares_nothing(change, also_rule: bool) -> None:
    child = derive(parent_state(), change)
    if also_rule:
        child = derive(child, with_rule(STATUS, 0))
    assert divergence_point(parent_state(), RUN, child) is None


access_times = st.lists(
    st.tuples(st.sampled_from([STATUS, OTHER, UART, 0x10003000]), st.integers(1, BOOT_END)), max_size=12
).map(lambda accesses: sorted(accesses, key=lambda access: access[1]))


@UNTIMED
@given(
    accesses=access_times, rule_address=st.sampled_from([STATUS, OTHER, 0x10003000]), value=st.integers(0, 9)
)
def test_a_point_is_always_a_margin_before_every_access_whose_answer_differs(
    accesses: list[tuple[int, int]], rule_address: int, value: int
) -> None:
    child = derive(parent_state(), with_rule(rule_address, value))
    point = divergence_point(parent_state(), parent_run(accesses), child)
    touches = [icount for address, icount in accesses if address == rule_address]
    first = min(touches, default=BOOT_END)
    if first - SAFETY_MARGIN < BOOT_END // 2:
        assert point is None
    else:
        assert point == first - SAFETY_MARGIN


def test_the_same_state_shares_up_to_the_end_of_its_run() -> None:
    assert divergence_point(parent_state(), RUN, parent_state()) == BOOT_END - SAFETY_MARGIN


children_points = st.dictionaries(
    st.text("0123456789abcdef", min_size=4, max_size=4),
    st.none() | st.integers(500_000, 1_000_000).map(lambda point: point - point % 50_000),
    max_size=40,
)


@UNTIMED
@given(points=children_points, cached_share=st.floats(0, 1))
def test_a_plan_never_starts_a_child_after_its_own_point(
    points: dict[str, int | None], cached_share: float
) -> None:
    distinct = sorted({point for point in points.values() if point is not None})
    cached = set(distinct[: int(len(distinct) * cached_share)])
    plan = sharing_plan(points, cached)
    assert len(plan) <= MAX_SNAPSHOTS_PER_GENERATION
    placed = [child for group in plan.values() for child in group]
    assert len(placed) == len(set(placed))
    for point, group in plan.items():
        assert len(group) >= MIN_SHARING_CHILDREN or point in cached
        for child in group:
            child_point = points[child]
            assert child_point is not None and point <= child_point


@UNTIMED
@given(points=children_points)
def test_children_sharing_few_points_each_continue_from_their_own(points: dict[str, int | None]) -> None:
    distinct = {point for point in points.values() if point is not None}
    plan = sharing_plan(points)
    if len(distinct) <= MAX_SNAPSHOTS_PER_GENERATION and all(
        sum(point == shared for point in points.values()) >= MIN_SHARING_CHILDREN for shared in distinct
    ):
        assert plan == {
            shared: sorted(child for child, point in points.items() if point == shared) for shared in distinct
        }


def test_a_bitwise_generation_shares_one_snapshot() -> None:
    points = {f"bit{bit}": 800_000 for bit in range(32)} | {"nop": None}
    assert sharing_plan(points) == {800_000: sorted(f"bit{bit}" for bit in range(32))}


def test_a_lone_child_takes_its_snapshot_for_its_descendants() -> None:
    assert sharing_plan({"only": 800_000}) == {800_000: ["only"]}
    assert sharing_plan({"only": 800_000}, cached={800_000}) == {800_000: ["only"]}


def test_a_long_prefix_is_worth_a_snapshot_however_long_the_parent_ran() -> None:
    # The parent ran to a budget far past the point (a stuck poll, a storm): the point is early
    # in its run, but the children still skip MIN_SHARED_INSTRUCTIONS of boot each.
    first = MIN_SHARED_INSTRUCTIONS + SAFETY_MARGIN
    long_run = parent_run([(OTHER, 600_000), (STATUS, first)])
    long_run.exit.icount = 6 * MIN_SHARED_INSTRUCTIONS
    child = derive(parent_state(), with_rule(STATUS, 0))
    assert divergence_point(parent_state(), long_run, child) == MIN_SHARED_INSTRUCTIONS
    short = parent_run([(OTHER, 600_000), (STATUS, first - 1)])
    short.exit.icount = 6 * MIN_SHARED_INSTRUCTIONS
    assert divergence_point(parent_state(), short, child) is None


def test_a_grandchild_continues_from_its_grandparents_save_before_both_changes() -> None:
    # Parent -> child pins STATUS (first read at 800,000), child -> grandchild pins an address
    # the grandparent's run reads at 900,000: the grandparent's save at 700,000 serves both, one
    # at 790,000 the child but not one past it.
    grandparent = parent_state()
    run = parent_run([(OTHER, 600_000), (STATUS, 800_000), (UART, 900_000)])
    child = derive(grandparent, with_rule(STATUS, 0))
    grandchild = derive(child, with_rule(UART, 5))
    kept = [700_000, 790_000 - SAFETY_MARGIN, 850_000]
    assert inherited_point(grandparent, run, kept, child) == 790_000 - SAFETY_MARGIN
    assert inherited_point(grandparent, run, kept, grandchild) == 790_000 - SAFETY_MARGIN
    assert inherited_point(grandparent, run, [850_000], grandchild) is None
    # A NOP along the way changes the boot: no save of the grandparent's serves it.
    nopped = derive(grandchild, lambda state: state.nops.append(Nop(address=0xC0100000)))
    assert inherited_point(grandparent, run, kept, nopped) is None


def test_a_parent_stopped_by_the_machine_ends_where_its_events_last_counted() -> None:
    stuck = parent_run([(OTHER, 600_000), (STATUS, 900_000)])
    stuck.exit.icount = 0  # a stuck poll: the machine ends the run and counts nothing
    child = derive(parent_state(), with_rule(0x1FFF0000, 0))
    assert divergence_point(parent_state(), stuck, child) == 900_000 - SAFETY_MARGIN


def test_an_obstacle_names_what_differs_in_what_boots() -> None:
    nopped = derive(parent_state(), lambda state: state.nops.append(Nop(address=0xC0100000, name="f")))
    assert sharing_obstacle(parent_state(), RUN, nopped) == "differs in nops"
    faster = derive(nopped, lambda state: setattr(state, "cpu", "cortex-a15"))
    assert sharing_obstacle(parent_state(), RUN, faster) == "differs in cpu, nops"
    assert sharing_obstacle(parent_state(), parent_run([], partial=True), parent_state()) is not None
    assert sharing_obstacle(parent_state(), RUN, derive(parent_state(), with_rule(STATUS, 0))) is None


def test_another_seed_diverges_at_the_first_read_the_seed_answers() -> None:
    # OTHER has a constant rule (seed free); STATUS has none: its first read draws from the seed.
    reseeded = derive(parent_state(), lambda state: setattr(state, "seed", 4))
    assert sharing_obstacle(parent_state(), RUN, reseeded) is None
    assert divergence_point(parent_state(), RUN, reseeded) == 800_000 - SAFETY_MARGIN
    # A write draws nothing; a random rule does; an echo answers a draw until written.
    writes = parent_run([(OTHER, 600_000), (STATUS, 800_000)])
    writes.mmio_accesses[1].is_write = True
    assert divergence_point(parent_state(), writes, reseeded) == BOOT_END - SAFETY_MARGIN
    for kind in ("random", "echo"):
        drawn = derive(
            parent_state(), lambda state, kind=kind: getattr(state.mmio_rules[0], kind).SetInParent()
        )
        reseeded = derive(drawn, lambda state: setattr(state, "seed", 4))
        assert divergence_point(drawn, RUN, reseeded) == 600_000 - SAFETY_MARGIN
