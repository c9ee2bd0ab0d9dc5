"""Malta through the Python driver: the MIPS `rehosting` machine's whole config as a MachineConfig.

test_native_mips.py boots the same board from hand-written JSON on raw QEMU command lines; here
the config goes through MachineConfig (isa bus, isa_devices, boot.env, RAM at address 0) and
`explorer.runner.launch.run`, with the standard hooks, and the RunResult says how far it got;
`validate` refuses a broken isa section before any QEMU starts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from explorer.corpus import Corpus
from explorer.errors import BadInput
from explorer.firmware.ingest import ingest
from explorer.firmware.model import Firmware
from explorer.runner.build import PLUGIN
from explorer.runner.command import Plugin
from explorer.runner.config import config_from_dict, to_json, validate
from explorer.runner.containment import RunnerLimits
from explorer.runner.kernel_hooks import MILESTONES, STANDARD_OBSERVATION, watching_kernel
from explorer.runner.launch import run
from explorer.runner.machine_config_pb2 import MachineConfig
from explorer.runner.rehost_pb2 import ExitReason, RunResult
from explorer.runner.result import serialize
from explorer.runner.snapshot import Snapshot
from tests.integration.rehosting import BOOT_DEADLINE_SECONDS
from tests.integration.test_native_mips import malta_config

pytestmark = pytest.mark.corpus

# The initramfs has /init: prepare_namespace does not run.
BOOT_MILESTONES = [name for name in MILESTONES if name != "prepare_namespace"]


@pytest.fixture(scope="module")
def malta_firmware(corpus: Corpus) -> Firmware:
    return ingest(corpus.kernel("4kc-malta"))


@pytest.fixture(scope="module")
def malta(corpus: Corpus, malta_firmware: Firmware) -> MachineConfig:
    """test_native_mips.py's board as a MachineConfig, watched with the kernel's standard hooks."""
    config = config_from_dict({**malta_config(corpus), "target": "mipsel"})
    config.seed = 20261125
    config.mmio_event_limit = 4096
    return watching_kernel(config, malta_firmware)


def test_the_malta_config_is_written_as_the_mips_machine_reads_it(malta: MachineConfig) -> None:
    written = json.loads(to_json(malta))
    # proto3's JSON mapping drops zeros, but the machine requires the base of RAM at 0.
    assert written["ram"] == [{"base": 0, "size": str(0x10000000)}]
    assert written["isa"]["io_base"] == str(0x18000000)
    irqs = written["isa"]["irqs"]
    assert len(irqs) == 16 and irqs[4] == 2 and type(irqs[4]) is int and irqs.count(None) == 15
    # QEMU's integer properties refuse doubles: Struct numbers must come out as JSON integers.
    assert written["isa_devices"][1] == {"type": "isa-serial", "props": {"iobase": 0x3F8, "irq": 4}}
    assert type(written["isa_devices"][0]["props"]["base_year"]) is int
    assert written["boot"]["env"] == {"memsize": "268435456", "ememsize": "268435456", "modetty0": "38400n8r"}
    assert "nokaslr" in written["boot"]["cmdline"].split()
    assert config_from_dict(written) == malta


def without_isa_bus(config: MachineConfig) -> None:
    config.ClearField("isa")


def uart_line_as_text(config: MachineConfig) -> None:
    config.isa.irqs[4].string_value = "2"


def uart_line_fractional(config: MachineConfig) -> None:
    config.isa.irqs[4].number_value = 2.5


def rtc_without_type(config: MachineConfig) -> None:
    config.isa_devices[0].ClearField("type")


@pytest.mark.parametrize(
    ("mutate", "complaint"),
    [
        (without_isa_bus, "isa_devices given but no isa bus declared"),
        (uart_line_as_text, r"isa\.irqs\[4\] must be a CPU interrupt line or null"),
        (uart_line_fractional, r"isa\.irqs\[4\] must be a CPU interrupt line or null"),
        (rtc_without_type, r"isa_devices\[0\]\.type is missing"),
    ],
)
def test_a_bad_isa_section_is_refused_before_qemu_starts(
    malta: MachineConfig, mutate: Callable[[MachineConfig], None], complaint: str
) -> None:
    config = MachineConfig()
    config.CopyFrom(malta)
    mutate(config)
    with pytest.raises(BadInput, match=complaint):
        validate(config)


@pytest.fixture(scope="module")
def malta_runs(qemu_build: Path, malta: MachineConfig) -> tuple[RunResult, RunResult]:
    """Two runs of the same state and seed, one QEMU at a time."""
    plugin = Plugin(qemu_build / PLUGIN, STANDARD_OBSERVATION)
    limits = RunnerLimits(deadline_seconds=BOOT_DEADLINE_SECONDS)
    first, second = (run(malta, qemu_build, plugin=plugin, limits=limits).result for _ in range(2))
    return first, second


@pytest.mark.qemu
def test_malta_reaches_user_space_through_the_driver_with_milestones_in_order(
    malta_runs: tuple[RunResult, RunResult], malta_firmware: Firmware
) -> None:
    result = malta_runs[0]
    assert result.exit.reason == ExitReason.EXIT_USER_SPACE and not result.partial, result.exit
    assert [milestone.name for milestone in result.milestones] == BOOT_MILESTONES
    icounts = [milestone.icount for milestone in result.milestones]
    assert icounts == sorted(icounts)
    assert len(result.initcalls) >= 400
    for initcall in result.initcalls:
        symbol = malta_firmware.symbols.containing(initcall.address)
        assert symbol is not None and symbol.address == initcall.address, f"{initcall.address:#x}"
    # The guest log comes from the printk_sprint hook, not from the console.
    assert b"Linux version" in result.log


@pytest.mark.qemu
def test_two_malta_runs_serialize_identically(malta_runs: tuple[RunResult, RunResult]) -> None:
    first, second = malta_runs
    assert serialize(first) == serialize(second)


@pytest.mark.qemu
@pytest.mark.parametrize("share", [0.6, 0.9])
def test_a_malta_run_continued_from_a_snapshot_equals_its_full_boot(
    malta_runs: tuple[RunResult, RunResult],
    malta: MachineConfig,
    qemu_build: Path,
    tmp_path: Path,
    share: float,
) -> None:
    # The MIPS machine's ISA bus, its RTC and UART, the catch-all's recorder and the plugin's
    # MIPS exception accounting all cross a save and restore (the search continues children
    # from snapshots by default, on either machine).
    full = malta_runs[0]
    point = int(full.exit.icount * share)
    plugin = Plugin(qemu_build / PLUGIN, STANDARD_OBSERVATION)
    limits = RunnerLimits(deadline_seconds=BOOT_DEADLINE_SECONDS)
    prefix = run(
        malta,
        qemu_build,
        plugin=plugin,
        limits=limits,
        snapshot=Snapshot("saved", point, tmp_path, save=True),
    )
    assert prefix.result.partial and point <= prefix.result.exit.icount < point + 10_000, prefix.result.exit
    resumed = run(
        malta,
        qemu_build,
        plugin=plugin,
        limits=limits,
        snapshot=Snapshot("saved", point, tmp_path, save=False),
    )
    assert serialize(resumed.result) == serialize(full)
