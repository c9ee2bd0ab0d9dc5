"""Device discovery on real kernels: from the bare initial state, each round boots further.

The loop here is the test's, not the engine's: boot a state, let device discovery propose from
what the run touched, boot its first child. armmp with the vexpress-v2p-ca9 device tree (which
describes every device the kernel needs, each with a QEMU model) must reach user space this way.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from explorer.corpus import Corpus
from explorer.firmware.ingest import ingest
from explorer.search.initial import initial_state
from explorer.search.operators import Context, Evaluated
from explorer.search.operators.devices import propose
from explorer.search.score import Score, score
from explorer.search.state import Target, state_id
from tests.integration.rehosting import boot_state

pytestmark = [pytest.mark.qemu, pytest.mark.corpus]

# Measured: the initial state stops in time_init (no tick: the local timer calibration waits
# for jiffies) and one round of discovery reaches user space; two spare rounds.
MAX_ROUNDS = 3
# The bare state's boot ends on its budget; the test's budget is the search's cut down to what
# armmp needs to reach user space here (3.53e9 instructions), so the stuck first boot is shorter.
TEST_BUDGET = 4_500_000_000
SETUP_ARCH_BUDGET = 2_500_000_000


@pytest.mark.parametrize(
    ("flavour", "board", "cpu"),
    [
        ("armmp", "am335x-boneblack", "cortex-a8"),
        ("armmp", "sun7i-a20-cubieboard2", "cortex-a7"),
        ("armmp", "rk3288-tinker", "cortex-a15"),
        ("4kc-malta", None, "24Kf"),
    ],
)
def test_the_initial_state_runs_each_corpus_kernel_into_setup_arch(
    qemu_build: Path, corpus: Corpus, flavour: str, board: str | None, cpu: str
) -> None:
    # Proves the CPU and RAM chosen from the kernel (and DT) alone are right: the kernel's own
    # code runs. The budget is cut to what reaching setup_arch takes (armmp: 1.99e9).
    target = Target(
        kernel=corpus.kernel(flavour),
        dtb=corpus.dtb(flavour, board) if board else None,
        initrd=corpus.initramfs(corpus.arch_of(flavour)),
        cmdline="nokaslr" if flavour == "4kc-malta" else "",
    )
    firmware = ingest(target.kernel, dtb=target.dtb)
    state = initial_state(firmware, seed=1)
    # Nothing but the console's UART (none on MIPS, whose console is on the ISA bus).
    assert state.cpu == cpu and not state.HasField("interrupt_controller")
    assert [device.type for device in state.devices] == (["serial-mm"] if board else [])
    state.instruction_budget = SETUP_ARCH_BUDGET
    reached = {milestone.name for milestone in boot_state(state, target, firmware, qemu_build).milestones}
    assert {"start_kernel", "setup_arch"} <= reached


def test_armmp_on_vexpress_reaches_user_space_from_nothing_with_device_discovery_alone(
    qemu_build: Path, corpus: Corpus
) -> None:
    target = Target(
        kernel=corpus.kernel("armmp"),
        dtb=corpus.dtb("armmp", "vexpress-v2p-ca9"),
        initrd=corpus.initramfs("armhf"),
        cmdline="console=ttyAMA0 rdinit=/init",
    )
    firmware = ingest(target.kernel, dtb=target.dtb)
    state = initial_state(firmware, seed=1)
    state.instruction_budget = TEST_BUDGET
    lineage: tuple[Evaluated, ...] = ()
    scores: list[Score] = []
    mapped: list[str] = []
    made_by = None
    for _ in range(MAX_ROUNDS):
        result = boot_state(state, target, firmware, qemu_build)
        scores.append(score(result))
        if scores[-1].user_space:
            break
        lineage = (Evaluated(state_id(state), state, result, made_by), *lineage)
        children = propose(Context(firmware, target, lineage))
        assert children, f"nothing proposed after {scores[-1].describe()}"
        made_by = children[0]
        state = made_by.state
        mapped += [device["type"] for device in made_by.detail["devices"]]
    assert scores[-1].user_space, [s.describe() for s in scores]
    assert scores == sorted(scores) and scores[0] < scores[-1]
    # The interrupt controller and a timer, from the device tree alone.
    assert {"a9mpcore_priv", "sp804"} <= set(mapped)
    assert state.interrupt_controller.type == "a9mpcore_priv"


def test_a_gic_400_board_gets_an_a15mpcore_block_and_boots_further(qemu_build: Path, corpus: Corpus) -> None:
    # rk3288-tinker: the bare state panics in kernel_init; with the GIC-400 as a15mpcore_priv
    # (which also wires the CPU's arch timer) and the UARTs, the same kernel reaches user space.
    target = Target(
        kernel=corpus.kernel("armmp"),
        dtb=corpus.dtb("armmp", "rk3288-tinker"),
        initrd=corpus.initramfs("armhf"),
    )
    firmware = ingest(target.kernel, dtb=target.dtb)
    state = initial_state(firmware, seed=1)
    result = boot_state(state, target, firmware, qemu_build)
    children = propose(Context(firmware, target, (Evaluated(state_id(state), state, result),)))
    assert children and children[0].state.interrupt_controller.type == "a15mpcore_priv"
    assert score(boot_state(children[0].state, target, firmware, qemu_build)) > score(result)
