"""The runner driver with the real QEMU build: armmp to user space, determinism, deadlines, no orphans.

The QEMU build directory is $EXPLORER_QEMU when set, else whatever native/build.py returns
(building it on first use). Besides the real kernel, two four-instruction ARM images stand in
for a guest that spins: one silent, one that prints a single byte first.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from explorer.corpus import USERSPACE_MARKER, Corpus
from explorer.errors import RunnerError
from explorer.firmware.ingest import ingest
from explorer.runner.build import PLUGIN, binary
from explorer.runner.command import Plugin
from explorer.runner.config import config_from_dict, write_config
from explorer.runner.containment import RunnerLimits
from explorer.runner.kernel_hooks import CONSOLE_INPUT, kernel_hooks
from explorer.runner.launch import Run, run
from explorer.runner.machine_config_pb2 import MachineConfig
from explorer.runner.rehost_pb2 import ExitReason
from explorer.runner.result import serialize
from tests.integration.rehosting import BOOT_DEADLINE_SECONDS, vexpress_a9_config

pytestmark = pytest.mark.qemu

REPO = Path(__file__).resolve().parents[2]
WAIT_SECONDS = 60  # a hang guard for process bookkeeping, not a performance claim
PL011 = 0x10009000

# ARM (A32, little-endian) words.
BRANCH_TO_SELF = 0xEAFFFFFE  # b .
PRINT_A_THEN_SPIN = (
    0xE59F0008,  # ldr r0, [pc, #8]   the literal below: the PL011 data register
    0xE3A01041,  # mov r1, #'A'
    0xE5801000,  # str r1, [r0]
    BRANCH_TO_SELF,
    PL011,
)
PRINT_A_FOREVER = (0xE59F0008, 0xE3A01041, 0xE5801000, 0xEAFFFFFD, PL011)  # the str, again and again


def tiny_image_config(tmp_path: Path, words: tuple[int, ...]) -> MachineConfig:
    """A Cortex-A9 with RAM and a PL011 only, booting `words` as a raw kernel image (ATAGs)."""
    kernel = tmp_path / "tiny.bin"
    kernel.write_bytes(struct.pack(f"<{len(words)}I", *words))
    return config_from_dict(
        {
            "target": "arm",
            "cpu": "cortex-a9",
            "ram": [{"base": "0x60000000", "size": "0x1000000"}],
            "devices": [{"type": "pl011", "mmio": [PL011]}],
            "boot": {"kernel": str(kernel), "board_id": "0x8e0"},
        }
    )


def qemu_children_of(parent: int, qemu: Path) -> list[int]:
    """Live (not zombie) processes whose parent is `parent` and whose executable is `qemu`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            executable = os.readlink(entry / "exe")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if int(ppid) == parent and state != "Z" and Path(executable) == qemu.resolve():
            found.append(int(entry.name))
    return found


def is_gone(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.05)


@pytest.fixture(scope="session")
def armmp_runs(qemu_build: Path, corpus: Corpus) -> tuple[Run, Run]:
    """armmp on the rehosting machine with the vexpress-a9 map, booted twice through the driver.

    The marker initramfs's shell would wait for console input after the marker until the
    deadline: the rehost plugin's console_input hooks (the tty line discipline's read and poll)
    end the run there.
    """
    config = config_from_dict({**vexpress_a9_config(corpus), "target": "arm"})
    firmware = ingest(corpus.kernel("armmp"))
    config.hooks.extend(hook for hook in kernel_hooks(firmware) if hook.name == CONSOLE_INPUT)
    plugin = Plugin(qemu_build / PLUGIN, ())
    limits = RunnerLimits(deadline_seconds=BOOT_DEADLINE_SECONDS)
    return run(config, qemu_build, plugin=plugin, limits=limits), run(
        config, qemu_build, plugin=plugin, limits=limits
    )


def test_armmp_reaches_user_space_then_its_shell_waits_for_the_console(armmp_runs: tuple[Run, Run]) -> None:
    result = armmp_runs[0].result
    console = result.console.decode(errors="replace")
    assert USERSPACE_MARKER in console, console[-3000:]
    assert (result.exit.reason, result.exit.detail) == (ExitReason.EXIT_HALT, CONSOLE_INPUT)
    assert not result.partial and result.console_dropped == 0


def test_same_config_twice_gives_byte_identical_results(armmp_runs: tuple[Run, Run]) -> None:
    first, second = armmp_runs
    assert first.result.console == second.result.console
    assert serialize(first.result) == serialize(second.result)


