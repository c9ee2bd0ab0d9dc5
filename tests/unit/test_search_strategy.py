"""Strategies choose one frontier entry, the same one for the same entries and generator."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from explorer.errors import BadInput
from explorer.search.strategy import STRATEGIES, best_first, breadth_first, depth_first, strategy_named
from explorer.store import FrontierEntry

entries = st.lists(
    st.builds(
        FrontierEntry,
        sequence=st.integers(0, 10**6),
        score=st.binary(min_size=2, max_size=2),
        state_id=st.text("0123456789abcdef", min_size=64, max_size=64),
        depth=st.integers(0, 50),
    ),
    min_size=1,
    max_size=30,
    unique_by=lambda entry: entry.sequence,
)


@given(entries, st.sampled_from(sorted(STRATEGIES)), st.integers())
def test_choice_is_an_entry_and_reproducible(frontier: list[FrontierEntry], name: str, seed: int) -> None:
    strategy = strategy_named(name)
    chosen = strategy(frontier, random.Random(seed))
    assert chosen in frontier
    shuffled = list(reversed(frontier))
    assert strategy(shuffled, random.Random(seed)) == chosen


@given(entries)
def test_best_first_takes_the_highest_score(frontier: list[FrontierEntry]) -> None:
    assert best_first(frontier, random.Random(0)).score == max(entry.score for entry in frontier)


@given(entries)
def test_breadth_first_takes_the_shallowest(frontier: list[FrontierEntry]) -> None:
    assert breadth_first(frontier, random.Random(0)).depth == min(entry.depth for entry in frontier)


@given(entries)
def test_depth_first_takes_the_deepest(frontier: list[FrontierEntry]) -> None:
    assert depth_first(frontier, random.Random(0)).depth == max(entry.depth for entry in frontier)


def test_unknown_strategy_is_one_line() -> None:
    with pytest.raises(BadInput, match="use one of best-first"):
        strategy_named("simulated-annealing")
