"""The MIPS `rehosting` machine: Debian's malta kernel boots on a board declared in a config.

The malta kernel expects what YAMON and the Malta board leave behind; the config declares the
smallest set that gets it to user space: RAM, an ISA bus with a real MC146818 RTC (the kernel
times the CPU against its update flag) and a 16550 on the ISA IRQ line 4, wired straight to CPU
interrupt 2 where the i8259 would be, and constant mmio_rules for the board registers the kernel
reads: the board revision and the GT64120's PCI I/O window and interrupt acknowledge.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from explorer.corpus import USERSPACE_MARKER, Corpus
from explorer.firmware.ingest import ingest
from explorer.firmware.model import Firmware
from explorer.runner.build import binary
from tests.integration.rehosting import (
    GENEROUS_BUDGET,
    MILESTONES,
    PluginRun,
    plugin_arguments,
    rehosting_command,
    run_plugin,
    run_until,
    write_config,
)

pytestmark = pytest.mark.qemu

RAM_SIZE = 0x10000000
GT64120 = 0x1BE00000  # where YAMON moves the system controller's registers
UART_ISA_IRQ = 4
I8259_CPU_LINE = 2  # the Malta i8259's output on the CPU


def malta_config(corpus: Corpus) -> dict:
    """The malta 4kc kernel and the marker initramfs on the MIPS rehosting machine (not -M malta)."""
    isa_irqs: list[int | None] = [None] * 16
    isa_irqs[UART_ISA_IRQ] = I8259_CPU_LINE
    boot = {
        "kernel": str(corpus.kernel("4kc-malta")),
        # nokaslr: the kernel relocates itself at random otherwise, and symbol hooks miss
        "cmdline": "console=ttyS0,38400 nokaslr rdinit=/init",
        "env": {"memsize": str(RAM_SIZE), "ememsize": str(RAM_SIZE), "modetty0": "38400n8r"},
        "initrd": str(corpus.initramfs("mipsel")),
    }
    return {
        "cpu": "24Kf",  # the "4kc-malta" flavour is built for MIPS32r2 (seb, ext, ...): 4Kc traps
        "ram": [{"base": 0, "size": hex(RAM_SIZE)}],
        "mmio_rules": [
            {"address": "0x1fc00010", "constant": "0x420"},  # revision: Core LV card, GT64120
            # GT64120 PCI I/O window at 0x18000000 (low, high, remap), as YAMON programs it
            {"address": hex(GT64120 + 0x048), "constant": "0xc0"},
            {"address": hex(GT64120 + 0x050), "constant": "0x40"},
            {"address": hex(GT64120 + 0x0F0), "constant": "0xc0"},
            # interrupt acknowledge: the only ISA interrupt wired is the UART's
            {"address": hex(GT64120 + 0xC34), "constant": UART_ISA_IRQ},
        ],
        "isa": {"io_base": "0x18000000", "irqs": isa_irqs},
        "isa_devices": [
            {"type": "mc146818rtc", "props": {"base_year": 2000}},
            {"type": "isa-serial", "props": {"iobase": 0x3F8, "irq": UART_ISA_IRQ}},
        ],
        "boot": boot,
    }


def test_build_offers_the_mips_rehosting_machine(qemu_build: Path) -> None:
    for target in ("mipsel", "mips"):
        machines = subprocess.run(
            [str(qemu_build / binary(target)), "-M", "help"], capture_output=True, text=True, check=True
        ).stdout
        assert "rehosting" in machines


@pytest.mark.corpus
def test_malta_kernel_reaches_user_space_on_the_mips_rehosting_machine(
    qemu_build: Path, corpus: Corpus, tmp_path: Path
) -> None:
    config = write_config(tmp_path, malta_config(corpus))
    reached, console = run_until(rehosting_command(qemu_build, config, "mipsel"), USERSPACE_MARKER)
    assert reached, console[-3000:]


@pytest.fixture(scope="module")
def malta_firmware(corpus: Corpus) -> Firmware:
    return ingest(corpus.kernel("4kc-malta"))


@pytest.fixture(scope="module")
def malta_boots(
    qemu_build: Path, corpus: Corpus, malta_firmware: Firmware, tmp_path_factory: pytest.TempPathFactory
) -> tuple[PluginRun, PluginRun]:
    """Two identical boots of the malta kernel with the plugin, under icount."""
    command = rehosting_command(
        qemu_build, write_config(tmp_path_factory.mktemp("malta"), malta_config(corpus)), "mipsel"
    )
    arguments = f"{plugin_arguments(malta_firmware)},budget={GENEROUS_BUDGET}"
    return run_plugin(qemu_build, command, arguments), run_plugin(qemu_build, command, arguments)


@pytest.mark.corpus
def test_malta_reaches_every_milestone_and_initcalls_name_functions(
    malta_boots: tuple[PluginRun, PluginRun], malta_firmware: Firmware
) -> None:
    run = malta_boots[0]
    expected = [name for name in MILESTONES if name != "prepare_namespace"]  # the initramfs has /init
    assert [name for name, _ in run.milestones] == expected
    assert len(run.initcalls) > 300
    for address, _ in run.initcalls:
        symbol = malta_firmware.symbols.containing(address)
        assert symbol is not None and symbol.address == address, f"{address:#x} is no function start"
    assert run.end.startswith("user_space ")


@pytest.mark.corpus
def test_two_malta_runs_report_identical_instruction_counts(malta_boots: tuple[PluginRun, PluginRun]) -> None:
    first, second = malta_boots
    assert first.lines == second.lines


@pytest.mark.parametrize(
    ("mutate", "complaint"),
    [
        (lambda config: config.update(cpu="cortex-a9"), 'cpu "cortex-a9" is not a MIPS CPU model'),
        (
            lambda config: config["isa"]["irqs"].__setitem__(4, 9),
            "isa.irqs[4] = 9 is not a CPU interrupt line",
        ),
        (lambda config: config.pop("isa"), "isa_devices given but no isa bus declared"),
        (
            lambda config: config["mmio_rules"].append({"address": 1}),
            "mmio_rules[5] must give exactly one of constant, sequence",
        ),
        (
            lambda config: config["boot"].update(kernel=config["boot"]["initrd"]),
            "want a MIPS ELF vmlinux",
        ),
    ],
)
@pytest.mark.corpus
def test_bad_mips_config_stops_qemu_with_one_line_naming_the_field(
    qemu_build: Path, corpus: Corpus, tmp_path: Path, mutate, complaint: str
) -> None:
    config = malta_config(corpus)
    mutate(config)
    completed = subprocess.run(
        rehosting_command(qemu_build, write_config(tmp_path, config), "mipsel"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 1
    assert complaint in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1
