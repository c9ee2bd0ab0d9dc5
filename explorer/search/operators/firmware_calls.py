"""Firmware calls: a kernel calling secure or hypervisor firmware that the machine does not have.

The mechanism: 32-bit ARM kernels call the board's firmware with an SMC instruction (the secure
monitor: PSCI in drivers/firmware/psci, and the vendor services of drivers/firmware/ and
arch/arm/mach-*/, all through arm_smccc_smc or a platform's own SMC wrapper) or with HVC. Our
CPU has neither EL3 nor EL2, so the instruction is undefined: __und_fault -> die, and the boot
ends ("Attempted to kill the idle task!" early, an oops in a driver later). The oops names the
faulting instruction in its "Code:" line (arch/arm/kernel/traps.c, dump_instr: the faulting word
in parentheses). When that word is an SMC or HVC, the child has QEMU answer every call made that
way (MachineConfig.psci_conduit): PSCI's functions as PSCI, any other function "not supported"
(SMCCC's -1 in r0), as firmware that offers no such service answers. A device tree that declares
PSCI gets this from the initial state (explorer.search.initial); this operator answers the calls
no device tree declares.
"""

from __future__ import annotations

from explorer.runner.analysis import faulting_instruction, reached_user_space
from explorer.search.operators import Child, Context
from explorer.search.state import State, derive

# The A32 and T32 encodings of SMC and HVC (Arm ARM), as (mask, value) of the word or halfwords.
A32_SMC = (0x0FFFFFF0, 0x01600070)  # cond 0001 0110 0000 0000 0000 0111 imm4
A32_HVC = (0x0FF000F0, 0x01400070)  # cond 0001 0100 imm12 0111 imm4
T32_SMC = ((0xFFF0, 0xF7F0), (0xFFFF, 0x8000))  # 1111 0111 1111 imm4, 1000 0000 0000 0000
T32_HVC = ((0xFFF0, 0xF7E0), (0xF000, 0x8000))  # 1111 0111 1110 imm4, 1000 imm12


def propose(context: Context) -> list[Child]:
    current = context.current
    if current.state.target != "arm" or current.state.psci_conduit:
        return []
    if reached_user_space(current.result):
        return []
    conduit = firmware_call(current.result.log.decode(errors="replace"))
    if conduit is None:
        return []

    def answer_calls(state: State) -> None:
        state.psci_conduit = conduit

    reason = (
        f"the kernel died of an undefined {conduit.upper()}: a call to firmware the machine does not "
        f"have; QEMU answers every {conduit.upper()} (PSCI, and 'not supported' for other services)"
    )
    return [Child(derive(current.state, answer_calls), "firmware_calls", reason, {"conduit": conduit})]


def firmware_call(log: str) -> str | None:
    """ "smc" or "hvc" when the guest log's last oops faulted on that instruction, else None."""
    instruction = faulting_instruction(log)
    if instruction is None:
        return None
    if instruction.a32 is not None:
        return _a32(instruction.a32)
    return _t32(*instruction.t32) if len(instruction.t32) == 2 else None


def _a32(word: int) -> str | None:
    for conduit, (mask, value) in (("smc", A32_SMC), ("hvc", A32_HVC)):
        if word & mask == value:
            return conduit
    return None


def _t32(first: int, second: int) -> str | None:
    for conduit, ((mask1, value1), (mask2, value2)) in (("smc", T32_SMC), ("hvc", T32_HVC)):
        if first & mask1 == value1 and second & mask2 == value2:
            return conduit
    return None
