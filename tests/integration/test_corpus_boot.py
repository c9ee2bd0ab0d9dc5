"""Ground truth for the whole project: on a stock QEMU board these corpus kernels reach user space.

Each boot must print the initramfs's marker (its /init then starts a shell, and the boot is
stopped there); the hang guard only catches a boot that hangs.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from explorer.corpus import USERSPACE_MARKER, Corpus
from tests.integration.rehosting import run_until


def boot(command: list[str]) -> tuple[str, float]:
    """Run QEMU until the marker; the guest's serial output and the wall time it took."""
    started = time.monotonic()
    reached, console = run_until(command, USERSPACE_MARKER)
    if not reached:
        pytest.fail(f"no marker (QEMU exited, or the hang guard passed); serial tail:\n{console[-2000:]}")
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
def test_armmp_on_vexpress_a9_reaches_user_space(
    corpus: Corpus, record_property: pytest.RecordProperty
) -> None:
    command = qemu_arm_vexpress(
        corpus.kernel("armmp"), corpus.dtb("armmp", "vexpress-v2p-ca9"), corpus.initramfs("armhf")
    )
    console, wall_s = boot(command)
    record_property("boot_wall_s", round(wall_s, 2))
    print(f"armmp on vexpress-a9: user space after {wall_s:.2f} s wall")
    assert USERSPACE_MARKER in console
    assert "Run /init as init process" in console


@pytest.mark.qemu
def test_malta_reaches_user_space(corpus: Corpus, record_property: pytest.RecordProperty) -> None:
    console, wall_s = boot(qemu_mips_malta(corpus.kernel("4kc-malta"), corpus.initramfs("mipsel")))
    record_property("boot_wall_s", round(wall_s, 2))
    print(f"4kc-malta on malta: user space after {wall_s:.2f} s wall")
    assert USERSPACE_MARKER in console
    assert "Run /init as init process" in console
