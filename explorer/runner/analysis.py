"""What a run observed, named with the firmware's symbols: where it got, where it stopped, what it polled.

The runner reports addresses; people and the search read functions. This turns a RunResult and
the kernel's SymbolTable into named facts (milestones, initcalls, the call stack at the exit,
hot loops with the MMIO addresses read inside them) and into lines such as "spins in
omap_irq_soft_reset (0xc0a1b2c4) polling 0x48200014". It lives with the runner because it reads
nothing but the runner's result; the search scores from it, it never scores. Pure functions:
no I/O, and an address no symbol proves stays a bare address, never a guess.

A RunAnalysis keeps every hot loop the runner reported (the operators read them all); what is
said about a run, for people and as JSON, is explorer.runner.summary's.

The runner keeps a call stack per kernel thread. Where kernel_init (the thread that runs the
initcalls, then execs init) stands at the exit is named from its stack (`kernel_init_wait`): its
innermost frames, the initcall it is in, and the wait its frames show, told by the generic
kernel primitives it called (completions, sleeps, deferred probe) or by a polling loop the run
ended in. These are names of kernel mechanisms every board shares, never of a board's drivers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from explorer.corpus.initramfs import USERSPACE_MARKER
from explorer.firmware.model import SymbolTable
from explorer.runner.kernel_hooks import CONSOLE_INPUT, INITCALL_RUNNER
from explorer.runner.rehost_pb2 import ExitReason, Frame, HotLoop, RunResult

# Endings where the guest was still running when the run was stopped: what it was doing then,
# the loops on its call stack, is what the run ended in.
STUCK_ENDINGS = ("budget", "timeout")
# The milestone a run past user space reports at the first user-mode instruction
# (MachineConfig.past_user_space), where a run not past it ends with EXIT_USER_SPACE.
USER_SPACE_MILESTONE = "user_space"
# How much of the end of the log an analysis keeps.
LOG_TAIL_LINES = 10

# The thread init/main.c starts to run the initcalls and then exec init, and the function it runs
# them in: only kernel_init calls it, so a stack that holds it is kernel_init's even where the
# plugin's shadow stack starts below kernel_init itself.
KERNEL_INIT = "kernel_init"
KERNEL_INIT_FREEABLE = "kernel_init_freeable"
# A workqueue worker runs each work item through this (kernel/workqueue.c).
WORK_RUNNER = "process_one_work"
WORKER = "a worker"
# The runner's detail of a run it ended at the stuck-read limit (native/rehosting_machine/
# rehosting.c, end_run_if_stuck): the address read that many times, and the pc of the last read.
STUCK_DETAIL = re.compile(r"stuck: \d+ reads of (0x[0-9a-f]+)(?: \(last at pc (0x[0-9a-f]+)\))?")
# How a blocked thread gets off the CPU: the scheduler's own frames say how it waits, not what
# for (resume is MIPS's context switch, __switch_to ARM's).
SCHEDULER_FRAMES = frozenset(
    {
        "__switch_to",
        "resume",
        "__schedule",
        "schedule",
        "schedule_preempt_disabled",
        "preempt_schedule",
        "preempt_schedule_common",
        "preempt_schedule_irq",
        "preempt_schedule_notrace",
    }
)
# What a wait is, by the generic kernel primitive the thread called (name prefixes: compilers
# add suffixes such as .constprop.0). A completion sleeps through schedule_timeout, so a thread's
# wait is told by the outermost of the primitives it is in (`kernel_init_wait`).
WAIT_PRIMITIVES = (
    ("completion", ("wait_for_completion", "__wait_for_common", "wait_for_common", "do_wait_for_common")),
    ("sleep", ("msleep", "ssleep", "fsleep", "usleep_range", "schedule_timeout", "schedule_hrtimeout")),
    ("deferred probe", ("driver_deferred_probe", "deferred_probe", "wait_for_device_probe")),
)
SCHEDULE = "schedule"
# A thread switched out by a function that called the scheduler itself, no primitive of the
# above between: an open-coded wait (wait_event and its variants expand in the caller to
# prepare_to_wait_event + schedule, until the condition holds and a wake_up runs it again).
OPEN_CODED_WAIT = "event"
# A thread's frames anywhere in these are in the driver core's deferred probe.
DEFERRED_PROBE = dict(WAIT_PRIMITIVES)["deferred probe"]
# How many of a blocked thread's innermost frames (after the scheduler's) a summary names.
WAIT_FRAMES_SHOWN = 6


@dataclass(frozen=True)
class Place:
    """A code address and what the symbols say it is: "function+0xoffset", or None."""

    address: int
    function: str | None
    offset: int = 0

    def __str__(self) -> str:
        if self.function is None:
            return f"0x{self.address:x}"
        return self.function + (f"+0x{self.offset:x}" if self.offset else "")


@dataclass(frozen=True)
class NamedMilestone:
    name: str
    address: int
    icount: int


@dataclass(frozen=True)
class NamedInitcall:
    function: Place
    icount: int


@dataclass(frozen=True)
class NamedFrame:
    """One call stack frame: the function running, and where it will return to."""

    function: Place
    return_to: Place


@dataclass(frozen=True)
class NamedHotLoop:
    """A loop the guest spun in, the function it lies in, and the MMIO addresses it read."""

    start: Place
    end_pc: int
    iterations: int
    polled: tuple[int, ...]

    def sentence(self) -> str:
        where = self.start.function or "unknown code"
        polling = ", ".join(f"0x{address:x}" for address in self.polled)
        return (
            f"spins in {where} (0x{self.start.address:x}..0x{self.end_pc:x}, {self.iterations} iterations) "
            + (f"polling {polling}" if polling else "reading no MMIO")
        )


@dataclass(frozen=True)
class NamedThread:
    """One kernel thread's call stack at the exit, named; `stack` is its kernel stack's base."""

    stack: int
    frames: tuple[NamedFrame, ...]  # innermost first
    current: bool  # the thread that ran last


@dataclass(frozen=True)
class ThreadWait:
    """Where a kernel thread stood at the exit and what it waited for, as its frames tell."""

    thread: str  # "kernel_init"
    current: bool  # it ran last: the run ended while it ran
    frames: tuple[NamedFrame, ...]  # its stack without the scheduler's frames, innermost first
    # "completion", "sleep", "deferred probe", "stuck poll of 0x...": the primitives its frames
    # are in, the one it waits through first; empty when the frames name none.
    waits: tuple[str, ...]
    initcall: Place | None  # the initcall it is in: the innermost frame do_one_initcall called

    def sentence(self, stuck: bool) -> str:
        """ "kernel_init is blocked in: f <- g <- h (a completion; initcall foo_init)"."""
        chain = " <- ".join(str(frame.function) for frame in self.frames[:WAIT_FRAMES_SHOWN])
        notes = [f"waits: {', '.join(self.waits)}"] if self.waits else []
        if self.initcall is not None:
            notes.append(f"initcall {self.initcall}")
        verb = "is blocked in" if stuck else "was in"
        return f"{self.thread} {verb}: {chain or 'no frames'}" + (f" ({'; '.join(notes)})" if notes else "")


@dataclass(frozen=True)
class RunAnalysis:
    # "user_space", "panic", ...: ExitReason without its prefix, lower case; or "console_input"
    exit_reason: str
    exit_icount: int
    exit_detail: str
    partial_reason: str  # empty when the run ended on its own terms
    milestones: tuple[NamedMilestone, ...]
    initcalls: tuple[NamedInitcall, ...]
    call_stack: tuple[NamedFrame, ...]  # innermost first
    threads: tuple[NamedThread, ...]  # every kernel thread's stack the runner sent, in its order
    kernel_init: ThreadWait | None  # None: no stack holds kernel_init, or the run reached user space
    workers: tuple[ThreadWait, ...]  # workqueue workers busy with a work item (`busy_workers`)
    hot_loops: tuple[NamedHotLoop, ...]
    mmio_accesses: int  # all of them, including those the master did not keep
    coverage_instructions: int
    coverage_functions: int
    log_tail: tuple[str, ...]  # the last lines of the guest log, or of the console without one
    log_source: str  # "log", "console" or "" (neither was captured)


def reached_user_space(result: RunResult) -> bool:
    """The run executed a user-mode instruction: it ended there, or went on past it."""
    return result.exit.reason == ExitReason.EXIT_USER_SPACE or any(
        milestone.name == USER_SPACE_MILESTONE for milestone in result.milestones
    )


def reached_console(result: RunResult) -> bool:
    """User space printed the marker initramfs's line on the console (the first serial port)."""
    return USERSPACE_MARKER.encode() in result.console


