"""A spin nothing can end ends the run at once: a wait for an event (WFE) with interrupts masked,
the same registers every turn, on the machine's one CPU.

The tests' deadlock.elf (tests/firmware/) takes a spinlock its own CPU holds, interrupts masked,
after a countdown that waits for events with interrupts masked too but changes a register every
turn (more turns than the plugin's limit). Each WFE yields to QEMU's main loop, so such a spin
runs a few hundred thousand instructions a second, and before the plugin's check it ran to its
instruction budget or its wall-clock deadline (armmp + stm32mp157c-dk2 with its GIC: a console
driver's spin_lock_irqsave on its own port lock, 600 s and still spinning). Now: a spent budget
that says where it spun, the countdown passed, the same bytes every time, and a run continued
from a snapshot taken in mid-spin ends at the same instruction as the full boot.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from explorer.firmware.ingest import ingest
from explorer.firmware.model import Firmware
from explorer.runner.analysis import analyse, place
from explorer.runner.build import PLUGIN
from explorer.runner.command import Plugin
from explorer.runner.containment import RunnerLimits
from explorer.runner.kernel_hooks import STANDARD_OBSERVATION
from explorer.runner.launch import run
from explorer.runner.rehost_pb2 import ExitReason, RunResult
from explorer.runner.result import serialize
from explorer.runner.snapshot import Snapshot
from explorer.search.initial import initial_state
from explorer.search.state import Target, bootable
from tests.firmware import build as test_firmware
from tests.integration.rehosting import boot_state

pytestmark = pytest.mark.qemu

# The plugin's SPIN_WAITS_MAX (native/rehost_plugin): waits in a row with the same registers.
SPIN_WAITS = 65536
# Far beyond the run's time when the check works (a second or two): without it, a timeout.
WALL_DEADLINE_SECONDS = 240


@pytest.fixture(scope="module")
def deadlock() -> tuple[Target, Firmware]:
    target = Target(kernel=test_firmware.build().elf("deadlock"))
    return target, ingest(target.kernel)


@pytest.fixture(scope="module")
def full_boot(deadlock: tuple[Target, Firmware], qemu_build: Path) -> RunResult:
    target, firmware = deadlock
    return boot_state(
        initial_state(firmware, seed=0), target, firmware, qemu_build, deadline=WALL_DEADLINE_SECONDS
    )


def test_a_wfe_spin_with_interrupts_masked_ends_where_it_spins_every_time(
    deadlock: tuple[Target, Firmware], full_boot: RunResult, qemu_build: Path
) -> None:
    target, firmware = deadlock
    assert full_boot.exit.reason == ExitReason.EXIT_BUDGET, full_boot.exit
    detail = full_boot.exit.detail
    prefix = f"spin: {SPIN_WAITS} waits for an event at pc 0x"
    assert detail.startswith(prefix) and detail.endswith(" with interrupts masked"), detail
    pc = int(detail.removeprefix(prefix).split()[0], 16)
    assert place(pc, firmware.symbols).function == "spin_lock_irqsave"
    assert full_boot.exit.icount > 0 and not full_boot.partial
    analysis = analyse(full_boot, firmware.symbols)
    assert [frame.function.function for frame in analysis.call_stack][:2] == [
        "spin_lock_irqsave",
        "console_write_init",
    ]
    # The countdown's waits, as many with interrupts masked but each with another count, ended.
    assert "deadlock: the countdown's waits ended" in analysis.log_tail
    again = boot_state(
        initial_state(firmware, seed=0), target, firmware, qemu_build, deadline=WALL_DEADLINE_SECONDS
    )
    assert serialize(again) == serialize(full_boot)


def test_a_spin_continued_from_a_snapshot_in_mid_spin_ends_like_the_full_boot(
    deadlock: tuple[Target, Firmware], full_boot: RunResult, qemu_build: Path, tmp_path: Path
) -> None:
    target, firmware = deadlock
    config = bootable(initial_state(firmware, seed=0), target, firmware)
    plugin = Plugin(qemu_build / PLUGIN, STANDARD_OBSERVATION)
    limits = RunnerLimits(deadline_seconds=WALL_DEADLINE_SECONDS)
    # Each turn of the spin is four instructions: this point lies a quarter of its waits before the end.
    point = full_boot.exit.icount - SPIN_WAITS
    saving = Snapshot("deadlock", point, tmp_path, save=True)
    prefix = run(config, qemu_build, plugin=plugin, limits=limits, snapshot=saving).result
    assert prefix.partial
    continuing = Snapshot("deadlock", point, tmp_path, save=False)
    resumed = run(config, qemu_build, plugin=plugin, limits=limits, snapshot=continuing).result
    assert serialize(resumed) == serialize(full_boot)
