"""Ingestion speed: our ingestion of Debian's armmp zImage against vmlinux-to-elf, side by side.

Both tools are run alternately in one process, `--repeat` times each, so a noisy shared
machine slows both alike. The last line printed is the speed-up (median vmlinux-to-elf wall
time over median explorer wall time); the issue's target is at least 3x. Also reported: the
cached second ingestion (target under 0.2 s).

    .venv/bin/python benchmarks/ingest_speed.py [--repeat 5] [--flavour armmp]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from explorer import corpus
from explorer.firmware.ingest import ingest


def time_explorer(kernel: Path, use_cache: bool) -> float:
    start = time.perf_counter()
    ingest(kernel, use_cache=use_cache)
    return time.perf_counter() - start


def time_vmlinux_to_elf(kernel: Path, out: Path) -> float:
    tool = Path(sys.executable).with_name("vmlinux-to-elf")
    start = time.perf_counter()
    subprocess.run([str(tool), str(kernel), str(out)], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--flavour", default="armmp")
    args = parser.parse_args()
    kernel = corpus.load().kernel(args.flavour)
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            ours.append(time_explorer(kernel, use_cache=False))
            theirs.append(time_vmlinux_to_elf(kernel, Path(tmp) / "vmlinux.elf"))
            print(f"pair {i + 1}: explorer {ours[-1]:.3f} s, vmlinux-to-elf {theirs[-1]:.3f} s")
    cached = [time_explorer(kernel, use_cache=True) for _ in range(args.repeat)]
    print(f"explorer, uncached: median {statistics.median(ours):.3f} s")
    print(f"explorer, cached:   median {statistics.median(cached):.3f} s")
    print(f"vmlinux-to-elf:     median {statistics.median(theirs):.3f} s")
    print(f"speed-up over vmlinux-to-elf: {statistics.median(theirs) / statistics.median(ours):.1f}x")


if __name__ == "__main__":
    main()
