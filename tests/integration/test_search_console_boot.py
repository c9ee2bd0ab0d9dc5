"""The console milestone on real kernels: the search places the UART the kernel's console is on, a run
goes on past user space, and the marker initramfs's line comes out of QEMU's first serial port.

armmp with the vexpress-v2p-ca9 device tree names no console (empty /chosen): the initial state
places serial0's PL011 with console=ttyAMA0; one round of device discovery gives the interrupt
controller and timer, and the next run prints the marker, and its shell waits for console input.
The same state twice gives byte-identical runs: a run past user space ends where user space first
reads the console (the console_input hook), never when the host happens to read the console.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from explorer.corpus import Corpus
from explorer.corpus.initramfs import USERSPACE_MARKER
from explorer.firmware.ingest import ingest
from explorer.firmware.model import Firmware
from explorer.runner.analysis import USER_SPACE_MILESTONE, reached_console
from explorer.runner.kernel_hooks import CONSOLE_INPUT
from explorer.runner.rehost_pb2 import ExitReason
from explorer.runner.result import serialize
from explorer.search.initial import initial_state
from explorer.search.operators import Context, Evaluated
from explorer.search.operators.devices import propose
from explorer.search.score import boot_completed, score
from explorer.search.state import State, Target, state_id
from tests.integration.rehosting import boot_state

pytestmark = [pytest.mark.qemu, pytest.mark.corpus]

# The bare state stops in time_init (no tick); the budget is cut to armmp's 3.53e9 instructions to
# user space with room for /init (the search's own is 6e9).
TEST_BUDGET = 4_500_000_000


@pytest.fixture(scope="module")
def vexpress(qemu_build: Path, corpus: Corpus) -> tuple[Target, Firmware, State]:
    """The marker target on vexpress and the child device discovery proposes after its bare boot."""
    target = Target(
        kernel=corpus.kernel("armmp"),
        dtb=corpus.dtb("armmp", "vexpress-v2p-ca9"),
        initrd=corpus.initramfs("armhf"),
        cmdline="rdinit=/init",
        prints_marker=True,
    )
    firmware = ingest(target.kernel, dtb=target.dtb)
    state = initial_state(firmware, seed=1, cmdline=target.cmdline)
    assert [device.type for device in state.devices] == ["pl011"]
    assert state.boot.cmdline == "console=ttyAMA0"
    state.instruction_budget = TEST_BUDGET
    bare = boot_state(state, target, firmware, qemu_build)
    assert not score(bare).user_space
    (child, *_) = propose(Context(firmware, target, (Evaluated(state_id(state), state, bare),)))
    return target, firmware, child.state


def test_armmp_on_vexpress_prints_the_marker_on_the_console_the_search_placed(
    qemu_build: Path, vexpress: tuple[Target, Firmware, State]
) -> None:
    target, firmware, state = vexpress
    # The controller wires the console's interrupt the initial state left unwired.
    assert state.devices[0].type == "pl011" and list(state.devices[0].irqs)
    first, second = (boot_state(state, target, firmware, qemu_build) for _ in range(2))
    assert reached_console(first) and boot_completed(first, console_goal=True)
    assert USER_SPACE_MILESTONE in [milestone.name for milestone in first.milestones]
    # The run ended where the shell started after the marker first read the console.
    assert first.exit.reason == ExitReason.EXIT_HALT and first.exit.detail == CONSOLE_INPUT
    assert not first.partial
    # The kernel's own console lines come before user space's.
    console = first.console.decode()
    assert console.index("printk: console [ttyAMA0] enabled") < console.index(USERSPACE_MARKER)
    assert serialize(first) == serialize(second)


def test_a_run_not_past_user_space_ends_there_before_the_marker(
    qemu_build: Path, vexpress: tuple[Target, Firmware, State]
) -> None:
    # The same machine for a target whose initrd is not known to print the marker: the run ends at
    # the first user instruction, as before the console milestone; the goal is user space.
    target, firmware, state = vexpress
    result = boot_state(state, dataclasses.replace(target, prints_marker=False), firmware, qemu_build)
    assert score(result).user_space and not reached_console(result)
    assert boot_completed(result) and b"Run /init as init process" in result.console
