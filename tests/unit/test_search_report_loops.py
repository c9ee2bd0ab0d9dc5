"""`explorer show`'s report of a stored run lists the hot loops that explain it, each with its kind,
and only counts the loops that computed."""

from __future__ import annotations

from pathlib import Path

from explorer.corpus.initramfs import USERSPACE_MARKER
from explorer.firmware.model import Arch, Endian, Firmware, Symbol, SymbolTable
from explorer.runner.analysis import USER_SPACE_MILESTONE
from explorer.runner.rehost_pb2 import (
    CallStack,
    Exit,
    ExitReason,
    Frame,
    HotLoop,
    Milestone,
    MmioAccess,
    RunResult,
)
from explorer.runner.result import serialize
from explorer.search.findings import state_report
from explorer.search.score import score
from explorer.search.state import State, canonical_bytes, state_id
from explorer.store import EdgeRecord, Generation, RunRecord, Store

SYMBOLS = SymbolTable(
    (
        Symbol(0xC0100000, "T", "memcpy"),
        Symbol(0xC0200000, "T", "mpi_mul"),
        Symbol(0xC0300000, "T", "wait_for_reset"),
        Symbol(0xC1000000, "B", "_end"),
    ),
    "kallsyms",
    0xC0100000,
    "hand-made",
)
FIRMWARE = Firmware(
    "0" * 64, 0, Arch.ARM, Endian.LITTLE, "ARMv7", None, (), None, None, None, SYMBOLS, (), None, 0
)
STATUS = 0x10001004


def stored_report(directory: Path, result: RunResult, firmware: Firmware = FIRMWARE) -> dict:
    state = State(cpu="cortex-a9")
    identity = state_id(state)
    run_score = score(result).to_bytes()
    with Store.create(directory, {"purpose": "test"}) as store:
        store.commit(
            Generation(
                number=0,
                expanded=None,
                states=[(identity, canonical_bytes(state))],
                edges=[EdgeRecord(identity, None, "initial", "the machine the search starts from", {}, 0)],
                runs=[RunRecord(identity, serialize(result), run_score, 1.0, 0)],
                frontier=[(run_score, identity, 0)],
            )
        )
    with Store.open(directory, writer=False) as store:
        return state_report(store, identity, firmware)


def run_with_three_loops(reason: ExitReason.ValueType) -> RunResult:
    """A copy loop, a bignum loop (both a million times, touching no device) and a reset poll;
    the run's call stack at the exit holds mpi_mul."""
    return RunResult(
        exit=Exit(reason=reason, icount=1_000_000_000),
        hot_loops=[
            HotLoop(start_pc=0xC0100010, end_pc=0xC0100020, iterations=1_000_000),
            HotLoop(start_pc=0xC0200010, end_pc=0xC0200020, iterations=1_000_000),
            HotLoop(start_pc=0xC0300010, end_pc=0xC0300020, iterations=1_000_000),
        ],
        mmio_accesses=[MmioAccess(address=STATUS, size=4, pc=0xC0300014, order=0)],
        call_stack=CallStack(frames=[Frame(function=0xC0200000, return_address=0xC0300040)]),
    )


def test_show_of_a_successful_boot_lists_only_the_loop_that_polls_a_device(tmp_path: Path) -> None:
    report = stored_report(tmp_path / "work", run_with_three_loops(ExitReason.EXIT_USER_SPACE))
    assert [(loop["function"], loop["kinds"]) for loop in report["hot_loops"]] == [
        ("wait_for_reset", ["polls-device"])
    ]
    assert report["computation_loops_not_shown"] == 2
    summary = [line for line in report["run_summary"] if line.startswith("hot loop")]
    assert len(summary) == 2 and "memcpy" not in str(summary) and "mpi_mul" not in str(summary)


def test_show_of_a_stuck_run_lists_the_loop_it_ended_in(tmp_path: Path) -> None:
    report = stored_report(tmp_path / "work", run_with_three_loops(ExitReason.EXIT_BUDGET))
    assert [(loop["function"], loop["kinds"]) for loop in report["hot_loops"]] == [
        ("mpi_mul", ["ended-in"]),
        ("wait_for_reset", ["polls-device"]),
    ]
    assert report["computation_loops_not_shown"] == 1


def test_show_says_whether_user_space_printed_the_marker_and_gives_the_console_text(tmp_path: Path) -> None:
    printed = RunResult(
        exit=Exit(reason=ExitReason.EXIT_HALT, detail="machine_power_off"),
        milestones=[Milestone(name=USER_SPACE_MILESTONE)],
        console=f"Run /init as init process\n{USERSPACE_MARKER}\n\xff".encode("latin-1"),
        console_dropped=12,
    )
    report = stored_report(tmp_path / "printed", printed)
    assert report["reached_console"] and report["score"].startswith("console")
    assert report["console"].splitlines()[:2] == ["Run /init as init process", USERSPACE_MARKER]
    assert "\ufffd" in report["console"] and "12 console bytes left out" in report["console"]
    silent = RunResult(exit=Exit(reason=ExitReason.EXIT_USER_SPACE), console=b"Run /init as init process\n")
    assert not stored_report(tmp_path / "silent", silent)["reached_console"]
