"""Why a bench search stopped: its furthest run's ending, where the boot was, and a named cause.

A search that did not complete the boot stopped at some blocker; the bench groups firmware by
it (explorer.bench.report.why_stopped) so that work goes to the commonest blocker first. The
blocker is read off the search's furthest run (the best state's, explorer.search.findings.best_run)
and nothing else: its exit reason and the runner's detail, the call stacks at the exit, the MMIO
its loops polled, its milestones and initcalls, and its log for the fault behind a panic. Never
the firmware's name, never the board's: two firmware stuck the same way get the same kind.

The kind is the group (KINDS: "stuck polling MMIO", "idle, no timer armed", "panic", ...); the
cause is the kind with its place, for people ("stuck polling MMIO 0x48200014 in
omap_irq_soft_reset", "idle in kernel_init after 40 initcalls (last foo_init), no interrupt came;
kernel_init is blocked in: ... (waits: completion; initcall foo_init)").
Pure functions of the run; this module reads no store and runs nothing.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from explorer.firmware.model import SymbolTable
from explorer.runner.analysis import (
    RunAnalysis,
    analyse,
    place,
    reached_console,
    reached_user_space,
    stuck_poll,
)
from explorer.runner.kernel_hooks import CONSOLE_INPUT, MILESTONES
from explorer.runner.rehost_pb2 import RunResult
from explorer.runner.summary import explaining_loops
from explorer.search.engine import BOOT_COMPLETED as SEARCH_BOOT_COMPLETED
from explorer.search.engine import BUDGET_SPENT
from explorer.search.operators.nops import DYING, TRAMPOLINES, crash_of, is_panic_path

# The kinds of cause.
BOOT_COMPLETED = "boot completed"
SEARCH_ERROR = "search ended in an error"
CONFIG_REJECTED = "config rejected"
NO_RUN = "no run stored"
BUG = "BUG"
UNDEFINED_INSTRUCTION = "undefined instruction"
KERNEL_FAULT = "kernel fault (data abort)"
PREFETCH_ABORT = "prefetch abort"
PANIC = "panic"
STUCK_POLLING = "stuck polling MMIO"
IDLE_NO_TIMER = "idle, no timer armed"
IDLE_NO_INTERRUPT = "idle, no interrupt"
SPINNING = "spinning without MMIO"
SPINNING_MASKED = "spinning with interrupts masked"
EXCEPTION_LOOP = "looping in exceptions"
BUDGET_RUNNING = "instruction budget spent running"
TIMEOUT_RUNNING = "wall-clock deadline while running"
HALTED = "halted"
POWERED_OFF = "powered off before user space"
USER_SPACE = "user space reached, boot not completed"
CONSOLE = "console milestone reached, boot not completed"
QEMU_CRASHED = "QEMU crashed"
KILLED = "run killed"
KINDS = (
    BOOT_COMPLETED, SEARCH_ERROR, CONFIG_REJECTED, NO_RUN, BUG, UNDEFINED_INSTRUCTION, KERNEL_FAULT,
    PREFETCH_ABORT, PANIC, STUCK_POLLING, IDLE_NO_TIMER, IDLE_NO_INTERRUPT, SPINNING, SPINNING_MASKED,
    EXCEPTION_LOOP, BUDGET_RUNNING, TIMEOUT_RUNNING, HALTED, POWERED_OFF, USER_SPACE, CONSOLE, QEMU_CRASHED,
    KILLED,
)  # fmt: skip

# The runner's details (native/rehosting_machine/rehosting_clock.c) of an idle CPU with no timer
# armed (otherwise an idle CPU whose timer never interrupted it), and the plugin's
# (native/rehost_plugin/spin.c) of a wait for an event nothing can end, (exceptions.c) of
# exceptions with no instruction executed between them; a poll no value satisfied is
# explorer.runner.analysis.stuck_poll's.
_SPIN_DETAIL = re.compile(r"spin: \d+ waits for an event at pc (0x[0-9a-f]+) with interrupts masked")
_EXCEPTION_LOOP_DETAIL = "exceptions:"
_IDLE_DETAIL = "idle:"
_NO_TIMER_DETAIL = "no timer armed"
# The fault behind a crash, from its call stack (ARM exception entries, their C handlers, the
# MIPS reserved-instruction trap) or, failing that, from the oops line of its log.
_FAULT_FRAMES = (
    (UNDEFINED_INSTRUCTION, ("__und_", "do_undefinstr", "do_ri", "handle_ri")),
    (KERNEL_FAULT, ("__dabt_", "do_DataAbort", "do_page_fault", "do_translation_fault", "handle_tlb")),
    (PREFETCH_ABORT, ("__pabt_", "do_PrefetchAbort")),
)
_BUG_LINE = "kernel BUG at "  # a BUG() traps through the undefined-instruction path: told first
_FAULT_LINES = (
    (UNDEFINED_INSTRUCTION, "undefined instruction"),
    (KERNEL_FAULT, "Unable to handle kernel "),
)
# The milestone during which the initcalls run: the last initcall is where a boot that got no
# further was.
_INITCALL_MILESTONE = "kernel_init"


@dataclass(frozen=True)
class StopCause:
    """Why one search stopped, named from its furthest run."""

    kind: str  # one of KINDS: what the bench groups by
    cause: str  # the kind with its place, one line for people
    exit: str | None  # the furthest run's exit reason ("budget", "panic", ...); None without a run
    detail: str  # the runner's detail of that exit
    milestone: str | None  # the furthest milestone that run reached
    function: str | None  # where it stopped: the failing, stuck or innermost function
    initcall: str | None  # the initcall it was in, when it stopped during the initcalls
    polled: tuple[str, ...] = ()  # the MMIO addresses it was stuck polling

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "polled": list(self.polled)}


def search_error(message: str) -> StopCause:
    """A search that raised instead of stopping: the machine refused a config, or another error."""
    kind = CONFIG_REJECTED if message.startswith("config") else SEARCH_ERROR
    return StopCause(kind, f"{kind}: {message}", None, message, None, None, None)


def stop_cause(ended: str, result: RunResult | None, symbols: SymbolTable) -> StopCause:
    """Why a search that ended `ended` (explorer.search.engine.Search.run's answer) stopped,
    `result` being its furthest run's (None: it stored no run)."""
    if result is None:
        # The search stores only finished runs: its first ran past the whole budget.
        cause = f"{NO_RUN}: the first run outlasted the search's budget" if ended == BUDGET_SPENT else NO_RUN
        return StopCause(NO_RUN, cause, None, "", None, None, None)
    analysis = analyse(result, symbols)
    reached = {milestone.name for milestone in analysis.milestones}
    during_initcalls = _furthest(reached) == _INITCALL_MILESTONE
    facts = {
        "exit": analysis.exit_reason,
        "detail": analysis.exit_detail,
        "milestone": _furthest(reached),
        "initcall": str(analysis.initcalls[-1].function) if analysis.initcalls and during_initcalls else None,
    }
    if ended == SEARCH_BOOT_COMPLETED:
        return StopCause(BOOT_COMPLETED, BOOT_COMPLETED, function=None, **facts)
    kind, function, polled = _named(result, analysis, symbols)
    cause = _sentence(kind, function, polled, analysis, facts)
    return StopCause(kind, cause, function=function, polled=polled, **facts)


def _furthest(reached: set[str]) -> str | None:
    return next((name for name in reversed(MILESTONES) if name in reached), None)


def _named(
    result: RunResult, analysis: RunAnalysis, symbols: SymbolTable
) -> tuple[str, str | None, tuple[str, ...]]:
    """The kind, the function it happened in, and the addresses polled."""
    reason = analysis.exit_reason
    names = [frame.function.function for frame in analysis.call_stack]
    crash = crash_of(result, symbols)
    if reason == "panic" or any(name in DYING for name in names):
        where = next((name for _, name in crash.frames if name), None) if crash else _innermost(names)
        return _fault(names, analysis), where, ()
    stuck = stuck_poll(analysis.exit_detail)
    if stuck:
        where = place(stuck.pc, symbols).function if stuck.pc is not None else _innermost(names)
        return STUCK_POLLING, where or _innermost(names), (f"0x{stuck.address:x}",)
    spin = _SPIN_DETAIL.search(analysis.exit_detail)
    if spin:
        return SPINNING_MASKED, place(int(spin.group(1), 16), symbols).function or _innermost(names), ()
    if analysis.exit_detail.startswith(_EXCEPTION_LOOP_DETAIL):
        # A crash's loop (a BUG before the vectors are mapped) was named above, by its crash.
        return EXCEPTION_LOOP, _innermost(names), ()
    if analysis.exit_detail.startswith(_IDLE_DETAIL):
        kind = IDLE_NO_TIMER if _NO_TIMER_DETAIL in analysis.exit_detail else IDLE_NO_INTERRUPT
        return kind, None, ()
    if reason in ("budget", "timeout"):
        ended_in = [loop for loop in explaining_loops(analysis) if loop.ended_in]
        polling = next((loop for loop in ended_in if loop.loop.polled), None)
        if polling is not None:
            polled = tuple(f"0x{address:x}" for address in polling.loop.polled)
            return STUCK_POLLING, polling.loop.start.function, polled
        if ended_in:
            return SPINNING, ended_in[0].loop.start.function, ()
        return (BUDGET_RUNNING if reason == "budget" else TIMEOUT_RUNNING), _innermost(names), ()
    if reason == CONSOLE_INPUT:
        # User space waited for console input (the marker initramfs's shell does, after its line).
        return (CONSOLE if reached_console(result) else USER_SPACE), _innermost(names), ()
    if reached_user_space(result):
        # A run past user space (MachineConfig.past_user_space) that ended without the marker on
        # the console: init powered off or halted after user space, not before it.
        return USER_SPACE, _innermost(names), ()
    plain = {"halt": HALTED, "poweroff": POWERED_OFF, "user_space": USER_SPACE, "crashed": QEMU_CRASHED}
    return plain.get(reason, KILLED), _innermost(names), ()


def _fault(names: list[str | None], analysis: RunAnalysis) -> str:
    """What a crashed run died of: a BUG(), the fault its stack shows, its log's oops line, or a panic."""
    log = "\n".join((*analysis.log_tail, analysis.exit_detail))
    if _BUG_LINE in log:
        return BUG
    for kind, prefixes in _FAULT_FRAMES:
        if any(name and name.startswith(prefixes) for name in names):
            return kind
    return next((kind for kind, line in _FAULT_LINES if line in log), PANIC)


def _innermost(names: list[str | None]) -> str | None:
    """The innermost named frame that is the kernel's own code (not its panic path or ftrace's stubs)."""
    return next((n for n in names if n and not is_panic_path(n) and n not in TRAMPOLINES), None)


def _sentence(
    kind: str, function: str | None, polled: tuple[str, ...], analysis: RunAnalysis, facts: dict[str, Any]
) -> str:
    if kind in (IDLE_NO_TIMER, IDLE_NO_INTERRUPT):
        where = f"idle in {facts['milestone'] or 'early boot'}"
        if facts["initcall"]:
            where += f" after {len(analysis.initcalls)} initcalls (last {facts['initcall']})"
        waiting = "no timer armed" if kind == IDLE_NO_TIMER else "no interrupt came"
        # kernel_init's own stack (the idle task ran last) says what it waits for.
        blocked = f"; {analysis.kernel_init.sentence(stuck=True)}" if analysis.kernel_init else ""
        return f"{where}, {waiting}{blocked}"
    place_ = f" in {function}" if function else f" at {facts['milestone'] or 'no milestone'}"
    if kind == STUCK_POLLING:
        return f"stuck polling MMIO {', '.join(polled)}{place_}"
    if kind == PANIC and analysis.exit_detail:
        return f"panic{place_}: {analysis.exit_detail.strip()}"
    return f"{kind}{place_}"
