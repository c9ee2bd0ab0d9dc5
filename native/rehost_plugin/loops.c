/*
 * Hot loops (hot_loops=N): an inline counter per backward branch and a callback every N
 * iterations that reports the loop when they were quick (LOOP_ITERATION_INSTRUCTIONS_MAX each).
 * Never ends a run: the budget is counts.c's.
 */

#include "rehost.h"

/* A loop is hot when N iterations took at most N times this many instructions (of anything,
 * inner loops and calls included): more, and the run made progress elsewhere meanwhile. */
#define LOOP_ITERATION_INSTRUCTIONS_MAX 1000
#define HOT_LOOPS_REPORTED_MAX 64

/* Every N iterations of one loop (an inline conditional decided): hot, or start a new window? */
static void on_loop_iterations(unsigned int vcpu_index, void *userdata)
{
    Loop *loop = userdata;
    uint64_t icount = instructions_executed();
    uint64_t elapsed = icount - loop->window_start;
    g_autofree char *text = NULL;

    qemu_plugin_u64_set(loop->iterations, vcpu_index, 0);
    loop->window_start = icount;
    if (loop->reported ||
        elapsed > state.hot_loop_iterations * LOOP_ITERATION_INSTRUCTIONS_MAX ||
        state.hot_loops_reported == HOT_LOOPS_REPORTED_MAX) {
        return;
    }
    loop->reported = true;
    state.hot_loops_reported++;
    text = g_strdup_printf("hot_loop 0x%" PRIx64 "..0x%" PRIx64 " x%" PRIu64
                           " at insn %" PRIu64, loop->branch.start_pc,
                           loop->branch.branch_pc, state.hot_loop_iterations,
                           icount);
    report(text);
    send_hot_loop(loop);
}

void free_loop(gpointer data)
{
    Loop *loop = data;

    qemu_plugin_scoreboard_free(loop->board);
    g_free(loop);
}

void instrument_loop(struct qemu_plugin_tb *tb, const LoopBranch *branch)
{
    Loop *loop = g_hash_table_lookup(state.loops,
                                     GSIZE_TO_POINTER(branch->branch_pc));

    if (!loop) {
        loop = g_new0(Loop, 1);
        loop->branch = *branch;
        loop->board = qemu_plugin_scoreboard_new(sizeof(uint64_t));
        loop->iterations = qemu_plugin_scoreboard_u64(loop->board);
        loop->window_start = instructions_executed();
        g_hash_table_insert(state.loops, GSIZE_TO_POINTER(branch->branch_pc),
                            loop);
    }
    qemu_plugin_register_vcpu_tb_exec_inline_per_vcpu(
        tb, QEMU_PLUGIN_INLINE_ADD_U64, loop->iterations, 1);
    qemu_plugin_register_vcpu_tb_exec_cond_cb(
        tb, on_loop_iterations, QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_COND_GE,
        loop->iterations, state.hot_loop_iterations, loop);
}

