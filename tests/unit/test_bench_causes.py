"""Why a search stopped, named from hand-made furthest runs: each kind from the run's own data
(exit, detail, call stack, loops, milestones, initcalls), never from a name the bench gives."""

from __future__ import annotations

import json

from explorer.bench import causes
from explorer.bench.causes import search_error, stop_cause
from explorer.corpus.initramfs import USERSPACE_MARKER
from explorer.firmware.model import Symbol, SymbolTable
from explorer.runner.kernel_hooks import CONSOLE_INPUT
from explorer.runner.rehost_pb2 import (
    CallStack,
    Exit,
    ExitReason,
    Frame,
    Initcall,
    Milestone,
    RunResult,
    ThreadStack,
)
from tests.unit.test_runner_analysis import SYMBOLS as LOOP_SYMBOLS
from tests.unit.test_runner_analysis import SYSSTATUS, spinning_run

FUNCTIONS = (
    "start_kernel", "time_init", "timer_probe", "arch_timer_of_init", "kernel_init", "do_one_initcall",
    "foo_init", "bar_init", "readl_poll", "mount_root", "panic", "make_task_dead", "die",
    "do_undefinstr", "__und_svc", "do_DataAbort", "__dabt_svc", "do_idle", "arch_cpu_idle",
    "wait_for_completion", "kernel_init_freeable",
)  # fmt: skip
# One 0x100-byte function per name, from 0xc0100000.
SYMBOLS = SymbolTable(
    (
        *(Symbol(0xC0100000 + 0x100 * index, "T", name) for index, name in enumerate(FUNCTIONS)),
        Symbol(0xC0200000, "B", "_end"),
    ),
    "kallsyms",
    0xC0100000,
    "hand-made",
)


def at(name: str, offset: int = 0) -> int:
    return 0xC0100000 + 0x100 * FUNCTIONS.index(name) + offset


def stack(*names: str) -> CallStack:
    """Frames innermost first, each returning into the next one's function."""
    frames = [
        Frame(function=at(name), return_address=at(names[index + 1], 0x10) if index + 1 < len(names) else 0)
        for index, name in enumerate(names)
    ]
    return CallStack(frames=frames)


def run(reason: int, detail: str = "", milestones: tuple[str, ...] = (), **fields: object) -> RunResult:
    result = RunResult(exit=Exit(reason=reason, icount=1_000_000, detail=detail), **fields)
    result.milestones.extend(
        Milestone(name=name, address=at("start_kernel"), icount=1) for name in milestones
    )
    return result


def in_initcalls(result: RunResult, *initcalls: str) -> RunResult:
    result.milestones.extend(
        Milestone(name=name, address=at("start_kernel"), icount=1) for name in ("start_kernel", "kernel_init")
    )
    result.initcalls.extend(Initcall(address=at(name), icount=2) for name in initcalls)
    return result


def test_a_poll_the_runner_ended_names_the_address_and_the_function_of_its_pc() -> None:
    detail = f"stuck: 4096 reads of 0x1e6e2070 (last at pc 0x{at('readl_poll', 0x14):x})"
    result = in_initcalls(
        run(ExitReason.EXIT_BUDGET, detail, call_stack=stack("readl_poll", "foo_init")), "foo_init"
    )
    why = stop_cause("exhausted", result, SYMBOLS)
    assert why.kind == causes.STUCK_POLLING
    assert why.cause == "stuck polling MMIO 0x1e6e2070 in readl_poll"
    assert (why.function, why.polled, why.initcall, why.milestone) == (
        "readl_poll",
        ("0x1e6e2070",),
        "foo_init",
        "kernel_init",
    )


def test_a_spin_the_plugin_ended_is_placed_in_the_function_of_its_wait() -> None:
    detail = f"spin: 65536 waits for an event at pc 0x{at('bar_init', 0x24):x} with interrupts masked"
    result = in_initcalls(
        run(ExitReason.EXIT_BUDGET, detail, call_stack=stack("bar_init", "foo_init")), "foo_init"
    )
    why = stop_cause("exhausted", result, SYMBOLS)
    assert why.kind == causes.SPINNING_MASKED
    assert why.cause == "spinning with interrupts masked in bar_init"
    assert (why.function, why.polled, why.initcall) == ("bar_init", (), "foo_init")


