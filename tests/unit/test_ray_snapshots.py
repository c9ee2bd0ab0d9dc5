"""Snapshots through the Ray executor without a cluster: what the master puts, what a worker keeps.

As in tests/unit/test_ray_executor.py, `ObjectStore` stands for Ray's object store; the real one,
with real snapshots, is exercised by tests/integration/test_search_ray_snapshots.py.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pytest
import ray.exceptions
from hypothesis import given, settings
from hypothesis import strategies as st

from explorer.execution.ray_executor import write_snapshot
from explorer.execution.ray_shipping import SNAPSHOT_FILES, ShippedFile, ShippedSnapshot, Shipper
from explorer.execution.ray_worker import received_snapshot, worker_snapshots
from explorer.execution.snapshot_cache import SnapshotCache
from explorer.runner.snapshot import MANIFEST_FILE, Manifest, Snapshot, write_manifest
from tests.unit.test_ray_executor import BUILD_HASH, ObjectStore, job, make_build, write

POINT = 2_000_000_000


PARENT = "ab" * 32


def snapshot_files(tag: str) -> dict[str, bytes]:
    """A snapshot's files: placeholder parts, and a real manifest of the build BUILD_HASH."""
    files = {name: f"{tag}: {name}".encode() for name in SNAPSHOT_FILES}
    directory = Path(tempfile.mkdtemp())
    write_manifest(directory, Manifest(BUILD_HASH, POINT, POINT + 7, tag.encode(), 0))
    files[MANIFEST_FILE] = (directory / MANIFEST_FILE).read_bytes()
    return files


def saved(directory: Path, tag: str = "parent") -> Path:
    write_snapshot(snapshot_files(tag), directory)
    return directory


def shipper(tmp_path: Path, store: ObjectStore) -> Shipper:
    return Shipper(make_build(tmp_path / "qemu" / BUILD_HASH), store.put)


def continuing(directory: Path, parent: str = PARENT) -> Snapshot:
    return Snapshot(parent, POINT, directory, save=False)


def test_a_continue_job_carries_the_snapshots_content_put_once_and_its_snapshot_unchanged(
    tmp_path: Path,
) -> None:
    store = ObjectStore()
    ships = shipper(tmp_path, store)
    kernel = write(tmp_path / "zImage", b"kernel")
    snapshot = continuing(saved(tmp_path / "snapshots" / "key"))
    sent = [
        shipped
        for shipped, _ in ships.jobs([replace(job(name, kernel=kernel), snapshot=snapshot) for name in "abc"])
    ]
    assert len(store.objects) == 4 + len(SNAPSHOT_FILES)  # kernel, build (3), the snapshot once
    first = sent[0].snapshot
    assert first is not None and all(shipped.snapshot is first for shipped in sent)
    assert {name: store.objects[file.content] for name, file in first.files.items()} == snapshot_files(
        "parent"
    )
    # The job's snapshot travels as it is: the worker replaces only its directory.
    assert all(shipped.job.snapshot == snapshot for shipped in sent)


def test_a_save_job_carries_its_snapshot_and_no_files(tmp_path: Path) -> None:
    snapshot = Snapshot(PARENT, POINT, tmp_path / "staging", save=True)
    ((sent, _),) = shipper(tmp_path, ObjectStore()).jobs([replace(job(PARENT), snapshot=snapshot)])
    assert sent.job.snapshot == snapshot and sent.snapshot is None


def test_a_snapshot_gone_from_the_master_makes_a_full_boot(tmp_path: Path) -> None:
    snapshot = continuing(tmp_path / "evicted")
    ((sent, _),) = shipper(tmp_path, ObjectStore()).jobs([replace(job("a"), snapshot=snapshot)])
    assert sent.snapshot is None and sent.job.snapshot is None


def test_the_master_keeps_put_only_the_snapshots_of_the_last_jobs(tmp_path: Path) -> None:
    store = ObjectStore()
    ships = shipper(tmp_path, store)
    first, second = (continuing(saved(tmp_path / name, name), name) for name in ("s1", "s2"))
    ships.jobs([replace(job("a"), snapshot=first), replace(job("b"), snapshot=second)])
    put = len(store.objects)
    ships.jobs([replace(job("c"), snapshot=second)])  # used by the last jobs: not put again
    assert len(store.objects) == put
    ships.jobs([replace(job("d"), snapshot=first)])  # not used by the last jobs: put again
    assert len(store.objects) == put + len(SNAPSHOT_FILES)


def shipped_snapshot(files: dict[str, bytes], store: ObjectStore) -> ShippedSnapshot:
    return ShippedSnapshot(
        {
            name: ShippedFile(hashlib.sha256(content).hexdigest(), store.put(content))
            for name, content in files.items()
        }
    )


