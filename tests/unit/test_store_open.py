"""Opening a work directory: one writer, readers alongside it, one clear line for a store of
another version or for something that is not a store, and nothing changed on the way."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import lmdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from explorer.errors import StoreError
from explorer.store import STORE_VERSION, Generation, Store
from explorer.store.records import UPGRADABLE_VERSIONS, encode_json
from tests.unit.test_store import children_generation, root_generation, sha

REPO = Path(__file__).resolve().parents[2]


def in_another_process(code: str, directory: Path) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter, with the work directory as DIRECTORY and the store imported."""
    preamble = (
        f"from pathlib import Path\nfrom explorer.store import Store\nDIRECTORY = Path({str(directory)!r})\n"
    )
    program = preamble + code
    return subprocess.run(
        [sys.executable, "-c", program], cwd=REPO, capture_output=True, text=True, timeout=60
    )


OPEN_FOR_WRITING = """
from explorer.errors import StoreError
try:
    Store.open(DIRECTORY, writer=True)
except StoreError as error:
    print(error)
"""


def snapshot(directory: Path) -> dict[str, str]:
    """Every file in `directory` but LMDB's own lock table, by content hash."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.iterdir())
        if path.name != "lock.mdb"
    }


def test_a_second_writer_is_refused_while_a_search_runs(tmp_path: Path) -> None:
    directory = tmp_path / "work"
    with Store.create(directory, {}):
        refused = in_another_process(OPEN_FOR_WRITING, directory)
        assert refused.returncode == 0, refused.stderr
        assert refused.stdout.splitlines() == [
            f"a search is running on {directory} (one search per work directory): "
            f"watch it with `explorer status {directory}`, or stop it before resuming"
        ]
        with pytest.raises(StoreError, match="a search is running"):
            Store.open(directory, writer=True)
    with Store.open(directory, writer=True) as store:
        assert store.generations() == 0


def test_a_reader_reads_while_a_search_runs(tmp_path: Path) -> None:
    directory = tmp_path / "work"
    with Store.create(directory, {"budget": 60}) as store:
        store.commit(root_generation())
        reader = in_another_process(
            "with Store.open(DIRECTORY, writer=False) as store:\n"
            "    print(store.generations(), store.metadata()['budget'], len(store.frontier()))\n"
            "    print(store.check())",
            directory,
        )
        assert reader.returncode == 0, reader.stderr
        assert reader.stdout.split() == ["1", "60", "1", "[]"]
        store.commit(children_generation(1, sha(b"root"), [b"a"]))


def test_a_reader_follows_the_writer_past_map_growth(tmp_path: Path) -> None:
    directory = tmp_path / "work"
    with Store.create(directory, {}, initial_map_size=16 << 10) as store:
        store.commit(root_generation())
    with Store.open(directory, writer=False) as reader:
        before = reader.map_size()
        assert reader.generations() == 1
        writer = in_another_process(
            "from tests.unit.test_store_open import grow\nprint(grow(DIRECTORY, generations=5))", directory
        )
        assert writer.returncode == 0, writer.stderr
        assert int(writer.stdout) > before
        assert reader.generations() == 6
        assert sum(len(run.result) for run in reader.runs()) == 15 * 20000 + len(b"result")
        assert reader.map_size() == int(writer.stdout)
        assert reader.check() == []


def grow(directory: Path, generations: int) -> int:
    """Commit `generations` generations of three 20 kB runs each; the map size after them."""
    with Store.open(directory, writer=True) as store:
        for number in range(1, generations + 1):
            parent = store.frontier()[0].state_id
            children = [b"%d.%d" % (number, i) for i in range(3)]
            store.commit(children_generation(number, parent, children, result=bytes(20000)))
        return store.map_size()


def write_version(directory: Path, version: object) -> None:
    with lmdb.open(str(directory), max_dbs=16) as raw, raw.begin(write=True) as txn:
        txn.put(b"store_version", encode_json(version), db=raw.open_db(b"metadata", txn=txn))


@pytest.mark.parametrize(
    ("version", "advice"),
    [
        (STORE_VERSION + 1, "use the newer explorer that wrote it"),
        (0, "use the older explorer that wrote it, or start a new search in another directory"),
    ],
)
@pytest.mark.parametrize("writer", [True, False])
def test_a_store_of_another_version_is_refused_in_one_line(
    tmp_path: Path, version: int, advice: str, writer: bool
) -> None:
    directory = tmp_path / "work"
    with Store.create(directory, {}) as store:
        store.commit(root_generation())
    write_version(directory, version)
    before = snapshot(directory)
    with pytest.raises(StoreError) as refused:
        Store.open(directory, writer=writer)
    assert str(refused.value) == (
        f"{directory} was written by store version {version}; this explorer reads store version "
        f"{STORE_VERSION}: {advice}"
    )
    assert snapshot(directory) == before


@pytest.mark.parametrize("version", sorted(UPGRADABLE_VERSIONS))
def test_an_older_store_is_read_as_it_is_and_upgraded_by_its_first_writer(
    tmp_path: Path, version: int
) -> None:
    directory = tmp_path / "work"
    with Store.create(directory, {}) as store:
        store.commit(root_generation())
        store.commit(children_generation(1, sha(b"root"), [b"a"]))
    write_version(directory, version)
    before = snapshot(directory)
    with Store.open(directory, writer=False) as store:
        assert store.metadata()["store_version"] == version
        assert store.check() == [] and store.generations() == 2
    assert snapshot(directory) == before
    with Store.open(directory, writer=True) as store:
        assert store.metadata()["store_version"] == STORE_VERSION
        assert store.check() == [] and [entry.state_id for entry in store.frontier()] == [sha(b"a")]


def garbage(directory: Path) -> None:
    directory.mkdir()
    (directory / "data.mdb").write_bytes(bytes(range(256)) * 64)
    (directory / "search.lock").touch()


def foreign_lmdb(directory: Path) -> None:
    with lmdb.open(str(directory)) as raw, raw.begin(write=True) as txn:
        txn.put(b"key", b"value")
    (directory / "search.lock").touch()


def empty_data_file(directory: Path) -> None:
    directory.mkdir()
    (directory / "data.mdb").touch()
    (directory / "search.lock").touch()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda directory: None, "is not an explorer work directory (there is no such directory)"),
        (lambda directory: directory.write_text("notes"), "is not an explorer work directory (it is a file)"),
        (lambda directory: directory.mkdir(), "is not an explorer work directory (it holds no store)"),
        (empty_data_file, "is not an explorer work directory (it holds no store)"),
        (garbage, "holds a corrupt store (MDB_INVALID"),
        (foreign_lmdb, "is not an explorer work directory (its LMDB has no store metadata)"),
    ],
    ids=["missing", "file", "empty", "empty-data-file", "garbage", "foreign-lmdb"],
)
@pytest.mark.parametrize("writer", [True, False])
def test_what_is_not_a_store_is_refused_in_one_line_and_left_as_it_is(
    tmp_path: Path, make: Callable[[Path], object], message: str, writer: bool
) -> None:
    directory = tmp_path / "work"
    make(directory)
    before = snapshot(directory) if directory.is_dir() else directory.exists()
    with pytest.raises(StoreError) as refused:
        Store.open(directory, writer=writer)
    line = str(refused.value)
    assert line.startswith(str(directory)) and message in line and "\n" not in line
    assert (snapshot(directory) if directory.is_dir() else directory.exists()) == before


@settings(deadline=None, max_examples=30)
@given(content=st.binary(min_size=1, max_size=20000), writer=st.booleans())
def test_any_garbage_data_file_is_refused_and_left_as_it_is(content: bytes, writer: bool) -> None:
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary)
        (directory / "data.mdb").write_bytes(content)
        (directory / "search.lock").touch()
        with pytest.raises(StoreError, match="holds a corrupt store"):
            Store.open(directory, writer=writer)
        assert (directory / "data.mdb").read_bytes() == content


def test_create_refuses_a_directory_that_holds_a_store(tmp_path: Path) -> None:
    directory = tmp_path / "work"
    with Store.create(directory, {}) as store:
        store.commit(root_generation())
    with pytest.raises(StoreError, match="already holds a store: resume its search"):
        Store.create(directory, {})
    with Store.open(directory, writer=False) as store:
        assert store.generations() == 1


def test_create_takes_over_the_empty_environment_a_killed_create_left(tmp_path: Path) -> None:
    directory = tmp_path / "work"
    directory.mkdir()
    lmdb.open(str(directory)).close()
    with Store.create(directory, {"again": True}) as store:
        assert store.metadata() == {"again": True, "store_version": STORE_VERSION}


def test_create_with_metadata_json_cannot_hold_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        Store.create(tmp_path / "work", {"path": Path("/k")})
    assert not (tmp_path / "work").exists()


def test_a_commit_after_a_reopen_continues_the_numbering(tmp_path: Path) -> None:
    directory = tmp_path / "work"
    with Store.create(directory, {}) as store:
        store.commit(root_generation())
    with Store.open(directory, writer=True) as store:
        store.commit(Generation(number=1, expanded=sha(b"root"), counters={"wall_seconds": 2.0}))
        assert store.counters() == {"runs": 1.0, "wall_seconds": 3.0}
        assert store.frontier() == []
    assert sorted(os.listdir(directory)) == ["data.mdb", "lock.mdb", "search.lock"]