def test_an_exception_loop_the_plugin_ended_is_named_so_unless_it_is_a_crash() -> None:
    detail = (
        "exceptions: 4096 exceptions with no instruction executed, the last from 0xffff000c to the vector"
        " at 0xffff000c"
    )
    looping = stop_cause(
        "exhausted", run(ExitReason.EXIT_BUDGET, detail, call_stack=stack("bar_init")), SYMBOLS
    )
    assert looping.kind == causes.EXCEPTION_LOOP
    assert looping.cause == "looping in exceptions in bar_init"
    crashed = run(ExitReason.EXIT_BUDGET, detail, call_stack=stack("die", "bar_init"))
    assert stop_cause("exhausted", crashed, SYMBOLS).kind != causes.EXCEPTION_LOOP


def test_a_run_that_ended_in_a_loop_reading_a_device_is_stuck_polling_it() -> None:
    why = stop_cause("budget", spinning_run(), LOOP_SYMBOLS)
    assert why.kind == causes.STUCK_POLLING
    assert why.cause == f"stuck polling MMIO 0x{SYSSTATUS:x} in omap_irq_soft_reset"
    assert why.milestone == "init_IRQ" and why.initcall is None


def test_an_idle_run_says_where_kernel_init_was_and_whether_a_timer_was_armed() -> None:
    idle = stack("arch_cpu_idle", "do_idle")
    no_timer = "idle: the guest waited for an interrupt with no timer armed at 96 ms of its time"
    why = stop_cause(
        "budget",
        in_initcalls(run(ExitReason.EXIT_BUDGET, no_timer, call_stack=idle), "foo_init", "bar_init"),
        SYMBOLS,
    )
    assert why.kind == causes.IDLE_NO_TIMER
    assert why.cause == "idle in kernel_init after 2 initcalls (last bar_init), no timer armed"
    armed = "idle: the guest's clock reached 384 ms"
    why = stop_cause(
        "budget", in_initcalls(run(ExitReason.EXIT_BUDGET, armed, call_stack=idle), "foo_init"), SYMBOLS
    )
    assert why.kind == causes.IDLE_NO_INTERRUPT
    assert why.cause == "idle in kernel_init after 1 initcalls (last foo_init), no interrupt came"


def test_an_idle_run_with_thread_stacks_says_what_kernel_init_waits_for() -> None:
    idle = stack("arch_cpu_idle", "do_idle")
    blocked = stack(
        "wait_for_completion", "foo_init", "do_one_initcall", "kernel_init_freeable", "kernel_init"
    )
    no_timer = "idle: the guest waited for an interrupt with no timer armed at 96 ms of its time"
    threads = [
        ThreadStack(stack=0xC1400000, frames=idle.frames, current=True),
        ThreadStack(stack=0xE0008000, frames=blocked.frames),
    ]
    result = run(ExitReason.EXIT_BUDGET, no_timer, call_stack=idle, threads=threads)
    why = stop_cause("budget", in_initcalls(result, "foo_init"), SYMBOLS)
    assert why.kind == causes.IDLE_NO_TIMER
    assert why.cause == (
        "idle in kernel_init after 1 initcalls (last foo_init), no timer armed; kernel_init is blocked in: "
        "wait_for_completion <- foo_init <- do_one_initcall <- kernel_init_freeable <- kernel_init "
        "(waits: completion; initcall foo_init)"
    )


def test_an_undefined_instruction_is_told_from_its_exception_entry_and_placed_in_the_failing_function() -> (
    None
):
    frames = stack(
        "panic",
        "make_task_dead",
        "die",
        "do_undefinstr",
        "__und_svc",
        "arch_timer_of_init",
        "timer_probe",
        "time_init",
        "start_kernel",
    )
    result = run(
        ExitReason.EXIT_PANIC,
        "Attempted to kill the idle task!",
        ("start_kernel", "time_init"),
        call_stack=frames,
    )
    why = stop_cause("exhausted", result, SYMBOLS)
    assert why.kind == causes.UNDEFINED_INSTRUCTION
    assert why.cause == "undefined instruction in arch_timer_of_init"
    assert (why.exit, why.milestone) == ("panic", "time_init")


