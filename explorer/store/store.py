"""The store of one search: states, runs, edges, the frontier, metadata and counters, in LMDB.

The search engine is its only writer; `status` and `show` read it while the search runs. It
persists and never decides: which state to expand, how to score a run, what to run next belong
to the search (explorer.search).

Invariants, kept by `commit` and verified on disk by `check`:
- states are content-addressed (key = SHA-256 of the bytes) and never rewritten; the first run
  and the first edge stored for a state are kept, later ones are ignored (states are immutable,
  runs are deterministic, and how a state was first found is history);
- every run, edge (child and parent) and frontier entry names a stored state; every state on the
  frontier has a run; a state is on the frontier at most once;
- every state has a run, except a child dropped unbooted (no runner would accept its machine),
  whose edge says why (EdgeRecord.dropped) and which never has a run nor a frontier entry;
- generations are numbered 0, 1, 2, ... in commit order, and each one commits in one write
  transaction: a kill at any moment loses at most the generation in flight;
- the counter "runs" is the number of runs stored; the store keeps it, the search never passes it.

Open it in the process that uses it (see explorer.store.lmdb_env): never across fork.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import lmdb

from explorer.errors import BadInput, StoreError
from explorer.store.check import integrity_problems
from explorer.store.lmdb_env import INITIAL_MAP_SIZE, VERSION_KEY, Databases, LmdbEnvironment
from explorer.store.records import (
    CorruptRecord,
    EdgeRecord,
    FrontierEntry,
    GenerationRecord,
    RunRecord,
    decode_counter,
    decode_edge,
    decode_frontier_entry,
    decode_generation,
    decode_json,
    decode_run,
    encode_counter,
    encode_edge,
    encode_frontier_entry,
    encode_generation,
    encode_json,
    encode_run,
    sequence_key,
    state_id_of,
    state_key,
)

# Counters the store keeps itself; a generation passing one is a bug.
STORE_COUNTERS = frozenset({"runs"})
# Records read per read transaction when iterating, so that no transaction stays open while the
# caller works (an open one would pin old pages and block growing the map).
_ITERATION_BATCH = 256

Record = TypeVar("Record")


@dataclass(frozen=True)
class Generation:
    """Everything one generation commits, in one write transaction."""

    # 0 for the first generation of a search, then one more for each commit.
    number: int
    # The state taken off the frontier by this generation (None: the first one).
    expanded: str | None
    # (state id, canonical bytes); a state already stored is left as it is.
    states: list[tuple[str, bytes]] = field(default_factory=list)
    # The first edge of a child wins (states are immutable; so is how one was found).
    edges: list[EdgeRecord] = field(default_factory=list)
    runs: list[RunRecord] = field(default_factory=list)
    # (score, state id, depth) to add; the store assigns sequence numbers.
    frontier: list[tuple[bytes, str, int]] = field(default_factory=list)
    # Added to the stored counters (wall_seconds, master_seconds, ...).
    counters: dict[str, float] = field(default_factory=dict)


class Store:
    """One work directory's store, open for writing (the search) or reading (status, show)."""

    def __init__(self, environment: LmdbEnvironment) -> None:
        self._environment = environment

    @classmethod
    def create(
        cls, directory: Path, metadata: dict[str, Any], *, initial_map_size: int = INITIAL_MAP_SIZE
    ) -> Store:
        """A new store in `directory`, open for writing; StoreError if it already holds one."""
        return cls(LmdbEnvironment.create(directory, metadata, initial_map_size))

    @classmethod
    def open(cls, directory: Path, *, writer: bool) -> Store:
        """The store in `directory`; StoreError if it is not one, of another version, or (for a
        writer) if a search is running on it."""
        return cls(LmdbEnvironment.open(directory, writer=writer))

    @property
    def directory(self) -> Path:
        return self._environment.directory

    def close(self) -> None:
        self._environment.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def metadata(self) -> dict[str, Any]:
        """The facts and options given at create (and since by set_metadata), with `store_version`."""
        return {
            key.decode(): value
            for key, value in self._read_all(lambda dbs: dbs.metadata, lambda _, data: decode_json(data))
        }

    def set_metadata(self, key: str, value: Any) -> None:
        """Set one JSON-able fact or option (writer only), e.g. an option a resume changed."""
        if key.encode() == VERSION_KEY:
            raise ValueError(f"{key} is the store's own metadata")
        encoded = encode_json(value)
        self._environment.write(lambda txn, dbs: txn.put(key.encode(), encoded, db=dbs.metadata))

    def commit(self, generation: Generation) -> None:
        """Store `generation` atomically; ValueError (and nothing stored) if it breaks an invariant."""
        for state_id, data in generation.states:
            if hashlib.sha256(data).digest() != state_key(state_id):
                raise ValueError(f"state {state_id} is not the SHA-256 of its bytes")
        if reserved := STORE_COUNTERS & generation.counters.keys():
            raise ValueError(f"counters {sorted(reserved)} are kept by the store, not passed to it")
        self._environment.write(lambda txn, dbs: _write_generation(txn, dbs, generation))

    def add_to_counters(self, counters: dict[str, float]) -> None:
        """Add to stored counters outside any generation: time spent on runs the budget cut short."""
        if reserved := STORE_COUNTERS & counters.keys():
            raise ValueError(f"counters {sorted(reserved)} are kept by the store, not passed to it")
        self._environment.write(lambda txn, dbs: _add_counters(txn, dbs, counters))

    def state(self, state_id: str) -> bytes | None:
        key = state_key(state_id)
        return self._environment.read(lambda txn, dbs: txn.get(key, db=dbs.states))

    def run(self, state_id: str) -> RunRecord | None:
        key = state_key(state_id)
        data = self._environment.read(lambda txn, dbs: txn.get(key, db=dbs.runs))
        return None if data is None else self._decoded(decode_run, key, data)

    def edge(self, state_id: str) -> EdgeRecord | None:
        key = state_key(state_id)
        data = self._environment.read(lambda txn, dbs: txn.get(key, db=dbs.edges))
        return None if data is None else self._decoded(decode_edge, key, data)

    def frontier(self) -> list[FrontierEntry]:
        """Every state waiting to be expanded, in increasing sequence (the order they were added)."""
        return list(self._records(lambda dbs: dbs.frontier, decode_frontier_entry))

    def runs(self) -> Iterator[RunRecord]:
        """Every run, by state id; runs committed while iterating may or may not be included."""
        return self._records(lambda dbs: dbs.runs, decode_run)

    def edges(self) -> Iterator[EdgeRecord]:
        """Every edge, by child state id; edges committed while iterating may or may not be included."""
        return self._records(lambda dbs: dbs.edges, decode_edge)

    def counters(self) -> dict[str, float]:
        return {
            key.decode(): value
            for key, value in self._read_all(lambda dbs: dbs.counters, lambda _, data: decode_counter(data))
        }

    def generations(self) -> int:
        """Generations committed so far (the next one is numbered this)."""
        return self._environment.read(lambda txn, dbs: int(txn.stat(dbs.generations)["entries"]))

    def generation(self, number: int) -> GenerationRecord | None:
        """What committed generation `number` did."""
        data = self._environment.read(lambda txn, dbs: txn.get(sequence_key(number), db=dbs.generations))
        return None if data is None else self._decoded(lambda _, value: decode_generation(value), b"", data)

    def resolve(self, prefix: str) -> str:
        """The id of the one stored state whose id starts with `prefix` (as people type short ids);
        BadInput if there is none or more than one."""
        wanted = prefix.strip().lower()
        try:
            lowest = bytes.fromhex(wanted + "0" * (len(wanted) % 2))
        except ValueError:
            raise BadInput(
                f"{prefix!r} is not a state id: give hex digits of one (`explorer show DIR`)"
            ) from None
        matches = self._environment.read(lambda txn, dbs: _ids_starting_with(txn, dbs.states, lowest, wanted))
        if len(matches) != 1:
            how_many = "no state" if not matches else "more than one state"
            raise BadInput(
                f"{how_many} of {self.directory} has an id starting with {wanted}: give more digits"
            )
        return matches[0]

    def check(self) -> list[str]:
        """Integrity problems, one line each; empty when the store is sound."""
        return self._environment.read(integrity_problems)

    def map_size(self) -> int:
        """Bytes the LMDB map can hold now (it grows when full)."""
        return self._environment.map_size()

    def _records(
        self, database: Callable[[Databases], lmdb._Database], decode: Callable[[bytes, bytes], Record]
    ) -> Iterator[Record]:
        after: bytes | None = None
        while True:
            batch = self._environment.read(partial(_batch_after, select=database, after=after))
            for key, data in batch:
                yield self._decoded(decode, key, data)
            if len(batch) < _ITERATION_BATCH:
                return
            after = batch[-1][0]

    def _read_all(
        self, database: Callable[[Databases], lmdb._Database], decode: Callable[[bytes, bytes], Record]
    ) -> list[tuple[bytes, Record]]:
        items = self._environment.read(lambda txn, dbs: list(txn.cursor(database(dbs))))
        return [(key, self._decoded(decode, key, data)) for key, data in items]

    def _decoded(self, decode: Callable[[bytes, bytes], Record], key: bytes, data: bytes) -> Record:
        try:
            return decode(key, data)
        except CorruptRecord as error:
            raise StoreError(
                f"{self.directory} holds a corrupt record ({error}): start a new search in another directory"
            ) from error


