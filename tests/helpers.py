"""Small helpers the tests share (importable as `tests.helpers`)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from explorer.errors import StoreError
from explorer.firmware.model import Arch, Endian, Firmware, Symbol, SymbolTable
from explorer.runner.result import deserialize
from explorer.search.score import boot_completed
from explorer.store import Store

# A hang guard for a search to store its first generation, not a performance claim.
FIRST_GENERATION_SECONDS = 600


def run(*command: str | Path, stdin: bytes | None = None) -> bytes:
    """Run a host tool (mkimage, a compressor) and return its stdout; fail the test if it fails."""
    return subprocess.run([str(c) for c in command], input=stdin, capture_output=True, check=True).stdout


def arm_firmware(symbols: tuple[Symbol, ...] = (), **facts: Any) -> Firmware:
    """A hand-made ARMv7 Firmware for unit tests: the given symbols and facts, the rest empty."""
    defaults: dict[str, Any] = {
        "sha256": "0" * 64,
        "size": 0,
        "arch": Arch.ARM,
        "endian": Endian.LITTLE,
        "cpu_class": "ARMv7",
        "version": None,
        "layers": (),
        "page_offset": 0xC0000000,
        "load_address": None,
        "entry": None,
        "symbols": SymbolTable(symbols, "kallsyms", symbols[0].address if symbols else 0, "hand-made"),
        "machines": (),
        "device_tree": None,
        "image_size": 0,
    }
    return Firmware(**{**defaults, **facts})


def sigint_at_its_default() -> None:
    """Popen's preexec_fn for a process a test interrupts as Ctrl-C would: SIGINT at its default.

    A shell without job control starts a background command with SIGINT ignored (`scripts/test &`
    in a script, some CI runners), every process it starts inherits that, and Python then installs
    no KeyboardInterrupt handler: the test's SIGINT would be ignored and the process run on. A
    terminal's Ctrl-C reaches a process whose SIGINT is at its default, so the test gives it that.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt_mid_search(search: subprocess.Popen[Any], work: Path) -> None:
    """Ctrl-C `explorer search` once it has stored a generation and not yet completed the boot.

    However fast the machine, the signal lands mid-search: the search is stopped (SIGSTOP) while
    its store is read, and SIGINT is sent only while it is stopped with a store that holds runs
    and no completed boot; otherwise it goes on and is looked at again. Start the search with
    `sigint_at_its_default`. Fails if the search ends first.
    """
    deadline = time.monotonic() + FIRST_GENERATION_SECONDS
    while True:
        assert time.monotonic() < deadline, "the search stored no generation"
        search.send_signal(signal.SIGSTOP)
        try:
            assert _stopped(search), "the search ended before it could be interrupted"
            if mid_search(work):
                search.send_signal(signal.SIGINT)  # pending until it continues, then handled first
                return
        finally:
            search.send_signal(signal.SIGCONT)
        time.sleep(0.05)


def _stopped(process: subprocess.Popen[Any]) -> bool:
    """Wait until `process` is stopped (True) or has ended (False); it was just sent SIGSTOP."""
    while process.poll() is None:
        state = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "T":
            return True
        time.sleep(0.001)
    return False


def mid_search(work: Path) -> bool:
    """The search in `work` has stored runs, none of which completed the boot."""
    if not (work / "data.mdb").exists():
        return False
    try:
        store = Store.open(work, writer=False)
    except StoreError:  # stopped while creating it: not a store yet
        return False
    with store:
        results = [deserialize(run.result) for run in store.runs()]
    return bool(results) and not any(boot_completed(result) for result in results)
