"""Stock-QEMU ground truth: a set's kernel booted on QEMU's own model of its board, where QEMU has one.

The rehosted boots of a bench are compared with this: how far the same kernel, DTB, initrd and
command line get on the board QEMU's developers modelled by hand. The table `STOCK_MODELS` says
which (corpus flavour, DTB name) has such a model (DT-less boards: the flavour alone). A stock
boot is measured with the search's own instrument: the rehost plugin with the standard kernel
hooks and observation (explorer.runner.kernel_hooks), icount, the search's instruction budget and
kernel arguments (explorer.search.initial) and its per-run wall deadline; only the machine and
the `console=` its UART needs differ. The plugin needs nothing but the kernel's symbols.

A row per booted firmware, exactly these keys (the bench report reads them): firmware, machine,
furthest_milestone (as the search names it: "user space" once reached), reached_userspace,
wall_seconds, ended (how the run ended, one line), wall_seconds_to_userspace (None unless it got
there). A board this QEMU build lacks, or refuses, is a row that says so, never an exception.
This module never searches, never changes a state, and never reads a bench's search results.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from explorer import corpus
from explorer.bench.sets import BenchFirmware
from explorer.errors import RunnerError
from explorer.execution.jobs import RunnerSetup
from explorer.firmware.ingest import ingest
from explorer.runner.command import StockBoard, stock_machines
from explorer.runner.containment import RunnerLimits
from explorer.runner.kernel_hooks import watching_kernel
from explorer.runner.launch import Run, run
from explorer.runner.machine_config_pb2 import MachineConfig, RamRegion
from explorer.runner.rehost_pb2 import ExitReason
from explorer.search.engine import SearchOptions
from explorer.search.initial import initial_state
from explorer.search.score import score

MiB = 1 << 20
GiB = 1 << 30
# What a board missing from the QEMU build records as how it ended.
NOT_IN_BUILD = "not in this QEMU build"
# A stock boot gets the wall-clock deadline of one search run.
RUN_DEADLINE_SECONDS = SearchOptions.run_deadline_seconds


@dataclass(frozen=True)
class StockModel:
    """QEMU's model of one real board, and how to boot a kernel on it."""

    machine: str
    # The board's CPU: the one QEMU's board builds (boards that fix it refuse any other).
    cpu: str
    # The real board's RAM (its device tree's memory node), or the size QEMU's board insists on.
    memory_bytes: int
    # The kernel's console device (console=): the UART the board's device tree names for it.
    console: str
    # Which QEMU serial port that UART is on (explorer.runner.launch.StockBoard).
    console_port: int = 0


# QEMU fixes 1 GiB. Like orangepi-pc, a board with 4 CPUs: measured 2026-11-26, QEMU 10.2.2 with
# the rehost plugin loaded aborts on both under single-threaded TCG (which icount implies) at SMP
# bring-up ("arm_mmu_idx_el: code should not be reached"); their rows record that crash.
_RASPI2B = StockModel("raspi2b", "cortex-a7", 1 * GiB, "ttyAMA0")

# (corpus flavour, DTB name without ".dtb"; None for a board booted without a device tree) -> model.
STOCK_MODELS: dict[tuple[str, str | None], StockModel] = {
    ("armmp", "vexpress-v2p-ca9"): StockModel("vexpress-a9", "cortex-a9", 1 * GiB, "ttyAMA0"),
    ("armmp", "vexpress-v2p-ca15-tc1"): StockModel("vexpress-a15", "cortex-a15", 1 * GiB, "ttyAMA0"),
    # 1 GiB as the real Cubieboard (QEMU takes 512 MiB or 1 GiB); UART0 is QEMU's only serial port.
    ("armmp", "sun4i-a10-cubieboard"): StockModel("cubieboard", "cortex-a8", 1 * GiB, "ttyS0"),
    ("armmp", "imx6ul-14x14-evk"): StockModel("mcimx6ul-evk", "cortex-a7", 512 * MiB, "ttymxc0"),
    # The SABRE Lite's console is UART2 (stdout-path serial@21e8000): QEMU's second serial port.
    ("armmp", "imx6q-sabrelite"): StockModel("sabrelite", "cortex-a9", 1 * GiB, "ttymxc1", console_port=1),
    # QEMU's orangepi-pc only takes 1 GiB, as the real board has.
    ("armmp", "sun8i-h3-orangepi-pc"): StockModel("orangepi-pc", "cortex-a7", 1 * GiB, "ttyS0"),
    ("armmp", "bcm2836-rpi-2-b"): _RASPI2B,
    ("rpi", "bcm2836-rpi-2-b"): _RASPI2B,
    # Malta boards hold up to 256 MiB below their I/O windows (the search gives the same).
    ("4kc-malta", None): StockModel("malta", "24Kf", 256 * MiB, "ttyS0"),
}


