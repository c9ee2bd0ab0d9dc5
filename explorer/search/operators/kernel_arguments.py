"""Kernel arguments: command-line options that get a kernel past a wait no device model ends yet.

A state's `boot.cmdline` holds the arguments the search added; the target's command line comes
first (explorer.search.state.bootable). Each wait is recognised by the kernel functions a stuck
run (out of instructions or time, idle included) stood in: its call stack at the exit, the
stack of kernel_init's thread, or the hot loops it spun in. The waits handled:

  * the delay-loop calibration (init/calibrate.c, calibrate_delay): without a timer interrupt (a
    board whose interrupt controller or timer has no QEMU model) jiffies never advance and it
    waits for the next tick forever. `lpj=` gives the loops per jiffy, and the kernel skips the
    calibration ("Calibrating delay loop (skipped)");
  * secondary CPU bring-up (kernel/smp.c smp_init -> bringup_nonboot_cpus -> kernel/cpu.c
    bringup_cpu -> arch/arm/kernel/smp.c __cpu_up -> the platform's smp_ops.smp_boot_secondary):
    the machine has one CPU, and a platform's boot_secondary polls a pen, a power controller or a
    udelay that never ends, or __cpu_up waits for a CPU that never answers. `nosmp` leaves
    smp_init out (and makes setup_max_cpus 0, so no secondary is ever woken).

Two operators, one per tier. `propose_calibration` (asked with the structural operators) answers
the calibration wait: a run standing in calibrate_delay has no clock event that fires (a
timer-based delay, register_current_timer_delay, would have skipped the wait with lpj_fine; a
delay timer slower than 1 MHz is ignored, "insufficient resolution", and the kernel falls back
to calibrate_delay_converge, which waits for jiffies to move). A structural child that brings no
ticking timer (a GIC the tree names, value collapse) spins there again to its instruction budget,
tens of seconds a run, before the stall tier was ever asked; lpj= is one run that changes
nothing else in the boot (only the length of loop-based busy waits; a timer-based udelay ignores
it). `propose` (the stall tier) answers the other waits, once the structural operators have had
their turn.

It never adds an argument when the target or the state already has one answering that wait.
"""

from __future__ import annotations

from dataclasses import dataclass

from explorer.runner.analysis import analyse
from explorer.runner.rehost_pb2 import ExitReason
from explorer.search.operators import Child, Context
from explorer.search.state import State, derive

# Loops per jiffy. Only the length of the kernel's busy waits (udelay) depends on it: the guest
# runs 62.5 million instructions per second of its time (icount shift 4) and a delay loop is two
# instructions, so this is the right order at HZ 100 to 250, and errs on the short side.
LOOPS_PER_JIFFY = 100_000
STUCK_ENDINGS = (ExitReason.EXIT_BUDGET, ExitReason.EXIT_TIMEOUT)


@dataclass(frozen=True)
class Wait:
    """A wait a kernel argument ends: the functions a run stuck in it stands in, and the argument."""

    functions: tuple[str, ...]
    argument: str
    # Arguments (by prefix) that already answer the wait, the one proposed among them.
    answered_by: tuple[str, ...]
    reason: str
    # Asked with the structural operators (propose_calibration) rather than in the stall tier.
    structural: bool = False


WAITS = (
    Wait(
        ("calibrate_delay",),
        f"lpj={LOOPS_PER_JIFFY}",
        ("lpj=",),
        "the run waited in calibrate_delay for a timer tick that never came",
        structural=True,
    ),
    Wait(
        ("smp_init", "bringup_nonboot_cpus", "bringup_cpu", "__cpu_up"),
        "nosmp",
        ("nosmp", "maxcpus=", "nr_cpus="),
        "the run stalled bringing up a secondary CPU the machine does not have",
    ),
)


def propose_calibration(context: Context) -> list[Child]:
    """lpj= for a run stuck calibrating the delay loop (the structural tier)."""
    return _proposed(context, structural=True)


def propose(context: Context) -> list[Child]:
    """The arguments for the other waits (the stall tier)."""
    return _proposed(context, structural=False)


def _proposed(context: Context, *, structural: bool) -> list[Child]:
    current = context.current
    if current.result.exit.reason not in STUCK_ENDINGS:
        return []
    arguments = f"{context.target.cmdline} {current.state.boot.cmdline}".split()
    standing_in = _functions_stood_in(context)
    return [
        _child(context, wait)
        for wait in WAITS
        if wait.structural == structural
        and standing_in.intersection(wait.functions)
        and not any(argument.startswith(wait.answered_by) for argument in arguments)
    ]


def _functions_stood_in(context: Context) -> set[str]:
    """The functions of the exit's call stack, kernel_init's stack and the hot loops."""
    analysis = analyse(context.current.result, context.firmware.symbols)
    frames = [*analysis.call_stack, *(analysis.kernel_init.frames if analysis.kernel_init else ())]
    places = [frame.function for frame in frames] + [loop.start for loop in analysis.hot_loops]
    return {place.function for place in places if place.function is not None}


def _child(context: Context, wait: Wait) -> Child:
    def add_argument(state: State) -> None:
        state.boot.cmdline = f"{state.boot.cmdline} {wait.argument}".strip()

    return Child(
        derive(context.current.state, add_argument),
        "kernel_arguments",
        f"{wait.reason}: boot with {wait.argument}",
        {"argument": wait.argument},
    )
