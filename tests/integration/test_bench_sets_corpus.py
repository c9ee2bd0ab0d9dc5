"""The committed benchmark sets resolve in the real corpus; a DTB it lacks is one BadInput line."""

from __future__ import annotations

from pathlib import Path

import pytest

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
