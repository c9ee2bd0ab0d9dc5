"""The real runner build is found, not configured: `explorer runner check` passes on it, and
`explorer boot` runs on it with neither --qemu nor EXPLORER_QEMU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from explorer.runner.build import pinned_build
from explorer.runner.config import write_config
from tests.integration.rehosting import BOOT_DEADLINE_SECONDS, build_native
from tests.integration.test_runner_qemu import PRINT_A_THEN_SPIN, tiny_image_config

pytestmark = pytest.mark.qemu


@pytest.fixture(scope="module")
def pinned() -> Path:
    """This explorer's build in the cache (made by native/build.py if it is not there yet)."""
    built = build_native()
    assert pinned_build() == built
    return built


def explorer(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`explorer ARGS` as a user runs it: no --qemu, no EXPLORER_QEMU, from a directory of their own."""
    environment = {key: value for key, value in os.environ.items() if key != "EXPLORER_QEMU"}
    return subprocess.run(
        [sys.executable, "-m", "explorer", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=BOOT_DEADLINE_SECONDS,
        check=False,
    )


def test_runner_path_and_check_find_the_real_build_whole(pinned: Path, tmp_path: Path) -> None:
    assert explorer("runner", "path", cwd=tmp_path).stdout == f"{pinned}\n"
    checked = explorer("runner", "check", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith(f"{pinned}: this explorer's runner build {pinned.name}, whole")


def test_runner_build_finds_the_build_done_and_prints_its_directory_last(
    pinned: Path, tmp_path: Path
) -> None:
    built = explorer("runner", "build", cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    assert built.stdout.splitlines()[-1] == str(pinned)


def test_boot_runs_on_the_found_build_without_qemu(pinned: Path, tmp_path: Path) -> None:
    config = tiny_image_config(tmp_path, PRINT_A_THEN_SPIN)
    config.instruction_budget = 1_000_000
    write_config(config, tmp_path / "tiny.json")
    booted = explorer("boot", str(tmp_path / "tiny.json"), "--json", cwd=tmp_path)
    assert booted.returncode == 0, booted.stderr
    printed = json.loads(booted.stdout)
    assert printed["exit"]["reason"] == "budget", printed["exit"]
    assert printed["log_source"] == "console" and printed["log_tail"] == ["A"]
