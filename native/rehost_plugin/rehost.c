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
 *             "spin: ..." (on_wait_for_event): a WFE with interrupts masked and the same
 *             registers SPIN_WAITS_MAX times in a row.
 * hook:       milestone NAME the first time ADDR executes (start_kernel ...).
 * initcalls:  the address of do_one_initcall: an initcall on every entry, its function being
 *             the first argument.
 * panic:      the address of panic(): the run ends, the detail being the format string read
 *             through the first argument.
 * halt:       the run ends (machine_power_off, machine_halt, ...), the detail being NAME.
 * user_below: the kernel's PAGE_OFFSET: the run ends at the first block below it that runs in
 *             user mode (ARM: CPSR mode USR; MIPS: kuseg is user-only, so the address alone
 *             decides), once the kernel runs mapped.
 * past_user:  on: that first user block is a Milestone named user_space instead of the end of
 *             the run, which goes on until something else ends it (the marker initramfs's
 *             /init powers off once it has printed its line on the console).
 * callstack:  keep a shadow call stack per kernel thread (calls push, a block starting at a
 *             pushed return address pops to it) and send them when the run ends: the current
 *             thread's as CallStack, every tracked thread's as ThreadStack.
 * thread_size: the kernel's THREAD_SIZE (default 8192: 32-bit ARM and MIPS with 4 KiB pages), a
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
 *             A32 functions only on ARM.
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
 */

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <glib.h>
#include <qemu-plugin.h>

#include "rehost.pb-c.h"
#include "rehosting_control.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

/* Longest panic format we quote; the kernel's are one line. */
#define PANIC_MESSAGE_MAX 160
#define ARM_CPSR_MODE_MASK 0x1f
#define ARM_CPSR_MODE_USER 0x10
#define ARM_CPSR_IRQ_MASKED 0x80
/*
 * A wait for an event that nothing can end (see on_wait_for_event): the run ends once the same
 * WFE has run this many times in a row with interrupts masked and the same registers. Each
 * WFE returns to QEMU's main loop (a yield), a few microseconds: a spinlock deadlock ran about
 * 300,000 instructions a second instead of 100 million, and took minutes to its budget.
 */
#define SPIN_WAITS_MAX 65536
/* What a spin compares between two of its waits: r0-r12, sp, lr, cpsr (the pc is the WFE's). */
#define SPIN_REGISTERS 16
/* PIPE_BUF: a frame this small is written atomically, whoever else writes to the pipe. */
#define FRAME_MAX 4096
#define VARINT_MAX 10
/* Innermost frames sent at the end: 128 frames of at most 24 bytes fit in one frame. */
#define CALL_STACK_SENT_MAX 128
#define CALL_STACK_DEPTH_MAX 1024
/*
 * Kernel threads followed, each with its own shadow stack. A thread is its kernel stack; when a
 * new one appears with the table full, the thread that became current least recently is
 * dropped with its frames (a boot to user space has a few dozen kernel threads). Threads are
 * kept and sent in table order: the order they were first seen, a dropped one's slot reused.
 */
#define THREADS_MAX 128
/* THREAD_SIZE_ORDER 1 with 4 KiB pages (arch/arm and arch/mips thread_info.h). */
#define THREAD_SIZE_DEFAULT 8192
/* The first thread's stack until the stack pointer is first read, and for ever when the CPU
 * exposes no stack pointer to plugins (then one shadow stack serves every thread). */
#define UNNAMED_STACK UINT64_MAX
/* A return searches this many frames down the shadow stack for its caller (longjmp, a missed
 * return), so a block that merely looks like a return target costs a bounded scan. */
#define RETURN_SEARCH_MAX 64
/* The bytes before a block that may hold a call returning to it, and the smallest target page
 * (ARMv5's 1 KiB): the look-behind stays inside the block's own page. */
#define RETURN_LOOKBEHIND 8
#define RETURN_LOOKBEHIND_PAGE 1024
/* A loop is hot when N iterations took at most N times this many instructions (of anything,
 * inner loops and calls included): more, and the run made progress elsewhere meanwhile. */
#define LOOP_ITERATION_INSTRUCTIONS_MAX 1000
#define HOT_LOOPS_REPORTED_MAX 64
/* A printk record's text is at most 1024 bytes (PRINTKRB_RECORD_MAX); with the newline it fits. */
#define LOG_TEXT_MAX 2048
/* Coverage keeps one bit per byte address in bitmaps of this many addresses. */
#define COVERAGE_REGION_BITS 12
#define COVERAGE_REGION_SIZE (1u << COVERAGE_REGION_BITS)
/* Most translated instructions are no call: a bitmap answers "never a call site" without a
 * hash lookup (a set bit may be another address's: then the hash table decides). */
#define CALL_SITE_FILTER_BITS (1u << 20)

typedef Explorer__Rehost__Event Event;
typedef Explorer__Rehost__ExitReason ExitReason;

typedef enum {
    HOOK_MILESTONE,
    HOOK_INITCALL,
    HOOK_PANIC,
    HOOK_HALT,
    HOOK_NOPS_AGAIN,
} HookKind;

typedef struct {
    char *name;
    uint64_t vaddr;
    HookKind kind;
    bool reached;
} Hook;

/* A call instruction as decoded at translation time. */
typedef struct {
    uint64_t return_address;
    uint64_t target;     /* direct calls */
    int target_register; /* indirect calls: the register holding the target; -1 when direct */
    uint64_t last_target; /* indirect calls: the latest target, already counted by coverage */
} CallSite;

/* A block ending in a backward branch. */
typedef struct {
    uint64_t start_pc;  /* the branch target */
    uint64_t branch_pc; /* the branch */
} LoopBranch;

typedef struct {
    LoopBranch branch;
    struct qemu_plugin_scoreboard *board;
    qemu_plugin_u64 iterations; /* since window_start; an inline add per iteration */
    uint64_t window_start;      /* instruction count */
    bool reported;
} Loop;

typedef struct {
    uint64_t function;
    uint64_t return_address;
} Frame;

/* A kernel thread's shadow call stack. */
typedef struct {
    uint64_t stack;    /* sp & ~(thread_size - 1) */
    uint64_t last_run; /* thread_switches when it last became current: the drop order */
    unsigned depth;
    Frame *frames;     /* outermost first; CALL_STACK_DEPTH_MAX of them */
} Thread;

/* A function made to return a value at once, and the instructions that do it. */
typedef struct {
    uint64_t vaddr;
    uint32_t value;
} Nop;

#define NOP_WORDS_MAX 3

typedef bool (*BackwardBranchTest)(struct qemu_plugin_tb *tb, LoopBranch *loop);
/* Decodes the instruction of `size` bytes at `vaddr`; `bytes` holds at least 4. */
typedef bool (*CallTest)(const uint8_t *bytes, size_t size, uint64_t vaddr,
                         bool thumb, CallSite *call);
