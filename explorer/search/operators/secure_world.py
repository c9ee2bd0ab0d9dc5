"""Secure world: a kernel that expects its boot loader to have left the CPU in Secure SVC.

The mechanism: on 32-bit ARM a boot loader may start the kernel in the secure world (Secure
SVC, on a CPU with the Security Extensions), and some kernels then program what only the secure
world may touch: platform early init entered from setup_arch (mdesc->init_early) switches to
Monitor mode to set the virtual counter's offset (arch/arm/common/secure_cntvoff.S: `cps
#MON_MODE`, then SCR and CNTVOFF), SMP and errata code reads or writes SCR, NSACR or MVBAR. Our
CPU is entered in Non-secure SVC without EL3, so such an access is undefined: __und_fault ->
die, the boot ends ("Attempted to kill the idle task!" when it is early). The oops names the
faulting instruction in its "Code:" line. When that word is a CP15 access to a register only the
secure world (or Monitor mode) may use, the child enters the kernel in Secure SVC on a CPU with
EL3 (MachineConfig.secure_entry), as such a board's boot loader does; it is proposed before any
NOP of the function, which would skip what the kernel meant to set up.

Invariants: never for a state already entered in the secure world, nor beside QEMU's PSCI by SMC
(in the secure world the SMC would enter the guest's own, absent, monitor); never modifies the
given states.
"""

from __future__ import annotations

from explorer.runner.analysis import FaultingInstruction, faulting_instruction, reached_user_space
from explorer.search.operators import Child, Context
from explorer.search.state import State, derive

# MRC/MCR to coprocessor 15 (Arm ARM, A32 "cond 1110 opc1 L CRn Rt 1111 opc2 1 CRm"; the T32
# encoding's two halfwords make the same word with cond 1110): (mask, value).
CP15_TRANSFER = (0x0F000F10, 0x0E000F10)
# MCRR to coprocessor 15 ("cond 1100 0100 Rt2 Rt 1111 opc1 CRm"): (mask, value).
CP15_PAIR_WRITE = (0x0FF00F00, 0x0C400F00)
# Registers of the secure world, by (opc1, CRn, CRm, opc2), with whether a read is allowed from
# Non-secure PL1 (NSACR may be read there, not written).
SECURE_REGISTERS = {
    (0, 1, 1, 0): ("SCR", False),
    (0, 1, 1, 1): ("SDER", False),
    (0, 1, 1, 2): ("NSACR", True),
    (0, 1, 3, 1): ("SDCR", False),
    (0, 12, 0, 1): ("MVBAR", False),
}
# CNTVOFF, written with MCRR p15, 4, Rt, Rt2, c14 from Monitor mode (or Hyp): (opc1, CRm).
CNTVOFF = (4, 14)


def propose(context: Context) -> list[Child]:
    current = context.current
    state = current.state
    if state.target != "arm" or state.secure_entry or state.psci_conduit == "smc":
        return []
    if reached_user_space(current.result):
        return []
    instruction = faulting_instruction(current.result.log.decode(errors="replace"))
    register = secure_register(instruction) if instruction else None
    if register is None:
        return []

    def enter_secure(child: State) -> None:
        child.secure_entry = True

    reason = (
        f"the kernel died of an undefined access to {register}, a register of the secure world: "
        "enter it in Secure SVC on a CPU with EL3, as its boot loader would"
    )
    return [Child(derive(state, enter_secure), "secure_world", reason, {"register": register})]


def secure_register(instruction: FaultingInstruction) -> str | None:
    """The secure-world register a faulting instruction accesses (e.g. "SCR"), else None."""
    word = instruction.a32 if instruction.a32 is not None else instruction.t32_word
    if word is None:
        return None
    # A32's unconditional space (cond 1111) holds MRC2/MCR2, not these; T32 has no condition.
    if instruction.a32 is not None and word >> 28 == 0xF:
        return None
    if word & CP15_TRANSFER[0] == CP15_TRANSFER[1]:
        is_read = bool(word >> 20 & 1)
        key = (word >> 21 & 7, word >> 16 & 0xF, word & 0xF, word >> 5 & 7)
        named = SECURE_REGISTERS.get(key)
        if named is None:
            return None
        name, readable_non_secure = named
        return None if is_read and readable_non_secure else name
    if word & CP15_PAIR_WRITE[0] == CP15_PAIR_WRITE[1] and (word >> 4 & 0xF, word & 0xF) == CNTVOFF:
        return "CNTVOFF"
    return None