def console_text(result: RunResult) -> str:
    """The console's bytes for people: invalid UTF-8 replaced, bytes left out marked."""
    text = result.console.decode("utf-8", "replace")
    if result.console_dropped:
        return text + f"\n[{result.console_dropped} console bytes left out of the middle]"
    return text


def place(address: int, symbols: SymbolTable) -> Place:
    """`address` named by the symbol whose code holds it; None outside the kernel's symbols."""
    if not symbols.symbols or address > symbols.symbols[-1].address:
        return Place(address, None)
    symbol = symbols.containing(address)
    if symbol is None:
        return Place(address, None)
    return Place(address, symbol.name, address - symbol.address)


def analyse(result: RunResult, symbols: SymbolTable) -> RunAnalysis:
    initcalls = tuple(NamedInitcall(place(call.address, symbols), call.icount) for call in result.initcalls)
    frames = _named_frames(result.call_stack.frames, symbols)
    threads = tuple(
        NamedThread(thread.stack, _named_frames(thread.frames, symbols), thread.current)
        for thread in result.threads
    )
    hot_loops = tuple(_named_loop(result, loop, symbols) for loop in result.hot_loops)
    log_source, log = ("log", result.log) if result.log else ("console", result.console)
    return RunAnalysis(
        exit_reason=_ending(result),
        exit_icount=result.exit.icount,
        exit_detail=result.exit.detail,
        partial_reason=result.partial_reason if result.partial else "",
        milestones=tuple(NamedMilestone(m.name, m.address, m.icount) for m in result.milestones),
        initcalls=initcalls,
        call_stack=frames,
        threads=threads,
        kernel_init=kernel_init_wait(result, frames, threads, hot_loops),
        workers=busy_workers(result, threads, hot_loops),
        hot_loops=hot_loops,
        mmio_accesses=len(result.mmio_accesses) + result.mmio_accesses_dropped,
        coverage_instructions=result.coverage.instructions,
        coverage_functions=result.coverage.functions,
        log_tail=_last_lines(log, LOG_TAIL_LINES),
        log_source=log_source if log else "",
    )


