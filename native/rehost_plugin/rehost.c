/*
 * The `rehost` TCG plugin: how far did the guest kernel get, and why did the run end.
 *
 *   -plugin librehost.so,budget=N,hook=NAME@0xADDR,initcalls=0xADDR,panic=0xADDR,
 *           halt=NAME@0xADDR,user_below=0xADDR
 *
 * budget:     end the run once N guest instructions have executed. Checked in blocks that end
 *             in a backward branch (every loop has one) and on interrupts and exceptions, so it
 *             may overshoot by the instructions of one loop iteration.
 * hook:       "milestone NAME 0xADDR at insn K" the first time ADDR executes (start_kernel ...).
 * initcalls:  the address of do_one_initcall: "initcall 0xFN at insn K" on every entry, FN
 *             being its first argument (the initcall's function pointer).
 * panic:      the address of panic(): "end panic \"FORMAT\" at insn K", FORMAT read through the
 *             first argument, then the run ends.
 * halt:       "end halt NAME at insn K" and the run ends (machine_power_off, machine_halt, ...).
 * user_below: the kernel's PAGE_OFFSET: "end user_space 0xPC at insn K" at the first
 *             block below it that runs in user mode (ARM: CPSR mode USR; MIPS: kuseg is
 *             user-only, so the address alone decides), once the kernel runs mapped.
 * Reports go through qemu_plugin_outs (stderr, or -D FILE with -d plugin); the run ends with
 * exit status 0 after an "end" report. K counts instructions of the blocks entered so far.
 *
 * Decisions are made at translation time: a block gets a callback only when it holds a hooked
 * address, starts below user_below, or ends in a backward branch. Single vCPU: the machine has
 * one. It must never change guest state: observation only, for now.
 */

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>
#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

/* Longest panic format we quote; the kernel's are one line. */
#define PANIC_MESSAGE_MAX 160
#define ARM_CPSR_MODE_MASK 0x1f
#define ARM_CPSR_MODE_USER 0x10

typedef enum {
    HOOK_MILESTONE,
    HOOK_INITCALL,
    HOOK_PANIC,
    HOOK_HALT,
} HookKind;

typedef struct {
    char *name;
    uint64_t vaddr;
    HookKind kind;
    bool reached;
} Hook;

typedef bool (*BackwardBranchTest)(struct qemu_plugin_tb *tb);

/* What differs between guest architectures, chosen once from the target name. */
typedef struct {
    const char *target;
    const char *argument_register; /* a call's first argument (gdb's name) */
    const char *mode_register;     /* NULL: the address alone tells user mode */
    bool big_endian;
    BackwardBranchTest ends_in_backward_branch;
} TargetTraits;

typedef struct {
    const TargetTraits *traits;
    uint64_t budget;
    uint64_t user_below; /* 0: not watched */
    bool kernel_mapped;  /* code at or above user_below has been translated */
    GArray *hooks;       /* of Hook */
    struct qemu_plugin_scoreboard *executed_board;
    qemu_plugin_u64 executed; /* instructions of the blocks entered so far */
    struct qemu_plugin_register *argument_register;
    struct qemu_plugin_register *mode_register;
    GByteArray *register_buffer;
} RehostState;

static RehostState state;

static uint64_t instructions_executed(void)
{
    return qemu_plugin_u64_sum(state.executed);
}

static void report(const char *line)
{
    g_autofree char *text = g_strdup_printf("rehost: %s\n", line);

    qemu_plugin_outs(text);
}

static G_NORETURN void end_run(const char *reason)
{
    g_autofree char *line = g_strdup_printf("end %s at insn %" PRIu64, reason,
                                            instructions_executed());

    report(line);
    exit(0);
}