typedef size_t (*ReturnPatch)(uint32_t value, uint32_t words[NOP_WORDS_MAX]);
/* Does the instruction load the stack pointer with a value not derived from it (a context
 * switch's load of the next thread's)? `bytes` holds at least 4. */
typedef bool (*StackLoadTest)(const uint8_t *bytes, size_t size);
/* Is this instruction a wait for an event (ARM WFE)? */
typedef bool (*WaitForEventTest)(const uint8_t *bytes, size_t size);
/*
 * Did the exception entered at `to_pc` (`cause`: the exception register's value, 0 without
 * one) leave the instruction that raised it unexecuted in QEMU's icount? QEMU winds a block
 * back to a faulting memory access (cpu_restore_state: the access does not count), while an
 * exception the translator planted (undefined instruction, svc, break) ends its block and
 * counts.
 */
typedef bool (*FaultTest)(uint64_t to_pc, uint64_t cause);

/* What differs between guest architectures, chosen once from the target name. */
typedef struct {
    const char *target;
    const char *argument_register; /* a call's first argument (gdb's name) */
    const char *return_register;   /* a function's return value */
    const char *mode_register;     /* NULL: the address alone tells user mode */
    const char *stack_register;    /* names the running kernel thread */
    bool big_endian;
    BackwardBranchTest ends_in_backward_branch;
    CallTest is_call;
    ReturnPatch return_patch; /* NULL: NOPs unsupported */
    const char *exception_register; /* NULL: the vector alone tells the exception */
    FaultTest leaves_fault_unexecuted;
    StackLoadTest loads_stack_pointer;
    WaitForEventTest waits_for_event;
} TargetTraits;

/*
 * The instruction addresses of a translated block, in order. Interned: one copy per distinct
 * layout, kept for the whole run, because generated code holds its address (QEMU may free and
 * retranslate the block at any time, and says nothing).
 */
typedef struct {
    uint64_t count;
    uint64_t vaddrs[];
} BlockLayout;

#define GENERAL_REGISTERS 32

typedef struct {
    const TargetTraits *traits;
    int events_fd; /* -1: no events */
    uint64_t budget;
    uint64_t user_below; /* 0: not watched */
    bool past_user;      /* user space is a milestone, not the end (past_user=on) */
    bool user_reached;   /* that milestone was sent */
    bool kernel_mapped;  /* code at or above user_below has been translated */
    bool callstack;
    bool coverage;
    bool final_reports_sent;
    uint64_t hot_loop_iterations; /* 0: not watched */
    unsigned hot_loops_reported;
    GArray *hooks; /* of Hook */
    GArray *nops;  /* of Nop */
    bool nops_applied;
    uint64_t log_function; /* printk_sprint; 0: no guest log */
    uint64_t log_text;     /* its text buffer, from the latest entry */
    GHashTable *log_returns; /* set of printk_sprint's return addresses */
    struct qemu_plugin_scoreboard *executed_board;
    qemu_plugin_u64 executed; /* see "Instruction counts" in the head comment */
    /* The layout of the block entered last (an inline store at every entry); NULL once an
     * exception or a replayed access has taken its unexecuted instructions back. */
    struct qemu_plugin_scoreboard *running_block_board;
    qemu_plugin_u64 running_block;
    GHashTable *block_layouts;   /* interned layouts: GBytes of a BlockLayout, a set */
    GByteArray *layout_buffer;   /* the layout being translated, before interning */
    struct qemu_plugin_register *exception_register;
    struct qemu_plugin_scoreboard *innermost_return_board;
    qemu_plugin_u64 innermost_return; /* the top frame's return address, for inline compares */
    uint64_t *innermost_return_slot;  /* vCPU 0's entry of it: pushes and pops write here */
    /* Non-zero when the stack pointer may have moved to another stack since it was last read
     * (an inline store at instructions that load it): see follow_thread. */
    struct qemu_plugin_scoreboard *stack_moved_board;
    qemu_plugin_u64 stack_moved;
    uint64_t *stack_moved_slot;
    struct qemu_plugin_register *argument_register;
    struct qemu_plugin_register *return_register;
    struct qemu_plugin_register *mode_register;
    struct qemu_plugin_register *stack_register; /* NULL: one stack for every thread */
    struct qemu_plugin_register *general_registers[GENERAL_REGISTERS];
    GByteArray *register_buffer;
    /* The latest wait for an event with interrupts masked: where, the registers, how many
     * such waits in a row had both the same (0: none). */
    uint64_t spin_pc;
    uint64_t spin_registers[SPIN_REGISTERS];
    uint64_t spin_waits;
    GHashTable *call_sites;      /* call instruction address -> CallSite */
    GHashTable *return_targets;  /* set of return addresses of translated calls */
    GHashTable *call_targets;    /* set of direct call targets translated so far */
    GHashTable *instructions;    /* translated instruction addresses: region -> bitmap */
    uint64_t instructions_covered; /* bits set in them */
    uint8_t *call_site_filter;   /* bit (address / 2) mod CALL_SITE_FILTER_BITS: in call_sites */
    GHashTable *functions;       /* set of call targets entered */
    GHashTable *loops;           /* branch address -> Loop */
    Thread threads[THREADS_MAX]; /* the shadow call stacks, in table order */
    unsigned thread_count;       /* slots in use */
    Thread *thread;              /* the current one: calls push and returns pop here */
    uint64_t thread_size;
    uint64_t thread_switches;    /* how many times another thread became current */
    /* Snapshots: QEMU migrates no plugin, so the plugin's state goes through a file. */
    uint64_t pause_at;           /* 0: never pause */
    bool paused;
    char *state_out;             /* NULL: send the final reports at exit instead */
    GByteArray *restored;        /* state_in's words, applied at vCPU init */
} RehostState;

static RehostState state = { .events_fd = -1 };

static uint64_t instructions_executed(void)
{
    return qemu_plugin_u64_sum(state.executed);
}

static const BlockLayout *running_block(unsigned int vcpu_index)
{
    return (const BlockLayout *)(uintptr_t)qemu_plugin_u64_get(state.running_block,
                                                               vcpu_index);
}

static void set_running_block(unsigned int vcpu_index, const BlockLayout *layout)
{
    qemu_plugin_u64_set(state.running_block, vcpu_index, (uintptr_t)layout);
}

/* How many instructions follow `vaddr` in `layout`; false when `vaddr` is not in it. */
static bool instructions_after(const BlockLayout *layout, uint64_t vaddr,
                               uint64_t *after)
{
    uint64_t i;

    for (i = 0; layout && i < layout->count; i++) {
        if (layout->vaddrs[i] == vaddr) {
            *after = layout->count - 1 - i;
            return true;
        }
    }
    return false;
}

/* The count at the instruction at `vaddr` of the running block: the instructions before it and
 * itself (its block's entry added them all). */
static uint64_t instructions_at(unsigned int vcpu_index, uint64_t vaddr)
{
    uint64_t after = 0;

    instructions_after(running_block(vcpu_index), vaddr, &after);
    return instructions_executed() - after;
}

