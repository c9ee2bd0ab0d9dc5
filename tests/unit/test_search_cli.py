"""The search CLI's own parsing: budgets."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from explorer.cli.search import parse_duration
from explorer.errors import BadInput
from tests.unit.test_cli import explorer


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


def test_a_work_directory_that_is_not_a_store_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine\n")
    resume = ["resume", str(tmp_path), "--qemu", str(tmp_path)]
    for command in (["status", str(tmp_path)], ["show", str(tmp_path)], resume):
        result = explorer(*command, cache=tmp_path / "cache")
        assert result.returncode == 2, result
        assert result.stderr.startswith("explorer: error: ") and result.stderr.count("\n") == 1
        assert "Traceback" not in result.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine\n"


def test_dtb_and_board_id_together_are_refused(tmp_path: Path) -> None:
    kernel, dtb = tmp_path / "zImage", tmp_path / "board.dtb"
    kernel.write_bytes(b"\0" * 64)
    dtb.write_bytes(b"\0" * 64)
    result = explorer(
        "search", str(kernel), "--dtb", str(dtb), "--board-id", "1565", "--work", str(tmp_path / "w"),
        "--qemu", str(tmp_path), cache=tmp_path / "cache",
    )  # fmt: skip
    assert result.returncode == 2
    assert "not both" in result.stderr
    assert not (tmp_path / "w").exists()


def test_a_bad_budget_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    result = explorer(
        "search", "/nonexistent", "--budget", "soon", "--work", str(tmp_path / "w"), "--qemu", str(tmp_path),
        cache=tmp_path / "cache",
    )  # fmt: skip
    assert result.returncode == 2
    assert not (tmp_path / "w").exists()
