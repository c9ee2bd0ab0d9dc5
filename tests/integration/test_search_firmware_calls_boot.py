"""Firmware calls on a real kernel: armmp with the OMAP5 uEVM's device tree dies in init_IRQ on an
SMC to TI's secure monitor (omap_smc1, from an erratum workaround); the search has QEMU answer
SMCs and reaches user space."""

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


def test_a_search_answers_the_secure_monitor_call_and_reaches_user_space(
    corpus: Corpus, qemu_build: Path, tmp_path: Path
) -> None:
    explorer = [sys.executable, "-m", "explorer"]
    env = {**os.environ, "EXPLORER_QEMU": str(qemu_build)}
    work = tmp_path / "work"
    searched = subprocess.run(
        [*explorer, "search", corpus.kernel("armmp"), "--dtb", corpus.dtb("armmp", "omap5-uevm"),
         "--initrd", corpus.initramfs("armhf"), "--work", work, "--budget", "6m", "--workers", "2"],
        env=env, capture_output=True, text=True, timeout=SEARCH_DEADLINE_SECONDS, check=False,
    )  # fmt: skip
    assert searched.returncode == 0, searched.stderr[-3000:]
    shown = subprocess.run(
        [*explorer, "show", work, "--json"], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    summary = json.loads(shown.stdout)
    assert summary["reached_userspace"], summary["furthest_milestone"]
    assert summary["best"]["machine"]["psci_conduit"] == "smc"
    assert any(step["operator"] == "firmware_calls" for step in summary["best"]["path"]), summary["best"][
        "path"
    ]