/* A register of the current vCPU as an integer; only from callbacks with R_REGS. */
static uint64_t read_register(struct qemu_plugin_register *handle)
{
    uint64_t value = 0;
    int size, i;

    g_byte_array_set_size(state.register_buffer, 0);
    size = qemu_plugin_read_register(handle, state.register_buffer);
    for (i = 0; i < size && i < 8; i++) {
        int byte = state.traits->big_endian ? i : size - 1 - i;

        value = value << 8 | state.register_buffer->data[byte];
    }
    return value;
}

static uint32_t guest_word(const uint8_t *bytes, bool big_endian)
{
    return big_endian ?
        (uint32_t)bytes[0] << 24 | bytes[1] << 16 | bytes[2] << 8 | bytes[3] :
        (uint32_t)bytes[3] << 24 | bytes[2] << 16 | bytes[1] << 8 | bytes[0];
}

/*
 * ARM: is the block's last instruction a direct branch (not a call) to a lower address?
 * A 4-byte instruction may be A32 or Thumb-32 and the plugin API does not say which, so either
 * reading counts: a false match only adds a budget check.
 */
static bool arm_ends_in_backward_branch(struct qemu_plugin_tb *tb)
{
    struct qemu_plugin_insn *last =
        qemu_plugin_tb_get_insn(tb, qemu_plugin_tb_n_insns(tb) - 1);
    uint8_t bytes[4];
    size_t size = qemu_plugin_insn_data(last, bytes, sizeof(bytes));
    uint16_t first = bytes[0] | bytes[1] << 8;
    uint16_t second = bytes[2] | bytes[3] << 8;
    uint32_t word = guest_word(bytes, false);

    if (size == 2) {
        /* T1 conditional B (cond 0xE/0xF: UDF/SVC), T2 unconditional B. */
        if ((first & 0xf000) == 0xd000 && (first & 0x0e00) != 0x0e00) {
            return first & 0x0080;
        }
        return (first & 0xf800) == 0xe000 && (first & 0x0400);
    }
    if (size != 4) {
        return false;
    }
    /* A32 B (not BL, not the unconditional BLX space), sign bit of imm24. */
    if ((word & 0x0f000000) == 0x0a000000 && (word >> 28) != 0xf &&
        (word & 0x00800000)) {
        return true;
    }
    /* T32 B encodings T3/T4 (BL sets bit 14); sign S in the first halfword. */
    return (first & 0xf800) == 0xf000 && (second & 0xc000) == 0x8000 &&
           (first & 0x0400);
}

/* MIPS32: a branch with a negative offset or a jump to a lower address, in the last two
 * instructions of the block (the block ends after the delay slot). */
static bool mips_is_backward_branch(uint32_t word, uint64_t vaddr)
{
    uint32_t opcode = word >> 26;
    uint32_t rs = (word >> 21) & 0x1f;
    uint32_t rt = (word >> 16) & 0x1f;
    bool negative_offset = word & 0x8000;
    uint64_t jump_target;

    switch (opcode) {
    case 0x01: /* REGIMM: bltz, bgez, bltzl, bgezl, and the linking forms */
        return (rt & 0x0c) == 0 && negative_offset;
    case 0x02: /* j */
        jump_target = ((vaddr + 4) & ~0x0fffffffULL) | (word & 0x03ffffff) << 2;
        return jump_target <= vaddr;
    case 0x04: case 0x05: case 0x06: case 0x07: /* beq bne blez bgtz */
    case 0x14: case 0x15: case 0x16: case 0x17: /* their "likely" forms */
        return negative_offset;
    case 0x11: case 0x12: /* bc1x, bc2x */
        return rs == 0x08 && negative_offset;
    default:
        return false;
    }
}

static bool mips_ends_in_backward_branch(struct qemu_plugin_tb *tb)
{
    size_t count = qemu_plugin_tb_n_insns(tb);
    size_t i;

    for (i = count >= 2 ? count - 2 : 0; i < count; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint8_t bytes[4];

        if (qemu_plugin_insn_data(insn, bytes, sizeof(bytes)) == 4 &&
            mips_is_backward_branch(guest_word(bytes, state.traits->big_endian),
                                    qemu_plugin_insn_vaddr(insn))) {
            return true;
        }
    }
    return false;
}

