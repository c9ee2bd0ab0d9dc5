"""The delay-loop calibration on a real kernel whose timer has no model: lpj= comes first.

armmp on the i.MX6UL EVK's device tree (NXP), with its PLL's lock bit answered (the register
pinned to 0 as the search's bitwise operator found it): the GPT's clock rate is answered by the
value model, below 1 MHz, so register_current_timer_delay ignores the GPT as the delay timer
("insufficient resolution") and calibrate_delay falls back to calibrate_delay_converge, which
waits for jiffies to move. No clock event fires (the GPT has no model, the GIC is not placed),
so the run spins there to its instruction budget. The counter the summary shows read at the end
of the access stream is sched_clock's, read by printk long before the spin, not by the loop.

The loop is the test's, not the engine's (as in test_search_secondary_cpus_boot.py): the
proposal with the engine's own operator phases has lpj= among the children of the first
expansion (the structural tier, beside the GIC the tree names), the lpj= child gets past the
calibration to kernel_init, where imx6ul_init_machine faults; the nops operator's first child
for that panic reaches user space.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from explorer.corpus import Corpus
from explorer.firmware.ingest import ingest
from explorer.runner.analysis import analyse
from explorer.runner.machine_config_pb2 import MmioRule
from explorer.search.initial import initial_state
from explorer.search.operators import Context, Evaluated, nops
from explorer.search.operators.bitwise import with_rule
from explorer.search.operators.kernel_arguments import LOOPS_PER_JIFFY
from explorer.search.proposal import OperatorPhases, propose
from explorer.search.score import score
from explorer.search.state import Target, state_id
from tests.integration.rehosting import boot_state

pytestmark = [pytest.mark.qemu, pytest.mark.corpus]

# The i.MX6UL's PLL lock register, polled by clk_pllv3_wait_lock in time_init's of_clk_init:
# read as 0 (the PLL powered down), the wait returns.
PLL_REGISTER = 0x020C8010
# Children asked of the proposal: all of the structural tier's.
ALL_CHILDREN = 64
# The stuck run's budget: calibrate_delay starts at about 2.09e9 instructions; the search's 6e9
# would only spin there longer.
STUCK_BUDGET = 2_500_000_000


def test_lpj_is_proposed_with_the_structural_children_and_reaches_user_space(
    qemu_build: Path, corpus: Corpus
) -> None:
    target = Target(
        kernel=corpus.kernel("armmp"),
        dtb=corpus.dtb("armmp", "imx6ul-14x14-evk"),
        initrd=corpus.initramfs("armhf"),
        cmdline="rdinit=/init",
    )
    firmware = ingest(target.kernel, dtb=target.dtb)
    state = with_rule(initial_state(firmware, seed=0), MmioRule(address=PLL_REGISTER, constant=0))
    stuck = boot_state(state, target, firmware, qemu_build, instruction_budget=STUCK_BUDGET)
    assert stuck.milestones[-1].name == "calibrate_delay", stuck.exit.detail
    assert "calibrate_delay" in {
        frame.function.function for frame in analyse(stuck, firmware.symbols).call_stack
    }

    context = Context(firmware, target, (Evaluated(state_id(state), state, stuck),))
    proposal = propose(context, OperatorPhases(), lambda _: False, ALL_CHILDREN)
    assert not proposal.stalled
    (lpj,) = [child for child in proposal.children if child.operator == "kernel_arguments"]
    assert lpj.state.boot.cmdline == f"lpj={LOOPS_PER_JIFFY}"

    calibrated = boot_state(lpj.state, target, firmware, qemu_build)
    assert [milestone.name for milestone in calibrated.milestones][-2:] == ["rest_init", "kernel_init"]
    assert score(calibrated) > score(stuck)

    lineage = (Evaluated(state_id(lpj.state), lpj.state, calibrated), *context.lineage)
    first_nop = nops.propose(Context(firmware, target, lineage))[0]
    booted = boot_state(first_nop.state, target, firmware, qemu_build)
    assert score(booted).user_space, booted.exit.detail