def _write_generation(txn: lmdb.Transaction, dbs: Databases, generation: Generation) -> None:
    """The whole of `generation`, in `txn`; ValueError (aborting it) where an invariant breaks."""
    number = generation.number
    committed = int(txn.stat(dbs.generations)["entries"])
    if number != committed:
        raise ValueError(
            f"generation {number} committed after {committed} generations: they are numbered 0, 1, ..."
        )
    previous = txn.get(sequence_key(number - 1), db=dbs.generations) if number else None
    next_sequence = decode_generation(previous).frontier_next if previous is not None else 0

    if generation.expanded is not None:
        expanded = state_key(generation.expanded)
        sequence = txn.pop(expanded, db=dbs.frontier_index)
        if sequence is None:
            raise ValueError(
                f"generation {number} expands {generation.expanded}, which is not on the frontier"
            )
        txn.delete(sequence, db=dbs.frontier)

    def require_state(state_id: str, what: str) -> bytes:
        key = state_key(state_id)
        if txn.get(key, db=dbs.states) is None:
            raise ValueError(f"generation {number}: {what} names state {state_id}, which is not stored")
        return key

    new_states = sum(
        txn.put(state_key(state_id), data, overwrite=False, db=dbs.states)
        for state_id, data in generation.states
    )
    new_edges = 0
    for edge in generation.edges:
        _require_generation(edge.generation, number, "edge")
        key = require_state(edge.child, "an edge")
        if edge.parent is not None:
            require_state(edge.parent, "an edge's parent")
        new_edges += txn.put(key, encode_edge(edge), overwrite=False, db=dbs.edges)
    new_runs = 0
    for run in generation.runs:
        _require_generation(run.generation, number, "run")
        key = require_state(run.state_id, "a run")
        if _dropped(txn, dbs, key):
            raise ValueError(f"generation {number} stores a run of {run.state_id}, which was dropped")
        new_runs += txn.put(key, encode_run(run), overwrite=False, db=dbs.runs)
    for score, state_id, depth in generation.frontier:
        key = require_state(state_id, "a frontier entry")
        if txn.get(key, db=dbs.runs) is None:
            raise ValueError(f"generation {number} adds {state_id} to the frontier without a run")
        if txn.get(key, db=dbs.frontier_index) is not None:
            continue
        entry = FrontierEntry(sequence=next_sequence, score=score, state_id=state_id, depth=depth)
        txn.put(sequence_key(next_sequence), encode_frontier_entry(entry), db=dbs.frontier)
        txn.put(key, sequence_key(next_sequence), db=dbs.frontier_index)
        next_sequence += 1
    for state_id, _ in generation.states:
        key = state_key(state_id)
        if txn.get(key, db=dbs.runs) is None and not _dropped(txn, dbs, key):
            raise ValueError(
                f"generation {number} stores state {state_id} without a run, "
                "nor an edge saying why it was dropped"
            )

    totals = _add_counters(txn, dbs, {**generation.counters, "runs": new_runs})
    record = GenerationRecord(
        expanded=generation.expanded,
        new_states=new_states,
        new_runs=new_runs,
        new_edges=new_edges,
        frontier_next=next_sequence,
        wall_seconds=totals.get("wall_seconds"),
    )
    txn.put(sequence_key(number), encode_generation(record), db=dbs.generations)


