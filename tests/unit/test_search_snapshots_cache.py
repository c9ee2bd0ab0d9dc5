"""The snapshot cache beside a store: content-addressed entries, size-bounded, never fatal when damaged.

The entries here are snapshot directories with a real manifest and placeholder parts (what
read_manifest checks); tests/integration/test_search_snapshots_invariant.py keeps a real one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from explorer.execution.snapshot_cache import SnapshotCache
from explorer.runner.snapshot import (
    CONSOLE_FILE,
    EVENTS_FILE,
    MANIFEST_FILE,
    PLUGIN_STATE_FILE,
    VM_FILE,
    Manifest,
    snapshot_key,
    write_manifest,
)
from explorer.search.boot_sharing import SNAPSHOTS_DIRECTORY, snapshot_cache

REPO = Path(__file__).resolve().parents[2]
PARENT = "ab" * 32
POINT = 2_000_000_000


def qemu_build(tmp_path: Path, name: str = "6baa2e9cc85bddc9") -> Path:
    build = tmp_path / name
    build.mkdir(exist_ok=True)
    return build


def write_snapshot(directory: Path, build: str, point: int, vm_bytes: int = 4096) -> None:
    for part in (PLUGIN_STATE_FILE, EVENTS_FILE, CONSOLE_FILE):
        (directory / part).write_bytes(b"x")
    (directory / VM_FILE).write_bytes(os.urandom(vm_bytes))
    write_manifest(directory, Manifest(build, point, point + 7, b"config", 0))


def taken(cache: SnapshotCache, build: Path, parent: str, point: int, vm_bytes: int = 4096) -> Path | None:
    staging = cache.staging(parent, point)
    write_snapshot(staging, build.name, point, vm_bytes)
    return cache.keep(staging, parent, point)


def test_a_kept_snapshot_is_found_under_its_key_and_survives_a_new_cache(tmp_path: Path) -> None:
    build = qemu_build(tmp_path)
    kept = taken(snapshot_cache(tmp_path, build), build, PARENT, POINT)
    assert kept == tmp_path / SNAPSHOTS_DIRECTORY / snapshot_key(build.name, PARENT, POINT)
    assert snapshot_cache(tmp_path, build).get(PARENT, POINT) == kept
    assert snapshot_cache(tmp_path, build).get(PARENT, POINT + 1) is None


def test_the_key_names_build_parent_and_point() -> None:
    keys = {
        snapshot_key("b1", PARENT, POINT),
        snapshot_key("b2", PARENT, POINT),
        snapshot_key("b1", "cd" * 32, POINT),
    }
    assert len(keys | {snapshot_key("b1", PARENT, POINT + 1)}) == 4


def test_a_snapshot_of_another_build_is_removed_not_used(tmp_path: Path) -> None:
    build = qemu_build(tmp_path)
    cache = snapshot_cache(tmp_path, build)
    foreign = tmp_path / SNAPSHOTS_DIRECTORY / cache.key(PARENT, POINT)
    foreign.mkdir()
    write_snapshot(foreign, "0000000000000000", POINT)
    assert cache.get(PARENT, POINT) is None
    assert not foreign.exists()


def test_a_damaged_entry_is_removed_not_fatal(tmp_path: Path) -> None:
    build = qemu_build(tmp_path)
    cache = snapshot_cache(tmp_path, build)
    kept = taken(cache, build, PARENT, POINT)
    assert kept is not None
    (kept / MANIFEST_FILE).write_text("{not json")
    assert cache.get(PARENT, POINT) is None
    assert not kept.exists()


def test_a_save_that_wrote_nothing_is_not_kept(tmp_path: Path) -> None:
    build = qemu_build(tmp_path)
    cache = snapshot_cache(tmp_path, build)
    staging = cache.staging(PARENT, POINT)
    assert cache.keep(staging, PARENT, POINT) is None
    assert list((tmp_path / SNAPSHOTS_DIRECTORY).iterdir()) == []


def test_leftovers_of_a_killed_save_are_removed_when_a_cache_opens_a_live_writers_stay(
    tmp_path: Path,
) -> None:
    build = qemu_build(tmp_path)
    # A save staged by a process that has ended since (killed half-way).
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from explorer.search.boot_sharing import snapshot_cache; "
            "snapshot_cache(Path(sys.argv[1]), Path(sys.argv[2])).staging(sys.argv[3], int(sys.argv[4]))",
            str(tmp_path),
            str(build),
            PARENT,
            str(POINT),
        ],
        check=True,
        cwd=REPO,
    )
    assert len(list((tmp_path / SNAPSHOTS_DIRECTORY).iterdir())) == 1
    writing = snapshot_cache(tmp_path, build).staging(PARENT, POINT + 1)
    assert list((tmp_path / SNAPSHOTS_DIRECTORY).iterdir()) == [writing]
    snapshot_cache(tmp_path, build)
    assert writing.exists()


@settings(deadline=None, max_examples=20)
@given(uses=st.lists(st.integers(0, 5), min_size=1, max_size=12))
def test_the_cache_stays_within_its_limit_and_evicts_the_least_recently_used(tmp_path_factory, uses) -> None:
    tmp_path = tmp_path_factory.mktemp("cache")
    build = qemu_build(tmp_path)
    one = 64 << 10
    cache = snapshot_cache(tmp_path, build, limit_bytes=3 * one + (8 << 10))
    last_used: dict[int, int] = {}
    for time, point in enumerate(uses):
        if cache.get(PARENT, point) is None:
            assert taken(cache, build, PARENT, point, vm_bytes=one) is not None
        # mtime granularity must not decide the order: set it explicitly
        os.utime(cache.get(PARENT, point), (time, time))  # type: ignore[arg-type]
        last_used[point] = time
        assert cache.size_bytes() <= 3 * one + (8 << 10)
    present = {
        point for point in last_used if (tmp_path / SNAPSHOTS_DIRECTORY / cache.key(PARENT, point)).exists()
    }
    newest = sorted(last_used, key=last_used.__getitem__)[-len(present) :]
    assert present == set(newest)
    assert uses[-1] in present
