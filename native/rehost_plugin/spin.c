/*
 * A spin nothing can end: a WFE with interrupts masked and the same registers, over and over, on
 * the machine's one CPU. Ends the run (EXIT_BUDGET, "spin: ..."); never reports anything else.
 */

#include "rehost.h"

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
void instrument_wait_for_event(struct qemu_plugin_insn *insn)
{
    uint8_t bytes[4] = { 0 };
    size_t size = qemu_plugin_insn_data(insn, bytes, sizeof(bytes));

    if (state.mode_register && state.traits->waits_for_event(bytes, size)) {
        qemu_plugin_register_vcpu_insn_exec_cb(
            insn, on_wait_for_event, QEMU_PLUGIN_CB_R_REGS,
            GSIZE_TO_POINTER(qemu_plugin_insn_vaddr(insn)));
    }
}
