"""`explorer run` as a person uses it: a shell on the found machine's console, gdb with the kernel's names.

The machine is the one `explorer search` finds for Debian's armmp kernel with a board's device
tree and the marker initramfs, exported with `explorer export`. Its console UART (the node
stdout-path names, else the tree's serial0, with the console= argument that makes the kernel
write there) is placed into the exported config here, until the search places the console
itself (issue 15). A pseudo-terminal stands in for the person's terminal: the test reads what
they would see and types what they would type, the escape key included.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import fdt
import pytest

from explorer.corpus import USERSPACE_MARKER, Corpus
from explorer.firmware.ingest import ingest
from explorer.firmware.model import Firmware
from explorer.runner.build import PLUGIN
from explorer.runner.command import GUEST_NS_PER_INSTRUCTION, Plugin
from explorer.runner.config import read_config, write_config
from explorer.runner.interactive import PAST_USER_SPACE
from explorer.runner.kernel_hooks import STANDARD_OBSERVATION
from explorer.runner.launch import run
from explorer.runner.machine_config_pb2 import MachineConfig
from explorer.search.device_models import gic_interrupt_ids, placement
from tests.integration.groundtruth import free_port

pytestmark = pytest.mark.qemu

# Hang guards, not performance claims: a search on a loaded 2-core machine, a boot to the shell.
SEARCH_SECONDS = 2400
CONSOLE_SECONDS = 600
ESCAPE_QUIT = b"\x01x"  # Ctrl-A x
# Instructions for a run of the found vexpress machine to the marker, and a little more.
SHORT_BUDGET = 5_000_000_000
# The name the kernel gives the first port of each UART model (the tree's serial0 alias).
FIRST_TTY = {"pl011": "ttyAMA0", "serial-mm": "ttyS0"}


def explorer_command(*arguments: str | Path) -> list[str]:
    return [sys.executable, "-m", "explorer", *map(str, arguments)]


class Terminal:
    """A command on a pseudo-terminal of its own, read and typed into as a person would."""

    def __init__(self, command: list[str]) -> None:
        self._master, slave = pty.openpty()
        self.process = subprocess.Popen(
            command, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
        )
        os.close(slave)
        self.seen = b""

    def expect(self, pattern: bytes, seconds: float = CONSOLE_SECONDS) -> bytes:
        """Read until `pattern` (a regular expression) appears after what earlier calls consumed;
        what this call consumed, up to the end of the match."""
        searched = 0
        while (match := re.compile(pattern).search(self.seen, searched)) is None:
            ready, _, _ = select.select([self._master], [], [], seconds)
            chunk = self._read() if ready else b""
            if not chunk:
                tail = self.seen[-3000:].decode(errors="replace")
                pytest.fail(
                    f"{pattern!r} never came (the stream ended or the hang guard passed); it showed:\n{tail}"
                )
            self.seen += chunk
        consumed, self.seen = self.seen[: match.end()], self.seen[match.end() :]
        return consumed

    def type(self, keys: bytes) -> None:
        os.write(self._master, keys)

    def finish(self) -> tuple[int, str]:
        """Wait for the command to exit; its status and the rest of what it printed."""
        status = self.process.wait(timeout=CONSOLE_SECONDS)
        while (chunk := self._read()) != b"":
            self.seen += chunk
        os.close(self._master)
        return status, self.seen.decode(errors="replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def _read(self) -> bytes:
        try:
            return os.read(self._master, 1 << 16)
        except OSError:  # EIO: every process holding the terminal has exited
            return b""


# Two boards for armmp: one QEMU has a model of (vexpress-a9; its console a PL011 without a
# stdout-path), one it has none of (cubieboard2; its console a DesignWare UART, a 16550 with
# registers 4 bytes apart, named by stdout-path).
BOARDS = ("vexpress-v2p-ca9", "sun7i-a20-cubieboard2")


@pytest.fixture(scope="module")
def search_of(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """The work directory of a search in which armmp boots to user space on BOARD's device tree
    with the marker initramfs (run on first use, then kept for the module)."""
    works: dict[str, Path] = {}

    def search(board: str) -> Path:
        if board not in works:
            work = tmp_path_factory.mktemp("run") / board
            searched = subprocess.run(
                explorer_command(
                    "search", corpus.kernel("armmp"), "--dtb", corpus.dtb("armmp", board),
                    "--initrd", corpus.initramfs("armhf"), "--budget", "30m", "--work", work,
                ),
                capture_output=True, text=True, timeout=SEARCH_SECONDS, check=False,
            )  # fmt: skip
            # The search stops once a run completed the boot: past user space (the marker, then the shell).
            assert searched.returncode == 0 and "completed the boot" in searched.stderr, searched.stderr
            works[board] = work
        return works[board]

    return search


def console_uart_placed(config: MachineConfig, firmware: Firmware, dtb: Path) -> MachineConfig:
    """`config` with the console UART's model first among its devices (the machine gives QEMU's first
    serial port to the first device with one) and the kernel told to write its console there.

    The UART is the node /chosen's stdout-path names, else the tree's serial0 alias; its model is
    explorer.search.device_models' placement of that node, its interrupt the node's own.
    """
    tree = fdt.parse_dtb(dtb.read_bytes())
    stdout_path = tree.get_property("stdout-path", "/chosen")
    name = stdout_path.value.split(":", 1)[0] if stdout_path is not None else "serial0"
    path = name if name.startswith("/") else tree.get_property(name, "/aliases").value
    assert firmware.device_tree is not None
    node = next(node for node in firmware.device_tree.devices if node.path == path)
    model = placement(node, firmware.device_tree, config.cpu)
    assert model is not None, f"no model for the console UART {path}"
    interrupts = gic_interrupt_ids(node, node.interrupt_parent or "")[: model.irq_outputs]
    placed = MachineConfig()
    placed.CopyFrom(config)
    del placed.devices[:]
    placed.devices.extend([model.device(interrupts), *config.devices])
    if stdout_path is None:
        placed.boot.cmdline = f"{config.boot.cmdline} console={FIRST_TTY[model.type]}".strip()
    return placed


def exported_with_console(work: Path, corpus: Corpus, board: str) -> Path:
    """The best state of the search in `work`, exported by `explorer export`, with its console UART placed."""
    exported = work.parent / f"{board}-best.json"
    shown = subprocess.run(explorer_command("show", work, "--json"), capture_output=True, check=True)
    best = json.loads(shown.stdout)["best_state"]
    subprocess.run(explorer_command("export", work, best, "-o", exported), check=True, capture_output=True)
    dtb = corpus.dtb("armmp", board)
    config = read_config(exported)
    write_config(console_uart_placed(config, ingest(corpus.kernel("armmp"), dtb=dtb), dtb), exported)
    return exported


def boot_to_the_shell_compute_and_quit(config: Path) -> bytes:
    """`explorer run CONFIG` on a terminal: the marker, the shell computes 6*7, Ctrl-A x quits, exit 0.

    Returns what the console showed up to the marker.
    """
    terminal = Terminal(explorer_command("run", config))
    try:
        terminal.expect(rb"Ctrl-A x quits")
        boot = terminal.expect(re.escape(USERSPACE_MARKER.encode()))
        terminal.expect(rb"/ # ")
        terminal.type(b"echo $((6*7))\r")
        # The shell echoes the line as typed; its output is the next line: 42, computed by the guest.
        terminal.expect(rb"echo \$\(\(6\*7\)\)\r*\n")
        terminal.expect(rb"^42\r*\n")
        terminal.type(ESCAPE_QUIT)
        status, rest = terminal.finish()
    finally:
        terminal.kill()
    assert status == 0, rest
    assert "the machine stopped (QEMU exit status 0)" in rest
    return boot


@pytest.mark.parametrize("board", BOARDS)
def test_a_person_gets_a_shell_on_the_console_of_the_exported_machine_and_quits_with_the_escape_key(
    board: str, search_of: Callable[[str], Path], corpus: Corpus
) -> None:
    boot = boot_to_the_shell_compute_and_quit(exported_with_console(search_of(board), corpus, board))
    # The console shows the kernel's log from its start (replayed when the console registers).
    assert b"Booting Linux on physical CPU" in boot and b"Memory: " in boot


def test_the_states_nops_are_written_and_the_run_goes_on_past_user_space(
    search_of: Callable[[str], Path], corpus: Corpus, tmp_path: Path
) -> None:
    # A NOP on the function that prints the kernel's "Memory: ..." line: its line is gone, and
    # the plugin that wrote it lets the run go on to the shell.
    config = read_config(exported_with_console(search_of(BOARDS[0]), corpus, BOARDS[0]))
    address = ingest(corpus.kernel("armmp")).symbols.address_of("mem_init_print_info")
    assert address is not None and config.user_space_below
    config.nops.add(address=address, return_value=0, name="mem_init_print_info")
    write_config(config, tmp_path / "nopped.json")
    boot = boot_to_the_shell_compute_and_quit(tmp_path / "nopped.json")
    assert b"Booting Linux on physical CPU" in boot and b"Memory: " not in boot


def test_the_console_up_to_the_marker_is_the_search_runs_byte_for_byte(
    search_of: Callable[[str], Path], corpus: Corpus, qemu_build: Path
) -> None:
    exported = exported_with_console(search_of(BOARDS[0]), corpus, BOARDS[0])
    # The runner as the search runs it (the standard observation, the budget, the events), going
    # on past user space so that the marker gets printed.
    plugin = Plugin(qemu_build / PLUGIN, (*STANDARD_OBSERVATION, PAST_USER_SPACE))
    config = read_config(exported)
    # Past the marker the shell waits for input; the run then ends once the guest clock (which
    # idling advances at once) reaches its idle deadline: a short one keeps that short. The
    # marker comes at about 3.5 billion instructions and 25 s of guest time.
    config.instruction_budget = SHORT_BUDGET
    config.idle_deadline_ns = SHORT_BUDGET * GUEST_NS_PER_INSTRUCTION
    searched = run(config, qemu_build, plugin=plugin).result.console
    marker = USERSPACE_MARKER.encode()
    assert marker in searched
    terminal = Terminal(explorer_command("run", exported))
    try:
        terminal.expect(rb"Ctrl-A x quits\r*\n")
        shown = terminal.expect(re.escape(marker))
        terminal.type(ESCAPE_QUIT)
        terminal.finish()
    finally:
        terminal.kill()
    # The terminal turns each of the guest's line ends (CR LF) into CR CR LF (its output post-processing).
    assert shown.replace(b"\r\r\n", b"\r\n") == searched[: searched.index(marker) + len(marker)]


def test_gdb_stops_the_best_state_of_a_search_and_bt_names_the_kernel_functions(
    search_of: Callable[[str], Path], corpus: Corpus, tmp_path: Path
) -> None:
    elf = tmp_path / "armmp.elf"
    subprocess.run(explorer_command("inspect", corpus.kernel("armmp"), "--elf-out", elf), check=True)
    port = free_port()
    terminal = Terminal(explorer_command("run", search_of(BOARDS[0]), "--gdb", port))
    try:
        terminal.expect(rb"gdb: target remote localhost:\d+")
        # Connecting stops the machine wherever it is; a breakpoint in the idle loop, which every
        # boot enters, stops it where the kernel is sure to be running at its link address.
        gdb = subprocess.run(
            ["gdb-multiarch", "-nx", "-batch", "-ex", f"file {elf}", "-ex", f"target remote localhost:{port}",
             "-ex", "break do_idle", "-ex", "continue", "-ex", "bt", "-ex", "delete", "-ex", "detach"],
            capture_output=True, text=True, timeout=CONSOLE_SECONDS, check=False,
        )  # fmt: skip
        terminal.type(ESCAPE_QUIT)
        status, rest = terminal.finish()
    finally:
        terminal.kill()
    frames = re.findall(r"^#(\d+)\s+(?:0x[0-9a-f]+ in )?(\w+) \(", gdb.stdout, re.MULTILINE)
    assert frames[:1] == [("0", "do_idle")], gdb.stdout + gdb.stderr
    # The idle loop is entered from cpu_startup_entry, which the boot CPU runs from rest_init.
    assert [name for _, name in frames[1:3]] == ["cpu_startup_entry", "rest_init"], gdb.stdout
    assert status == 0, rest
