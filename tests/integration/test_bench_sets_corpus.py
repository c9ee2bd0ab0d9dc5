"""The committed benchmark sets resolve in the real corpus; a DTB it lacks is one BadInput line; the
wide set is what benchmarks/draw_wide_set.py draws."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import draw_wide_set
from explorer.bench.sets import load_set, parse_set
from explorer.corpus import Corpus
from explorer.errors import BadInput


def test_the_committed_sets_resolve_in_the_real_corpus(corpus: Corpus) -> None:
    development = load_set("dev", lambda: corpus)
    assert len(development.firmware) == 9
    ts209 = next(firmware for firmware in development.firmware if firmware.name == "marvell-qnap-ts209")
    assert ts209.target.board_id == 1565 and ts209.target.dtb is None
    large = load_set("large", lambda: corpus)
    assert sum(firmware.name.startswith("armmp-") for firmware in large.firmware) >= 25
    assert any(firmware.name.startswith("marvell-") for firmware in large.firmware)
    assert any(firmware.name == "malta" for firmware in large.firmware)


def test_a_dtb_the_corpus_lacks_is_bad_input(corpus: Corpus, tmp_path: Path) -> None:
    entry = {"name": "a", "flavour": "armmp", "dtb": "no-such-board", "initrd": "marker"}
    with pytest.raises(BadInput, match="set tiny, firmware a: no device tree for 'no-such-board'"):
        parse_set("tiny", {"firmware": [entry]}, tmp_path, lambda: corpus)


def test_the_committed_wide_set_is_what_its_script_draws_from_the_locked_corpus(corpus: Corpus) -> None:
    drawn, _ = draw_wide_set.draw(corpus)
    assert draw_wide_set.WIDE_SET.read_text() == draw_wide_set.set_text(drawn)
    wide = load_set("wide", lambda: corpus)
    assert [firmware.name for firmware in wide.firmware] == [board.name for board in drawn]
    taken = draw_wide_set.excluded_boards()
    assert not any(board.key in taken for board in drawn)
    assert sum(board.flavour == "armmp" for board in drawn) == 30
    assert sum(board.flavour == "marvell" for board in drawn) == 10


def test_the_draw_passes_over_boards_of_another_architecture_class(corpus: Corpus) -> None:
    # The armmp package builds its SoC families' ARMv6 trees too (the first Raspberry Pi's), and
    # the M-profile STM32 boards' (no CPU node, an NVIC): the ARMv7 kernel runs on neither.
    runs = [
        draw_wide_set.runnable(corpus, draw_wide_set.Board("armmp", dtb=board), "ARMv7")
        for board in ("bcm2835-rpi-b", "stm32f429-disco", "bcm2837-rpi-3-b", "vexpress-v2p-ca9")
    ]
    assert runs == [False, False, True, True]
