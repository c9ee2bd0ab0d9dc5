"""The device_interrupts operator: a tick on the GIC input of the device a blocked driver waits for."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from explorer.firmware.model import DeviceTreeFacts, DtDevice
from explorer.runner.machine_config_pb2 import MachineConfig
from explorer.runner.rehost_pb2 import Exit, ExitReason, MmioAccess, RunResult, ThreadStack
from explorer.search.device_models import placement
from explorer.search.operators import Context, Evaluated, device_interrupts
from explorer.search.operators.interrupts import TICK_PERIOD_NS
from explorer.search.proposal import unbootable
from explorer.search.state import Target, state_id
from tests.unit.test_runner_thread_waits import (
    ADDRESS,
    IDLE,
    IDLE_STACK,
    IN_INITCALL,
    KERNEL_INIT_STACK,
    SWITCHED_OUT,
    SYMBOLS,
    chain,
)
from tests.unit.test_search_engine import FIRMWARE

# A Cortex-A15 tree: the GIC, an I2C controller and a DMA engine whose interrupts reach it (the
# DMA engine's through a forwarding wake-up controller), a SPI controller whose interrupt goes to
# a chained GPIO bank, and a disabled MMC host.
GIC = "/interrupt-controller@50041000"
GIC_NODE = DtDevice(
    GIC, ("arm,cortex-a15-gic",), ((0x50041000, 0x1000), (0x50042000, 0x2000)), None, (), "okay"
)
I2C = DtDevice("/i2c@7000c000", ("vendor,i2c",), ((0x7000C000, 0x100),), GIC, (0, 38, 4), "okay")
WAKEUP = DtDevice("/wakeup@60004000", ("vendor,ictlr",), ((0x60004000, 0x40),), GIC, (0, 90, 4), "okay", 3)
DMA = DtDevice("/dma@60020000", ("vendor,dma",), ((0x60020000, 0x1400),), WAKEUP.path, (0, 104, 4), "okay")
GPIO = DtDevice("/gpio@6000d000", ("vendor,gpio",), ((0x6000D000, 0x1000),), GIC, (0, 32, 4), "okay", 2, True)
SPI = DtDevice("/spi@7000d400", ("vendor,spi",), ((0x7000D400, 0x200),), GPIO.path, (5, 4), "okay")
MMC = DtDevice("/mmc@700b0000", ("vendor,sdhci",), ((0x700B0000, 0x200),), GIC, (0, 14, 4), "disabled")
TREE = DeviceTreeFacts(
    source="given",
    model=None,
    compatible=(),
    memory=((0x80000000, 0x20000000),),
    devices=(GIC_NODE, I2C, WAKEUP, DMA, GPIO, SPI, MMC),
    bootargs=None,
    stdout_path=None,
)
IMAGE = dataclasses.replace(FIRMWARE, device_tree=TREE, symbols=SYMBOLS)
TARGET = Target(Path("/k"), cmdline="rdinit=/init")
# The driver's transfer: example_probe waits for a completion its device's handler would complete.
IN_COMPLETION = chain(
    *SWITCHED_OUT,
    "schedule_timeout",
    "__wait_for_common",
    "wait_for_completion",
    "example_probe",
    *IN_INITCALL,
)
IN_SLEEP = chain(*SWITCHED_OUT, "schedule_timeout", "msleep", "example_probe", *IN_INITCALL)
SPINNING = chain("example_reset", "example_probe", *IN_INITCALL)


def gic_state() -> MachineConfig:
    state = MachineConfig(target="arm", cpu="cortex-a15", random_unruled_reads=True)
    state.ram.add(base=0x80000000, size=0x20000000)
    model = placement(GIC_NODE, TREE, "cortex-a15")
    assert model is not None
    state.interrupt_controller.CopyFrom(model.device(()))
    return state


def access(node: DtDevice, order: int, function: str = "example_reset", is_write: bool = True) -> MmioAccess:
    address = node.reg[0][0] + 8
    return MmioAccess(
        address=address, size=4, value=1, pc=ADDRESS[function] + 8, is_write=is_write, order=order
    )


def idle(kernel_init: list, *accesses: MmioAccess) -> RunResult:
    """A run that ended idle: the idle task ran last, kernel_init was switched out in `kernel_init`."""
    return RunResult(
        exit=Exit(reason=ExitReason.EXIT_BUDGET, icount=10**9, detail="idle: ..."),
        mmio_accesses=accesses,
        threads=[
            ThreadStack(stack=KERNEL_INIT_STACK, frames=kernel_init),
            ThreadStack(stack=IDLE_STACK, frames=IDLE, current=True),
        ],
    )


def propose(state: MachineConfig, result: RunResult) -> list:
    context = Context(IMAGE, TARGET, (Evaluated(state_id(state), state, result),))
    return device_interrupts.propose(context)


def test_a_driver_blocked_in_a_completion_gets_a_tick_on_the_gic_input_of_the_device_it_touched() -> None:
    state = gic_state()
    (child,) = propose(state, idle(IN_COMPLETION, access(I2C, 5)))
    tick = child.state.tick
    assert (tick.irq, tick.ack_base, tick.ack_size, tick.ack_reads) == (32 + 38, 0x7000C000, 0x100, True)
    assert tick.period_ns == TICK_PERIOD_NS
    assert child.operator == "device_interrupts" and "example_probe" in child.reason
    assert unbootable(child.state, TARGET, IMAGE) is None
    child.state.ClearField("tick")
    assert child.state == state


def test_the_device_the_waiting_code_touched_comes_before_the_one_touched_last() -> None:
    """A driver's own accesses name its device; among the rest, the latest access first."""
    run = idle(IN_SLEEP, access(I2C, 1, "example_probe"), access(DMA, 2))
    assert [child.detail["device"] for child in propose(gic_state(), run)] == [I2C.path, DMA.path]
    later = idle(IN_SLEEP, access(I2C, 1), access(DMA, 2))
    assert [child.detail["device"] for child in propose(gic_state(), later)] == [DMA.path, I2C.path]


