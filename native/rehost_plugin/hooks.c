/*
 * Hooked addresses: milestones, initcalls, panic, halt and nops_again; the end at the first
 * user-mode block below user_below; writing the NOPs; the guest log from printk_sprint. The
 * only unit that writes guest memory (the NOPs), and only what nop= asks for (counts.c's stop
 * request goes to the machine, at an address past any the guest can form).
 */

#include "rehost.h"

/* Longest panic format we quote; the kernel's are one line. */
#define PANIC_MESSAGE_MAX 160
/* A printk record's text is at most 1024 bytes (PRINTKRB_RECORD_MAX); with the newline it fits. */
#define LOG_TEXT_MAX 2048

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
        size_t skip = 0;
        size_t i;

        g_byte_array_set_size(bytes, 0);
        if (qemu_plugin_read_memory_vaddr(nop->vaddr, bytes, ENTRY_SKIP_MAX)) {
            skip = state.traits->entry_skip(bytes->data, bytes->len);
        }
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
        if (!qemu_plugin_write_memory_vaddr(nop->vaddr + skip, bytes)) {
            fprintf(stderr, "rehost: nop=0x%" PRIx64 ": the address is not "
                    "mapped when the kernel runs at its link address\n",
                    nop->vaddr);
            exit(1);
        }
    }
}

void on_kernel_mapped(unsigned int vcpu_index, void *userdata)
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

void on_block_below_user_limit(unsigned int vcpu_index, void *userdata)
{
    uint64_t vaddr = GPOINTER_TO_SIZE(userdata);
    g_autofree char *text = NULL;
    g_autofree char *line = NULL;

    if (state.user_reached ||
        (state.mode_register &&
         (read_register(state.mode_register) & ARM_CPSR_MODE_MASK) !=
         state.traits->user_mode)) {
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

/* printk_sprint's entry: where the record's text goes. */
void on_log_entry(unsigned int vcpu_index, void *userdata)
{
    state.log_text = read_register(state.argument_register);
}

/* Back from printk_sprint: its return value is the text's length (a u16). */
void on_log_return(unsigned int vcpu_index, void *userdata)
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

bool hook_needs_registers(const Hook *hook)
{
    return hook->kind == HOOK_INITCALL || hook->kind == HOOK_PANIC;
}

void instrument_hooks(struct qemu_plugin_insn *insn, uint64_t vaddr)
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

