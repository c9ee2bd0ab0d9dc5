"""The value operators on a real kernel: armmp on an am335x (BeagleBone Black) with only CPU and RAM.

That boot spins in omap_irq_soft_reset polling the interrupt controller's SYSSTATUS, whose bit 0
says the soft reset is done. The bitwise search must find that bit; value collapse must make a
lucky random boot past it reproducible. Each child proposed here is booted by the real runner.

Booting all 34 bitwise children takes about 5 minutes on one core (a spinning child runs its whole
budget, 9 s alone and twice that on shared cores), so this boots two of them: all zero, which
must still spin, and bit 0, which must get past the loop.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from explorer.corpus import Corpus
from explorer.firmware.ingest import ingest
from explorer.firmware.model import Firmware
from explorer.runner.build import PLUGIN
from explorer.runner.command import Plugin
from explorer.runner.containment import RunnerLimits
from explorer.runner.kernel_hooks import STANDARD_OBSERVATION
from explorer.runner.launch import run
from explorer.runner.rehost_pb2 import RunResult
from explorer.search.operators import Child, Context, Evaluated, bitwise, collapse
from explorer.search.score import score
from explorer.search.state import State, Target, bootable, derive
from tests.integration.rehosting import BOOT_DEADLINE_SECONDS

pytestmark = [pytest.mark.qemu, pytest.mark.corpus]

# am335x (OMAP) interrupt controller: INTC_SYSSTATUS, whose bit 0 says the soft reset is done.
INTC_SYSSTATUS = 0x48200014
# init_IRQ comes at about 2.077e9 instructions (2e9 of them decompressing); once the reset poll
# passes, time_init follows at 2.083e9 and calibrate_delay at 2.206e9, where the next spin is.
INSTRUCTION_BUDGET = 2_250_000_000


@pytest.fixture(scope="module")
def am335x(corpus: Corpus) -> tuple[Firmware, Target]:
    target = Target(
        kernel=corpus.kernel("armmp"), dtb=corpus.dtb("armmp", "am335x-boneblack"), cmdline="console=ttyO0"
    )
    return ingest(target.kernel, dtb=target.dtb), target


@pytest.fixture(scope="module")
def only_cpu_and_ram() -> State:
    state = State(target="arm", cpu="cortex-a8", instruction_budget=INSTRUCTION_BUDGET)
    state.ram.add(base=0x80000000, size=0x20000000)
    return state


def boot(state: State, am335x: tuple[Firmware, Target], qemu_build: Path) -> RunResult:
    firmware, target = am335x
    plugin = Plugin(qemu_build / PLUGIN, STANDARD_OBSERVATION)
    limits = RunnerLimits(deadline_seconds=BOOT_DEADLINE_SECONDS)
    return run(bootable(state, target, firmware), qemu_build, plugin=plugin, limits=limits).result


@pytest.fixture(scope="module")
def spinning(only_cpu_and_ram: State, am335x: tuple[Firmware, Target], qemu_build: Path) -> Evaluated:
    return Evaluated("spinning", only_cpu_and_ram, boot(only_cpu_and_ram, am335x, qemu_build))


def context(am335x: tuple[Firmware, Target], *lineage: Evaluated) -> Context:
    firmware, target = am335x
    return Context(firmware, target, lineage)


def spin_of(result: RunResult, am335x: tuple[Firmware, Target]) -> str | None:
    spin = bitwise.final_spin(result, am335x[0].symbols)
    return spin.start.function if spin is not None else None


def test_bitwise_search_finds_the_reset_done_bit_of_the_am335x_interrupt_controller(
    spinning: Evaluated, am335x: tuple[Firmware, Target], qemu_build: Path
) -> None:
    assert spin_of(spinning.result, am335x) == "omap_irq_soft_reset"
    children = bitwise.propose(context(am335x, spinning))
    assert len(children) == 34 and {child.detail["address"] for child in children} == {INTC_SYSSTATUS}

    def booted(kind: str, bits: list[int]) -> tuple[Child, RunResult]:
        (child,) = [c for c in children if c.detail["kind"] == kind and c.detail["bits"] == bits]
        return child, boot(child.state, am335x, qemu_build)

    _, result = booted("zero", [])
    assert spin_of(result, am335x) == "omap_irq_soft_reset"
    assert score(result).milestone_rank == score(spinning.result).milestone_rank
    bit0, result = booted("bit", [0])
    assert score(result) > score(spinning.result)
    assert {"time_init", "calibrate_delay"} <= {milestone.name for milestone in result.milestones}
    assert spin_of(result, am335x) == "calibrate_delay"
    # The winner's next expansion: its value stays, and the spin it reached gets a fresh search.
    next_search = bitwise.propose(context(am335x, Evaluated("bit0", bit0.state, result, bit0), spinning))
    assert next_search and all(c.detail["function"] == "calibrate_delay" for c in next_search)
    assert all(c.state.mmio_rules[0] == bit0.state.mmio_rules[0] for c in next_search)


def test_collapse_makes_a_lucky_random_boot_reproducible(
    spinning: Evaluated, am335x: tuple[Firmware, Target], qemu_build: Path
) -> None:
    random_reads = derive(spinning.state, lambda state: setattr(state, "random_unruled_reads", True))
    lucky = Evaluated("lucky", random_reads, boot(random_reads, am335x, qemu_build))
    # Random values flip the reset-done bit: the boot gets past the poll by luck.
    assert score(lucky.result) > score(spinning.result)
    (child,) = collapse.propose(context(am335x, lucky, spinning))
    assert child.detail["pinned"] > 0
    collapsed = boot(child.state, am335x, qemu_build)
    assert score(collapsed) == score(lucky.result)
    assert [(m.name, m.icount) for m in collapsed.milestones] == [
        (m.name, m.icount) for m in lucky.result.milestones
    ]
    pinned = {rule.address for rule in child.state.mmio_rules}

    def reads(result: RunResult) -> list[tuple[int, int]]:
        accesses = sorted(result.mmio_accesses, key=lambda access: access.order)
        return [(a.address, a.value) for a in accesses if not a.is_write and a.address in pinned]

    assert reads(collapsed) == reads(lucky.result)
