"""Scores order runs by boot progress; states are immutable and named by their content."""

from __future__ import annotations

import struct
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from explorer.corpus.initramfs import USERSPACE_MARKER
from explorer.runner.analysis import USER_SPACE_MILESTONE
from explorer.runner.kernel_hooks import MILESTONES
from explorer.runner.machine_config_pb2 import MachineConfig, MmioRule, Nop
from explorer.runner.rehost_pb2 import Coverage, Exit, ExitReason, Initcall, Milestone, RunResult
from explorer.search.score import CONSOLE, SCORE_BYTES, Score, boot_completed, score
from explorer.search.state import Target, canonical_bytes, derive, parse_state, state_id

scores = st.builds(
    Score,
    console=st.booleans(),
    user_space=st.booleans(),
    milestone_rank=st.integers(0, len(MILESTONES)),
    initcalls=st.integers(0, 2**32 - 1),
    survived=st.booleans(),
    instructions=st.integers(0, 2**64 - 1),
    log_lines=st.integers(0, 2**32 - 1),
)


@given(scores, scores)
def test_score_bytes_sort_like_scores(first: Score, second: Score) -> None:
    assert len(first.to_bytes()) == SCORE_BYTES
    assert Score.from_bytes(first.to_bytes()) == first
    assert (first < second) == (first.to_bytes() < second.to_bytes())


def test_milestones_outrank_initcalls_and_coverage() -> None:
    early = RunResult(
        milestones=[Milestone(name="start_kernel")],
        initcalls=[Initcall(address=index) for index in range(50)],
        coverage=Coverage(instructions=10**6),
    )
    later = RunResult(milestones=[Milestone(name="start_kernel"), Milestone(name="rest_init")])
    done = RunResult(exit=Exit(reason=ExitReason.EXIT_USER_SPACE))
    assert score(early) < score(later) < score(done)
    assert score(later).furthest_milestone == "rest_init"
    assert score(done).furthest_milestone == "user space"


def test_the_marker_on_the_console_outranks_user_space_and_is_the_goal_only_where_it_can_be_seen() -> None:
    past = [Milestone(name=name) for name in MILESTONES] + [Milestone(name=USER_SPACE_MILESTONE)]
    powered_off = Exit(reason=ExitReason.EXIT_HALT, detail="machine_power_off")
    silent = RunResult(milestones=past, exit=powered_off, coverage=Coverage(instructions=10**7))
    console = f"Run /init\n{USERSPACE_MARKER}\n".encode()
    printed = RunResult(milestones=past, exit=powered_off, console=console)
    ended_there = RunResult(exit=Exit(reason=ExitReason.EXIT_USER_SPACE))
    assert score(ended_there) == score(RunResult(exit=ended_there.exit))
    assert score(silent).user_space and not score(silent).console
    assert score(ended_there) < score(silent) < score(printed)
    assert score(printed).furthest_milestone == CONSOLE
    assert boot_completed(silent) and boot_completed(ended_there) and boot_completed(printed)
    assert not boot_completed(silent, console_goal=True) and boot_completed(printed, console_goal=True)


def test_a_score_stored_before_the_console_milestone_reads_as_not_reached() -> None:
    old = struct.pack(">BBIBQI", 1, 3, 40, 1, 1234, 7)
    assert Score.from_bytes(old) == Score(False, True, 3, 40, True, 1234, 7)


def test_getting_as_far_without_a_panic_ranks_higher() -> None:
    milestones = [Milestone(name="start_kernel"), Milestone(name="time_init")]
    panicked = RunResult(
        milestones=milestones, exit=Exit(reason=ExitReason.EXIT_PANIC), coverage=Coverage(instructions=900)
    )
    stuck = RunResult(
        milestones=milestones, exit=Exit(reason=ExitReason.EXIT_BUDGET), coverage=Coverage(instructions=800)
    )
    assert score(panicked) < score(stuck)
    assert "panicked" in score(panicked).describe()


def test_log_lines_break_ties_last() -> None:
    quiet = RunResult(coverage=Coverage(instructions=5), log=b"one\n")
    chatty = RunResult(coverage=Coverage(instructions=5), log=b"one\ntwo\n")
    assert score(quiet) < score(chatty)


@given(st.integers(0, 2**64 - 1), st.lists(st.integers(0, 2**32 - 1), max_size=5))
def test_state_id_is_content(seed: int, addresses: list[int]) -> None:
    state = MachineConfig(target="arm", cpu="cortex-a9", seed=seed)
    state.mmio_rules.extend(MmioRule(address=address, constant=1) for address in addresses)
    copy = parse_state(canonical_bytes(state))
    assert state_id(copy) == state_id(state)
    assert len(state_id(state)) == 64
    changed = derive(state, lambda child: child.nops.append(Nop(address=0x1000)))
    assert state_id(changed) != state_id(state)
    assert not state.nops  # derive never touches the parent


def test_state_id_ignores_struct_key_order() -> None:
    first = MachineConfig(target="arm", cpu="cortex-a9")
    device = first.devices.add(type="pl011")
    device.props.update({"a": 1, "b": 2})
    second = MachineConfig(target="arm", cpu="cortex-a9")
    other = second.devices.add(type="pl011")
    other.props.update({"b": 2, "a": 1})
    assert state_id(first) == state_id(second)


def test_target_round_trips() -> None:
    target = Target(Path("/k"), Path("/d.dtb"), None, "console=ttyS0", None)
    assert Target.from_dict(target.to_dict()) == target
    atags = Target(Path("/k"), None, Path("/i"), "", 1565)
    assert Target.from_dict(atags.to_dict()) == atags
