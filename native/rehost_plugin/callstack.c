/*
 * The shadow call stacks, one per kernel thread (see callstack= and thread_size= in rehost.c's
 * head comment): call sites decoded once at translation, pushes at calls, pops at returns,
 * context switches followed by the stack pointer. Callbacks here run at every call and return:
 * they stay small, and read the stack pointer only when an instruction marked it moved.
 */

#include "rehost.h"

/* A return searches this many frames down the shadow stack for its caller (longjmp, a missed
 * return), so a block that merely looks like a return target costs a bounded scan. */
#define RETURN_SEARCH_MAX 64
/* The bytes before a block that may hold a call returning to it, and the smallest target page
 * (ARMv5's 1 KiB): the look-behind stays inside the block's own page. */
#define RETURN_LOOKBEHIND 8
#define RETURN_LOOKBEHIND_PAGE 1024

static void push_frame(uint64_t function, uint64_t return_address)
{
    Thread *thread = state.thread;

    if (thread->depth == CALL_STACK_DEPTH_MAX) {
        /* Runaway (a missed return pattern): keep the innermost half. */
        memmove(thread->frames, thread->frames + CALL_STACK_DEPTH_MAX / 2,
                sizeof(Frame) * (CALL_STACK_DEPTH_MAX / 2));
        thread->depth = CALL_STACK_DEPTH_MAX / 2;
    }
    thread->frames[thread->depth].function = function;
    thread->frames[thread->depth].return_address = return_address;
    thread->depth++;
    *state.innermost_return_slot = return_address;
}

static void pop_frames(unsigned depth)
{
    Thread *thread = state.thread;

    thread->depth = depth;
    *state.innermost_return_slot =
        depth ? thread->frames[depth - 1].return_address : NO_RETURN_ADDRESS;
}

/*
 * The thread whose kernel stack is `stack` becomes the current one, taking a slot if new.
 * `entered`: it was switched to where it calls rather than returns, i.e. it starts afresh
 * (ret_from_fork, or an interrupt on an interrupt stack): its kernel stack may be an exited
 * thread's, whose frames go.
 */
static void switch_thread(uint64_t stack, bool entered)
{
    Thread *thread = NULL;
    unsigned t;

    if (state.thread->stack == UNNAMED_STACK) {
        /* The first read names the thread that ran until now. */
        state.thread->stack = stack;
        return;
    }
    for (t = 0; t < state.thread_count && !thread; t++) {
        if (state.threads[t].stack == stack) {
            thread = &state.threads[t];
        }
    }
    if (!thread && state.thread_count < THREADS_MAX) {
        thread = &state.threads[state.thread_count++];
    } else if (!thread) {
        thread = &state.threads[0];
        for (t = 1; t < THREADS_MAX; t++) {
            if (state.threads[t].last_run < thread->last_run) {
                thread = &state.threads[t];
            }
        }
    }
    if (thread->stack != stack || entered) {
        thread->stack = stack;
        thread->depth = 0;
    }
    thread->last_run = ++state.thread_switches;
    state.thread = thread;
    pop_frames(thread->depth);
}

/*
 * Kernel threads are followed where kernel code calls and returns, at or above user_below:
 * below it run the boot loader and the decompressor (one stack, MMU off: more than half of a
 * boot's blocks) and user space, whose stack pointer names no kernel thread.
 */
static bool follows_threads(uint64_t vaddr)
{
    return state.stack_register && vaddr >= state.user_below;
}

/* The registers the call stack's callbacks at `vaddr` read: the stack pointer, or none. */
enum qemu_plugin_cb_flags call_stack_flags(uint64_t vaddr)
{
    return follows_threads(vaddr) ? QEMU_PLUGIN_CB_R_REGS : QEMU_PLUGIN_CB_NO_REGS;
}

