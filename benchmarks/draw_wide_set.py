"""The wide set (issue 14): boards nobody tuned for, drawn at random from the corpus.

30 of the armmp kernel's device trees and 10 of the marvell kernel's boards (its device trees
and the ATAG boards of its machine table, by machine number) that are in neither
benchmarks/sets/dev.toml nor large.toml: the sorted candidates shuffled by random.Random(SEED),
and the first the kernel can run (below) taken, written to benchmarks/sets/wide.toml. The same
corpus (the corpus lock) gives the same set: tests/integration/test_bench_sets_corpus.py checks
the committed file against a fresh draw, so it cannot drift from this script.

Drawn from the boards a kernel can run at all. A device tree is left out when it describes
hardware the kernel was never built for, a reason that is not the search's:
- its CPU nodes name a core of another architecture class than the kernel's (ARMv5 and ARMv6
  boards whose trees the armmp package builds along with their SoC family's ARMv7 ones), by the
  search's own table of cores (explorer.search.initial); a core that table does not know (the
  ARMv8 cores, which run ARMv7 kernels in AArch32; Marvell's own cores) gives no verdict, nor
  does a tree without CPU nodes, and the board is kept;
- it is an M-profile board (no MMU: no kernel of the corpus runs there), known by the
  architecture's own interrupt controller, the NVIC, since those trees name no CPU;
- it does not parse.
The kernel's boards are read from the corpus (Corpus.boards), its ATAG machine numbers from
ingestion (Firmware.machines); nothing is chosen by name.

    .venv/bin/python benchmarks/draw_wide_set.py           # writes benchmarks/sets/wide.toml
"""

from __future__ import annotations

import json
import random
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from explorer import corpus
from explorer.bench.sets import DEFAULT_CMDLINE, MARKER_INITRD, SETS_DIRECTORY
from explorer.errors import DeviceTreeError
from explorer.firmware.devicetree import parse_dtb
from explorer.firmware.ingest import ingest
from explorer.firmware.model import MachineDesc
from explorer.search.initial import ARCHITECTURE_OF_MODEL, ARM_CPU_FOR_COMPATIBLE

SEED = 14
# (kernel flavour, how many of its boards), in the order the set lists them.
DRAWS = (("armmp", 30), ("marvell", 10))
# The sets whose boards are not drawn again.
EXCLUDED_SETS = ("dev", "large")
WIDE_SET = SETS_DIRECTORY / "wide.toml"
# The M profile's architectural interrupt controllers (ARMv7-M, ARMv6-M).
M_PROFILE_INTERRUPT_CONTROLLERS = frozenset({"arm,armv7m-nvic", "arm,armv6m-nvic"})


@dataclass(frozen=True)
class Board:
    """One board of a kernel: a device tree by corpus board name, or an ATAG machine number."""

    flavour: str
    dtb: str | None = None
    board_id: int | None = None
    machine: str | None = None  # the machine table's name of an ATAG board

    @property
    def key(self) -> tuple[str, str | None, int | None]:
        return (self.flavour, self.dtb, self.board_id)

    @property
    def name(self) -> str:
        if self.dtb is not None:
            return f"{self.flavour}-{self.dtb.replace('/', '-')}"
        assert self.machine is not None  # an ATAG board comes from the machine table
        return f"{self.flavour}-{re.sub(r'[^a-z0-9]+', '-', self.machine.lower()).strip('-')}"


def excluded_boards(sets: tuple[str, ...] = EXCLUDED_SETS) -> set[tuple[str, str | None, int | None]]:
    """The keys (Board.key) of the boards the committed sets already hold, read from their TOML."""
    taken = set()
    for name in sets:
        for entry in tomllib.loads((SETS_DIRECTORY / f"{name}.toml").read_text())["firmware"]:
            if "flavour" in entry:
                taken.add((entry["flavour"], entry.get("dtb"), entry.get("board_id")))
    return taken


