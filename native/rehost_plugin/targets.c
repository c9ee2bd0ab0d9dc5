/*
 * What differs between guest architectures (TargetTraits, chosen once from QEMU's target name):
 * the ARM (A32 and Thumb), A64 and MIPS32 decoders run at translation time (backward branches,
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

/* A64: every instruction is 4 bytes, little-endian as the corpus kernels run. */
#define A64_NOP 0xd503201f
#define A64_WFE 0xd503205f
/* `mov x9, x30`: what ftrace_init_nop writes over the first NOP of a patchable entry. */
#define A64_FTRACE_ENTRY 0xaa1e03e9
#define A64_SP 31

/* B, B.cond, CBZ/CBNZ, TBZ/TBNZ with a negative offset (their immediate's sign bit). */
static bool a64_backward_branch(uint32_t word, uint64_t vaddr, uint64_t *target)
{
    int64_t offset;

    if ((word & 0xfc000000) == 0x14000000) { /* B */
        offset = sign_extend((word & 0x3ffffff) << 2, 28);
    } else if ((word & 0xff000010) == 0x54000000 || /* B.cond */
               (word & 0x7e000000) == 0x34000000) { /* CBZ, CBNZ */
        offset = sign_extend(((word >> 5) & 0x7ffff) << 2, 21);
    } else if ((word & 0x7e000000) == 0x36000000) { /* TBZ, TBNZ */
        offset = sign_extend(((word >> 5) & 0x3fff) << 2, 16);
    } else {
        return false;
    }
    *target = vaddr + offset;
    return offset < 0;
}

static bool a64_ends_in_backward_branch(struct qemu_plugin_tb *tb,
                                        LoopBranch *loop)
{
    struct qemu_plugin_insn *last =
        qemu_plugin_tb_get_insn(tb, qemu_plugin_tb_n_insns(tb) - 1);
    uint8_t bytes[4];

    if (qemu_plugin_insn_data(last, bytes, sizeof(bytes)) != 4) {
        return false;
    }
    loop->branch_pc = qemu_plugin_insn_vaddr(last);
    return a64_backward_branch(guest_word(bytes, false), loop->branch_pc,
                               &loop->start_pc);
}

/*
 * A64 calls: BL, BLR, and the pointer-authenticated BLRAA, BLRAB (modifier in a register),
 * BLRAAZ, BLRABZ (zero modifier). A return needs no decoding (RET, RETAA, RETAB alike): a block
 * starting at a pushed return address pops its frame (callstack.c).
 */
static bool a64_is_call(const uint8_t *bytes, size_t size, uint64_t vaddr,
                        bool thumb, CallSite *call)
{
    uint32_t word;

    if (size != 4) {
        return false;
    }
    word = guest_word(bytes, false);
    call->return_address = vaddr + 4;
    call->target_register = -1;
    if ((word & 0xfc000000) == 0x94000000) { /* BL */
        call->target = vaddr + sign_extend((word & 0x3ffffff) << 2, 28);
        return true;
    }
    if ((word & 0xfffffc1f) == 0xd63f0000 || /* BLR */
        (word & 0xfffff81f) == 0xd63f081f || /* BLRAAZ, BLRABZ */
        (word & 0xfffff800) == 0xd73f0800) { /* BLRAA, BLRAB */
        call->target_register = (word >> 5) & 0x1f;
        return true;
    }
    return false;
}

/*
 * A pointer-authenticated target keeps its signature in the bits above the virtual address:
 * put back the sign extension of bit 55 there (a kernel address has it set). The corpus kernels
 * have 48-bit virtual addresses.
 */
#define A64_VA_BITS 48

static uint64_t a64_call_target(uint64_t value)
{
    uint64_t high = ~0ULL << A64_VA_BITS;

    return value & (1ULL << 55) ? value | high : value & ~high;
}

static uint64_t arm_call_target(uint64_t value)
{
    return value & ~1ULL; /* the Thumb bit */
}

static uint64_t plain_call_target(uint64_t value)
{
    return value;
}

/* A64: mov x0, #VALUE (the 32-bit value sign-extended, as an int or a long returns it), ret;
 * movz/movn and movk for a value no single move makes. */
