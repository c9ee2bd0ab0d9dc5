"""An exception loop nothing can end ends the run at once: exceptions taken one after another with
no instruction executed between them, counted in exceptions.

The real case: bookworm's marvell kernel booted as a QNAP TS-209 (ATAG board 1565) with the
marker initramfs. parse_tag_cmdline's fortified strlcpy of the ATAG command line hits BUG() in
fortify_panic in setup_arch, before the kernel maps its exception vectors: the undefined
instruction's vector cannot be fetched, nor the prefetch abort's it raises, for ever. No
instruction executes, the guest clock (icount) stands still, and before the plugin's check the run
ended only at the driver's wall-clock deadline, with no call stack. Now: a spent budget that
says where, the stack that names the function the NOP operator answers, the same bytes every
time.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from explorer.corpus.layout import Corpus
from explorer.firmware.ingest import ingest
from explorer.runner.analysis import analyse
from explorer.runner.rehost_pb2 import ExitReason
from explorer.runner.result import serialize
from explorer.search.initial import initial_state
from explorer.search.operators.nops import crash_of
from explorer.search.state import Target
from tests.integration.rehosting import boot_state

pytestmark = pytest.mark.qemu

# The plugin's EXCEPTION_LOOP_MAX (native/rehost_plugin): exceptions in a row with no instruction.
EXCEPTION_LOOP = 4096
TS209_BOARD_ID = 1565
# Far beyond the run's time when the check works (a few seconds): without it, a timeout.
WALL_DEADLINE_SECONDS = 120


def test_a_bug_before_the_vectors_are_mapped_ends_at_once_with_its_stack(
    corpus: Corpus, qemu_build: Path
) -> None:
    target = Target(
        kernel=corpus.kernel("marvell"),
        initrd=corpus.initramfs("armhf"),
        cmdline="rdinit=/init",
        board_id=TS209_BOARD_ID,
        prints_marker=True,
    )
    firmware = ingest(target.kernel)
    state = initial_state(firmware, seed=0)
    result = boot_state(state, target, firmware, qemu_build, deadline=WALL_DEADLINE_SECONDS)
    assert result.exit.reason == ExitReason.EXIT_BUDGET, result.exit
    prefix = f"exceptions: {EXCEPTION_LOOP} exceptions with no instruction executed, the last from 0x"
    assert result.exit.detail.startswith(prefix), result.exit.detail
    assert result.exit.icount > 0 and not result.partial
    analysis = analyse(result, firmware.symbols)
    assert [frame.function.function for frame in analysis.call_stack][:2] == [
        "fortify_panic",
        "parse_tag_cmdline",
    ]
    # The NOP operator reads it as a crash in parse_tag_cmdline, the function it NOPs.
    crash = crash_of(result, firmware.symbols)
    assert crash is not None and crash.frames[0][1] == "parse_tag_cmdline", crash
    again = boot_state(state, target, firmware, qemu_build, deadline=WALL_DEADLINE_SECONDS)
    assert serialize(again) == serialize(result)