def _named_frames(frames: Iterable[Frame], symbols: SymbolTable) -> tuple[NamedFrame, ...]:
    return tuple(
        NamedFrame(place(frame.function, symbols), place(frame.return_address, symbols)) for frame in frames
    )


def kernel_init_wait(
    result: RunResult,
    call_stack: tuple[NamedFrame, ...],
    threads: tuple[NamedThread, ...],
    hot_loops: tuple[NamedHotLoop, ...],
) -> ThreadWait | None:
    """Where kernel_init stood at the exit: the thread whose frames hold kernel_init (as the
    function or the caller: ARM enters it from ret_from_fork by a plain branch, so no frame of
    it need exist). Results from before per-thread stacks have only the call stack, which is
    kernel_init's when it holds it. None for a run that reached user space (kernel_init has
    become init) and when no stack holds kernel_init.
    """
    if reached_user_space(result):
        return None
    stacks = [(thread.frames, thread.current) for thread in threads] or [(call_stack, True)]
    found = next(
        (
            (frames, current)
            for frames, current in stacks
            if _holds(frames, KERNEL_INIT) or _holds(frames, KERNEL_INIT_FREEABLE)
        ),
        None,
    )
    if found is None:
        return None
    frames, current = found
    return _thread_wait(KERNEL_INIT, frames, current, result, hot_loops)