def runnable(kernels: corpus.Corpus, board: Board, cpu_class: str) -> bool:
    """Whether the kernel (of `cpu_class`) can run on `board` at all: always for an ATAG board of
    its machine table; for a device tree, unless it describes other hardware (the module's list)."""
    if board.dtb is None:
        return True
    try:
        tree = parse_dtb(kernels.dtb(board.flavour, board.dtb).read_bytes(), "given")
    except DeviceTreeError:
        return False
    if any(set(device.compatible) & M_PROFILE_INTERRUPT_CONTROLLERS for device in tree.devices):
        return False
    for compatible in tree.cpus:
        model = ARM_CPU_FOR_COMPATIBLE.get(compatible.removeprefix("arm,"))
        if model is not None and ARCHITECTURE_OF_MODEL[model] != cpu_class:
            return False
    return True


def candidates(kernels: corpus.Corpus, flavour: str, machines: tuple[MachineDesc, ...]) -> list[Board]:
    """Every board of the kernel outside the excluded sets, in order: its device trees by name,
    then the ATAG boards of its machine table by number."""
    taken = excluded_boards()
    trees = [Board(flavour, dtb=board) for board in kernels.boards(flavour)]
    atags = [
        Board(flavour, board_id=machine.nr, machine=machine.name)
        for machine in sorted(machines, key=lambda machine: machine.nr or 0)
        if machine.nr is not None
    ]
    return [board for board in trees + atags if board.key not in taken]


def draw(kernels: corpus.Corpus) -> tuple[list[Board], list[Board]]:
    """The wide set's boards, and the boards passed over on the way as ones the kernel cannot run.

    For each flavour, the first runnable ones of its candidates shuffled by random.Random(SEED):
    a uniform draw from the runnable boards that reads only the device trees it needs. Each
    flavour's boards are listed by name.
    """
    rng = random.Random(SEED)
    drawn: list[Board] = []
    passed_over: list[Board] = []
    for flavour, count in DRAWS:
        firmware = ingest(kernels.kernel(flavour))
        pool = candidates(kernels, flavour, firmware.machines)
        rng.shuffle(pool)
        chosen: list[Board] = []
        for board in pool:
            if len(chosen) == count:
                break
            (chosen if runnable(kernels, board, firmware.cpu_class) else passed_over).append(board)
        drawn += sorted(chosen, key=lambda board: board.name)
    return drawn, passed_over


def set_text(boards: list[Board]) -> str:
    """wide.toml: a header naming this script and its seed, then one [[firmware]] per board."""
    counts = " and ".join(f"{count} {flavour}" for flavour, count in DRAWS)
    excluded = " nor ".join(f"{name}.toml" for name in EXCLUDED_SETS)
    lines = [
        f"# The wide set (issue 14): {counts} boards drawn at random from those in",
        f"# neither {excluded}, by benchmarks/draw_wide_set.py with seed {SEED} (it says which",
        "# boards it leaves out and why): do not edit, run the script. Device trees by board name, ATAG",
        "# boards by their machine number (the kernel's machine table). Run it in slices (about 3",
        "# minutes a search):",
        "#   explorer bench wide --strategy best-first --budget 3m --only NAME --only NAME ...",
    ]
    for board in boards:
        lines += ["", "[[firmware]]"] if board.dtb is not None else ["", f"# {board.machine}", "[[firmware]]"]
        lines.append(f"name = {json.dumps(board.name)}")
        lines.append(f"flavour = {json.dumps(board.flavour)}")
        if board.dtb is not None:
            lines.append(f"dtb = {json.dumps(board.dtb)}")
        else:
            lines.append(f"board_id = {board.board_id}")
        lines.append(f"initrd = {json.dumps(MARKER_INITRD)}")
        lines.append(f"cmdline = {json.dumps(DEFAULT_CMDLINE)}")
    return "\n".join(lines) + "\n"


def main(path: Path = WIDE_SET) -> None:
    drawn, passed_over = draw(corpus.load())
    path.write_text(set_text(drawn))
    print(f"wrote {path}: {len(drawn)} boards")
    if passed_over:
        print(f"passed over, the kernel cannot run them: {', '.join(board.name for board in passed_over)}")


if __name__ == "__main__":
    main()
