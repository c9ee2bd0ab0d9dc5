"""The search: generation after generation, expand the state the strategy chooses, boot its children.

Phases of one generation (Hypothesis-style: each a method, each with its invariant; `_generation`
calls them in this order):
  choose   the strategy picks a frontier entry (seeded by the search seed and generation number);
  propose  the operators turn it and its lineage into children, tier by tier, each child checked
           as a runner would check it, one no runner would boot dropped with its reason
           (explorer.search.proposal). Invariant: no proposal ends a search;
  run      the executor boots every new child (children already stored are never booted again:
           a state's run is a function of the state); with snapshots (SearchOptions.snapshots),
           the children whose boot is the parent's up to a point (explorer.search.boot_sharing)
           continue from a save of the parent's boot there instead of booting from reset: the
           parent boots to the point once (unless that save is cached), then they continue from
           it; a child whose boot is an older ancestor's up to a save this session kept of it
           continues from the latest such save instead, unless a new one of its parent's would
           skip MIN_SHARED_INSTRUCTIONS more. The prefix boots are master-side work: they count in the
           generation's wall and runner-wait time like runs, and in the counters
           snapshot_seconds (their wall time), snapshots_taken and runs_from_snapshots, never
           as runs. Each run's result is decoded once, as it arrives (`ChildRun`: the observer
           and the commit read that). Invariant: a search stores exactly the same states and
           byte-identical runs with snapshots as without;
  commit   one store transaction, booting nothing: the children, their edges (parent,
           operator, reason), their runs, their frontier entries, the counters; the dropped
           children with the reason on their edges (no run, no frontier entry: stored, they are
           never proposed again); the expanded state leaves the frontier only when it proposed
           nothing new (otherwise it goes back, just older than its children, so that its next
           expansion asks the next tier).
A kill at any moment loses at most the generation in flight: resuming re-chooses the same
state (it is still on the frontier) and re-proposes the same children.

The search ends when a run completes the boot (explorer.search.score.boot_completed: the
console milestone, user space printing the marker on the console, where the target's initrd
prints it, the search can place the console's UART and the run's machine delivers its interrupt;
else user space), the frontier is
empty, the wall-clock budget is spent (runs still going then are abandoned, and only the
finished ones are committed), or the user interrupts it (then nothing of the generation in
flight is committed). Why a session ended is stored (metadata STOPPED, with
what was left: the states still on the frontier, the children dropped) for `explorer show`;
while a session runs, and after one that was interrupted or killed, it holds None.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from explorer.execution.executor import Executor
from explorer.execution.jobs import Job, Outcome
from explorer.execution.snapshot_cache import SnapshotCache
from explorer.firmware.model import Firmware
from explorer.runner.rehost_pb2 import RunResult
from explorer.runner.result import deserialize
from explorer.runner.snapshot import Snapshot
from explorer.search.boot_sharing import (
    DEFAULT_SNAPSHOT_LIMIT_BYTES,
    MIN_SHARED_INSTRUCTIONS,
    divergence_point,
    inherited_point,
    sharing_plan,
)
from explorer.search.goal import Goal, best_score
from explorer.search.initial import initial_state
from explorer.search.operators import (
    Child,
    Context,
    Evaluated,
)
from explorer.search.proposal import OperatorPhases, Proposal, propose
from explorer.search.score import Score, score
from explorer.search.state import State, Target, bootable, canonical_bytes, derive, parse_state, state_id
from explorer.search.strategy import strategy_named
from explorer.store import EdgeRecord, FrontierEntry, Generation, RunRecord, Store

# Ancestors an operator sees (NOP escalation looks a few generations back; more is only cost).
LINEAGE_DEPTH = 16
INITIAL_OPERATOR = "initial"
# The store counters a search with snapshots adds (a search without never has them).
SNAPSHOT_COUNTERS = ("snapshots_taken", "runs_from_snapshots", "snapshot_seconds")
# The store counter of children dropped unbooted (a search that dropped none never has it).
DROPPED_COUNTER = "dropped_children"
# The metadata key saying why the search's last session ended (see stop_record).
STOPPED = "stopped"
# Why a session ends: Search.run's answers.
BOOT_COMPLETED = "boot completed"
BUDGET_SPENT = "budget"
EXHAUSTED = "exhausted"


@dataclass(frozen=True)
class SearchOptions:
    budget_seconds: float
    workers: int
    strategy: str = "best-first"
    seed: int = 0
    # Wall-clock deadline of one run. The instruction budget or the stuck-poll limit normally
    # ends it first (a whole armmp boot takes under a minute on a loaded 2-core machine); a run
    # still going at the deadline is usually idle with no timer, and never reaches its budget.
    run_deadline_seconds: float = 150.0
    # Children booted per generation at most (the first ones proposed).
    max_children: int = 40
    # Guest instructions a run may execute (0: the initial state's choice, made for Linux boots).
    instruction_budget: int = 0
    # Children continue from snapshots of their parent's boot where they can.
    snapshots: bool = False
    # Bytes of snapshots kept beside the store (least recently used evicted first).
    snapshot_limit_bytes: int = DEFAULT_SNAPSHOT_LIMIT_BYTES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchOptions:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)


@dataclass(frozen=True)
class ChildRun:
    """A child's finished run: its outcome, and its result and score, decoded once."""

    outcome: Outcome
    result: RunResult
    score: Score

    @classmethod
    def of(cls, outcome: Outcome) -> ChildRun:
        result = deserialize(outcome.result)
        return cls(outcome, result, score(result))


