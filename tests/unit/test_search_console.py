"""The console UART: found the way the kernel finds its console, placed first in the initial state."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from explorer.firmware.devicetree import parse_dtb
from explorer.firmware.model import Arch, DeviceTreeFacts, DtDevice, Endian
from explorer.runner.analysis import USER_SPACE_MILESTONE
from explorer.runner.machine_config_pb2 import MachineConfig
from explorer.runner.rehost_pb2 import RunResult
from explorer.search.console import (
    console_expected,
    console_interrupt_reachable,
    console_interrupt_wired,
    console_uart,
    console_without_model,
)
from explorer.search.device_models import irq_values, placement
from explorer.search.goal import Goal
from explorer.search.initial import initial_state
from explorer.search.state import Target
from tests.helpers import arm_firmware

# Three UARTs of three kinds; `{chosen}` is filled in per test.
BOARD = """
/dts-v1/;
/ {{
    #address-cells = <1>;
    #size-cells = <1>;
    chosen {{ {chosen} }};
    aliases {{ serial0 = &first; serial1 = &second; serial2 = &third; serial3 = &off; serial4 = &bare; }};
    soc {{
        compatible = "simple-bus";
        #address-cells = <1>;
        #size-cells = <1>;
        ranges;
        first: serial@10009000 {{ compatible = "arm,pl011", "arm,primecell"; reg = <0x10009000 0x1000>; }};
        second: serial@44e09000 {{
            compatible = "ti,am3352-uart", "ti,omap3-uart";
            reg = <0x44e09000 0x2000>;
        }};
        third: serial@ff690000 {{
            compatible = "rockchip,rk3288-uart", "snps,dw-apb-uart";
            reg = <0xff690000 0x100>;
            reg-shift = <2>;
        }};
        off: serial@2020000 {{
            compatible = "fsl,imx21-uart";
            reg = <0x2020000 0x4000>;
            status = "disabled";
        }};
        bare: serial@c81004c0 {{ compatible = "vendor,uart-without-a-model"; reg = <0xc81004c0 0x18>; }};
        framebuffer@30000000 {{ compatible = "simple-framebuffer"; reg = <0x30000000 0x100000>; }};
    }};
}};
"""


def board_firmware(chosen: str = ""):
    blob = subprocess.run(
        ["dtc", "-q", "-I", "dts", "-O", "dtb", "-"],
        input=BOARD.format(chosen=chosen).encode(),
        capture_output=True,
        check=True,
    ).stdout
    return arm_firmware(device_tree=parse_dtb(blob, "given"))


@pytest.mark.parametrize(
    ("chosen", "cmdline", "model", "address", "argument"),
    [
        # stdout-path names an alias (options after the colon), or a node path.
        ('stdout-path = "serial2:115200n8";', "", "serial-mm", 0xFF690000, None),
        ('stdout-path = "/soc/serial@44e09000";', "", "serial-mm", 0x44E09000, None),
        # A console= argument wins over stdout-path, the last one over the others; its number is
        # the port's alias, its name must be the model's.
        ('stdout-path = "serial2:115200n8";', "console=ttyAMA0", "pl011", 0x10009000, None),
        ("", "console=ttyAMA0 console=ttyS1,115200", "serial-mm", 0x44E09000, None),
        # The OMAP UART is ttyO with omap-serial (8250_omap calls it ttyS).
        ("", "console=ttyO1,115200n8", "serial-mm", 0x44E09000, None),
        # The tree's bootargs count when the machine passes no arguments of its own.
        ('bootargs = "console=ttyS1";', "", "serial-mm", 0x44E09000, None),
        # Nothing names a console: serial0, and the argument that makes the kernel write there.
        ("", "rdinit=/init", "pl011", 0x10009000, "console=ttyAMA0"),
    ],
)
def test_the_console_is_the_uart_the_kernel_would_choose(
    chosen: str, cmdline: str, model: str, address: int, argument: str | None
) -> None:
    console = console_uart(board_firmware(chosen), cmdline)
    assert console is not None
    assert (console.placement.type, console.placement.mmio[0], console.argument) == (model, address, argument)


def test_a_16550_with_registers_four_bytes_apart_gets_that_register_shift() -> None:
    console = console_uart(board_firmware('stdout-path = "serial1";'))
    assert console is not None and console.placement.props == {"regshift": 2}


@pytest.mark.parametrize(
    ("chosen", "cmdline"),
    [
        # A console named where no UART model is: a disabled node, a framebuffer, a tty name
        # that is not its driver's, an alias the tree does not have.
        ('stdout-path = "serial3:115200n8";', ""),
        ('stdout-path = "/soc/framebuffer@30000000";', ""),
        ("", "console=ttymxc0"),
        ("", "console=ttyS7"),
    ],
)
def test_no_console_is_placed_where_the_named_one_has_no_model(chosen: str, cmdline: str) -> None:
    assert console_uart(board_firmware(chosen), cmdline) is None


def test_the_initial_state_puts_the_console_first_unwired_and_adds_its_argument() -> None:
    state = initial_state(board_firmware(), seed=3, cmdline="rdinit=/init")
    assert [(device.type, list(device.mmio), list(device.irqs)) for device in state.devices] == [
        ("pl011", [0x10009000], [])
    ]
    assert state.boot.cmdline == "console=ttyAMA0"


def test_the_initial_state_adds_no_argument_when_the_tree_names_the_console() -> None:
    state = initial_state(board_firmware('stdout-path = "serial2:115200n8";'), seed=3, cmdline="rdinit=/init")
    assert [device.type for device in state.devices] == ["serial-mm"] and state.boot.cmdline == ""


def test_the_console_interrupt_is_wired_once_its_first_serial_device_has_an_irq() -> None:
    state = initial_state(board_firmware(), seed=3)
    assert not console_interrupt_wired(state)
    state.devices[0].irqs.extend(irq_values((37,)))
    state.devices.add(type="serial-mm", mmio=[0x44E09000])
    assert console_interrupt_wired(state)
    state.devices[0].ClearField("irqs")
    state.devices[0].irqs.extend(irq_values((None,)))
    assert not console_interrupt_wired(state)
    malta = MachineConfig(target="mipsel")
    malta.isa_devices.add(type="mc146818rtc")
    malta.isa_devices.add(type="isa-serial")
    assert not console_interrupt_wired(malta)
    malta.isa.irqs.extend(irq_values((None, None, None, None, 2)))
    assert console_interrupt_wired(malta)
    malta.isa.ClearField("irqs")
    malta.isa.i8259.cpu_line = 2
    assert console_interrupt_wired(malta)


def test_an_isa_consoles_interrupt_is_reachable_before_its_pair_and_a_memory_mapped_ones_once_wired() -> None:
    malta = MachineConfig(target="mipsel")
    malta.isa_devices.add(type="isa-serial")
    assert not console_interrupt_wired(malta) and console_interrupt_reachable(malta)
    assert not console_interrupt_reachable(MachineConfig(target="mipsel"))
    state = initial_state(board_firmware(), seed=3)
    assert not console_interrupt_reachable(state)
    state.devices[0].irqs.extend(irq_values((37,)))
    assert console_interrupt_reachable(state)


def test_a_console_is_expected_on_mips_boards_and_not_without_a_tree_on_arm() -> None:
    assert console_expected(arm_firmware(arch=Arch.MIPS, endian=Endian.LITTLE, device_tree=None))
    assert not console_expected(arm_firmware(device_tree=None))
    assert console_expected(board_firmware())


@pytest.mark.parametrize(
    ("chosen", "cmdline", "found"),
    [
        ('stdout-path = "serial4:115200n8";', "", True),
        ("", "console=ttyFOO4,115200", True),
        ('stdout-path = "serial0:115200n8";', "", False),  # a model stands for it
        ("", "", False),  # nothing names a console
        ('stdout-path = "serial3";', "", False),  # disabled
    ],
)
def test_a_named_console_uart_without_a_model_is_found_for_a_sink(
    chosen: str, cmdline: str, found: bool
) -> None:
    firmware = board_firmware(chosen)
    node = console_without_model(firmware, cmdline)
    assert (node is not None and node.path.endswith("serial@c81004c0")) == found
    if found:
        assert console_uart(firmware, cmdline) is None and console_expected(firmware, cmdline)


@pytest.mark.parametrize(
    ("compatible", "size"),
    [("nvidia,tegra20-uart", 0x40), ("brcm,bcm2835-aux-uart", 0x40), ("ti,dra742-uart", 0x100)],
)
def test_uarts_the_8250_core_serves_get_the_16550_with_their_registers_4_bytes_apart(
    compatible: str, size: int
) -> None:
    node = DtDevice("/serial@70006300", (compatible,), ((0x70006300, size),), None, (), "okay")
    tree = DeviceTreeFacts("given", None, (), (), (node,), None, None)
    model = placement(node, tree, "")
    assert model is not None and (model.type, model.mmio, model.props) == (
        "serial-mm",
        (0x70006300,),
        {"regshift": 2},
    )


def test_the_goal_is_the_console_where_a_sink_or_the_isa_pair_can_still_bring_it_else_user_space() -> None:
    marker = Target(Path("zImage"), prints_marker=True)
    user_space = RunResult()
    user_space.milestones.add(name=USER_SPACE_MILESTONE)
    # A console UART without a model: user space alone never completes the boot.
    bare = board_firmware('stdout-path = "serial4:115200n8";')
    goal = Goal.of(bare, marker)
    assert goal.console and goal.sink
    assert not goal.reached_by(initial_state(bare, seed=0), user_space)
    # A modelled one whose interrupt no controller delivers: user space does.
    modelled = board_firmware('stdout-path = "serial2";')
    assert Goal.of(modelled, marker).reached_by(initial_state(modelled, seed=0), user_space)
    # Malta's ISA UART before the pair: the isa operator can still wire it.
    malta = MachineConfig(target="mipsel")
    malta.isa_devices.add(type="isa-serial")
    mips = arm_firmware(arch=Arch.MIPS, endian=Endian.LITTLE, device_tree=None)
    assert not Goal.of(mips, marker).reached_by(malta, user_space)
    # Without the marker in the initrd, user space is the goal everywhere.
    assert Goal.of(bare, Target(Path("zImage"))).reached_by(initial_state(bare, seed=0), user_space)
