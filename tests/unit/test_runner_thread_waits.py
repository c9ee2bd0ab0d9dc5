"""Where kernel_init waits, named from hand-made per-thread stacks: its frames, its initcall, its wait."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

from explorer.firmware.model import Arch, Endian, Firmware, Symbol, SymbolTable
from explorer.runner.analysis import analyse
from explorer.runner.rehost_pb2 import (
    CallStack,
    Exit,
    ExitReason,
    Frame,
    HotLoop,
    MmioAccess,
    RunResult,
    ThreadStack,
)
from explorer.runner.summary import describe, to_dict
from tests.unit.test_search_report_loops import stored_report

# Generic kernel functions, and an example driver's (no board's): one symbol every 0x100 bytes.
NAMES = (
    "__switch_to",
    "__schedule",
    "schedule",
    "schedule_timeout",
    "__wait_for_common",
    "wait_for_completion",
    "msleep",
    "wait_for_device_probe",
    "example_reset",
    "example_probe",
    "example_init",
    "do_one_initcall",
    "kernel_init_freeable",
    "kernel_init",
    "process_one_work",
    "worker_thread",
    "kthread",
    "cpu_v7_do_idle",
    "do_idle",
    "cpu_startup_entry",
    "preempt_schedule",
)
BASE = 0xC0100000
ADDRESS = {name: BASE + 0x100 * index for index, name in enumerate(NAMES)}
SYMBOLS = SymbolTable(
    (
        *(Symbol(address, "T", name) for name, address in ADDRESS.items()),
        Symbol(BASE + 0x100 * len(NAMES), "B", "_end"),
    ),
    "kallsyms",
    BASE,
    "hand-made",
)
IDLE_STACK = 0xC1400000
KERNEL_INIT_STACK = 0xE0008000
WORKER_STACK = 0xE0060000
REGISTER = 0x48000010


def chain(*names: str) -> list[Frame]:
    """Frames innermost first: each function returns into the next one (at +0x40)."""
    return [
        Frame(function=ADDRESS[callee], return_address=ADDRESS[caller] + 0x40)
        for callee, caller in pairwise(names)
    ]


IDLE = chain("cpu_v7_do_idle", "do_idle", "cpu_startup_entry")
SWITCHED_OUT = ("__switch_to", "__schedule", "schedule")
IN_INITCALL = ("example_init", "do_one_initcall", "kernel_init_freeable", "kernel_init")


def idle_run(kernel_init: list[Frame], *others: ThreadStack) -> RunResult:
    """A run that ended idle: the idle task ran last, kernel_init was switched out."""
    return RunResult(
        exit=Exit(reason=ExitReason.EXIT_BUDGET, icount=10**9, detail="idle: ..."),
        call_stack=CallStack(frames=IDLE),
        threads=[
            ThreadStack(stack=IDLE_STACK, frames=IDLE, current=True),
            ThreadStack(stack=KERNEL_INIT_STACK, frames=kernel_init),
            *others,
        ],
    )


def test_kernel_init_blocked_on_a_completion_names_it_and_the_initcall_not_the_idle_task() -> None:
    frames = chain(*SWITCHED_OUT, "schedule_timeout", "wait_for_completion", "example_probe", *IN_INITCALL)
    analysis = analyse(idle_run(frames), SYMBOLS)
    wait = analysis.kernel_init
    assert wait is not None and not wait.current
    assert wait.waits == ("completion",)
    assert str(wait.initcall) == "example_init"
    assert [str(frame.function) for frame in wait.frames][:3] == [
        "schedule_timeout",
        "wait_for_completion",
        "example_probe",
    ]  # the scheduler's own frames are left out
    assert (
        "kernel_init is blocked in: schedule_timeout <- wait_for_completion <- example_probe <- "
        "example_init <- do_one_initcall <- kernel_init_freeable "
        "(waits: completion; initcall example_init)"
    ) in describe(analysis)


def test_a_sleep_is_told_by_its_outermost_primitive() -> None:
    frames = chain(
        *SWITCHED_OUT, "schedule_timeout", "msleep", "example_reset", "example_probe", *IN_INITCALL
    )
    wait = analyse(idle_run(frames), SYMBOLS).kernel_init
    assert wait is not None and wait.waits == ("sleep",)


def test_waiting_for_deferred_probes_says_deferred_probe() -> None:
    frames = chain(*SWITCHED_OUT, "wait_for_device_probe", *IN_INITCALL)
    wait = analyse(idle_run(frames), SYMBOLS).kernel_init
    assert wait is not None and wait.waits == ("deferred probe",)


def test_a_driver_that_called_schedule_itself_is_an_open_coded_wait() -> None:
    """wait_event expands in its caller: the caller's frame returns from schedule directly."""
    frames = chain(*SWITCHED_OUT, "example_probe", *IN_INITCALL)
    wait = analyse(idle_run(frames), SYMBOLS).kernel_init
    assert wait is not None and wait.waits == ("event",) and str(wait.initcall) == "example_init"


