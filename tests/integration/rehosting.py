"""Shared by the tests that run our QEMU build: building it, machine configs, running it with the plugin.

A plain module, not a test file: the `qemu_build` fixture that uses `build_native` is in conftest.py.
"""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from explorer.corpus import Corpus
from explorer.firmware.model import Firmware

REPO = Path(__file__).resolve().parents[2]
BOOT_DEADLINE_SECONDS = 120  # a hang guard, not a performance claim: user space takes about 5 s


def build_native() -> Path:
    completed = subprocess.run(
        [sys.executable, str(REPO / "native" / "build.py")], capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return Path(completed.stdout.strip().splitlines()[-1])


def vexpress_a9_config(corpus: Corpus) -> dict:
    """The vexpress-a9 memory map (as in vexpress-v2p-ca9.dts), declared for the rehosting machine."""
    return {
        "cpu": "cortex-a9",
        "ram": [{"base": "0x60000000", "size": "0x20000000"}],
        "interrupt_controller": {"type": "a9mpcore_priv", "mmio": ["0x1e000000"], "props": {"num-irq": 96}},
        "devices": [
            {
                "type": "realview_sysctl",
                "mmio": ["0x10000000"],
                "props": {"sys_id": 0x1190F500, "proc_id": 0x0C000191},
            },
            {"type": "pl011", "mmio": ["0x10009000"], "irqs": [37]},
            {"type": "sp804", "mmio": ["0x10011000"], "irqs": [34]},
            {"type": "sp804", "mmio": ["0x10012000"], "irqs": [35]},
            {"type": "pl031", "mmio": ["0x10017000"], "irqs": [36]},
            {"type": "l2x0", "mmio": ["0x1e00a000"]},
        ],
        "boot": {
            "kernel": str(corpus.kernel("armmp")),
            "dtb": str(corpus.dtb("armmp", "vexpress-v2p-ca9")),
            "initrd": str(corpus.initramfs("armhf")),
            "cmdline": "console=ttyAMA0 rdinit=/init",
            "board_id": "0x8e0",
        },
    }


def run_until(command: list[str], marker: str) -> tuple[bool, str]:
    """Run QEMU until `marker` appears on its console or it exits; never longer than the deadline."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    assert process.stdout is not None
    output = bytearray()
    deadline = time.monotonic() + BOOT_DEADLINE_SECONDS
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while marker.encode() not in output and time.monotonic() < deadline:
                if selector.select(timeout=1.0):
                    chunk = process.stdout.read1(65536)
                    if not chunk:
                        break
                    output += chunk
    finally:
        process.kill()
        process.wait()
    text = output.decode(errors="replace")
    return marker in text, text


def rehosting_command(qemu_build: Path, config: Path) -> list[str]:
    return [
        str(qemu_build / "bin" / "qemu-system-arm"),
        "-M",
        f"rehosting,config={config}",
        "-nodefaults",
        "-display",
        "none",
        "-serial",
        "stdio",
    ]


DETERMINISM_OPTIONS = ["-icount", "shift=4,align=off,sleep=off", "-rtc", "base=2020-01-01T00:00:00,clock=vm"]
# Boot milestones in the order start_kernel and kernel_init reach them. prepare_namespace only runs
# when no initramfs provides rdinit, run_init_process when init is started.
MILESTONES = (
    "start_kernel",
    "setup_arch",
    "init_IRQ",
    "time_init",
    "calibrate_delay",
    "rest_init",
    "kernel_init",
    "prepare_namespace",
    "run_init_process",
)
HALTS = ("machine_power_off", "machine_halt", "machine_restart")
# Far beyond a full boot (about 3.6e9 instructions): these runs must end for another reason.
GENEROUS_BUDGET = 20_000_000_000


@dataclass(frozen=True)
class PluginRun:
    """The plugin's report lines of one run, split by kind."""

    lines: tuple[str, ...]

    @property
    def milestones(self) -> list[tuple[str, int]]:
        """(name, instruction count) of each milestone, in report order."""
        return [(f[2], int(f[6])) for f in self._fields("milestone")]

    @property
    def initcalls(self) -> list[tuple[int, int]]:
        """(function address, instruction count) of each do_one_initcall entry."""
        return [(int(f[2], 16), int(f[5])) for f in self._fields("initcall")]

    @property
    def end(self) -> str:
        """The "end ..." line without its prefix: reason, detail, instruction count."""
        (end,) = [line.removeprefix("rehost: end ") for line in self.lines if line.startswith("rehost: end ")]
        return end

    def _fields(self, kind: str) -> list[list[str]]:
        return [line.split() for line in self.lines if line.startswith(f"rehost: {kind} ")]


def plugin_arguments(firmware: Firmware) -> str:
    """The plugin's arguments for a kernel, every address from its recovered symbols."""
    symbols = firmware.symbols
    arguments = [
        f"hook={name}@{address:#x}"
        for name in MILESTONES
        if (address := symbols.address_of(name)) is not None
    ]
    arguments += [
        f"halt={name}@{address:#x}" for name in HALTS if (address := symbols.address_of(name)) is not None
    ]
    arguments.append(f"initcalls={symbols.address_of('do_one_initcall'):#x}")
    arguments.append(f"panic={symbols.address_of('panic'):#x}")
    arguments.append(f"user_below={firmware.page_offset:#x}")
    return ",".join(arguments)


def write_config(directory: Path, config: dict) -> Path:
    path = directory / "config.json"
    path.write_text(json.dumps(config))
    return path


def run_plugin(qemu_build: Path, command: list[str], arguments: str) -> PluginRun:
    """Run a QEMU command line deterministically with the plugin; its console goes nowhere."""
    command = [*command]
    command[command.index("stdio")] = "null"  # the plugin, not the console, says how far it got
    completed = subprocess.run(
        [
            *command,
            *DETERMINISM_OPTIONS,
            "-d",
            "plugin",
            "-plugin",
            f"{qemu_build / 'lib' / 'librehost.so'},{arguments}",
        ],
        capture_output=True,
        text=True,
        timeout=BOOT_DEADLINE_SECONDS,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return PluginRun(tuple(line for line in completed.stderr.splitlines() if line.startswith("rehost: ")))
