"""A writer killed with SIGKILL at random moments loses at most the generation in flight.

Real processes, real LMDB: a child commits generations in a loop (in a tiny map, so that some
kills land while the map grows) and says which it committed; the test kills it at a random
moment, reopens the store, checks it, and checks that every generation the child reported is
there whole and nothing of a later one is; then a new child resumes, ten times over.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from explorer.store import Store
from tests.unit.test_store import children_generation, root_generation, sha

REPO = Path(__file__).resolve().parents[2]
KILLS = 10
CHILDREN = 3


def children_of(number: int) -> list[bytes]:
    return [b"generation %d child %d" % (number, i) for i in range(CHILDREN)]


def result_of(number: int) -> bytes:
    """Runs of a few kilobytes, so that the map keeps growing."""
    return b"%d" % number * (500 + number % 7 * 300)


def commit_until_killed(directory: Path) -> None:
    """The child: resume the store and commit generations forever, printing each number once committed."""
    with Store.open(directory, writer=True) as store:
        number = store.generations()
        print("resumed", flush=True)
        while True:
            parent = store.frontier()[0].state_id
            store.commit(children_generation(number, parent, children_of(number), result=result_of(number)))
            print(number, flush=True)
            number += 1


def kill_at_a_random_moment(directory: Path, chance: random.Random) -> int:
    """Start a child, kill it a random while after its first commit; the last generation it reported."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, pathlib\n"
            "from tests.unit.test_store_crash import commit_until_killed\n"
            "commit_until_killed(pathlib.Path(sys.argv[1]))",
            str(directory),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline() == "resumed\n"
    first = int(child.stdout.readline())
    time.sleep(chance.uniform(0.0, 0.3))
    os.kill(child.pid, signal.SIGKILL)
    reported = [first, *map(int, child.stdout.read().split())]
    assert child.wait() == -signal.SIGKILL
    return reported[-1]


def test_a_killed_writer_loses_at_most_the_generation_in_flight(tmp_path: Path) -> None:
    directory = tmp_path / "work"
    with Store.create(directory, {}, initial_map_size=16 << 10) as store:
        store.commit(root_generation())
    chance = random.Random()
    committed = 1
    for _ in range(KILLS):
        last_reported = kill_at_a_random_moment(directory, chance)
        with Store.open(directory, writer=False) as store:
            generations = store.generations()
            assert store.check() == []
            # Killed after a commit but before its print: one more than reported.
            assert generations in (last_reported + 1, last_reported + 2)
            for number in range(1, generations):
                for child in children_of(number):
                    run = store.run(sha(child))
                    assert run is not None and run.result == result_of(number) and run.generation == number
            assert all(store.state(sha(child)) is None for child in children_of(generations))
            assert store.counters()["runs"] == 1 + CHILDREN * (generations - 1)
        committed = generations
    # Every child resumed where the last one was killed and committed at least once.
    assert committed > KILLS
