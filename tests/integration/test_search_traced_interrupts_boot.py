"""The traced_interrupts operator on a real board-file kernel: the QNAP TS-209 (ATAGs, no device tree).

bookworm's marvell kernel as machine 1565, with the NOPs its search finds first (the fortified
ATAG command line, the mbus windows the board file sets up on hardware without a model): it
runs 277 initcalls and idles in kernel_init (msleep in mv_xor_channel_add) with no timer armed.
The loop here is the test's, not the engine's (as in test_search_interrupts_boot.py): boot a
state, let the operator propose from its run, boot the child. orion5x_init_irq writes the main
controller's mask, orion_time_init's request_irq unmasks bit 0 (the bridge interrupt the orion
timer raises); the tick's run shows orion5x_legacy_handle_irq reading cause and mask, and the pin
makes every tick bit 0 of the cause register.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from explorer.corpus import Corpus
from explorer.firmware.ingest import ingest
from explorer.firmware.model import Firmware
from explorer.runner.machine_config_pb2 import Nop
from explorer.search.initial import initial_state
from explorer.search.operators import Context, Evaluated
from explorer.search.operators.traced_interrupts import propose_pin, propose_tick
from explorer.search.score import score
from explorer.search.state import State, Target, derive, state_id
from tests.integration.rehosting import boot_state

pytestmark = [pytest.mark.qemu, pytest.mark.corpus]

TS209_BOARD_ID = 1565
# What the TS-209's search NOPs before it idles in kernel_init: setup_arch's fortify BUG in
# parse_tag_cmdline, mvebu_mbus_init's oops on random window registers, and the board init's
# window set-up (-ENODEV is 0xffffffed).
NOPS = (
    ("parse_tag_cmdline", 0xFFFFFFED),
    ("mvebu_mbus_init", 0xFFFFFFED),
    ("mvebu_mbus_window_conflicts.constprop.0", 0),
    ("mvebu_mbus_get_io_win_info", 0),
)
# The tickless boot idles with no timer armed; the wall-clock deadline is only a guard.
DEADLINE_SECONDS = 240
TEST_STUCK_READS = 300_000


def stalled_state(firmware: Firmware) -> State:
    def add_nops(state: State) -> None:
        for name, value in NOPS:
            address = firmware.symbols.address_of(name)
            assert address is not None, name
            state.nops.append(Nop(address=address, return_value=value, name=name))

    return derive(initial_state(firmware, seed=1), add_nops)


def test_the_traced_controller_and_timer_bit_take_the_ts209_from_a_stall_to_user_space(
    qemu_build: Path, corpus: Corpus
) -> None:
    target = Target(
        kernel=corpus.kernel("marvell"),
        initrd=corpus.initramfs("armel"),
        cmdline="rdinit=/init",
        board_id=TS209_BOARD_ID,
    )
    firmware = ingest(target.kernel)
    state = stalled_state(firmware)
    stalled = boot_state(
        state, target, firmware, qemu_build, deadline=DEADLINE_SECONDS, stuck_reads=TEST_STUCK_READS
    )
    assert stalled.exit.detail.startswith("idle:"), stalled.exit
    assert "time_init" in {milestone.name for milestone in stalled.milestones}

    lineage = (Evaluated(state_id(state), state, stalled),)
    (tick,) = propose_tick(Context(firmware, target, lineage))
    # orion_irq_init's mask register, and bit 0 unmasked by orion_time_init's request_irq.
    assert (tick.detail["mask"], tick.detail["bit"]) == (0xF1020204, 0)
    ticking = boot_state(tick.state, target, firmware, qemu_build, stuck_reads=TEST_STUCK_READS)

    lineage = (Evaluated(state_id(tick.state), tick.state, ticking, tick), *lineage)
    (pin,) = propose_pin(Context(firmware, target, lineage))
    assert pin.detail["registers"] == {"0xf1020204": "echo", "0xf1020200": "0x1 once per tick"}
    pinned = boot_state(pin.state, target, firmware, qemu_build, stuck_reads=TEST_STUCK_READS)

    before, after = score(stalled), score(pinned)
    assert after.user_space and not before.user_space
    assert after.initcalls > before.initcalls
