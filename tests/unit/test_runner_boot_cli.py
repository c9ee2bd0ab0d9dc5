"""`explorer boot`: one config by hand, through the public runner API, against the fake QEMU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import typer
from typer.testing import CliRunner

from explorer.cli import boot
from explorer.errors import BadInput, RunnerNotBuilt
from explorer.runner.build import PLUGIN
from explorer.runner.result import deserialize
from tests.unit.test_runner_launch import install_fake_build


def app() -> typer.Typer:
    # An app of its own, so that the test sees exceptions as `boot` raises them (main.run maps them).
    application = typer.Typer(rich_markup_mode=None, pretty_exceptions_enable=False)
    boot.register(application)
    application.command("noop", hidden=True)(lambda: None)  # keeps `boot` a sub-command
    return application


def write_config(tmp_path: Path, behaviour: str) -> Path:
    path = tmp_path / "machine.json"
    config = {
        "target": "arm",
        "cpu": behaviour,
        "ram": [{"base": "0x60000000", "size": "0x1000000"}],
        "boot": {"kernel": "/nonexistent/zImage", "cmdline": str(tmp_path / "pid")},
    }
    path.write_text(json.dumps(config))
    return path


def test_explorer_registers_boot() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "explorer", "boot", "--help"], capture_output=True, text=True, check=False
    )
    assert shown.returncode == 0, shown.stderr
    assert "explorer boot vexpress-a9.json" in shown.stdout


def test_help_has_an_example() -> None:
    shown = CliRunner().invoke(app(), ["boot", "--help"])
    assert shown.exit_code == 0
    assert "Example:" in shown.output and "explorer boot" in shown.output


def test_boot_prints_the_summary_and_writes_the_result(tmp_path: Path) -> None:
    build = install_fake_build(tmp_path / "build")
    result_path = tmp_path / "result.bin"
    arguments = ["boot", str(write_config(tmp_path, "boots")), "--qemu", str(build)]
    arguments += ["--plugin", str(build / PLUGIN), "--result-out", str(result_path)]
    shown = CliRunner().invoke(app(), arguments)
    assert shown.exit_code == 0, shown.output
    assert shown.output.startswith("exit: user_space at insn 5678: /init\n")
    assert "milestones: start_kernel\n" in shown.output
    assert "log tail:\n  | \ufffdraw guest bytes\n" in shown.output
    assert deserialize(result_path.read_bytes()).exit.icount == 5678


def test_json_is_the_named_result_and_a_kernel_without_symbols_leaves_addresses_bare(tmp_path: Path) -> None:
    build = install_fake_build(tmp_path / "build")
    shown = CliRunner().invoke(
        app(), ["boot", str(write_config(tmp_path, "boots")), "--qemu", str(build), "--json"]
    )
    assert shown.exit_code == 0, shown.output
    printed = json.loads(shown.stdout)
    assert printed["exit"] == {"reason": "user_space", "icount": 5678, "detail": "/init"}
    assert printed["milestones"] == [{"name": "start_kernel", "address": "0xc0b00a2c", "icount": 1234}]
    assert "addresses stay unnamed: firmware /nonexistent/zImage does not exist" in shown.stderr


def test_qemu_build_comes_from_the_environment_when_not_given(tmp_path: Path) -> None:
    build = install_fake_build(tmp_path / "build")
    shown = CliRunner().invoke(
        app(), ["boot", str(write_config(tmp_path, "powers-off"))], env={"EXPLORER_QEMU": str(build)}
    )
    assert shown.exit_code == 0, shown.output
    assert shown.output.startswith("exit: poweroff")


def test_bad_config_is_the_bad_input_error_the_cli_edge_prints(tmp_path: Path) -> None:
    path = tmp_path / "machine.json"
    path.write_text('{"target": "arm"}')
    shown = CliRunner().invoke(app(), ["boot", str(path), "--qemu", str(tmp_path)])
    assert isinstance(shown.exception, BadInput)
    assert "cpu is missing" in str(shown.exception)


def test_without_a_runner_build_the_error_names_the_command_that_builds_it(tmp_path: Path) -> None:
    config = write_config(tmp_path, "boots")
    environment = {"EXPLORER_QEMU": "", "EXPLORER_CACHE": str(tmp_path / "empty-cache")}
    shown = CliRunner().invoke(app(), ["boot", str(config)], env=environment)
    assert isinstance(shown.exception, RunnerNotBuilt)
    assert "`explorer runner build`" in str(shown.exception)
