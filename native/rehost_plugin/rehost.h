/*
 * What the units of the `rehost` plugin share: the plugin's one static state (RehostState,
 * defined in rehost.c), the types it holds, and the functions one unit calls in another. The
 * plugin itself is described in rehost.c's head comment; which unit holds what:
 *   rehost.c      install, vCPU init, translation (where each concept's callbacks go), exit
 *   arguments.c   the -plugin KEY=VALUE arguments, parsed into the state
 *   targets.c     what differs between ARM and MIPS: the instruction decoders, NOP patches
 *   counts.c      exact instruction counts, the budget, the pause for a snapshot
 *   events.c      Event frames on events_fd, report lines, the end of a run
 *   hooks.c       hooked addresses (milestones, initcalls, panic, halt), user space, NOPs,
 *                 the guest log
 *   callstack.c   the shadow call stacks, one per kernel thread
 *   coverage.c    unique instructions and call targets entered
 *   loops.c       hot loops
 *   spin.c        a spin nothing can end (a WFE with interrupts masked and the same registers)
 *   exceptions.c  an exception loop nothing can end (exceptions with no instruction between)
 *   state_file.c  the plugin's state across a snapshot (state_out, state_in)
 * Only QEMU's public plugin API (qemu-plugin.h); nothing here does work, it only declares.
 */

#ifndef REHOST_H
#define REHOST_H

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

#define CALL_STACK_DEPTH_MAX 1024
/*
 * Kernel threads followed, each with its own shadow stack. A thread is its kernel stack; when a
 * new one appears with the table full, the thread that became current least recently is
 * dropped with its frames (a boot to user space has a few dozen kernel threads). Threads are
 * kept and sent in table order: the order they were first seen, a dropped one's slot reused.
 */
#define THREADS_MAX 128
/* The first thread's stack until the stack pointer is first read, and for ever when the CPU
 * exposes no stack pointer to plugins (then one shadow stack serves every thread). */
#define UNNAMED_STACK UINT64_MAX
/* Coverage keeps one bit per byte address in bitmaps of this many addresses. */
#define COVERAGE_REGION_BITS 12
#define COVERAGE_REGION_SIZE (1u << COVERAGE_REGION_BITS)
/* Most translated instructions are no call: a bitmap answers "never a call site" without a
 * hash lookup (a set bit may be another address's: then the hash table decides). */
#define CALL_SITE_FILTER_BITS (1u << 20)
#define ARM_CPSR_IRQ_MASKED 0x80 /* also AArch64 PSTATE's I bit, as gdb's cpsr shows it */
#define ARM_CPSR_MODE_MASK 0x1f
#define ARM_CPSR_MODE_USER 0x10
#define A64_PSTATE_EL0T 0x00
/*
 * A wait for an event that nothing can end (spin.c): the run ends once the same WFE has run
 * this many times in a row with interrupts masked and the same registers. Each WFE returns to
 * QEMU's main loop (a yield), a few microseconds: a spinlock deadlock ran about 300,000
 * instructions a second instead of 100 million, and took minutes to its budget.
 */
#define SPIN_WAITS_MAX 65536
/* What a spin compares between two of its waits: r0-r12, sp, lr, cpsr (the pc is the WFE's). */
#define SPIN_REGISTERS 16
/*
 * An exception loop nothing can end (exceptions.c): the run ends once this many exceptions and
 * interrupts in a row were taken with no instruction executed between them. Two already make
 * a fixed point (the second entry of a vector that cannot be fetched repeats the first); each
 * costs QEMU a failed translation, about a microsecond.
 */
#define EXCEPTION_LOOP_MAX 4096

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
/* The bytes of a function's start a NOP patch may leave alone (EntrySkip). */
#define ENTRY_SKIP_MAX 8

typedef bool (*BackwardBranchTest)(struct qemu_plugin_tb *tb, LoopBranch *loop);
/* Decodes the instruction of `size` bytes at `vaddr`; `bytes` holds at least 4. */
typedef bool (*CallTest)(const uint8_t *bytes, size_t size, uint64_t vaddr,
                         bool thumb, CallSite *call);
typedef size_t (*ReturnPatch)(uint32_t value, uint32_t words[NOP_WORDS_MAX]);
/* The address an indirect call goes to, from its register's value (ARM: without the Thumb bit;
 * A64: without a pointer authentication code). */