def test_a_preempted_thread_names_only_frames_and_initcall() -> None:
    frames = chain("__switch_to", "__schedule", "preempt_schedule", "example_probe", *IN_INITCALL)
    wait = analyse(idle_run(frames), SYMBOLS).kernel_init
    assert wait is not None and wait.waits == () and str(wait.initcall) == "example_init"


def test_a_stack_that_starts_below_kernel_init_is_kernel_inits_when_it_holds_kernel_init_freeable() -> None:
    frames = chain(
        *SWITCHED_OUT,
        "schedule_timeout",
        "msleep",
        "example_probe",
        "example_init",
        "do_one_initcall",
        "kernel_init_freeable",
    )
    wait = analyse(idle_run(frames), SYMBOLS).kernel_init
    assert wait is not None and wait.waits == ("sleep",)


def test_kernel_init_stuck_polling_a_register_is_a_stuck_poll() -> None:
    frames = chain("example_reset", "example_probe", *IN_INITCALL)
    result = RunResult(
        exit=Exit(reason=ExitReason.EXIT_BUDGET, icount=10**9, detail="stuck: 3000000 reads"),
        call_stack=CallStack(frames=frames),
        threads=[ThreadStack(stack=KERNEL_INIT_STACK, frames=frames, current=True)],
        hot_loops=[
            HotLoop(
                start_pc=ADDRESS["example_reset"] + 8, end_pc=ADDRESS["example_reset"] + 16, iterations=10**6
            )
        ],
        mmio_accesses=[MmioAccess(address=REGISTER, size=4, pc=ADDRESS["example_reset"] + 12, order=0)],
    )
    wait = analyse(result, SYMBOLS).kernel_init
    assert wait is not None and wait.current
    assert wait.waits == (f"stuck poll of 0x{REGISTER:x}",)
    assert str(wait.initcall) == "example_init"


def test_a_busy_worker_is_named_with_its_wait() -> None:
    kernel_init = chain(*SWITCHED_OUT, "schedule_timeout", "wait_for_completion", *IN_INITCALL)
    worker = chain(
        *SWITCHED_OUT,
        "schedule_timeout",
        "msleep",
        "example_probe",
        "process_one_work",
        "worker_thread",
        "kthread",
    )
    idle_worker = chain(*SWITCHED_OUT, "worker_thread", "kthread")
    analysis = analyse(
        idle_run(
            kernel_init,
            ThreadStack(stack=WORKER_STACK, frames=worker),
            ThreadStack(stack=WORKER_STACK + 0x4000, frames=idle_worker),
        ),
        SYMBOLS,
    )
    (busy,) = analysis.workers  # the idle worker runs no work item
    assert busy.waits == ("sleep",) and busy.initcall is None
    assert "a worker is blocked in: schedule_timeout <- msleep <- example_probe" in "\n".join(
        describe(analysis)
    )


def test_a_result_without_threads_uses_the_call_stack_when_it_holds_kernel_init() -> None:
    frames = chain(*SWITCHED_OUT, "schedule_timeout", "wait_for_completion", *IN_INITCALL)
    result = RunResult(exit=Exit(reason=ExitReason.EXIT_TIMEOUT), call_stack=CallStack(frames=frames))
    wait = analyse(result, SYMBOLS).kernel_init
    assert wait is not None and wait.current and wait.waits == ("completion",)
    assert analyse(RunResult(call_stack=CallStack(frames=IDLE)), SYMBOLS).kernel_init is None


def test_a_run_that_reached_user_space_names_no_wait() -> None:
    result = idle_run(chain(*SWITCHED_OUT, "wait_for_completion", *IN_INITCALL))
    result.exit.reason = ExitReason.EXIT_USER_SPACE
    analysis = analyse(result, SYMBOLS)
    assert analysis.kernel_init is None and analysis.workers == ()


def test_the_json_form_carries_the_wait_and_every_thread() -> None:
    frames = chain(*SWITCHED_OUT, "schedule_timeout", "wait_for_completion", *IN_INITCALL)
    as_dict = json.loads(json.dumps(to_dict(analyse(idle_run(frames), SYMBOLS))))
    assert as_dict["kernel_init"]["waits"] == ["completion"]
    assert as_dict["kernel_init"]["initcall"] == "example_init"
    assert as_dict["kernel_init"]["summary"].startswith("kernel_init is blocked in: schedule_timeout")
    assert [thread["stack"] for thread in as_dict["threads"]] == [hex(IDLE_STACK), hex(KERNEL_INIT_STACK)]
    assert [thread["current"] for thread in as_dict["threads"]] == [True, False]
    assert as_dict["busy_workers"] == []


def test_show_reports_where_kernel_init_is_blocked(tmp_path: Path) -> None:
    firmware = Firmware(
        "0" * 64, 0, Arch.ARM, Endian.LITTLE, "ARMv7", None, (), None, None, None, SYMBOLS, (), None, 0
    )
    frames = chain(*SWITCHED_OUT, "schedule_timeout", "wait_for_completion", *IN_INITCALL)
    report = json.loads(json.dumps(stored_report(tmp_path / "work", idle_run(frames), firmware)))
    assert report["kernel_init"]["initcall"] == "example_init"
    assert report["kernel_init"]["waits"] == ["completion"]
    assert report["kernel_init"]["summary"] in report["run_summary"]
