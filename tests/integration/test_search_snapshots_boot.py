"""Where a child may share its parent's boot, on a real kernel: the point precedes what differs.

armmp on an am335x (BeagleBone Black) with only CPU and RAM spins at about 2.08e9 instructions
polling the interrupt controller's SYSSTATUS (tests/integration/test_search_values.py); its
bitwise children change only that register. The point divergence_point gives them (from QEMU's
icount on the parent's MmioAccess events) must be late in the boot, and the parent saved there
(explorer.runner.launch.run's snapshot.point) must not have read the register yet: the saving run's
MMIO accesses are the parent's up to the point, without the poll. The cache then keeps the real
snapshot under its key.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from explorer.corpus import Corpus
from explorer.firmware.ingest import ingest
from explorer.runner.build import PLUGIN
from explorer.runner.command import Plugin
from explorer.runner.containment import RunnerLimits
from explorer.runner.kernel_hooks import STANDARD_OBSERVATION
from explorer.runner.launch import run
from explorer.runner.rehost_pb2 import ExitReason
from explorer.runner.snapshot import Snapshot
from explorer.search.boot_sharing import divergence_point, sharing_plan, snapshot_cache
from explorer.search.operators import Context, Evaluated, bitwise
from explorer.search.state import State, Target, bootable, state_id
from tests.integration.rehosting import BOOT_DEADLINE_SECONDS

pytestmark = [pytest.mark.qemu, pytest.mark.corpus]

INSTRUCTION_BUDGET = 2_250_000_000
# am335x INTC_SYSSTATUS, the register the boot polls.
INTC_SYSSTATUS = 0x48200014
SAVE_DEADLINE_SECONDS = 45


def test_the_parent_saved_at_its_childrens_point_has_not_yet_read_what_they_change(
    tmp_path: Path, corpus: Corpus, qemu_build: Path
) -> None:
    target = Target(
        kernel=corpus.kernel("armmp"), dtb=corpus.dtb("armmp", "am335x-boneblack"), cmdline="console=ttyO0"
    )
    firmware = ingest(target.kernel, dtb=target.dtb)
    parent = State(target="arm", cpu="cortex-a8", instruction_budget=INSTRUCTION_BUDGET)
    parent.ram.add(base=0x80000000, size=0x20000000)
    plugin = Plugin(qemu_build / PLUGIN, STANDARD_OBSERVATION)
    limits = RunnerLimits(deadline_seconds=BOOT_DEADLINE_SECONDS)
    config = bootable(parent, target, firmware)
    full = run(config, qemu_build, plugin=plugin, limits=limits).result
    assert full.exit.reason == ExitReason.EXIT_BUDGET and not full.partial
    polls = [access.icount for access in full.mmio_accesses if access.address == INTC_SYSSTATUS]
    init_irq = next(milestone.icount for milestone in full.milestones if milestone.name == "init_IRQ")
    # QEMU's count at the access, beside the plugin's at a milestone the boot passed just before it.
    assert init_irq < min(polls) < init_irq + 10_000_000
    assert [access.icount for access in full.mmio_accesses] == sorted(
        access.icount for access in full.mmio_accesses
    )

    children = bitwise.propose(Context(firmware, target, (Evaluated("parent", parent, full),)))
    points = {state_id(child.state): divergence_point(parent, full, child.state) for child in children}
    ((point, sharing),) = sharing_plan(points).items()
    assert len(sharing) == len(children) > 30
    assert init_irq < point < min(polls)  # past the decompressor and most of the boot

    cache = snapshot_cache(tmp_path, qemu_build)
    staging = cache.staging(state_id(parent), point)
    # The boot to the point and the save take seconds.
    save_limits = RunnerLimits(deadline_seconds=SAVE_DEADLINE_SECONDS)
    saved = run(
        config,
        qemu_build,
        plugin=plugin,
        limits=save_limits,
        snapshot=Snapshot(state_id(parent), point, staging, save=True),
    )
    saved = saved.result
    assert point <= saved.exit.icount < min(polls)
    assert INTC_SYSSTATUS not in {access.address for access in saved.mmio_accesses}
    assert list(saved.mmio_accesses) == list(full.mmio_accesses[: len(saved.mmio_accesses)])
    kept = cache.keep(staging, state_id(parent), point)
    assert kept is not None and snapshot_cache(tmp_path, qemu_build).get(state_id(parent), point) == kept
