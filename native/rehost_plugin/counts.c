/*
 * Exact instruction counts (see "Instruction counts" in rehost.c's head comment): the interned
 * block layouts, what an exception or a replayed access takes back, the budget, and the pause
 * at pause_at for a snapshot. Never reports anything but the budget's end and the pause.
 */

#include "rehost.h"

uint64_t instructions_executed(void)
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
uint64_t instructions_at(unsigned int vcpu_index, uint64_t vaddr)
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

/*
 * The first block entered at or past pause_at (an inline conditional decided). The machine
 * stops the VM when this block ends, before the next one starts, so the count the plugin saves
 * at exit (state_out) is the one at the end of this block. Blocks translated later carry no
 * check; the ones already translated call in again and return at once.
 */
void on_pause(unsigned int vcpu_index, void *userdata)
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

void on_budget_check(unsigned int vcpu_index, void *userdata)
{
    end_run(EXPLORER__REHOST__EXIT_REASON__EXIT_BUDGET, "budget", "");
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

/*
 * Interrupts and exceptions also check the budget: a loop may leave only through them. They
 * are counted for the exception loop once the count is exact again.
 */
void on_discontinuity(qemu_plugin_id_t id, unsigned int vcpu_index,
                             enum qemu_plugin_discon_type type,
                             uint64_t from_pc, uint64_t to_pc)
{
    if (type == QEMU_PLUGIN_DISCON_EXCEPTION) {
        take_back_unexecuted(vcpu_index, from_pc, to_pc);
    }
    if (type == QEMU_PLUGIN_DISCON_EXCEPTION || type == QEMU_PLUGIN_DISCON_INTERRUPT) {
        count_exception(from_pc, to_pc);
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
void on_single_instruction_access(unsigned int vcpu_index,
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

/* This block's layout, interned. */
const BlockLayout *block_layout(struct qemu_plugin_tb *tb, size_t count)
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

