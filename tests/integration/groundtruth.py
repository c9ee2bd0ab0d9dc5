"""Ground truth from stock QEMU: what a real boot says about a kernel's own symbols and code.

One boot per (kernel, watched addresses): a busybox initramfs whose /init prints
/proc/kallsyms between markers and exits, so the kernel panics "Attempted to kill init" (which
runs `panic`), while gdb, attached to QEMU's gdb stub, stops once at each watched address the
first time the CPU gets there and dumps the words in memory there. The moment of first
execution is the right witness for __init code such as `start_kernel`, which is freed and
overwritten once the boot is done. (QEMU 7.2's `-d in_asm` would do for ARM, but prints no
instruction bytes for MIPS.) Each boot's captures are cached as
`<cache>/groundtruth/<sha256 of kernel>-<what>.txt`. Test support only: nothing in `explorer`
may import it, and it never judges what it captured.
"""

from __future__ import annotations

import hashlib
import os
import re
import select
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from explorer.corpus.initramfs import busybox_initramfs
from explorer.firmware.model import Symbol, SymbolTable
from explorer.paths import cache_root

BEGIN, END = "==explorer-kallsyms-begin==", "==explorer-kallsyms-end=="
PANIC_DONE = b"---[ end Kernel panic"
BOOT_TIMEOUT = 120.0  # seconds of wall time; a boot takes about 5 s plus printing 45k lines
MAX_CONSOLE_BYTES = 64 << 20
WATCH_SPAN = 0x40  # bytes dumped at each watched address
GDB_EXIT_TIMEOUT = 30.0

INIT_SCRIPT = f"""#!/bin/sh
/bin/busybox mount -t proc proc /proc
echo 0 > /proc/sys/kernel/kptr_restrict
echo {BEGIN}
/bin/busybox cat /proc/kallsyms
echo {END}
"""

# "0x80ea59b8:\t0x27bdffa0\t0xafbf005c\t..." as gdb's `x/16xw` prints it
GDB_WORDS_LINE = re.compile(r"^0x([0-9a-f]+):((?:[ \t]+0x[0-9a-f]{8})+)", re.MULTILINE)


@dataclass(frozen=True)
class Board:
    """A stock QEMU board that boots a kernel as-is, and how to talk to its console."""

    qemu: str
    machine_args: tuple[str, ...]
    append: str
    gdb_architecture: str


def vexpress_a9(dtb: Path) -> Board:
    return Board(
        "qemu-system-arm",
        ("-M", "vexpress-a9", "-m", "512", "-dtb", str(dtb)),
        "console=ttyAMA0 rdinit=/init",
        "arm",
    )


def virt_arm64() -> Board:
    """QEMU's `virt` with an ARMv8 core: the arm64 kernel boots on it with its own device tree
    (QEMU's), and `nokaslr` keeps /proc/kallsyms at the link addresses the image holds."""
    return Board(
        "qemu-system-aarch64",
        ("-M", "virt", "-cpu", "cortex-a57", "-m", "1024"),
        "nokaslr console=ttyAMA0 rdinit=/init",
        "aarch64",
    )


def malta() -> Board:
    return Board(
        "qemu-system-mipsel", ("-M", "malta", "-m", "256"), "nokaslr console=ttyS0 rdinit=/init", "mips"
    )


@dataclass(frozen=True)
class GroundTruth:
    """What the booted kernel printed as /proc/kallsyms, and the words at the watched addresses."""

    proc_kallsyms: tuple[Symbol, ...]
    executed: dict[int, int]  # virtual address -> word in memory when the CPU first reached the watch


def capture(kernel: Path, busybox: Path, board: Board, watch: list[int]) -> GroundTruth:
    """Boot `kernel` on `board` (or reuse the cached captures) watching `watch` for WATCH_SPAN bytes each."""
    digest = hashlib.sha256(kernel.read_bytes()).hexdigest()
    cache = cache_root() / "groundtruth"
    kallsyms_file = cache / f"{digest}-kallsyms.txt"
    words_file = cache / f"{digest}-words-{'-'.join(f'{a:x}' for a in sorted(watch))}.txt"
    if not (kallsyms_file.is_file() and words_file.is_file()):
        console, gdb_output = _boot(kernel, busybox, board, watch)
        cache.mkdir(parents=True, exist_ok=True)
        _write_atomically(kallsyms_file, _between_markers(console))
        _write_atomically(words_file, gdb_output)
    return GroundTruth(
        SymbolTable.parse_nm(kallsyms_file.read_text()),
        _dumped_words(words_file.read_text()),
    )