/* The entry counted `instructions` that did not run (yet): they will be counted when they do. */
static void take_back(unsigned int vcpu_index, uint64_t instructions)
{
    qemu_plugin_u64_set(state.executed, vcpu_index,
                        qemu_plugin_u64_get(state.executed, vcpu_index) -
                        instructions);
}

static void report(const char *line)
{
    g_autofree char *text = g_strdup_printf("rehost: %s\n", line);

    qemu_plugin_outs(text);
}

/* One frame, one write(): the master reads whole frames or nothing of a frame. */
static void send_event(Event *event)
{
    uint8_t frame[FRAME_MAX];
    size_t size = protobuf_c_message_get_packed_size(&event->base);
    size_t prefix = 0;
    uint64_t length = size;
    ssize_t written;

    if (state.events_fd < 0 || size > FRAME_MAX - VARINT_MAX) {
        return;
    }
    do {
        frame[prefix++] = (length & 0x7f) | (length > 0x7f ? 0x80 : 0);
        length >>= 7;
    } while (length);
    protobuf_c_message_pack(&event->base, frame + prefix);
    do {
        written = write(state.events_fd, frame, prefix + size);
    } while (written < 0 && errno == EINTR);
    if (written != (ssize_t)(prefix + size)) {
        /* The master is gone (EPIPE) or the pipe is broken: nobody listens, stop quietly. */
        state.events_fd = -1;
        exit(0);
    }
}

static void send_milestone(const Hook *hook, uint64_t icount)
{
    Explorer__Rehost__Milestone milestone = EXPLORER__REHOST__MILESTONE__INIT;
    Event event = EXPLORER__REHOST__EVENT__INIT;

    milestone.name = hook->name;
    milestone.address = hook->vaddr;
    milestone.icount = icount;
    event.kind_case = EXPLORER__REHOST__EVENT__KIND_MILESTONE;
    event.milestone = &milestone;
    send_event(&event);
}

static void send_initcall(uint64_t function, uint64_t icount)
{
    Explorer__Rehost__Initcall initcall = EXPLORER__REHOST__INITCALL__INIT;
    Event event = EXPLORER__REHOST__EVENT__INIT;

    initcall.address = function;
    initcall.icount = icount;
    event.kind_case = EXPLORER__REHOST__EVENT__KIND_INITCALL;
    event.initcall = &initcall;
    send_event(&event);
}

static void send_hot_loop(const Loop *loop)
{
    Explorer__Rehost__HotLoop hot_loop = EXPLORER__REHOST__HOT_LOOP__INIT;
    Event event = EXPLORER__REHOST__EVENT__INIT;

    hot_loop.start_pc = loop->branch.start_pc;
    hot_loop.end_pc = loop->branch.branch_pc;
    hot_loop.iterations = state.hot_loop_iterations;
    event.kind_case = EXPLORER__REHOST__EVENT__KIND_HOT_LOOP;
    event.hot_loop = &hot_loop;
    send_event(&event);
}

static void send_log(const uint8_t *text, size_t length)
{
    Explorer__Rehost__Log log = EXPLORER__REHOST__LOG__INIT;
    Event event = EXPLORER__REHOST__EVENT__INIT;

    log.text.data = (uint8_t *)text;
    log.text.len = length;
    event.kind_case = EXPLORER__REHOST__EVENT__KIND_LOG;
    event.log = &log;
    send_event(&event);
}

/* The innermost CALL_STACK_SENT_MAX frames of `thread`, innermost first; returns how many. */
static unsigned sent_frames(const Thread *thread,
                            Explorer__Rehost__Frame frames[CALL_STACK_SENT_MAX],
                            Explorer__Rehost__Frame *pointers[CALL_STACK_SENT_MAX])
{
    unsigned count = MIN(thread->depth, CALL_STACK_SENT_MAX);
    unsigned i;

    for (i = 0; i < count; i++) {
        const Frame *frame = &thread->frames[thread->depth - 1 - i];

        explorer__rehost__frame__init(&frames[i]);
        frames[i].function = frame->function;
        frames[i].return_address = frame->return_address;
        pointers[i] = &frames[i];
    }
    return count;
}

static void send_call_stack(void)
{
    Explorer__Rehost__Frame frames[CALL_STACK_SENT_MAX];
    Explorer__Rehost__Frame *pointers[CALL_STACK_SENT_MAX];
    Explorer__Rehost__CallStack stack = EXPLORER__REHOST__CALL_STACK__INIT;
    Event event = EXPLORER__REHOST__EVENT__INIT;

    stack.n_frames = sent_frames(state.thread, frames, pointers);
    stack.frames = pointers;
    event.kind_case = EXPLORER__REHOST__EVENT__KIND_CALL_STACK;
    event.call_stack = &stack;
    send_event(&event);
}

/* Every tracked thread with frames, in table order (none without a stack pointer to tell them). */
static void send_thread_stacks(void)
{
    Explorer__Rehost__Frame frames[CALL_STACK_SENT_MAX];
    Explorer__Rehost__Frame *pointers[CALL_STACK_SENT_MAX];
    unsigned t;

    for (t = 0; state.stack_register && t < state.thread_count; t++) {
        const Thread *thread = &state.threads[t];
        Explorer__Rehost__ThreadStack stack = EXPLORER__REHOST__THREAD_STACK__INIT;
        Event event = EXPLORER__REHOST__EVENT__INIT;

        if (!thread->depth || thread->stack == UNNAMED_STACK) {
            continue;
        }
        stack.stack = thread->stack;
        stack.n_frames = sent_frames(thread, frames, pointers);
        stack.frames = pointers;
        stack.current = thread == state.thread;
        event.kind_case = EXPLORER__REHOST__EVENT__KIND_THREAD_STACK;
        event.thread_stack = &stack;
        send_event(&event);
    }
}

static bool is_covered(uint64_t vaddr)
{
    const uint8_t *bits = g_hash_table_lookup(state.instructions,
                                              GSIZE_TO_POINTER(vaddr >> COVERAGE_REGION_BITS));
    uint64_t offset = vaddr % COVERAGE_REGION_SIZE;

    return bits && (bits[offset / 8] & (1 << (offset % 8)));
}

/*
 * A direct call's target counts as entered when its first instruction is covered. (Counting it
 * when its block is translated after the call's would depend on the translation cache.)
 */
static void add_entered_direct_targets(void)
{
    GHashTableIter iter;
    gpointer target;

    g_hash_table_iter_init(&iter, state.call_targets);
    while (g_hash_table_iter_next(&iter, &target, NULL)) {
        if (is_covered(GPOINTER_TO_SIZE(target))) {
            g_hash_table_add(state.functions, target);
        }
    }
}