/*
 * The thread running is the one whose kernel stack holds the stack pointer: follow a context
 * switch where a call at `vaddr` pushes (`calling`) or a return to it pops. The stack pointer
 * is read only when it may have moved to another stack since the last read: an instruction
 * loaded it (not sp-relative arithmetic: a switch loads the next thread's, an interrupt entry
 * its interrupt stack's); most calls and returns cost a test of that flag. Exceptions do not
 * count: a kernel's handler runs on the stack it interrupted (ARM's banked IRQ/abort-mode sp
 * serves only the vector stub, which calls nothing), and one from user space enters the task
 * that returned to it (MIPS loads kernelsp by an instruction); so a fault inside an interrupt
 * handler stacks its frames on the handler's. Only from callbacks with call_stack_flags(vaddr). A thread's first call or return after a switch
 * names it; Linux switches with interrupts masked, so a resumed thread's first is the return
 * from the switch and a call means a new thread (ret_from_fork).
 */
static void follow_thread(uint64_t vaddr, bool calling)
{
    uint64_t stack;

    if (!follows_threads(vaddr) || !*state.stack_moved_slot) {
        return;
    }
    *state.stack_moved_slot = 0;
    stack = read_register(state.stack_register) & ~(state.thread_size - 1);
    if (stack != state.thread->stack) {
        switch_thread(stack, calling);
    }
}

static void on_direct_call(unsigned int vcpu_index, void *userdata)
{
    const CallSite *call = userdata;

    follow_thread(call->return_address, true);
    push_frame(call->target, call->return_address);
}

static void on_indirect_call(unsigned int vcpu_index, void *userdata)
{
    CallSite *call = userdata;
    struct qemu_plugin_register *handle =
        state.general_registers[call->target_register];
    uint64_t target = handle ? state.traits->call_target(read_register(handle)) : 0;

    /* Most indirect call sites call one target again and again: a hash insert only on change. */
    if (state.coverage && target && target != call->last_target) {
        g_hash_table_add(state.functions, GSIZE_TO_POINTER(target));
        call->last_target = target;
    }
    if (state.callstack) {
        follow_thread(call->return_address, true);
        push_frame(target, call->return_address);
    }
}

/* Pops the top frame when it returns to `vaddr`. */
static void pop_innermost_returning_to(uint64_t vaddr)
{
    Thread *thread = state.thread;

    if (thread->depth && thread->frames[thread->depth - 1].return_address == vaddr) {
        pop_frames(thread->depth - 1);
    }
}

/*
 * A block at the top frame's return address (an inline compare decided): the common return.
 * The top frame is the current thread's; a context switch since is followed first, and then
 * the new thread's top frame must return here too.
 */
void on_return_to_innermost(unsigned int vcpu_index, void *userdata)
{
    uint64_t vaddr = GPOINTER_TO_SIZE(userdata);

    follow_thread(vaddr, false);
    pop_innermost_returning_to(vaddr);
}

/*
 * A block at the return address of a call translated before it: pop to the innermost frame
 * returning here, if any, then do what the inline compare does elsewhere (the new top may
 * return here too: recursion through one call site). Blocks translated before their call site
 * (the condition block of a rotated loop, entered by a jump, then returned to) only get the
 * inline compare.
 */
void on_return_target(unsigned int vcpu_index, void *userdata)
{
    uint64_t vaddr = GPOINTER_TO_SIZE(userdata);
    const Thread *thread;
    unsigned lowest;
    unsigned i;

    follow_thread(vaddr, false);
    thread = state.thread;
    lowest = thread->depth > RETURN_SEARCH_MAX ? thread->depth - RETURN_SEARCH_MAX : 0;
    for (i = thread->depth; i > lowest; i--) {
        if (thread->frames[i - 1].return_address == vaddr) {
            pop_frames(i - 1);
            break;
        }
    }
    pop_innermost_returning_to(vaddr);
}

