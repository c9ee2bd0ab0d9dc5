"""Malta's console through the i8259 pair the isa operator places: real kernel, real QEMU.

The malta kernel's console is the ISA UART on IRQ 4, which reaches the CPU through the PC's
cascaded i8259 pair; the kernel learns the pending interrupt from the GT64120's interrupt
acknowledge register. Three runs of the board the search knows (the hand-written malta config of
test_native_mips without its "which IRQ?" rule, as search states: random unruled reads, the
stuck-read limit, runs past user space):
  * the ISA bus without the pair: user space, and not the console (its writes wait for the
    UART's interrupt);
  * with the pair on CPU line 2 and no acknowledge: the console's first interrupt is never
    acknowledged, and the run stops before user space. The isa operator, given the two runs,
    proposes the GT64120's acknowledge register among its candidates;
  * that child: the marker on the console.
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
from explorer.runner.config import config_from_dict
from explorer.runner.containment import RunnerLimits
from explorer.runner.kernel_hooks import STANDARD_OBSERVATION
from explorer.runner.launch import run
from explorer.runner.rehost_pb2 import RunResult
from explorer.search.operators import Context, Evaluated, isa
from explorer.search.state import State, Target, bootable, derive, state_id
from tests.integration.rehosting import BOOT_DEADLINE_SECONDS
from tests.integration.test_native_mips import GT64120, malta_config

pytestmark = [pytest.mark.corpus, pytest.mark.qemu]

ACKNOWLEDGE = GT64120 + 0xC34


@pytest.fixture(scope="module")
def malta(corpus: Corpus) -> tuple[Firmware, Target]:
    kernel = corpus.kernel("4kc-malta")
    cmdline = "console=ttyS0,38400 nokaslr rdinit=/init"
    return ingest(kernel), Target(
        kernel, initrd=corpus.initramfs("mipsel"), cmdline=cmdline, prints_marker=True
    )


@pytest.fixture(scope="module")
def bus_state(corpus: Corpus) -> State:
    """The ISA bus with the clock and the UART, nothing answering "which IRQ?", no pair."""
    raw = malta_config(corpus)
    raw["mmio_rules"] = [rule for rule in raw["mmio_rules"] if rule["address"] != hex(ACKNOWLEDGE)]
    raw["isa"] = {"io_base": raw["isa"]["io_base"]}
    raw["boot"] = {"env": raw["boot"]["env"]}
    state = config_from_dict({**raw, "target": "mipsel"})
    state.random_unruled_reads = True
    state.instruction_budget = 6_000_000_000
    return state


def boot(state: State, malta: tuple[Firmware, Target], qemu_build: Path) -> RunResult:
    firmware, target = malta
    plugin = Plugin(qemu_build / PLUGIN, STANDARD_OBSERVATION)
    limits = RunnerLimits(deadline_seconds=BOOT_DEADLINE_SECONDS)
    return run(bootable(state, target, firmware), qemu_build, plugin=plugin, limits=limits).result


def test_the_isa_operator_finds_the_acknowledge_and_the_marker_comes_out_of_the_console(
    qemu_build: Path, malta: tuple[Firmware, Target], bus_state: State
) -> None:
    bus_run = boot(bus_state, malta, qemu_build)
    assert reached_user_space(bus_run) and not reached_console(bus_run)

    pair_state = derive(bus_state, lambda state: setattr(state.isa.i8259, "cpu_line", 2))
    pair_run = boot(pair_state, malta, qemu_build)
    assert not reached_user_space(pair_run), pair_run.exit.detail

    firmware, target = malta
    lineage = (
        Evaluated(state_id(pair_state), pair_state, pair_run),
        Evaluated(state_id(bus_state), bus_state, bus_run),
    )
    children = isa.propose(Context(firmware, target, lineage))
    acknowledges = [child.state.isa.i8259.acknowledge for child in children]
    assert ACKNOWLEDGE in acknowledges, [hex(address) for address in acknowledges]

    child = children[acknowledges.index(ACKNOWLEDGE)]
    console_run = boot(child.state, malta, qemu_build)
    assert reached_console(console_run), console_text(console_run)[-2000:]