def test_deadline_kills_a_spinning_guest_and_leaves_no_qemu(qemu_build: Path, tmp_path: Path) -> None:
    config = tiny_image_config(tmp_path, (BRANCH_TO_SELF,))
    finished = run(config, qemu_build, limits=RunnerLimits(deadline_seconds=2))
    assert finished.result.exit.reason == ExitReason.EXIT_TIMEOUT and finished.result.partial
    assert qemu_children_of(os.getpid(), qemu_build / binary("arm")) == []


DRIVER = """
import sys
from pathlib import Path
from explorer.runner.config import read_config
from explorer.runner.launch import run
run(read_config(Path(sys.argv[2])), Path(sys.argv[1]))
"""


def test_killing_the_driver_takes_its_qemu_down(qemu_build: Path, tmp_path: Path) -> None:
    config_path = tmp_path / "spin.json"
    write_config(tiny_image_config(tmp_path, (BRANCH_TO_SELF,)), config_path)
    qemu = qemu_build / binary("arm")
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(qemu_build), str(config_path)], cwd=REPO)
    try:
        wait_until(lambda: qemu_children_of(driver.pid, qemu), "the driver to start QEMU")
        (runner,) = qemu_children_of(driver.pid, qemu)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        wait_until(lambda: is_gone(runner), f"QEMU {runner} to die with its driver")
    finally:
        driver.kill()
        driver.wait()


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"cpu": "pentium"}, 'cpu "pentium" is not an ARM CPU model'),
        ({"boot": {"kernel": "/nonexistent/zImage"}}, "/nonexistent/zImage does not exist"),
    ],
)
def test_config_the_machine_refuses_is_a_runner_error_with_its_line(
    qemu_build: Path, tmp_path: Path, change: dict, complaint: str
) -> None:
    config = tiny_image_config(tmp_path, (BRANCH_TO_SELF,))
    config.MergeFrom(config_from_dict(change))
    with pytest.raises(RunnerError) as raised:
        run(config, qemu_build, limits=RunnerLimits(deadline_seconds=BOOT_DEADLINE_SECONDS))
    assert complaint in str(raised.value) and "\n" not in str(raised.value)


def test_first_guest_output_arrives_and_is_timed(qemu_build: Path, tmp_path: Path) -> None:
    finished = run(
        tiny_image_config(tmp_path, PRINT_A_THEN_SPIN), qemu_build, limits=RunnerLimits(deadline_seconds=3)
    )
    assert finished.result.console == b"A"
    assert finished.first_console_seconds is not None
    print(f"runner start-up (process start to first console byte): {finished.first_console_seconds:.3f} s")


def test_a_guest_flooding_its_console_stays_within_the_bound(qemu_build: Path, tmp_path: Path) -> None:
    limits = RunnerLimits(deadline_seconds=3, console_bytes=4096)
    result = run(tiny_image_config(tmp_path, PRINT_A_FOREVER), qemu_build, limits=limits).result
    assert result.console == b"A" * 4096
    assert result.console_dropped > 0


CONSOLE_DRIVER = """
import sys
from pathlib import Path
from explorer.runner.config import read_config
from explorer.runner.containment import RunnerLimits
from explorer.runner.launch import run
finished = run(read_config(Path(sys.argv[2])), Path(sys.argv[1]), limits=RunnerLimits(deadline_seconds=3),
               console=True)
print("exit reason", finished.result.exit.reason, "console kept", len(finished.result.console))
"""


def test_console_mode_puts_the_guest_on_a_terminal_and_gives_it_back(
    qemu_build: Path, tmp_path: Path
) -> None:
    config_path = tmp_path / "print.json"
    write_config(tiny_image_config(tmp_path, PRINT_A_THEN_SPIN), config_path)
    driver = f"{sys.executable} -c '{CONSOLE_DRIVER}' {qemu_build} {config_path}; stty -a"
    # script(1) runs the driver on a fresh pseudo-terminal, as a person at a shell would.
    shown = subprocess.run(
        ["script", "-qec", driver, "/dev/null"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=BOOT_DEADLINE_SECONDS,
        check=False,
    )
    assert shown.returncode == 0, shown.stdout + shown.stderr
    before_summary, _, after = shown.stdout.partition("exit reason")
    assert "A" in before_summary
    assert f" {ExitReason.EXIT_TIMEOUT} console kept 0" in after
    # The terminal is back in cooked mode with echo, whatever QEMU set before it was killed.
    settings = after.split()
    assert "icanon" in settings and "echo" in settings, after
