"""What a failing run costs: stored runs that ended stuck or idle, booted again, one build beside another.

For each search work directory given, the run of its lowest state id that ended stuck (the
stuck-read limit, "stuck: N reads of ...") and the one that ended idle ("idle: ..."), each exported
(`explorer export`) and booted again (`explorer boot --result-out`) with every build given
(`--build PYTHON=QEMU_DIR`, repeatable: the Python whose `-m explorer` is a checkout, and that
checkout's runner build; the first is "before", each other is compared with it). Per run: wall
seconds, CPU seconds (user + sys of the boot and everything it started), the exit, and whether
the result equals the first build's apart from the read count of a stuck exit (milestones,
initcalls, call stack, threads, log, hot loops, coverage, exit reason). Then the median wall and
CPU seconds of all runs per build, and the ratios to the first. Runs one boot at a time.

    .venv/bin/python benchmarks/failing_runs.py WORK [WORK ...] [--build PYTHON=QEMU_DIR ...]
        [--deadline 600]
        [--initrd FILE]   # boot with this initrd instead (a store's may have left the cache)

With --stored, nothing is booted: per work directory, what its search stored of its failing runs
(their number and median stored wall seconds, each run's wall time in the search, a continued run's
from its restore), how many of its runs continued from a snapshot, the snapshots it took and their
prefix boots' wall seconds (not in any run's), the median stored wall seconds of every run, and the
furthest milestone; then
the median over all their failing runs. Two searches of the same firmware, one per build, side by
side (BENCHMARKS.md, "Failing runs").
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from explorer.runner.build import find_runner
from explorer.runner.rehost_pb2 import RunResult
from explorer.runner.result import deserialize
from explorer.store.store import Store

# What a run's exit detail starts with, for the runs this measures.
ENDINGS = ("stuck", "idle")
# The counts in an exit's detail a cheaper end may change ("stuck: 3000000 reads", "384000 ms").
COUNTS = re.compile(r"\d+ (reads|ms)")


@dataclass(frozen=True)
class Boot:
    wall: float
    cpu: float
    result: RunResult


def failing_runs(work: Path) -> list[tuple[str, str]]:
    """(ending, state id) of the lowest state id per ending among the work directory's runs."""
    chosen: dict[str, str] = {}
    with Store.open(work, writer=False) as store:
        for run in store.runs():
            ending = deserialize(run.result).exit.detail.split(":")[0]
            if ending in ENDINGS and run.state_id < chosen.get(ending, "g"):
                chosen[ending] = run.state_id
    return sorted(chosen.items())


def stored_summary(work: Path) -> tuple[list[float], str]:
    """The stored wall seconds of the search's failing runs, and its one-line row."""
    walls: list[float] = []
    every: list[float] = []
    furthest = (0, 0, "-")
    with Store.open(work, writer=False) as store:
        counters = store.counters()
        for run in store.runs():
            result = deserialize(run.result)
            every.append(run.wall_seconds)
            if result.exit.detail.split(":")[0] in ENDINGS:
                walls.append(run.wall_seconds)
            if result.milestones:
                reached = (len(result.milestones), len(result.initcalls), result.milestones[-1].name)
                furthest = max(furthest, reached)
    runs = int(counters.get("runs", 0))
    continued = int(counters.get("runs_from_snapshots", 0))
    median = f"{statistics.median(walls):.1f}" if walls else "-"
    row = (
        f"| {board(work)} | {work} | {runs} | {continued} ({continued / max(runs - 1, 1):.0%} of children) | "
        f"{int(counters.get('snapshots_taken', 0))}, {counters.get('snapshot_seconds', 0.0):.0f} s | "
        f"{len(walls)} | {median} | {statistics.median(every) if every else 0:.1f} | "
        f"{furthest[2]}, {furthest[1]} initcalls |"
    )
    return walls, row


def stored(works: list[Path]) -> None:
    print("| firmware | work | runs | continued from a snapshot | snapshots, their wall ", end="")
    print("| failing runs | median wall s | median wall s, every run | furthest |")
    print("|---|---|---|---|---|---|---|---|---|")
    every: list[float] = []
    for work in works:
        walls, row = stored_summary(work)
        every += walls
        print(row)
    if every:
        print(f"all: {len(every)} failing runs, median {statistics.median(every):.1f} s wall")


