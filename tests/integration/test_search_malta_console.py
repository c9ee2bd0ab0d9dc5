"""Malta's console through the i8259 pair the isa operator places: real kernel, real QEMU.

The malta kernel's console is the ISA UART on IRQ 4, which reaches the CPU through the PC's
cascaded i8259 pair; the kernel learns the pending interrupt from its system controller's
interrupt acknowledge (for the Bonito the board revision the search pinned selects: a read of
its PCI configuration window). The last three generations of a recorded search (`explorer search`
on the malta kernel and the marker initramfs, seed 0: BENCHMARKS.md, "The console milestone"),
state by state, each run as the search runs it:
  * the search's state at time_init (the revision pinned): its run programs the i8259 pair and
    touches the clock's ports through the I/O window, and the isa operator proposes the bus with
    the clock, the UART and the pair on CPU line 2;
  * that child stops before user space (the console's first interrupt is never acknowledged),
    and the isa operator proposes acknowledge registers, the Bonito's among them;
  * that child prints the marker on the console.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from explorer.corpus import Corpus
from explorer.firmware.ingest import ingest
from explorer.firmware.model import Firmware
from explorer.runner.analysis import console_text, reached_console, reached_user_space
from explorer.runner.build import PLUGIN
from explorer.runner.command import Plugin
from explorer.runner.containment import RunnerLimits
from explorer.runner.kernel_hooks import STANDARD_OBSERVATION
from explorer.runner.launch import run
from explorer.runner.rehost_pb2 import RunResult
from explorer.search.initial import initial_state
from explorer.search.operators import Context, Evaluated, isa
from explorer.search.state import State, Target, bootable, derive, state_id
from tests.integration.rehosting import BOOT_DEADLINE_SECONDS

pytestmark = [pytest.mark.corpus, pytest.mark.qemu]

# The board revision the search's bitwise operator pinned (a Bonito system controller), and the
# state it made (the recorded search's generation 1).
REVISION, REVISION_VALUE = 0x1FC00010, 0x800
RECORDED_STATE = "331e4cfdb7"
# The Bonito's PCI configuration window, whose first word the kernel reads as the acknowledge.
BONITO_ACKNOWLEDGE = 0x1FE80000


@pytest.fixture(scope="module")
def malta(corpus: Corpus) -> tuple[Firmware, Target]:
    kernel = corpus.kernel("4kc-malta")
    return ingest(kernel), Target(kernel, initrd=corpus.initramfs("mipsel"), prints_marker=True)


def evaluated(state: State, malta: tuple[Firmware, Target], qemu_build: Path) -> Evaluated:
    firmware, target = malta
    plugin = Plugin(qemu_build / PLUGIN, STANDARD_OBSERVATION)
    limits = RunnerLimits(deadline_seconds=BOOT_DEADLINE_SECONDS)
    result: RunResult = run(
        bootable(state, target, firmware), qemu_build, plugin=plugin, limits=limits
    ).result
    return Evaluated(state_id(state), state, result)


def test_the_isa_operator_places_the_pair_then_its_acknowledge_and_the_marker_comes_out(
    qemu_build: Path, malta: tuple[Firmware, Target]
) -> None:
    firmware, target = malta
    pinned = derive(
        initial_state(firmware, seed=0),
        lambda state: state.mmio_rules.add(address=REVISION, constant=REVISION_VALUE),
    )
    assert state_id(pinned).startswith(RECORDED_STATE)
    before_bus = evaluated(pinned, malta, qemu_build)

    (with_bus,) = isa.propose(Context(firmware, target, (before_bus,)))
    assert with_bus.state.isa.i8259.cpu_line == 2 and not with_bus.state.isa.i8259.acknowledge
    assert [device.type for device in with_bus.state.isa_devices] == ["mc146818rtc", "isa-serial"]
    unanswered = evaluated(with_bus.state, malta, qemu_build)
    assert not reached_user_space(unanswered.result), unanswered.result.exit.detail

    children = isa.propose(Context(firmware, target, (unanswered, before_bus)))
    acknowledges = [child.state.isa.i8259.acknowledge for child in children]
    assert BONITO_ACKNOWLEDGE in acknowledges, [hex(address) for address in acknowledges]
    answered = evaluated(children[acknowledges.index(BONITO_ACKNOWLEDGE)].state, malta, qemu_build)
    assert reached_console(answered.result), console_text(answered.result)[-2000:]
