"""The LMDB environment of one work directory: who may open it, and transactions that survive map growth.

One writer per work directory: the writer holds an exclusive flock on `search.lock` for as long
as it is open. The kernel drops the lock when the writer's process dies, even by SIGKILL, so a
killed search can be resumed; a second writer is refused with a StoreError. Readers (`status`,
`show`) take no lock: they open the environment read-only, and LMDB lets them read the last
committed transaction while the writer writes the next one.

The map grows on demand: a write transaction that fills it is aborted, the map is doubled, the
database handles are reopened (py-lmdb 2.2 invalidated them on resize) and the transaction is
run again from the start, so a write function must be a pure function of its arguments and the
transaction. A reader whose map the writer outgrew adopts the new size and begins again.

Never share an environment across fork: open it in the process that uses it. An environment used
by another process than the one that opened it raises RuntimeError. A child forked while a writer
is open also inherits its flock and holds it until it exits: executors start their workers by
exec or spawn, never by a bare fork of the master.

This module never deletes, truncates or initializes a file it did not create: a directory that is
not a store is refused before LMDB opens it, and every error the user can cause is one StoreError
line naming the directory.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TypeVar

import lmdb

from explorer.errors import StoreError
from explorer.store.records import (
    STORE_VERSION,
    UPGRADABLE_VERSIONS,
    CorruptRecord,
    decode_json,
    encode_json,
)

DATA_FILE = "data.mdb"
WRITER_LOCK = "search.lock"
VERSION_KEY = b"store_version"
# Sparse on Linux, so the first map costs no disk; it doubles whenever a generation fills it.
INITIAL_MAP_SIZE = 256 << 20
_MAX_DATABASES = 16

Result = TypeVar("Result")


@dataclass(frozen=True)
class Databases:
    """The handles of the named databases (their formats: explorer.store.records)."""

    metadata: lmdb._Database
    counters: lmdb._Database
    states: lmdb._Database
    runs: lmdb._Database
    edges: lmdb._Database
    frontier: lmdb._Database
    frontier_index: lmdb._Database
    generations: lmdb._Database


Work = Callable[[lmdb.Transaction, Databases], Result]


class LmdbEnvironment:
    """An open LMDB environment of a store, for writing (holding the writer lock) or reading."""

    def __init__(
        self, directory: Path, environment: lmdb.Environment, writer_lock: int | None, databases: Databases
    ) -> None:
        self.directory = directory
        self._environment = environment
        self._writer_lock = writer_lock
        self._pid = os.getpid()
        self.databases = databases

    @property
    def writer(self) -> bool:
        return self._writer_lock is not None

    @classmethod
    def create(cls, directory: Path, metadata: dict[str, object], initial_map_size: int) -> LmdbEnvironment:
        """A new store in `directory` (made if missing), open for writing, holding `metadata`
        (JSON-able: TypeError or ValueError otherwise, before anything is created).

        The databases and the metadata are born in one transaction, so a create killed half-way
        leaves an empty LMDB environment, which the next create takes over (it holds nothing).
        """
        encoded = {key.encode(): encode_json(value) for key, value in metadata.items()}
        encoded[VERSION_KEY] = encode_json(STORE_VERSION)
        if directory.exists() and not directory.is_dir():
            raise StoreError(f"{directory} is a file, not a directory: choose a new work directory")
        directory.mkdir(parents=True, exist_ok=True)
        lock = _take_writer_lock(directory, create=True)
        environment = None
        try:
            environment = lmdb.open(
                str(directory), map_size=initial_map_size, max_dbs=_MAX_DATABASES, create=True
            )
            if environment.stat()["entries"]:
                raise StoreError(
                    f"{directory} already holds a store: resume its search with `explorer resume "
                    f"{directory}`, or choose a new work directory"
                )
            databases = _initialize(environment, encoded)
        except BaseException as error:
            if environment is not None:
                environment.close()
            os.close(lock)
            if isinstance(error, lmdb.Error):
                raise _corrupt(directory, error) from error
            raise
        return cls(directory, environment, lock, databases)

    @classmethod
    def open(cls, directory: Path, *, writer: bool) -> LmdbEnvironment:
        """The store in `directory`; StoreError if it is not one, is of a version this explorer cannot
        read (explorer.store.records: a writer upgrades one it can), or is busy."""
        _refuse_what_is_not_a_store(directory)
        lock = _take_writer_lock(directory, create=False) if writer else None
        environment = None
        try:
            # map_size=0: adopt the size the store has grown to (a smaller one would be raised only
            # to the space in use, and the next write would have to grow it again).
            environment = lmdb.open(
                str(directory), map_size=0, max_dbs=_MAX_DATABASES, readonly=not writer, create=False
            )
            version = _readable_version(directory, environment)
            store = cls(directory, environment, lock, _open_databases(environment))
            if writer and version != STORE_VERSION:
                # Every record of an upgradable version reads the same in this one (records.py):
                # only the mark changes, before this writer adds what the old version lacks.
                store.write(
                    lambda txn, dbs: txn.put(VERSION_KEY, encode_json(STORE_VERSION), db=dbs.metadata)
                )
        except BaseException as error:
            if environment is not None:
                environment.close()
            if lock is not None:
                os.close(lock)
            if isinstance(error, lmdb.Error):
                raise _corrupt(directory, error) from error
            raise
        if writer:
            # Reader slots of processes that died (a killed `status`) would pin old pages forever.
            environment.reader_check()
        return store

    def read(self, work: Work[Result]) -> Result:
        """`work` in a read transaction: the last committed state of the store."""
        self._refuse_other_processes()
        try:
            transaction = self._environment.begin()
        except lmdb.MapResizedError:
            # The writer grew the map beyond ours: adopt its size (no transaction of ours is open).
            self._resize(0)
            transaction = self._environment.begin()
        with transaction:
            return work(transaction, self.databases)

    def write(self, work: Work[Result]) -> Result:
        """`work` in one write transaction, committed when it returns, aborted if it raises."""
        self._refuse_other_processes()
        if not self.writer:
            raise RuntimeError(f"the store in {self.directory} was opened for reading")
        while True:
            try:
                with self._environment.begin(write=True) as transaction:
                    return work(transaction, self.databases)
            except lmdb.MapFullError:
                # Leaving the `with` aborted the transaction: no transaction is open to invalidate.
                self._resize(_grown_map_size(self._environment))

    def map_size(self) -> int:
        return int(self._environment.info()["map_size"])

    def close(self) -> None:
        self._environment.close()
        if self._writer_lock is not None:
            os.close(self._writer_lock)
            self._writer_lock = None

    def _resize(self, map_size: int) -> None:
        self._environment.set_mapsize(map_size)
        self.databases = _open_databases(self._environment)

    def _refuse_other_processes(self) -> None:
        if os.getpid() != self._pid:
            raise RuntimeError(
                f"the store in {self.directory} was opened by process {self._pid}: LMDB environments are "
                "never shared across fork, open the store in the process that uses it"
            )


def _initialize(environment: lmdb.Environment, metadata: dict[bytes, bytes]) -> Databases:
    """Create the databases and write `metadata`, in one transaction, growing the map as needed."""
    while True:
        try:
            with environment.begin(write=True) as transaction:
                handles = {
                    field.name: environment.open_db(field.name.encode(), txn=transaction, create=True)
                    for field in fields(Databases)
                }
                for key, value in metadata.items():
                    transaction.put(key, value, db=handles["metadata"])
            return Databases(**handles)
        except lmdb.MapFullError:
            environment.set_mapsize(_grown_map_size(environment))


def _open_databases(environment: lmdb.Environment) -> Databases:
    handles = {
        field.name: environment.open_db(field.name.encode(), create=False) for field in fields(Databases)
    }
    return Databases(**handles)


def _grown_map_size(environment: lmdb.Environment) -> int:
    return 2 * int(environment.info()["map_size"])


def _take_writer_lock(directory: Path, *, create: bool) -> int:
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    lock = os.open(directory / WRITER_LOCK, flags, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        raise StoreError(
            f"a search is running on {directory} (one search per work directory): "
            f"watch it with `explorer status {directory}`, or stop it before resuming"
        ) from None
    return lock


def _refuse_what_is_not_a_store(directory: Path) -> None:
    """StoreError unless `directory` has a store's files, checked before LMDB opens (and could
    initialize) anything: an empty data.mdb is one LMDB would take for a new environment."""
    if not directory.is_dir():
        why = "it is a file" if directory.exists() else "there is no such directory"
        raise StoreError(
            f"{directory} is not an explorer work directory ({why}): give the --work of a search"
        )
    data = directory / DATA_FILE
    if not data.is_file() or data.stat().st_size == 0 or not (directory / WRITER_LOCK).is_file():
        raise StoreError(
            f"{directory} is not an explorer work directory (it holds no store): give the --work of a search"
        )


def _readable_version(directory: Path, environment: lmdb.Environment) -> int:
    """The store's version: STORE_VERSION or an upgradable one; StoreError for any other."""
    try:
        metadata = environment.open_db(b"metadata", create=False)
    except (lmdb.NotFoundError, lmdb.ReadonlyError):
        # A read-only environment reports a missing database as a refused creation.
        raise StoreError(
            f"{directory} is not an explorer work directory (its LMDB has no store metadata): "
            "give the --work of a search"
        ) from None
    with environment.begin() as transaction:
        stored = transaction.get(VERSION_KEY, db=metadata)
    try:
        version = decode_json(stored) if stored is not None else None
    except CorruptRecord as error:
        raise _corrupt(directory, error) from error
    if not isinstance(version, int):
        raise _corrupt(directory, f"store version {version!r}")
    if version != STORE_VERSION and version not in UPGRADABLE_VERSIONS:
        advice = (
            "use the newer explorer that wrote it"
            if version > STORE_VERSION
            else "use the older explorer that wrote it, or start a new search in another directory"
        )
        raise StoreError(
            f"{directory} was written by store version {version}; this explorer reads store version "
            f"{STORE_VERSION}: {advice}"
        )
    return version


def _corrupt(directory: Path, cause: object) -> StoreError:
    # py-lmdb names the directory first: the message already does.
    detail = str(cause).removeprefix(f"{directory}: ").splitlines()[0] if str(cause) else type(cause).__name__
    return StoreError(
        f"{directory} holds a corrupt store ({detail}); nothing was changed: start a new search "
        "in another directory"
    )