def stock_model(flavour: str | None, dtb_name: str | None) -> StockModel | None:
    """QEMU's model of the board a corpus kernel is booted as, if it has one."""
    if flavour is None:
        return None
    return STOCK_MODELS.get((flavour, dtb_name))


def corpus_flavour(kernel: Path, kernels: corpus.Corpus) -> str | None:
    """The corpus flavour whose kernel image `kernel` is (None: a kernel from outside the corpus)."""
    return next((flavour for flavour in kernels.flavours if kernels.kernel(flavour) == kernel), None)


def model_of(firmware: BenchFirmware, kernels: corpus.Corpus | None) -> StockModel | None:
    """QEMU's model of a set's firmware (`kernels`: the corpus, None if no firmware comes from it)."""
    flavour = corpus_flavour(firmware.target.kernel, kernels) if kernels is not None else None
    dtb = firmware.target.dtb
    return stock_model(flavour, dtb.stem if dtb is not None else None)


def corpus_for(
    firmware: tuple[BenchFirmware, ...], loader: Callable[[], corpus.Corpus]
) -> corpus.Corpus | None:
    """The corpus, loaded only if some firmware's kernel lies in it (a set of other kernels needs none)."""
    root = corpus.corpus_root()
    return loader() if any(item.target.kernel.is_relative_to(root) for item in firmware) else None


def stock_config(model: StockModel, firmware: BenchFirmware) -> MachineConfig:
    """What a stock boot of `firmware` runs: the board's CPU and RAM, the set's files, the search's watch.

    The kernel arguments and instruction budget are the search's initial state's (nokaslr for a
    kernel that would move itself away from its symbols), the budget overridden as the bench's
    searches override it.
    """
    target = firmware.target
    facts = ingest(target.kernel, dtb=target.dtb)
    initial = initial_state(facts, seed=0)
    config = MachineConfig(
        target=initial.target,
        cpu=model.cpu,
        # The board places its RAM; only the size reaches QEMU.
        ram=[RamRegion(base=0, size=model.memory_bytes)],
        instruction_budget=firmware.instruction_budget or initial.instruction_budget,
    )
    config.boot.kernel = str(target.kernel)
    config.boot.dtb = str(target.dtb) if target.dtb is not None else ""
    config.boot.initrd = str(target.initrd) if target.initrd is not None else ""
    arguments = (f"console={model.console}", target.cmdline, initial.boot.cmdline)
    config.boot.cmdline = " ".join(argument for argument in arguments if argument)
    return watching_kernel(config, facts)


class StockBooter:
    """Boots firmware on their stock boards with one QEMU build (asked once per target for its boards)."""

    def __init__(self, setup: RunnerSetup) -> None:
        self._setup = setup
        self._machines: dict[str, frozenset[str]] = {}

    def boot(self, firmware: BenchFirmware, model: StockModel) -> dict[str, Any]:
        """The row of one stock boot of `firmware` on `model` (a board the build lacks is a row too)."""
        config = stock_config(model, firmware)
        if config.target not in self._machines:
            self._machines[config.target] = stock_machines(self._setup.qemu_dir, config.target)
        if model.machine not in self._machines[config.target]:
            return _row(firmware.name, model.machine, NOT_IN_BUILD)
        try:
            finished = run(
                config,
                self._setup.qemu_dir,
                plugin=self._setup.plugin,
                limits=RunnerLimits(deadline_seconds=RUN_DEADLINE_SECONDS),
                stock=StockBoard(model.machine, model.console_port),
            )
        except RunnerError as error:
            return _row(firmware.name, model.machine, f"QEMU refused it: {error}")
        return stock_row(firmware.name, model.machine, finished)


def stock_row(firmware: str, machine: str, finished: Run) -> dict[str, Any]:
    """A finished stock boot's row; its time to user space is the run's (the run ends there)."""
    result = finished.result
    reached = score(result)
    reason = ExitReason.Name(result.exit.reason).removeprefix("EXIT_").lower().replace("_", " ")
    ended = f"{reason}: {result.exit.detail}" if result.exit.detail else reason
    wall = round(finished.wall_seconds, 3)
    return {
        **_row(firmware, machine, ended),
        "furthest_milestone": reached.furthest_milestone,
        "reached_userspace": reached.user_space,
        "wall_seconds": wall,
        "wall_seconds_to_userspace": wall if reached.user_space else None,
    }


def _row(firmware: str, machine: str, ended: str) -> dict[str, Any]:
    """The row of a boot that did not run (its numbers empty), or the frame of one that did."""
    return {
        "firmware": firmware,
        "machine": machine,
        "furthest_milestone": None,
        "reached_userspace": False,
        "wall_seconds": 0.0,
        "ended": ended,
        "wall_seconds_to_userspace": None,
    }