def _boot(kernel: Path, busybox: Path, board: Board, watch: list[int]) -> tuple[str, str]:
    """Run QEMU under gdb until the kernel has finished panicking (it then spins forever)."""
    with tempfile.TemporaryDirectory(prefix="explorer-groundtruth-") as tmp:
        initrd = Path(tmp) / "initramfs.cpio.gz"
        initrd.write_bytes(busybox_initramfs(busybox.read_bytes(), INIT_SCRIPT))
        port = free_port()
        qemu = [
            board.qemu, *board.machine_args, "-nographic", "-no-reboot",
            "-kernel", str(kernel), "-initrd", str(initrd), "-append", board.append,
            "-gdb", f"tcp:127.0.0.1:{port}", "-S",
        ]  # fmt: skip
        gdb_script = Path(tmp) / "watch.gdb"
        gdb_script.write_text(_gdb_script(board, port, watch))
        gdb_log = Path(tmp) / "gdb.log"
        with gdb_log.open("wb") as gdb_out:
            qemu_process = subprocess.Popen(
                qemu, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            gdb = subprocess.Popen(
                ["gdb-multiarch", "-nx", "-batch", "-x", str(gdb_script)],
                stdin=subprocess.DEVNULL, stdout=gdb_out, stderr=subprocess.STDOUT,
            )  # fmt: skip
            try:
                console = _read_until_panic(qemu_process, qemu)
            finally:
                qemu_process.kill()
                qemu_process.wait()
                try:
                    gdb.wait(GDB_EXIT_TIMEOUT)  # it ends when the stub goes away
                except subprocess.TimeoutExpired:
                    gdb.kill()
                    gdb.wait()
        return console, gdb_log.read_text()


def free_port() -> int:
    """A TCP port on localhost that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _gdb_script(board: Board, port: int, watch: list[int]) -> str:
    """Stop once at each watched address (QEMU keeps the breakpoint out of guest memory), dump, go on."""
    lines = ["set pagination off", "set confirm off", f"set architecture {board.gdb_architecture}"]
    lines.append(f"target remote 127.0.0.1:{port}")
    for number, address in enumerate(sorted(watch), start=1):
        lines += [
            f"tbreak *{address:#x}",
            f"commands {number}",
            f"x/{WATCH_SPAN // 4}xw {address:#x}",
            "continue",
            "end",
        ]
    lines.append("continue")
    return "".join(line + "\n" for line in lines)


def _read_until_panic(process: subprocess.Popen[bytes], command: list[str]) -> str:
    assert process.stdout is not None
    output = bytearray()
    deadline = time.monotonic() + BOOT_TIMEOUT
    while PANIC_DONE not in output[-4096:] and len(output) < MAX_CONSOLE_BYTES:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no kernel panic within {BOOT_TIMEOUT:.0f} s: {' '.join(command)}")
        ready, _, _ = select.select([process.stdout], [], [], remaining)
        chunk = os.read(process.stdout.fileno(), 1 << 16) if ready else b""
        if ready and not chunk:
            tail = output[-2000:].decode(errors="replace")
            raise RuntimeError(f"QEMU exited ({process.wait()}) before the panic: {tail}")
        output += chunk
    return output.decode(errors="replace")


def _between_markers(console: str) -> str:
    """The well-formed `nm` lines the guest printed between the markers (printk may interleave)."""
    text = console.replace("\r", "")
    body = text[text.index(BEGIN + "\n") + len(BEGIN) + 1 : text.index(END)]
    nm_line = re.compile(r"^(?:[0-9a-f]{8}|[0-9a-f]{16}) \S \S+$")  # 32- or 64-bit kernels
    return "".join(line + "\n" for line in body.split("\n") if nm_line.match(line))


def _dumped_words(gdb_output: str) -> dict[int, int]:
    words: dict[int, int] = {}
    for address, row in GDB_WORDS_LINE.findall(gdb_output):
        for i, word in enumerate(row.split()):
            words.setdefault(int(address, 16) + 4 * i, int(word, 16))
    return words


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_suffix(f".{os.getpid()}.partial")
    partial.write_text(text)
    partial.replace(path)
