"""Ground truth for the whole project: on a stock QEMU board these corpus kernels reach user space.

Each boot must print the initramfs's marker and then end by itself (its /init powers off);
the 60 s timeout only catches a boot that hangs.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from explorer.corpus import USERSPACE_MARKER, Corpus

BOOT_TIMEOUT_S = 60


def boot(command: list[str]) -> tuple[str, float]:
    """Run QEMU to completion; the guest's serial output and the wall time it took."""
    started = time.monotonic()
    try:
        done = subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, timeout=BOOT_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as err:
        tail = (err.stdout or b"")[-2000:].decode(errors="replace")
        pytest.fail(f"QEMU did not power off within {BOOT_TIMEOUT_S} s; serial tail:\n{tail}")
    console = done.stdout.decode(errors="replace")
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return console, time.monotonic() - started


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
def test_armmp_on_vexpress_a9_reaches_user_space_and_powers_off(
    corpus: Corpus, record_property: pytest.RecordProperty
) -> None:
    command = qemu_arm_vexpress(
        corpus.kernel("armmp"), corpus.dtb("armmp", "vexpress-v2p-ca9"), corpus.initramfs("armhf")
    )
    console, wall_s = boot(command)
    record_property("boot_wall_s", round(wall_s, 2))
    print(f"armmp on vexpress-a9: user space and power-off after {wall_s:.2f} s wall")
    assert USERSPACE_MARKER in console
    assert "Run /init as init process" in console


@pytest.mark.qemu
def test_malta_reaches_user_space_and_powers_off(
    corpus: Corpus, record_property: pytest.RecordProperty
) -> None:
    console, wall_s = boot(qemu_mips_malta(corpus.kernel("4kc-malta"), corpus.initramfs("mipsel")))
    record_property("boot_wall_s", round(wall_s, 2))
    print(f"4kc-malta on malta: user space and power-off after {wall_s:.2f} s wall")
    assert USERSPACE_MARKER in console
    assert "Run /init as init process" in console
