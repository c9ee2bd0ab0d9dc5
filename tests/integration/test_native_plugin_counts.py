"""The rehost plugin's instruction counts are QEMU's icount, wherever QEMU ends its blocks.

Under -icount QEMU lets a device access run only as the last instruction of a block; one found
earlier winds the block back and runs the access alone. The plugin counts a block at its entry,
so it must take back what such a block, or an exception inside it, did not run: otherwise every
count after it is too high by an amount that depends on where the block ended, which host timing
can change (QEMU cuts a block short where its icount budget ends). The armmp kernel on an empty
AM335x (RAM and a CPU; the interrupt controller's reset reads as done) polls a clock register a
million times from a 7-instruction block whose first instruction is the access: before the fix,
the plugin's counts were 6 million instructions ahead of QEMU's by calibrate_delay.
A bare-metal image does the same around an exception of each kind QEMU counts its own way.
MmioAccess.icount is QEMU's own count, taken by the machine at the access; a milestone hooked on
the accessing instruction is the plugin's count there (that instruction included), so the two
must agree.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from explorer.corpus import Corpus
from explorer.firmware.ingest import ingest
from explorer.runner.build import PLUGIN
from explorer.runner.command import Plugin
from explorer.runner.config import config_from_dict
from explorer.runner.containment import RunnerLimits
from explorer.runner.kernel_hooks import STANDARD_OBSERVATION, watching_kernel
from explorer.runner.launch import run
from explorer.runner.machine_config_pb2 import HookKind, MachineConfig
from explorer.runner.rehost_pb2 import ExitReason, RunResult
from explorer.runner.result import serialize
from explorer.runner.snapshot import Snapshot
from tests.integration.rehosting import BOOT_DEADLINE_SECONDS, empty_am335x_config
from tests.integration.test_native_mmio import (
    BRANCH_TO_SELF,
    TINY_ENTRY,
    UNMAPPED,
    ldr,
    run_machine,
    tiny_config,
)

pytestmark = pytest.mark.qemu

INTC_SYSSTATUS = 0x48200014
# The decompressor takes 2e9 instructions; the clock polls run from 2.11e9 to 2.13e9, and
# calibrate_delay starts at 2.20e9: the budget ends the run in it.
BUDGET = 2_250_000_000
# Instructions before the kernel first reads INTC_SYSSTATUS (at about 2.08e9), where the parent is
# saved: a parent without the rule that lets the boot past the reset poll runs exactly like the
# child up to there. More than a block, which the save may run past its point.
BEFORE_THE_FIRST_READ = 100_000
LIMITS = RunnerLimits(deadline_seconds=BOOT_DEADLINE_SECONDS)


def am335x(corpus: Corpus, *, reset_done: bool) -> MachineConfig:
    settings = empty_am335x_config(corpus, instruction_budget=BUDGET)
    if reset_done:
        settings["mmio_rules"] = [{"address": hex(INTC_SYSSTATUS), "constant": "0xffffffff"}]
    return watching_kernel(config_from_dict(settings), ingest(corpus.kernel("armmp")))


@pytest.fixture(scope="module")
def plugin(qemu_build: Path) -> Plugin:
    return Plugin(qemu_build / PLUGIN, STANDARD_OBSERVATION)


@pytest.fixture(scope="module")
def child(corpus: Corpus) -> MachineConfig:
    return am335x(corpus, reset_done=True)


@pytest.fixture(scope="module")
def child_full(child: MachineConfig, qemu_build: Path, plugin: Plugin) -> RunResult:
    result = run(child, qemu_build, plugin=plugin, limits=LIMITS).result
    assert result.exit.reason == ExitReason.EXIT_BUDGET, result.exit
    assert [m.name for m in result.milestones][-1] == "calibrate_delay"
    return result


@pytest.mark.corpus
def test_a_milestone_on_each_accessing_instruction_has_qemus_icount_of_its_first_access(
    child: MachineConfig, child_full: RunResult, qemu_build: Path, plugin: Plugin
) -> None:
    first_access_icount: dict[int, int] = {}
    for access in child_full.mmio_accesses:
        first_access_icount.setdefault(access.pc, access.icount)
    assert len(first_access_icount) >= 10
    hooked = MachineConfig()
    hooked.CopyFrom(child)
    for pc in first_access_icount:
        hooked.hooks.add(name=f"access_{pc:x}", address=pc, kind=HookKind.HOOK_MILESTONE)
    result = run(hooked, qemu_build, plugin=plugin, limits=LIMITS).result
    at_hooks = {m.name: m.icount for m in result.milestones if m.name.startswith("access_")}
    assert at_hooks == {f"access_{pc:x}": icount for pc, icount in first_access_icount.items()}
    # Hooks observe: the guest ran the same, access for access.
    assert [a.icount for a in result.mmio_accesses] == [a.icount for a in child_full.mmio_accesses]


@pytest.mark.corpus
def test_the_child_resumed_from_its_parents_snapshot_serializes_like_its_full_boot(
    corpus: Corpus,
    child: MachineConfig,
    child_full: RunResult,
    qemu_build: Path,
    plugin: Plugin,
    tmp_path: Path,
) -> None:
    parent = am335x(corpus, reset_done=False)
    first_read = next(a.icount for a in child_full.mmio_accesses if a.address == INTC_SYSSTATUS)
    point = first_read - BEFORE_THE_FIRST_READ
    prefix = run(
        parent,
        qemu_build,
        plugin=plugin,
        limits=LIMITS,
        snapshot=Snapshot("saved", point, tmp_path, save=True),
    ).result
    assert prefix.partial and prefix.exit.icount < first_read
    resumed = run(
        child,
        qemu_build,
        plugin=plugin,
        limits=LIMITS,
        snapshot=Snapshot("saved", point, tmp_path, save=False),
    )
    assert serialize(resumed.result) == serialize(child_full)


# A bare-metal A32 image: device accesses in the middle of blocks, each followed by an exception
# raised in the middle of a block, of each way QEMU counts one. Word indices; VBAR points at the
# table, whose slots branch to the handlers.
MOV_R3_1 = 0xE3A03001  # mov r3, #1
LDREX_R4_R3 = 0xE1934F9F  # ldrex r4, [r3]: unaligned, so an alignment fault (a data abort)
NOP = 0xE1A00000  # mov r0, r0
UDF = 0xE7F000F0  # undefined: the translator plants the exception, QEMU counts the instruction
SVC = 0xEF000000  # svc #0: likewise, but QEMU reports the next instruction as its source
VECTORS = 16  # 32-byte aligned from TINY_ENTRY
DATA_ABORT_HANDLER, UNDEFINED_HANDLER, SVC_HANDLER = 24, 28, 32
LITERALS = 40


def literal_load(rd: int, at: int, literal: int) -> int:
    return 0xE59F0000 | rd << 12 | (4 * (LITERALS + literal) - 4 * at - 8)


def branch(at: int, to: int) -> int:
    return 0xEA000000 | ((to - at - 2) & 0xFFFFFF)


def exceptions_image() -> tuple[int, ...]:
    words = [NOP] * (LITERALS + 2)
    words[0:10] = [
        literal_load(0, 0, 0),
        0xEE0C0F10,  # mcr p15, 0, r0, c12, c0, 0: VBAR
        literal_load(1, 2, 1),
        ldr(2, 1, 0),  # access A, mid-block
        MOV_R3_1,
        LDREX_R4_R3,  # data abort, mid-block
        NOP,
        NOP,
        NOP,
        BRANCH_TO_SELF,
    ]
    words[VECTORS + 1] = branch(VECTORS + 1, UNDEFINED_HANDLER)
    words[VECTORS + 2] = branch(VECTORS + 2, SVC_HANDLER)
    words[VECTORS + 4] = branch(VECTORS + 4, DATA_ABORT_HANDLER)
    words[DATA_ABORT_HANDLER : DATA_ABORT_HANDLER + 3] = [ldr(2, 1, 4), NOP, UDF]  # access B
    words[UNDEFINED_HANDLER : UNDEFINED_HANDLER + 3] = [ldr(2, 1, 8), NOP, SVC]  # access C
    words[SVC_HANDLER : SVC_HANDLER + 4] = [ldr(2, 1, 12), MOV_R3_1, NOP, BRANCH_TO_SELF]  # access D
    words[LITERALS : LITERALS + 2] = [TINY_ENTRY + 4 * VECTORS, UNMAPPED]
    return tuple(words)


def test_counts_after_exceptions_raised_inside_blocks_equal_qemus(qemu_build: Path, tmp_path: Path) -> None:
    accessing = {"a": 3, "b": DATA_ABORT_HANDLER, "c": UNDEFINED_HANDLER, "d": SVC_HANDLER}
    hooks = ",".join(f"hook={name}@{TINY_ENTRY + 4 * word:#x}" for name, word in accessing.items())
    config = tiny_config(tmp_path, exceptions_image(), mmio_event_limit="100")
    accesses, lines = run_machine(qemu_build, tmp_path, config, f"budget=100000,{hooks}")
    assert [a.pc for a in accesses] == [TINY_ENTRY + 4 * word for word in accessing.values()]
    milestones = [line.split() for line in lines if line.startswith("rehost: milestone ")]
    assert [(fields[2], int(fields[-1])) for fields in milestones] == [
        (name, access.icount) for name, access in zip(accessing, accesses, strict=True)
    ]
