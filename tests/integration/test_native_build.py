"""The runner's QEMU build (native/build.py) and the `rehosting` machine compiled into it.

The first run builds QEMU (several minutes on two cores); later runs reuse the cached result.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from explorer.corpus import USERSPACE_MARKER, Corpus
from explorer.runner.build import MANIFEST, PLUGIN, PLUGIN_HEADER, TARGETS, binary
from tests.integration.rehosting import build_native, rehosting_command, run_until, vexpress_a9_config

pytestmark = pytest.mark.qemu


def test_build_result_holds_binaries_plugin_header_plugin_and_manifest(qemu_build: Path) -> None:
    for target in TARGETS:
        assert (qemu_build / binary(target)).is_file()
    assert "#define QEMU_PLUGIN_VERSION 5" in (qemu_build / PLUGIN_HEADER).read_text()
    assert (qemu_build / PLUGIN).is_file()
    manifest = json.loads((qemu_build / MANIFEST).read_text())
    assert manifest["qemu_version"].startswith("10.2.")
    assert "--enable-plugins" in manifest["configure_flags"]


def test_rebuild_with_nothing_changed_returns_the_same_directory(qemu_build: Path) -> None:
    assert build_native() == qemu_build


def test_build_offers_the_rehosting_machine_and_the_stock_boards(qemu_build: Path) -> None:
    machines = subprocess.run(
        [str(qemu_build / binary("arm")), "-M", "help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "rehosting" in machines
    # The reference of benchmarks/runner_vs_qemu.py and the bench's stock ground truth.
    for board in (
        "vexpress-a9",
        "vexpress-a15",
        "cubieboard",
        "sabrelite",
        "mcimx6ul-evk",
        "orangepi-pc",
        "raspi2b",
    ):
        assert board in machines


@pytest.mark.corpus
def test_armmp_reaches_user_space_on_rehosting_with_the_vexpress_a9_map(
    qemu_build: Path, corpus: Corpus, tmp_path: Path
) -> None:
    config = tmp_path / "vexpress-a9.json"
    config.write_text(json.dumps(vexpress_a9_config(corpus)))
    reached, console = run_until(rehosting_command(qemu_build, config), USERSPACE_MARKER)
    assert reached, console[-3000:]


@pytest.mark.parametrize(
    ("mutate", "complaint"),
    [
        (lambda config: config.pop("cpu"), "cpu is missing"),
        (lambda config: config.update(cpu="pentium"), 'cpu "pentium" is not an ARM CPU model'),
        (lambda config: config.update(ram=[]), "ram must list at least one"),
        (
            lambda config: config["boot"].update(kernel="/nonexistent/zImage"),
            "/nonexistent/zImage does not exist",
        ),
        (
            lambda config: config["devices"].append({"type": "no-such-device"}),
            '"no-such-device" is not a sysbus',
        ),
        (lambda config: config["devices"][1].update(irqs=[5]), "irqs[0] = 5 is not a GIC SPI"),
        (lambda config: config["devices"][0]["props"].update(sys_id="x"), "devices[0].props.sys_id"),
        (
            lambda config: config.update(mmio_rules=[{"address": "0x1000", "constant": 1, "echo": {}}]),
            "mmio_rules[0] must give exactly one of constant, sequence",
        ),
        (
            lambda config: config.update(mmio_rules=[{"address": "0x1000", "sequence": {"values": []}}]),
            "mmio_rules[0].sequence.values must list at least one value",
        ),
        (
            lambda config: config.update(mmio_rules=[{"address": "0x1000", "forced_bits": {"or_mask": "x"}}]),
            "mmio_rules[0].forced_bits.or_mask must be an unsigned integer",
        ),
        (
            lambda config: config.update(
                mmio_rules=[{"address": 8, "echo": {}}, {"address": 8, "random": {}}]
            ),
            "mmio_rules[1]: address 0x8 already has a rule",
        ),
        (lambda config: config.update(events_fd=999), "events_fd 999 is not a descriptor open for writing"),
        (lambda config: config.update(random_unruled_reads=1), "random_unruled_reads must be true or false"),
    ],
)
def test_bad_config_stops_qemu_with_one_line_naming_the_field(
    qemu_build: Path, corpus: Corpus, tmp_path: Path, mutate, complaint: str
) -> None:
    config = vexpress_a9_config(corpus)
    mutate(config)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(config))
    completed = subprocess.run(
        rehosting_command(qemu_build, path), capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 1
    assert complaint in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("machine_option", "complaint"),
    [("rehosting", "no config given"), ("rehosting,config=/nonexistent.json", "cannot read it")],
)
def test_missing_config_stops_qemu_with_one_line(
    qemu_build: Path, machine_option: str, complaint: str
) -> None:
    completed = subprocess.run(
        [
            str(qemu_build / binary("arm")),
            "-M",
            machine_option,
            "-nodefaults",
            "-display",
            "none",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 1
    assert complaint in completed.stderr


def test_invalid_json_config_is_reported(qemu_build: Path, tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"cpu": "cortex-a9",')
    completed = subprocess.run(
        rehosting_command(qemu_build, path), capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 1
    assert "not valid JSON" in completed.stderr
