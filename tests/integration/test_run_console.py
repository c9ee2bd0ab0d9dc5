"""`explorer run` as a person uses it: the found machine's console on a terminal, gdb with the kernel's names.

The machine is the one `explorer search` finds for Debian's armmp kernel with a board's device
tree and the marker initramfs; the search places the console UART itself (explorer.search.console).
A pseudo-terminal stands in for the person's terminal: the test reads what they would see and
types what they would type, the escape key included. The marker initramfs's /init starts a shell
on the console after its line. With `--net user`, the person configures the guest's interface from
that shell with busybox's applets and talks to it from the host through a forwarded port, and
to the host from it through slirp's 10.0.2.2.
"""

from __future__ import annotations

import gzip
import http.server
import json
import os
import pty
import re
import select
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from explorer.corpus import USERSPACE_MARKER, Corpus
from explorer.corpus.initramfs import cpio_newc, directory, regular
from explorer.firmware.ingest import ingest
from explorer.firmware.model import DtDevice
from explorer.runner.build import PLUGIN
from explorer.runner.command import Plugin, qemu_binary
from explorer.runner.config import read_config, write_config
from explorer.runner.interactive import Network, for_people, interactive_command
from explorer.runner.kernel_hooks import CONSOLE_INPUT, STANDARD_OBSERVATION
from explorer.runner.launch import run
from explorer.runner.rehost_pb2 import ExitReason
from explorer.search.device_models import NIC_TYPES, nic_placement
from tests.integration.groundtruth import free_port

pytestmark = pytest.mark.qemu

# Hang guards, not performance claims: a search on a loaded 2-core machine, a boot to the shell.
SEARCH_SECONDS = 2400
CONSOLE_SECONDS = 600
ESCAPE_QUIT = b"\x01x"  # Ctrl-A x


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


# Boards for armmp: vexpress-a9 (QEMU has a model of it; its console a PL011 without a
# stdout-path) and rk3288-tinker (no QEMU model of the board: the search places its GIC and its
# console, a DesignWare UART, a 16550 with registers 4 bytes apart, whose receive interrupt the
# GIC delivers; its search reaches the console milestone in 3 runs).
BOARDS = ("vexpress-v2p-ca9", "rk3288-tinker")


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
            assert searched.returncode == 0, searched.stderr
            works[board] = work
        return works[board]

    return search


def exported(work: Path, board: str) -> Path:
    """The best state of the search in `work`, exported by `explorer export`."""
    path = work.parent / f"{board}-best.json"
    shown = subprocess.run(explorer_command("show", work, "--json"), capture_output=True, check=True)
    best = json.loads(shown.stdout)["best_state"]
    subprocess.run(explorer_command("export", work, best, "-o", path), check=True, capture_output=True)
    return path


def boot_to_the_shell_compute_and_quit(source: Path, *options: str) -> bytes:
    """`explorer run SOURCE [OPTIONS]` on a terminal: the marker, the shell computes 6*7, Ctrl-A x
    quits, exit 0.

    Returns what the console showed up to the marker.
    """
    terminal = Terminal(explorer_command("run", source, *options))
    try:
        terminal.expect(rb"Ctrl-A x quits\r*\n")
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
def test_a_person_gets_a_shell_on_the_console_of_the_found_machine_and_quits_with_the_escape_key(
    board: str, search_of: Callable[[str], Path]
) -> None:
    boot = boot_to_the_shell_compute_and_quit(search_of(board))
    # The console shows the kernel's log from its start (replayed when the console registers).
    assert b"Booting Linux on physical CPU" in boot and b"Memory: " in boot


def test_the_escape_key_quits_a_running_machine(search_of: Callable[[str], Path]) -> None:
    terminal = Terminal(explorer_command("run", search_of(BOARDS[0])))
    try:
        terminal.expect(rb"Booting Linux on physical CPU")
        terminal.type(ESCAPE_QUIT)
        status, rest = terminal.finish()
    finally:
        terminal.kill()
    assert USERSPACE_MARKER not in rest and status == 0, rest
    assert "the machine stopped (QEMU exit status 0)" in rest


def test_the_states_nops_are_written_and_the_run_goes_on_past_user_space(
    search_of: Callable[[str], Path], tmp_path: Path, corpus: Corpus
) -> None:
    # A NOP on the function that prints the kernel's "Memory: ..." line: its line is gone, and
    # the plugin that wrote it lets the run go on to the marker and the shell.
    config = read_config(exported(search_of(BOARDS[0]), BOARDS[0]))
    address = ingest(corpus.kernel("armmp")).symbols.address_of("mem_init_print_info")
    assert address is not None and config.user_space_below
    config.nops.add(address=address, return_value=0, name="mem_init_print_info")
    write_config(config, tmp_path / "nopped.json")
    boot = boot_to_the_shell_compute_and_quit(tmp_path / "nopped.json")
    assert b"Booting Linux on physical CPU" in boot and b"Memory: " not in boot


