"""Timelines: how far a bench entry's search had booted at each moment of its wall time.

A timeline is read from the entry's store (OUT/SET/FIRMWARE/STRATEGY/REPEAT, the layout of
explorer.bench.campaign), opened for reading only: one point per committed generation, at the
search's wall time when that generation was committed, with the best milestone any run had
reached by then. Invariants:
- it starts at (0 s, no milestone): before its first generation a search has booted nothing;
- times never decrease and the best level never decreases (a best-so-far over commit order);
- it never invents a time: a store whose generations carry no wall time (written before the
  store recorded it) or that cannot be read gives no timeline at all, not an estimated one.
It never writes a store, and never scores a run again: the level is read from the score the
search stored with the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from explorer.bench.campaign import STORE_FILE
from explorer.errors import StoreError
from explorer.runner.kernel_hooks import MILESTONES
from explorer.search.score import CONSOLE, Score
from explorer.store import Store

USER_SPACE = "user space"
# How far a boot got, as the y axis of a timeline: no milestone, each boot milestone in the order
# a boot reaches them, then user space, then the console (the marker printed). A name's level is
# its index.
LEVELS: tuple[str | None, ...] = (None, *MILESTONES, USER_SPACE, CONSOLE)


def level_of(milestone: str | None) -> int:
    """The level of a furthest milestone as rows and scores name it (None: no milestone)."""
    return LEVELS.index(milestone)


@dataclass(frozen=True)
class Timeline:
    """One entry's best milestone over its search's wall time."""

    firmware: str
    strategy: str
    repeat: int
    # (search wall seconds, best level so far) after each generation, oldest first, from (0, 0).
    points: tuple[tuple[float, int], ...]
    # The search's wall time when it ended (its row's wall_seconds): the last level holds until then.
    end_seconds: float


def store_timeline(store: Store) -> list[tuple[float, int]] | None:
    """The (wall seconds, best level so far) points of a search; None if a generation has no time."""
    best_per_generation: dict[int, int] = {}
    for run in store.runs():
        level = level_of(Score.from_bytes(run.score).furthest_milestone)
        best_per_generation[run.generation] = max(level, best_per_generation.get(run.generation, 0))
    points = [(0.0, 0)]
    for number in range(store.generations()):
        record = store.generation(number)
        if record is None or record.wall_seconds is None:
            return None
        points.append((record.wall_seconds, max(points[-1][1], best_per_generation.get(number, 0))))
    return points


def entry_store_directory(set_directory: Path, row: dict[str, Any]) -> Path:
    """Where the search of a results row keeps its store (explorer.bench.campaign's layout)."""
    return set_directory / row["firmware"] / row["strategy"] / str(row["repeat"])


def entry_timeline(set_directory: Path, row: dict[str, Any]) -> Timeline | None:
    """The timeline of one finished entry; None if its store is gone, unreadable or too old."""
    directory = entry_store_directory(set_directory, row)
    if not (directory / STORE_FILE).is_file():
        return None
    try:
        with Store.open(directory, writer=False) as store:
            points = store_timeline(store)
    except StoreError:
        return None
    if points is None:
        return None
    return Timeline(
        firmware=row["firmware"],
        strategy=row["strategy"],
        repeat=row["repeat"],
        points=tuple(points),
        end_seconds=max(row["wall_seconds"], points[-1][0]),
    )


def read_timelines(set_directory: Path, rows: Sequence[dict[str, Any]]) -> list[Timeline | None]:
    """The timeline of each row, in the rows' order (None where there is none)."""
    return [entry_timeline(set_directory, row) for row in rows]
