"""Secondary CPU bring-up on real kernels: the machine has one CPU, the kernel looks for more.

The loop here is the test's, not the engine's (as in test_search_interrupts_boot.py): boot a
state, let the operators propose from its run, boot the child. Two ways bring-up stalls:

  * armmp on the Cyclone V SoCKit's device tree (Altera SoC FPGA), with lpj= (as the search's
    kernel_arguments gives it for a board whose timer interrupt never comes): kernel_init waits
    in __cpu_up for the second CPU to come online (a completion with a 1 s timeout, and no tick
    ever ends it), and the CPU idles until its idle deadline. nosmp reaches user space;
  * armmp on the Arndale's device tree (Exynos 5250): the platform's boot_secondary waits for the
    CPU's pen in a loop timed by jiffies, calling udelay over the SoC timer's counter, until the
    stuck-read limit ends the run. The counter's reads moved (an address without a rule reads
    random values), so timer_counters has nothing to propose: its delay loop is not what holds
    the boot. nosmp takes it from the first 40 initcalls to over 200.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from explorer.corpus import Corpus
from explorer.firmware.ingest import ingest
from explorer.runner.analysis import analyse, stuck_poll
from explorer.search.initial import initial_state
from explorer.search.operators import Context, Evaluated, kernel_arguments, timer_counters
from explorer.search.score import score
from explorer.search.state import Target, state_id
from tests.integration.rehosting import boot_state

pytestmark = [pytest.mark.qemu, pytest.mark.corpus]

# Far fewer than the search's 3e6: the stalled Exynos boot reads the counter in one loop only.
TEST_STUCK_READS = 300_000
# The initcalls this kernel runs before smp_init (the early ones).
EARLY_INITCALLS = 40


def target_for(corpus: Corpus, board: str, cmdline: str) -> Target:
    return Target(
        kernel=corpus.kernel("armmp"),
        dtb=corpus.dtb("armmp", board),
        initrd=corpus.initramfs("armhf"),
        cmdline=cmdline,
    )


def test_nosmp_takes_a_boot_waiting_in_cpu_up_to_user_space(qemu_build: Path, corpus: Corpus) -> None:
    target = target_for(corpus, "socfpga_cyclone5_sockit", "rdinit=/init lpj=100000")
    firmware = ingest(target.kernel, dtb=target.dtb)
    state = initial_state(firmware, seed=0)
    stalled = boot_state(state, target, firmware, qemu_build, stuck_reads=TEST_STUCK_READS)
    waiting = analyse(stalled, firmware.symbols).kernel_init
    assert waiting is not None and "__cpu_up" in {frame.function.function for frame in waiting.frames}
    assert len(stalled.initcalls) == EARLY_INITCALLS

    context = Context(firmware, target, (Evaluated(state_id(state), state, stalled),))
    (nosmp,) = kernel_arguments.propose(context)
    assert nosmp.detail["argument"] == "nosmp"
    booted = boot_state(nosmp.state, target, firmware, qemu_build, stuck_reads=TEST_STUCK_READS)
    assert score(booted).user_space, booted.exit.detail


def test_nosmp_takes_a_boot_past_a_platform_pen_wait_that_no_counter_would_end(
    qemu_build: Path, corpus: Corpus
) -> None:
    target = target_for(corpus, "exynos5250-arndale", "rdinit=/init")
    firmware = ingest(target.kernel, dtb=target.dtb)
    state = initial_state(firmware, seed=0)
    stalled = boot_state(state, target, firmware, qemu_build, stuck_reads=TEST_STUCK_READS)
    assert stuck_poll(stalled.exit.detail) is not None, stalled.exit.detail
    frames = {frame.function.function for frame in analyse(stalled, firmware.symbols).call_stack}
    assert {"__timer_const_udelay", "__cpu_up", "smp_init"} <= frames

    context = Context(firmware, target, (Evaluated(state_id(state), state, stalled),))
    assert timer_counters.propose(context) == []
    (nosmp,) = kernel_arguments.propose(context)
    booted = boot_state(nosmp.state, target, firmware, qemu_build, stuck_reads=TEST_STUCK_READS)
    assert len(booted.initcalls) > 4 * EARLY_INITCALLS, booted.exit.detail
    assert score(booted) > score(stalled)
