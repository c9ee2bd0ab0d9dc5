"""The secure world on a real kernel: armmp with the Banana Pi M3's device tree (Allwinner A83T)
dies in setup_arch, its platform's init_early programming the virtual counter's offset from
Monitor mode (secure_cntvoff_init: SCR, CNTVOFF), undefined in Non-secure SVC; the search enters
the kernel in Secure SVC and goes on to user space."""

from __future__ import annotations

from pathlib import Path

import pytest

from explorer.corpus import Corpus
from tests.integration.rehosting import search_corpus_board

pytestmark = [pytest.mark.qemu, pytest.mark.corpus]


def test_a_search_enters_the_secure_world_and_reaches_user_space(
    corpus: Corpus, qemu_build: Path, tmp_path: Path
) -> None:
    summary = search_corpus_board(
        corpus, qemu_build, tmp_path / "work", "armmp", "sun8i-a83t-bananapi-m3", "6m"
    )
    assert summary["reached_userspace"], summary["furthest_milestone"]
    assert summary["best"]["machine"]["secure_entry"] is True
    path = summary["best"]["path"]
    assert any(step["operator"] == "secure_world" for step in path), path