@dataclass(frozen=True)
class Save:
    """A save job's outcome: where the snapshot was written (if it was), its point, its wall time."""

    directory: Path
    point: int
    wall_seconds: float


@dataclass(frozen=True)
class GenerationReport:
    """What one committed generation did, for progress displays."""

    number: int
    expanded: str | None
    stalled: bool
    children: int
    best: Score
    frontier: int
    runs_total: int
    wall_seconds: float
    dropped: int = 0


class Observer(Protocol):
    def generation_started(self, number: int, expanded: str | None, children: int) -> None: ...

    def run_finished(self, outcome: Outcome, run_score: Score) -> None: ...

    def generation_committed(self, report: GenerationReport) -> None: ...


class Search:
    """One search session over a store (a fresh one, or one being resumed)."""

    def __init__(
        self,
        store: Store,
        firmware: Firmware,
        target: Target,
        options: SearchOptions,
        executor: Executor,
        observer: Observer | None = None,
        operators: OperatorPhases | None = None,
        initial: State | None = None,
        snapshots: SnapshotCache | None = None,
    ) -> None:
        """`initial`: the first state [default: explorer.search.initial.initial_state].

        `snapshots`: where children's shared boots are saved; None boots every child in full
        (the session passes one when options.snapshots and its executor can use it)."""
        self._store = store
        self._firmware = firmware
        self._target = target
        self._options = options
        self._strategy = strategy_named(options.strategy)
        self._executor = executor
        self._observer = observer
        self._operators = operators or OperatorPhases()
        self._initial = initial
        self._snapshots = snapshots
        self._snapshot_counters: dict[str, float] = {}
        # The points of the saves this session kept, by the state whose boot they saved (a resumed
        # search starts with none: it only shares less).
        self._kept: dict[str, set[int]] = {}
        self._started = time.monotonic()
        self._wall_before = float(store.counters().get("wall_seconds", 0.0))
        self._waiting = 0.0
        self._waiting_committed = 0.0
        self._best = best_score(store)
        self._goal = Goal.of(firmware, target)
        self._completed = self._goal.reached_in(store)

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> str:
        """Search until an end; return why it ended (BOOT_COMPLETED, BUDGET_SPENT, EXHAUSTED)."""
        # Not stopped while this session runs (nor after it, if it is interrupted or killed).
        self._store.set_metadata(STOPPED, None)
        ended = self._search()
        # The time of runs the budget cut short is the search's too (never of a generation).
        uncommitted = self._wall_seconds() - self._store_wall()
        if uncommitted > 0:
            self._store.add_to_counters(
                {"wall_seconds": uncommitted, "runner_wait_seconds": self._waiting - self._waiting_committed}
            )
        self._store.set_metadata(STOPPED, stop_record(self._store, ended))
        return ended

    def _search(self) -> str:
        if self._store.generations() == 0:
            self._first_generation()
        while True:
            if self._completed:
                return BOOT_COMPLETED
            if time.monotonic() - self._started >= self._options.budget_seconds:
                return BUDGET_SPENT
            frontier = self._store.frontier()
            if not frontier:
                return EXHAUSTED
            self._generation(self._choose(frontier))

    def _first_generation(self) -> None:
        initial = self._initial or initial_state(self._firmware, self._options.seed, self._target.cmdline)
        if self._options.instruction_budget:
            initial = derive(initial, _budget_setter(self._options.instruction_budget))
        # Not checked: the initial state is made from what the user gave, and a machine no runner
        # accepts is their error to see (BadInput from the runner), not a proposal to drop.
        child = Child(initial, INITIAL_OPERATOR, _initial_reason(initial))
        proposal = Proposal([child], [], stalled=False)
        self._commit(0, None, None, proposal, self._run(0, None, (), proposal.children))

    def _generation(self, entry: FrontierEntry) -> None:
        """choose (done: `entry`), propose, run, commit."""
        number = self._store.generations()
        lineage = self._lineage(entry.state_id)
        proposal = self._propose(lineage)
        runs = self._run(number, entry, lineage, proposal.children)
        self._commit(number, entry, lineage[0], proposal, runs)

    # -- phases ------------------------------------------------------------------------------

    def _choose(self, frontier: Sequence[FrontierEntry]) -> FrontierEntry:
        rng = random.Random(f"{self._options.seed}:{self._store.generations()}")
        return self._strategy(frontier, rng)

    def _propose(self, lineage: tuple[Evaluated, ...]) -> Proposal:
        context = Context(self._firmware, self._target, lineage)
        return propose(context, self._operators, self._stored, self._options.max_children)

    def _run(
        self,
        number: int,
        expanded: FrontierEntry | None,
        lineage: Sequence[Evaluated],
        children: Sequence[Child],
    ) -> dict[str, ChildRun]:
        """Boot the children of lineage[0] (those the budget leaves unfinished are missing), each run
        decoded once; a child continues from the latest save of its parent's or an ancestor's boot
        it may (explorer.search.boot_sharing), one taken now for it or one kept before."""
        if self._observer is not None:
            self._observer.generation_started(number, expanded.state_id if expanded else None, len(children))
        if not children:
            return {}
        jobs = {
            state_id(child.state): Job(
                state_id(child.state),
                bootable(child.state, self._target, self._firmware).SerializeToString(),
                self._options.run_deadline_seconds,
            )
            for child in children
        }
        if self._snapshots is None or not lineage:
            return self._executed(list(jobs.values()))[0]
        cache = self._snapshots
        self._count("runs_from_snapshots", 0.0)
        parent = lineage[0]
        inherited = self._inherited_snapshots(cache, lineage, children)
        shared = self._shared_snapshots(cache, parent, children, inherited)
        sharing = {child for _, group in shared.values() for child in group}
        saves = [
            self._save_job(cache, parent, point) for point, (found, _) in shared.items() if found is None
        ]
        # The prefix boots run beside the children that boot in full and those continuing from a
        # save kept before (all before any new save is filed, which may evict older ones); the
        # children of the new saves wait for them.
        first = [
            jobs[child] if child not in inherited else replace(jobs[child], snapshot=inherited[child])
            for child in jobs
            if child not in sharing
        ]
        runs, saved = self._executed([*saves, *first])
        kept: dict[int, Path | None] = {point: found for point, (found, _) in shared.items()}
        for save in saved:
            self._count("snapshot_seconds", save.wall_seconds)
            kept[save.point] = cache.keep(save.directory, parent.state_id, save.point)
            self._count("snapshots_taken", float(kept[save.point] is not None))
            if kept[save.point] is not None:
                self._kept.setdefault(parent.state_id, set()).add(save.point)
        continued = []
        for point, (_, group) in shared.items():
            directory = kept[point]
            use = Snapshot(parent.state_id, point, directory, save=False) if directory is not None else None
            continued += [replace(jobs[child], snapshot=use) for child in group]
        runs.update(self._executed(continued)[0])
        return runs

    def _inherited_snapshots(
        self, cache: SnapshotCache, lineage: Sequence[Evaluated], children: Sequence[Child]
    ) -> dict[str, Snapshot]:
        """Each child's latest usable save of its parent's or an ancestor's boot this session kept
        (explorer.search.boot_sharing.inherited_point), still in the cache."""
        present: list[tuple[Evaluated, dict[int, Path]]] = []
        for ancestor in lineage:
            # Looked up (and so marked used) every generation: the lineage's saves outlive others.
            found = {
                point: cache.get(ancestor.state_id, point) for point in self._kept.get(ancestor.state_id, ())
            }
            directories = {point: directory for point, directory in found.items() if directory is not None}
            self._kept[ancestor.state_id] = set(directories)
            if directories:
                present.append((ancestor, directories))
        inherited: dict[str, Snapshot] = {}
        for child in children:
            best: tuple[int, Evaluated, Path] | None = None
            for ancestor, directories in present:
                point = inherited_point(ancestor.state, ancestor.result, directories.keys(), child.state)
                if point is not None and (best is None or point > best[0]):
                    best = (point, ancestor, directories[point])
            if best is not None:
                point, ancestor, directory = best
                inherited[state_id(child.state)] = Snapshot(ancestor.state_id, point, directory, save=False)
        return inherited

    def _shared_snapshots(
        self,
        cache: SnapshotCache,
        parent: Evaluated,
        children: Sequence[Child],
        inherited: Mapping[str, Snapshot],
    ) -> dict[int, tuple[Path | None, list[str]]]:
        """Each point of the parent's boot children continue from: its cached snapshot (None: to be
        taken) and those children (explorer.search.boot_sharing.sharing_plan). A child with an
        inherited snapshot joins only when the parent's point skips MIN_SHARED_INSTRUCTIONS more
        (less would not pay for a new save)."""
        points: dict[str, int | None] = {}
        for child in children:
            identity = state_id(child.state)
            point = divergence_point(parent.state, parent.result, child.state)
            have = inherited.get(identity)
            if point is not None and have is not None and point - have.point < MIN_SHARED_INSTRUCTIONS:
                point = None
            points[identity] = point
        found = {
            point: cache.get(parent.state_id, point) for point in set(points.values()) if point is not None
        }
        # Saves a session before this one kept (a resume) serve later generations too.
        self._kept.setdefault(parent.state_id, set()).update(
            point for point, directory in found.items() if directory is not None
        )
        plan = sharing_plan(
            points, cached={point for point, directory in found.items() if directory is not None}
        )
        return {point: (found[point], group) for point, group in plan.items()}

    def _save_job(self, cache: SnapshotCache, parent: Evaluated, point: int) -> Job:
        """A job booting the parent to `point` and saving it into a staging directory of the cache."""
        config = bootable(parent.state, self._target, self._firmware).SerializeToString()
        snapshot = Snapshot(parent.state_id, point, cache.staging(parent.state_id, point), save=True)
        return Job(parent.state_id, config, self._options.run_deadline_seconds, snapshot)

    def _executed(self, jobs: Sequence[Job]) -> tuple[dict[str, ChildRun], list[Save]]:
        """Run `jobs` on the executor: of those that finished within the budget, the children's runs
        by state id (each result decoded here, once) and the saves."""
        runs: dict[str, ChildRun] = {}
        saves: list[Save] = []
        if not jobs:
            return runs, saves
        waiting_since = time.monotonic()
        for outcome in self._executor.run(jobs, stop_at=self._started + self._options.budget_seconds):
            now = time.monotonic()
            self._waiting += now - waiting_since
            snapshot = outcome.job.snapshot
            if snapshot is not None and snapshot.save:
                saves.append(Save(snapshot.directory, snapshot.point, outcome.wall_seconds))
            else:
                if snapshot is not None:
                    # Counted as it finishes: a run the budget cuts short is no run of the search.
                    self._count("runs_from_snapshots", 1.0)
                run = ChildRun.of(outcome)
                runs[outcome.state_id] = run
                if self._observer is not None:
                    self._observer.run_finished(outcome, run.score)
            waiting_since = time.monotonic()
        self._waiting += time.monotonic() - waiting_since
        return runs, saves

    def _count(self, counter: str, amount: float) -> None:
        self._snapshot_counters[counter] = self._snapshot_counters.get(counter, 0.0) + amount

    def _commit(
        self,
        number: int,
        expanded: FrontierEntry | None,
        parent: Evaluated | None,
        proposal: Proposal,
        runs: dict[str, ChildRun],
    ) -> None:
        children = proposal.children
        # Children whose runs the budget cut short are left out: not stored, so a resumed search
        # proposes and boots them again; their parent stays on the frontier (below). A generation
        # whose every run was cut commits nothing at all.
        finished = [child for child in children if state_id(child.state) in runs]
        if children and not finished:
            return
        children = finished
        depth = expanded.depth + 1 if expanded is not None else 0
        states, edges, records, frontier = [], [], [], []
        for child in children:
            identity = state_id(child.state)
            run = runs[identity]
            run_score = run.score.to_bytes()
            states.append((identity, canonical_bytes(child.state)))
            edges.append(
                EdgeRecord(
                    child=identity,
                    parent=parent.state_id if parent is not None else None,
                    operator=child.operator,
                    reason=child.reason,
                    detail=child.detail,
                    generation=number,
                )
            )
            records.append(
                RunRecord(identity, run.outcome.result, run_score, run.outcome.wall_seconds, number)
            )
            self._best = max(self._best, run.score)
            self._completed = self._completed or self._goal.reached_by(child.state, run.result)
            frontier.append((run_score, identity, depth))
        for dropped in proposal.dropped:
            identity = state_id(dropped.child.state)
            states.append((identity, canonical_bytes(dropped.child.state)))
            edges.append(
                EdgeRecord(
                    child=identity,
                    parent=parent.state_id if parent is not None else None,
                    operator=dropped.child.operator,
                    reason=dropped.child.reason,
                    detail=dropped.child.detail,
                    generation=number,
                    dropped=dropped.why,
                )
            )
        if expanded is not None and children:
            # It stays on the frontier until expanding it proposes nothing new: the next time,
            # the children it has are stored, and the next tier of operators is asked. Put back
            # before its children, so that a child scoring as well is tried first.
            frontier.insert(0, (expanded.score, expanded.state_id, expanded.depth))
        wall = self._wall_seconds()
        self._store.commit(
            Generation(
                number=number,
                expanded=expanded.state_id if expanded is not None else None,
                states=states,
                edges=edges,
                runs=records,
                frontier=frontier,
                counters={
                    "stalled_generations": float(proposal.stalled),
                    "wall_seconds": wall - self._store_wall(),
                    "runner_wait_seconds": self._waiting - self._waiting_committed,
                    **self._snapshot_counters,
                    **({DROPPED_COUNTER: float(len(proposal.dropped))} if proposal.dropped else {}),
                },
            )
        )
        self._waiting_committed = self._waiting
        self._snapshot_counters = {}
        if self._observer is not None:
            counters = self._store.counters()
            self._observer.generation_committed(
                GenerationReport(
                    number=number,
                    expanded=expanded.state_id if expanded is not None else None,
                    stalled=proposal.stalled,
                    children=len(children),
                    best=self._best,
                    frontier=len(self._store.frontier()),
                    runs_total=int(counters.get("runs", 0)),
                    wall_seconds=wall,
                    dropped=len(proposal.dropped),
                )
            )

    # -- reading the store --------------------------------------------------------------------

    def _lineage(self, identity: str) -> tuple[Evaluated, ...]:
        """The state and its ancestors, nearest first, each with its run and how it was made."""
        lineage: list[Evaluated] = []
        current: str | None = identity
        while current is not None and len(lineage) < LINEAGE_DEPTH:
            evaluated, current = evaluated_state(self._store, current)
            lineage.append(evaluated)
        return tuple(lineage)

    def _stored(self, identity: str) -> bool:
        return self._store.state(identity) is not None

    def _store_wall(self) -> float:
        return float(self._store.counters().get("wall_seconds", 0.0))

    def _wall_seconds(self) -> float:
        """Search wall time over all sessions: before this one, plus this one so far."""
        return self._wall_before + time.monotonic() - self._started


