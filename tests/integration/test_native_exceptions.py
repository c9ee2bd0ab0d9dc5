"""An exception loop nothing can end ends the run at once: exceptions taken one after another with
no instruction executed between them, counted in exceptions.

The real case: bookworm's marvell kernel booted as a QNAP TS-209 (ATAG board 1565) with the
marker initramfs. parse_tag_cmdline's fortified strlcpy of the ATAG command line hits BUG() in
fortify_panic in setup_arch, before the kernel maps its exception vectors: the undefined
instruction's vector cannot be fetched, nor the prefetch abort's it raises, for ever. No
instruction executes, the guest clock (icount) stands still, and before the plugin's check the run
ended only at the driver's wall-clock deadline (150 s in a search). Now: a spent budget that
says where, the stack that names the function the NOP operator answers, the same bytes every
time, and from a snapshot taken just before the BUG.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from explorer.corpus.layout import Corpus
from explorer.firmware.ingest import ingest
from explorer.firmware.model import Firmware
from explorer.runner.analysis import analyse
from explorer.runner.build import PLUGIN
from explorer.runner.command import Plugin
from explorer.runner.containment import RunnerLimits
from explorer.runner.kernel_hooks import STANDARD_OBSERVATION
from explorer.runner.launch import run
from explorer.runner.rehost_pb2 import ExitReason, RunResult
from explorer.runner.result import serialize
from explorer.runner.snapshot import Snapshot
from explorer.search.initial import initial_state
from explorer.search.operators.nops import crash_of
from explorer.search.state import Target, bootable
from tests.integration.rehosting import boot_state

pytestmark = pytest.mark.qemu

# The plugin's EXCEPTION_LOOP_MAX (native/rehost_plugin): exceptions in a row with no instruction.
EXCEPTION_LOOP = 4096
TS209_BOARD_ID = 1565
# Far beyond the run's time when the check works (a few seconds): without it, a timeout.
WALL_DEADLINE_SECONDS = 120


@pytest.fixture(scope="module")
def ts209(corpus: Corpus) -> tuple[Target, Firmware]:
    target = Target(
        kernel=corpus.kernel("marvell"),
        initrd=corpus.initramfs("armhf"),
        cmdline="rdinit=/init",
        board_id=TS209_BOARD_ID,
        prints_marker=True,
    )
    return target, ingest(target.kernel)


@pytest.fixture(scope="module")
def full_boot(ts209: tuple[Target, Firmware], qemu_build: Path) -> RunResult:
    target, firmware = ts209
    return boot_state(
        initial_state(firmware, seed=0), target, firmware, qemu_build, deadline=WALL_DEADLINE_SECONDS
    )


def test_a_bug_before_the_vectors_are_mapped_ends_at_once_with_its_stack(
    ts209: tuple[Target, Firmware], full_boot: RunResult, qemu_build: Path
) -> None:
    target, firmware = ts209
    result = full_boot
    assert result.exit.reason == ExitReason.EXIT_BUDGET, result.exit
    prefix = f"exceptions: {EXCEPTION_LOOP} exceptions with no instruction executed, the last from 0x"
    assert result.exit.detail.startswith(prefix), result.exit.detail
    assert result.exit.icount > 0 and not result.partial
    analysis = analyse(result, firmware.symbols)
    stack = [frame.function.function for frame in analysis.call_stack]
    assert stack[:2] == ["fortify_panic", "parse_tag_cmdline"]
    # The NOP operator reads it as a crash in parse_tag_cmdline, the function it NOPs.
    crash = crash_of(result, firmware.symbols)
    assert crash is not None and crash.frames[0][1] == "parse_tag_cmdline", crash
    again = boot_state(
        initial_state(firmware, seed=0), target, firmware, qemu_build, deadline=WALL_DEADLINE_SECONDS
    )
    assert serialize(again) == serialize(result)


def test_the_loop_continued_from_a_snapshot_before_the_bug_ends_like_the_full_boot(
    ts209: tuple[Target, Firmware], full_boot: RunResult, qemu_build: Path, tmp_path: Path
) -> None:
    target, firmware = ts209
    config = bootable(initial_state(firmware, seed=0), target, firmware)
    plugin = Plugin(qemu_build / PLUGIN, STANDARD_OBSERVATION)
    limits = RunnerLimits(deadline_seconds=WALL_DEADLINE_SECONDS)
    # Within the BUG's printk, blocks still run: the pause comes before the loop starts.
    point = full_boot.exit.icount - 100_000
    saving = Snapshot("ts209", point, tmp_path, save=True)
    prefix = run(config, qemu_build, plugin=plugin, limits=limits, snapshot=saving).result
    assert prefix.partial
    continuing = Snapshot("ts209", point, tmp_path, save=False)
    resumed = run(config, qemu_build, plugin=plugin, limits=limits, snapshot=continuing).result
    assert serialize(resumed) == serialize(full_boot)
