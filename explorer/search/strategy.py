"""Strategies: which state on the frontier the next generation expands.

Best-first is the default; breadth-first, greedy depth-first and random are the baselines
`explorer bench` compares it with. A strategy only chooses: it sees the frontier entries (score,
depth, the order they were added) and a random generator the engine seeds from the search seed
and the generation number, so that a search and its resumption choose alike. Invariant: `choose`
returns one of the entries it is given, and the same entry for the same entries and generator.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from explorer.errors import BadInput
from explorer.store import FrontierEntry

Strategy = Callable[[Sequence[FrontierEntry], random.Random], FrontierEntry]


def best_first(frontier: Sequence[FrontierEntry], rng: random.Random) -> FrontierEntry:
    """The highest score; among equals the newest, which continues the line that got there."""
    return max(frontier, key=lambda entry: (entry.score, entry.sequence))


def breadth_first(frontier: Sequence[FrontierEntry], rng: random.Random) -> FrontierEntry:
    """The shallowest state, oldest first: every state at one depth before any deeper one."""
    return min(frontier, key=lambda entry: (entry.depth, entry.sequence))


def depth_first(frontier: Sequence[FrontierEntry], rng: random.Random) -> FrontierEntry:
    """Greedy depth-first: the deepest state, the best of those, newest among equals."""
    return max(frontier, key=lambda entry: (entry.depth, entry.score, entry.sequence))


def uniform_random(frontier: Sequence[FrontierEntry], rng: random.Random) -> FrontierEntry:
    """Any state, uniformly (entries in the order they were added, so the choice is reproducible)."""
    ordered = sorted(frontier, key=lambda entry: entry.sequence)
    return ordered[rng.randrange(len(ordered))]


STRATEGIES: dict[str, Strategy] = {
    "best-first": best_first,
    "breadth-first": breadth_first,
    "depth-first": depth_first,
    "random": uniform_random,
}


def strategy_named(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise BadInput(f"unknown strategy {name!r}: use one of {', '.join(STRATEGIES)}") from None