static size_t a64_return_patch(uint32_t value, uint32_t words[NOP_WORDS_MAX])
{
    uint64_t extended = (uint64_t)(int64_t)(int32_t)value;
    uint32_t low = extended & 0xffff;
    uint32_t high = (extended >> 16) & 0xffff;

    if ((int32_t)value >= 0 && high == 0) {
        words[0] = 0xd2800000 | low << 5; /* movz x0, #low */
    } else if ((int32_t)value < 0 && high == 0xffff) {
        words[0] = 0x92800000 | (~low & 0xffff) << 5; /* movn x0, #~low */
    } else {
        words[0] = (int32_t)value < 0 ?
                   0x92800000 | (~low & 0xffff) << 5 : /* movn x0, #~low */
                   0xd2800000 | low << 5;               /* movz x0, #low */
        words[1] = 0xf2a00000 | high << 5; /* movk x0, #high, lsl #16 */
        words[2] = 0xd65f03c0;             /* ret */
        return 3;
    }
    words[1] = 0xd65f03c0; /* ret */
    return 2;
}

/*
 * A64 patchable function entries (-fpatchable-function-entry=2: two NOPs, the first turned
 * into `mov x9, x30` by ftrace at boot): a NOP patch goes after them, where ftrace never
 * writes, so ftrace finds its NOPs as the compiler left them.
 */
static size_t a64_entry_skip(const uint8_t *bytes, size_t size)
{
    uint32_t first, second;

    if (size < 8) {
        return 0;
    }
    first = guest_word(bytes, false);
    second = guest_word(bytes + 4, false);
    return (first == A64_NOP || first == A64_FTRACE_ENTRY) && second == A64_NOP ?
           8 : 0;
}

/* ESR_ELx's exception class: a data abort from a lower or the same EL (QEMU winds its block
 * back to the access); every other synchronous exception is planted by the translator. */
#define A64_ESR_EC(esr) (((esr) >> 26) & 0x3f)
#define A64_EC_DATA_ABORT_LOWER 0x24
#define A64_EC_DATA_ABORT_SAME 0x25

static bool a64_leaves_fault_unexecuted(uint64_t to_pc, uint64_t cause)
{
    return A64_ESR_EC(cause) == A64_EC_DATA_ABORT_LOWER ||
           A64_ESR_EC(cause) == A64_EC_DATA_ABORT_SAME;
}

/* ADD/SUB (immediate, 64-bit, not setting flags) into sp from another register: `mov sp, x9`
 * of cpu_switch_to (A64 loads no register 31 as sp). */
static bool a64_loads_stack_pointer(const uint8_t *bytes, size_t size)
{
    uint32_t word = guest_word(bytes, false);

    return size == 4 && (word & 0xbf800000) == 0x91000000 &&
           (word & 0x1f) == A64_SP && ((word >> 5) & 0x1f) != A64_SP;
}

static bool a64_waits_for_event(const uint8_t *bytes, size_t size)
{
    return size == 4 && guest_word(bytes, false) == A64_WFE;
}

static size_t no_entry_skip(const uint8_t *bytes, size_t size)
{
    return 0;
}

static const TargetTraits target_traits[] = {
    { "arm", "r0", "r0", "cpsr", "sp", "r%d", ARM_CPSR_MODE_USER, 8192, false,
      arm_ends_in_backward_branch, arm_is_call, arm_call_target,
      arm_return_patch, no_entry_skip, NULL, arm_leaves_fault_unexecuted,
      arm_loads_stack_pointer, arm_waits_for_event },
    /* PSTATE as gdb's cpsr: M[4:0] 0 is EL0t, I (bit 7) as on ARM. THREAD_SIZE 16 KiB. */
    { "aarch64", "x0", "x0", "cpsr", "sp", "x%d", A64_PSTATE_EL0T, 16384, false,
      a64_ends_in_backward_branch, a64_is_call, a64_call_target,
      a64_return_patch, a64_entry_skip, "ESR_EL1", a64_leaves_fault_unexecuted,
      a64_loads_stack_pointer, a64_waits_for_event },
    { "mipsel", "r4", "r2", NULL, "r29", "r%d", 0, 8192, false,
      mips_ends_in_backward_branch, mips_is_call, plain_call_target,
      mips_return_patch, no_entry_skip, "cause", mips_leaves_fault_unexecuted,
      mips_loads_stack_pointer, never_waits_for_event },
    { "mips", "r4", "r2", NULL, "r29", "r%d", 0, 8192, true,
      mips_ends_in_backward_branch, mips_is_call, plain_call_target,
      mips_return_patch, no_entry_skip, "cause", mips_leaves_fault_unexecuted,
      mips_loads_stack_pointer, never_waits_for_event },
};
/*
 * Another target still works: every block checks the budget, no register is read, and a
 * faulting instruction counts as executed.
 */
static const TargetTraits unknown_target = { "?", NULL, NULL, NULL, NULL, "r%d",
                                             0, 8192, false, any_branch,
                                             no_call, plain_call_target, NULL,
                                             no_entry_skip, NULL,
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

