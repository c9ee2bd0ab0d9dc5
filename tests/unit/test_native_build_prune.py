"""Pruning of old QEMU build results (native/build.py): what goes, what always stays."""

from __future__ import annotations

import os
import time
from pathlib import Path

from explorer.runner import build as runner_build
from explorer.runner.build import MANIFEST

native_build = runner_build.native_build()

DAY = 24 * 3600


def result(cache: Path, name: str, age_seconds: float) -> Path:
    path = cache / name
    path.mkdir()
    (path / MANIFEST).write_text("{}")
    used = time.time() - age_seconds
    os.utime(path, (used, used))
    return path


def test_only_results_beyond_the_most_recent_and_unused_for_a_day_are_pruned(tmp_path: Path) -> None:
    current = result(tmp_path, "current", 10 * DAY)
    # Used an hour ago, and ten results used 2..11 days ago: the six most recently used stay.
    recent = result(tmp_path, "recent", 3600)
    old = [result(tmp_path, f"old{days:02d}", days * DAY) for days in range(2, 12)]
    source_tree = tmp_path / "qemu-10.2.2"
    source_tree.mkdir()
    (tmp_path / "stale.partial").mkdir()

    native_build.prune_results(tmp_path, keep=current)

    kept = {path.name for path in tmp_path.iterdir()}
    assert {"current", "recent", "qemu-10.2.2"} <= kept
    assert {path.name for path in old[:5]} <= kept
    assert not {path.name for path in old[5:]} & kept
    assert "stale.partial" not in kept
    assert recent.exists() and current.exists() and source_tree.exists()


def test_a_result_used_within_a_day_is_never_pruned(tmp_path: Path) -> None:
    current = result(tmp_path, "current", 0)
    recent = [result(tmp_path, f"recent{index}", 60 * index) for index in range(10)]
    native_build.prune_results(tmp_path, keep=current)
    assert all(path.exists() for path in recent)


def tree(cache: Path, name: str, age_seconds: float) -> Path:
    path = cache / name
    path.mkdir()
    (path / "tree-key").write_text("key")
    used = time.time() - age_seconds
    os.utime(path, (used, used))
    return path


def test_source_trees_beyond_the_most_recent_and_unused_for_a_day_are_pruned(tmp_path: Path) -> None:
    current = result(tmp_path, "current", 0)
    fresh = tree(tmp_path, "qemu-10.2.2-aaaaaaaaaaaa", 3600)
    old = [tree(tmp_path, f"qemu-10.2.2-{days:012d}", days * DAY) for days in range(2, 6)]
    native_build.prune_results(tmp_path, keep=current)
    kept = {path.name for path in tmp_path.iterdir()}
    # The three most recently used stay (one of them used within the day); older ones go.
    assert {fresh.name, old[0].name, old[1].name} <= kept
    assert not {old[2].name, old[3].name} & kept


def test_a_source_tree_used_within_a_day_is_never_pruned(tmp_path: Path) -> None:
    current = result(tmp_path, "current", 0)
    recent = [tree(tmp_path, f"qemu-10.2.2-{index:012d}", 60 * index) for index in range(6)]
    native_build.prune_results(tmp_path, keep=current)
    assert all(path.exists() for path in recent)
