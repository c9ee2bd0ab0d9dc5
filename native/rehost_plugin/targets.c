/*
 * What differs between guest architectures (TargetTraits, chosen once from QEMU's target name):
 * the ARM (A32 and Thumb) and MIPS32 decoders run at translation time (backward branches,
 * calls, loads of the stack pointer), the NOP return patches, and which exceptions leave their
 * instruction uncounted. Pure functions of instruction bytes: nothing here reads or changes the
 * plugin's state, registers or guest memory.
 */

#include "rehost.h"

static uint32_t guest_word(const uint8_t *bytes, bool big_endian)
{
    return big_endian ?
        (uint32_t)bytes[0] << 24 | bytes[1] << 16 | bytes[2] << 8 | bytes[3] :
        (uint32_t)bytes[3] << 24 | bytes[2] << 16 | bytes[1] << 8 | bytes[0];
}

static int64_t sign_extend(uint64_t value, unsigned bits)
{
    uint64_t sign = 1ULL << (bits - 1);

    return (int64_t)((value ^ sign) - sign);
}

/* The offset of Thumb-2 BL, BLX and B (encoding T4): S:I1:I2:imm10:imm11:0. */
static int64_t thumb_long_offset(uint16_t first, uint16_t second)
{
    uint32_t s = (first >> 10) & 1;
    uint32_t i1 = !(((second >> 13) & 1) ^ s);
    uint32_t i2 = !(((second >> 11) & 1) ^ s);

    return sign_extend(s << 24 | i1 << 23 | i2 << 22 | (first & 0x3ff) << 12 |
                       (second & 0x7ff) << 1, 25);
}

/* The offset of Thumb-2 conditional B (encoding T3): S:J2:J1:imm6:imm11:0. */
static int64_t thumb_conditional_offset(uint16_t first, uint16_t second)
{
    return sign_extend(((first >> 10) & 1) << 20 | ((second >> 11) & 1) << 19 |
                       ((second >> 13) & 1) << 18 | (first & 0x3f) << 12 |
                       (second & 0x7ff) << 1, 21);
}

/*
 * ARM: is the block's last instruction a direct branch (not a call) to a lower address?
 * A 4-byte instruction may be A32 or Thumb-32 and the plugin API does not say which, so either
 * reading counts: a false match only adds a budget check.
 */
static bool arm_ends_in_backward_branch(struct qemu_plugin_tb *tb,
                                        LoopBranch *loop)
{
    struct qemu_plugin_insn *last =
        qemu_plugin_tb_get_insn(tb, qemu_plugin_tb_n_insns(tb) - 1);
    uint64_t vaddr = qemu_plugin_insn_vaddr(last);
    uint8_t bytes[4];
    size_t size = qemu_plugin_insn_data(last, bytes, sizeof(bytes));
    uint16_t first = bytes[0] | bytes[1] << 8;
    uint16_t second = bytes[2] | bytes[3] << 8;
    uint32_t word = guest_word(bytes, false);
    int64_t offset;

    loop->branch_pc = vaddr;
    if (size == 2) {
        /* T1 conditional B (cond 0xE/0xF: UDF/SVC), T2 unconditional B. */
        if ((first & 0xf000) == 0xd000 && (first & 0x0e00) != 0x0e00) {
            offset = sign_extend((first & 0xff) << 1, 9);
        } else if ((first & 0xf800) == 0xe000) {
            offset = sign_extend((first & 0x7ff) << 1, 12);
        } else {
            return false;
        }
        loop->start_pc = vaddr + 4 + offset;
        return offset < 0;
    }
    if (size != 4) {
        return false;
    }
    /* A32 B (not BL, not the unconditional BLX space), sign bit of imm24. */
    if ((word & 0x0f000000) == 0x0a000000 && (word >> 28) != 0xf &&
        (word & 0x00800000)) {
        loop->start_pc = vaddr + 8 + sign_extend((word & 0xffffff) << 2, 26);
        return true;
    }
    /* T32 B encodings T3/T4 (BL sets bit 14); sign S in the first halfword. */
    if ((first & 0xf800) == 0xf000 && (second & 0xc000) == 0x8000 &&
        (first & 0x0400)) {
        offset = second & 0x1000 ? thumb_long_offset(first, second) :
                                   thumb_conditional_offset(first, second);
        loop->start_pc = vaddr + 4 + offset;
        return true;
    }
    return false;
}

