/*
 * The `rehost` TCG plugin: how far did the guest kernel get, where was it, and why did the run
 * end.
 *
 *   -plugin librehost.so,budget=N,hook=NAME@0xADDR,initcalls=0xADDR,panic=0xADDR,
 *           halt=NAME@0xADDR,user_below=0xADDR,callstack=on,coverage=on,hot_loops=N,
 *           nop=0xADDR:VALUE,nops_again=0xADDR,log=0xADDR,events_fd=FD,
 *           pause_at=N,state_out=PATH,state_in=PATH,thread_size=N,past_user=on
 *
 * budget:     end the run once N guest instructions have executed. Checked in blocks that end
 *             in a backward branch (every loop has one) and on interrupts and exceptions, so it
 *             may overshoot by the instructions of one loop iteration.
 *             Always (ARM): a spin nothing can end ends the run the same way, detail
 *             "spin: ..." (spin.c): a WFE with interrupts masked and the same registers
 *             SPIN_WAITS_MAX times in a row. So does an exception loop nothing can end,
 *             detail "exceptions: ..." (exceptions.c): EXCEPTION_LOOP_MAX exceptions and
 *             interrupts in a row with no instruction executed between them.
 * hook:       milestone NAME the first time ADDR executes (start_kernel ...).
 * initcalls:  the address of do_one_initcall: an initcall on every entry, its function being
 *             the first argument.
 * panic:      the address of panic(): the run ends, the detail being the format string read
 *             through the first argument.
 * halt:       the run ends (machine_power_off, machine_halt, ...), the detail being NAME.
 * user_below: the kernel's PAGE_OFFSET: the run ends at the first block below it that runs in
 *             user mode (ARM: CPSR mode USR; AArch64: EL0; MIPS: kuseg is user-only, so the address alone
 *             decides), once the kernel runs mapped.
 * past_user:  on: that first user block is a Milestone named user_space instead of the end of
 *             the run, which goes on until something else ends it (the marker initramfs's
 *             /init powers off once it has printed its line on the console).
 * callstack:  keep a shadow call stack per kernel thread (calls push, a block starting at a
 *             pushed return address pops to it) and send them when the run ends: the current
 *             thread's as CallStack, every tracked thread's as ThreadStack.
 * thread_size: the kernel's THREAD_SIZE (default 8192 for 32-bit ARM and MIPS with 4 KiB pages,
 *             16384 for AArch64), a
 *             power of two. Kernel stacks are THREAD_SIZE-aligned, so sp & ~(THREAD_SIZE - 1)
 *             names the thread running; the stack pointer is read where kernel code (at or
 *             above user_below) calls or is returned to after an instruction loaded it, so a
 *             context switch moves the shadow stack with it (follow_thread).
 *             No symbol of the scheduler is needed.
 * coverage:   count unique instructions (see proto/rehost.proto: not blocks, whose boundaries
 *             depend on host timing) and unique call targets entered; sent when
 *             the run ends.
 * hot_loops:  report a loop once its backward branch has run N times within N times
 *             LOOP_ITERATION_INSTRUCTIONS_MAX instructions (counted in windows of N iterations).
 * nop:        ADDR:VALUE, repeatable: the function at ADDR returns VALUE at once. Its first two
 *             or three instructions are overwritten when the first block at or above
 *             user_below runs (the kernel runs at its link address; needs user_below).
 *             A32 functions only on ARM. On AArch64 the patch (mov x0, #VALUE; ret) goes
 *             after the function's patchable entry (two NOPs ftrace rewrites), when it has one.
 * nops_again: the NOPs are written again the first time ADDR executes: the kernel patches its
 *             own code once (ftrace_init turns every mcount call into a NOP, including one
 *             the patch overwrote, when a function's call sits right after its first
 *             instruction), so the master names the function the kernel runs next.
 * log:        the address of printk_sprint: each record's text becomes a Log event (read at
 *             the return to its caller, the length being the return value), no console needed.
 * events_fd:  the pipe to write proto/rehost.proto Event frames to (varint length, then the
 *             Event, one write() per frame of at most FRAME_MAX bytes). Without it, no events.
 * pause_at:   snapshots (explorer/runner/snapshot.py): at the first block entered once N
 *             instructions have executed, send a Paused frame and ask the rehosting machine
 *             to stop the VM (rehosting_control.h), which it does at the end of that block,
 *             where the count is exact (whichever block it was: QEMU may have cut it short);
 *             the driver then saves the VM. Needs events_fd and the rehosting machine.
 * state_out:  at exit, write the plugin's state (below) to PATH instead of the final reports:
 *             the snapshotting run quits right after QEMU saved the VM, at the point.
 * state_in:   start from a state_out file, in a QEMU restoring the VM saved with it, so that
 *             every count, the shadow stack, coverage and loops continue as in one long run.
 *             The run's config may differ from the saving run's after the point: hooks are
 *             matched by address and kind; NOPs are written again at the first kernel block.
 *
 * Every report also goes to qemu_plugin_outs as a "rehost: ..." line for people (stderr, or -D
 * FILE with -d plugin); the run ends with exit status 0 after an "end" report.
 *
 * Instruction counts are QEMU's icount: the guest instructions executed since the machine
 * started, equal to MmioAccess.icount at every access, whatever QEMU's block boundaries (host
 * timing moves them: QEMU cuts a block short where an icount budget ends). A report at an
 * instruction counts that instruction too, as MmioAccess.icount counts its access: milestones,
 * initcalls, panic and halt at the hooked instruction, user_space at the user block's first
 * instruction. A report at a block's entry counts the whole block, i.e. it is the count where
 * that block ends: budget, hot loops, pause and the atexit line. How: an inline add counts a
 * block whole at its entry, and an inline store records which block runs (its interned
 * layout); what the block then did not run is taken back: the instructions after an access QEMU
 * replays alone (on_single_instruction_access), and after an exception raised inside it, the
 * instructions after the raising one and, when QEMU does not count it either, that one
 * (FaultTest). A hook subtracts the instructions after its own in the running block.
 * Known differences from QEMU, both deterministic: an ARM undefined-instruction exception
 * raised at run time by a coprocessor access check counts the instruction (QEMU does not); a
 * store into the code of its own block, which QEMU replays alone in an ordinary block, counts
 * the rest of that block twice.
 *
 * Decisions are made at translation time: a block gets a callback only when it holds a hooked
 * address or a call, starts at a return address or below user_below, or ends in a backward
 * branch, a WFE a callback, and a one-instruction block a memory callback (where replayed accesses run);
 * otherwise at most inline operations (the instruction count, the running block, and with
 * callstack=on a compare with the innermost return address, only in blocks right after a
 * call, and a store marking the stack pointer moved at instructions that load it). Execution-
 * time callbacks stay small: pushes and pops write the innermost return address straight into
 * its scoreboard slot, read the stack pointer only when it was marked moved, and an indirect
 * call touches coverage's hash table only when its target changes.
 * Single vCPU: the machine has one. It must never change guest state beyond what nop= asks for.
 * Nothing it reports may depend on when blocks were translated (a restored VM starts with an
 * empty translation cache) or where QEMU ended them: translation-time facts only decide where
 * callbacks go.
 *
 * The plugin is split by concept (rehost.h lists the units). This unit holds what QEMU calls:
 * install, vCPU init, translation (each concept says where its callbacks go; this decides in
 * which blocks) and exit, with the plugin's one static state. It never decodes an
 * instruction, nor formats an event: targets.c and events.c do.
 */

