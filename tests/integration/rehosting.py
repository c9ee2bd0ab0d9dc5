"""Shared by the tests that run our QEMU build: building it, machine configs, running it with the plugin.

A plain module, not a test file: the `qemu_build` fixture that uses `build_native` is in conftest.py.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from explorer.corpus import Corpus
from explorer.firmware.ingest import ingest
from explorer.firmware.model import Firmware
from explorer.runner.boards import vexpress_a9
from explorer.runner.build import PLUGIN, binary
from explorer.runner.command import Plugin, config_plugin_arguments
from explorer.runner.config import to_json
from explorer.runner.containment import RunnerLimits
from explorer.runner.kernel_hooks import MILESTONES as MILESTONES  # re-exported for the plugin tests
from explorer.runner.kernel_hooks import STANDARD_OBSERVATION, watching_kernel
from explorer.runner.launch import run
from explorer.runner.machine_config_pb2 import MachineConfig, MmioRule
from explorer.runner.rehost_pb2 import RunResult
from explorer.search.initial import initial_state
from explorer.search.state import State, Target, bootable

REPO = Path(__file__).resolve().parents[2]
BOOT_DEADLINE_SECONDS = 120  # a hang guard, not a performance claim: user space takes about 5 s


def build_native() -> Path:
    completed = subprocess.run(
        [sys.executable, str(REPO / "native" / "build.py")], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return Path(completed.stdout.strip().splitlines()[-1])


def vexpress_a9_config(corpus: Corpus) -> dict:
    """The vexpress-a9 memory map booting armmp with the marker initramfs, as the machine's JSON."""
    config = vexpress_a9(
        corpus.kernel("armmp"), corpus.dtb("armmp", "vexpress-v2p-ca9"), corpus.initramfs("armhf")
    )
    return json.loads(to_json(config))


def empty_am335x_config(corpus: Corpus, **settings: object) -> dict:
    """armmp on an am335x-boneblack memory map with only a CPU and RAM, as the machine's JSON: the
    kernel decompresses (2e9 instructions), then polls the interrupt controller's reset forever."""
    return {
        "target": "arm",
        "cpu": "cortex-a8",
        "ram": [{"base": "0x80000000", "size": "0x20000000"}],
        "boot": {
            "kernel": str(corpus.kernel("armmp")),
            "dtb": str(corpus.dtb("armmp", "am335x-boneblack")),
            "cmdline": "console=ttyO0",
        },
        "mmio_event_limit": 4096,
        **settings,
    }


def run_until(command: list[str], marker: str) -> tuple[bool, str]:
    """Run QEMU until `marker` appears on its console or it exits; never longer than the deadline."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    assert process.stdout is not None
    output = bytearray()
    deadline = time.monotonic() + BOOT_DEADLINE_SECONDS
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while marker.encode() not in output and time.monotonic() < deadline:
                if selector.select(timeout=1.0):
                    chunk = process.stdout.read1(65536)
                    if not chunk:
                        break
                    output += chunk
    finally:
        process.kill()
        process.wait()
    text = output.decode(errors="replace")
    return marker in text, text


def rehosting_command(qemu_build: Path, config: Path, target: str = "arm") -> list[str]:
    """QEMU's command line for the rehosting machine of `target` ("arm", "mipsel", "mips")."""
    return [
        str(qemu_build / binary(target)),
        "-M",
        f"rehosting,config={config}",
        "-nodefaults",
        "-display",
        "none",
        "-serial",
        "stdio",
    ]


DETERMINISM_OPTIONS = ["-icount", "shift=4,align=off,sleep=off", "-rtc", "base=2020-01-01T00:00:00,clock=vm"]
# Far beyond a full boot (about 3.6e9 instructions): these runs must end for another reason.
GENEROUS_BUDGET = 20_000_000_000


@dataclass(frozen=True)
class PluginRun:
    """The plugin's report lines of one run, split by kind."""

    lines: tuple[str, ...]

    @property
    def milestones(self) -> list[tuple[str, int]]:
        """(name, instruction count) of each milestone, in report order."""
        return [(f[2], int(f[6])) for f in self._fields("milestone")]

    @property
    def initcalls(self) -> list[tuple[int, int]]:
        """(function address, instruction count) of each do_one_initcall entry."""
        return [(int(f[2], 16), int(f[5])) for f in self._fields("initcall")]

    @property
    def end(self) -> str:
        """The "end ..." line without its prefix: reason, detail, instruction count."""
        (end,) = [line.removeprefix("rehost: end ") for line in self.lines if line.startswith("rehost: end ")]
        return end

    def _fields(self, kind: str) -> list[list[str]]:
        return [line.split() for line in self.lines if line.startswith(f"rehost: {kind} ")]


def plugin_arguments(firmware: Firmware) -> str:
    """The plugin's arguments for a kernel's standard hooks, every address from its recovered symbols."""
    return ",".join(config_plugin_arguments(watching_kernel(MachineConfig(), firmware)))


def write_config(directory: Path, config: dict) -> Path:
    path = directory / "config.json"
    path.write_text(json.dumps(config))
    return path


