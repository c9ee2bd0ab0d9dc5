/*
 * An exception loop nothing can end: exception after exception with no guest instruction
 * executed between them. Ends the run (EXIT_BUDGET, "exceptions: ..."); never reports anything
 * else.
 */

#include "rehost.h"

/*
 * An exception or interrupt was taken (on_discontinuity, after what it left unexecuted was
 * taken back). When no instruction executed since the one before, the CPU only entered an
 * exception vector whose first instruction it cannot fetch: an exception taken before the
 * kernel mapped its vectors (a BUG in setup_arch on ARM: the undefined instruction's vector
 * faults, the prefetch abort's vector faults in turn, for ever). Nothing executes, so nothing
 * in the guest can change what the next fetch finds; the machine's devices never write guest
 * memory on their own. Each entry leaves the CPU in the state the previous same entry did, the
 * guest clock stands still (it follows the instruction count) and no budget or idle deadline
 * comes: before this the run ended only at the driver's wall-clock deadline. It ends after
 * EXCEPTION_LOOP_MAX such entries in a row, counted in exceptions, with the stack, log and
 * coverage of the instruction that started the loop. Any instruction that executes starts the
 * count again.
 */
void count_exception(uint64_t from_pc, uint64_t to_pc)
{
    uint64_t icount = instructions_executed();
    g_autofree char *detail = NULL;

    if (state.exception_loop_entries && icount == state.exception_loop_icount) {
        state.exception_loop_entries++;
    } else {
        state.exception_loop_icount = icount;
        state.exception_loop_entries = 1;
    }
    if (state.exception_loop_entries >= EXCEPTION_LOOP_MAX) {
        detail = g_strdup_printf("exceptions: %" PRIu64 " exceptions with no instruction "
                                 "executed, the last from 0x%" PRIx64 " to the vector at 0x%"
                                 PRIx64, state.exception_loop_entries, from_pc, to_pc);
        end_run(EXPLORER__REHOST__EXIT_REASON__EXIT_BUDGET, "exceptions", detail);
    }
}
