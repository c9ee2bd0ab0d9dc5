/*
 * The `rehost` TCG plugin (skeleton): how far did the guest get, within a budget.
 *
 *   -plugin librehost.so,budget=N,hook=NAME@0xADDR,hook=...
 *
 * budget: stop the run (exit status 0) once N guest instructions have executed;
 *         checked at the start of each translation block, so it may overshoot by one block.
 * hook:   report "milestone NAME 0xADDR at insn COUNT" the first time the instruction at
 *         virtual address ADDR executes (for example start_kernel from kallsyms).
 * Reports go through qemu_plugin_outs (stderr, or -D FILE with -d plugin).
 *
 * Decisions are made at translation time; execution-time callbacks only run on hooked
 * instructions and on the budget condition. Single vCPU: the machine has one.
 * It must never change guest state: observation only, for now.
 */

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>
#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

typedef struct {
    char *name;
    uint64_t vaddr;
    bool reached;
} Hook;

typedef struct {
    uint64_t budget;
    GArray *hooks; /* of Hook */
    struct qemu_plugin_scoreboard *executed_board;
    qemu_plugin_u64 executed; /* instructions executed before the current block */
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

static void on_hook(unsigned int vcpu_index, void *userdata)
{
    Hook *hook = &g_array_index(state.hooks, Hook, GPOINTER_TO_UINT(userdata));
    g_autofree char *line = NULL;

    if (hook->reached) {
        return;
    }
    hook->reached = true;
    line = g_strdup_printf("milestone %s 0x%" PRIx64 " at insn %" PRIu64,
                           hook->name, hook->vaddr, instructions_executed());
    report(line);
}

static void on_budget_exhausted(unsigned int vcpu_index, void *userdata)
{
    g_autofree char *line = g_strdup_printf("end budget after %" PRIu64 " insns",
                                            instructions_executed());

    report(line);
    exit(0);
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t count = qemu_plugin_tb_n_insns(tb);
    size_t i;
    guint h;

    if (state.budget) {
        /* Registered before the add: the check sees the count before this block. */
        qemu_plugin_register_vcpu_tb_exec_cond_cb(tb, on_budget_exhausted,
                                                  QEMU_PLUGIN_CB_NO_REGS,
                                                  QEMU_PLUGIN_COND_GE,
                                                  state.executed, state.budget,
                                                  NULL);
    }
    qemu_plugin_register_vcpu_tb_exec_inline_per_vcpu(
        tb, QEMU_PLUGIN_INLINE_ADD_U64, state.executed, count);

    for (i = 0; i < count; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint64_t vaddr = qemu_plugin_insn_vaddr(insn);

        for (h = 0; h < state.hooks->len; h++) {
            Hook *hook = &g_array_index(state.hooks, Hook, h);

            if (hook->vaddr == vaddr && !hook->reached) {
                qemu_plugin_register_vcpu_insn_exec_cb(insn, on_hook,
                                                       QEMU_PLUGIN_CB_NO_REGS,
                                                       GUINT_TO_POINTER(h));
            }
        }
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
    qemu_plugin_scoreboard_free(state.executed_board);
}

static bool parse_hook(const char *value, Hook *hook)
{
    const char *at = strrchr(value, '@');
    char *end;

    if (!at || at == value) {
        return false;
    }
    hook->vaddr = g_ascii_strtoull(at + 1, &end, 0);
    if (end == at + 1 || *end != '\0') {
        return false;
    }
    hook->name = g_strndup(value, at - value);
    hook->reached = false;
    return true;
}

static bool parse_arguments(int argc, char **argv)
{
    int i;

    for (i = 0; i < argc; i++) {
        g_auto(GStrv) pair = g_strsplit(argv[i], "=", 2);
        Hook hook;
        char *end;

        if (!pair[0] || !pair[1]) {
            fprintf(stderr, "rehost: argument %s is not KEY=VALUE\n", argv[i]);
            return false;
        }
        if (g_str_equal(pair[0], "budget")) {
            state.budget = g_ascii_strtoull(pair[1], &end, 0);
            if (end == pair[1] || *end != '\0' || state.budget == 0) {
                fprintf(stderr, "rehost: budget=%s is not a positive integer\n",
                        pair[1]);
                return false;
            }
        } else if (g_str_equal(pair[0], "hook")) {
            if (!parse_hook(pair[1], &hook)) {
                fprintf(stderr, "rehost: hook=%s is not NAME@ADDRESS\n",
                        pair[1]);
                return false;
            }
            g_array_append_val(state.hooks, hook);
        } else {
            fprintf(stderr, "rehost: unknown argument %s (budget, hook)\n",
                    pair[0]);
            return false;
        }
    }
    return true;
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id,
                                           const qemu_info_t *info,
                                           int argc, char **argv)
{
    state.hooks = g_array_new(false, true, sizeof(Hook));
    if (!parse_arguments(argc, argv)) {
        return -1;
    }
    state.executed_board = qemu_plugin_scoreboard_new(sizeof(uint64_t));
    state.executed = qemu_plugin_scoreboard_u64(state.executed_board);
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, on_plugin_exit, NULL);
    return 0;
}
