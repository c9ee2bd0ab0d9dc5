"""The bench's ground truth on real QEMU boards: armmp on vexpress-a9 and malta boot to user space
with the marker initramfs, watched by the rehost plugin; a rerun boots nothing; a board the build
lacks is a row saying so."""

from __future__ import annotations

from pathlib import Path

import pytest

from explorer.bench.campaign import read_results, run_ground_truth
from explorer.bench.sets import BenchSet, load_set
from explorer.bench.stock import NOT_IN_BUILD, StockBooter, StockModel, model_of
from explorer.corpus import Corpus
from explorer.search.session import runner_setup

pytestmark = pytest.mark.qemu


def dev_set_part(corpus: Corpus, *names: str) -> BenchSet:
    dev = load_set("dev", lambda: corpus)
    return BenchSet("dev", tuple(firmware for firmware in dev.firmware if firmware.name in names))


def test_armmp_on_vexpress_a9_and_malta_reach_user_space_and_a_rerun_boots_nothing(
    corpus: Corpus, qemu_build: Path, tmp_path: Path
) -> None:
    bench_set = dev_set_part(corpus, "armmp-vexpress-v2p-ca9", "malta", "armmp-am335x-boneblack")
    stock = tmp_path / "stock.jsonl"
    rows = run_ground_truth(bench_set, stock, runner_setup(qemu_build), corpus_loader=lambda: corpus)

    # am335x-boneblack has no QEMU board: no row.
    assert [(row["firmware"], row["machine"]) for row in rows] == [
        ("armmp-vexpress-v2p-ca9", "vexpress-a9"),
        ("malta", "malta"),
    ]
    for row in rows:
        assert row["reached_userspace"], row
        assert row["furthest_milestone"] == "user space"
        assert row["ended"].startswith("user space")
        assert row["wall_seconds"] > 0
        assert row["wall_seconds_to_userspace"] == row["wall_seconds"]
    assert read_results(stock) == rows

    written = stock.read_bytes()
    assert run_ground_truth(bench_set, stock, runner_setup(qemu_build), corpus_loader=lambda: corpus) == rows
    assert stock.read_bytes() == written


def test_a_board_missing_from_the_build_is_a_row_saying_so(corpus: Corpus, qemu_build: Path) -> None:
    (firmware,) = dev_set_part(corpus, "armmp-vexpress-v2p-ca9").firmware
    assert model_of(firmware, corpus) is not None
    missing = StockModel("no-such-board", "cortex-a9", 512 << 20, "ttyAMA0")
    row = StockBooter(runner_setup(qemu_build)).boot(firmware, missing)
    assert row == {
        "firmware": "armmp-vexpress-v2p-ca9",
        "machine": "no-such-board",
        "furthest_milestone": None,
        "reached_userspace": False,
        "wall_seconds": 0.0,
        "ended": NOT_IN_BUILD,
        "wall_seconds_to_userspace": None,
    }