def test_a_forwarded_interrupt_counts_and_a_chained_or_disabled_device_never_does() -> None:
    """The DMA engine's SPI reaches the GIC through the wake-up controller (gic_route); the SPI
    controller's goes to a GPIO bank, whose own numbering says nothing of a GIC input."""
    run = idle(IN_COMPLETION, access(SPI, 1), access(MMC, 2), access(DMA, 3))
    assert [child.state.tick.irq for child in propose(gic_state(), run)] == [32 + 104]


def test_nothing_without_a_gic_beside_a_tick_or_for_a_thread_that_is_not_waiting() -> None:
    touched = access(I2C, 1)
    assert propose(MachineConfig(target="arm", cpu="cortex-a15"), idle(IN_COMPLETION, touched)) == []
    ticking = gic_state()
    ticking.tick.period_ns, ticking.tick.irq = TICK_PERIOD_NS, 32 + 57
    assert propose(ticking, idle(IN_COMPLETION, touched)) == []
    assert propose(gic_state(), idle(SPINNING, touched)) == []
    panicked = idle(IN_COMPLETION, touched)
    panicked.exit.reason = ExitReason.EXIT_PANIC
    assert propose(gic_state(), panicked) == []


def test_an_interrupt_id_the_gic_does_not_have_is_never_proposed() -> None:
    state = gic_state()
    state.interrupt_controller.props["num-irq"] = 64
    assert propose(state, idle(IN_COMPLETION, access(I2C, 1))) == []


# An open-coded wait_event: example_probe called schedule itself (analysis names it "event").
IN_WAIT_EVENT = chain(*SWITCHED_OUT, "example_probe", *IN_INITCALL)


def test_the_register_an_open_coded_wait_read_last_is_pinned_to_nothing_and_to_everything() -> None:
    """Its condition reads the device's status before it sleeps: one of the pins satisfies it."""
    status = access(DMA, 3, "example_probe", is_write=False)
    children = propose(gic_state(), idle(IN_WAIT_EVENT, access(DMA, 1, "example_probe"), status))
    pins = [child for child in children if "pin" in child.detail]
    assert [(child.detail["pin"], child.detail["value"]) for child in pins] == [
        (status.address, 0),
        (status.address, 0xFFFFFFFF),
    ]
    assert [rule.constant for rule in pins[0].state.mmio_rules] == [0]
    assert [child.state.tick.irq for child in children if "pin" not in child.detail] == [32 + 104]


def test_a_pin_already_answered_is_not_proposed_again() -> None:
    status = access(DMA, 3, "example_probe", is_write=False)
    state = gic_state()
    state.mmio_rules.add(address=status.address, constant=0)
    children = propose(state, idle(IN_WAIT_EVENT, status))
    assert [child.detail.get("value") for child in children if "pin" in child.detail] == [0xFFFFFFFF]