def test_a_data_abort_and_a_plain_panic_are_told_apart() -> None:
    frames = stack(
        "panic", "make_task_dead", "die", "do_DataAbort", "__dabt_svc", "foo_init", "do_one_initcall"
    )
    aborted = stop_cause("budget", run(ExitReason.EXIT_PANIC, "Fatal exception", call_stack=frames), SYMBOLS)
    assert (aborted.kind, aborted.function) == (causes.KERNEL_FAULT, "foo_init")
    plain = run(
        ExitReason.EXIT_PANIC, "VFS: Unable to mount root fs on %s\n", call_stack=stack("panic", "mount_root")
    )
    why = stop_cause("budget", plain, SYMBOLS)
    assert why.kind == causes.PANIC
    assert why.cause == "panic in mount_root: VFS: Unable to mount root fs on %s"


def test_a_bug_is_named_from_its_oops_line_though_it_traps_as_an_undefined_instruction() -> None:
    frames = stack(
        "panic", "make_task_dead", "die", "do_undefinstr", "__und_svc", "foo_init", "do_one_initcall"
    )
    log = b"kernel BUG at drivers/foo.c:12!\nInternal error: Oops - BUG: 0 [#1] ARM\n"
    why = stop_cause(
        "budget", run(ExitReason.EXIT_PANIC, "Fatal exception", call_stack=frames, log=log), SYMBOLS
    )
    assert (why.kind, why.function) == (causes.BUG, "foo_init")


def test_a_budget_spent_outside_any_loop_is_placed_in_the_innermost_function() -> None:
    result = in_initcalls(
        run(ExitReason.EXIT_BUDGET, call_stack=stack("foo_init", "do_one_initcall")), "foo_init"
    )
    why = stop_cause("budget", result, SYMBOLS)
    assert why.kind == causes.BUDGET_RUNNING
    assert why.cause == "instruction budget spent running in foo_init"
    unnamed = stop_cause("budget", run(ExitReason.EXIT_TIMEOUT, milestones=("start_kernel",)), SYMBOLS)
    assert unnamed.cause == "wall-clock deadline while running at start_kernel"


def test_a_run_past_user_space_that_powered_off_without_the_marker_is_user_space_not_a_power_off() -> None:
    past = ("start_kernel", "kernel_init", "run_init_process", "user_space")
    after = stop_cause("budget", run(ExitReason.EXIT_HALT, "machine_power_off", past), SYMBOLS)
    assert after.kind == causes.USER_SPACE
    before = stop_cause("budget", run(ExitReason.EXIT_HALT, "machine_power_off", past[:3]), SYMBOLS)
    assert before.kind == causes.HALTED


def test_a_run_that_ended_waiting_for_console_input_reached_the_console_only_with_the_marker() -> None:
    past = ("start_kernel", "kernel_init", "run_init_process", "user_space")
    marked = run(ExitReason.EXIT_HALT, CONSOLE_INPUT, past, console=USERSPACE_MARKER.encode() + b"\r\n")
    assert stop_cause("budget", marked, SYMBOLS).kind == causes.CONSOLE
    assert stop_cause("budget", marked, SYMBOLS).exit == "console_input"
    unmarked = run(ExitReason.EXIT_HALT, CONSOLE_INPUT, past, console=b"/ # ")
    assert stop_cause("budget", unmarked, SYMBOLS).kind == causes.USER_SPACE


def test_a_completed_search_a_search_without_runs_and_a_rejected_config_have_their_own_kinds() -> None:
    completed = run(ExitReason.EXIT_USER_SPACE, milestones=("start_kernel", "run_init_process"))
    assert stop_cause("boot completed", completed, SYMBOLS).kind == causes.BOOT_COMPLETED
    assert stop_cause("exhausted", None, SYMBOLS).kind == causes.NO_RUN
    assert (
        stop_cause("budget", None, SYMBOLS).cause
        == "no run stored: the first run outlasted the search's budget"
    )
    rejected = search_error("config: tick and interrupt_controller both drive the CPU's IRQ line: give one")
    assert rejected.kind == causes.CONFIG_REJECTED
    assert rejected.cause.startswith("config rejected: config: tick and interrupt_controller")
    assert search_error("firmware x.bin is empty").kind == causes.SEARCH_ERROR


def test_every_cause_is_one_of_the_kinds_and_round_trips_as_json_data() -> None:
    results = [
        spinning_run(),
        run(ExitReason.EXIT_HALT, "machine_halt"),
        run(ExitReason.EXIT_CRASHED, "signal 11"),
    ]
    for result in results:
        why = stop_cause("budget", result, LOOP_SYMBOLS)
        assert why.kind in causes.KINDS
        assert json.loads(json.dumps(why.to_dict()))["cause"] == why.cause