static bool always(struct qemu_plugin_tb *tb)
{
    return true;
}

static const TargetTraits target_traits[] = {
    { "arm", "r0", "cpsr", false, arm_ends_in_backward_branch },
    { "mipsel", "r4", NULL, false, mips_ends_in_backward_branch },
    { "mips", "r4", NULL, true, mips_ends_in_backward_branch },
};
/* Another target still works: every block checks the budget, no register is read. */
static const TargetTraits unknown_target = { "?", NULL, NULL, false, always };

static const TargetTraits *traits_of(const char *target)
{
    size_t i;

    for (i = 0; i < G_N_ELEMENTS(target_traits); i++) {
        if (g_str_equal(target, target_traits[i].target)) {
            return &target_traits[i];
        }
    }
    return &unknown_target;
}

/* The panic format string, printable ASCII only, quotes and backslashes as '?'. */
static char *read_panic_message(void)
{
    g_autoptr(GByteArray) bytes = g_byte_array_new();
    GString *message = g_string_new(NULL);
    uint64_t pointer;
    guint i;

    if (!state.argument_register) {
        return g_string_free(message, false);
    }
    pointer = read_register(state.argument_register);
    if (qemu_plugin_read_memory_vaddr(pointer, bytes, PANIC_MESSAGE_MAX)) {
        for (i = 0; i < bytes->len && bytes->data[i]; i++) {
            char c = bytes->data[i];

            g_string_append_c(message,
                              c >= 0x20 && c < 0x7f && c != '"' && c != '\\' ?
                              c : '?');
        }
    }
    return g_string_free(message, false);
}

static void on_hook(unsigned int vcpu_index, void *userdata)
{
    Hook *hook = &g_array_index(state.hooks, Hook, GPOINTER_TO_UINT(userdata));
    g_autofree char *text = NULL;

    switch (hook->kind) {
    case HOOK_MILESTONE:
        if (!hook->reached) {
            hook->reached = true;
            text = g_strdup_printf("milestone %s 0x%" PRIx64 " at insn %"
                                   PRIu64, hook->name, hook->vaddr,
                                   instructions_executed());
            report(text);
        }
        return;
    case HOOK_INITCALL:
        text = g_strdup_printf("initcall 0x%" PRIx64 " at insn %" PRIu64,
                               read_register(state.argument_register),
                               instructions_executed());
        report(text);
        return;
    case HOOK_PANIC: {
        g_autofree char *message = read_panic_message();

        text = g_strdup_printf("panic \"%s\"", message);
        end_run(text);
    }
    case HOOK_HALT:
        text = g_strdup_printf("halt %s", hook->name);
        end_run(text);
    }
}

static void on_budget_check(unsigned int vcpu_index, void *userdata)
{
    end_run("budget");
}

static void check_budget(void)
{
    if (state.budget && instructions_executed() >= state.budget) {
        end_run("budget");
    }
}

/* Interrupts and exceptions also check the budget: a loop may leave only through them. */
static void on_discontinuity(qemu_plugin_id_t id, unsigned int vcpu_index,
                             enum qemu_plugin_discon_type type,
                             uint64_t from_pc, uint64_t to_pc)
{
    check_budget();
}

static void on_block_below_user_limit(unsigned int vcpu_index, void *userdata)
{
    uint64_t vaddr = GPOINTER_TO_SIZE(userdata);
    g_autofree char *text = NULL;

    if (state.mode_register &&
        (read_register(state.mode_register) & ARM_CPSR_MODE_MASK) !=
        ARM_CPSR_MODE_USER) {
        return;
    }
    text = g_strdup_printf("user_space 0x%" PRIx64, vaddr);
    end_run(text);
}

static bool hook_needs_registers(const Hook *hook)
{
    return hook->kind == HOOK_INITCALL || hook->kind == HOOK_PANIC;
}