def board(work: Path) -> str:
    with Store.open(work, writer=False) as store:
        target = store.metadata().get("target", {})
    named = target.get("dtb") or target.get("kernel") or "?"
    return Path(str(named)).stem


def boot(config: Path, build: str, deadline: float, scratch: Path) -> Boot:
    python, qemu = build.split("=", 1)
    result_path = scratch / "result.bin"
    result_path.unlink(missing_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    command = [
        python, "-m", "explorer", "boot", str(config), "--qemu", qemu,
        "--deadline", str(deadline), "--result-out", str(result_path),
    ]  # fmt: skip
    # Its exit status says whether the run got anywhere (1: it did not); the result file is there.
    # From the scratch directory: `-m explorer` imports the checkout of `python`, not the one here.
    booted = subprocess.run(
        command, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=scratch
    )
    if not result_path.exists():
        raise SystemExit(f"{' '.join(command)}: no result: {booted.stderr.decode(errors='replace')[-500:]}")
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return Boot(wall, cpu, deserialize(result_path.read_bytes()))


def comparable(result: RunResult) -> RunResult:
    """The result without what a cheaper end of the same run may change: the counts in its exit."""
    kept = RunResult()
    kept.CopyFrom(result)
    kept.exit.detail = COUNTS.sub("N", kept.exit.detail)
    kept.exit.icount = 0
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("work", nargs="+", type=Path, help="search work directories")
    parser.add_argument("--build", action="append", help="PYTHON=QEMU_DIR (repeatable; default: this one)")
    parser.add_argument("--deadline", type=float, default=600.0)
    parser.add_argument("--initrd", type=Path, help="the initrd to boot instead of the stored one")
    parser.add_argument("--stored", action="store_true", help="only summarise what the searches stored")
    arguments = parser.parse_args()
    if arguments.stored:
        stored(arguments.work)
        return
    builds = arguments.build or [f"{sys.executable}={find_runner(None)}"]
    boots: dict[str, list[Boot]] = {build: [] for build in builds}
    columns = " | ".join(f"build {index} wall s, cpu s" for index in range(len(builds)))
    print(f"| firmware | state | exit | {columns} | same |")
    print("|---|---|---|" + "---|" * len(builds) + "---|")
    with tempfile.TemporaryDirectory(prefix="failing-runs-") as scratch_name:
        scratch = Path(scratch_name)
        for work in arguments.work:
            for _ending, state_id in failing_runs(work):
                config = scratch / "state.json"
                export = [sys.executable, "-m", "explorer", "export", str(work), state_id, "-o", str(config)]
                subprocess.run(export, check=True, stdout=subprocess.DEVNULL)
                if arguments.initrd is not None:
                    exported = json.loads(config.read_text())
                    exported["boot"]["initrd"] = str(arguments.initrd)
                    config.write_text(json.dumps(exported))
                row = [boot(config, build, arguments.deadline, scratch) for build in builds]
                for build, measured in zip(builds, row, strict=True):
                    boots[build].append(measured)
                same = all(comparable(other.result) == comparable(row[0].result) for other in row[1:])
                cells = " | ".join(f"{measured.wall:.1f}, {measured.cpu:.1f}" for measured in row)
                detail = row[-1].result.exit.detail
                verdict = "yes" if same else "NO"
                print(f"| {board(work)} | {state_id[:12]} | {detail[:60]} | {cells} | {verdict} |")
    first = boots[builds[0]]
    for index, build in enumerate(builds):
        walls = [measured.wall for measured in boots[build]]
        cpus = [measured.cpu for measured in boots[build]]
        wall, cpu = statistics.median(walls), statistics.median(cpus)
        line = f"build {index} ({build}): median {wall:.1f} s wall, {cpu:.1f} s cpu"
        if index:
            wall_ratio = wall / statistics.median([measured.wall for measured in first])
            cpu_ratio = cpu / statistics.median([measured.cpu for measured in first])
            line += f"; ratio to build 0: {wall_ratio:.2f} wall, {cpu_ratio:.2f} cpu"
        print(line)


if __name__ == "__main__":
    main()
