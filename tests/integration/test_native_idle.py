"""A guest that waits for an interrupt nobody raises ends at its idle deadline, not the wall clock.

armmp with the BeagleBone Black's device tree on CPU and RAM only, booted with lpj= (no
calibration), runs its initcalls and then idles in the idle task with no timer armed: under
icount QEMU would wait for the host forever. With idle_deadline_ns the machine ends the run when
the guest clock gets there, as a spent budget that says so, with the call stack the plugin
sends at exit; and the end is the same in every run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from explorer.corpus import Corpus
from explorer.firmware.ingest import ingest
from explorer.runner.rehost_pb2 import ExitReason
from explorer.runner.result import serialize
from explorer.search.initial import initial_state
from explorer.search.state import Target
from tests.integration.rehosting import boot_state

pytestmark = [pytest.mark.qemu, pytest.mark.corpus]

# Far beyond the time the run takes when the deadline works (a few seconds): without it, the
# run ends here, as a timeout.
WALL_DEADLINE_SECONDS = 240


def test_an_idle_guest_ends_at_its_idle_deadline_every_time(qemu_build: Path, corpus: Corpus) -> None:
    target = Target(
        kernel=corpus.kernel("armmp"),
        dtb=corpus.dtb("armmp", "am335x-boneblack"),
        initrd=corpus.initramfs("armhf"),
        cmdline="rdinit=/init lpj=100000",
    )
    firmware = ingest(target.kernel, dtb=target.dtb)
    state = initial_state(firmware, target, seed=0)
    first, second = (
        boot_state(state, target, firmware, qemu_build, deadline=WALL_DEADLINE_SECONDS) for _ in range(2)
    )
    assert first.exit.reason == ExitReason.EXIT_BUDGET, first.exit
    assert first.exit.detail.startswith("idle: the guest waited for an interrupt")
    assert not first.partial
    assert len(first.initcalls) > 800
    assert first.call_stack.frames
    assert serialize(first) == serialize(second)