/* MIPS32: a branch with a negative offset or a jump to a lower address; sets its target. */
static bool mips_is_backward_branch(uint32_t word, uint64_t vaddr,
                                    uint64_t *target)
{
    uint32_t opcode = word >> 26;
    uint32_t rs = (word >> 21) & 0x1f;
    uint32_t rt = (word >> 16) & 0x1f;
    bool negative_offset = word & 0x8000;

    *target = vaddr + 4 + sign_extend((word & 0xffff) << 2, 18);
    switch (opcode) {
    case 0x01: /* REGIMM: bltz, bgez, bltzl, bgezl, and the linking forms */
        return (rt & 0x0c) == 0 && negative_offset;
    case 0x02: /* j */
        *target = ((vaddr + 4) & ~0x0fffffffULL) | (word & 0x03ffffff) << 2;
        return *target <= vaddr;
    case 0x04: case 0x05: case 0x06: case 0x07: /* beq bne blez bgtz */
    case 0x14: case 0x15: case 0x16: case 0x17: /* their "likely" forms */
        return negative_offset;
    case 0x11: case 0x12: /* bc1x, bc2x */
        return rs == 0x08 && negative_offset;
    default:
        return false;
    }
}

/* The branch is one of the last two instructions (the block ends after the delay slot). */
static bool mips_ends_in_backward_branch(struct qemu_plugin_tb *tb,
                                         LoopBranch *loop)
{
    size_t count = qemu_plugin_tb_n_insns(tb);
    size_t i;

    for (i = count >= 2 ? count - 2 : 0; i < count; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint64_t vaddr = qemu_plugin_insn_vaddr(insn);
        uint8_t bytes[4];

        if (qemu_plugin_insn_data(insn, bytes, sizeof(bytes)) == 4 &&
            mips_is_backward_branch(guest_word(bytes, state.traits->big_endian),
                                    vaddr, &loop->start_pc)) {
            loop->branch_pc = vaddr;
            return true;
        }
    }
    return false;
}

/*
 * ARM calls: BL, BLX (immediate and register). `thumb` is a guess from the block (it holds a
 * 2-byte instruction); a 4-byte instruction in an all-4-byte block is read as A32, which is
 * what the kernels of the corpus are (a Thumb-2 kernel's calls would be missed in such blocks).
 */
static bool arm_is_call(const uint8_t *bytes, size_t size, uint64_t vaddr,
                        bool thumb, CallSite *call)
{
    uint16_t first = bytes[0] | bytes[1] << 8;
    uint16_t second = bytes[2] | bytes[3] << 8;
    uint32_t word = guest_word(bytes, false);

    call->return_address = vaddr + size;
    call->target_register = -1;
    if (size == 2) {
        if ((first & 0xff87) == 0x4780) { /* BLX Rm */
            call->target_register = (first >> 3) & 0xf;
            return true;
        }
        return false;
    }
    if (size != 4) {
        return false;
    }
    if (thumb) {
        if ((first & 0xf800) != 0xf000 || (second & 0xc000) != 0xc000) {
            return false;
        }
        call->target = vaddr + 4 + thumb_long_offset(first, second);
        if (!(second & 0x1000)) { /* BLX to A32: the target is word-aligned */
            call->target = ((vaddr + 4) & ~3ULL) + thumb_long_offset(first, second);
        }
        return true;
    }
    if ((word >> 28) == 0xf) { /* BLX immediate: to Thumb, H gives bit 1 */
        if ((word & 0x0e000000) != 0x0a000000) {
            return false;
        }
        call->target = vaddr + 8 + sign_extend((word & 0xffffff) << 2, 26) +
                        ((word >> 23) & 2);
        return true;
    }
    if ((word & 0x0f000000) == 0x0b000000) { /* BL */
        call->target = vaddr + 8 + sign_extend((word & 0xffffff) << 2, 26);
        return true;
    }
    if ((word & 0x0ffffff0) == 0x012fff30) { /* BLX Rm */
        call->target_register = word & 0xf;
        return true;
    }
    return false;
}

/* MIPS32 calls: jal, jalr, and the linking branches (bal is bgezal $zero). */
static bool mips_is_call(const uint8_t *bytes, size_t size, uint64_t vaddr,
                         bool thumb, CallSite *call)
{
    uint32_t word, opcode, rt;

    if (size != 4) {
        return false;
    }
    word = guest_word(bytes, state.traits->big_endian);
    opcode = word >> 26;
    rt = (word >> 16) & 0x1f;
    call->return_address = vaddr + 8; /* after the delay slot */
    call->target_register = -1;
    if (opcode == 0x03) {
        call->target = ((vaddr + 4) & ~0x0fffffffULL) | (word & 0x03ffffff) << 2;
        return true;
    }
    if (opcode == 0x00 && (word & 0x3f) == 0x09) {
        call->target_register = (word >> 21) & 0x1f;
        return true;
    }
    if (opcode == 0x01 && (rt & 0x1c) == 0x10) {
        call->target = vaddr + 4 + sign_extend((word & 0xffff) << 2, 18);
        return true;
    }
    return false;
}

