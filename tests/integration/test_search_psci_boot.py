"""PSCI on real kernels: boards whose device tree declares PSCI firmware boot past setup_arch.

The kernel asks the firmware for its PSCI version in setup_arch (psci_dt_init) and, later,
starts secondary CPUs and powers off through it. Our CPU has no EL3 or EL2, so that SMC or HVC
would be undefined: the initial state has QEMU answer it (MachineConfig.psci_conduit). Shown on
three SoC families, each of which died in setup_arch or init_IRQ without it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from explorer.corpus import Corpus
from explorer.firmware.ingest import ingest
from explorer.search.initial import initial_state
from explorer.search.state import Target
from tests.integration.rehosting import boot_state

pytestmark = [pytest.mark.qemu, pytest.mark.corpus]

# armmp decompresses itself and reaches setup_arch at about 2.0e9 instructions; the boards below
# died there (or in init_IRQ, at 2.07e9) without PSCI. This budget reaches time_init.
PAST_SETUP_ARCH_BUDGET = 2_700_000_000


@pytest.mark.parametrize("board", ["rk3229-evb", "highbank", "stm32mp157c-dk2"])
def test_the_initial_state_answers_psci_and_the_kernel_passes_setup_arch(
    qemu_build: Path, corpus: Corpus, board: str
) -> None:
    target = Target(
        kernel=corpus.kernel("armmp"), dtb=corpus.dtb("armmp", board), initrd=corpus.initramfs("armhf")
    )
    firmware = ingest(target.kernel, dtb=target.dtb)
    state = initial_state(firmware, seed=0)
    assert state.psci_conduit == "smc"
    state.instruction_budget = PAST_SETUP_ARCH_BUDGET
    result = boot_state(state, target, firmware, qemu_build)
    reached = [milestone.name for milestone in result.milestones]
    # Without PSCI each died of an undefined instruction (the idle task killed) in setup_arch or
    # init_IRQ; what ends the run now, if anything, comes after time_init.
    assert {"setup_arch", "init_IRQ", "time_init"} <= set(reached), (reached, result.exit.detail)
    assert "idle task" not in result.exit.detail
