"""Runner snapshots, the acceptance of issue 6 item 1: a run continued from a snapshot gives the
RunResult of an uninterrupted run, byte for byte, with every observation on (hooks, initcalls,
call stack, coverage, hot loops, guest log, MMIO accesses with random unruled reads).

armmp on the vexpress-a9 map reaches user space (at about 3.5e9 instructions); it is saved after
start_kernel before the catch-all is first read, and again past that first read. A guest with
the machine's tick (armmp on the am335x map, waiting for its root device) continues from a
snapshot alike, in kernel_init's initcalls and in the idle between ticks that follows; and one
whose guest timer is due where the VM stops.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from google.protobuf import text_format

from explorer.corpus import Corpus
from explorer.errors import RunnerError
from explorer.firmware.ingest import ingest
from explorer.runner.boards import vexpress_a9
from explorer.runner.build import PLUGIN
from explorer.runner.command import Plugin
from explorer.runner.containment import RunnerLimits
from explorer.runner.kernel_hooks import STANDARD_OBSERVATION, watching_kernel
from explorer.runner.launch import run
from explorer.runner.machine_config_pb2 import MachineConfig
from explorer.runner.rehost_pb2 import ExitReason, RunResult
from explorer.runner.result import serialize
from explorer.runner.snapshot import MANIFEST_FILE, Snapshot
from explorer.search.boot_sharing import divergence_point
from explorer.search.state import State, Target, bootable
from tests.integration.rehosting import BOOT_DEADLINE_SECONDS, ticking_idle_am335x

pytestmark = [pytest.mark.qemu, pytest.mark.corpus]

LIMITS = RunnerLimits(deadline_seconds=BOOT_DEADLINE_SECONDS)


@pytest.fixture(scope="module")
def parent(corpus: Corpus) -> MachineConfig:
    kernel = corpus.kernel("armmp")
    config = vexpress_a9(kernel, corpus.dtb("armmp", "vexpress-v2p-ca9"), corpus.initramfs("armhf"))
    config = watching_kernel(config, ingest(kernel))
    config.seed = 20261126
    config.random_unruled_reads = True
    config.mmio_event_limit = 4096
    return config


@pytest.fixture(scope="module")
def plugin(qemu_build: Path) -> Plugin:
    return Plugin(qemu_build / PLUGIN, STANDARD_OBSERVATION)


@pytest.fixture(scope="module")
def parent_full(parent: MachineConfig, qemu_build: Path, plugin: Plugin) -> RunResult:
    result = run(parent, qemu_build, plugin=plugin, limits=LIMITS).result
    assert result.exit.reason == ExitReason.EXIT_USER_SPACE and not result.partial
    return result


@dataclass(frozen=True)
class Points:
    """Where the parent's boot is saved, from its full boot (whatever the kernel build's counts)."""

    early: int  # after start_kernel, before the guest first touches the catch-all
    late: int  # halfway from that first touch to user space, with catch-all reads before and after


@pytest.fixture(scope="module")
def points(parent_full: RunResult) -> Points:
    (start_kernel,) = [m.icount for m in parent_full.milestones if m.name == "start_kernel"]
    first_access = parent_full.mmio_accesses[0].icount
    return Points((start_kernel + first_access) // 2, (first_access + parent_full.exit.icount) // 2)


@pytest.fixture(scope="module")
def early_snapshot(
    parent: MachineConfig,
    qemu_build: Path,
    plugin: Plugin,
    points: Points,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, RunResult]:
    directory = tmp_path_factory.mktemp("early")
    prefix = run(
        parent,
        qemu_build,
        plugin=plugin,
        limits=LIMITS,
        snapshot=Snapshot("saved", points.early, directory, save=True),
    ).result
    return directory, prefix


def test_a_run_resumed_from_a_snapshot_serializes_like_the_full_boot(
    parent: MachineConfig,
    qemu_build: Path,
    plugin: Plugin,
    parent_full: RunResult,
    points: Points,
    tmp_path: Path,
) -> None:
    prefix = run(
        parent,
        qemu_build,
        plugin=plugin,
        limits=LIMITS,
        snapshot=Snapshot("saved", points.late, tmp_path, save=True),
    ).result
    assert prefix.partial and points.late <= prefix.exit.icount < points.late + 10_000
    assert 0 < len(prefix.mmio_accesses) < len(parent_full.mmio_accesses)
    resumed = run(
        parent,
        qemu_build,
        plugin=plugin,
        limits=LIMITS,
        snapshot=Snapshot("saved", points.late, tmp_path, save=False),
    )
    assert serialize(resumed.result) == serialize(parent_full)


def test_a_child_differing_after_the_point_resumed_from_the_parents_snapshot_equals_its_full_boot(
    parent: MachineConfig,
    qemu_build: Path,
    plugin: Plugin,
    parent_full: RunResult,
    early_snapshot: tuple[Path, RunResult],
    points: Points,
) -> None:
    directory, prefix = early_snapshot
    touched_before = {access.address for access in prefix.mmio_accesses}
    first_late_read = next(
        access
        for access in parent_full.mmio_accesses
        if not access.is_write and access.address not in touched_before
    )
    child = MachineConfig()
    child.CopyFrom(parent)
    rule = child.mmio_rules.add()
    rule.address = first_late_read.address
    rule.constant = first_late_read.value ^ 1
    child_full = run(child, qemu_build, plugin=plugin, limits=LIMITS).result
    assert serialize(child_full) != serialize(parent_full)  # the rule matters
    continuing = Snapshot("saved", points.early, directory, save=False)
    resumed = run(child, qemu_build, plugin=plugin, limits=LIMITS, snapshot=continuing).result
    assert serialize(resumed) == serialize(child_full)


def test_a_reseeded_child_resumed_from_a_save_before_any_seeded_read_equals_its_full_boot(
    parent: MachineConfig,
    qemu_build: Path,
    plugin: Plugin,
    parent_full: RunResult,
    early_snapshot: tuple[Path, RunResult],
    points: Points,
) -> None:
    # The seed only draws the catch-all's answers (explorer.search.boot_sharing): a save taken
    # before the guest first reads it serves a child with another seed, which the restored
    # machine takes from the child's config, not from the save.
    directory, prefix = early_snapshot
    assert not prefix.mmio_accesses
    child = MachineConfig()
    child.CopyFrom(parent)
    child.seed = parent.seed + 1
    child_full = run(child, qemu_build, plugin=plugin, limits=LIMITS).result
    assert serialize(child_full) != serialize(parent_full)  # the seed matters
    continuing = Snapshot("saved", points.early, directory, save=False)
    resumed = run(child, qemu_build, plugin=plugin, limits=LIMITS, snapshot=continuing).result
    assert serialize(resumed) == serialize(child_full)


def test_a_snapshot_of_another_build_or_point_or_with_a_garbage_manifest_is_refused_in_one_line(
    parent: MachineConfig,
    qemu_build: Path,
    plugin: Plugin,
    early_snapshot: tuple[Path, RunResult],
    points: Points,
    tmp_path: Path,
) -> None:
    directory, _ = early_snapshot
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    for name, body, why in (
        (
            "other-build",
            json.dumps({**manifest, "build": "0123456789abcdef"}),
            "is of build 0123456789abcdef",
        ),
        ("garbage", "not a manifest", "is not a snapshot manifest"),
    ):
        copy = tmp_path / name
        copy.mkdir()
        for part in directory.iterdir():
            if part.name != MANIFEST_FILE:
                (copy / part.name).symlink_to(part)
        (copy / MANIFEST_FILE).write_text(body)
        with pytest.raises(RunnerError, match=why) as refused:
            continuing = Snapshot("saved", points.early, copy, save=False)
            run(parent, qemu_build, plugin=plugin, limits=LIMITS, snapshot=continuing)
        assert "\n" not in str(refused.value)
    with pytest.raises(RunnerError, match=f"at instruction {points.early}, not {points.late}"):
        run(
            parent,
            qemu_build,
            plugin=plugin,
            limits=LIMITS,
            snapshot=Snapshot("saved", points.late, directory, save=False),
        )


@pytest.fixture(scope="module")
def ticking(corpus: Corpus) -> MachineConfig:
    return bootable(*ticking_idle_am335x(corpus))


@pytest.fixture(scope="module")
def ticking_full(ticking: MachineConfig, qemu_build: Path, plugin: Plugin) -> RunResult:
    result = run(ticking, qemu_build, plugin=plugin, limits=LIMITS).result
    assert result.exit.detail.startswith("idle: the guest's clock reached"), result.exit
    return result


@pytest.mark.parametrize("phase", ["initcalls", "idle"])
def test_a_ticking_guest_continued_from_a_snapshot_equals_its_full_boot(
    phase: str,
    ticking: MachineConfig,
    ticking_full: RunResult,
    qemu_build: Path,
    plugin: Plugin,
    tmp_path: Path,
) -> None:
    # The machine's tick travels in the migration stream (deadline, raised flag, timer expiry);
    # what makes the search share ticking parents' boots (explorer.search.boot_sharing). At a point
    # in kernel_init's initcalls, with ticks between them, and one in the idle that follows, where
    # the guest only runs when a tick wakes it.
    reached = {milestone.name: milestone.icount for milestone in ticking_full.milestones}
    if phase == "initcalls":
        point = (reached["kernel_init"] + reached["prepare_namespace"]) // 2
    else:
        point = ticking_full.mmio_accesses[-1].icount + 1_000_000
        assert reached["prepare_namespace"] < point  # the idle end carries no count: the save says
    prefix = run(
        ticking,
        qemu_build,
        plugin=plugin,
        limits=LIMITS,
        snapshot=Snapshot("saved", point, tmp_path, save=True),
    ).result
    assert prefix.partial and point <= prefix.exit.icount < point + 10_000, prefix.exit
    resumed = run(
        ticking,
        qemu_build,
        plugin=plugin,
        limits=LIMITS,
        snapshot=Snapshot("saved", point, tmp_path, save=False),
    )
    assert serialize(resumed.result) == serialize(ticking_full)


# A parent and a child of a real cubieboard2 search (the child pins the values an RTC poll read):
# the VM stops for the parent's save where the guest's timer is due (CPU + GIC-400 + arch timer).
CUBIEBOARD2_STATES = Path(__file__).with_name("data")


def test_a_timer_due_where_the_vm_stops_fires_alike_in_the_continuation(
    corpus: Corpus, qemu_build: Path, plugin: Plugin, tmp_path: Path
) -> None:
    # The timer once fired in the saving run, between the plugin's stop request and the VM's
    # stop, and the continuation differed from the full boot 46 M instructions later.
    target = Target(
        kernel=corpus.kernel("armmp"),
        dtb=corpus.dtb("armmp", "sun7i-a20-cubieboard2"),
        initrd=corpus.initramfs("armhf"),
        cmdline="rdinit=/init",
    )
    firmware = ingest(target.kernel, dtb=target.dtb)
    parent_state, child_state = (
        text_format.Parse(
            (CUBIEBOARD2_STATES / f"cubieboard2-timer-at-stop.{name}.state.txt").read_text(), State()
        )
        for name in ("parent", "child")
    )
    parent, child = (bootable(state, target, firmware) for state in (parent_state, child_state))
    parent_full = run(parent, qemu_build, plugin=plugin, limits=LIMITS).result
    point = divergence_point(parent_state, parent_full, child_state)
    assert point is not None
    child_full = run(child, qemu_build, plugin=plugin, limits=LIMITS).result
    # Whether the timer got in first was a race with QEMU's main loop: the build before the fix
    # lost it in 4 of 5 saves one hour and in none of 9 the next, then in 3 of 4. Five saves, each
    # continued, to give it room.
    for attempt in range(5):
        directory = tmp_path / str(attempt)
        run(
            parent,
            qemu_build,
            plugin=plugin,
            limits=LIMITS,
            snapshot=Snapshot("saved", point, directory, save=True),
        )
        resumed = run(
            child,
            qemu_build,
            plugin=plugin,
            limits=LIMITS,
            snapshot=Snapshot("saved", point, directory, save=False),
        )
        assert serialize(resumed.result) == serialize(child_full), f"save {attempt}"
