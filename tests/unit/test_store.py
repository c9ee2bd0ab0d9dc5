"""The store: records round-trip, states are immutable and content-addressed, generations commit
whole or not at all, the frontier keeps its order across reopen, the map grows when full."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import lmdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from explorer.errors import BadInput
from explorer.store import STORE_VERSION, EdgeRecord, FrontierEntry, Generation, RunRecord, Store
from explorer.store.records import (
    decode_edge,
    decode_frontier_entry,
    decode_run,
    encode_edge,
    encode_frontier_entry,
    encode_run,
    sequence_key,
    state_key,
)

# Speed is not the property: on a shared two-core machine a per-example deadline only flakes.
PROPERTY = settings(deadline=None, max_examples=40)
TINY_MAP = 16 << 10

state_ids = st.binary(min_size=32, max_size=32).map(bytes.hex)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
runs = st.builds(
    RunRecord,
    state_id=state_ids,
    result=st.binary(max_size=300),
    score=st.binary(max_size=24),
    wall_seconds=st.floats(min_value=0, allow_infinity=False),
    generation=st.integers(0, 2**64 - 1),
)
edges = st.builds(
    EdgeRecord,
    child=state_ids,
    parent=st.none() | state_ids,
    operator=st.text(max_size=20),
    reason=st.text(max_size=80),
    detail=st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    generation=st.integers(0, 2**64 - 1),
    dropped=st.none() | st.text(max_size=80),
)
frontier_entries = st.builds(
    FrontierEntry,
    sequence=st.integers(0, 2**64 - 1),
    score=st.binary(max_size=24),
    state_id=state_ids,
    depth=st.integers(0, 2**32 - 1),
)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@PROPERTY
@given(runs)
def test_a_run_record_round_trips(run: RunRecord) -> None:
    assert decode_run(state_key(run.state_id), encode_run(run)) == run


@PROPERTY
@given(edges)
def test_an_edge_record_round_trips(edge: EdgeRecord) -> None:
    assert decode_edge(state_key(edge.child), encode_edge(edge)) == edge


def test_the_edge_of_a_booted_child_is_the_bytes_version_1_wrote() -> None:
    edge = EdgeRecord(sha(b"a"), sha(b"root"), "devices", "map pl011", {"n": 1}, 3)
    assert encode_edge(edge) == (
        b'{"detail":{"n":1},"generation":3,"operator":"devices","parent":"%s","reason":"map pl011"}'
        % sha(b"root").encode()
    )


@PROPERTY
@given(frontier_entries)
def test_a_frontier_entry_round_trips(entry: FrontierEntry) -> None:
    assert decode_frontier_entry(sequence_key(entry.sequence), encode_frontier_entry(entry)) == entry


@pytest.fixture
def directory() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as temporary:
        yield Path(temporary) / "work"


def root_generation(root: bytes = b"root", result: bytes = b"result", score: bytes = b"\x01") -> Generation:
    """Generation 0 of a search: the root state, run, on the frontier."""
    root_id = sha(root)
    return Generation(
        number=0,
        expanded=None,
        states=[(root_id, root)],
        edges=[EdgeRecord(root_id, None, "initial", "the machine the search starts from", {}, 0)],
        runs=[RunRecord(root_id, result, score, 1.0, 0)],
        frontier=[(score, root_id, 0)],
        counters={"wall_seconds": 1.0},
    )


def children_generation(number: int, parent: str, children: list[bytes], result: bytes = b"r") -> Generation:
    """Generation `number`: expands `parent` into `children`, each run and put on the frontier."""
    return Generation(
        number=number,
        expanded=parent,
        states=[(sha(child), child) for child in children],
        edges=[
            EdgeRecord(sha(child), parent, "test", "a child", {"index": i}, number)
            for i, child in enumerate(children)
        ],
        runs=[RunRecord(sha(child), result, b"\x02", 0.5, number) for child in children],
        frontier=[(b"\x02", sha(child), number) for child in children],
        counters={"wall_seconds": 0.5 * len(children)},
    )


class StoreMachine(RuleBasedStateMachine):
    """A search's life against a model: generations that expand a frontier entry into children
    (new or already stored, booted or dropped), and reopening (a resume); the store must agree
    with the model."""

    def __init__(self) -> None:
        super().__init__()
        self.temporary = tempfile.TemporaryDirectory()
        self.directory = Path(self.temporary.name) / "work"
        self.store = Store.create(self.directory, {"purpose": "model"}, initial_map_size=TINY_MAP)
        self.states: dict[str, bytes] = {}
        self.runs: dict[str, RunRecord] = {}
        self.edges: dict[str, EdgeRecord] = {}
        self.frontier: list[FrontierEntry] = []
        self.next_sequence = 0
        self.generations = 0

    @rule(
        data=st.data(),
        children=st.lists(st.binary(max_size=40), max_size=4),
        results=st.lists(st.binary(max_size=4000), min_size=4, max_size=4),
        scores=st.lists(st.binary(max_size=12), min_size=4, max_size=4),
        drops=st.lists(st.booleans(), min_size=4, max_size=4),
    )
    def commit_a_generation(
        self,
        data: st.DataObject,
        children: list[bytes],
        results: list[bytes],
        scores: list[bytes],
        drops: list[bool],
    ) -> None:
        expanded = data.draw(st.none() | st.sampled_from(self.frontier)) if self.frontier else None
        parent = expanded.state_id if expanded else None
        number = self.generations
        # As the engine does: a dropped child is never proposed again, and only a new one is dropped.
        fates: dict[str, tuple[int, bool]] = {}
        for n, child in enumerate(children):
            i = sha(child)
            if i not in self.edges or self.edges[i].dropped is None:
                fates.setdefault(i, (n, drops[n] and i not in self.states))
        booted = [(n, i) for i, (n, dropped) in fates.items() if not dropped]
        generation = Generation(
            number=number,
            expanded=parent,
            states=[(i, children[n]) for i, (n, _) in fates.items()],
            edges=[
                EdgeRecord(i, parent, "model", f"child {n}", {"n": n}, number, "refused" if dropped else None)
                for i, (n, dropped) in fates.items()
            ],
            runs=[RunRecord(i, results[n], scores[n], 0.25, number) for n, i in booted],
            frontier=[(scores[n], i, number) for n, i in booted],
            counters={"wall_seconds": 0.25},
        )
        self.store.commit(generation)

        self.generations += 1
        if expanded:
            self.frontier.remove(expanded)
        for state_id, state in generation.states:
            self.states.setdefault(state_id, state)
        for edge in generation.edges:
            self.edges.setdefault(edge.child, edge)
        for run in generation.runs:
            self.runs.setdefault(run.state_id, run)
        for score, state_id, depth in generation.frontier:
            if all(entry.state_id != state_id for entry in self.frontier):
                self.frontier.append(FrontierEntry(self.next_sequence, score, state_id, depth))
                self.next_sequence += 1

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = Store.open(self.directory, writer=True)

    @invariant()
    def the_frontier_is_the_model_in_sequence_order(self) -> None:
        assert self.store.frontier() == self.frontier

    @invariant()
    def every_record_reads_back_as_first_committed(self) -> None:
        assert {state_id: self.store.state(state_id) for state_id in self.states} == self.states
        assert {run.state_id: run for run in self.store.runs()} == self.runs
        assert {edge.child: edge for edge in self.store.edges()} == self.edges

    @invariant()
    def the_store_is_sound(self) -> None:
        assert self.store.check() == []
        assert self.store.generations() == self.generations
        assert self.store.counters().get("runs", 0) == len(self.runs)
        assert self.store.metadata() == {"purpose": "model", "store_version": STORE_VERSION}

    def teardown(self) -> None:
        self.store.close()
        self.temporary.cleanup()


TestStoreMachine = StoreMachine.TestCase
TestStoreMachine.settings = settings(deadline=None, max_examples=25, stateful_step_count=12)


@PROPERTY
@given(stored=st.binary(max_size=64), other=st.binary(max_size=64))
def test_committing_other_bytes_under_a_stored_state_id_changes_nothing(stored: bytes, other: bytes) -> None:
    with tempfile.TemporaryDirectory() as temporary, Store.create(Path(temporary) / "w", {}) as store:
        store.commit(root_generation(stored))
        forged = replace(children_generation(1, sha(stored), []), states=[(sha(stored), other)])
        if other != stored:
            with pytest.raises(ValueError, match="not the SHA-256 of its bytes"):
                store.commit(forged)
        assert store.state(sha(stored)) == stored
        assert store.check() == []


@PROPERTY
@given(first=runs, second=runs, reason=st.text(max_size=20))
def test_the_first_run_and_edge_of_a_state_are_kept(first: RunRecord, second: RunRecord, reason: str) -> None:
    with tempfile.TemporaryDirectory() as temporary, Store.create(Path(temporary) / "w", {}) as store:
        store.commit(root_generation(result=first.result, score=first.score))
        root = sha(b"root")
        again = Generation(
            number=1,
            expanded=root,
            states=[(root, b"root")],
            edges=[EdgeRecord(root, root, "again", reason, {}, 1)],
            runs=[RunRecord(root, second.result, second.score, second.wall_seconds, 1)],
        )
        store.commit(again)
        run = store.run(root)
        edge = store.edge(root)
        assert run is not None and (run.result, run.score, run.generation) == (first.result, first.score, 0)
        assert edge is not None and (edge.operator, edge.parent) == ("initial", None)
        assert store.counters()["runs"] == 1
        assert store.check() == []


@PROPERTY
@given(stored=st.binary(max_size=64), other=st.binary(max_size=64))
def test_check_reports_a_state_whose_bytes_do_not_match_its_key(stored: bytes, other: bytes) -> None:
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(temporary) / "w"
        with Store.create(directory, {}) as store:
            store.commit(root_generation(stored))
        with lmdb.open(str(directory), max_dbs=16) as raw, raw.begin(write=True) as txn:
            txn.put(state_key(sha(stored)), other, db=raw.open_db(b"states", txn=txn))
        with Store.open(directory, writer=False) as store:
            problems = store.check()
        if other == stored:
            assert problems == []
        else:
            assert problems == [f"state {sha(stored)}: its bytes hash to {sha(other)}, not to its key"]


def test_the_expanded_state_leaves_the_frontier_in_the_commit_that_adds_its_children(directory: Path) -> None:
    with Store.create(directory, {}) as store:
        store.commit(root_generation())
        store.commit(children_generation(1, sha(b"root"), [b"a", b"b"]))
        assert [entry.state_id for entry in store.frontier()] == [sha(b"a"), sha(b"b")]
        assert [entry.sequence for entry in store.frontier()] == [1, 2]
        record = store.generation(1)
        assert record is not None and record.expanded == sha(b"root") and record.frontier_next == 3


def rejected_generations() -> list[tuple[str, Generation]]:
    root = sha(b"root")
    good = children_generation(1, root, [b"a"])

    def changed(**fields: Any) -> Generation:
        return replace(good, **fields)

    return [
        ("numbered 0, 1", changed(number=2)),
        ("not on the frontier", changed(expanded=sha(b"elsewhere"))),
        ("not stored", changed(edges=[EdgeRecord(sha(b"a"), sha(b"nowhere"), "t", "r", {}, 1)])),
        ("not stored", changed(runs=[RunRecord(sha(b"nowhere"), b"", b"", 0.0, 1)])),
        ("without a run", changed(runs=[])),
        ("run of generation 7", changed(runs=[RunRecord(sha(b"a"), b"", b"", 0.0, 7)])),
        ("kept by the store", changed(counters={"runs": 1.0})),
        (
            "which was dropped",
            changed(edges=[EdgeRecord(sha(b"a"), root, "t", "r", {}, 1, "config: refused")]),
        ),
        (
            "without a run, nor an edge saying why",
            changed(runs=[], frontier=[]),
        ),
    ]


def test_a_dropped_child_is_stored_with_its_reason_and_no_run(directory: Path) -> None:
    root = sha(b"root")
    why = "config: tick and interrupt_controller both drive the CPU's IRQ line: give one"
    with Store.create(directory, {}) as store:
        store.commit(root_generation())
        dropped = Generation(
            number=1,
            expanded=root,
            states=[(sha(b"bad"), b"bad")],
            edges=[EdgeRecord(sha(b"bad"), root, "devices", "map a GIC", {}, 1, why)],
        )
        store.commit(dropped)
        edge = store.edge(sha(b"bad"))
        assert edge is not None and edge.dropped == why
        assert store.run(sha(b"bad")) is None and store.frontier() == []
        record = store.generation(1)
        assert record is not None and (record.new_states, record.new_edges, record.new_runs) == (1, 1, 0)
        assert store.check() == []


def test_check_reports_a_state_without_a_run_or_a_reason(directory: Path) -> None:
    with Store.create(directory, {}) as store:
        store.commit(root_generation())
        store.commit(children_generation(1, sha(b"root"), [b"a"]))
    with lmdb.open(str(directory), max_dbs=16) as raw, raw.begin(write=True) as txn:
        runs = raw.open_db(b"runs", txn=txn)
        txn.delete(state_key(sha(b"a")), db=runs)
        txn.put(
            state_key(sha(b"root")),
            encode_edge(EdgeRecord(sha(b"root"), None, "i", "r", {}, 0, "no")),
            db=raw.open_db(b"edges", txn=txn),
        )
    with Store.open(directory, writer=False) as store:
        problems = store.check()
    assert f"state {sha(b'a')} has no run, and no edge saying why it was dropped" in problems
    assert f"state {sha(b'root')} has a run, but its edge says it was dropped" in problems


@pytest.mark.parametrize(("message", "generation"), rejected_generations())
def test_a_generation_that_breaks_an_invariant_is_refused_whole(
    directory: Path, message: str, generation: Generation
) -> None:
    with Store.create(directory, {}) as store:
        store.commit(root_generation())
        with pytest.raises(ValueError, match=message):
            store.commit(generation)
        assert store.generations() == 1
        assert store.state(sha(b"a")) is None
        assert [entry.state_id for entry in store.frontier()] == [sha(b"root")]
        assert store.counters() == {"runs": 1.0, "wall_seconds": 1.0}
        assert store.check() == []


def test_check_reports_records_that_name_missing_states(directory: Path) -> None:
    with Store.create(directory, {}) as store:
        store.commit(root_generation())
        store.commit(children_generation(1, sha(b"root"), [b"a"]))
    with lmdb.open(str(directory), max_dbs=16) as raw, raw.begin(write=True) as txn:
        txn.delete(state_key(sha(b"root")), db=raw.open_db(b"states", txn=txn))
        txn.delete(state_key(sha(b"a")), db=raw.open_db(b"runs", txn=txn))
    with Store.open(directory, writer=False) as store:
        problems = store.check()
    assert f"the run of generation 0 names state {sha(b'root')}, which is not stored" in problems
    assert f"the edge to {sha(b'a')} (its parent) names state {sha(b'root')}, which is not stored" in problems
    assert f"frontier entry 1: state {sha(b'a')} has no run" in problems
    assert "the runs counter is 2, but 1 runs are stored" in problems
    assert "1 states are stored, but the generations committed 2" in problems


def test_the_map_grows_from_a_tiny_one_and_keeps_every_record(directory: Path) -> None:
    big = bytes(range(256)) * 200
    with Store.create(directory, {}, initial_map_size=TINY_MAP) as store:
        store.commit(root_generation(result=big))
        parent = sha(b"root")
        for number in range(1, 11):
            children = [f"{number}.{i}".encode() for i in range(3)]
            store.commit(children_generation(number, parent, children, result=big))
            parent = sha(children[0])
        grown = store.map_size()
    assert grown >= 31 * len(big) > TINY_MAP
    with Store.open(directory, writer=True) as store:
        assert store.map_size() == grown
        assert all(run.result == big for run in store.runs())
        assert store.counters()["runs"] == 31
        assert store.check() == []


def test_iteration_returns_every_record_once_across_batches(directory: Path) -> None:
    children = [str(i).encode() for i in range(600)]
    with Store.create(directory, {}) as store:
        store.commit(root_generation())
        store.commit(children_generation(1, sha(b"root"), children))
        listed = [run.state_id for run in store.runs()]
        assert listed == sorted({sha(child) for child in children} | {sha(b"root")})
        assert len(list(store.edges())) == 601
        assert len(store.frontier()) == 600


def test_a_state_is_found_by_a_unique_prefix_of_its_id(directory: Path) -> None:
    with Store.create(directory, {}) as store:
        store.commit(root_generation())
        store.commit(children_generation(1, sha(b"root"), [str(i).encode() for i in range(40)]))
        root = sha(b"root")
        assert store.resolve(root[:7]) == root
        assert store.resolve(root[:7].upper()) == root
        with pytest.raises(BadInput, match="more than one state"):
            store.resolve("")
        with pytest.raises(BadInput, match="no state"):
            store.resolve(root[:10] + ("0" if root[10] != "0" else "1"))
        with pytest.raises(BadInput, match="not a state id"):
            store.resolve("xyz")


def test_metadata_holds_what_create_and_set_metadata_gave(directory: Path) -> None:
    with Store.create(directory, {"target": {"kernel": "/k"}, "budget": 7200}) as store:
        store.set_metadata("budget", 3600)
        with pytest.raises(ValueError, match="store's own"):
            store.set_metadata("store_version", STORE_VERSION + 1)
    with Store.open(directory, writer=False) as store:
        assert store.metadata() == {
            "target": {"kernel": "/k"},
            "budget": 3600,
            "store_version": STORE_VERSION,
        }
        with pytest.raises(RuntimeError, match="opened for reading"):
            store.set_metadata("budget", 1)


def test_a_forked_child_cannot_use_its_parents_store(directory: Path) -> None:
    with Store.create(directory, {}) as store:
        child = os.fork()
        if child == 0:
            try:
                store.generations()
            except RuntimeError:
                os._exit(0)
            os._exit(1)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert store.generations() == 0
