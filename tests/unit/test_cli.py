"""The CLI's contract with users: help with examples, one-line errors, exit codes 0/1/2, no tracebacks."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXPLORER = [sys.executable, "-m", "explorer"]


def explorer(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EXPLORER_CACHE": str(cache)}
    return subprocess.run([*EXPLORER, *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize(
    "command",
    [
        ["inspect"],
        ["boot"],
        ["corpus", "fetch"],
        ["corpus", "path"],
        ["corpus", "list"],
        ["search"],
        ["resume"],
        ["status"],
        ["show"],
        ["replay"],
        ["export"],
        ["run"],
        ["runner", "build"],
        ["runner", "path"],
        ["runner", "check"],
    ],
)
def test_every_command_has_help_with_an_example(command: list[str], tmp_path: Path) -> None:
    result = explorer(*command, "--help", cache=tmp_path)
    assert result.returncode == 0
    assert "Example" in result.stdout


def test_usage_error_exits_2(tmp_path: Path) -> None:
    result = explorer("inspect", "--no-such-option", cache=tmp_path)
    assert result.returncode == 2


BAD_IMAGES = {
    "empty": b"",
    "zero-filled": bytes(1 << 16),
    "random": bytes((i * 2654435761 >> 13) & 0xFF for i in range(1 << 16)),
    "text": b"this is not a kernel\n" * 100,
    "x86 ELF": b"\x7fELF\x02\x01\x01" + bytes(9) + b"\x02\x00\x3e\x00" + bytes(44),
}


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_bad_image_gives_one_line_and_exit_2(name: str, tmp_path: Path) -> None:
    image = tmp_path / "image.bin"
    image.write_bytes(BAD_IMAGES[name])
    result = explorer("inspect", str(image), cache=tmp_path / "cache")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("explorer: error: ")


@pytest.mark.parametrize("path", ["does-not-exist", "."])
def test_unreadable_firmware_path_exits_2(path: str, tmp_path: Path) -> None:
    result = explorer("inspect", str(tmp_path / path), cache=tmp_path / "cache")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "arguments",
    [
        ["does-not-exist.json"],  # neither a work directory nor a config file
        ["{config}", "51c1c8"],  # a state names a state of a search, not of a config file
        ["{empty}"],  # a directory that holds no search
        ["{config}", "--forward", "8080:80"],  # a forward needs --net user
        ["{config}", "--net", "user", "--forward", "8080"],  # HOSTPORT:GUESTPORT
    ],
)
def test_run_of_something_that_is_no_machine_gives_one_line_and_exit_2(
    arguments: list[str], tmp_path: Path
) -> None:
    config, empty = tmp_path / "machine.json", tmp_path / "empty"
    config.write_text('{"target": "arm", "cpu": "cortex-a9"}')
    empty.mkdir()
    filled = [argument.format(config=config, empty=empty) for argument in arguments]
    result = explorer("run", *filled, cache=tmp_path / "cache")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("explorer: error: "), result.stderr
