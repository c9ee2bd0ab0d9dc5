"""`explorer boot` end to end: real QEMU build, real plugin, real kernels, the named result on stdout.

Each test writes a MachineConfig JSON and runs `python -m explorer boot` as a subprocess, as a
person would, then reads what it printed: the run's milestones, initcalls, call stack and hot
loops named with the kernel's recovered symbols.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from explorer.corpus import Corpus
from explorer.firmware.ingest import ingest
from explorer.runner.boards import vexpress_a9
from explorer.runner.config import config_from_dict, write_config
from explorer.runner.kernel_hooks import MILESTONES, watching_kernel
from explorer.runner.machine_config_pb2 import MachineConfig
from tests.integration.rehosting import BOOT_DEADLINE_SECONDS, REPO, empty_am335x_config

pytestmark = [pytest.mark.qemu, pytest.mark.corpus]

# Milestones of a boot with an initramfs that has /init: prepare_namespace does not run.
BOOT_MILESTONES = [name for name in MILESTONES if name != "prepare_namespace"]
# am335x (OMAP) interrupt controller: INTC_SYSSTATUS, whose bit 0 says the soft reset is done.
INTC_SYSSTATUS = 0x48200014


def armmp_on_vexpress(corpus: Corpus) -> MachineConfig:
    return vexpress_a9(
        corpus.kernel("armmp"), corpus.dtb("armmp", "vexpress-v2p-ca9"), corpus.initramfs("armhf")
    )


def explorer_boot(qemu_build: Path, config: MachineConfig, tmp_path: Path, *options: str) -> str:
    path = tmp_path / "machine.json"
    write_config(config, path)
    completed = subprocess.run(
        [sys.executable, "-m", "explorer", "boot", str(path), "--qemu", str(qemu_build), *options],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=BOOT_DEADLINE_SECONDS,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout


def test_armmp_on_the_vexpress_map_reaches_user_space_with_named_milestones(
    qemu_build: Path, corpus: Corpus, tmp_path: Path
) -> None:
    # The config holds no hooks: boot adds the kernel's own from its symbols.
    config = vexpress_a9(
        corpus.kernel("armmp"), corpus.dtb("armmp", "vexpress-v2p-ca9"), corpus.initramfs("armhf")
    )
    printed = json.loads(explorer_boot(qemu_build, config, tmp_path, "--json"))
    assert printed["exit"]["reason"] == "user_space", printed["exit"]
    assert [milestone["name"] for milestone in printed["milestones"]] == BOOT_MILESTONES
    functions = {call["function"] for call in printed["initcalls"]}
    assert len(printed["initcalls"]) > 800 and {"pl011_init", "populate_rootfs"} <= functions
    assert printed["coverage"]["instructions"] > 100_000
    # The guest log comes from printk_sprint, not from the console.
    assert printed["log_source"] == "log" and any(
        "Run /init as init process" in x for x in printed["log_tail"]
    )


def test_a_config_with_its_own_hooks_describes_the_run_alone(
    qemu_build: Path, corpus: Corpus, tmp_path: Path
) -> None:
    kernel = corpus.kernel("armmp")
    config = vexpress_a9(kernel, corpus.dtb("armmp", "vexpress-v2p-ca9"), corpus.initramfs("armhf"))
    printed = explorer_boot(
        qemu_build, watching_kernel(config, ingest(kernel)), tmp_path, "--no-kernel-hooks"
    )
    lines = printed.splitlines()
    assert lines[0].startswith("exit: user_space at insn "), printed
    assert "milestones: " + " -> ".join(BOOT_MILESTONES) in lines
    assert any(line.startswith("  | ") for line in lines), "no console tail"


def test_armmp_on_an_empty_am335x_names_the_interrupt_controller_reset_poll(
    qemu_build: Path, corpus: Corpus, tmp_path: Path
) -> None:
    # Only RAM and a CPU: the kernel waits forever for the interrupt controller's reset.
    # armmp reaches init_IRQ at about 2.08e9 instructions (2e9 of them decompressing), then polls at
    # a few instructions per read: a million polls fit well within the margin.
    config = config_from_dict(empty_am335x_config(corpus, instruction_budget=2_150_000_000))
    printed = json.loads(explorer_boot(qemu_build, config, tmp_path, "--json"))
    assert printed["exit"]["reason"] == "budget", printed["exit"]
    spins = [loop for loop in printed["hot_loops"] if loop["function"] == "omap_irq_soft_reset"]
    assert spins, printed["hot_loops"]
    assert f"0x{INTC_SYSSTATUS:x}" in spins[0]["polled"]
    assert spins[0]["summary"].startswith("spins in omap_irq_soft_reset (")
    assert [frame["function"] for frame in printed["call_stack"][:2]] == [
        "omap_irq_soft_reset",
        "intc_of_init",
    ]
