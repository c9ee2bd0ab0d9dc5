"""Small real firmware for the search's end-to-end tests: bare-metal ARM programs that boot like a kernel.

Each program (its C files beside this module: PROGRAM_SOURCES) is linked with kernel.c, a
pretend Linux that calls the functions the rehost plugin hooks by name (start_kernel ...
kernel_init, do_one_initcall, run_init_process, panic, machine_power_off, printk_sprint) in boot
order, and with head.S and kernel.ld, which place it at 0x80008000 in RAM at 0x80000000 (so
ingestion proves PAGE_OFFSET). A program's initcalls are where it stops a naive boot, each in
the way one search operator must get past:

- spin.elf: polls a status register until it reads bit 5 (ready) set and bit 0 (busy) clear
  32 times in a row: bitwise value search (random reads never do it);
- probe_panic.elf: a probe that panics on a wrong chip ID: NOP escalation's first step (NOP
  foo_probe, or its initcall);
- values.elf: spin.elf's controller, a handshake only a changing register completes, then
  probe_panic.elf's foo: bitwise search, seeded random reads get through the handshake by
  luck, value collapse pins what they read, and NOP escalation gets past foo;
- escalate.elf: a probe whose panic moves up a frame when the innermost frame is NOP'd: NOP
  escalation proper (NOP the next frame up while the stacks are similar);
- devices.elf (+ devices.dtb): a PL011 in loopback and an SP804 that must count: device
  discovery from the device tree;
- idle.elf: waits for ever for an interrupt nothing raises: the machine's idle deadline must end
  its run (no operator is meant to get it past);
- deadlock.elf: spins with interrupts masked on a lock its own CPU holds, waiting for an event
  (WFE) nothing can send, after a countdown that waits for events too: the plugin must end the
  first spin and not the second (no operator is meant to get it past).

Each gets to run_init_process and then machine_power_off once it is past. ARM (A32) code only:
the plugin's NOPs and call stack do not handle Thumb-2. Built with Debian's gcc-arm-none-eabi
and dtc, cached by the hash of the sources, the flags and the tools' versions under
<cache>/test-firmware/<hash>/, so only the first test session pays (about a second). This module
never runs a guest.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from explorer.paths import cache_root

SOURCES = Path(__file__).resolve().parent
# Each program's own sources, in initcall order (values.elf: see values.c).
PROGRAM_SOURCES = {
    "spin": ("spin.c",),
    "probe_panic": ("probe_panic.c",),
    "values": ("spin.c", "values.c", "probe_panic.c"),
    "devices": ("devices.c",),
    "escalate": ("escalate.c",),
    "idle": ("idle.c",),
    "deadlock": ("deadlock.c",),
}
PROGRAMS = tuple(PROGRAM_SOURCES)
COMMON_SOURCES = ("head.S", "kernel.c")
DEVICE_TREES = ("devices",)

# Where the linker script puts things (kernel.ld): tests build machine configs from these.
RAM_BASE = 0x8000_0000
RAM_SIZE = 0x0800_0000
LINK_ADDRESS = 0x8000_8000

COMPILER = "arm-none-eabi-gcc"
DEVICE_TREE_COMPILER = "dtc"
# A32 only; every call a real bl that returns to its caller (no inlining, no tail calls, no folding
# of identical functions, no specialised copies with suffixed names); functions far enough apart
# that a three-word NOP patch never reaches the next one; initcalls in source order; and no
# library calls.
CFLAGS = (
    "-mcpu=cortex-a9",
    "-marm",
    "-O2",
    "-fno-inline",
    "-fno-optimize-sibling-calls",
    "-falign-functions=16",
    "-ffreestanding",
    "-fno-builtin",
    "-fno-tree-loop-distribute-patterns",
    "-fno-ipa-cp",
    "-fno-ipa-sra",
    "-fno-ipa-icf",
    "-fno-toplevel-reorder",
    "-nostdlib",
    "-Wall",
    "-Wextra",
    "-Werror",
)


@dataclass(frozen=True)
class FirmwareBuild:
    """The built programs of one source hash."""

    directory: Path

    def elf(self, program: str) -> Path:
        if program not in PROGRAMS:
            raise KeyError(f"no test program {program!r}; there are {', '.join(PROGRAMS)}")
        return self.directory / f"{program}.elf"

    def dtb(self, name: str) -> Path:
        if name not in DEVICE_TREES:
            raise KeyError(f"no test device tree {name!r}; there are {', '.join(DEVICE_TREES)}")
        return self.directory / f"{name}.dtb"


def build() -> FirmwareBuild:
    """The programs and device trees, built now unless the cache has them for these sources.

    A build happens in a scratch directory renamed into place, so a directory at the final path
    is always complete.
    """
    final = cache_root() / "test-firmware" / _source_hash()
    if not final.is_dir():
        final.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=final.parent, prefix=".tmp-"))
        try:
            _build_into(scratch)
            # A concurrent session may have stored the same build first: then keep its copy.
            with contextlib.suppress(OSError):
                os.rename(scratch, final)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return FirmwareBuild(final)


def _build_into(directory: Path) -> None:
    common = [SOURCES / name for name in COMMON_SOURCES]
    for program, sources in PROGRAM_SOURCES.items():
        _run(
            COMPILER,
            *CFLAGS,
            "-T",
            str(SOURCES / "kernel.ld"),
            "-o",
            str(directory / f"{program}.elf"),
            *map(str, common),
            *(str(SOURCES / source) for source in sources),
        )
    for name in DEVICE_TREES:
        _run(
            DEVICE_TREE_COMPILER, "-I", "dts", "-O", "dtb", "-o", str(directory / f"{name}.dtb"),
            str(SOURCES / f"{name}.dts"),
        )  # fmt: skip


def _source_hash() -> str:
    """16 hex digits over every source file, this recipe (flags, program sources) and the tools' versions."""
    digest = hashlib.sha256()
    for path in sorted(SOURCES.iterdir()):
        if path.suffix in (".c", ".h", ".S", ".ld", ".dts", ".py"):
            digest.update(f"{path.name}\0{len(path.read_bytes())}\0".encode())
            digest.update(path.read_bytes())
    for tool in (COMPILER, DEVICE_TREE_COMPILER):
        digest.update(_run(tool, "--version").splitlines()[0].encode())
    return digest.hexdigest()[:16]


def _run(*command: str) -> str:
    """Run a build tool; fail with its diagnostics (or how to install it) when it fails."""
    try:
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise RuntimeError(
            f"{command[0]} is missing: install Debian's gcc-arm-none-eabi and device-tree-compiler"
        ) from None
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stderr}")
    return completed.stdout
