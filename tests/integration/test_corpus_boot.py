"""Ground truth for the whole project: on a stock QEMU board these corpus kernels reach user space.

Each boot must print the initramfs's marker and then its shell's prompt; leaving the shell powers
the machine off (its /init does), which ends the boot. The 60 s timeout only catches a boot that
hangs.
"""

from __future__ import annotations

import selectors
import subprocess
import time
from pathlib import Path

import pytest

from explorer.corpus import USERSPACE_MARKER, Corpus

BOOT_TIMEOUT_S = 60
PROMPT = b"/ # "


def boot(command: list[str]) -> tuple[str, float]:
    """Run QEMU to the shell after the marker, leave the shell, and wait for the power-off; the
    guest's serial output and the wall time it took."""
    started = time.monotonic()
    deadline = started + BOOT_TIMEOUT_S
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdin is not None and process.stdout is not None
    output = bytearray()
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while PROMPT not in output.partition(USERSPACE_MARKER.encode())[2]:
                tail = output[-2000:].decode(errors="replace")
                if time.monotonic() > deadline:
                    pytest.fail(f"no shell after the marker within {BOOT_TIMEOUT_S} s; serial tail:\n{tail}")
                if not selector.select(timeout=1.0):
                    continue
                chunk = process.stdout.read1(65536)
                if not chunk:
                    pytest.fail(f"QEMU ended before the shell; serial tail:\n{tail}")
                output += chunk
        process.stdin.write(b"exit\r")
        process.stdin.flush()
        rest, errors = process.communicate(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        pytest.fail(f"QEMU did not power off within {BOOT_TIMEOUT_S} s of leaving the shell")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, errors.decode(errors="replace")
    return (bytes(output) + rest).decode(errors="replace"), time.monotonic() - started


def qemu_arm_vexpress(kernel: Path, dtb: Path, initrd: Path) -> list[str]:
    return [
        "qemu-system-arm", "-M", "vexpress-a9", "-m", "512", "-nographic",
        "-kernel", str(kernel), "-dtb", str(dtb), "-initrd", str(initrd),
        "-append", "console=ttyAMA0 rdinit=/init",
    ]  # fmt: skip


def qemu_mips_malta(kernel: Path, initrd: Path) -> list[str]:
    return [
        "qemu-system-mipsel", "-M", "malta", "-m", "256", "-nographic",
        "-kernel", str(kernel), "-initrd", str(initrd),
        "-append", "nokaslr console=ttyS0 rdinit=/init",
    ]  # fmt: skip


@pytest.mark.qemu
def test_armmp_on_vexpress_a9_reaches_user_space_and_its_shell_and_powers_off_when_it_exits(
    corpus: Corpus, record_property: pytest.RecordProperty
) -> None:
    command = qemu_arm_vexpress(
        corpus.kernel("armmp"), corpus.dtb("armmp", "vexpress-v2p-ca9"), corpus.initramfs("armhf")
    )
    console, wall_s = boot(command)
    record_property("boot_wall_s", round(wall_s, 2))
    print(f"armmp on vexpress-a9: user space, its shell and power-off after {wall_s:.2f} s wall")
    assert USERSPACE_MARKER in console
    assert "Run /init as init process" in console


@pytest.mark.qemu
def test_malta_reaches_user_space_and_its_shell_and_powers_off_when_it_exits(
    corpus: Corpus, record_property: pytest.RecordProperty
) -> None:
    console, wall_s = boot(qemu_mips_malta(corpus.kernel("4kc-malta"), corpus.initramfs("mipsel")))
    record_property("boot_wall_s", round(wall_s, 2))
    print(f"4kc-malta on malta: user space, its shell and power-off after {wall_s:.2f} s wall")
    assert USERSPACE_MARKER in console
    assert "Run /init as init process" in console