/* ARM's rotated 8-bit immediate: value == imm8 ROR (2 * rotation). */
static bool arm_immediate(uint32_t value, uint32_t *encoded)
{
    uint32_t rotation;

    for (rotation = 0; rotation < 16; rotation++) {
        uint32_t imm8 = rotation ? value << (2 * rotation) |
                                   value >> (32 - 2 * rotation) : value;

        if (imm8 <= 0xff) {
            *encoded = rotation << 8 | imm8;
            return true;
        }
    }
    return false;
}

/* A32, any ARMv5+: mov/mvn r0, #VALUE; bx lr, or ldr r0, [pc] (the literal after bx lr). */
static size_t arm_return_patch(uint32_t value, uint32_t words[NOP_WORDS_MAX])
{
    uint32_t encoded;

    words[1] = 0xe12fff1e; /* bx lr */
    if (arm_immediate(value, &encoded)) {
        words[0] = 0xe3a00000 | encoded; /* mov r0, #value */
        return 2;
    }
    if (arm_immediate(~value, &encoded)) {
        words[0] = 0xe3e00000 | encoded; /* mvn r0, #~value */
        return 2;
    }
    words[0] = 0xe59f0000; /* ldr r0, [pc, #0]: pc reads 8 ahead, the literal */
    words[2] = value;
    return 3;
}

/* MIPS32: jr ra with the load of v0 in its delay slot (lui first for a 32-bit value). */
static size_t mips_return_patch(uint32_t value, uint32_t words[NOP_WORDS_MAX])
{
    int32_t signed_value = (int32_t)value;

    if (signed_value >= -0x8000 && signed_value < 0x8000) {
        words[0] = 0x03e00008;                     /* jr ra */
        words[1] = 0x24020000 | (value & 0xffff);  /* addiu v0, zero, value */
        return 2;
    }
    words[0] = 0x3c020000 | value >> 16;           /* lui v0, value >> 16 */
    words[1] = 0x03e00008;                         /* jr ra */
    words[2] = 0x34420000 | (value & 0xffff);      /* ori v0, v0, value & 0xffff */
    return 3;
}

/* A32/T32 vectors are 4 bytes apart from a 32-byte aligned base; 0x10 is the data abort. */
#define ARM_VECTOR_OFFSET_MASK 0x1f
#define ARM_VECTOR_DATA_ABORT 0x10

/* QEMU 10.2's ARM raises a data abort from a memory access it winds back (an MMU, alignment or
 * external abort); every other exception from code the translator planted, or between blocks. */
static bool arm_leaves_fault_unexecuted(uint64_t to_pc, uint64_t cause)
{
    return (to_pc & ARM_VECTOR_OFFSET_MASK) == ARM_VECTOR_DATA_ABORT;
}

#define MIPS_CAUSE_EXCCODE(cause) (((cause) >> 2) & 0x1f)

/*
 * QEMU 10.2's MIPS winds back to the instruction for TLB modified, TLB load/store misses,
 * address errors, data bus errors, overflow, traps and FPU exceptions (do_raise_exception with
 * the host return address); syscall, break, reserved instruction and coprocessor unusable
 * end their block and count.
 */
static bool mips_leaves_fault_unexecuted(uint64_t to_pc, uint64_t cause)
{
    switch (MIPS_CAUSE_EXCCODE(cause)) {
    case 1:  /* Mod */
    case 2:  /* TLBL */
    case 3:  /* TLBS */
    case 4:  /* AdEL */
    case 5:  /* AdES */
    case 7:  /* DBE */
    case 12: /* Ov */
    case 13: /* Tr */
    case 15: /* FPE */
        return true;
    default:
        return false;
    }
}

/*
 * A32: a data-processing result into sp from another register (mov sp, rN; sub sp, fp, #N),
 * a load into sp, or LDM with sp in its list (a switch's ldm {..., sp, pc}); not add/sub of sp
 * itself nor push/pop (sp as the base). Thumb: mov/add sp, rN (high registers); Thumb-2 is not
 * decoded (the corpus kernels are A32; see the call decoding).
 */
static bool arm_loads_stack_pointer(const uint8_t *bytes, size_t size)
{
    uint16_t first = bytes[0] | bytes[1] << 8;
    uint32_t word = guest_word(bytes, false);
    uint32_t opcode = (word >> 21) & 0xf;

    if (size == 2) {
        return (first & 0xfd00) == 0x4400 && ((first >> 4 & 0x8) | (first & 0x7)) == 13 &&
               ((first >> 3) & 0xf) != 13;
    }
    if (size != 4 || (word >> 28) == 0xf) {
        return false;
    }
    switch ((word >> 25) & 7) {
    case 0: case 1: /* data processing; not multiplies, extra loads, misc, compares */
        if ((!(word & (1 << 25)) && (word & 0x90) == 0x90) ||
            (opcode >= 8 && opcode <= 11)) {
            return false;
        }
        return ((word >> 12) & 0xf) == 13 &&
               (opcode == 13 || opcode == 15 || ((word >> 16) & 0xf) != 13);
    case 2: case 3: /* LDR (not the media space) */
        return !((word >> 25) & 1 && word & 0x10) && word & (1 << 20) &&
               ((word >> 12) & 0xf) == 13;
    case 4: /* LDM */
        return word & (1 << 20) && word & (1 << 13);
    default:
        return false;
    }
}

