"""Runner speed: wall time to user space of our runner against the same QEMU build's own vexpress-a9.

The runner is the whole thing the search uses: the `rehosting` machine with the vexpress-a9
memory map (explorer.runner.boards), deterministic time (icount), the rehost plugin with the
kernel's standard hooks, call stack, coverage and hot loops, driven by explorer.runner.launch.
It is done at its first user-space instruction. The reference is the same QEMU build running
`-M vexpress-a9 -m 512 -audio none` with neither plugin nor icount, done when the marker
initramfs's /init prints its marker. Same kernel (armmp), DTB and initramfs.

Runner and reference run alternately, in pairs, so a noisy shared machine slows both alike; the
last line printed is the median of the per-pair ratios of wall time (runner / reference; issue
3's target is at most 1.3), after their spread. Each run's QEMU CPU time (user + system, from
the reaped child) is shown beside its wall time: on a machine shared with other sessions it
moves far less than wall time, so the CPU ratio tells whether a wall ratio was luck.
Also shown, fewer times each: Debian's packaged qemu-system-arm for reference, what each part
costs on its own (icount, and icount with other shifts: guest time per instruction decides how
many timer interrupts a boot takes; the plugin with hooks only, the full plugin, our machine,
each observation feature of the plugin), and the runner's start-up (process start to its first
budget check, a few guest instructions in: a run with a budget of 1 instruction).

    .venv/bin/python benchmarks/runner_vs_qemu.py [--pairs 7] [--parts 3] [--qemu DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import selectors
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from explorer import corpus
from explorer.firmware.ingest import ingest
from explorer.runner import build as runner_build
from explorer.runner.boards import vexpress_a9
from explorer.runner.command import DETERMINISTIC_TIME, Plugin, command_line, config_plugin_arguments
from explorer.runner.config import write_config
from explorer.runner.containment import RunnerLimits
from explorer.runner.kernel_hooks import STANDARD_OBSERVATION, watching_kernel
from explorer.runner.launch import run
from explorer.runner.machine_config_pb2 import MachineConfig
from explorer.runner.rehost_pb2 import ExitReason

DEBIAN_QEMU = Path("/usr/bin/qemu-system-arm")
DEADLINE_SECONDS = 120.0  # a hang guard: a boot to user space takes about 5 s


@dataclass(frozen=True)
class Timing:
    """One run: its wall time and its QEMU's CPU time, in seconds."""

    wall: float
    cpu: float  # user + system time of the QEMU process

    def __str__(self) -> str:
        return f"{self.wall:.2f} s (CPU {self.cpu:.2f} s)"


def timed(measure: Callable[[], float]) -> Timing:
    """`measure`'s wall seconds, with the CPU time of the children it reaped meanwhile (its QEMU)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = measure()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return Timing(wall, cpu)


def median_of(timings: list[Timing]) -> Timing:
    return Timing(
        statistics.median(timing.wall for timing in timings),
        statistics.median(timing.cpu for timing in timings),
    )


def with_icount_shift(shift: int) -> tuple[str, ...]:
    """The runner's deterministic time with another shift: each instruction is 2**shift ns of guest time."""
    return tuple(re.sub(r"shift=\d+", f"shift={shift}", option) for option in DETERMINISTIC_TIME)


def qemu_build() -> Path:
    """$EXPLORER_QEMU, or this explorer's runner build (building it if needed: explorer runner build)."""
    if os.environ.get("EXPLORER_QEMU"):
        return Path(os.environ["EXPLORER_QEMU"])
    return runner_build.build(None, os.cpu_count() or 1)


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
        self.plugin_path = qemu_dir / runner_build.PLUGIN
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
        return self.qemu_dir / runner_build.binary("arm")

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
            **{
                f"our QEMU -M vexpress-a9 + icount shift={shift}": lambda shift=shift: seconds_until_done(
                    self.stock(our, *with_icount_shift(shift)), self.marker
                )
                for shift in (1, 6)
            },
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
    parser.add_argument("--pairs", type=int, default=7, help="runner/reference pairs (default 7)")
    parser.add_argument("--parts", type=int, default=3, help="runs of each other variant (default 3)")
    parser.add_argument("--qemu", type=Path, help="QEMU build directory (default: native/build.py's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="runner-bench-") as scratch:
        bench = Bench(args.qemu or qemu_build(), Path(scratch))
        bench.runner()  # warm the page cache and the ingestion cache: not counted
        ours: list[Timing] = []
        theirs: list[Timing] = []
        for pair in range(args.pairs):
            # Alternate which goes first, so neither always runs on a machine the other just warmed.
            if pair % 2:
                theirs.append(timed(bench.reference))
                ours.append(timed(bench.runner))
            else:
                ours.append(timed(bench.runner))
                theirs.append(timed(bench.reference))
            print(
                f"pair {pair + 1}: runner {ours[-1]}, -M vexpress-a9 {theirs[-1]}, "
                f"ratio {ours[-1].wall / theirs[-1].wall:.2f}",
                flush=True,
            )
        for name, measure in bench.parts().items():
            times = [timed(measure) for _ in range(args.parts)]
            print(f"{name}: median {median_of(times)} of {args.parts}", flush=True)
        start_ups = [bench.start_up() for _ in range(args.parts)]
        print(f"runner start-up (start to first budget check): median {statistics.median(start_ups):.3f} s")
        print(f"runner: median {median_of(ours)} of {args.pairs}")
        print(f"-M vexpress-a9: median {median_of(theirs)} of {args.pairs}")
        cpu_ratios = [mine.cpu / reference.cpu for mine, reference in zip(ours, theirs, strict=True)]
        print(f"median CPU-time ratio: {statistics.median(cpu_ratios):.2f}")
        ratios = [mine.wall / reference.wall for mine, reference in zip(ours, theirs, strict=True)]
        print(f"wall-time ratios: {min(ratios):.2f} to {max(ratios):.2f}")
        print(f"median ratio runner / -M vexpress-a9 (target <= 1.3): {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
