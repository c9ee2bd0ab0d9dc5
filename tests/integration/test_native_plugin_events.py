"""The `rehost` plugin's Event frames through the real driver: milestones, initcalls, the exit, the
shadow call stack at a panic, coverage and hot loops.

Runs go through explorer.runner.launch.run, which hands the plugin its events pipe, so what is
checked here is the RunResult the master stores. Symbols come from the master's own ingestion.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from explorer.corpus import Corpus
from explorer.firmware.ingest import ingest
from explorer.firmware.model import Firmware
from explorer.runner.build import PLUGIN
from explorer.runner.command import Plugin
from explorer.runner.config import config_from_dict
from explorer.runner.containment import RunnerLimits
from explorer.runner.launch import run
from explorer.runner.rehost_pb2 import ExitReason, RunResult
from tests.integration.rehosting import (
    BOOT_DEADLINE_SECONDS,
    GENEROUS_BUDGET,
    MILESTONES,
    plugin_arguments,
    vexpress_a9_config,
)

pytestmark = pytest.mark.qemu

WATCH_EVERYTHING = ("callstack=on", "coverage=on", f"budget={GENEROUS_BUDGET}")


@pytest.fixture(scope="module")
def armmp_firmware(corpus: Corpus) -> Firmware:
    return ingest(corpus.kernel("armmp"))


def run_watched(qemu_build: Path, raw_config: dict, arguments: tuple[str, ...]) -> RunResult:
    config = config_from_dict({"target": "arm", **raw_config})
    plugin = Plugin(qemu_build / PLUGIN, arguments)
    return run(
        config, qemu_build, plugin=plugin, limits=RunnerLimits(deadline_seconds=BOOT_DEADLINE_SECONDS)
    ).result


def function_names(firmware: Firmware, addresses: list[int]) -> list[str]:
    return [symbol.name if (symbol := firmware.symbols.containing(address)) else "?" for address in addresses]


@pytest.mark.corpus
def test_armmp_boot_events_reach_the_driver(
    qemu_build: Path, corpus: Corpus, armmp_firmware: Firmware
) -> None:
    arguments = (*plugin_arguments(armmp_firmware).split(","), *WATCH_EVERYTHING)
    result = run_watched(qemu_build, vexpress_a9_config(corpus), arguments)
    assert not result.partial, result.partial_reason
    assert result.exit.reason == ExitReason.EXIT_USER_SPACE
    assert int(result.exit.detail, 16) < armmp_firmware.page_offset
    expected = [name for name in MILESTONES if name != "prepare_namespace"]  # the initramfs has /init
    assert [milestone.name for milestone in result.milestones] == expected
    counts = [milestone.icount for milestone in result.milestones]
    assert counts == sorted(counts) and counts[-1] <= result.exit.icount
    assert len(result.initcalls) > 800
    assert {"pl011_init", "populate_rootfs"} <= set(
        function_names(armmp_firmware, [initcall.address for initcall in result.initcalls])
    )
    # Blocks: every start address translated; functions: the call targets among them.
    assert result.coverage.instructions > 100_000
    assert 1_000 < result.coverage.functions < result.coverage.instructions


@pytest.mark.corpus
def test_vfs_panic_reports_the_call_stack_above_panic(
    qemu_build: Path, corpus: Corpus, armmp_firmware: Firmware
) -> None:
    config = vexpress_a9_config(corpus)
    del config["boot"]["initrd"]
    config["boot"]["cmdline"] = "console=ttyAMA0 rdinit=/nonexistent"
    arguments = (*plugin_arguments(armmp_firmware).split(","), *WATCH_EVERYTHING)
    result = run_watched(qemu_build, config, arguments)
    assert result.exit.reason == ExitReason.EXIT_PANIC
    assert result.exit.detail == "VFS: Unable to mount root fs on %s"
    frames = result.call_stack.frames[:3]
    assert frames[0].function == armmp_firmware.symbols.address_of("panic")
    # mount_root reaches mount_block_root by a tail branch, not a call: no frame of its own.
    assert function_names(armmp_firmware, [frame.function for frame in frames]) == [
        "panic",
        "mount_root",
        "prepare_namespace",
    ]
    assert function_names(armmp_firmware, [frame.return_address for frame in frames]) == [
        "mount_block_root",
        "prepare_namespace",
        "kernel_init_freeable",
    ]


# ARM (A32) words: r0 counts up forever, a two-instruction loop.
COUNT_FOREVER = (
    0xE3A00000,  # mov r0, #0
    0xE2800001,  # add r0, r0, #1   <- loop start
    0xEAFFFFFD,  # b   (the add)    <- loop end
)


def test_a_spin_is_reported_once_as_a_hot_loop(qemu_build: Path, tmp_path: Path) -> None:
    kernel = tmp_path / "spin.bin"
    kernel.write_bytes(struct.pack(f"<{len(COUNT_FOREVER)}I", *COUNT_FOREVER))
    config = {
        "cpu": "cortex-a9",
        "ram": [{"base": "0x60000000", "size": "0x1000000"}],
        "boot": {"kernel": str(kernel), "board_id": "0x8e0"},
    }
    threshold, budget = 10_000, 1_000_000
    result = run_watched(qemu_build, config, (f"hot_loops={threshold}", f"budget={budget}", "coverage=on"))
    assert result.exit.reason == ExitReason.EXIT_BUDGET
    (loop,) = result.hot_loops
    assert loop.end_pc - loop.start_pc == 4
    assert loop.iterations == threshold
    assert not loop.mmio_reads  # the master's to fill
    assert result.coverage.instructions >= 2


@pytest.mark.corpus
def test_a_nop_on_mount_root_gets_the_vfs_panic_run_past_mounting(
    qemu_build: Path, corpus: Corpus, armmp_firmware: Firmware
) -> None:
    config = vexpress_a9_config(corpus)
    del config["boot"]["initrd"]
    config["boot"]["cmdline"] = "console=ttyAMA0 rdinit=/nonexistent"
    mount_root = armmp_firmware.symbols.address_of("mount_root")
    arguments = (
        *plugin_arguments(armmp_firmware).split(","),
        f"budget={GENEROUS_BUDGET}",
        f"nop={mount_root:#x}:0",
    )
    result = run_watched(qemu_build, config, arguments)
    # Without the NOP this run ends in "VFS: Unable to mount root fs" (test_vfs_panic_...): mount_root
    # now returns 0 at once, prepare_namespace goes on, and kernel_init finds no init to run.
    assert result.exit.reason == ExitReason.EXIT_PANIC
    assert result.exit.detail.startswith("No working init found.")
    assert [milestone.name for milestone in result.milestones][-2:] == [
        "prepare_namespace",
        "run_init_process",
    ]


@pytest.mark.corpus
def test_a_nop_survives_ftrace_patching_the_functions_mcount_call(
    qemu_build: Path, corpus: Corpus, armmp_firmware: Firmware
) -> None:
    # blk_timeout_init starts `str lr, [sp, #-4]!; bl __gnu_mcount_nc`: the mcount call is the
    # second instruction, where the NOP's `bx lr` goes. ftrace_init later turns that call into
    # `add sp, sp, #4`, which breaks the patch unless the plugin writes it again afterwards.
    blk_timeout_init = armmp_firmware.symbols.address_of("blk_timeout_init")
    standard = plugin_arguments(armmp_firmware).split(",")
    nop = (f"budget={GENEROUS_BUDGET}", f"nop={blk_timeout_init:#x}:0")
    written_again = run_watched(qemu_build, vexpress_a9_config(corpus), (*standard, *nop))
    assert written_again.exit.reason == ExitReason.EXIT_USER_SPACE, written_again.exit.detail
    written_once = [argument for argument in standard if not argument.startswith("nops_again=")]
    broken = run_watched(qemu_build, vexpress_a9_config(corpus), (*written_once, *nop))
    assert broken.exit.reason == ExitReason.EXIT_PANIC
    assert broken.exit.detail.startswith("stack-protector")


@pytest.mark.corpus
def test_guest_log_arrives_without_any_console(
    qemu_build: Path, corpus: Corpus, armmp_firmware: Firmware
) -> None:
    config = vexpress_a9_config(corpus)
    config["boot"]["cmdline"] = "rdinit=/init"
    config["devices"] = [device for device in config["devices"] if device["type"] != "pl011"]
    printk_sprint = armmp_firmware.symbols.address_of("printk_sprint")
    arguments = (
        *plugin_arguments(armmp_firmware).split(","),
        f"budget={GENEROUS_BUDGET}",
        f"log={printk_sprint:#x}",
    )
    result = run_watched(qemu_build, config, arguments)
    assert result.exit.reason == ExitReason.EXIT_USER_SPACE
    assert not result.console
    lines = result.log.splitlines()
    assert lines[1].startswith(b"Linux version 6.1.")
    # 6.1 words it "Freeing unused kernel image (initmem) memory: 2048K".
    assert any(line.startswith(b"Freeing unused kernel image") for line in lines)
    assert b"Run /init as init process" in lines
