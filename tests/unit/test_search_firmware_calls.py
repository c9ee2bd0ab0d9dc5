"""The firmware-calls operator: an oops on an SMC or HVC gets QEMU to answer such calls; nothing else does."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from explorer.runner.machine_config_pb2 import MachineConfig
from explorer.runner.rehost_pb2 import Exit, ExitReason, RunResult
from explorer.search.operators import Context, Evaluated, firmware_calls
from explorer.search.state import Target, state_id
from tests.unit.test_search_engine import FIRMWARE

# An oops as arch/arm/kernel/traps.c prints it; the Code: line is armmp 6.1's with the omap5-uevm
# device tree, dying in omap_smc1 (the search's initial state, 2026-12-07).
OMAP_SMC_OOPS = """Internal error: Oops - undefined instruction: 0 [#1] SMP ARM
PC is at omap_smc1+0x10/0x1c
 omap_smc1 from omap5_erratum_workaround_801819+0x58/0x74
Code: e92d5ffc e1a0c000 e1a00001 f57ff04f (e1600070)
---[ end trace 0000000000000000 ]---
"""


def context(log: str, state: MachineConfig | None = None) -> Context:
    state = state or MachineConfig(target="arm", cpu="cortex-a15")
    result = RunResult(exit=Exit(reason=ExitReason.EXIT_PANIC), log=log.encode())
    return Context(FIRMWARE, Target(Path("/k")), (Evaluated(state_id(state), state, result),))


def test_an_oops_on_an_smc_gets_qemu_answering_smc_once() -> None:
    (child,) = firmware_calls.propose(context(OMAP_SMC_OOPS))
    assert child.state.psci_conduit == "smc" and child.operator == "firmware_calls"
    assert firmware_calls.propose(context(OMAP_SMC_OOPS, child.state)) == []


@pytest.mark.parametrize(
    ("code", "conduit"),
    [
        ("(e1600070)", "smc"),  # smc #0, always
        ("(01600073)", "smc"),  # smceq #3
        ("(e140007f)", "hvc"),  # hvc #15
        ("(e14fff7f)", "hvc"),  # hvc #0xffff
        ("(f7f0 8000)", "smc"),  # T32 smc #0
        ("(f7e0 8001)", "hvc"),  # T32 hvc #1
        ("(e7f001f2)", None),  # the undefined instruction BUG() uses
        ("(e1a00000)", None),  # mov r0, r0
        ("(f7ff fffe)", None),  # T32 bl
    ],
)
def test_the_faulting_instruction_decides(code: str, conduit: str | None) -> None:
    assert firmware_calls.firmware_call(f"Code: e92d4ff0 e1a0c001 {code}\n") == conduit


def test_only_the_last_oops_counts_and_a_log_without_one_gives_nothing() -> None:
    survived = OMAP_SMC_OOPS.replace("(e1600070)", "(e7f001f2)")
    assert firmware_calls.firmware_call(OMAP_SMC_OOPS + survived) is None
    assert firmware_calls.firmware_call("Booting Linux on physical CPU 0x0\n") is None


def test_nothing_for_mips_or_a_machine_already_answering() -> None:
    assert firmware_calls.propose(context(OMAP_SMC_OOPS, MachineConfig(target="mipsel", cpu="24Kf"))) == []
    answering = MachineConfig(target="arm", cpu="cortex-a15", psci_conduit="hvc")
    assert firmware_calls.propose(context(OMAP_SMC_OOPS, answering)) == []


@given(log=st.text(max_size=400))
def test_any_log_is_read_without_error(log: str) -> None:
    assert firmware_calls.firmware_call(log) in (None, "smc", "hvc")
