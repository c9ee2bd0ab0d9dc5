/*
 * What the plugin tells: Event frames on events_fd (one write() per frame, at most FRAME_MAX
 * bytes), the "rehost: ..." report lines, the reports only known at the end (call stacks,
 * coverage), and the end of a run (end_run_at). Encodes what others decided: it never decides
 * when a run ends nor reads the guest.
 */

#include "rehost.h"

/* PIPE_BUF: a frame this small is written atomically, whoever else writes to the pipe. */
#define FRAME_MAX 4096
#define VARINT_MAX 10
/* Innermost frames sent at the end: 128 frames of at most 24 bytes fit in one frame. */
#define CALL_STACK_SENT_MAX 128

void report(const char *line)
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

void send_milestone(const Hook *hook, uint64_t icount)
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

void send_initcall(uint64_t function, uint64_t icount)
{
    Explorer__Rehost__Initcall initcall = EXPLORER__REHOST__INITCALL__INIT;
    Event event = EXPLORER__REHOST__EVENT__INIT;

    initcall.address = function;
    initcall.icount = icount;
    event.kind_case = EXPLORER__REHOST__EVENT__KIND_INITCALL;
    event.initcall = &initcall;
    send_event(&event);
}

void send_hot_loop(const Loop *loop)
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

void send_log(const uint8_t *text, size_t length)
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
void send_final_reports(void)
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
G_NORETURN void end_run_at(ExitReason reason, const char *summary,
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
G_NORETURN void end_run(ExitReason reason, const char *summary,
                               const char *detail)
{
    end_run_at(reason, summary, detail, instructions_executed());
}

void send_paused(uint64_t icount)
{
    Explorer__Rehost__Paused paused = EXPLORER__REHOST__PAUSED__INIT;
    Event event = EXPLORER__REHOST__EVENT__INIT;

    paused.icount = icount;
    event.kind_case = EXPLORER__REHOST__EVENT__KIND_PAUSED;
    event.paused = &paused;
    send_event(&event);
}