#include "rehost.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;


RehostState state = { .events_fd = -1 };

/* A register of the current vCPU as an integer; only from callbacks with R_REGS. */
uint64_t read_register(struct qemu_plugin_register *handle)
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

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    uint64_t vaddr = qemu_plugin_tb_vaddr(tb);
    size_t count = qemu_plugin_tb_n_insns(tb);
    /* Code below user_below once the kernel runs mapped: user code (past_user=on), whose
     * calls are no kernel thread's frames (on ARM also the kernel's identity-mapped code,
     * which a boot runs only before, in head.S, and at a restart). */
    bool user_code = state.kernel_mapped && vaddr < state.user_below;
    bool watch_calls = !user_code &&
                       (state.callstack || state.coverage || state.log_function);
    bool thumb = watch_calls && block_is_thumb(tb);
    const BlockLayout *layout = block_layout(tb, count);
    LoopBranch branch;
    size_t i;

    qemu_plugin_register_vcpu_tb_exec_inline_per_vcpu(
        tb, QEMU_PLUGIN_INLINE_ADD_U64, state.executed, count);
    qemu_plugin_register_vcpu_tb_exec_inline_per_vcpu(
        tb, QEMU_PLUGIN_INLINE_STORE_U64, state.running_block, (uintptr_t)layout);
    if (count == 1) {
        /* A replayed access runs in such a block (MIPS replays a delay slot with its branch:
         * nothing follows a delay slot, nothing to take back). */
        qemu_plugin_register_vcpu_mem_cb(qemu_plugin_tb_get_insn(tb, 0),
                                         on_single_instruction_access,
                                         QEMU_PLUGIN_CB_NO_REGS,
                                         QEMU_PLUGIN_MEM_RW, (void *)layout);
    }
    if (state.pause_at && !state.paused) {
        qemu_plugin_register_vcpu_tb_exec_cond_cb(
            tb, on_pause, QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_COND_GE,
            state.executed, state.pause_at, NULL);
    }
    if ((state.budget || state.hot_loop_iterations) &&
        state.traits->ends_in_backward_branch(tb, &branch)) {
        if (state.budget) {
            qemu_plugin_register_vcpu_tb_exec_cond_cb(
                tb, on_budget_check, QEMU_PLUGIN_CB_NO_REGS,
                QEMU_PLUGIN_COND_GE, state.executed, state.budget, NULL);
        }
        if (state.hot_loop_iterations) {
            instrument_loop(tb, &branch);
        }
    }
    /*
     * Until the kernel runs at its link address, code below user_below is
     * the boot loader, the decompressor and the kernel's MMU-off start:
     * billions of instructions that need no register read. Their blocks
     * never serve user mode (the mode is part of a block's key).
     */
    if (vaddr >= state.user_below) {
        if (!state.kernel_mapped && state.nops->len) {
            qemu_plugin_register_vcpu_tb_exec_cb(tb, on_kernel_mapped,
                                                 QEMU_PLUGIN_CB_NO_REGS, NULL);
        }
        state.kernel_mapped = true;
    } else if (state.kernel_mapped && !state.user_reached) {
        qemu_plugin_register_vcpu_tb_exec_cb(tb, on_block_below_user_limit,
                                             state.mode_register ?
                                             QEMU_PLUGIN_CB_R_REGS :
                                             QEMU_PLUGIN_CB_NO_REGS,
                                             GSIZE_TO_POINTER(vaddr));
    }
    if (state.coverage) {
        cover_instructions(tb, count);
    }
    if (state.callstack && !user_code) {
        if (g_hash_table_contains(state.return_targets,
                                  GSIZE_TO_POINTER(vaddr))) {
            qemu_plugin_register_vcpu_tb_exec_cb(tb, on_return_target,
                                                 call_stack_flags(vaddr),
                                                 GSIZE_TO_POINTER(vaddr));
        } else if (may_follow_call(tb)) {
            qemu_plugin_register_vcpu_tb_exec_cond_cb(
                tb, on_return_to_innermost, call_stack_flags(vaddr),
                QEMU_PLUGIN_COND_EQ, state.innermost_return, vaddr,
                GSIZE_TO_POINTER(vaddr));
        }
    }
    if (g_hash_table_contains(state.log_returns, GSIZE_TO_POINTER(vaddr))) {
        qemu_plugin_register_vcpu_tb_exec_cb(tb, on_log_return,
                                             QEMU_PLUGIN_CB_R_REGS, NULL);
    }
    for (i = 0; i < count; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);

        instrument_hooks(insn, qemu_plugin_insn_vaddr(insn));
        if (state.log_function &&
            qemu_plugin_insn_vaddr(insn) == state.log_function) {
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_log_entry,
                                                   QEMU_PLUGIN_CB_R_REGS, NULL);
        }
        if (watch_calls) {
            instrument_call(insn, thumb);
        }
        if (state.callstack && !user_code) {
            instrument_stack_load(insn);
        }
        instrument_wait_for_event(insn);
    }
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
    int i;

    /* QEMU allocates scoreboards for 16 vCPUs and moves them only beyond that: one vCPU here. */
    state.innermost_return_slot =
        qemu_plugin_scoreboard_find(state.innermost_return_board, vcpu_index);
    *state.innermost_return_slot = NO_RETURN_ADDRESS;
    state.stack_moved_slot = qemu_plugin_scoreboard_find(state.stack_moved_board, vcpu_index);
    *state.stack_moved_slot = 1;
    state.argument_register =
        find_register(registers, state.traits->argument_register);
    state.return_register =
        find_register(registers, state.traits->return_register);
    state.mode_register = find_register(registers, state.traits->mode_register);
    state.stack_register = find_register(registers, state.traits->stack_register);
    state.exception_register =
        find_register(registers, state.traits->exception_register);
    for (i = 0; i < GENERAL_REGISTERS; i++) {
        g_autofree char *name =
            g_strdup_printf(state.traits->general_register_format, i);

        state.general_registers[i] = find_register(registers, name);
    }
    if (state.restored) {
        restore_state(vcpu_index);
    }
    /* gdb names ARM's r13-r15 sp, lr and pc; a BLX through lr is legal. */
    state.general_registers[14] = state.general_registers[14] ?:
                                  find_register(registers, "lr");
    if ((!state.argument_register || !state.return_register) &&
        state.log_function) {
        fprintf(stderr, "rehost: this %s CPU exposes no registers %s and %s "
                "to plugins; log= needs them\n", state.traits->target,
                state.traits->argument_register, state.traits->return_register);
        exit(1);
    }
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