static void send_coverage(void)
{
    Explorer__Rehost__Coverage coverage = EXPLORER__REHOST__COVERAGE__INIT;
    Event event = EXPLORER__REHOST__EVENT__INIT;
    g_autofree char *line = NULL;

    add_entered_direct_targets();
    coverage.instructions = state.instructions_covered;
    coverage.functions = g_hash_table_size(state.functions);
    line = g_strdup_printf("coverage %" PRIu64 " instructions %" PRIu64 " functions",
                           coverage.instructions, coverage.functions);
    report(line);
    event.kind_case = EXPLORER__REHOST__EVENT__KIND_COVERAGE;
    event.coverage = &coverage;
    send_event(&event);
}

/* What is only known at the end: sent once, whichever way the run ends. */
static void send_final_reports(void)
{
    if (state.final_reports_sent) {
        return;
    }
    state.final_reports_sent = true;
    if (state.callstack) {
        send_call_stack();
        send_thread_stacks();
    }
    if (state.coverage) {
        send_coverage();
    }
}

/*
 * `summary` is the report line's text, `detail` valid UTF-8 (callers escape guest bytes),
 * `icount` the count where the run ended.
 */
static G_NORETURN void end_run_at(ExitReason reason, const char *summary,
                                  const char *detail, uint64_t icount)
{
    Explorer__Rehost__Exit exit_message = EXPLORER__REHOST__EXIT__INIT;
    Event event = EXPLORER__REHOST__EVENT__INIT;
    g_autofree char *line = g_strdup_printf("end %s at insn %" PRIu64, summary,
                                            icount);

    report(line);
    send_final_reports();
    exit_message.reason = reason;
    exit_message.icount = icount;
    exit_message.detail = (char *)detail;
    event.kind_case = EXPLORER__REHOST__EVENT__KIND_EXIT;
    event.exit = &exit_message;
    send_event(&event);
    exit(0);
}

