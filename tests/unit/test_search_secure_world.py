"""The secure-world operator: an oops on a CP15 access to a secure-world register enters the kernel
in Secure SVC; any other instruction, or a state already there or beside PSCI by SMC, proposes
nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from explorer.errors import BadInput
from explorer.runner.analysis import FaultingInstruction
from explorer.runner.config import validate
from explorer.runner.machine_config_pb2 import MachineConfig
from explorer.runner.rehost_pb2 import Exit, ExitReason, RunResult
from explorer.search.operators import Context, Evaluated, secure_world
from explorer.search.state import Target, state_id
from tests.unit.test_search_engine import FIRMWARE

# armmp 6.1 with the sun8i-a83t-bananapi-m3 device tree: setup_arch -> init_early ->
# secure_cntvoff_init, `cps #MON_MODE` then `mrc p15, 0, r1, c1, c1, 0` (SCR) faults (the search's
# initial state, 2026-12-07).
SCR_OOPS = """Internal error: Oops - undefined instruction: 0 [#1] SMP ARM
Code: e5819100 e12fff1e 01288dd0 f1020016 (ee111f11)
---[ end trace 0000000000000000 ]---
"""


def context(log: str, state: MachineConfig | None = None) -> Context:
    state = state or MachineConfig(target="arm", cpu="cortex-a7")
    result = RunResult(exit=Exit(reason=ExitReason.EXIT_PANIC), log=log.encode())
    return Context(FIRMWARE, Target(Path("/k")), (Evaluated(state_id(state), state, result),))


def test_an_oops_on_scr_enters_the_secure_world_once() -> None:
    (child,) = secure_world.propose(context(SCR_OOPS))
    assert child.state.secure_entry and child.operator == "secure_world"
    assert child.detail == {"register": "SCR"}
    assert secure_world.propose(context(SCR_OOPS, child.state)) == []


def test_not_beside_qemus_psci_by_smc_nor_on_mips() -> None:
    assert secure_world.propose(context(SCR_OOPS, MachineConfig(target="arm", psci_conduit="smc"))) == []
    assert secure_world.propose(context(SCR_OOPS, MachineConfig(target="mips", cpu="4Kc"))) == []


@pytest.mark.parametrize(
    ("instruction", "register"),
    [
        (FaultingInstruction(a32=0xEE111F11), "SCR"),  # mrc p15, 0, r1, c1, c1, 0
        (FaultingInstruction(a32=0xEE010F11), "SCR"),  # mcr p15, 0, r0, c1, c1, 0
        (FaultingInstruction(a32=0x0E010F11), "SCR"),  # mcreq: any condition
        (FaultingInstruction(a32=0xEE010F31), "SDER"),  # mcr p15, 0, r0, c1, c1, 1
        (FaultingInstruction(a32=0xEE010F51), "NSACR"),  # mcr p15, 0, r0, c1, c1, 2: a write
        (FaultingInstruction(a32=0xEE110F51), None),  # mrc NSACR: Non-secure may read it
        (FaultingInstruction(a32=0xEE0C0F30), "MVBAR"),  # mcr p15, 0, r0, c12, c0, 1
        (FaultingInstruction(a32=0xEC400F4E), "CNTVOFF"),  # mcrr p15, 4, r0, r0, c14
        (FaultingInstruction(t32=(0xEE11, 0x1F11)), "SCR"),  # T32 mrc p15, 0, r1, c1, c1, 0
        (FaultingInstruction(a32=0xEE110F10), None),  # mrc SCTLR
        (FaultingInstruction(a32=0xEE1C0F10), None),  # mrc VBAR (c12, c0, 0)
        (FaultingInstruction(a32=0xFE111F11), None),  # mrc2: not a CP15 register access
        (FaultingInstruction(a32=0xE1600070), None),  # smc #0: firmware_calls' question
        (FaultingInstruction(a32=0xE7F001F2), None),  # BUG()'s undefined instruction
        (FaultingInstruction(t32=(0xDEFF,)), None),  # a 16-bit T32 instruction
    ],
)
def test_the_faulting_instruction_decides(instruction: FaultingInstruction, register: str | None) -> None:
    assert secure_world.secure_register(instruction) == register


def test_a_log_without_a_faulting_instruction_gives_nothing() -> None:
    assert secure_world.propose(context("Booting Linux on physical CPU 0x0\n")) == []


# Every MRC/MCR to CP15 in A32, from its fields, the secure registers' (opc1, CRn, CRm, opc2)
# drawn as often as any other: cond, L (read), Rt, then the register.
REGISTERS = st.one_of(
    st.sampled_from(sorted(secure_world.SECURE_REGISTERS)),
    st.tuples(st.integers(0, 7), st.integers(0, 15), st.integers(0, 15), st.integers(0, 7)),
)
CP15_TRANSFERS = st.builds(
    lambda cond, read, rt, register: (
        cond << 28
        | 0x0E000F10
        | register[0] << 21
        | read << 20
        | register[1] << 16
        | rt << 12
        | register[3] << 5
        | register[2]
    ),
    st.integers(0, 14),
    st.integers(0, 1),
    st.integers(0, 14),
    REGISTERS,
)


@given(st.one_of(CP15_TRANSFERS, st.integers(0, 2**32 - 1)))
def test_a_proposal_exactly_for_secure_registers_and_every_one_a_config_a_runner_takes(word: int) -> None:
    state = MachineConfig(target="arm", cpu="cortex-a7")
    state.ram.add(base=0x40000000, size=0x1000000)
    state.boot.kernel = "/k"
    children = secure_world.propose(context(f"Code: ({word:08x})\n", state))
    register = secure_world.secure_register(FaultingInstruction(a32=word))
    assert [child.detail["register"] for child in children] == ([register] if register else [])
    for child in children:
        validate(child.state)


def test_a_secure_entry_beside_psci_by_smc_or_on_mips_is_refused() -> None:
    state = MachineConfig(target="arm", cpu="cortex-a7", secure_entry=True, psci_conduit="smc")
    state.ram.add(base=0x40000000, size=0x1000000)
    state.boot.kernel = "/k"
    with pytest.raises(BadInput, match="secure_entry with psci_conduit smc"):
        validate(state)
    state.psci_conduit = ""
    state.target = "mips"
    with pytest.raises(BadInput, match="secure_entry is for the arm target only"):
        validate(state)