/* The call site of this address, decoded once and kept: callbacks point into it. */
static CallSite *call_site(struct qemu_plugin_insn *insn, bool thumb)
{
    uint64_t vaddr = qemu_plugin_insn_vaddr(insn);
    size_t filter_bit = (vaddr >> 1) % CALL_SITE_FILTER_BITS;
    uint8_t filter_mask = 1 << (filter_bit % 8);
    CallSite *call = NULL;
    CallSite decoded = { 0 };
    uint8_t bytes[4] = { 0 };
    size_t size;

    if (state.call_site_filter[filter_bit / 8] & filter_mask) {
        call = g_hash_table_lookup(state.call_sites, GSIZE_TO_POINTER(vaddr));
    }
    if (call) {
        return call;
    }
    size = qemu_plugin_insn_data(insn, bytes, sizeof(bytes));
    if (!state.traits->is_call(bytes, size, vaddr, thumb, &decoded)) {
        return NULL;
    }
    call = g_memdup2(&decoded, sizeof(decoded));
    g_hash_table_insert(state.call_sites, GSIZE_TO_POINTER(vaddr), call);
    state.call_site_filter[filter_bit / 8] |= filter_mask;
    return call;
}

void instrument_call(struct qemu_plugin_insn *insn, bool thumb)
{
    CallSite *call = call_site(insn, thumb);

    if (!call) {
        return;
    }
    if (state.log_function && call->target == state.log_function &&
        call->target_register < 0) {
        g_hash_table_add(state.log_returns,
                         GSIZE_TO_POINTER(call->return_address));
    }
    if (!state.callstack && !state.coverage) {
        return;
    }
    if (call->target_register >= 0) {
        qemu_plugin_register_vcpu_insn_exec_cb(insn, on_indirect_call,
                                               QEMU_PLUGIN_CB_R_REGS, call);
    } else {
        g_hash_table_add(state.call_targets, GSIZE_TO_POINTER(call->target));
        if (state.callstack) {
            qemu_plugin_register_vcpu_insn_exec_cb(
                insn, on_direct_call, call_stack_flags(call->return_address), call);
        }
    }
    if (state.callstack) {
        g_hash_table_add(state.return_targets,
                         GSIZE_TO_POINTER(call->return_address));
    }
}

/* An instruction that may load the stack pointer marks it moved (an inline store): the next
 * call or return reads it. Only where threads are followed. */
void instrument_stack_load(struct qemu_plugin_insn *insn)
{
    uint8_t bytes[4] = { 0 };
    size_t size;

    if (!follows_threads(qemu_plugin_insn_vaddr(insn))) {
        return;
    }
    size = qemu_plugin_insn_data(insn, bytes, sizeof(bytes));
    if (state.traits->loads_stack_pointer(bytes, size)) {
        qemu_plugin_register_vcpu_insn_exec_inline_per_vcpu(
            insn, QEMU_PLUGIN_INLINE_STORE_U64, state.stack_moved, 1);
    }
}

/*
 * Can a return land at the start of this block: does a call end right before it (the test
 * reads both A32 and Thumb)? Only such blocks need the return compare. The bytes are read from
 * the host RAM the block was translated from, never through the MMU (a neighbouring page may
 * be MMIO: the catch-all device would record the read). Too close to a possible page start
 * (RETURN_LOOKBEHIND_PAGE), or not translated from RAM: assume it can. A block stays valid as
 * long as its own page is unwritten: only a rewrite of the page before, making a call out of
 * its last bytes, would go unseen.
 */
bool may_follow_call(struct qemu_plugin_tb *tb)
{
    /* A 2-byte Thumb BLX, a 4-byte call, a MIPS call and its delay slot. */
    static const size_t call_lengths[] = { 2, 4, 8 };
    struct qemu_plugin_insn *first = qemu_plugin_tb_get_insn(tb, 0);
    uint64_t vaddr = qemu_plugin_insn_vaddr(first);
    const uint8_t *host = qemu_plugin_insn_haddr(first);
    size_t i;
    int thumb;

    if (!host || vaddr % RETURN_LOOKBEHIND_PAGE < RETURN_LOOKBEHIND) {
        return true;
    }
    for (i = 0; i < G_N_ELEMENTS(call_lengths); i++) {
        size_t back = call_lengths[i];

        for (thumb = 0; thumb <= 1; thumb++) {
            CallSite call;

            if (state.traits->is_call(host - back, MIN(back, 4), vaddr - back,
                                      thumb, &call) &&
                call.return_address == vaddr) {
                return true;
            }
        }
    }
    return false;
}