def _dropped(txn: lmdb.Transaction, dbs: Databases, key: bytes) -> bool:
    """Whether the stored edge of the state at `key` says it was dropped unbooted."""
    edge = txn.get(key, db=dbs.edges)
    return edge is not None and decode_edge(key, edge).dropped is not None


def _add_counters(txn: lmdb.Transaction, dbs: Databases, counters: dict[str, float]) -> dict[str, float]:
    """Add each amount to its stored counter (absent: 0); the new totals."""
    totals: dict[str, float] = {}
    for name, amount in counters.items():
        stored = txn.get(name.encode(), db=dbs.counters)
        totals[name] = (decode_counter(stored) if stored is not None else 0.0) + amount
        txn.put(name.encode(), encode_counter(totals[name]), db=dbs.counters)
    return totals


def _require_generation(recorded: int, number: int, what: str) -> None:
    if recorded != number:
        raise ValueError(f"a {what} of generation {recorded} committed in generation {number}")


def _batch_after(
    txn: lmdb.Transaction,
    dbs: Databases,
    *,
    select: Callable[[Databases], lmdb._Database],
    after: bytes | None,
) -> list[tuple[bytes, bytes]]:
    """Up to _ITERATION_BATCH records of the database `select` picks, from the first key after `after`."""
    cursor = txn.cursor(select(dbs))
    positioned = cursor.first() if after is None else cursor.set_range(after)
    batch: list[tuple[bytes, bytes]] = []
    if not positioned:
        return batch
    for key, data in cursor.iternext():
        if key == after:
            continue
        batch.append((key, data))
        if len(batch) == _ITERATION_BATCH:
            break
    return batch


def _ids_starting_with(
    txn: lmdb.Transaction, states: lmdb._Database, lowest: bytes, prefix: str
) -> list[str]:
    """At most two ids: enough to tell one match from an ambiguous prefix."""
    cursor = txn.cursor(states)
    matches: list[str] = []
    if cursor.set_range(lowest):
        for key in cursor.iternext(values=False):
            state_id = state_id_of(key)
            if not state_id.startswith(prefix) or len(matches) == 2:
                break
            matches.append(state_id)
    return matches