/* WFE: A32 (any condition), T16 and T32 encodings (a T32 one's halfwords as they are read). */
static bool arm_waits_for_event(const uint8_t *bytes, size_t size)
{
    uint32_t word = guest_word(bytes, false);

    if (size == 2) {
        return (word & 0xffff) == 0xbf20;
    }
    return size == 4 && (((word & 0x0fffffff) == 0x0320f002 && word >> 28 != 0xf) ||
                         word == 0x8002f3af);
}

static bool never_waits_for_event(const uint8_t *bytes, size_t size)
{
    return false;
}

#define MIPS_SP 29

/* MIPS32: lw/ld/lui into sp, addiu/addi into sp from another register, an ALU result into sp
 * from others (move sp, rN is addu or or). */
static bool mips_loads_stack_pointer(const uint8_t *bytes, size_t size)
{
    uint32_t word, opcode, rs, rt, rd;

    if (size != 4) {
        return false;
    }
    word = guest_word(bytes, state.traits->big_endian);
    opcode = word >> 26;
    rs = (word >> 21) & 0x1f;
    rt = (word >> 16) & 0x1f;
    rd = (word >> 11) & 0x1f;
    switch (opcode) {
    case 0x23: case 0x37: case 0x0f: /* lw, ld, lui */
        return rt == MIPS_SP;
    case 0x08: case 0x09: case 0x18: case 0x19: /* addi, addiu, daddi, daddiu */
        return rt == MIPS_SP && rs != MIPS_SP;
    case 0x00:
        switch (word & 0x3f) {
        case 0x0a: case 0x0b: /* movz movn */
        case 0x20: case 0x21: case 0x22: case 0x23: /* add addu sub subu */
        case 0x24: case 0x25: case 0x26: case 0x27: /* and or xor nor */
        case 0x2c: case 0x2d: case 0x2e: case 0x2f: /* dadd daddu dsub dsubu */
            return rd == MIPS_SP && rs != MIPS_SP && rt != MIPS_SP;
        default:
            return false;
        }
    default:
        return false;
    }
}

static bool never_loads_stack_pointer(const uint8_t *bytes, size_t size)
{
    return false;
}

static bool never_unexecuted(uint64_t to_pc, uint64_t cause)
{
    return false;
}

static bool any_branch(struct qemu_plugin_tb *tb, LoopBranch *loop)
{
    loop->start_pc = loop->branch_pc = 0;
    return true;
}

static bool no_call(const uint8_t *bytes, size_t size, uint64_t vaddr,
                    bool thumb, CallSite *call)
{
    return false;
}

static const TargetTraits target_traits[] = {
    { "arm", "r0", "r0", "cpsr", "sp", false, arm_ends_in_backward_branch,
      arm_is_call, arm_return_patch, NULL, arm_leaves_fault_unexecuted,
      arm_loads_stack_pointer, arm_waits_for_event },
    { "mipsel", "r4", "r2", NULL, "r29", false, mips_ends_in_backward_branch,
      mips_is_call, mips_return_patch, "cause", mips_leaves_fault_unexecuted,
      mips_loads_stack_pointer, never_waits_for_event },
    { "mips", "r4", "r2", NULL, "r29", true, mips_ends_in_backward_branch,
      mips_is_call, mips_return_patch, "cause", mips_leaves_fault_unexecuted,
      mips_loads_stack_pointer, never_waits_for_event },
};
/*
 * Another target still works: every block checks the budget, no register is read, and a
 * faulting instruction counts as executed.
 */
static const TargetTraits unknown_target = { "?", NULL, NULL, NULL, NULL, false,
                                             any_branch, no_call, NULL, NULL,
                                             never_unexecuted,
                                             never_loads_stack_pointer,
                                             never_waits_for_event };

const TargetTraits *traits_of(const char *target)
{
    size_t i;

    for (i = 0; i < G_N_ELEMENTS(target_traits); i++) {
        if (g_str_equal(target, target_traits[i].target)) {
            return &target_traits[i];
        }
    }
    return &unknown_target;
}

bool block_is_thumb(struct qemu_plugin_tb *tb)
{
    size_t count = qemu_plugin_tb_n_insns(tb);
    size_t i;

    for (i = 0; i < count; i++) {
        if (qemu_plugin_insn_size(qemu_plugin_tb_get_insn(tb, i)) == 2) {
            return true;
        }
    }
    return false;
}

