"""The secure world on a real kernel: armmp with the Banana Pi M3's device tree (Allwinner A83T)
dies in setup_arch, its platform's init_early programming the virtual counter's offset from
Monitor mode (secure_cntvoff_init: SCR, CNTVOFF), undefined in Non-secure SVC; the search enters
the kernel in Secure SVC and goes on to user space."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from explorer.corpus import Corpus

pytestmark = [pytest.mark.qemu, pytest.mark.corpus]

SEARCH_DEADLINE_SECONDS = 900


def test_a_search_enters_the_secure_world_and_reaches_user_space(
    corpus: Corpus, qemu_build: Path, tmp_path: Path
) -> None:
    explorer = [sys.executable, "-m", "explorer"]
    env = {**os.environ, "EXPLORER_QEMU": str(qemu_build)}
    work = tmp_path / "work"
    searched = subprocess.run(
        [*explorer, "search", corpus.kernel("armmp"), "--dtb", corpus.dtb("armmp", "sun8i-a83t-bananapi-m3"),
         "--initrd", corpus.initramfs("armhf"), "--work", work, "--budget", "6m", "--workers", "2"],
        env=env, capture_output=True, text=True, timeout=SEARCH_DEADLINE_SECONDS, check=False,
    )  # fmt: skip
    assert searched.returncode == 0, searched.stderr[-3000:]
    shown = subprocess.run(
        [*explorer, "show", work, "--json"], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    summary = json.loads(shown.stdout)
    assert summary["reached_userspace"], summary["furthest_milestone"]
    assert summary["best"]["machine"]["secure_entry"] is True
    path = summary["best"]["path"]
    assert any(step["operator"] == "secure_world" for step in path), path
