"""Search speed: from nothing to as far as it gets, on real kernels, with the whole search.

For each board: `explorer search` on Debian's armmp kernel with that board's device tree and the
marker initramfs (no memory map given), for the budget, on a fresh work directory; then the
numbers from `explorer show --json`: furthest milestone, user space or not, wall time, runs,
generations, and the master's own share of the wall time (all but waiting for runners: issue
4 wants it under 5%); and the operators on the path to the best state. The last line is the
vexpress-a9 search's wall time to user space.

    .venv/bin/python benchmarks/search_boards.py [--boards vexpress-v2p-ca9,am335x-boneblack]
        [--budget 15m] [--workers 2] [--qemu DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from explorer import corpus
from explorer.runner.build import find_runner

DEFAULT_BOARDS = "vexpress-v2p-ca9,am335x-boneblack,sun7i-a20-cubieboard2,rk3288-tinker"


def search(board: str, budget: str, workers: int, qemu: str, work: Path) -> dict[str, object]:
    kernels = corpus.load()
    command = [
        sys.executable, "-m", "explorer", "search", str(kernels.kernel("armmp")),
        "--dtb", str(kernels.dtb("armmp", board)), "--initrd", str(kernels.initramfs("armhf")),
        "--budget", budget, "--workers", str(workers), "--work", str(work),
    ]  # fmt: skip
    environment = {**os.environ, "EXPLORER_QEMU": qemu}
    subprocess.run(command, env=environment, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shown = subprocess.run(
        [sys.executable, "-m", "explorer", "show", str(work), "--json"],
        env=environment, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return json.loads(shown)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--boards", default=DEFAULT_BOARDS)
    parser.add_argument("--budget", default="15m")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--qemu", type=Path, default=os.environ.get("EXPLORER_QEMU"))
    arguments = parser.parse_args()
    qemu = str(find_runner(arguments.qemu))
    vexpress_wall = None
    print("| board | furthest | user space | wall s | runs | generations | master share | path |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="explorer-search-bench-") as scratch:
        for board in arguments.boards.split(","):
            report = search(board, arguments.budget, arguments.workers, qemu, Path(scratch) / board)
            path = " -> ".join(step["operator"] for step in report["best"]["path"])
            print(
                f"| {board} | {report['furthest_milestone']} | {report['reached_userspace']} "
                f"| {report['wall_seconds']:.0f} | {report['runs']} | {report['generations']} "
                f"| {report['master_overhead']:.2%} | {path} |",
                flush=True,
            )
            if board == "vexpress-v2p-ca9" and report["reached_userspace"]:
                vexpress_wall = report["wall_seconds"]
    print(
        f"vexpress-v2p-ca9 to user space: {vexpress_wall} s" if vexpress_wall else "vexpress: no user space"
    )


if __name__ == "__main__":
    main()