typedef uint64_t (*CallTarget)(uint64_t value);
/* How many bytes at a function's start a NOP patch leaves alone (A64: the patchable entry
 * ftrace rewrites); `bytes` holds the function's first `size` bytes. */
typedef size_t (*EntrySkip)(const uint8_t *bytes, size_t size);
/* Does the instruction load the stack pointer with a value not derived from it (a context
 * switch's load of the next thread's)? `bytes` holds at least 4. */
typedef bool (*StackLoadTest)(const uint8_t *bytes, size_t size);
/* Is this instruction a wait for an event (ARM WFE)? `bytes` holds at least 4. */
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
    const char *general_register_format; /* register n's name (gdb's) */
    uint64_t user_mode;            /* mode_register & ARM_CPSR_MODE_MASK in user mode */
    uint64_t thread_size;          /* THREAD_SIZE: thread_size='s default */
    bool big_endian;
    BackwardBranchTest ends_in_backward_branch;
    CallTest is_call;
    CallTarget call_target;
    ReturnPatch return_patch; /* NULL: NOPs unsupported */
    EntrySkip entry_skip;
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
    /* Exceptions taken in a row with the instruction count at exception_loop_icount. */
    uint64_t exception_loop_icount;
    uint64_t exception_loop_entries;
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

extern RehostState state;

/*
 * The innermost return address of an empty stack: no block starts there. (0 would match a
 * boot stub or RAM at physical address 0, and pop an empty stack.)
 */
#define NO_RETURN_ADDRESS UINT64_MAX

/* rehost.c */
uint64_t read_register(struct qemu_plugin_register *handle);

/* arguments.c */
bool parse_arguments(int argc, char **argv);

/* targets.c */
const TargetTraits *traits_of(const char *target);
bool block_is_thumb(struct qemu_plugin_tb *tb);

/* counts.c */
uint64_t instructions_executed(void);
uint64_t instructions_at(unsigned int vcpu_index, uint64_t vaddr);
const BlockLayout *block_layout(struct qemu_plugin_tb *tb, size_t count);
void on_pause(unsigned int vcpu_index, void *userdata);
void on_budget_check(unsigned int vcpu_index, void *userdata);
void on_discontinuity(qemu_plugin_id_t id, unsigned int vcpu_index,
                      enum qemu_plugin_discon_type type,
                      uint64_t from_pc, uint64_t to_pc);
void on_single_instruction_access(unsigned int vcpu_index,
                                  qemu_plugin_meminfo_t info,
                                  uint64_t vaddr, void *userdata);

/* events.c */
void report(const char *line);
void send_milestone(const Hook *hook, uint64_t icount);
void send_initcall(uint64_t function, uint64_t icount);
void send_hot_loop(const Loop *loop);
void send_log(const uint8_t *text, size_t length);
void send_final_reports(void);
void send_paused(uint64_t icount);
G_NORETURN void end_run_at(ExitReason reason, const char *summary,
                           const char *detail, uint64_t icount);
G_NORETURN void end_run(ExitReason reason, const char *summary,
                        const char *detail);

/* hooks.c */
bool hook_needs_registers(const Hook *hook);
void instrument_hooks(struct qemu_plugin_insn *insn, uint64_t vaddr);
void on_kernel_mapped(unsigned int vcpu_index, void *userdata);
void on_block_below_user_limit(unsigned int vcpu_index, void *userdata);
void on_log_entry(unsigned int vcpu_index, void *userdata);
void on_log_return(unsigned int vcpu_index, void *userdata);

/* callstack.c */
enum qemu_plugin_cb_flags call_stack_flags(uint64_t vaddr);
void instrument_call(struct qemu_plugin_insn *insn, bool thumb);
void instrument_stack_load(struct qemu_plugin_insn *insn);
bool may_follow_call(struct qemu_plugin_tb *tb);
void on_return_to_innermost(unsigned int vcpu_index, void *userdata);
void on_return_target(unsigned int vcpu_index, void *userdata);

/* coverage.c */
void cover_instructions(struct qemu_plugin_tb *tb, size_t count);
void add_entered_direct_targets(void);

/* loops.c */
void instrument_loop(struct qemu_plugin_tb *tb, const LoopBranch *branch);
void free_loop(gpointer data);

/* spin.c */
void instrument_wait_for_event(struct qemu_plugin_insn *insn);

/* exceptions.c */
void count_exception(uint64_t from_pc, uint64_t to_pc);

/* state_file.c */
void save_state(const char *path);
void restore_state(unsigned int vcpu_index);

#endif
