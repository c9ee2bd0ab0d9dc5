"""The integrity check of a store: what must hold between its databases, verified on disk.

It reads one transaction (a consistent snapshot) and reports each problem as one line; it never
repairs, and a record that does not decode is a problem, not a crash. What it verifies is what
Store.commit keeps (see explorer.store.store): states are content-addressed; every run, edge
(child and parent) and frontier entry names a stored state; every frontier state has a run; every
state has a run or an edge saying why it was dropped, never both; the
frontier and its index agree; generations are numbered 0..n-1 and account for every state, run
and edge; the "runs" counter is the number of runs stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import TypeVar

import lmdb

from explorer.store.lmdb_env import Databases
from explorer.store.records import (
    CorruptRecord,
    decode_counter,
    decode_edge,
    decode_frontier_entry,
    decode_generation,
    decode_run,
    decode_sequence,
    sequence_key,
    state_id_of,
    state_key,
)

Record = TypeVar("Record")


def integrity_problems(txn: lmdb.Transaction, dbs: Databases) -> list[str]:
    problems: list[str] = []
    states = _content_addressed_states(txn, dbs, problems)
    generations = _generations(txn, dbs, states, problems)

    def names_stored_state(state_id: str, what: str) -> bool:
        if not _is_state_id(state_id, problems):
            return False
        if state_key(state_id) in states:
            return True
        problems.append(f"{what} names state {state_id}, which is not stored")
        return False

    for run in _decoded(txn, dbs.runs, decode_run, "run", problems):
        names_stored_state(run.state_id, f"the run of generation {run.generation}")
        if run.generation >= generations:
            problems.append(
                f"the run of {run.state_id} belongs to generation {run.generation}, not committed"
            )
    dropped: set[bytes] = set()
    for edge in _decoded(txn, dbs.edges, decode_edge, "edge", problems):
        names_stored_state(edge.child, f"the edge of generation {edge.generation}")
        if edge.parent is not None:
            names_stored_state(edge.parent, f"the edge to {edge.child} (its parent)")
        if edge.dropped is not None and _is_state_id(edge.child, problems):
            dropped.add(state_key(edge.child))
    for key in states:
        booted = txn.get(key, db=dbs.runs) is not None
        if booted and key in dropped:
            problems.append(f"state {state_id_of(key)} has a run, but its edge says it was dropped")
        elif not booted and key not in dropped:
            problems.append(f"state {state_id_of(key)} has no run, and no edge saying why it was dropped")

    frontier_states: dict[bytes, int] = {}
    for entry in _decoded(txn, dbs.frontier, decode_frontier_entry, "frontier entry", problems):
        what = f"frontier entry {entry.sequence}"
        key = state_key(entry.state_id)
        if names_stored_state(entry.state_id, what) and txn.get(key, db=dbs.runs) is None:
            problems.append(f"{what}: state {entry.state_id} has no run")
        if key in frontier_states:
            problems.append(f"{what}: state {entry.state_id} is also frontier entry {frontier_states[key]}")
        frontier_states[key] = entry.sequence
    index = {key: data for key, data in txn.cursor(dbs.frontier_index)}
    for key, sequence in frontier_states.items():
        if index.get(key) != sequence_key(sequence):
            problems.append(
                f"frontier entry {sequence} (state {state_id_of(key)}) is not in the frontier index"
            )
    for key in index.keys() - frontier_states.keys():
        problems.append(f"the frontier index lists state {state_id_of(key)}, which is not on the frontier")

    runs_stored = int(txn.stat(dbs.runs)["entries"])
    counter = txn.get(b"runs", db=dbs.counters)
    try:
        counted = decode_counter(counter) if counter is not None else 0.0
    except CorruptRecord as error:
        problems.append(f"counter runs: {error}")
    else:
        if counted != runs_stored:
            problems.append(f"the runs counter is {counted:g}, but {runs_stored} runs are stored")
    return problems


def _content_addressed_states(txn: lmdb.Transaction, dbs: Databases, problems: list[str]) -> set[bytes]:
    keys: set[bytes] = set()
    for key, data in txn.cursor(dbs.states):
        digest = hashlib.sha256(data).digest()
        if digest != key:
            problems.append(
                f"state {state_id_of(key)}: its bytes hash to {state_id_of(digest)}, not to its key"
            )
        keys.add(key)
    return keys


def _generations(txn: lmdb.Transaction, dbs: Databases, states: set[bytes], problems: list[str]) -> int:
    """The number of generations committed, after checking that they are 0..n-1 and account for
    every state, run and edge stored."""
    totals = {"states": 0, "runs": 0, "edges": 0}
    count = 0
    for key, data in txn.cursor(dbs.generations):
        try:
            number = decode_sequence(key)
            record = decode_generation(data)
        except CorruptRecord as error:
            problems.append(f"generation record {key.hex()}: {error}")
            continue
        if number != count:
            problems.append(f"generation {number} is stored after {count} generations (lost one?)")
        count = number + 1
        totals["states"] += record.new_states
        totals["runs"] += record.new_runs
        totals["edges"] += record.new_edges
        expanded = record.expanded
        if expanded is not None and _is_state_id(expanded, problems) and state_key(expanded) not in states:
            problems.append(f"generation {number} expanded state {record.expanded}, which is not stored")
    for name, database in (("states", dbs.states), ("runs", dbs.runs), ("edges", dbs.edges)):
        stored = int(txn.stat(database)["entries"])
        if stored != totals[name]:
            problems.append(f"{stored} {name} are stored, but the generations committed {totals[name]}")
    return count


def _decoded(
    txn: lmdb.Transaction,
    database: lmdb._Database,
    decode: Callable[[bytes, bytes], Record],
    what: str,
    problems: list[str],
) -> Iterator[Record]:
    for key, data in txn.cursor(database):
        try:
            yield decode(key, data)
        except CorruptRecord as error:
            problems.append(f"{what} {key.hex()}: {error}")


def _is_state_id(text: object, problems: list[str]) -> bool:
    try:
        state_key(str(text))
    except ValueError:
        problems.append(f"{text!r} is not a state id")
        return False
    return True
