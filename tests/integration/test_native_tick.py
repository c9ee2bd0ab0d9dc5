"""The machine's tick (MachineConfig.tick) on real QEMU: a periodic IRQ for an unmodelled controller.

armmp on the AM335x device tree, with only RAM and a Cortex-A8 (no model of the ti,am33xx-intc
nor of its timers): without a tick the boot idles forever after its initcalls, waiting for
jiffies. With one, and the controller's pending-interrupt register (INTC_SIR, which
omap_intc_handle_irq reads) answering the clock-event timer's interrupt number, every tick runs
the kernel's own timer handler and the same kernel reaches user space. The machine refuses a
tick it cannot drive with one line (a tick on a GIC input, tick.irq, is booted by
test_search_timer_interrupts_boot.py).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from explorer.corpus import Corpus
from explorer.firmware.ingest import ingest
from explorer.firmware.model import Firmware
from explorer.runner.rehost_pb2 import ExitReason, RunResult
from explorer.search.state import Target
from tests.integration.rehosting import (
    AM335X_TICKING_CMDLINE,
    INTC_BASE,
    INTC_SIR,
    INTC_SIZE,
    boot_state,
    rehosting_command,
    ticking_state,
    vexpress_a9_config,
)

pytestmark = [pytest.mark.qemu, pytest.mark.corpus]


def am335x_target(corpus: Corpus) -> Target:
    return Target(
        kernel=corpus.kernel("armmp"),
        dtb=corpus.dtb("armmp", "am335x-boneblack"),
        initrd=corpus.initramfs("armhf"),
        cmdline=f"rdinit=/init {AM335X_TICKING_CMDLINE}",
    )


def functions_at(result: RunResult, firmware: Firmware, address: int, is_write: bool) -> set[str]:
    """The functions that accessed `address` (reads or writes)."""
    return {
        symbol.name
        for access in result.mmio_accesses
        if access.address == address
        and access.is_write == is_write
        and (symbol := firmware.symbols.containing(access.pc)) is not None
    }


@pytest.mark.parametrize(
    ("ack_base", "ack_size"),
    [(INTC_BASE, INTC_SIZE), (0, 0)],
    ids=["acked-by-a-write-to-the-controller", "acked-by-the-first-unmapped-read"],
)
def test_ticks_reach_the_timer_handler_and_am335x_boots_to_user_space(
    qemu_build: Path, corpus: Corpus, ack_base: int, ack_size: int
) -> None:
    target = am335x_target(corpus)
    firmware = ingest(target.kernel, dtb=target.dtb)
    result = boot_state(ticking_state(firmware, target, ack_base, ack_size), target, firmware, qemu_build)
    assert result.exit.reason == ExitReason.EXIT_USER_SPACE, result.exit
    assert "omap_intc_handle_irq" in functions_at(result, firmware, INTC_SIR, is_write=False)
    # The clock event's handler acknowledged the timer (IRQSTATUS, 0x28): the tick was its interrupt.
    assert "dmtimer_clockevent_interrupt" in functions_at(result, firmware, 0x48040028, is_write=True)


def test_a_ticking_boot_replays_instruction_for_instruction(qemu_build: Path, corpus: Corpus) -> None:
    # The tick runs on virtual time, which icount derives from instructions.
    target = am335x_target(corpus)
    firmware = ingest(target.kernel, dtb=target.dtb)
    state = ticking_state(firmware, target, INTC_BASE, INTC_SIZE)
    first, second = (boot_state(state, target, firmware, qemu_build) for _ in range(2))
    assert first.exit == second.exit
    assert list(first.initcalls) == list(second.initcalls)
    assert list(first.mmio_accesses) == list(second.mmio_accesses)


Mutation = Callable[[dict], object]


@pytest.mark.parametrize(
    ("mutate", "complaint"),
    [
        (
            lambda config: config.update(tick={"period_ns": 4_000_000}),
            "tick and interrupt_controller both drive",
        ),
        (
            lambda config: config.update(tick={"period_ns": 4_000_000, "irq": 15}),
            "tick.irq = 15 is not a GIC PPI or SPI",
        ),
        (
            lambda config: config.update(tick={"period_ns": 4_000_000, "irq": 4096}),
            "tick.irq = 4096 is not a GIC PPI or SPI",
        ),
        (
            lambda config: (
                config.pop("interrupt_controller"),
                config.update(tick={"period_ns": 1, "irq": 40}),
            ),
            "tick.irq given but no GIC",
        ),
        (
            lambda config: (config.pop("interrupt_controller"), config.update(tick={"period_ns": 0})),
            "tick.period_ns must be above 0",
        ),
        (
            lambda config: (config.pop("interrupt_controller"), config.update(tick={"ack_base": 0})),
            "tick.period_ns is missing",
        ),
    ],
)
def test_a_tick_the_machine_cannot_drive_stops_qemu_with_one_line(
    qemu_build: Path, corpus: Corpus, tmp_path: Path, mutate: Mutation, complaint: str
) -> None:
    config = vexpress_a9_config(corpus)
    for device in config.get("devices", []):
        device.pop("irqs", None)  # without a controller, devices cannot have IRQs
    mutate(config)
    path = tmp_path / "tick.json"
    path.write_text(json.dumps(config))
    completed = subprocess.run(
        rehosting_command(qemu_build, path), capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 1
    assert complaint in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1
