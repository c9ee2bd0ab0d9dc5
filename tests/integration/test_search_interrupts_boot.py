"""The interrupts operator on real kernels whose interrupt controllers have no model.

armmp on the AM335x device tree (a controller that names the pending interrupt by number), and
marvell on the Kirkwood device tree (bit-mask cause registers, the timer behind a chained
controller).

The loop here is the test's, not the engine's (as in test_search_devices_boot.py): boot a state,
let the operator propose from its run, boot the first child. From RAM, a Cortex-A8 and random
unruled reads, with lpj= on the command line (explorer.search.operators.kernel_arguments gets a
search there), the kernel runs its initcalls and then idles forever: nothing advances jiffies.
The operator's tick lets the handler run, the next run shows the register it reads, and pinning
that to the clock-event timer's interrupt reaches user space.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from explorer.corpus import Corpus
from explorer.firmware.ingest import ingest
from explorer.runner.rehost_pb2 import ExitReason
from explorer.search.initial import initial_state
from explorer.search.operators import Child, Context, Evaluated
from explorer.search.operators.interrupt_pins import propose as propose_pins
from explorer.search.operators.interrupts import propose
from explorer.search.score import score
from explorer.search.state import Target, state_id
from tests.integration.rehosting import boot_state

pytestmark = [pytest.mark.qemu, pytest.mark.corpus]

# The tickless boot idles with no timer armed; its idle deadline (the budget's guest time) ends
# it. The wall-clock deadline is only a guard.
STALL_DEADLINE_SECONDS = 240
# The ticking boot before the pin idles too, reading the controller's pending-interrupt register
# once per tick until the stuck-read limit ends it: the search's limit (3e6 reads) took 113 s,
# this one 14 s (no other register of this boot is read nearly as often).
TEST_STUCK_READS = 300_000


def test_a_tick_and_the_pinned_handler_register_take_am335x_from_a_stall_to_user_space(
    qemu_build: Path, corpus: Corpus
) -> None:
    target = Target(
        kernel=corpus.kernel("armmp"),
        dtb=corpus.dtb("armmp", "am335x-boneblack"),
        initrd=corpus.initramfs("armhf"),
        cmdline="rdinit=/init lpj=100000",
    )
    firmware = ingest(target.kernel, dtb=target.dtb)
    state = initial_state(firmware, seed=1)
    stalled = boot_state(
        state, target, firmware, qemu_build, deadline=STALL_DEADLINE_SECONDS, stuck_reads=TEST_STUCK_READS
    )
    assert stalled.exit.reason == ExitReason.EXIT_BUDGET
    assert stalled.exit.detail.startswith("idle:")
    assert "calibrate_delay" in {milestone.name for milestone in stalled.milestones}

    lineage = (Evaluated(state_id(state), state, stalled),)
    (tick,) = propose(Context(firmware, target, lineage))
    assert tick.detail["step"] == "tick" and tick.detail["controller"] == "/ocp/interrupt-controller@48200000"
    ticking = boot_state(tick.state, target, firmware, qemu_build, stuck_reads=TEST_STUCK_READS)
    # The handler ran on every tick, reading a pending interrupt that named no timer.
    assert "0x48200040" in ticking.exit.detail

    lineage = (Evaluated(state_id(tick.state), tick.state, ticking, tick), *lineage)
    pins: list[Child] = propose_pins(Context(firmware, target, lineage))
    assert pins and all(pin.detail["step"] == "pin" for pin in pins)
    # timer2, the clock event (the most registers programmed), alone: interrupt 68. The other
    # six timers (the clock source, and five only reset by ti-sysc) wait for the stall tier.
    assert [(pin.detail["register"], pin.detail["value"]) for pin in pins] == [(0x48200040, 68)]
    pinned = boot_state(pins[0].state, target, firmware, qemu_build, stuck_reads=TEST_STUCK_READS)

    before, after = score(stalled), score(pinned)
    assert after.user_space and not before.user_space
    assert after.initcalls > before.initcalls


def test_bit_mask_cause_registers_through_a_chained_controller_take_kirkwood_from_a_stall_to_user_space(
    qemu_build: Path, corpus: Corpus
) -> None:
    # The clock event (marvell,orion-timer's second interrupt) is input 2 of the bridge
    # controller, itself input 1 of the root's first bank: orion_handle_irq reads both banks'
    # cause registers, orion_bridge_irq_handler the bridge's, and each dispatches the set bits.
    target = Target(
        kernel=corpus.kernel("marvell"),
        dtb=corpus.dtb("marvell", "kirkwood-b3"),
        initrd=corpus.initramfs("armhf"),
        cmdline="rdinit=/init",
    )
    firmware = ingest(target.kernel, dtb=target.dtb)
    state = initial_state(firmware, seed=1)
    stalled = boot_state(
        state, target, firmware, qemu_build, deadline=STALL_DEADLINE_SECONDS, stuck_reads=TEST_STUCK_READS
    )
    assert stalled.exit.detail.startswith("idle:")

    lineage = (Evaluated(state_id(state), state, stalled),)
    (tick,) = propose(Context(firmware, target, lineage))
    # The timer's interrupt is acked in the bridge, which the root's block never sees: the
    # handler's first read acks each tick.
    assert tick.state.tick.ack_size == 0
    ticking = boot_state(tick.state, target, firmware, qemu_build, stuck_reads=TEST_STUCK_READS)
    # Random cause bits dispatch random interrupts: the timer's only now and then.
    assert not score(ticking).user_space

    lineage = (Evaluated(state_id(tick.state), tick.state, ticking, tick), *lineage)
    pins = propose_pins(Context(firmware, target, lineage))
    bridge = "/ocp@f1000000/bridge-interrupt-ctrl@20110"
    assert pins[0].detail["chain"] == [["/ocp@f1000000/interrupt-controller@20200", 1], [bridge, 2]]
    assert pins[0].detail["registers"] == {
        "0xf1020200": ["mask", "0x2 once per tick"],
        "0xf1020210": ["mask", "0"],
        "0xf1020110": ["mask", "0x4 once per tick"],
    }
    pinned = boot_state(pins[0].state, target, firmware, qemu_build, stuck_reads=TEST_STUCK_READS)

    before, after = score(stalled), score(pinned)
    assert after.user_space and not before.user_space
    assert after.initcalls > before.initcalls
