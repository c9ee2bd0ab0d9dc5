"""Containment of one runner: what it may use, and that it never outlives the driver or its run.

The kernel enforces the resource limits (set between fork and exec: `child_limits`) and kills
the runner when the thread that started it ends (`die_with_parent`); the driver
(explorer.runner.launch) enforces the wall-clock deadline and ends the runner's whole process
group (`terminate_group`, `kill_group`). On the terminal (`explorer replay`, `boot --console`)
QEMU stays in our group and switches the terminal to raw mode, which `terminal_restored` undoes.
Nothing here builds a command line or reads what a run says.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import subprocess
import sys
import termios
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from explorer.runner.machine_config_pb2 import MachineConfig
from explorer.runner.result import ResultBounds

# TCG's code buffer and QEMU's own mappings on top of guest RAM (measured: about 1.3 GiB).
QEMU_ADDRESS_SPACE_OVERHEAD = 2 << 30
_PR_SET_PDEATHSIG = 1
# Resolved once, at import: looking a symbol up between fork and exec could deadlock.
_prctl = ctypes.CDLL(None, use_errno=True).prctl


@dataclass(frozen=True)
class RunnerLimits:
    """What one runner may use. The wall-clock deadline is enforced by the driver, the rest by the kernel."""

    deadline_seconds: float = 600.0
    # Default: guest RAM + QEMU_ADDRESS_SPACE_OVERHEAD.
    address_space_bytes: int | None = None
    # Default: the deadline plus a minute (a second guard should the driver die unnoticed).
    cpu_seconds: int | None = None
    open_files: int = 256
    file_size_bytes: int = 64 << 20
    console_bytes: int = 1 << 20
    stderr_bytes: int = 1 << 16
    result_bounds: ResultBounds = field(default_factory=ResultBounds)


def child_limits(limits: RunnerLimits, config: MachineConfig) -> Callable[[], None]:
    """What the child runs between fork and exec: die with the driver, then cap resources.

    PR_SET_PDEATHSIG fires when the thread that started QEMU ends, so start runners from a
    thread that outlives them (the main thread, or a pool's worker that waits for its runs).
    """
    ram = sum(region.size for region in config.ram)
    address_space = limits.address_space_bytes or ram + QEMU_ADDRESS_SPACE_OVERHEAD
    cpu_seconds = limits.cpu_seconds or int(limits.deadline_seconds) + 60
    driver = os.getpid()

    def limit_child() -> None:
        die_with_parent()
        if os.getppid() != driver:  # the driver died before the line above took effect
            os._exit(1)
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_bytes, limits.file_size_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return limit_child


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when the thread that started it ends (Linux only)."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def terminate_group(process: subprocess.Popen[bytes], console: bool) -> None:
    """Ask the runner to quit (SIGTERM), with everything it started."""
    with contextlib.suppress(ProcessLookupError):
        if console:
            process.terminate()
        else:
            os.killpg(process.pid, signal.SIGTERM)


def kill_group(process: subprocess.Popen[bytes], console: bool) -> None:
    """SIGKILL the runner's group; only before it is reaped (its pid and group are still its own).

    On the terminal (`console`) it shares our group, so only it is killed."""
    with contextlib.suppress(ProcessLookupError):
        if console:
            process.kill()
        else:
            os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def terminal_restored(console: bool) -> Iterator[None]:
    """On the terminal QEMU switches it to raw mode, and a killed QEMU cannot switch it back."""
    if not (console and sys.stdin.isatty()):
        yield
        return
    saved = termios.tcgetattr(sys.stdin.fileno())
    try:
        yield
    finally:
        termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)
