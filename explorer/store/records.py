"""The records a search stores, and the bytes each one is stored as (format STORE_VERSION).

This module is pure: it turns records into LMDB keys and values and back, and never opens a
database. The format of every named database, version 2:

    states          key: SHA-256 digest of the state (32 bytes)  value: the state's canonical bytes
    runs            key: state digest      value: >dQH (wall seconds, generation, score length),
                                                  then the score, then the serialized RunResult
    edges           key: child digest      value: JSON {parent, operator, reason, detail, generation}
                                                  and, only for a child dropped unbooted, dropped
    frontier        key: >Q sequence       value: state digest, >I depth, then the score
    frontier_index  key: state digest      value: >Q sequence of its frontier entry
    generations     key: >Q number         value: JSON GenerationRecord
    metadata        key: UTF-8 name        value: JSON
    counters        key: UTF-8 name        value: >d

Big-endian integers as keys, so that LMDB's byte order is numeric order. Any change to these
bytes bumps STORE_VERSION. A store of a version in UPGRADABLE_VERSIONS holds only records that
read the same in this version: readers read it as it is, and a writer opening it marks it with
STORE_VERSION first (after which only an explorer of this version or newer opens it). A store of
any other version is refused. Decoding a malformed value raises CorruptRecord, never anything else.

The versions:
    1  the format above without `dropped` on edges, and without the metadata key "stopped"
    2  a child whose machine no runner accepts is stored with an edge saying why (`dropped`), and
       no run; the metadata key "stopped" says why the search's last session ended
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

STORE_VERSION = 2
# Older versions whose every record reads the same in STORE_VERSION (see the versions above).
UPGRADABLE_VERSIONS = frozenset({1})

DIGEST_BYTES = 32
_RUN_HEADER = struct.Struct(">dQH")
_SEQUENCE = struct.Struct(">Q")
_DEPTH = struct.Struct(">I")
_COUNTER = struct.Struct(">d")


class CorruptRecord(ValueError):
    """A stored value that does not decode as the record its database holds."""


@dataclass(frozen=True)
class RunRecord:
    """One run of a state: its serialized RunResult and the score the search gave it."""

    state_id: str
    result: bytes
    score: bytes
    wall_seconds: float
    generation: int


@dataclass(frozen=True)
class EdgeRecord:
    """How a state was found: the operator that derived `child` from `parent` (None: the root)."""

    child: str
    parent: str | None
    operator: str
    reason: str
    detail: dict[str, Any]
    generation: int
    # Why the child was dropped without a run (the config check's one line); None: it was booted.
    dropped: str | None = None


@dataclass(frozen=True)
class FrontierEntry:
    """A state waiting to be expanded. Sequence numbers grow with every entry ever added."""

    sequence: int
    score: bytes
    state_id: str
    depth: int


@dataclass(frozen=True)
class GenerationRecord:
    """What one committed generation did, and the next free frontier sequence after it."""

    expanded: str | None
    new_states: int
    new_runs: int
    new_edges: int
    frontier_next: int
    # The search's wall time (over all its sessions) when this generation was committed; None
    # in generations written before it was recorded.
    wall_seconds: float | None = None


def state_key(state_id: str) -> bytes:
    """The key of a state id (64 hex digits); ValueError for anything else."""
    key = bytes.fromhex(state_id)
    if len(key) != DIGEST_BYTES:
        raise ValueError(f"a state id is {2 * DIGEST_BYTES} hex digits, not {state_id!r}")
    return key


def state_id_of(key: bytes) -> str:
    return key.hex()


def sequence_key(sequence: int) -> bytes:
    return _SEQUENCE.pack(sequence)


def decode_sequence(data: bytes) -> int:
    try:
        return int(_SEQUENCE.unpack(data)[0])
    except struct.error as error:
        raise CorruptRecord(f"a sequence number is {_SEQUENCE.size} bytes, not {len(data)}") from error


def encode_run(run: RunRecord) -> bytes:
    header = _RUN_HEADER.pack(run.wall_seconds, run.generation, len(run.score))
    return header + run.score + run.result


def decode_run(key: bytes, data: bytes) -> RunRecord:
    try:
        wall_seconds, generation, score_length = _RUN_HEADER.unpack_from(data)
    except struct.error as error:
        raise CorruptRecord(f"run value of {len(data)} bytes is shorter than its header") from error
    score_end = _RUN_HEADER.size + score_length
    if score_end > len(data):
        raise CorruptRecord(f"run value of {len(data)} bytes is shorter than its score")
    return RunRecord(
        state_id=state_id_of(key),
        result=data[score_end:],
        score=data[_RUN_HEADER.size : score_end],
        wall_seconds=wall_seconds,
        generation=generation,
    )


def encode_edge(edge: EdgeRecord) -> bytes:
    # `dropped` only where there is one: the edge of a booted child is the same bytes as in version 1.
    dropped = {"dropped": edge.dropped} if edge.dropped is not None else {}
    return encode_json(
        {
            "parent": edge.parent,
            "operator": edge.operator,
            "reason": edge.reason,
            "detail": edge.detail,
            "generation": edge.generation,
            **dropped,
        }
    )


def decode_edge(key: bytes, data: bytes) -> EdgeRecord:
    fields = _decode_json_object(data, "edge")
    try:
        return EdgeRecord(
            child=state_id_of(key),
            parent=fields["parent"],
            operator=fields["operator"],
            reason=fields["reason"],
            detail=fields["detail"],
            generation=fields["generation"],
            dropped=fields.get("dropped"),
        )
    except KeyError as error:
        raise CorruptRecord(f"edge has no {error.args[0]!r}") from error


def encode_frontier_entry(entry: FrontierEntry) -> bytes:
    return state_key(entry.state_id) + _DEPTH.pack(entry.depth) + entry.score


def decode_frontier_entry(key: bytes, data: bytes) -> FrontierEntry:
    score_start = DIGEST_BYTES + _DEPTH.size
    if len(data) < score_start:
        raise CorruptRecord(f"frontier value of {len(data)} bytes is shorter than {score_start}")
    return FrontierEntry(
        sequence=decode_sequence(key),
        score=data[score_start:],
        state_id=state_id_of(data[:DIGEST_BYTES]),
        depth=_DEPTH.unpack_from(data, DIGEST_BYTES)[0],
    )


def encode_generation(record: GenerationRecord) -> bytes:
    return encode_json(
        {
            "expanded": record.expanded,
            "new_states": record.new_states,
            "new_runs": record.new_runs,
            "new_edges": record.new_edges,
            "frontier_next": record.frontier_next,
            "wall_seconds": record.wall_seconds,
        }
    )


def decode_generation(data: bytes) -> GenerationRecord:
    fields = _decode_json_object(data, "generation")
    try:
        return GenerationRecord(**fields)
    except TypeError as error:
        raise CorruptRecord(
            f"generation record does not have the fields of version {STORE_VERSION}"
        ) from error


def encode_counter(value: float) -> bytes:
    return _COUNTER.pack(value)


def decode_counter(data: bytes) -> float:
    try:
        return float(_COUNTER.unpack(data)[0])
    except struct.error as error:
        raise CorruptRecord(f"a counter is {_COUNTER.size} bytes, not {len(data)}") from error


def encode_json(value: Any) -> bytes:
    """Deterministic JSON (sorted keys); TypeError for a value JSON cannot hold (a bug)."""
    return json.dumps(value, sort_keys=True, allow_nan=False, separators=(",", ":")).encode()


def decode_json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CorruptRecord(f"not JSON: {error}") from error


def _decode_json_object(data: bytes, what: str) -> dict[str, Any]:
    fields = decode_json(data)
    if not isinstance(fields, dict):
        raise CorruptRecord(f"{what} record is not a JSON object")
    return fields
