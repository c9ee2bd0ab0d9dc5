"""Run analysis on hand-made results: every address the runner reports comes back with its function's name."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from explorer.firmware.model import Symbol, SymbolTable
from explorer.runner.analysis import analyse, place, polled_addresses
from explorer.runner.rehost_pb2 import (
    CallStack,
    Exit,
    ExitReason,
    Frame,
    HotLoop,
    Initcall,
    Milestone,
    MmioAccess,
    RunResult,
)
from explorer.runner.summary import describe, explaining_loops, to_dict

SYMBOLS = SymbolTable(
    (
        Symbol(0xC0100000, "T", "_text"),
        Symbol(0xC0101F20, "T", "do_one_initcall"),
        Symbol(0xC0102000, "t", "kernel_init"),
        Symbol(0xC0300000, "T", "panic"),
        Symbol(0xC0400000, "t", "omap_irq_soft_reset"),
        Symbol(0xC0400080, "t", "omap_intc_probe"),
        Symbol(0xC0C00000, "T", "pl011_init"),
        Symbol(0xC0C00100, "T", "vexpress_init"),
        Symbol(0xC1000000, "B", "_end"),
    ),
    "kallsyms",
    0xC0100000,
    "hand-made",
)
SYSSTATUS = 0x48200014


def spinning_run() -> RunResult:
    """armmp on a board without an interrupt controller: it spins in omap_irq_soft_reset."""
    result = RunResult(
        exit=Exit(reason=ExitReason.EXIT_BUDGET, icount=50_000_000, detail="budget"),
        milestones=[
            Milestone(name="start_kernel", address=0xC0B00A2C, icount=1000),
            Milestone(name="init_IRQ", address=0xC0B01000, icount=2000),
        ],
        hot_loops=[HotLoop(start_pc=0xC0400010, end_pc=0xC0400020, iterations=123456)],
        call_stack=CallStack(
            frames=[
                Frame(function=0xC0400000, return_address=0xC04000A4),
                Frame(function=0xC0400080, return_address=0xC1000010),
            ]
        ),
        log=b"Booting Linux on physical CPU 0x0\nNR_IRQS: 16, nr_irqs: 16\n",
    )
    result.mmio_accesses.extend(
        [
            MmioAccess(address=0x48200000, size=4, value=0x50, pc=0xC0400004, order=0),  # before the loop
            MmioAccess(address=0x48200010, size=4, value=2, pc=0xC040000C, is_write=True, order=1),
            MmioAccess(address=SYSSTATUS, size=4, value=0, pc=0xC0400014, order=2),
            MmioAccess(address=SYSSTATUS, size=4, value=0, pc=0xC0400014, order=3),
            MmioAccess(address=0x48200018, size=4, value=0, pc=0xC0400018, is_write=True, order=4),
        ]
    )
    return result


def test_a_hot_loop_names_its_function_and_the_address_it_polls() -> None:
    analysis = analyse(spinning_run(), SYMBOLS)
    (loop,) = analysis.hot_loops
    assert loop.start.function == "omap_irq_soft_reset"
    assert loop.polled == (SYSSTATUS,)  # the read before the loop and the writes inside it are not polls
    assert loop.sentence().startswith("spins in omap_irq_soft_reset (0xc0400010..0xc0400020")
    assert loop.sentence().endswith("polling 0x48200014")


def test_reads_the_runner_already_attributed_come_first_and_only_once() -> None:
    result = spinning_run()
    result.hot_loops[0].mmio_reads.extend([0x48200020, SYSSTATUS])
    (loop,) = analyse(result, SYMBOLS).hot_loops
    assert loop.polled == (0x48200020, SYSSTATUS)


def test_a_loop_reading_no_mmio_says_so() -> None:
    result = RunResult(hot_loops=[HotLoop(start_pc=0xC0102004, end_pc=0xC0102008, iterations=9)])
    assert (
        analyse(result, SYMBOLS)
        .hot_loops[0]
        .sentence()
        .endswith("in kernel_init (0xc0102004..0xc0102008, 9 iterations) reading no MMIO")
    )


def test_initcalls_and_call_stack_frames_are_named() -> None:
    result = spinning_run()
    result.initcalls.extend(
        [Initcall(address=0xC0C00000, icount=10), Initcall(address=0xC0C00100, icount=20)]
    )
    analysis = analyse(result, SYMBOLS)
    assert [str(call.function) for call in analysis.initcalls] == ["pl011_init", "vexpress_init"]
    assert [(str(f.function), str(f.return_to)) for f in analysis.call_stack] == [
        ("omap_irq_soft_reset", "omap_intc_probe+0x24"),
        ("omap_intc_probe", "0xc1000010"),  # past _end: no symbol proves it
    ]


def test_addresses_outside_the_symbols_stay_bare() -> None:
    assert str(place(0x8000, SYMBOLS)) == "0x8000"  # user space, below every symbol
    assert str(place(0xC1000004, SYMBOLS)) == "0xc1000004"  # past the last symbol
    assert str(place(0xC0400000, SYMBOLS)) == "omap_irq_soft_reset"
    assert str(place(0xC0300000, SymbolTable((), "none", 0, ""))) == "0xc0300000"


def test_the_description_reads_like_a_diagnosis() -> None:
    lines = describe(analyse(spinning_run(), SYMBOLS))
    assert lines[0] == "exit: budget at insn 50000000: budget"
    assert "milestones: start_kernel -> init_IRQ" in lines
    assert "  omap_irq_soft_reset <- omap_intc_probe+0x24" in lines
    assert any(
        line.startswith("hot loop (ended-in, polls-device): spins in omap_irq_soft_reset") for line in lines
    )
    assert lines[-2:] == ["  | Booting Linux on physical CPU 0x0", "  | NR_IRQS: 16, nr_irqs: 16"]


def booted_run() -> RunResult:
    """A boot to user space that ran a copy loop in _text and a bignum loop in kernel_init a
    million times each, and a console loop in pl011_init that read its status register."""
    return RunResult(
        exit=Exit(reason=ExitReason.EXIT_USER_SPACE, icount=9_000_000_000),
        hot_loops=[
            HotLoop(start_pc=0xC0100040, end_pc=0xC0100060, iterations=1_000_000),
            HotLoop(start_pc=0xC0102010, end_pc=0xC0102030, iterations=1_000_000),
            HotLoop(start_pc=0xC0C00010, end_pc=0xC0C00020, iterations=1_000_000),
        ],
        mmio_accesses=[
            MmioAccess(address=0x10009018, size=4, value=0x90, pc=0xC0C00014, order=0),
            MmioAccess(address=0x10009000, size=4, value=0x41, pc=0xC0C00018, is_write=True, order=1),
        ],
        # kernel_init, which holds the bignum loop, is still on the stack when user space starts.
        call_stack=CallStack(frames=[Frame(function=0xC0102000, return_address=0xC0100010)]),
    )


def listed_functions(result: RunResult) -> list[str | None]:
    return [loop["function"] for loop in to_dict(analyse(result, SYMBOLS))["hot_loops"]]


def test_computation_loops_of_a_successful_boot_are_counted_not_listed() -> None:
    analysis = analyse(booted_run(), SYMBOLS)
    assert len(analysis.hot_loops) == 3  # the operators still see every loop
    as_dict = to_dict(analysis)
    assert [loop["function"] for loop in as_dict["hot_loops"]] == ["pl011_init"]
    assert as_dict["computation_loops_not_shown"] == 2
    lines = describe(analysis)
    assert [line for line in lines if line.startswith("hot loop")] == [
        "hot loop (polls-device): spins in pl011_init (0xc0c00010..0xc0c00020, 1000000 iterations) "
        "polling 0x10009018",
        "hot loops: 2 computation loops not shown (no MMIO read, not where the run ended)",
    ]


def test_a_loop_that_reads_a_device_is_listed_whatever_the_ending() -> None:
    for reason in (ExitReason.EXIT_USER_SPACE, ExitReason.EXIT_PANIC, ExitReason.EXIT_BUDGET):
        result = booted_run()
        result.exit.reason = reason
        result.call_stack.Clear()
        assert listed_functions(result) == ["pl011_init"], ExitReason.Name(reason)
        (listed,) = explaining_loops(analyse(result, SYMBOLS))
        assert listed.kinds == ("polls-device",)


def test_a_stuck_run_lists_the_loop_it_ended_in_even_without_mmio() -> None:
    for reason in (ExitReason.EXIT_BUDGET, ExitReason.EXIT_TIMEOUT):
        result = booted_run()
        result.exit.reason = reason
        assert listed_functions(result) == ["kernel_init", "pl011_init"], ExitReason.Name(reason)
        kernel_init = to_dict(analyse(result, SYMBOLS))["hot_loops"][0]
        assert kernel_init["kinds"] == ["ended-in"] and kernel_init["polled"] == []


def test_a_successful_boot_attributes_no_callee_reads_to_the_loops_on_its_stack() -> None:
    # The same tail of repeated reads makes a stuck run's loop a poll through a helper; a boot
    # that reached user space was not spinning, so its loops keep only the reads made in them.
    result = booted_run()
    helper_read = MmioAccess(address=0x1000A000, size=4, value=7, pc=0xC0300010)
    result.mmio_accesses.extend([helper_read] * 2)
    assert [loop.polled for loop in analyse(result, SYMBOLS).hot_loops] == [(), (), (0x10009018,)]
    result.exit.reason = ExitReason.EXIT_BUDGET
    assert [loop.polled for loop in analyse(result, SYMBOLS).hot_loops] == [(), (0x1000A000,), (0x10009018,)]


def test_without_symbols_only_loops_that_read_a_device_are_listed() -> None:
    # No symbol proves which function holds a loop, so none is known to be on the stack.
    result = booted_run()
    result.exit.reason = ExitReason.EXIT_BUDGET
    unnamed = analyse(result, SymbolTable((), "none", 0, ""))
    assert [listed.kinds for listed in explaining_loops(unnamed)] == [("polls-device",)]


def test_loops_outside_the_symbols_that_read_no_device_are_not_listed() -> None:
    # The boot loader's or the decompressor's loops, below the kernel's symbols.
    result = spinning_run()
    result.hot_loops.extend(HotLoop(start_pc=0x8000 + 0x40 * n, end_pc=0x8010 + 0x40 * n) for n in range(3))
    as_dict = to_dict(analyse(result, SYMBOLS))
    assert [loop["function"] for loop in as_dict["hot_loops"]] == ["omap_irq_soft_reset"]
    assert as_dict["hot_loops"][0]["kinds"] == ["ended-in", "polls-device"]
    assert as_dict["computation_loops_not_shown"] == 3


def test_a_loop_the_run_ended_in_polls_what_its_callees_read_repeatedly_at_the_end() -> None:
    # The poll reads through a helper (vexpress_init stands in for regmap_read): pcs outside the loop.
    result = spinning_run()
    helper_read = MmioAccess(address=0xFF770284, size=4, value=0, pc=0xC0C00104)
    result.mmio_accesses.extend([helper_read] * 3)
    (loop,) = analyse(result, SYMBOLS).hot_loops
    assert loop.polled == (SYSSTATUS, 0xFF770284)
    result.call_stack.Clear()  # the run did not end in the loop: nothing outside it is attributed
    (loop,) = analyse(result, SYMBOLS).hot_loops
    assert loop.polled == (SYSSTATUS,)


def test_only_the_last_initcalls_and_log_lines_are_described() -> None:
    result = RunResult(
        initcalls=[Initcall(address=0xC0C00000, icount=n) for n in range(40)],
        console=b"".join(b"line %d\n" % n for n in range(40)),
    )
    lines = describe(analyse(result, SYMBOLS))
    assert "initcalls: 40" in lines
    assert sum(line.startswith("  pl011_init (0xc0c00000) at insn") for line in lines) == 5
    assert "console tail:" in lines and lines[-1] == "  | line 39" and "  | line 29" not in lines


def test_a_partial_run_says_why() -> None:
    result = RunResult(exit=Exit(reason=ExitReason.EXIT_TIMEOUT), partial=True, partial_reason="deadline")
    assert describe(analyse(result, SYMBOLS))[:2] == ["exit: timeout", "partial: deadline"]


def test_the_json_form_round_trips_through_json() -> None:
    as_dict = to_dict(analyse(spinning_run(), SYMBOLS))
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict["hot_loops"][0]["polled"] == ["0x48200014"]
    assert as_dict["call_stack"][0]["function"] == "omap_irq_soft_reset"
    assert as_dict["milestones"][1] == {"name": "init_IRQ", "address": "0xc0b01000", "icount": 2000}


@given(
    st.lists(
        st.tuples(st.integers(0, 0xFF), st.integers(0, 0x40), st.booleans()),
        max_size=50,
    ),
    st.integers(0, 0x40),
    st.integers(0, 0x40),
)
def test_polled_addresses_are_exactly_the_distinct_reads_inside_the_loop(
    accesses: list[tuple[int, int, bool]], start: int, end: int
) -> None:
    result = RunResult(
        mmio_accesses=[
            MmioAccess(address=address, pc=pc, is_write=write, order=order)
            for order, (address, pc, write) in enumerate(accesses)
        ]
    )
    polled = polled_addresses(result, start, end)
    expected = {address for address, pc, write in accesses if not write and start <= pc <= end}
    assert set(polled) == expected and len(polled) == len(expected)