static void instrument_hooks(struct qemu_plugin_tb *tb)
{
    size_t count = qemu_plugin_tb_n_insns(tb);
    size_t i;
    guint h;

    for (i = 0; i < count; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint64_t vaddr = qemu_plugin_insn_vaddr(insn);

        for (h = 0; h < state.hooks->len; h++) {
            Hook *hook = &g_array_index(state.hooks, Hook, h);

            if (hook->vaddr != vaddr ||
                (hook->kind == HOOK_MILESTONE && hook->reached)) {
                continue;
            }
            qemu_plugin_register_vcpu_insn_exec_cb(
                insn, on_hook,
                hook_needs_registers(hook) ? QEMU_PLUGIN_CB_R_REGS :
                                             QEMU_PLUGIN_CB_NO_REGS,
                GUINT_TO_POINTER(h));
        }
    }
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    uint64_t vaddr = qemu_plugin_tb_vaddr(tb);

    qemu_plugin_register_vcpu_tb_exec_inline_per_vcpu(
        tb, QEMU_PLUGIN_INLINE_ADD_U64, state.executed,
        qemu_plugin_tb_n_insns(tb));
    if (state.budget && state.traits->ends_in_backward_branch(tb)) {
        qemu_plugin_register_vcpu_tb_exec_cond_cb(tb, on_budget_check,
                                                  QEMU_PLUGIN_CB_NO_REGS,
                                                  QEMU_PLUGIN_COND_GE,
                                                  state.executed, state.budget,
                                                  NULL);
    }
    /*
     * Until the kernel runs at its link address, code below user_below is
     * the boot loader, the decompressor and the kernel's MMU-off start:
     * billions of instructions that need no register read. Their blocks
     * never serve user mode (the mode is part of a block's key).
     */
    if (vaddr >= state.user_below) {
        state.kernel_mapped = true;
    } else if (state.kernel_mapped) {
        qemu_plugin_register_vcpu_tb_exec_cb(tb, on_block_below_user_limit,
                                             state.mode_register ?
                                             QEMU_PLUGIN_CB_R_REGS :
                                             QEMU_PLUGIN_CB_NO_REGS,
                                             GSIZE_TO_POINTER(vaddr));
    }
    instrument_hooks(tb);
}

static struct qemu_plugin_register *find_register(GArray *registers,
                                                  const char *name)
{
    guint i;

    for (i = 0; name && i < registers->len; i++) {
        qemu_plugin_reg_descriptor *descriptor =
            &g_array_index(registers, qemu_plugin_reg_descriptor, i);

        if (g_str_equal(descriptor->name, name)) {
            return descriptor->handle;
        }
    }
    return NULL;
}

static bool any_hook_needs_registers(void)
{
    guint h;

    for (h = 0; h < state.hooks->len; h++) {
        if (hook_needs_registers(&g_array_index(state.hooks, Hook, h))) {
            return true;
        }
    }
    return false;
}

static void on_vcpu_init(qemu_plugin_id_t id, unsigned int vcpu_index)
{
    g_autoptr(GArray) registers = qemu_plugin_get_registers();

    state.argument_register =
        find_register(registers, state.traits->argument_register);
    state.mode_register = find_register(registers, state.traits->mode_register);
    if (!state.argument_register && any_hook_needs_registers()) {
        /* Initcall and panic reports would be wrong: refuse to run instead. */
        fprintf(stderr, "rehost: this %s CPU exposes no register %s to "
                "plugins; initcalls= and panic= need it\n",
                state.traits->target,
                state.traits->argument_register ?
                state.traits->argument_register : "(unknown target)");
        exit(1);
    }
    if (state.user_below && state.traits->mode_register &&
        !state.mode_register) {
        fprintf(stderr, "rehost: this CPU exposes no register %s; user_below= "
                "needs it\n", state.traits->mode_register);
        exit(1);
    }
}