def busy_workers(
    result: RunResult, threads: tuple[NamedThread, ...], hot_loops: tuple[NamedHotLoop, ...]
) -> tuple[ThreadWait, ...]:
    """Where the workqueue workers that were running a work item (process_one_work on their
    stack) stood at the exit: what kernel_init's flush_work or a deferred probe waits on. None
    for a run that reached user space."""
    if reached_user_space(result):
        return ()
    return tuple(
        _thread_wait(WORKER, thread.frames, thread.current, result, hot_loops)
        for thread in threads
        if _holds(thread.frames, WORK_RUNNER)
        and not _holds(thread.frames, KERNEL_INIT)
        and not _holds(thread.frames, KERNEL_INIT_FREEABLE)
    )


def _thread_wait(
    name: str,
    frames: tuple[NamedFrame, ...],
    current: bool,
    result: RunResult,
    hot_loops: tuple[NamedHotLoop, ...],
) -> ThreadWait:
    waiting = tuple(frame for frame in frames if frame.function.function not in SCHEDULER_FRAMES)
    waits = _waits(waiting)
    if not waits and _called_schedule(frames, waiting):
        waits = (OPEN_CODED_WAIT,)
    if current and _ending(result) in STUCK_ENDINGS:
        entries = {function_entry(frame.function) for frame in waiting} - {None}
        polls = [loop for loop in hot_loops if loop.polled and function_entry(loop.start) in entries]
        waits += tuple(
            "stuck poll of " + ", ".join(f"0x{address:x}" for address in loop.polled) for loop in polls[:1]
        )
    initcall = next(
        (frame.function for frame in waiting if frame.return_to.function == INITCALL_RUNNER), None
    )
    return ThreadWait(name, current, waiting, waits, initcall)


def _called_schedule(frames: tuple[NamedFrame, ...], waiting: tuple[NamedFrame, ...]) -> bool:
    """Was the thread switched out by its innermost waiting function calling schedule() itself
    (not preempted: preempt_schedule_irq's frames are the scheduler's too)?"""
    switched = len(frames) - len(waiting)
    return bool(waiting) and switched > 0 and frames[switched - 1].function.function == SCHEDULE


def _holds(frames: tuple[NamedFrame, ...], function: str) -> bool:
    return any(function in (frame.function.function, frame.return_to.function) for frame in frames)


def _wait_kind(function: str | None) -> str | None:
    for kind, prefixes in WAIT_PRIMITIVES:
        if function is not None and function.startswith(prefixes):
            return kind
    return None


def _waits(frames: tuple[NamedFrame, ...]) -> tuple[str, ...]:
    """The primitives a blocked thread waits through: the outermost of the wait primitives its
    innermost frames are in (schedule_timeout <- wait_for_completion is a completion), then
    deferred probe when an outer frame is the driver core's deferred probe."""
    kinds: list[str] = []
    for frame in frames:
        kind = _wait_kind(frame.function.function)
        if kind is None:
            break
        kinds.append(kind)
    waits = kinds[-1:]
    outer = frames[len(kinds) :]
    if "deferred probe" not in waits and any(
        (frame.function.function or "").startswith(DEFERRED_PROBE) for frame in outer
    ):
        waits.append("deferred probe")
    return tuple(waits)


# The faulting instruction of an oops: the parenthesised word(s) at the end of the "Code:" line
# (arch/arm/kernel/traps.c, dump_instr): one 32-bit word for A32 code, one or two halfwords for T32.
FAULTING_INSTRUCTION = re.compile(r"^Code: .*\(([0-9a-f]{4,8})(?: ([0-9a-f]{4}))?\)", re.MULTILINE)


@dataclass(frozen=True)
class FaultingInstruction:
    """The instruction the guest log's last oops faulted on, as the kernel printed it."""

    # An A32 word, or a T32 instruction's halfwords (one for a 16-bit instruction).
    a32: int | None = None
    t32: tuple[int, ...] = ()

    @property
    def t32_word(self) -> int | None:
        """A 32-bit T32 instruction as one word, first halfword high (None for 16-bit or A32)."""
        return (self.t32[0] << 16) | self.t32[1] if len(self.t32) == 2 else None


def faulting_instruction(log: str) -> FaultingInstruction | None:
    """The instruction of the guest log's last oops, None when no oops printed one."""
    found = list(FAULTING_INSTRUCTION.finditer(log))
    if not found:
        return None
    first, second = found[-1].groups()
    if len(first) == 8:
        return FaultingInstruction(a32=int(first, 16))
    return FaultingInstruction(t32=tuple(int(half, 16) for half in (first, second) if half))