def worker_cache(root: Path) -> SnapshotCache:
    return SnapshotCache(root, make_build(root.parent / "qemu" / BUILD_HASH).qemu_dir, 1 << 30)


def test_a_worker_unpacks_a_snapshot_under_its_content_address_once(tmp_path: Path) -> None:
    store = ObjectStore()
    shipped = shipped_snapshot(snapshot_files("parent"), store)
    cache = worker_cache(tmp_path / "snapshots")
    for _ in range(3):
        directory = received_snapshot(shipped, continuing(tmp_path / "master"), cache, store.fetch)
    assert directory == tmp_path / "snapshots" / cache.key(PARENT, POINT)
    assert {name: (directory / name).read_bytes() for name in SNAPSHOT_FILES} == snapshot_files("parent")
    assert store.fetched == len(SNAPSHOT_FILES)


def test_a_damaged_file_in_a_workers_cache_makes_it_fetch_the_snapshot_again(tmp_path: Path) -> None:
    store = ObjectStore()
    shipped = shipped_snapshot(snapshot_files("parent"), store)
    cache = worker_cache(tmp_path / "snapshots")
    snapshot = continuing(tmp_path / "master")
    directory = received_snapshot(shipped, snapshot, cache, store.fetch)
    assert directory is not None
    (directory / SNAPSHOT_FILES[0]).write_bytes(b"bit rot")
    assert received_snapshot(shipped, snapshot, cache, store.fetch) == directory
    assert {name: (directory / name).read_bytes() for name in SNAPSHOT_FILES} == snapshot_files("parent")
    assert store.fetched == 2 * len(SNAPSHOT_FILES)


def test_a_snapshot_received_other_than_its_sha256s_makes_a_full_boot(tmp_path: Path) -> None:
    store = ObjectStore()
    shipped = shipped_snapshot(snapshot_files("parent"), store)
    store.objects[shipped.files[SNAPSHOT_FILES[0]].content] = b"damaged on the way"
    cache = worker_cache(tmp_path / "snapshots")
    assert received_snapshot(shipped, continuing(tmp_path / "master"), cache, store.fetch) is None
    assert list((tmp_path / "snapshots").iterdir()) == []


def test_a_snapshot_cache_a_worker_cannot_make_makes_a_full_boot(tmp_path: Path) -> None:
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "snapshots").write_bytes(b"a file where the cache's directory should be")
    assert worker_snapshots(tmp_path, make_build(tmp_path / "qemu" / BUILD_HASH).qemu_dir) is None


def test_a_lost_object_makes_a_full_boot(tmp_path: Path) -> None:
    def lost(handle: object) -> bytes:
        raise ray.exceptions.ObjectLostError("00" * 28, None, "")

    shipped = shipped_snapshot(snapshot_files("p"), ObjectStore())
    cache = worker_cache(tmp_path / "snapshots")
    assert received_snapshot(shipped, continuing(tmp_path / "master"), cache, lost) is None


def entry(root: Path, name: str, size: int, used: float) -> Path:
    directory = root / name
    directory.mkdir()
    (directory / "vm.mig").write_bytes(os.urandom(size))
    os.utime(directory, (used, used))
    return directory


BLOCK = 4096  # sizes in whole blocks: the cache counts bytes on disk


# Files on disk: a busy machine's I/O, not the code, would decide a per-example deadline.
@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=16), min_size=1, max_size=8),
    limit=st.integers(min_value=0, max_value=64),
    keep_index=st.integers(min_value=0),
)
def test_eviction_removes_the_least_recently_used_until_the_rest_fit_never_the_one_in_use(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int], limit: int, keep_index: int
) -> None:
    root = tmp_path_factory.mktemp("snapshots")
    cache = SnapshotCache(root, make_build(root.parent / "qemu" / BUILD_HASH).qemu_dir, limit * BLOCK)
    now = time.time()
    # Entry i was last used i seconds before the newest: oldest last.
    entries = [entry(root, f"s{index}", size * BLOCK, now - index) for index, size in enumerate(sizes)]
    keep = entries[keep_index % len(entries)]
    cache.evict(keep=keep)
    assert keep.exists()
    room = limit - sizes[entries.index(keep)]
    others = [index for index, directory in enumerate(entries) if directory != keep]
    left = [index for index in others if entries[index].exists()]
    evicted = [index for index in others if not entries[index].exists()]
    left_blocks = sum(sizes[index] for index in left)
    assert left_blocks <= max(room, 0)
    if evicted:
        # The oldest went first, and no more than needed: the newest evicted did not fit.
        assert min(evicted) > max(left, default=-1)
        assert left_blocks + sizes[min(evicted)] > room