/* QEMU exits without us (the guest powered off, a signal): what is known still goes out. */
static void on_plugin_exit(qemu_plugin_id_t id, void *userdata)
{
    g_autofree char *line = g_strdup_printf("exit after %" PRIu64 " insns",
                                            instructions_executed());
    guint h;

    if (state.paused && state.state_out) {
        /* QEMU saved the VM at the point and quit: the state goes on in another run. */
        save_state(state.state_out);
    } else {
        send_final_reports();
    }
    report(line);
    for (h = 0; h < state.hooks->len; h++) {
        g_free(g_array_index(state.hooks, Hook, h).name);
    }
    g_array_free(state.hooks, true);
    g_array_free(state.nops, true);
    g_hash_table_destroy(state.log_returns);
    g_byte_array_free(state.register_buffer, true);
    g_hash_table_destroy(state.call_sites);
    g_hash_table_destroy(state.return_targets);
    g_hash_table_destroy(state.call_targets);
    g_hash_table_destroy(state.instructions);
    g_free(state.call_site_filter);
    g_hash_table_destroy(state.functions);
    g_hash_table_destroy(state.loops);
    g_free(state.threads[0].frames);
    g_free(state.state_out);
    qemu_plugin_scoreboard_free(state.executed_board);
    qemu_plugin_scoreboard_free(state.innermost_return_board);
    qemu_plugin_scoreboard_free(state.stack_moved_board);
    qemu_plugin_scoreboard_free(state.running_block_board);
    g_hash_table_destroy(state.block_layouts);
    g_byte_array_free(state.layout_buffer, true);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id,
                                           const qemu_info_t *info,
                                           int argc, char **argv)
{
    unsigned t;

    state.traits = traits_of(info->target_name);
    state.thread_size = state.traits->thread_size;
    state.hooks = g_array_new(false, true, sizeof(Hook));
    state.nops = g_array_new(false, true, sizeof(Nop));
    if (!parse_arguments(argc, argv)) {
        return -1;
    }
    if (state.nops->len && (!state.user_below || !state.traits->return_patch)) {
        fprintf(stderr, "rehost: nop= needs user_below= (the kernel's "
                "PAGE_OFFSET: NOPs are written once the kernel runs there) and "
                "an ARM, AArch64 or MIPS guest\n");
        return -1;
    }
    if (state.pause_at && state.events_fd < 0) {
        fprintf(stderr, "rehost: pause_at= needs events_fd= (to say it paused)\n");
        return -1;
    }
    state.register_buffer = g_byte_array_new();
    state.call_sites = g_hash_table_new_full(NULL, NULL, NULL, g_free);
    state.log_returns = g_hash_table_new(NULL, NULL);
    state.return_targets = g_hash_table_new(NULL, NULL);
    state.call_targets = g_hash_table_new(NULL, NULL);
    state.instructions = g_hash_table_new_full(NULL, NULL, NULL, g_free);
    state.call_site_filter = g_malloc0(CALL_SITE_FILTER_BITS / 8);
    state.functions = g_hash_table_new(NULL, NULL);
    state.loops = g_hash_table_new_full(NULL, NULL, NULL, free_loop);
    /* One allocation for every thread's frames: untouched pages cost nothing. */
    state.threads[0].frames = g_new(Frame, (size_t)THREADS_MAX * CALL_STACK_DEPTH_MAX);
    for (t = 1; t < THREADS_MAX; t++) {
        state.threads[t].frames = state.threads[0].frames + (size_t)t * CALL_STACK_DEPTH_MAX;
    }
    state.threads[0].stack = UNNAMED_STACK;
    state.thread_count = 1;
    state.thread = &state.threads[0];
    state.executed_board = qemu_plugin_scoreboard_new(sizeof(uint64_t));
    state.executed = qemu_plugin_scoreboard_u64(state.executed_board);
    state.innermost_return_board = qemu_plugin_scoreboard_new(sizeof(uint64_t));
    state.innermost_return =
        qemu_plugin_scoreboard_u64(state.innermost_return_board);
    state.stack_moved_board = qemu_plugin_scoreboard_new(sizeof(uint64_t));
    state.stack_moved = qemu_plugin_scoreboard_u64(state.stack_moved_board);
    state.running_block_board = qemu_plugin_scoreboard_new(sizeof(uint64_t));
    state.running_block = qemu_plugin_scoreboard_u64(state.running_block_board);
    state.block_layouts = g_hash_table_new_full(g_bytes_hash, g_bytes_equal,
                                                (GDestroyNotify)g_bytes_unref,
                                                NULL);
    state.layout_buffer = g_byte_array_new();
    qemu_plugin_register_vcpu_init_cb(id, on_vcpu_init);
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_vcpu_discon_cb(id, QEMU_PLUGIN_DISCON_ALL,
                                        on_discontinuity);
    qemu_plugin_register_atexit_cb(id, on_plugin_exit, NULL);
    return 0;
}