def evaluated_state(store: Store, identity: str) -> tuple[Evaluated, str | None]:
    """A stored state with its run and the edge that made it; and its parent's id."""
    data = store.state(identity)
    run = store.run(identity)
    if data is None or run is None:
        raise KeyError(identity)
    edge = store.edge(identity)
    made_by = None
    parent = None
    if edge is not None:
        parent = edge.parent
        if edge.operator != INITIAL_OPERATOR:
            made_by = Child(parse_state(data), edge.operator, edge.reason, edge.detail)
    return Evaluated(identity, parse_state(data), deserialize(run.result), made_by), parent


def _initial_reason(initial: State) -> str:
    if not initial.devices:
        return "the kernel on a CPU and RAM, nothing else"
    console = initial.devices[0]
    return f"the kernel on a CPU and RAM, and its console's UART: {console.type} at 0x{console.mmio[0]:x}"


def stop_record(store: Store, ended: str) -> dict[str, Any]:
    """What the metadata STOPPED holds once a session ended `ended` (Search.run's answer): the
    generations committed, the states still on the frontier (never expanded to the end: left
    untried) and the children dropped so far."""
    return {
        "why": ended,
        "generations": store.generations(),
        "frontier": len(store.frontier()),
        "dropped": int(store.counters().get(DROPPED_COUNTER, 0)),
    }


def _budget_setter(budget: int) -> Callable[[State], None]:
    def set_budget(state: State) -> None:
        state.instruction_budget = budget

    return set_budget
