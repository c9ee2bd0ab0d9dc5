"""Firmware calls on a real kernel: armmp with the OMAP5 uEVM's device tree dies in init_IRQ on an
SMC to TI's secure monitor (omap_smc1, from an erratum workaround); the search has QEMU answer
SMCs and reaches user space."""

from __future__ import annotations

from pathlib import Path

import pytest

from explorer.corpus import Corpus
from tests.integration.rehosting import search_corpus_board

pytestmark = [pytest.mark.qemu, pytest.mark.corpus]


def test_a_search_answers_the_secure_monitor_call_and_reaches_user_space(
    corpus: Corpus, qemu_build: Path, tmp_path: Path
) -> None:
    summary = search_corpus_board(corpus, qemu_build, tmp_path / "work", "armmp", "omap5-uevm", "6m")
    assert summary["reached_userspace"], summary["furthest_milestone"]
    assert summary["best"]["machine"]["psci_conduit"] == "smc"
    assert any(step["operator"] == "firmware_calls" for step in summary["best"]["path"]), summary["best"][
        "path"
    ]
