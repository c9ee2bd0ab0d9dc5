"""Runner speed: wall time to user space of our runner against the same QEMU build's own vexpress-a9.

The runner is the whole thing the search uses: the `rehosting` machine with the vexpress-a9
memory map (explorer.runner.boards), deterministic time (icount), the rehost plugin with the
kernel's standard hooks, call stack, coverage and hot loops, driven by explorer.runner.launch.
It is done at its first user-space instruction. The reference is the same QEMU build running
`-M vexpress-a9 -m 512 -audio none` with neither plugin nor icount, done when the marker
initramfs's /init prints its marker. Same kernel (armmp), DTB and initramfs.

Runner and reference run alternately, in pairs, so a noisy shared machine slows both alike; the
last line printed is the median of the per-pair ratios (runner / reference; issue 3's target is
at most 1.3). Also shown, fewer times each: Debian's packaged qemu-system-arm for reference,
what each part costs on its own (icount, the plugin with hooks only, the full plugin, our
machine, each observation feature of the plugin), and the runner's start-up (process start to
its first budget check, a few guest instructions in: a run with a budget of 1 instruction).

    .venv/bin/python benchmarks/runner_vs_qemu.py [--pairs 5] [--parts 3] [--qemu DIR]
"""

from __future__ import annotations

import argparse
import os
import selectors
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from explorer import corpus
from explorer.firmware.ingest import ingest
from explorer.runner.boards import vexpress_a9
from explorer.runner.config import write_config
from explorer.runner.kernel_hooks import STANDARD_OBSERVATION, watching_kernel
from explorer.runner.launch import (
    DETERMINISTIC_TIME,
    Plugin,
    RunnerLimits,
    command_line,
    config_plugin_arguments,
    run,
)
from explorer.runner.machine_config_pb2 import MachineConfig
from explorer.runner.rehost_pb2 import ExitReason

REPO = Path(__file__).resolve().parents[1]
DEBIAN_QEMU = Path("/usr/bin/qemu-system-arm")
DEADLINE_SECONDS = 120.0  # a hang guard: a boot to user space takes about 5 s


def qemu_build() -> Path:
    """$EXPLORER_QEMU, or the directory native/build.py prints (building it if needed)."""
    if os.environ.get("EXPLORER_QEMU"):
        return Path(os.environ["EXPLORER_QEMU"])
    built = subprocess.run(
        [sys.executable, str(REPO / "native" / "build.py")], capture_output=True, text=True, check=True
    )
    return Path(built.stdout.strip().splitlines()[-1])


