/*
 * The plugin's state across a snapshot: state_out is written at exit once paused, state_in
 * read back at vCPU init of the restoring run, so every count, stack, coverage and loop
 * continues as in one long run. Only the file's layout lives here: what each word means is
 * the owning unit's.
 */

#include "rehost.h"

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
 *   the spin: its waits in a row, its pc, its SPIN_REGISTERS registers,
 *   the exception loop: the instruction count it is at, its exceptions in a row.
 * The translation-time facts (call sites, targets) are kept because a return into a frame
 * pushed before the point must still be recognised in a restored VM whose calls were
 * translated before it. Not kept: kernel_mapped and nops_applied, so that the restored run's
 * first kernel block writes its own NOPs (the same bytes, or the child's).
 */
#define STATE_FILE_MAGIC 0x35657473686572ULL /* "rehste5": version 5, the exception loop */

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

void save_state(const char *path)
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
    put_word(out, state.exception_loop_icount);
    put_word(out, state.exception_loop_entries);
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
void restore_state(unsigned int vcpu_index)
{
    StateReader reader = { state.restored->data,
                           state.restored->data + state.restored->len };
    int i;

    if (take_word(&reader) != STATE_FILE_MAGIC) {
        reject_state_file("is of another version than rehste5");
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
    state.exception_loop_icount = take_word(&reader);
    state.exception_loop_entries = take_word(&reader);
    if (reader.next != reader.end) {
        reject_state_file("has bytes after its state");
    }
    g_byte_array_free(state.restored, true);
    state.restored = NULL;
}

