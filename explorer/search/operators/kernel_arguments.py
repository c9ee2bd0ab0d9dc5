"""Kernel arguments: command-line options that get a kernel past a wait no device model ends yet.

A state's `boot.cmdline` holds the arguments the search added; the target's command line comes
first (explorer.search.state.bootable). The wait handled so far is the delay-loop calibration:
without a timer interrupt (a board whose interrupt controller or timer has no QEMU model)
jiffies never advance and calibrate_delay waits for the next tick forever. `lpj=` gives the
loops per jiffy, and the kernel skips the calibration ("Calibrating delay loop (skipped)").
It never adds an argument the target or the state already has.
"""

from __future__ import annotations

from explorer.runner.analysis import analyse
from explorer.runner.rehost_pb2 import ExitReason
from explorer.search.operators import Child, Context
from explorer.search.state import State, derive

# Loops per jiffy. Only the length of the kernel's busy waits (udelay) depends on it: the guest
# runs 62.5 million instructions per second of its time (icount shift 4) and a delay loop is two
# instructions, so this is the right order at HZ 100 to 250, and errs on the short side.
LOOPS_PER_JIFFY = 100_000
STUCK_ENDINGS = (ExitReason.EXIT_BUDGET, ExitReason.EXIT_TIMEOUT)


def propose(context: Context) -> list[Child]:
    current = context.current
    arguments = f"{context.target.cmdline} {current.state.boot.cmdline}".split()
    if current.result.exit.reason not in STUCK_ENDINGS or any(a.startswith("lpj=") for a in arguments):
        return []
    analysis = analyse(current.result, context.firmware.symbols)
    innermost = analysis.call_stack[0].function.function if analysis.call_stack else None
    looping = {loop.start.function for loop in analysis.hot_loops}
    if innermost != "calibrate_delay" and "calibrate_delay" not in looping:
        return []
    argument = f"lpj={LOOPS_PER_JIFFY}"

    def add_argument(state: State) -> None:
        state.boot.cmdline = f"{state.boot.cmdline} {argument}".strip()

    reason = f"the run waited in calibrate_delay for a timer tick that never came: boot with {argument}"
    return [Child(derive(current.state, add_argument), "kernel_arguments", reason, {"argument": argument})]
