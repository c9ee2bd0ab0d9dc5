"""The timer_interrupts operator on a real kernel: armmp on the Exynos 4412 device tree.

The loop here is the test's, not the engine's (as in test_search_interrupts_boot.py): boot a
state, let the operator propose from its run, boot a child. The state is what device discovery,
firmware_calls and kernel_arguments give a search: the GIC the tree names (QEMU's plain GIC, its
CPU interface being apart from the MPCore block), QEMU's answers to SMCs, and lpj= on the
command line. The kernel's clock event is the
SoC's multi-core timer (MCT), which has no model: its init in time_init programs it, and then no
interrupt ever comes, so kernel_init sleeps for ever in an I2C transfer's timeout with no timer
armed. The operator's tick on the MCT's per-CPU interrupt (a PPI) is the interrupt the driver
waits for: jiffies advance, the sleeps end, and the kernel runs initcalls it never reached.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from explorer.corpus import Corpus
from explorer.firmware.ingest import ingest
from explorer.runner.rehost_pb2 import ExitReason
from explorer.search.device_models import placement
from explorer.search.initial import initial_state
from explorer.search.operators import Context, Evaluated
from explorer.search.operators.timer_interrupts import propose
from explorer.search.score import score
from explorer.search.state import State, Target, derive, state_id
from tests.integration.rehosting import boot_state

pytestmark = [pytest.mark.qemu, pytest.mark.corpus]

# Each boot ends on its own (idle, or the budget's guest time); the wall clock is only a guard.
DEADLINE_SECONDS = 240


def test_a_tick_on_the_programmed_timers_interrupt_ends_the_sleep_no_timer_ended(
    qemu_build: Path, corpus: Corpus
) -> None:
    target = Target(
        kernel=corpus.kernel("armmp"),
        dtb=corpus.dtb("armmp", "exynos4412-odroidu3"),
        initrd=corpus.initramfs("armhf"),
        cmdline="rdinit=/init lpj=100000",
    )
    firmware = ingest(target.kernel, dtb=target.dtb)
    assert firmware.device_tree is not None
    gic = next(node for node in firmware.device_tree.devices if "arm,cortex-a9-gic" in node.compatible)
    model = placement(gic, firmware.device_tree, "cortex-a9")
    assert model is not None and model.type == "arm_gic"

    def add_gic_and_firmware(state: State) -> None:
        state.interrupt_controller.CopyFrom(model.device(()))
        # Exynos's init_IRQ asks the secure firmware (an SMC) first: explorer.search.operators.
        # firmware_calls answers the undefined instruction that way in a search.
        state.psci_conduit = "smc"

    state = derive(initial_state(firmware, seed=1), add_gic_and_firmware)

    stalled = boot_state(state, target, firmware, qemu_build, deadline=DEADLINE_SECONDS)
    assert stalled.exit.reason == ExitReason.EXIT_BUDGET
    assert stalled.exit.detail.startswith("idle: the guest waited for an interrupt with no timer armed")

    children = propose(Context(firmware, target, (Evaluated(state_id(state), state, stalled),)))
    assert {child.detail["timer"] for child in children} == {"/soc/timer@10050000"}
    # The MCT's per-CPU timer (PPI 12) first, then its global comparator (SPI 57).
    assert [child.state.tick.irq for child in children] == [16 + 12, 32 + 57]
    ticking = boot_state(children[0].state, target, firmware, qemu_build, deadline=DEADLINE_SECONDS)

    before, after = score(stalled), score(ticking)
    assert after.initcalls > before.initcalls
    assert after > before