# With --net, the machine has one more device (vexpress's LAN9118): armmp's driver for it is a
# module, which nothing loads before the marker, so the console up to it is still the search's.
@pytest.mark.parametrize("options", [(), ("--net", "user")], ids=["alone", "with-net"])
def test_the_console_up_to_the_marker_is_the_search_runs_byte_for_byte(
    options: tuple[str, ...], search_of: Callable[[str], Path], qemu_build: Path
) -> None:
    config = exported(search_of(BOARDS[0]), BOARDS[0])
    # The runner as the search runs it: the standard observation, the budget, the events.
    plugin = Plugin(qemu_build / PLUGIN, STANDARD_OBSERVATION)
    result = run(read_config(config), qemu_build, plugin=plugin).result
    # The search's run ends where the shell after the marker first reads the console.
    assert (result.exit.reason, result.exit.detail) == (ExitReason.EXIT_HALT, CONSOLE_INPUT)
    searched = result.console
    marker = USERSPACE_MARKER.encode()
    assert marker in searched
    shown = boot_to_the_shell_compute_and_quit(config, *options)
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


# The address the guest takes on slirp's network (its DHCP server's first), and the host as the
# guest sees it.
GUEST_ADDRESS = "10.0.2.15/24"
HOST_FROM_GUEST = "10.0.2.2"
GUEST_PORT = 8080
# armmp's driver of the LAN9118 and the module it depends on, under drivers/net/, loaded in this order.
NIC_DRIVER_MODULES = ("phy/libphy", "ethernet/smsc/smsc911x")
HOST_REPLY = b"explorer-test: the host answers"


@pytest.fixture
def host_server() -> Iterator[int]:
    """An HTTP server on the host's loopback that answers every GET with HOST_REPLY; its port."""

    class Reply(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(HOST_REPLY)))
            self.end_headers()
            self.wfile.write(HOST_REPLY)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Reply)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def with_nic_driver(config_path: Path, corpus: Corpus, tmp_path: Path) -> Path:
    """The config with its initrd extended by armmp's modules for the LAN9118 (smsc911x and the PHY
    library it needs) in /modules: the marker initramfs has no modules, and armmp builds these as
    modules. A second gzip'd cpio archive after the first is unpacked over it, as the kernel does
    for concatenated initramfs archives."""
    config = read_config(config_path)
    # The corpus keeps each kernel package's files as the package lays them out.
    modules = corpus.kernel("armmp").parents[1] / "lib" / "modules"
    drivers = [next(modules.glob(f"*/kernel/drivers/net/{where}.ko")) for where in NIC_DRIVER_MODULES]
    extra = cpio_newc(
        [
            directory("modules"),
            *(regular(f"modules/{path.name}", path.read_bytes(), 0o644) for path in drivers),
        ]
    )
    initrd = tmp_path / "initrd-with-nic-driver.cpio.gz"
    initrd.write_bytes(Path(config.boot.initrd).read_bytes() + gzip.compress(extra, mtime=0))
    config.boot.initrd = str(initrd)
    write_config(config, tmp_path / "with-nic-driver.json")
    return tmp_path / "with-nic-driver.json"


def test_with_a_user_network_the_host_reaches_the_guest_through_a_forward_and_the_guest_the_host(
    search_of: Callable[[str], Path], host_server: int, corpus: Corpus, tmp_path: Path
) -> None:
    config = with_nic_driver(exported(search_of(BOARDS[0]), BOARDS[0]), corpus, tmp_path)
    port = free_port()
    forward = f"127.0.0.1:{port}:{GUEST_PORT}"
    terminal = Terminal(explorer_command("run", config, "--net", "user", "--forward", forward))
    try:
        # vexpress's device tree names an SMSC LAN9118 on the motherboard, its interrupt SPI 15.
        terminal.expect(rb"net: lan9118 for \S+ethernet\S* \(irq 47\), user-mode network")
        terminal.expect(rf"net: 127\.0\.0\.1:{port} -> guest port {GUEST_PORT}".encode())
        terminal.expect(re.escape(USERSPACE_MARKER.encode()))
        terminal.expect(rb"/ # ")
        # Kernel messages stay off the console (dmesg has them), so that they split no line of the shell.
        insmods = " && ".join(f"insmod /modules/{Path(module).name}.ko" for module in NIC_DRIVER_MODULES)
        terminal.type(f"dmesg -n 1 && {insmods} && echo load''ed\r".encode())
        terminal.expect(rb"(?m)^loaded\r*\n")
        # The guest serves a page its shell computed, with busybox's httpd (which goes to the background).
        terminal.type(
            f"ip link set eth0 up && ip addr add {GUEST_ADDRESS} dev eth0 && mkdir -p /www"
            f" && echo guest-says-$((6*7)) > /www/index.html && httpd -p {GUEST_PORT} -h /www"
            " && echo serv''ing\r".encode()
        )
        terminal.expect(rb"(?m)^serving\r*\n")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=CONSOLE_SECONDS) as page:
            assert page.read() == b"guest-says-42\n"
        terminal.type(f"wget -q -O - http://{HOST_FROM_GUEST}:{host_server}/\r".encode())
        terminal.expect(re.escape(HOST_REPLY))
        terminal.type(ESCAPE_QUIT)
        status, rest = terminal.finish()
    finally:
        terminal.kill()
    assert status == 0, rest


