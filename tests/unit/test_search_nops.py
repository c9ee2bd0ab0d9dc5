"""NOP escalation on call stacks built here: which frame a crash NOPs, when it escalates, when it stops."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from explorer.firmware.model import Symbol
from explorer.runner.rehost_pb2 import CallStack, Exit, ExitReason, Frame, RunResult
from explorer.search.operators import Child, Context, Evaluated
from explorer.search.operators.nops import (
    BOUNDARY,
    OPERATOR,
    TRAMPOLINES,
    crash_of,
    is_panic_path,
    propose,
    stack_similarity,
)
from explorer.search.state import State, Target, state_id
from tests.helpers import arm_firmware

# Functions of the stacks measured on armmp (nops.py's docstring), plus made-up drivers (foo, bar).
NAMES = (
    "panic",
    "make_task_dead",
    "die",
    "__und_fault",
    "_printk",
    "arch_timer_of_init",
    "sun4i_timer_init",
    "timer_probe",
    "time_init",
    "start_kernel",
    "clk_get",
    "foo_probe",
    "platform_probe",
    "really_probe",
    "driver_probe_device",
    "foo_init",
    "bar_init",
    "do_one_initcall",
    "kernel_init",
    "ret_from_fork",
    "show_stack",
    "dump_stack",
    "dequeue_task_idle",
    "__schedule",
    "schedule",
    "usleep_range_state",
    "clk_pllv3_wait_lock",
    "__gnu_mcount_nc",
    "do_idle",
)
FAILING_CODE = [name for name in NAMES if not is_panic_path(name) and name not in BOUNDARY | TRAMPOLINES]
ADDRESS = {name: 0xC0300000 + 0x1000 * index for index, name in enumerate(NAMES)}
FIRMWARE = arm_firmware(tuple(Symbol(address, "T", name) for name, address in ADDRESS.items()))
ARCH_TIMER_PANIC = (
    "panic",
    "make_task_dead",
    "die",
    "__und_fault",
    "arch_timer_of_init",
    "timer_probe",
    "time_init",
)
RETURN_ENODEV = 0xFFFFFFED


def frames(*names: str) -> list[Frame]:
    """Frames innermost first; each returns into the middle of the next (or of start_kernel)."""
    callers = [*names[1:], "start_kernel"]
    return [
        Frame(function=ADDRESS[name], return_address=ADDRESS[caller] + 0x40)
        for name, caller in zip(names, callers, strict=True)
    ]


def crashed(*names: str, reason: ExitReason = ExitReason.EXIT_PANIC, log: bytes = b"") -> RunResult:
    return RunResult(
        exit=Exit(reason=reason, icount=1000, detail="Attempted to kill the idle task!"),
        call_stack=CallStack(frames=frames(*names)),
        log=log,
    )


def context(*lineage: tuple[State, RunResult, Child | None]) -> Context:
    """The state being expanded first, then its ancestors."""
    evaluated = tuple(
        Evaluated(state_id(state), state, result, made_by) for state, result, made_by in lineage
    )
    return Context(FIRMWARE, Target(kernel=Path("zImage")), evaluated)


def nopped(child: Child) -> dict[str, int]:
    return {nop.name: nop.return_value for nop in child.state.nops}


def test_a_panic_nops_the_first_frame_above_the_panic_path_returning_0_and_enodev() -> None:
    result = crashed(*ARCH_TIMER_PANIC, log=b"Internal error: Oops - undefined instruction: 0 [#1] SMP ARM\n")
    children = propose(context((State(), result, None)))
    assert [nopped(child) for child in children] == [
        {"arch_timer_of_init": 0},
        {"arch_timer_of_init": RETURN_ENODEV},
    ]
    assert children[0].operator == OPERATOR
    assert children[0].reason == (
        "panic 'Attempted to kill the idle task!' after 'Internal error: Oops - undefined instruction: "
        "0 [#1] SMP ARM' in arch_timer_of_init <- timer_probe <- time_init: NOP arch_timer_of_init (return 0)"
    )
    assert children[1].reason.endswith("NOP arch_timer_of_init (return -ENODEV)")
    assert children[0].detail["name"] == "arch_timer_of_init" and children[0].detail["frame"] == 0


def test_helpers_inside_the_panic_path_are_passed_over_whatever_their_names() -> None:
    # printk is no panic-path function, but it was called by die: the failing code is above die.
    result = crashed(
        "_printk", "panic", "make_task_dead", "die", "__und_fault", "foo_probe", "platform_probe"
    )
    assert nopped(propose(context((State(), result, None)))[0]) == {"foo_probe": 0}


def test_a_budget_exit_inside_fault_handling_is_a_crash_and_a_clean_one_is_not() -> None:
    stuck = crashed(
        "_printk",
        "die",
        "__und_fault",
        "foo_probe",
        "platform_probe",
        reason=ExitReason.EXIT_BUDGET,
        log=b"Unable to handle kernel NULL pointer dereference at virtual address 00000000\n",
    )
    crash = crash_of(stuck, FIRMWARE.symbols)
    assert crash is not None and crash.describe() == "foo_probe <- platform_probe"
    assert crash.message == (
        "'Unable to handle kernel NULL pointer dereference at virtual address 00000000', "
        "budget while handling it"
    )
    spinning = crashed("foo_probe", "platform_probe", reason=ExitReason.EXIT_BUDGET)
    assert crash_of(spinning, FIRMWARE.symbols) is None
    assert propose(context((State(), spinning, None))) == []


def test_a_budget_ending_inside_a_warning_that_returns_is_no_crash() -> None:
    # Measured: imx6ul's PLL lock wait sleeps in the idle task, which warns (and dumps its stack)
    # at every sleep; the budget ended inside the dump.
    warning = crashed(
        "_printk",
        "show_stack",
        "dump_stack",
        "dequeue_task_idle",
        "__schedule",
        "schedule",
        "usleep_range_state",
        "clk_pllv3_wait_lock",
        "time_init",
        reason=ExitReason.EXIT_BUDGET,
    )
    assert crash_of(warning, FIRMWARE.symbols) is None


def test_the_frames_past_a_context_switch_are_not_the_crash_and_ftrace_stubs_are_never_nopped() -> None:
    # Measured: kernel_init's frames sit on top of the idle task's (one shadow stack per CPU).
    result = crashed(
        "panic", "clk_get", "__gnu_mcount_nc", "foo_init", "__schedule", "do_idle", "start_kernel"
    )
    crash = crash_of(result, FIRMWARE.symbols)
    assert crash is not None and crash.describe() == "clk_get <- foo_init"
    state, made_by = first_nop(result)
    again = crashed("panic", "foo_init", "__schedule", "do_idle", "start_kernel")
    children = propose(context((state, again, made_by), (State(), result, None)))
    assert nopped(children[0]) == {"foo_init": 0}


def test_the_same_nops_reached_in_either_order_are_one_state() -> None:
    foo = crashed("panic", "foo_probe", "platform_probe")
    clk = crashed("panic", "clk_get", "foo_init")
    ids = []
    for first, second in ((foo, clk), (clk, foo)):
        state, made_by = first_nop(first)
        child = propose(context((state, second, made_by), (State(), first, None)))[0]
        ids.append(state_id(child.state))
    assert ids[0] == ids[1]


def test_unnamed_frames_are_never_nopped() -> None:
    result = crashed("panic", "foo_probe", "platform_probe")
    # Below every symbol (module code): no NOP can be placed there.
    result.call_stack.frames[0].return_address = 0xB0000040
    result.call_stack.frames[1].function = 0xB0000000
    assert nopped(propose(context((State(), result, None)))[0]) == {"platform_probe": 0}


def first_nop(result: RunResult, which: int = 0) -> tuple[State, Child]:
    child = propose(context((State(), result, None)))[which]
    return child.state, child


def test_a_crash_that_moved_one_level_up_escalates_and_drops_the_deeper_nop() -> None:
    parent = crashed(
        "panic", "clk_get", "foo_probe", "platform_probe", "really_probe", "foo_init", "do_one_initcall"
    )
    state, made_by = first_nop(parent)
    assert nopped(made_by) == {"clk_get": 0}
    moved = crashed("panic", "foo_probe", "platform_probe", "really_probe", "foo_init", "do_one_initcall")
    children = propose(context((state, moved, made_by), (State(), parent, None)))
    assert [nopped(child) for child in children] == [{"foo_probe": 0}, {"foo_probe": RETURN_ENODEV}]
    assert "100% like the crash that NOP'd clk_get, so one frame up: NOP foo_probe (return 0, dropping" in (
        children[0].reason
    )
    assert children[0].detail["dropped"] == ADDRESS["clk_get"]


def test_a_crash_elsewhere_gets_a_fresh_nop_and_keeps_the_one_that_worked() -> None:
    parent = crashed(*ARCH_TIMER_PANIC)
    state, made_by = first_nop(parent)
    elsewhere = crashed("panic", "foo_probe", "platform_probe", "really_probe", "foo_init", "do_one_initcall")
    children = propose(context((state, elsewhere, made_by), (State(), parent, None)))
    assert nopped(children[0]) == {"arch_timer_of_init": 0, "foo_probe": 0}


def test_a_crash_in_another_callee_of_the_caller_escalates_and_also_nops_that_callee() -> None:
    probing = ("platform_probe", "really_probe", "driver_probe_device", "foo_init", "do_one_initcall")
    parent = crashed("panic", "clk_get", "foo_probe", *probing)
    state, made_by = first_nop(parent, which=1)
    # foo_probe went on with the -ENODEV from clk_get and failed in another callee: 5 of 6 shared.
    beside = crashed("panic", "die", "__und_fault", "sun4i_timer_init", "foo_probe", *probing)
    children = propose(context((state, beside, made_by), (State(), parent, None)))
    assert [nopped(child) for child in children] == [
        {"foo_probe": 0},
        {"foo_probe": RETURN_ENODEV},
        {"clk_get": RETURN_ENODEV, "sun4i_timer_init": 0},
        {"clk_get": RETURN_ENODEV, "sun4i_timer_init": RETURN_ENODEV},
    ]
    assert "83% like the crash that NOP'd clk_get" in children[0].reason


def test_the_next_timer_failing_on_the_real_stack_is_a_new_crash_not_an_escalation() -> None:
    parent = crashed(*ARCH_TIMER_PANIC)
    state, made_by = first_nop(parent, which=1)
    # Two of three callers shared (timer_probe <- time_init): below 70%, so timer_probe stays.
    next_timer = crashed("panic", "die", "__und_fault", "sun4i_timer_init", "timer_probe", "time_init")
    children = propose(context((state, next_timer, made_by), (State(), parent, None)))
    assert [nopped(child) for child in children] == [
        {"arch_timer_of_init": RETURN_ENODEV, "sun4i_timer_init": 0},
        {"arch_timer_of_init": RETURN_ENODEV, "sun4i_timer_init": RETURN_ENODEV},
    ]


def test_the_boot_skeleton_ends_a_crash_and_the_next_initcall_is_a_new_crash() -> None:
    skeleton = ("do_one_initcall", "kernel_init", "ret_from_fork")
    parent = crashed("panic", "foo_init", *skeleton)
    state, made_by = first_nop(parent)
    assert made_by.detail["stack"] == [[ADDRESS["foo_init"], "foo_init"]]
    # foo_init returned; the next initcall crashes: nothing in common but the skeleton.
    again = crashed("panic", "bar_init", *skeleton)
    children = propose(context((state, again, made_by), (State(), parent, None)))
    assert nopped(children[0]) == {"foo_init": 0, "bar_init": 0}
    assert "like the crash" not in children[0].reason
    # panic called by the skeleton itself: no code of its own to NOP.
    assert propose(context((state, crashed("panic", *skeleton), made_by), (State(), parent, None))) == []


def test_escalation_with_nothing_named_above_says_so_and_nops_the_new_crash() -> None:
    parent = crashed("panic", "clk_get", "foo_probe", "platform_probe", "really_probe")
    for frame in parent.call_stack.frames[2:]:
        frame.function -= 0x100000  # module code: below every symbol, never NOP'd
    state, made_by = first_nop(parent)
    again = crashed("panic", "bar_init", "foo_probe", "platform_probe", "really_probe")
    for frame, before in zip(again.call_stack.frames[2:], parent.call_stack.frames[2:], strict=True):
        frame.function = before.function
    children = propose(context((state, again, made_by), (State(), parent, None)))
    assert "75% like the crash that NOP'd clk_get, nothing left to NOP above it; NOP bar_init (return 0)" in (
        children[0].reason
    )


def test_a_tail_call_is_named_by_the_return_address_into_it() -> None:
    # mount_root branches to mount_block_root, which calls panic: no frame of its own.
    result = crashed("panic", "foo_probe", "platform_probe")
    result.call_stack.frames[0].return_address = ADDRESS["clk_get"] + 0x1EC
    children = propose(context((State(), result, None)))
    assert nopped(children[0]) == {"clk_get": 0}
    assert children[0].detail["stack"][:2] == [
        [ADDRESS["clk_get"], "clk_get"],
        [ADDRESS["foo_probe"], "foo_probe"],
    ]


def test_other_operators_children_in_between_are_looked_through() -> None:
    parent = crashed("panic", "clk_get", "foo_probe", "platform_probe", "foo_init", "do_one_initcall")
    state, made_by = first_nop(parent)
    device = Child(state, "devices", "map a UART")
    moved = crashed("panic", "foo_probe", "platform_probe", "foo_init", "do_one_initcall")
    children = propose(
        context((state, moved, device), (state, RunResult(), made_by), (State(), parent, None))
    )
    assert nopped(children[0]) == {"foo_probe": 0}


@given(
    st.lists(st.integers(0, 5), max_size=8),
    st.lists(st.integers(0, 5), max_size=8),
)
def test_similarity_is_symmetric_and_a_fraction(first: list[int], second: list[int]) -> None:
    assert stack_similarity(first, second) == stack_similarity(second, first)
    assert 0.0 <= stack_similarity(first, second) <= 1.0


@given(st.lists(st.integers(0, 5), max_size=8))
def test_a_stack_is_entirely_similar_to_itself(chain: list[int]) -> None:
    assert stack_similarity(chain, chain) == 1.0


@given(
    st.lists(st.integers(0, 5), min_size=1, max_size=8), st.lists(st.integers(0, 5), min_size=1, max_size=8)
)
def test_chains_under_different_outermost_callers_share_nothing(first: list[int], second: list[int]) -> None:
    if first[-1] != second[-1]:
        assert stack_similarity(first, second) == 0.0
    else:
        assert stack_similarity(first, second) >= 1 / max(len(first), len(second))


@given(st.lists(st.sampled_from(FAILING_CODE), min_size=2, max_size=6, unique=True))
def test_a_crash_that_moved_one_level_up_nops_the_caller_instead(chain: list[str]) -> None:
    parent = crashed("panic", *chain)
    state, made_by = first_nop(parent)
    moved = crashed("panic", *chain[1:])
    children = propose(context((state, moved, made_by), (State(), parent, None)))
    assert [nopped(child) for child in children] == [{chain[1]: 0}, {chain[1]: RETURN_ENODEV}]


@given(st.lists(st.lists(st.sampled_from(NAMES), max_size=8), min_size=1, max_size=12))
def test_whatever_the_stacks_no_nop_lands_on_the_panic_path_the_boundary_or_twice(
    stacks: list[list[str]],
) -> None:
    """Successive runs of the first child panic with arbitrary stacks."""
    state, made_by, lineage = State(), None, ()
    seen: list[str] = []
    for names in stacks:
        lineage = ((state, crashed("panic", *names), made_by), *lineage)
        children = propose(context(*lineage))
        for child in children:
            name = child.detail["name"]
            assert not is_panic_path(name) and name not in BOUNDARY and name not in TRAMPOLINES
            assert name not in seen
        if not children:
            return
        made_by = children[0]
        state = made_by.state
        seen.append(made_by.detail["name"])


@given(
    st.lists(st.sampled_from(FAILING_CODE), min_size=1, max_size=6, unique=True),
    st.lists(
        st.sampled_from(["panic", "die", "__und_fault", "_printk", "make_task_dead"]), min_size=1, max_size=4
    ),
    st.lists(st.sampled_from(FAILING_CODE), max_size=4),
)
def test_escalating_until_the_top_never_nops_the_panic_path_nor_a_function_twice(
    chain: list[str], panic_path: list[str], later: list[str]
) -> None:
    """Each next run crashes one level further up (or, when the stack runs out, in `later` code)."""
    state, made_by, lineage = State(), None, ()
    result = crashed(*panic_path, "panic", *chain)
    seen: list[str] = []
    for step in range(len(chain) + len(later) + 2):
        lineage = ((state, result, made_by), *lineage)
        children = propose(context(*lineage))
        if not children:
            break
        made_by = children[0]
        state = made_by.state
        name = made_by.detail["name"]
        assert not is_panic_path(name) and name not in BOUNDARY
        assert name not in seen
        seen.append(name)
        remaining = chain[step + 1 :] or later[max(0, step + 1 - len(chain)) :]
        result = (
            crashed("panic", *remaining) if remaining else RunResult(exit=Exit(reason=ExitReason.EXIT_BUDGET))
        )
    else:
        raise AssertionError(f"escalation did not end: {seen}")


@pytest.mark.parametrize(
    "handler", ["v5t_early_abort", "v4t_late_abort", "v7_early_abort", "v7_pabort", "strcmp", "memcpy"]
)
def test_abort_decoders_and_library_leaves_are_walked_past(handler: str) -> None:
    assert is_panic_path(handler)
    assert not is_panic_path("mvebu_mbus_init")