static void on_plugin_exit(qemu_plugin_id_t id, void *userdata)
{
    g_autofree char *line = g_strdup_printf("exit after %" PRIu64 " insns",
                                            instructions_executed());
    guint h;

    report(line);
    for (h = 0; h < state.hooks->len; h++) {
        g_free(g_array_index(state.hooks, Hook, h).name);
    }
    g_array_free(state.hooks, true);
    g_byte_array_free(state.register_buffer, true);
    qemu_plugin_scoreboard_free(state.executed_board);
}

static bool parse_address(const char *text, uint64_t *address)
{
    char *end;

    *address = g_ascii_strtoull(text, &end, 0);
    return end != text && *end == '\0';
}

/* "NAME@ADDRESS", or only "ADDRESS" when the kind names the hook. */
static bool parse_hook(const char *key, const char *value, HookKind kind)
{
    const char *at = strrchr(value, '@');
    Hook hook = { .kind = kind };

    if (kind == HOOK_MILESTONE || kind == HOOK_HALT) {
        if (!at || at == value || !parse_address(at + 1, &hook.vaddr)) {
            fprintf(stderr, "rehost: %s=%s is not NAME@ADDRESS\n", key, value);
            return false;
        }
        hook.name = g_strndup(value, at - value);
    } else {
        if (!parse_address(value, &hook.vaddr)) {
            fprintf(stderr, "rehost: %s=%s is not an ADDRESS\n", key, value);
            return false;
        }
        hook.name = g_strdup(key);
    }
    g_array_append_val(state.hooks, hook);
    return true;
}

static bool parse_argument(const char *key, const char *value)
{
    if (g_str_equal(key, "budget")) {
        if (!parse_address(value, &state.budget) || state.budget == 0) {
            fprintf(stderr, "rehost: budget=%s is not a positive integer\n",
                    value);
            return false;
        }
        return true;
    }
    if (g_str_equal(key, "user_below")) {
        if (!parse_address(value, &state.user_below)) {
            fprintf(stderr, "rehost: user_below=%s is not an ADDRESS\n", value);
            return false;
        }
        return true;
    }
    if (g_str_equal(key, "hook")) {
        return parse_hook(key, value, HOOK_MILESTONE);
    }
    if (g_str_equal(key, "initcalls")) {
        return parse_hook(key, value, HOOK_INITCALL);
    }
    if (g_str_equal(key, "panic")) {
        return parse_hook(key, value, HOOK_PANIC);
    }
    if (g_str_equal(key, "halt")) {
        return parse_hook(key, value, HOOK_HALT);
    }
    fprintf(stderr, "rehost: unknown argument %s (budget, hook, initcalls, "
            "panic, halt, user_below)\n", key);
    return false;
}

static bool parse_arguments(int argc, char **argv)
{
    int i;

    for (i = 0; i < argc; i++) {
        g_auto(GStrv) pair = g_strsplit(argv[i], "=", 2);

        if (!pair[0] || !pair[1]) {
            fprintf(stderr, "rehost: argument %s is not KEY=VALUE\n", argv[i]);
            return false;
        }
        if (!parse_argument(pair[0], pair[1])) {
            return false;
        }
    }
    return true;
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id,
                                           const qemu_info_t *info,
                                           int argc, char **argv)
{
    state.traits = traits_of(info->target_name);
    state.hooks = g_array_new(false, true, sizeof(Hook));
    if (!parse_arguments(argc, argv)) {
        return -1;
    }
    state.register_buffer = g_byte_array_new();
    state.executed_board = qemu_plugin_scoreboard_new(sizeof(uint64_t));
    state.executed = qemu_plugin_scoreboard_u64(state.executed_board);
    qemu_plugin_register_vcpu_init_cb(id, on_vcpu_init);
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    if (state.budget) {
        qemu_plugin_register_vcpu_discon_cb(id, QEMU_PLUGIN_DISCON_ALL,
                                            on_discontinuity);
    }
    qemu_plugin_register_atexit_cb(id, on_plugin_exit, NULL);
    return 0;
}