@dataclass(frozen=True)
class StuckPoll:
    """The address a run ended reading at the stuck-read limit, and the pc of its last read."""

    address: int
    pc: int | None


def stuck_poll(detail: str) -> StuckPoll | None:
    """The poll an exit's detail names (the runner's stuck-read limit), None for any other detail."""
    found = STUCK_DETAIL.search(detail)
    if found is None:
        return None
    return StuckPoll(int(found.group(1), 16), int(found.group(2), 16) if found.group(2) else None)


def milestone_window(result: RunResult, name: str) -> tuple[int, int] | None:
    """Instruction counts from the milestone `name` to the next one (or the exit): what it ran,
    as MmioAccess.icount counts; None when the run has no such milestone."""
    milestones = sorted(result.milestones, key=lambda milestone: milestone.icount)
    start = next((milestone.icount for milestone in milestones if milestone.name == name), None)
    if start is None:
        return None
    end = next((milestone.icount for milestone in milestones if milestone.icount > start), result.exit.icount)
    return start, end or start


def polled_addresses(result: RunResult, start_pc: int, end_pc: int) -> tuple[int, ...]:
    """MMIO addresses read by instructions in [start_pc, end_pc], in the order first read."""
    polled: dict[int, None] = {}
    for access in result.mmio_accesses:
        if not access.is_write and start_pc <= access.pc <= end_pc:
            polled.setdefault(access.address)
    return tuple(polled)


def _named_loop(result: RunResult, loop: HotLoop, symbols: SymbolTable) -> NamedHotLoop:
    # The runner may already list reads; those seen by the master are added in first-read order.
    polled = dict.fromkeys([*loop.mmio_reads, *polled_addresses(result, loop.start_pc, loop.end_pc)])
    polled.update(dict.fromkeys(_reads_by_callees_at_exit(result, loop, symbols)))
    return NamedHotLoop(place(loop.start_pc, symbols), loop.end_pc, loop.iterations, tuple(polled))


def _reads_by_callees_at_exit(result: RunResult, loop: HotLoop, symbols: SymbolTable) -> tuple[int, ...]:
    """MMIO addresses the run kept reading at its end, when it ended spinning in this loop.

    A poll often reads through helpers (rockchip_pll_wait_lock -> regmap_read -> ...), so the
    read's pc is not in the loop. When a stuck run (STUCK_ENDINGS) has the loop's function on the
    call stack at the exit, the run ended in the loop, and the reads at the tail of the access
    stream (after the last write) that repeat are what it polls. Nothing is attributed when the run
    did not end in the loop, nor when it ended on its own terms (a boot to user space was not
    spinning, whatever its call stack holds).
    """
    if _ending(result) not in STUCK_ENDINGS:
        return ()
    loop_function = symbols.containing(loop.start_pc)
    on_stack = {symbols.containing(frame.function) for frame in result.call_stack.frames}
    if loop_function is None or loop_function not in on_stack:
        return ()
    tail: list[int] = []
    for access in reversed(result.mmio_accesses):
        if access.is_write:
            break
        tail.append(access.address)
    return tuple(address for address in dict.fromkeys(reversed(tail)) if tail.count(address) > 1)


def _ending(result: RunResult) -> str:
    """The exit reason without its prefix, lower case: "user_space", "budget", ...; a halt at the
    console_input hook (user space's first read of a terminal) is "console_input"."""
    if result.exit.reason == ExitReason.EXIT_HALT and result.exit.detail == CONSOLE_INPUT:
        return CONSOLE_INPUT
    return ExitReason.Name(result.exit.reason).removeprefix("EXIT_").lower()


def function_entry(code: Place) -> int | None:
    """The entry address of the function the symbols say holds `code`; None when none does."""
    return code.address - code.offset if code.function is not None else None


def _last_lines(text: bytes, count: int) -> tuple[str, ...]:
    lines = [line.rstrip() for line in text.decode(errors="replace").splitlines()]
    return tuple(line for line in lines if line)[-count:]
