"""Snapshots through the Ray executor without a cluster: what the master puts, what a worker keeps.

As in tests/unit/test_ray_executor.py, `ObjectStore` stands for Ray's object store; the real one,
with real snapshots, is exercised by tests/integration/test_search_ray_snapshots.py.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest
import ray.exceptions
from hypothesis import given, settings
from hypothesis import strategies as st

from explorer.execution.jobs import SnapshotUse
from explorer.execution.ray_executor import write_snapshot
from explorer.execution.ray_shipping import (
    SHIPPED_SNAPSHOTS_KEPT,
    SNAPSHOT_FILES,
    ShippedFile,
    ShippedSnapshot,
    Shipper,
    snapshot_digest,
)
from explorer.execution.ray_worker import (
    SAVING_PREFIX,
    STALE_SAVE_SECONDS,
    evict_snapshots,
    received_snapshot,
)
from tests.unit.test_ray_executor import BUILD_HASH, ObjectStore, job, make_build, write

POINT = 2_000_000_000


def snapshot_files(tag: str) -> dict[str, bytes]:
    return {name: f"{tag}: {name}".encode() for name in SNAPSHOT_FILES}


def saved(directory: Path, tag: str = "parent") -> Path:
    write_snapshot(snapshot_files(tag), directory)
    return directory


def digest_of(files: dict[str, bytes]) -> str:
    return snapshot_digest({name: hashlib.sha256(content).hexdigest() for name, content in files.items()})


def shipper(tmp_path: Path, store: ObjectStore) -> Shipper:
    return Shipper(make_build(tmp_path / "qemu" / BUILD_HASH), store.put)


def test_a_continue_job_carries_the_snapshots_content_put_once_and_no_master_path(tmp_path: Path) -> None:
    store = ObjectStore()
    ships = shipper(tmp_path, store)
    kernel = write(tmp_path / "zImage", b"kernel")
    directory = saved(tmp_path / "snapshots" / "key")
    use = SnapshotUse(directory, POINT, save=False)
    sent = [ships.job(replace(job(name, kernel=kernel), snapshot=use))[0] for name in "abc"]
    assert len(store.objects) == 4 + len(SNAPSHOT_FILES)  # kernel, build (3), the snapshot once
    first = sent[0].resume
    assert first is not None and all(shipped.resume is first for shipped in sent)
    assert first.point == POINT and first.digest == digest_of(snapshot_files("parent"))
    assert {name: store.objects[file.content] for name, file in first.files.items()} == snapshot_files(
        "parent"
    )
    # What reaches a worker boots in full unless it unpacks the snapshot: no path of the master's.
    assert all(shipped.job.snapshot is None and shipped.save_at is None for shipped in sent)


def test_a_save_job_carries_only_its_point(tmp_path: Path) -> None:
    store = ObjectStore()
    use = SnapshotUse(tmp_path / "staging.partial", POINT, save=True)
    sent, _ = shipper(tmp_path, store).job(replace(job("snapshot:1"), snapshot=use))
    assert sent.save_at == POINT and sent.resume is None and sent.job.snapshot is None


def test_a_snapshot_gone_from_the_master_makes_a_full_boot(tmp_path: Path) -> None:
    use = SnapshotUse(tmp_path / "evicted", POINT, save=False)
    sent, _ = shipper(tmp_path, ObjectStore()).job(replace(job("a"), snapshot=use))
    assert sent.resume is None and sent.job.snapshot is None and sent.save_at is None


def test_the_master_keeps_only_the_last_snapshots_put(tmp_path: Path) -> None:
    store = ObjectStore()
    ships = shipper(tmp_path, store)
    uses = [
        SnapshotUse(saved(tmp_path / f"s{number}", str(number)), POINT, save=False)
        for number in range(SHIPPED_SNAPSHOTS_KEPT + 1)
    ]
    for use in uses:
        ships.snapshot(use)
    put = len(store.objects)
    ships.snapshot(uses[-1])  # among the last: not put again
    assert len(store.objects) == put
    ships.snapshot(uses[0])  # forgotten: put again
    assert len(store.objects) == put + len(SNAPSHOT_FILES)


def shipped_snapshot(files: dict[str, bytes], store: ObjectStore) -> ShippedSnapshot:
    shipped = {
        name: ShippedFile(hashlib.sha256(content).hexdigest(), store.put(content))
        for name, content in files.items()
    }
    return ShippedSnapshot(digest_of(files), POINT, shipped)


def test_a_worker_unpacks_a_snapshot_under_its_digest_once(tmp_path: Path) -> None:
    store = ObjectStore()
    shipped = shipped_snapshot(snapshot_files("parent"), store)
    for _ in range(3):
        directory = received_snapshot(shipped, tmp_path / "snapshots", store.fetch)
    assert directory == tmp_path / "snapshots" / shipped.digest
    assert {name: (directory / name).read_bytes() for name in SNAPSHOT_FILES} == snapshot_files("parent")
    assert store.fetched == len(SNAPSHOT_FILES)


def test_a_damaged_file_in_a_workers_cache_is_fetched_again(tmp_path: Path) -> None:
    store = ObjectStore()
    shipped = shipped_snapshot(snapshot_files("parent"), store)
    directory = received_snapshot(shipped, tmp_path, store.fetch)
    assert directory is not None
    (directory / SNAPSHOT_FILES[0]).write_bytes(b"bit rot")
    (directory / SNAPSHOT_FILES[1]).unlink()
    assert received_snapshot(shipped, tmp_path, store.fetch) == directory
    assert {name: (directory / name).read_bytes() for name in SNAPSHOT_FILES} == snapshot_files("parent")
    assert store.fetched == len(SNAPSHOT_FILES) + 2


def test_a_snapshot_received_other_than_its_digest_makes_a_full_boot(tmp_path: Path) -> None:
    store = ObjectStore()
    shipped = shipped_snapshot(snapshot_files("parent"), store)
    store.objects[shipped.files[SNAPSHOT_FILES[0]].content] = b"damaged on the way"
    assert received_snapshot(shipped, tmp_path, store.fetch) is None
    assert not (tmp_path / shipped.digest / SNAPSHOT_FILES[0]).exists()


def test_a_snapshot_a_worker_cannot_write_makes_a_full_boot(tmp_path: Path) -> None:
    store = ObjectStore()
    (tmp_path / "snapshots").write_bytes(b"a file where the cache's directory should be")
    assert (
        received_snapshot(shipped_snapshot(snapshot_files("p"), store), tmp_path / "snapshots", store.fetch)
        is None
    )


def test_a_lost_object_makes_a_full_boot(tmp_path: Path) -> None:
    def lost(handle: object) -> bytes:
        raise ray.exceptions.ObjectLostError("00" * 28, None, "")

    assert received_snapshot(shipped_snapshot(snapshot_files("p"), ObjectStore()), tmp_path, lost) is None


def entry(root: Path, name: str, size: int, used: float) -> Path:
    directory = root / name
    directory.mkdir()
    (directory / "vm.mig").write_bytes(b"\0" * size)
    os.utime(directory, (used, used))
    return directory


# Files on disk: a busy machine's I/O, not the code, would decide a per-example deadline.
@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=64), min_size=1, max_size=8),
    limit=st.integers(min_value=0, max_value=256),
    keep_index=st.integers(min_value=0),
)
def test_eviction_removes_the_least_recently_used_until_the_rest_fit_never_the_one_in_use(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int], limit: int, keep_index: int
) -> None:
    root = tmp_path_factory.mktemp("snapshots")
    now = time.time()
    # Entry i was last used i seconds before the newest: oldest last.
    entries = [entry(root, f"s{index}", size, now - index) for index, size in enumerate(sizes)]
    keep = entries[keep_index % len(entries)]
    evict_snapshots(root, limit, keep=keep)
    assert keep.exists()
    room = limit - sizes[entries.index(keep)]
    others = [index for index, directory in enumerate(entries) if directory != keep]
    left = [index for index in others if entries[index].exists()]
    evicted = [index for index in others if not entries[index].exists()]
    left_bytes = sum(sizes[index] for index in left)
    assert left_bytes <= max(room, 0)
    if evicted:
        # The oldest went first, and no more than needed: the newest evicted did not fit.
        assert min(evicted) > max(left, default=-1)
        assert left_bytes + sizes[min(evicted)] > room


def test_eviction_removes_a_dead_workers_save_and_leaves_one_being_written(tmp_path: Path) -> None:
    keep = entry(tmp_path, "kept", 1, time.time())
    dead = entry(tmp_path, f"{SAVING_PREFIX}dead", 1, time.time() - STALE_SAVE_SECONDS - 60)
    writing = entry(tmp_path, f"{SAVING_PREFIX}writing", 10**6, time.time())
    evict_snapshots(tmp_path, 0, keep=keep)
    assert keep.exists() and writing.exists() and not dead.exists()