/* The run ends at the end of the block entered last. */
static G_NORETURN void end_run(ExitReason reason, const char *summary,
                               const char *detail)
{
    end_run_at(reason, summary, detail, instructions_executed());
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

/* The panic format string, escaped (g_strescape: printable ASCII, C escapes for the rest). */
static char *read_panic_message(void)
{
    g_autoptr(GByteArray) bytes = g_byte_array_new();
    g_autofree char *raw = NULL;
    uint64_t pointer;

    if (!state.argument_register) {
        return g_strdup("");
    }
    pointer = read_register(state.argument_register);
    if (!qemu_plugin_read_memory_vaddr(pointer, bytes, PANIC_MESSAGE_MAX)) {
        return g_strdup("");
    }
    raw = g_strndup((const char *)bytes->data, bytes->len);
    return g_strescape(raw, NULL);
}

/*
 * The kernel runs at its link address: make each NOP'd function return its value at once.
 * The write goes through QEMU's debug path, which ignores page permissions and invalidates
 * the blocks translated from the page, so later calls run the patched code.
 */
static void write_nops(void)
{
    g_autoptr(GByteArray) bytes = g_byte_array_new();
    guint n;

    for (n = 0; n < state.nops->len; n++) {
        const Nop *nop = &g_array_index(state.nops, Nop, n);
        uint32_t words[NOP_WORDS_MAX];
        size_t count = state.traits->return_patch(nop->value, words);
        size_t i;

        g_byte_array_set_size(bytes, 0);
        for (i = 0; i < count; i++) {
            uint8_t word[4];
            int b;

            for (b = 0; b < 4; b++) {
                int shift = state.traits->big_endian ? 24 - 8 * b : 8 * b;

                word[b] = words[i] >> shift;
            }
            g_byte_array_append(bytes, word, sizeof(word));
        }
        if (!qemu_plugin_write_memory_vaddr(nop->vaddr, bytes)) {
            fprintf(stderr, "rehost: nop=0x%" PRIx64 ": the address is not "
                    "mapped when the kernel runs at its link address\n",
                    nop->vaddr);
            exit(1);
        }
    }
}

static void on_kernel_mapped(unsigned int vcpu_index, void *userdata)
{
    if (!state.nops_applied) {
        state.nops_applied = true;
        write_nops();
    }
}

static void on_hook(unsigned int vcpu_index, void *userdata)
{
    Hook *hook = &g_array_index(state.hooks, Hook, GPOINTER_TO_UINT(userdata));
    uint64_t icount = instructions_at(vcpu_index, hook->vaddr);
    g_autofree char *text = NULL;

    switch (hook->kind) {
    case HOOK_MILESTONE:
        if (!hook->reached) {
            hook->reached = true;
            text = g_strdup_printf("milestone %s 0x%" PRIx64 " at insn %"
                                   PRIu64, hook->name, hook->vaddr, icount);
            report(text);
            send_milestone(hook, icount);
        }
        return;
    case HOOK_INITCALL: {
        uint64_t function = read_register(state.argument_register);

        text = g_strdup_printf("initcall 0x%" PRIx64 " at insn %" PRIu64,
                               function, icount);
        report(text);
        send_initcall(function, icount);
        return;
    }
    case HOOK_PANIC: {
        g_autofree char *message = read_panic_message();

        text = g_strdup_printf("panic \"%s\"", message);
        end_run_at(EXPLORER__REHOST__EXIT_REASON__EXIT_PANIC, text, message,
                   icount);
    }
    case HOOK_HALT:
        text = g_strdup_printf("halt %s", hook->name);
        end_run_at(EXPLORER__REHOST__EXIT_REASON__EXIT_HALT, text, hook->name,
                   icount);
    case HOOK_NOPS_AGAIN:
        if (!hook->reached) {
            hook->reached = true;
            write_nops();
        }
        return;
    }
}

static void send_paused(uint64_t icount)
{
    Explorer__Rehost__Paused paused = EXPLORER__REHOST__PAUSED__INIT;
    Event event = EXPLORER__REHOST__EVENT__INIT;

    paused.icount = icount;
    event.kind_case = EXPLORER__REHOST__EVENT__KIND_PAUSED;
    event.paused = &paused;
    send_event(&event);
}

/*
 * The first block entered at or past pause_at (an inline conditional decided). The machine
 * stops the VM when this block ends, before the next one starts, so the count the plugin saves
 * at exit (state_out) is the one at the end of this block. Blocks translated later carry no
 * check; the ones already translated call in again and return at once.
 */
static void on_pause(unsigned int vcpu_index, void *userdata)
{
    uint64_t icount = instructions_executed();
    uint32_t token = REHOSTING_STOP_TOKEN;
    g_autoptr(GByteArray) request = NULL;
    g_autofree char *line = NULL;

    if (state.paused) {
        return;
    }
    state.paused = true;
    line = g_strdup_printf("paused at insn %" PRIu64, icount);
    report(line);
    send_paused(icount);
    request = g_byte_array_append(g_byte_array_new(), (const guint8 *)&token,
                                  sizeof(token));
    if (qemu_plugin_write_memory_hwaddr(REHOSTING_STOP_ADDRESS, request) !=
        QEMU_PLUGIN_HWADDR_OPERATION_OK) {
        /* Not the rehosting machine: nothing would stop the VM at the point. */
        fprintf(stderr, "rehost: pause_at= needs the rehosting machine (it did "
                "not take the request to stop)\n");
        exit(EXIT_FAILURE);
    }
}

static void on_budget_check(unsigned int vcpu_index, void *userdata)
{
    end_run(EXPLORER__REHOST__EXIT_REASON__EXIT_BUDGET, "budget", "");
}

/*
 * A WFE ran (only where the target names its mode register: ARM). On one CPU with interrupts
 * masked, a wait for an event is a spin nothing outside it can end: no other CPU can release
 * the lock or set the flag, no interrupt handler can run, and the machine has one vCPU. Only
 * the spinning code itself could end it, and when the same WFE comes round again and again with
 * every register the same (flags included) its next turn does what the last one did: the
 * kernel's spinlock waiting for itself (spin_lock_irqsave on a lock its own CPU holds, as a
 * console driver whose interrupt handler printed). The run ends there, as the budget would
 * end it much later with the same stack, milestones and log: EXIT_BUDGET, detail
 * "spin: N waits for an event at pc 0xPC with interrupts masked". Any other wait (interrupts
 * open, other registers: a delay loop reading a counter) starts the count again.
 */
static void on_wait_for_event(unsigned int vcpu_index, void *userdata)
{
    uint64_t pc = GPOINTER_TO_SIZE(userdata);
    uint64_t registers[SPIN_REGISTERS] = { 0 };
    g_autofree char *detail = NULL;
    int i;

    registers[SPIN_REGISTERS - 1] = read_register(state.mode_register);
    if (!(registers[SPIN_REGISTERS - 1] & ARM_CPSR_IRQ_MASKED)) {
        state.spin_waits = 0;
        return;
    }
    for (i = 0; i < SPIN_REGISTERS - 1; i++) {
        struct qemu_plugin_register *handle = i == 13 ? state.stack_register :
                                              state.general_registers[i];

        registers[i] = handle ? read_register(handle) : 0;
    }
    if (state.spin_waits && pc == state.spin_pc &&
        !memcmp(registers, state.spin_registers, sizeof(registers))) {
        state.spin_waits++;
    } else {
        state.spin_pc = pc;
        memcpy(state.spin_registers, registers, sizeof(registers));
        state.spin_waits = 1;
    }
    if (state.spin_waits >= SPIN_WAITS_MAX) {
        detail = g_strdup_printf("spin: %" PRIu64 " waits for an event at pc 0x%" PRIx64
                                 " with interrupts masked", state.spin_waits, pc);
        end_run(EXPLORER__REHOST__EXIT_REASON__EXIT_BUDGET, "spin", detail);
    }
}

/* A WFE gets the spin check, on a target whose mode register tells masked interrupts. */
static void instrument_wait_for_event(struct qemu_plugin_insn *insn)
{
    uint8_t bytes[4] = { 0 };
    size_t size = qemu_plugin_insn_data(insn, bytes, sizeof(bytes));

    if (state.mode_register && state.traits->waits_for_event(bytes, size)) {
        qemu_plugin_register_vcpu_insn_exec_cb(
            insn, on_wait_for_event, QEMU_PLUGIN_CB_R_REGS,
            GSIZE_TO_POINTER(qemu_plugin_insn_vaddr(insn)));
    }
}

static void check_budget(void)
{
    if (state.budget && instructions_executed() >= state.budget) {
        end_run(EXPLORER__REHOST__EXIT_REASON__EXIT_BUDGET, "budget", "");
    }
}

/*
 * An exception raised inside the running block: its entry counted the instructions after
 * `from_pc`, which did not run, and perhaps the raising instruction itself.
 */
static void take_back_unexecuted(unsigned int vcpu_index, uint64_t from_pc,
                                 uint64_t to_pc)
{
    uint64_t cause;
    uint64_t after;

    if (!instructions_after(running_block(vcpu_index), from_pc, &after)) {
        return;
    }
    cause = state.exception_register ? read_register(state.exception_register) : 0;
    take_back(vcpu_index,
              after + state.traits->leaves_fault_unexecuted(to_pc, cause));
    set_running_block(vcpu_index, NULL);
}

/* Interrupts and exceptions also check the budget: a loop may leave only through them. */
static void on_discontinuity(qemu_plugin_id_t id, unsigned int vcpu_index,
                             enum qemu_plugin_discon_type type,
                             uint64_t from_pc, uint64_t to_pc)
{
    if (type == QEMU_PLUGIN_DISCON_EXCEPTION) {
        take_back_unexecuted(vcpu_index, from_pc, to_pc);
    }
    check_budget();
}

/*
 * A memory access in a one-instruction block. Under -icount QEMU lets a device access run only
 * as the last instruction of a block: one found earlier winds its block back to the access
 * (which then counts once, in that block's entry) and runs the access alone in such a block,
 * flagged CF_MEMI_ONLY, where QEMU honours nothing but memory callbacks. The running block is
 * still the wound-back one: the instructions after the access were counted by its entry and
 * will be again by the blocks that run them. In an ordinary one-instruction block the running
 * block is this one and nothing is taken back.
 */
static void on_single_instruction_access(unsigned int vcpu_index,
                                         qemu_plugin_meminfo_t info,
                                         uint64_t vaddr, void *userdata)
{
    const BlockLayout *replay = userdata;
    const BlockLayout *wound_back = running_block(vcpu_index);
    uint64_t after;

    if (wound_back == replay) {
        return;
    }
    if (instructions_after(wound_back, replay->vaddrs[0], &after)) {
        take_back(vcpu_index, after);
    }
    /* Further accesses of the instruction (LDM) find nothing left to take back. */
    set_running_block(vcpu_index, replay);
}

static void on_block_below_user_limit(unsigned int vcpu_index, void *userdata)
{
    uint64_t vaddr = GPOINTER_TO_SIZE(userdata);
    g_autofree char *text = NULL;
    g_autofree char *line = NULL;

    if (state.user_reached ||
        (state.mode_register &&
         (read_register(state.mode_register) & ARM_CPSR_MODE_MASK) !=
         ARM_CPSR_MODE_USER)) {
        return;
    }
    text = g_strdup_printf("0x%" PRIx64, vaddr);
    if (state.past_user) {
        Hook user_space = { .name = (char *)"user_space", .vaddr = vaddr };
        uint64_t icount = instructions_at(vcpu_index, vaddr);

        state.user_reached = true;
        line = g_strdup_printf("milestone user_space %s at insn %" PRIu64,
                               text, icount);
        report(line);
        send_milestone(&user_space, icount);
        return;
    }
    line = g_strdup_printf("user_space %s", text);
    end_run_at(EXPLORER__REHOST__EXIT_REASON__EXIT_USER_SPACE, line, text,
               instructions_at(vcpu_index, vaddr));
}

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

/*
 * The innermost return address of an empty stack: no block starts there. (0 would match a
 * boot stub or RAM at physical address 0, and pop an empty stack.)
 */
#define NO_RETURN_ADDRESS UINT64_MAX

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
static enum qemu_plugin_cb_flags call_stack_flags(uint64_t vaddr)
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
    uint64_t target = handle ? read_register(handle) & ~1ULL : 0;

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
static void on_return_to_innermost(unsigned int vcpu_index, void *userdata)
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
static void on_return_target(unsigned int vcpu_index, void *userdata)
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

/* printk_sprint's entry: where the record's text goes. */
static void on_log_entry(unsigned int vcpu_index, void *userdata)
{
    state.log_text = read_register(state.argument_register);
}

/* Back from printk_sprint: its return value is the text's length (a u16). */
static void on_log_return(unsigned int vcpu_index, void *userdata)
{
    g_autoptr(GByteArray) bytes = g_byte_array_new();
    size_t length = MIN(read_register(state.return_register) & 0xffff,
                        LOG_TEXT_MAX - 1);

    if (!state.log_text ||
        !qemu_plugin_read_memory_vaddr(state.log_text, bytes, length)) {
        return;
    }
    g_byte_array_append(bytes, (const uint8_t *)"\n", 1);
    send_log(bytes->data, bytes->len);
    state.log_text = 0;
}

static bool hook_needs_registers(const Hook *hook)
{
    return hook->kind == HOOK_INITCALL || hook->kind == HOOK_PANIC;
}

static void instrument_hooks(struct qemu_plugin_insn *insn, uint64_t vaddr)
{
    guint h;

    for (h = 0; h < state.hooks->len; h++) {
        Hook *hook = &g_array_index(state.hooks, Hook, h);

        if (hook->vaddr != vaddr || hook->reached) {
            continue;
        }
        qemu_plugin_register_vcpu_insn_exec_cb(
            insn, on_hook,
            hook_needs_registers(hook) ? QEMU_PLUGIN_CB_R_REGS :
                                         QEMU_PLUGIN_CB_NO_REGS,
            GUINT_TO_POINTER(h));
    }
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

static void instrument_call(struct qemu_plugin_insn *insn, bool thumb)
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
static void instrument_stack_load(struct qemu_plugin_insn *insn)
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

static void free_loop(gpointer data)
{
    Loop *loop = data;

    qemu_plugin_scoreboard_free(loop->board);
    g_free(loop);
}

static void instrument_loop(struct qemu_plugin_tb *tb, const LoopBranch *branch)
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

/*
 * Can a return land at the start of this block: does a call end right before it (the test
 * reads both A32 and Thumb)? Only such blocks need the return compare. The bytes are read from
 * the host RAM the block was translated from, never through the MMU (a neighbouring page may
 * be MMIO: the catch-all device would record the read). Too close to a possible page start
 * (RETURN_LOOKBEHIND_PAGE), or not translated from RAM: assume it can. A block stays valid as
 * long as its own page is unwritten: only a rewrite of the page before, making a call out of
 * its last bytes, would go unseen.
 */
static bool may_follow_call(struct qemu_plugin_tb *tb)
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

/* Adds the block's instruction addresses to coverage's set; a block spans one or two regions. */
static void cover_instructions(struct qemu_plugin_tb *tb, size_t count)
{
    uint64_t region = 0;
    uint8_t *bits = NULL;
    size_t i;

    for (i = 0; i < count; i++) {
        uint64_t vaddr = qemu_plugin_insn_vaddr(qemu_plugin_tb_get_insn(tb, i));
        uint64_t offset = vaddr % COVERAGE_REGION_SIZE;
        uint8_t mask = 1 << (offset % 8);

        if (!bits || vaddr >> COVERAGE_REGION_BITS != region) {
            region = vaddr >> COVERAGE_REGION_BITS;
            bits = g_hash_table_lookup(state.instructions,
                                       GSIZE_TO_POINTER(region));
            if (!bits) {
                bits = g_malloc0(COVERAGE_REGION_SIZE / 8);
                g_hash_table_insert(state.instructions,
                                    GSIZE_TO_POINTER(region), bits);
            }
        }
        if (!(bits[offset / 8] & mask)) {
            bits[offset / 8] |= mask;
            state.instructions_covered++;
        }
    }
}

static bool block_is_thumb(struct qemu_plugin_tb *tb)
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

/* This block's layout, interned. */
static const BlockLayout *block_layout(struct qemu_plugin_tb *tb, size_t count)
{
    GByteArray *buffer = state.layout_buffer;
    g_autoptr(GBytes) candidate = NULL;
    gpointer interned = NULL;
    uint64_t word = count;
    size_t i;

    g_byte_array_set_size(buffer, 0);
    g_byte_array_append(buffer, (const guint8 *)&word, sizeof(word));
    for (i = 0; i < count; i++) {
        word = qemu_plugin_insn_vaddr(qemu_plugin_tb_get_insn(tb, i));
        g_byte_array_append(buffer, (const guint8 *)&word, sizeof(word));
    }
    candidate = g_bytes_new_static(buffer->data, buffer->len);
    if (!g_hash_table_lookup_extended(state.block_layouts, candidate, &interned,
                                      NULL)) {
        interned = g_bytes_new(buffer->data, buffer->len);
        g_hash_table_add(state.block_layouts, interned);
    }
    return g_bytes_get_data(interned, NULL);
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

/*
 * The plugin's state at a snapshot point, as u64 words: everything a full boot would still
 * know after the point, in this order:
 *   STATE_FILE_MAGIC, instructions executed,
 *   hooks: count, then (address, kind, reached) each, whether user space was reached,
 *   hot loops reported, the log text buffer, the innermost return address,
 *   the threads: thread_size, count, the current one's slot, switches, then for each in table
 *   order (stack, last run, depth, then (function, return address) each, outermost first),
 *   whether the stack pointer may have moved since it was last read,
 *   call sites: count, then (address, return address, target, target register, last target),
 *   return targets, direct call targets, log return addresses, functions entered: sets,
 *   instructions covered, coverage bitmaps: count, then (region, COVERAGE_REGION_SIZE bits),
 *   loops: count, then (start, branch, iterations, window start, reported) each,
 *   the spin: its waits in a row, its pc, its SPIN_REGISTERS registers.
 * The translation-time facts (call sites, targets) are kept because a return into a frame
 * pushed before the point must still be recognised in a restored VM whose calls were
 * translated before it. Not kept: kernel_mapped and nops_applied, so that the restored run's
 * first kernel block writes its own NOPs (the same bytes, or the child's).
 */
#define STATE_FILE_MAGIC 0x34657473686572ULL /* "rehste4": version 4, the spin's waits and user space reached */

static void put_word(GByteArray *out, uint64_t word)
{
    g_byte_array_append(out, (const guint8 *)&word, sizeof(word));
}

static void put_set(GByteArray *out, GHashTable *set)
{
    GHashTableIter iter;
    gpointer key;

    put_word(out, g_hash_table_size(set));
    g_hash_table_iter_init(&iter, set);
    while (g_hash_table_iter_next(&iter, &key, NULL)) {
        put_word(out, GPOINTER_TO_SIZE(key));
    }
}

static void put_call_sites(GByteArray *out)
{
    GHashTableIter iter;
    gpointer key, value;

    put_word(out, g_hash_table_size(state.call_sites));
    g_hash_table_iter_init(&iter, state.call_sites);
    while (g_hash_table_iter_next(&iter, &key, &value)) {
        const CallSite *call = value;

        put_word(out, GPOINTER_TO_SIZE(key));
        put_word(out, call->return_address);
        put_word(out, call->target);
        put_word(out, (uint64_t)(int64_t)call->target_register);
        put_word(out, call->last_target);
    }
}

static void put_coverage(GByteArray *out)
{
    GHashTableIter iter;
    gpointer key, value;

    put_word(out, state.instructions_covered);
    put_word(out, g_hash_table_size(state.instructions));
    g_hash_table_iter_init(&iter, state.instructions);
    while (g_hash_table_iter_next(&iter, &key, &value)) {
        put_word(out, GPOINTER_TO_SIZE(key));
        g_byte_array_append(out, value, COVERAGE_REGION_SIZE / 8);
    }
}

static void put_loops(GByteArray *out)
{
    GHashTableIter iter;
    gpointer value;

    put_word(out, g_hash_table_size(state.loops));
    g_hash_table_iter_init(&iter, state.loops);
    while (g_hash_table_iter_next(&iter, NULL, &value)) {
        const Loop *loop = value;

        put_word(out, loop->branch.start_pc);
        put_word(out, loop->branch.branch_pc);
        put_word(out, qemu_plugin_u64_sum(loop->iterations));
        put_word(out, loop->window_start);
        put_word(out, loop->reported);
    }
}

static void put_threads(GByteArray *out)
{
    unsigned t, i;

    put_word(out, state.thread_size);
    put_word(out, state.thread_count);
    put_word(out, state.thread - state.threads);
    put_word(out, state.thread_switches);
    for (t = 0; t < state.thread_count; t++) {
        const Thread *thread = &state.threads[t];

        put_word(out, thread->stack);
        put_word(out, thread->last_run);
        put_word(out, thread->depth);
        for (i = 0; i < thread->depth; i++) {
            put_word(out, thread->frames[i].function);
            put_word(out, thread->frames[i].return_address);
        }
    }
    put_word(out, *state.stack_moved_slot);
}

static void save_state(const char *path)
{
    g_autoptr(GByteArray) out = g_byte_array_new();
    g_autoptr(GError) error = NULL;
    guint i;

    put_word(out, STATE_FILE_MAGIC);
    put_word(out, instructions_executed());
    put_word(out, state.hooks->len);
    for (i = 0; i < state.hooks->len; i++) {
        const Hook *hook = &g_array_index(state.hooks, Hook, i);

        put_word(out, hook->vaddr);
        put_word(out, hook->kind);
        put_word(out, hook->reached);
    }
    put_word(out, state.user_reached);
    put_word(out, state.hot_loops_reported);
    put_word(out, state.log_text);
    put_word(out, *state.innermost_return_slot);
    put_threads(out);
    put_call_sites(out);
    put_set(out, state.return_targets);
    put_set(out, state.call_targets);
    put_set(out, state.log_returns);
    put_set(out, state.functions);
    put_coverage(out);
    put_loops(out);
    put_word(out, state.spin_waits);
    put_word(out, state.spin_pc);
    for (i = 0; i < SPIN_REGISTERS; i++) {
        put_word(out, state.spin_registers[i]);
    }
    if (!g_file_set_contents(path, (const gchar *)out->data, out->len, &error)) {
        fprintf(stderr, "rehost: state_out: %s\n", error->message);
        exit(1);
    }
}

/* Reading a state_in file: a word past its end means the file is not one of ours. */
typedef struct {
    const uint8_t *next;
    const uint8_t *end;
} StateReader;

static G_NORETURN void reject_state_file(const char *why)
{
    fprintf(stderr, "rehost: state_in %s: not a state_out file of this plugin\n",
            why);
    exit(1);
}

static uint64_t take_word(StateReader *reader)
{
    uint64_t word;

    if (reader->end - reader->next < (ptrdiff_t)sizeof(word)) {
        reject_state_file("is truncated");
    }
    memcpy(&word, reader->next, sizeof(word));
    reader->next += sizeof(word);
    return word;
}

static const uint8_t *take_bytes(StateReader *reader, size_t size)
{
    const uint8_t *bytes = reader->next;

    if ((size_t)(reader->end - reader->next) < size) {
        reject_state_file("is truncated");
    }
    reader->next += size;
    return bytes;
}

static void take_set(StateReader *reader, GHashTable *set)
{
    uint64_t count;

    for (count = take_word(reader); count; count--) {
        g_hash_table_add(set, GSIZE_TO_POINTER(take_word(reader)));
    }
}

static void take_hooks(StateReader *reader)
{
    uint64_t count;
    guint h;

    for (count = take_word(reader); count; count--) {
        uint64_t vaddr = take_word(reader);
        uint64_t kind = take_word(reader);
        bool reached = take_word(reader);

        for (h = 0; h < state.hooks->len; h++) {
            Hook *hook = &g_array_index(state.hooks, Hook, h);

            if (hook->vaddr == vaddr && hook->kind == kind) {
                hook->reached = reached;
            }
        }
    }
}

static void take_threads(StateReader *reader)
{
    uint64_t count, current, depth;
    unsigned t, i;

    if (take_word(reader) != state.thread_size) {
        reject_state_file("was saved with another thread_size");
    }
    count = take_word(reader);
    current = take_word(reader);
    if (count == 0 || count > THREADS_MAX || current >= count) {
        reject_state_file("holds a thread table this plugin cannot hold");
    }
    state.thread_count = count;
    state.thread = &state.threads[current];
    state.thread_switches = take_word(reader);
    for (t = 0; t < state.thread_count; t++) {
        Thread *thread = &state.threads[t];

        thread->stack = take_word(reader);
        thread->last_run = take_word(reader);
        depth = take_word(reader);
        if (depth > CALL_STACK_DEPTH_MAX) {
            reject_state_file("holds too deep a call stack");
        }
        thread->depth = depth;
        for (i = 0; i < thread->depth; i++) {
            thread->frames[i].function = take_word(reader);
            thread->frames[i].return_address = take_word(reader);
        }
    }
    *state.stack_moved_slot = take_word(reader);
}

static void take_call_sites(StateReader *reader)
{
    uint64_t count;

    for (count = take_word(reader); count; count--) {
        uint64_t vaddr = take_word(reader);
        CallSite *call = g_new0(CallSite, 1);
        size_t filter_bit = (vaddr >> 1) % CALL_SITE_FILTER_BITS;

        call->return_address = take_word(reader);
        call->target = take_word(reader);
        call->target_register = (int)(int64_t)take_word(reader);
        call->last_target = take_word(reader);
        g_hash_table_insert(state.call_sites, GSIZE_TO_POINTER(vaddr), call);
        state.call_site_filter[filter_bit / 8] |= 1 << (filter_bit % 8);
    }
}

static void take_coverage(StateReader *reader)
{
    uint64_t count;

    state.instructions_covered = take_word(reader);
    for (count = take_word(reader); count; count--) {
        uint64_t region = take_word(reader);
        const uint8_t *bits = take_bytes(reader, COVERAGE_REGION_SIZE / 8);

        g_hash_table_insert(state.instructions, GSIZE_TO_POINTER(region),
                            g_memdup2(bits, COVERAGE_REGION_SIZE / 8));
    }
}

static void take_loops(StateReader *reader, unsigned int vcpu_index)
{
    uint64_t count;

    for (count = take_word(reader); count; count--) {
        Loop *loop = g_new0(Loop, 1);

        loop->branch.start_pc = take_word(reader);
        loop->branch.branch_pc = take_word(reader);
        loop->board = qemu_plugin_scoreboard_new(sizeof(uint64_t));
        loop->iterations = qemu_plugin_scoreboard_u64(loop->board);
        qemu_plugin_u64_set(loop->iterations, vcpu_index, take_word(reader));
        loop->window_start = take_word(reader);
        loop->reported = take_word(reader);
        g_hash_table_insert(state.loops,
                            GSIZE_TO_POINTER(loop->branch.branch_pc), loop);
    }
}

/* At vCPU init, when the scoreboards have their slots: the inverse of save_state. */
static void restore_state(unsigned int vcpu_index)
{
    StateReader reader = { state.restored->data,
                           state.restored->data + state.restored->len };
    int i;

    if (take_word(&reader) != STATE_FILE_MAGIC) {
        reject_state_file("is of another version than rehste4");
    }
    qemu_plugin_u64_set(state.executed, vcpu_index, take_word(&reader));
    take_hooks(&reader);
    state.user_reached = take_word(&reader);
    state.hot_loops_reported = take_word(&reader);
    state.log_text = take_word(&reader);
    *state.innermost_return_slot = take_word(&reader);
    take_threads(&reader);
    take_call_sites(&reader);
    take_set(&reader, state.return_targets);
    take_set(&reader, state.call_targets);
    take_set(&reader, state.log_returns);
    take_set(&reader, state.functions);
    take_coverage(&reader);
    take_loops(&reader, vcpu_index);
    state.spin_waits = take_word(&reader);
    state.spin_pc = take_word(&reader);
    for (i = 0; i < SPIN_REGISTERS; i++) {
        state.spin_registers[i] = take_word(&reader);
    }
    if (reader.next != reader.end) {
        reject_state_file("has bytes after its state");
    }
    g_byte_array_free(state.restored, true);
    state.restored = NULL;
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
        g_autofree char *name = g_strdup_printf("r%d", i);

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

static bool parse_positive(const char *key, const char *value, uint64_t *number)
{
    if (!parse_address(value, number) || *number == 0) {
        fprintf(stderr, "rehost: %s=%s is not a positive integer\n", key, value);
        return false;
    }
    return true;
}

static bool parse_switch(const char *key, const char *value, bool *on)
{
    if (!qemu_plugin_bool_parse(key, value, on)) {
        fprintf(stderr, "rehost: %s=%s is not on or off\n", key, value);
        return false;
    }
    return true;
}

/* "ADDRESS:VALUE"; VALUE may be negative ("-19" is -ENODEV). */
static bool parse_nop(const char *value)
{
    g_auto(GStrv) parts = g_strsplit(value, ":", 2);
    Nop nop;
    uint64_t returned;

    if (!parts[0] || !parts[1] || !parse_address(parts[0], &nop.vaddr) ||
        !parse_address(parts[1], &returned)) {
        fprintf(stderr, "rehost: nop=%s is not ADDRESS:VALUE\n", value);
        return false;
    }
    nop.value = returned;
    g_array_append_val(state.nops, nop);
    return true;
}

static bool parse_argument(const char *key, const char *value)
{
    uint64_t number;

    if (g_str_equal(key, "budget")) {
        return parse_positive(key, value, &state.budget);
    }
    if (g_str_equal(key, "hot_loops")) {
        return parse_positive(key, value, &state.hot_loop_iterations);
    }
    if (g_str_equal(key, "events_fd")) {
        if (!parse_address(value, &number) || number > INT_MAX) {
            fprintf(stderr, "rehost: events_fd=%s is not a file descriptor\n",
                    value);
            return false;
        }
        state.events_fd = number;
        return true;
    }
    if (g_str_equal(key, "nop")) {
        return parse_nop(value);
    }
    if (g_str_equal(key, "pause_at")) {
        return parse_positive(key, value, &state.pause_at);
    }
    if (g_str_equal(key, "state_out")) {
        state.state_out = g_strdup(value);
        return true;
    }
    if (g_str_equal(key, "state_in")) {
        gchar *data;
        gsize length;

        if (!g_file_get_contents(value, &data, &length, NULL)) {
            fprintf(stderr, "rehost: state_in=%s cannot be read\n", value);
            return false;
        }
        state.restored = g_byte_array_new_take((guint8 *)data, length);
        return true;
    }
    if (g_str_equal(key, "log")) {
        if (!parse_address(value, &state.log_function) || !state.log_function) {
            fprintf(stderr, "rehost: log=%s is not an ADDRESS\n", value);
            return false;
        }
        return true;
    }
    if (g_str_equal(key, "thread_size")) {
        if (!parse_positive(key, value, &state.thread_size) ||
            (state.thread_size & (state.thread_size - 1))) {
            fprintf(stderr, "rehost: thread_size=%s is not a power of two\n", value);
            return false;
        }
        return true;
    }
    if (g_str_equal(key, "callstack")) {
        return parse_switch(key, value, &state.callstack);
    }
    if (g_str_equal(key, "coverage")) {
        return parse_switch(key, value, &state.coverage);
    }
    if (g_str_equal(key, "past_user")) {
        return parse_switch(key, value, &state.past_user);
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
    if (g_str_equal(key, "nops_again")) {
        return parse_hook(key, value, HOOK_NOPS_AGAIN);
    }
    fprintf(stderr, "rehost: unknown argument %s (budget, hook, initcalls, "
            "panic, halt, user_below, callstack, coverage, hot_loops, nop, "
            "nops_again, log, events_fd, pause_at, state_out, "
            "state_in, thread_size, past_user)\n", key);
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
    unsigned t;

    state.traits = traits_of(info->target_name);
    state.thread_size = THREAD_SIZE_DEFAULT;
    state.hooks = g_array_new(false, true, sizeof(Hook));
    state.nops = g_array_new(false, true, sizeof(Nop));
    if (!parse_arguments(argc, argv)) {
        return -1;
    }
    if (state.nops->len && (!state.user_below || !state.traits->return_patch)) {
        fprintf(stderr, "rehost: nop= needs user_below= (the kernel's "
                "PAGE_OFFSET: NOPs are written once the kernel runs there) and "
                "an ARM or MIPS guest\n");
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
