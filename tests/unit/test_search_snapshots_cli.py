"""The search CLI's snapshot options: --snapshots/--no-snapshots, --snapshot-limit, and the counters
`explorer status` prints (a search on a real kernel through them: tests/integration/
test_search_snapshots_cli_boot.py)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import typer
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from explorer.cli import bench, search
from explorer.cli.search import DEFAULT_SNAPSHOT_LIMIT, parse_size
from explorer.errors import BadInput
from explorer.search.boot_sharing import DEFAULT_SNAPSHOT_LIMIT_BYTES
from explorer.store import Generation, Store
from tests.unit.test_cli import explorer


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4G", 4 << 30),
        ("512M", 512 << 20),
        ("512m", 512 << 20),
        ("1.5G", 3 << 29),
        ("64KiB", 64 << 10),
        ("2gb", 2 << 30),
        ("1T", 1 << 40),
        ("4096", 4096),
        (" 8 M ", 8 << 20),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "big", "4X", "G", "-1G", "0", "0M", "4ib", "1e9", "4 G G"])
def test_bad_sizes_are_one_line(text: str) -> None:
    with pytest.raises(BadInput, match=r"--snapshot-limit .* is not a size above zero") as raised:
        parse_size(text)
    assert "\n" not in str(raised.value)


@given(st.text(max_size=12))
def test_any_text_is_a_positive_size_or_bad_input(text: str) -> None:
    with contextlib.suppress(BadInput):
        assert parse_size(text) > 0


def test_the_default_limit_is_the_caches_own() -> None:
    assert parse_size(DEFAULT_SNAPSHOT_LIMIT) == DEFAULT_SNAPSHOT_LIMIT_BYTES


@pytest.mark.parametrize("command", ["search", "resume", "bench"])
def test_search_resume_and_bench_offer_the_snapshot_options(command: str) -> None:
    application = typer.Typer(rich_markup_mode=None)
    search.register(application)
    bench.register(application)
    shown = CliRunner().invoke(application, [command, "--help"], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    for option in ("--snapshots", "--no-snapshots", "--snapshot-limit"):
        assert option in shown.output


def test_a_bad_limit_is_refused_in_one_line_before_anything_is_created(tmp_path: Path) -> None:
    kernel = tmp_path / "zImage"
    kernel.write_bytes(b"\0" * 64)
    new = ["search", str(kernel), "--work", str(tmp_path / "w"), "--snapshot-limit", "lots"]
    for command in (new, ["resume", str(tmp_path / "w"), "--snapshot-limit", "0"]):
        result = explorer(*command, "--qemu", str(tmp_path), cache=tmp_path / "cache")
        assert result.returncode == 2, result
        assert (
            result.stderr.startswith("explorer: error: --snapshot-limit") and result.stderr.count("\n") == 1
        )
    assert not (tmp_path / "w").exists()


def test_status_says_what_snapshots_did_only_when_the_search_used_them(tmp_path: Path) -> None:
    with_snapshots, without = tmp_path / "with", tmp_path / "without"
    counters = {"snapshots_taken": 2.0, "runs_from_snapshots": 67.0, "snapshot_seconds": 6.4}
    for work, added in ((with_snapshots, counters), (without, {})):
        with Store.create(work, {}) as store:
            store.commit(Generation(number=0, expanded=None, counters={"wall_seconds": 1.0, **added}))
    shown = explorer("status", str(with_snapshots), cache=tmp_path / "cache")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[1] == "snapshots: 2 taken in 6 s, 67 runs continued from one"
    shown = explorer("status", str(without), cache=tmp_path / "cache")
    assert shown.returncode == 0 and "snapshots" not in shown.stdout