def run_plugin(qemu_build: Path, command: list[str], arguments: str) -> PluginRun:
    """Run a QEMU command line deterministically with the plugin; its console goes nowhere."""
    command = [*command]
    command[command.index("stdio")] = "null"  # the plugin, not the console, says how far it got
    completed = subprocess.run(
        [
            *command,
            *DETERMINISM_OPTIONS,
            "-d",
            "plugin",
            "-plugin",
            f"{qemu_build / PLUGIN},{arguments}",
        ],
        capture_output=True,
        text=True,
        timeout=BOOT_DEADLINE_SECONDS,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return PluginRun(tuple(line for line in completed.stderr.splitlines() if line.startswith("rehost: ")))


# armmp on the AM335x device tree with only RAM and a Cortex-A8 has no model of the ti,am33xx-intc
# nor of its timers: the machine's tick stands in for the clock-event timer's interrupt, and the
# controller's pending-interrupt register (INTC_SIR, which omap_intc_handle_irq reads) answers
# that timer's number, so that every tick runs the kernel's own timer handler.
INTC_BASE = 0x48200000
INTC_SIZE = 0x1000
INTC_SIR = INTC_BASE + 0x40
# timer2 (/ocp/.../target-module@40000/timer@0): the kernel's clock event on this board.
TIMER2_IRQ = 68
TICK_PERIOD_NS = 4_000_000  # HZ 250
# lpj: no calibration (that needs the tick too); jiffies as the clock: the dmtimer counter has no
# model either, and random counter reads make time leap.
AM335X_TICKING_CMDLINE = "lpj=100000 clocksource=jiffies"


def ticking_state(firmware: Firmware, target: Target, ack_base: int, ack_size: int) -> State:
    """The initial state of an am335x target with the tick, acked by a write to
    [ack_base, ack_base + ack_size) (0, 0: by the first unmapped read), and INTC_SIR pinned."""
    state = initial_state(firmware, seed=1)
    state.tick.period_ns = TICK_PERIOD_NS
    state.tick.ack_base = ack_base
    state.tick.ack_size = ack_size
    state.mmio_rules.append(MmioRule(address=INTC_SIR, constant=TIMER2_IRQ))
    return state


def ticking_idle_am335x(corpus: Corpus) -> tuple[State, Target, Firmware]:
    """A ticking am335x boot that idles between ticks after kernel_init's initcalls, on any armmp.

    No initramfs and a root device that never appears, waited for (rootwait): the kernel polls
    for it in prepare_namespace every few milliseconds for ever, so the guest only runs when a
    tick wakes it, until the machine ends the run at IDLE_GUEST_TIME_FACTOR times its idle
    deadline of guest time ("idle: the guest's clock reached ...").
    """
    target = Target(
        kernel=corpus.kernel("armmp"),
        dtb=corpus.dtb("armmp", "am335x-boneblack"),
        cmdline=f"root=/dev/mmcblk0p2 rootwait {AM335X_TICKING_CMDLINE}",
    )
    firmware = ingest(target.kernel, dtb=target.dtb)
    return ticking_state(firmware, target, INTC_BASE, INTC_SIZE), target, firmware


def boot_state(
    state: State,
    target: Target,
    firmware: Firmware,
    qemu_build: Path,
    deadline: float = 240,
    stuck_reads: int | None = None,
    instruction_budget: int | None = None,
) -> RunResult:
    """One run of a search state, as the search boots it (`stuck_reads`, `instruction_budget`:
    the test's own limits)."""
    config = bootable(state, target, firmware)
    if stuck_reads is not None:
        config.stuck_reads = stuck_reads
    if instruction_budget is not None:
        config.instruction_budget = instruction_budget
    plugin = Plugin(qemu_build / PLUGIN, STANDARD_OBSERVATION)
    return run(config, qemu_build, plugin=plugin, limits=RunnerLimits(deadline_seconds=deadline)).result


# A search of a corpus board is only guarded by this: its own budget ends it first.
SEARCH_DEADLINE_SECONDS = 900


def search_corpus_board(
    corpus: Corpus, qemu_build: Path, work: Path, flavour: str, board: str, budget: str
) -> dict:
    """`explorer search` of a corpus kernel with a board's device tree and the marker initramfs
    (2 workers), then what `explorer show --json` says of it."""
    explorer = [sys.executable, "-m", "explorer"]
    env = {**os.environ, "EXPLORER_QEMU": str(qemu_build)}
    searched = subprocess.run(
        [*explorer, "search", corpus.kernel(flavour), "--dtb", corpus.dtb(flavour, board),
         "--initrd", corpus.initramfs("armhf"), "--work", work, "--budget", budget, "--workers", "2"],
        env=env, capture_output=True, text=True, timeout=SEARCH_DEADLINE_SECONDS, check=False,
    )  # fmt: skip
    assert searched.returncode == 0, searched.stderr[-3000:]
    shown = subprocess.run(
        [*explorer, "show", work, "--json"], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(shown.stdout)
