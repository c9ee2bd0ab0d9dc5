"""Per-thread call stacks on a real kernel: where kernel_init waits when a run ends idle.

armmp with the BeagleBone Black's device tree on CPU and RAM only, booted with lpj=, runs its
initcalls and then idles with no timer armed (as in test_native_idle.py). The idle task ran
last, so the run's call stack is the idle loop's; kernel_init's own stack says where it is
blocked (in deferred_probe_initcall, waiting for a completion: the deferred probe work it
flushes), and the worker running that work sleeps in a driver's power-on. A run continued from
a snapshot taken in the middle of the initcalls, with dozens of kernel threads alive, gives the
full boot's result byte for byte: every thread's stack crosses the snapshot.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from explorer.corpus import Corpus
from explorer.firmware.ingest import ingest
from explorer.firmware.model import Firmware
from explorer.runner.analysis import analyse
from explorer.runner.build import PLUGIN
from explorer.runner.command import Plugin
from explorer.runner.containment import RunnerLimits
from explorer.runner.kernel_hooks import STANDARD_OBSERVATION
from explorer.runner.launch import run
from explorer.runner.machine_config_pb2 import MachineConfig
from explorer.runner.rehost_pb2 import ExitReason, RunResult
from explorer.runner.result import serialize
from explorer.runner.snapshot import Snapshot
from explorer.search.initial import initial_state
from explorer.search.state import Target, bootable

pytestmark = [pytest.mark.qemu, pytest.mark.corpus]

LIMITS = RunnerLimits(deadline_seconds=240)


@pytest.fixture(scope="module")
def idle_am335x(corpus: Corpus) -> tuple[MachineConfig, Firmware]:
    target = Target(
        kernel=corpus.kernel("armmp"),
        dtb=corpus.dtb("armmp", "am335x-boneblack"),
        initrd=corpus.initramfs("armhf"),
        cmdline="rdinit=/init lpj=100000",
    )
    firmware = ingest(target.kernel, dtb=target.dtb)
    return bootable(initial_state(firmware, seed=0), target, firmware), firmware


@pytest.fixture(scope="module")
def plugin(qemu_build: Path) -> Plugin:
    return Plugin(qemu_build / PLUGIN, STANDARD_OBSERVATION)


@pytest.fixture(scope="module")
def full_boot(idle_am335x: tuple[MachineConfig, Firmware], qemu_build: Path, plugin: Plugin) -> RunResult:
    config, _ = idle_am335x
    result = run(config, qemu_build, plugin=plugin, limits=LIMITS).result
    assert result.exit.reason == ExitReason.EXIT_BUDGET and result.exit.detail.startswith("idle:")
    return result


def test_an_idle_run_names_where_kernel_init_is_blocked_not_the_idle_task(
    idle_am335x: tuple[MachineConfig, Firmware], full_boot: RunResult
) -> None:
    _, firmware = idle_am335x
    analysis = analyse(full_boot, firmware.symbols)
    current = [thread for thread in analysis.threads if thread.current]
    assert len(current) == 1 and current[0].frames == analysis.call_stack
    assert "do_idle" in {frame.function.function for frame in analysis.call_stack}
    wait = analysis.kernel_init
    assert wait is not None and not wait.current
    assert not {frame.function.function for frame in wait.frames} & {"do_idle", "cpu_startup_entry"}
    assert wait.initcall is not None and wait.initcall.function == "deferred_probe_initcall"
    assert wait.waits[0] == "completion"
    # kernel_init flushes the deferred probe work: the worker running it is named too.
    assert any("deferred probe" in worker.waits for worker in analysis.workers)
    # Threads are told apart by their kernel stacks (8 KiB aligned), each named once.
    stacks = [thread.stack for thread in full_boot.threads]
    assert len(stacks) > 20 and len(set(stacks)) == len(stacks)
    assert all(stack % 8192 == 0 for stack in stacks)


def test_the_same_config_gives_the_same_thread_stacks_bit_for_bit(
    idle_am335x: tuple[MachineConfig, Firmware], full_boot: RunResult, qemu_build: Path, plugin: Plugin
) -> None:
    config, _ = idle_am335x
    again = run(config, qemu_build, plugin=plugin, limits=LIMITS).result
    assert serialize(again) == serialize(full_boot)


def test_a_run_continued_from_a_snapshot_among_many_threads_equals_the_full_boot(
    idle_am335x: tuple[MachineConfig, Firmware],
    full_boot: RunResult,
    qemu_build: Path,
    plugin: Plugin,
    tmp_path: Path,
) -> None:
    config, _ = idle_am335x
    # Halfway through the initcalls: kernel_init, kthreadd and the first workers are running.
    point = full_boot.initcalls[len(full_boot.initcalls) // 2].icount
    prefix = run(
        config,
        qemu_build,
        plugin=plugin,
        limits=LIMITS,
        snapshot=Snapshot("saved", point, tmp_path, save=True),
    ).result
    assert prefix.partial and prefix.exit.icount >= point
    continuing = Snapshot("saved", point, tmp_path, save=False)
    resumed = run(config, qemu_build, plugin=plugin, limits=LIMITS, snapshot=continuing).result
    assert serialize(resumed) == serialize(full_boot)
