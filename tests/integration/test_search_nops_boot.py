"""NOP escalation on real armmp panics: the NOP the operator proposes gets the real kernel past them.

Each test boots a state that panics, asks the operator for its children from the real run, and
boots the first child (return 0) as the engine would (explorer.execution.jobs.run_job).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from explorer.corpus import Corpus
from explorer.execution.jobs import Job, RunnerSetup, run_job
from explorer.firmware.ingest import ingest
from explorer.firmware.model import Firmware
from explorer.runner.boards import vexpress_a9
from explorer.runner.build import PLUGIN
from explorer.runner.command import Plugin
from explorer.runner.config import config_from_dict
from explorer.runner.kernel_hooks import STANDARD_OBSERVATION
from explorer.runner.rehost_pb2 import ExitReason, RunResult
from explorer.runner.result import deserialize
from explorer.search.operators import Context, Evaluated
from explorer.search.operators.nops import OPERATOR, propose
from explorer.search.score import score
from explorer.search.state import State, Target, bootable, state_id
from tests.integration.rehosting import BOOT_DEADLINE_SECONDS

pytestmark = [pytest.mark.qemu, pytest.mark.corpus]


def boot(state: State, target: Target, firmware: Firmware, qemu_build: Path) -> RunResult:
    setup = RunnerSetup(qemu_build, Plugin(qemu_build / PLUGIN, STANDARD_OBSERVATION))
    config = bootable(state, target, firmware).SerializeToString()
    return deserialize(run_job(Job(state_id(state), config, BOOT_DEADLINE_SECONDS), setup).result)


def test_a_kernel_without_a_root_fs_gets_past_the_mount_panic_to_init(
    qemu_build: Path, corpus: Corpus
) -> None:
    # vexpress-a9 without an initramfs: mount_root tail-calls mount_block_root, which panics.
    kernel, dtb = corpus.kernel("armmp"), corpus.dtb("armmp", "vexpress-v2p-ca9")
    target = Target(kernel=kernel, dtb=dtb, cmdline="console=ttyAMA0")
    firmware = ingest(kernel, dtb=dtb)
    state = vexpress_a9(kernel, dtb, None)
    state.ClearField("boot")
    state.instruction_budget = 6_000_000_000  # past the panics (about 3.5e9), a guard against a hang
    parent = boot(state, target, firmware, qemu_build)
    assert parent.exit.reason == ExitReason.EXIT_PANIC and "Unable to mount root fs" in parent.exit.detail

    children = propose(Context(firmware, target, (Evaluated(state_id(state), state, parent),)))
    assert children[0].operator == OPERATOR
    assert [(nop.name, nop.return_value) for nop in children[0].state.nops] == [("mount_block_root", 0)]
    assert (
        "in mount_block_root <- mount_root <- prepare_namespace: NOP mount_block_root" in children[0].reason
    )

    child = boot(children[0].state, target, firmware, qemu_build)
    # A different panic, later: the kernel looked for an init on the (empty) root.
    assert child.exit.reason == ExitReason.EXIT_PANIC and "No working init found" in child.exit.detail
    assert score(child) > score(parent)
    assert score(child).furthest_milestone == "run_init_process"


def test_an_oops_in_the_exception_vectors_nops_the_faulting_timer_driver(
    qemu_build: Path, corpus: Corpus
) -> None:
    # A Cubieboard 2's device tree on a Cortex-A9: arch_timer_of_init reads the generic timer's
    # frequency, an undefined instruction on an A9; the oops kills the idle task.
    kernel, dtb = corpus.kernel("armmp"), corpus.dtb("armmp", "sun7i-a20-cubieboard2")
    target = Target(kernel=kernel, dtb=dtb)
    firmware = ingest(kernel, dtb=dtb)
    state = config_from_dict(
        {
            "target": "arm",
            "cpu": "cortex-a9",
            "ram": [{"base": "0x40000000", "size": "0x20000000"}],
            # The oops comes at about 2.08e9 instructions (2e9 of them decompressing).
            "instruction_budget": 2_300_000_000,
        }
    )
    parent = boot(state, target, firmware, qemu_build)
    assert parent.exit.reason == ExitReason.EXIT_PANIC, parent.exit

    children = propose(Context(firmware, target, (Evaluated(state_id(state), state, parent),)))
    assert [(nop.name, nop.return_value) for child in children for nop in child.state.nops] == [
        ("arch_timer_of_init", 0),
        ("arch_timer_of_init", 0xFFFFFFED),
    ]
    assert children[0].reason.startswith(
        "panic 'Attempted to kill the idle task!' after 'Internal error: Oops - undefined instruction"
    )
    assert "in arch_timer_of_init <- timer_probe <- time_init: NOP arch_timer_of_init (return 0)" in (
        children[0].reason
    )

    child = boot(children[0].state, target, firmware, qemu_build)
    # Past the oops: the board's own timer registers as the clocksource (and then waits on it,
    # the bitwise search's case).
    assert child.exit.reason == ExitReason.EXIT_BUDGET, child.exit
    assert b"clocksource: timer: mask" in child.log and b"Internal error" not in child.log
    assert firmware.symbols.address_of("arch_timer_of_init") not in {
        frame.function for frame in child.call_stack.frames
    }