def seconds_until_done(command: list[str], marker: bytes) -> float:
    """Wall time from process start until `marker` is on its stdout, or until it exits with status 0."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None
    output = bytearray()
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while marker not in output:
                if time.perf_counter() - started > DEADLINE_SECONDS:
                    raise RuntimeError(f"no {marker!r} within {DEADLINE_SECONDS} s: {' '.join(command)}")
                if not selector.select(timeout=1.0):
                    continue
                chunk = process.stdout.read1(1 << 16)
                if not chunk:
                    if process.wait() != 0:
                        raise RuntimeError(
                            f"exited with {process.returncode}: {process.stderr.read()[-500:]!r}"
                        )
                    break
                output += chunk
        return time.perf_counter() - started
    finally:
        process.kill()
        process.wait()


class Bench:
    """The commands and configs of every variant, for one kernel, DTB, initramfs and QEMU build."""

    def __init__(self, qemu_dir: Path, scratch: Path) -> None:
        the_corpus = corpus.load()
        self.kernel = the_corpus.kernel("armmp")
        self.dtb = the_corpus.dtb("armmp", "vexpress-v2p-ca9")
        self.initrd = the_corpus.initramfs("armhf")
        self.qemu_dir = qemu_dir
        self.plugin_path = qemu_dir / "lib" / "librehost.so"
        self.watched = watching_kernel(vexpress_a9(self.kernel, self.dtb, self.initrd), ingest(self.kernel))
        self.unwatched_path = scratch / "unwatched.json"
        write_config(vexpress_a9(self.kernel, self.dtb, self.initrd), self.unwatched_path)
        self.marker = corpus.USERSPACE_MARKER.encode()

    def stock(self, qemu: Path, *extra: str) -> list[str]:
        # QEMU 7.2's -audio wants a sound card model: its silent backend is -audiodev none.
        silence = ["-audiodev", "none,id=silence"] if qemu == DEBIAN_QEMU else ["-audio", "none"]
        return [
            str(qemu),
            "-M",
            "vexpress-a9",
            "-m",
            "512",
            *silence,
            "-display",
            "none",
            "-nodefaults",
            "-serial",
            "stdio",
            "-no-reboot",
            "-kernel",
            str(self.kernel),
            "-dtb",
            str(self.dtb),
            "-initrd",
            str(self.initrd),
            "-append",
            "console=ttyAMA0 rdinit=/init",
            *extra,
        ]

    def plugin_option(self, *observation: str) -> list[str]:
        arguments = [str(self.plugin_path), *config_plugin_arguments(self.watched), *observation]
        return ["-plugin", ",".join(arguments)]

    def our_qemu(self) -> Path:
        return self.qemu_dir / "bin" / "qemu-system-arm"

    def reference(self) -> float:
        return seconds_until_done(self.stock(self.our_qemu()), self.marker)

    def runner(
        self, config: MachineConfig | None = None, observation: tuple[str, ...] = STANDARD_OBSERVATION
    ) -> float:
        finished = run(
            config or self.watched,
            self.qemu_dir,
            plugin=Plugin(self.plugin_path, observation),
            limits=RunnerLimits(deadline_seconds=DEADLINE_SECONDS),
        )
        expected = ExitReason.EXIT_BUDGET if config is not None else ExitReason.EXIT_USER_SPACE
        if finished.result.exit.reason != expected:
            raise RuntimeError(f"runner ended with {finished.result.exit}: {finished.stderr[-500:]}")
        return finished.wall_seconds

    def parts(self) -> dict[str, Callable[[], float]]:
        our = self.our_qemu()
        return {
            "Debian qemu-system-arm 7.2, -M vexpress-a9": lambda: seconds_until_done(
                self.stock(DEBIAN_QEMU), self.marker
            ),
            "our QEMU -M vexpress-a9 + icount": lambda: seconds_until_done(
                self.stock(our, *DETERMINISTIC_TIME), self.marker
            ),
            "our QEMU -M vexpress-a9 + plugin, hooks only": lambda: seconds_until_done(
                self.stock(our, *self.plugin_option()), self.marker
            ),
            "our QEMU -M vexpress-a9 + plugin, full": lambda: seconds_until_done(
                self.stock(our, *self.plugin_option(*STANDARD_OBSERVATION)), self.marker
            ),
            "rehosting machine + icount, no plugin": lambda: seconds_until_done(
                command_line(our, MachineConfig(), self.unwatched_path, plugin=None, events_fd=None),
                self.marker,
            ),
            "runner, hooks only (no call stack, coverage, hot loops)": lambda: self.runner(observation=()),
            **{
                f"runner, hooks + {feature} only": lambda feature=feature: self.runner(observation=(feature,))
                for feature in STANDARD_OBSERVATION
            },
        }

    def start_up(self) -> float:
        config = MachineConfig()
        config.CopyFrom(self.watched)
        config.instruction_budget = 1
        return self.runner(config, observation=())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5, help="runner/reference pairs (default 5)")
    parser.add_argument("--parts", type=int, default=3, help="runs of each other variant (default 3)")
    parser.add_argument("--qemu", type=Path, help="QEMU build directory (default: native/build.py's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="runner-bench-") as scratch:
        bench = Bench(args.qemu or qemu_build(), Path(scratch))
        bench.runner()  # warm the page cache and the ingestion cache: not counted
        ours, theirs = [], []
        for pair in range(args.pairs):
            # Alternate which goes first, so neither always runs on a machine the other just warmed.
            if pair % 2:
                theirs.append(bench.reference())
                ours.append(bench.runner())
            else:
                ours.append(bench.runner())
                theirs.append(bench.reference())
            print(f"pair {pair + 1}: runner {ours[-1]:.2f} s, -M vexpress-a9 {theirs[-1]:.2f} s", flush=True)
        for name, measure in bench.parts().items():
            times = [measure() for _ in range(args.parts)]
            print(f"{name}: median {statistics.median(times):.2f} s of {args.parts}", flush=True)
        start_ups = [bench.start_up() for _ in range(args.parts)]
        print(f"runner start-up (start to first budget check): median {statistics.median(start_ups):.3f} s")
        print(f"runner: median {statistics.median(ours):.2f} s of {args.pairs}")
        print(f"-M vexpress-a9: median {statistics.median(theirs):.2f} s of {args.pairs}")
        ratios = [mine / reference for mine, reference in zip(ours, theirs, strict=True)]
        print(f"median ratio runner / -M vexpress-a9 (target <= 1.3): {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
