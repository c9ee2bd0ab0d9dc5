"""The `rehost` plugin on real kernels: milestones and initcalls from recovered symbols, and why a run ends.

Symbols come from the master's own ingestion (kallsyms of the stripped Debian zImage), as they will
in a search. Boots run under icount with a VM-clock RTC, so instruction counts are reproducible.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from explorer.corpus import Corpus
from explorer.firmware.ingest import ingest
from explorer.firmware.model import Firmware
from explorer.runner.build import PLUGIN, binary
from tests.integration.rehosting import (
    GENEROUS_BUDGET,
    MILESTONES,
    PluginRun,
    plugin_arguments,
    rehosting_command,
    run_plugin,
    vexpress_a9_config,
    write_config,
)

pytestmark = pytest.mark.qemu


@pytest.fixture(scope="module")
def armmp_firmware(corpus: Corpus) -> Firmware:
    return ingest(corpus.kernel("armmp"))


@pytest.fixture(scope="module")
def armmp_boots(
    qemu_build: Path, corpus: Corpus, armmp_firmware: Firmware, tmp_path_factory: pytest.TempPathFactory
) -> tuple[PluginRun, PluginRun]:
    """Two identical boots of armmp with the marker initramfs on the vexpress-a9 map, every watch on."""
    printk_sprint = armmp_firmware.symbols.address_of("printk_sprint")
    arguments = (
        f"{plugin_arguments(armmp_firmware)},budget={GENEROUS_BUDGET},callstack=on,coverage=on,"
        f"hot_loops=1000000,log={printk_sprint:#x}"
    )
    command = rehosting_command(
        qemu_build, write_config(tmp_path_factory.mktemp("armmp"), vexpress_a9_config(corpus))
    )
    return run_plugin(qemu_build, command, arguments), run_plugin(qemu_build, command, arguments)


@pytest.mark.corpus
def test_armmp_reaches_every_milestone_in_order_then_user_space(
    armmp_boots: tuple[PluginRun, PluginRun], armmp_firmware: Firmware
) -> None:
    run = armmp_boots[0]
    expected = [name for name in MILESTONES if name != "prepare_namespace"]  # the initramfs has /init
    assert [name for name, _ in run.milestones] == expected
    counts = [count for _, count in run.milestones]
    assert counts == sorted(counts)
    reason, pc, _, _, count = run.end.split()
    assert reason == "user_space"
    assert int(pc, 16) < armmp_firmware.page_offset
    assert int(count) >= counts[-1]


@pytest.mark.corpus
def test_armmp_initcalls_are_recovered_functions_run_by_kernel_init(
    armmp_boots: tuple[PluginRun, PluginRun], armmp_firmware: Firmware
) -> None:
    run = armmp_boots[0]
    milestones = dict(run.milestones)
    assert len(run.initcalls) > 300
    for address, count in run.initcalls:
        symbol = armmp_firmware.symbols.containing(address)
        assert symbol is not None and symbol.address == address, f"{address:#x} is no function start"
        assert milestones["kernel_init"] < count < milestones["run_init_process"]
    names = {armmp_firmware.symbols.containing(address).name for address, _ in run.initcalls}
    assert {"pl011_init", "populate_rootfs"} <= names


@pytest.mark.corpus
def test_two_runs_report_identical_instruction_counts(armmp_boots: tuple[PluginRun, PluginRun]) -> None:
    first, second = armmp_boots
    assert first.lines == second.lines


@pytest.mark.corpus
def test_armmp_without_a_root_ends_in_the_vfs_panic(
    qemu_build: Path, corpus: Corpus, armmp_firmware: Firmware, tmp_path: Path
) -> None:
    config = vexpress_a9_config(corpus)
    del config["boot"]["initrd"]
    config["boot"]["cmdline"] = "console=ttyAMA0 rdinit=/nonexistent"
    run = run_plugin(
        qemu_build,
        rehosting_command(qemu_build, write_config(tmp_path, config)),
        f"{plugin_arguments(armmp_firmware)},budget={GENEROUS_BUDGET}",
    )
    assert [name for name, _ in run.milestones][-2:] == ["kernel_init", "prepare_namespace"]
    assert run.end.startswith('panic "VFS: Unable to mount root fs on %s" at insn ')


@pytest.mark.corpus
def test_budget_ends_the_run_within_one_loop_iteration(
    qemu_build: Path,
    corpus: Corpus,
    armmp_firmware: Firmware,
    armmp_boots: tuple[PluginRun, PluginRun],
    tmp_path: Path,
) -> None:
    # Halfway between time_init and calibrate_delay of the full boot, whatever this build's counts.
    reached = dict(armmp_boots[0].milestones)
    budget = (reached["time_init"] + reached["calibrate_delay"]) // 2
    run = run_plugin(
        qemu_build,
        rehosting_command(qemu_build, write_config(tmp_path, vexpress_a9_config(corpus))),
        f"{plugin_arguments(armmp_firmware)},budget={budget}",
    )
    assert [name for name, _ in run.milestones][-1] == "time_init"
    reason, _, _, count = run.end.split()
    assert reason == "budget"
    assert budget <= int(count) < budget + 1000


@pytest.mark.parametrize(
    ("argument", "complaint"),
    [
        ("hook=start_kernel", "hook=start_kernel is not NAME@ADDRESS"),
        ("halt=0xc0000000", "halt=0xc0000000 is not NAME@ADDRESS"),
        ("initcalls=do_one_initcall", "initcalls=do_one_initcall is not an ADDRESS"),
        ("budget=0", "budget=0 is not a positive integer"),
        ("speed=fast", "unknown argument speed"),
        ("events_fd=pipe", "events_fd=pipe is not a file descriptor"),
        ("hot_loops=0", "hot_loops=0 is not a positive integer"),
        ("callstack=maybe", "callstack=maybe is not on or off"),
        ("nop=0xc0001000", "nop=0xc0001000 is not ADDRESS:VALUE"),
        ("nop=0xc0001000:0", "nop= needs user_below="),
        ("log=printk", "log=printk is not an ADDRESS"),
    ],
)
def test_plugin_rejects_a_malformed_argument(qemu_build: Path, argument: str, complaint: str) -> None:
    completed = subprocess.run(
        [
            str(qemu_build / binary("arm")),
            "-M",
            "vexpress-a9",
            "-nodefaults",
            "-display",
            "none",
            "-plugin",
            f"{qemu_build / PLUGIN},{argument}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode != 0
    assert complaint in completed.stderr
