"""The kernel-arguments operators: lpj= for a run stuck calibrating the delay loop (asked with the
structural operators), nosmp for a stalled secondary-CPU bring-up (the stall tier), and nothing else."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from explorer.firmware.model import Symbol, SymbolTable
from explorer.runner.machine_config_pb2 import MachineConfig
from explorer.runner.rehost_pb2 import CallStack, Exit, ExitReason, Frame, RunResult
from explorer.search.operators import Context, Evaluated, kernel_arguments
from explorer.search.proposal import OperatorPhases, propose
from explorer.search.state import Target, bootable, state_id
from tests.unit.test_search_engine import FIRMWARE, INITIAL

CALIBRATE = 0xC0302E00
SYMBOLS = SymbolTable(
    (Symbol(0xC0300000, "T", "start_kernel"), Symbol(CALIBRATE, "T", "calibrate_delay")),
    "kallsyms",
    0xC0300000,
    "a test",
)
WITH_SYMBOLS = dataclasses.replace(FIRMWARE, symbols=SYMBOLS)
TARGET = Target(Path("/k"), cmdline="console=ttyS0 rdinit=/init")


def context(
    state: MachineConfig, reason: ExitReason.ValueType, innermost: int, target: Target = TARGET
) -> Context:
    result = RunResult(
        exit=Exit(reason=reason),
        call_stack=CallStack(frames=[Frame(function=innermost, return_address=0xC0300010)]),
    )
    return Context(WITH_SYMBOLS, target, (Evaluated(state_id(state), state, result),))


def test_stuck_in_calibrate_delay_gets_lpj() -> None:
    state = MachineConfig(target="arm", cpu="cortex-a8")
    (child,) = kernel_arguments.propose_calibration(context(state, ExitReason.EXIT_BUDGET, CALIBRATE))
    assert child.state.boot.cmdline == f"lpj={kernel_arguments.LOOPS_PER_JIFFY}"
    assert not state.boot.cmdline
    booted = bootable(child.state, TARGET, WITH_SYMBOLS)
    assert booted.boot.cmdline == f"console=ttyS0 rdinit=/init lpj={kernel_arguments.LOOPS_PER_JIFFY}"
    assert kernel_arguments.propose_calibration(context(child.state, ExitReason.EXIT_BUDGET, CALIBRATE)) == []
    # The stall tier's operator leaves that wait to the structural one.
    assert kernel_arguments.propose(context(state, ExitReason.EXIT_BUDGET, CALIBRATE)) == []


def test_nothing_for_other_endings_or_places() -> None:
    state = MachineConfig(target="arm", cpu="cortex-a8")
    assert kernel_arguments.propose_calibration(context(state, ExitReason.EXIT_PANIC, CALIBRATE)) == []
    assert kernel_arguments.propose_calibration(context(state, ExitReason.EXIT_BUDGET, 0xC0300000)) == []
    given = context(state, ExitReason.EXIT_BUDGET, CALIBRATE, Target(Path("/k"), cmdline="lpj=5000"))
    assert kernel_arguments.propose_calibration(given) == []


def test_lpj_comes_in_the_structural_tier_beside_its_other_children() -> None:
    # A run stuck in calibrate_delay is not stalled: lpj= is proposed on its first expansion,
    # beside whatever the other structural operators propose, never after them.
    stuck = context(INITIAL, ExitReason.EXIT_BUDGET, CALIBRATE)
    proposal = propose(stuck, OperatorPhases(), lambda _: False, max_children=64)
    assert not proposal.stalled
    lpj = f"lpj={kernel_arguments.LOOPS_PER_JIFFY}"
    assert lpj in [child.state.boot.cmdline for child in proposal.children]
    assert kernel_arguments.propose_calibration in OperatorPhases().structural
    assert not any(kernel_arguments.propose_calibration in tier for tier in OperatorPhases().stall_tiers)


BRINGUP_SYMBOLS = SymbolTable(
    (
        Symbol(0xC0300000, "T", "start_kernel"),
        Symbol(0xC0310000, "T", "__timer_delay"),
        Symbol(0xC0320000, "T", "__cpu_up"),
        Symbol(0xC0330000, "T", "smp_init"),
        Symbol(0xC0340000, "T", "kernel_init"),
    ),
    "kallsyms",
    0xC0300000,
    "a test",
)


def bringup_context(state: MachineConfig, target: Target = TARGET) -> Context:
    """A run stopped in a udelay of a platform's boot_secondary, under __cpu_up and smp_init."""
    frames = [
        Frame(function=0xC0310000, return_address=0xC0400010),  # in the platform's code: no symbol
        Frame(function=0xC0400000, return_address=0xC0320010),
        Frame(function=0xC0320000, return_address=0xC0330010),
        Frame(function=0xC0330000, return_address=0xC0340010),
    ]
    result = RunResult(
        exit=Exit(reason=ExitReason.EXIT_BUDGET, detail="stuck: 3000000 reads of 0x101c0100"),
        call_stack=CallStack(frames=frames),
    )
    firmware = dataclasses.replace(FIRMWARE, symbols=BRINGUP_SYMBOLS)
    return Context(firmware, target, (Evaluated(state_id(state), state, result),))


def test_a_run_stalled_bringing_up_a_secondary_cpu_gets_nosmp() -> None:
    state = MachineConfig(target="arm", cpu="cortex-a15")
    (child,) = kernel_arguments.propose(bringup_context(state))
    assert child.state.boot.cmdline == "nosmp"
    assert "secondary CPU" in child.reason
    assert kernel_arguments.propose(bringup_context(child.state)) == []
    assert kernel_arguments.propose_calibration(bringup_context(state)) == []


def test_no_nosmp_when_the_command_line_already_limits_the_cpus() -> None:
    state = MachineConfig(target="arm", cpu="cortex-a15")
    for given in ("maxcpus=1", "nosmp", "nr_cpus=1"):
        assert kernel_arguments.propose(bringup_context(state, Target(Path("/k"), cmdline=given))) == []