def test_net_on_a_machine_whose_tree_names_no_modelled_ethernet_controller_is_one_line_and_exit_2(
    search_of: Callable[[str], Path], tmp_path: Path, corpus: Corpus
) -> None:
    # The found vexpress machine with the device tree of a board whose Ethernet (an rk3288 GMAC, a
    # DesignWare MAC) QEMU has no model of.
    config = read_config(exported(search_of(BOARDS[0]), BOARDS[0]))
    config.boot.dtb = str(corpus.dtb("armmp", "rk3288-tinker"))
    write_config(config, tmp_path / "no-nic.json")
    ran = subprocess.run(
        explorer_command("run", tmp_path / "no-nic.json", "--net", "user"),
        capture_output=True, text=True, timeout=CONSOLE_SECONDS, check=False,
    )  # fmt: skip
    assert ran.returncode == 2, ran.stderr
    assert ran.stderr.splitlines() == [
        "explorer: error: --net: the machine's device tree names no Ethernet controller QEMU models "
        "(allwinner-emac, allwinner-sun8i-emac, cadence_gem, imx.enet, imx.fec, lan9118), "
        "or the machine already maps its registers"
    ]


# Where each model goes in the vexpress machine for the test below: below its RAM, where it has no device.
FREE_MMIO = 0x50000000
# One compatible for each Ethernet controller model `explorer run --net` places.
NIC_COMPATIBLES = {
    "lan9118": "smsc,lan9118",
    "cadence_gem": "cdns,gem",
    "imx.fec": "fsl,imx25-fec",
    "imx.enet": "fsl,imx6q-fec",
    "allwinner-emac": "allwinner,sun4i-a10-emac",
    "allwinner-sun8i-emac": "allwinner,sun8i-h3-emac",
}


@pytest.mark.parametrize("qom_type", sorted(NIC_TYPES))
def test_every_nic_model_is_created_by_the_machine_and_joins_the_user_network(
    qom_type: str, search_of: Callable[[str], Path], qemu_build: Path, tmp_path: Path
) -> None:
    # The found vexpress machine with the model added, started paused: QEMU's monitor lists the
    # NIC on the network that -nic user made (a model missing from our build, or a property it
    # refuses, ends QEMU before the monitor answers).
    config = for_people(read_config(exported(search_of(BOARDS[0]), BOARDS[0])))
    node = DtDevice("/ethernet", (NIC_COMPATIBLES[qom_type],), ((FREE_MMIO, 0x10000),), None, (), "okay")
    model = nic_placement(node)
    assert model is not None and model.type == qom_type
    config.devices.append(model.device(()))
    write_config(config, tmp_path / "machine.json")
    command = interactive_command(
        qemu_binary(qemu_build, "arm"),
        config,
        tmp_path / "machine.json",
        qemu_build / PLUGIN,
        None,
        Network(),
    )
    monitor = b"\x01c" + b"info network\n" + b"quit\n"  # Ctrl-A c: from the console to the monitor
    shown = subprocess.run(
        [*command, "-S"], input=monitor, capture_output=True, timeout=CONSOLE_SECONDS, check=False
    )
    listing = shown.stdout.decode(errors="replace")
    # The NIC, and under it its peer: the user-mode network.
    nic = rf"(?m)^{re.escape(qom_type)}\.\d+: index=\d+,type=nic,.*\r?\n"
    nic += r" \\ #net\d+: index=\d+,type=user,net=10\.0\.2\.0"
    assert re.search(nic, listing), listing + shown.stderr.decode()
