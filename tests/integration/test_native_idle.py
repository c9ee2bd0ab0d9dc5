"""A guest that waits for an interrupt nobody raises ends at its idle deadline, not the wall clock.

The tests' idle.elf (tests/firmware/) on a CPU and RAM only waits in WFI once its initcall has
started, with nothing that could ever wake it (a kernel's idle task with no timer armed; which
real boot gets there depends on the kernel build and its random reads): under icount QEMU would
wait for the host forever. With idle_deadline_ns the machine ends the run when the guest clock
gets there, as a spent budget that says so, with the call stack the plugin sends at exit; and
the end is the same in every run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from explorer.firmware.ingest import ingest
from explorer.runner.analysis import analyse
from explorer.runner.rehost_pb2 import ExitReason
from explorer.runner.result import serialize
from explorer.search.initial import initial_state
from explorer.search.state import Target
from tests.firmware import build as test_firmware
from tests.integration.rehosting import boot_state

pytestmark = pytest.mark.qemu

# Far beyond the time the run takes when the deadline works (a second): without it, the run
# ends here, as a timeout.
WALL_DEADLINE_SECONDS = 240


def test_an_idle_guest_ends_at_its_idle_deadline_every_time(qemu_build: Path) -> None:
    target = Target(kernel=test_firmware.build().elf("idle"))
    firmware = ingest(target.kernel)
    state = initial_state(firmware, seed=0)
    first, second = (
        boot_state(state, target, firmware, qemu_build, deadline=WALL_DEADLINE_SECONDS) for _ in range(2)
    )
    assert first.exit.reason == ExitReason.EXIT_BUDGET, first.exit
    assert first.exit.detail.startswith("idle: the guest waited for an interrupt with no timer armed")
    assert not first.partial
    assert [milestone.name for milestone in first.milestones][-1] == "kernel_init"
    stack = [frame.function.function for frame in analyse(first, firmware.symbols).call_stack]
    assert stack[:3] == ["wait_for_interrupt", "idle_init", "do_one_initcall"]
    assert serialize(first) == serialize(second)
