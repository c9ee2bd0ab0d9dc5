"""The search CLI's own parsing: budgets."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from explorer.cli.search import parse_duration
from explorer.errors import BadInput


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("1h30m", 5400), ("1.5m", 90), ("1h 2m 3s", 3723)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "15x", "m", "-5m", "1d"])
def test_bad_durations_are_one_line(text: str) -> None:
    with pytest.raises(BadInput, match="is not a duration"):
        parse_duration(text)


@given(st.text(max_size=12))
def test_any_text_parses_or_is_bad_input(text: str) -> None:
    with contextlib.suppress(BadInput):
        assert parse_duration(text) >= 0
