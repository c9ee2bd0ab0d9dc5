"""What a run observed, named with the firmware's symbols: where it got, where it stopped, what it polled.

The runner reports addresses; people and the search read functions. This turns a RunResult and
the kernel's SymbolTable into named facts (milestones, initcalls, the call stack at the exit,
hot loops with the MMIO addresses read inside them) and into lines such as "spins in
omap_irq_soft_reset (0xc0a1b2c4) polling 0x48200014". It lives with the runner because it reads
nothing but the runner's result; the search scores from it, it never scores. Pure functions:
no I/O, and an address no symbol proves stays a bare address, never a guess.

A RunAnalysis keeps every hot loop the runner reported (the operators read them all); what is
said about a run (`describe`, `to_dict`) lists only the loops that explain it (`explaining_loops`):
the loop a stuck run ended in, and loops that read a device. A boot runs many loops a million
times that only compute (copying, clearing, bignum arithmetic, decompressing); those are counted,
not listed. The choice rests on what the run observed, never on a function's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from explorer.firmware.model import SymbolTable
from explorer.runner.rehost_pb2 import ExitReason, HotLoop, RunResult

# Endings where the guest was still running when the run was stopped: what it was doing then,
# the loops on its call stack, is what the run ended in.
STUCK_ENDINGS = ("budget", "timeout")
# How much of the end of a run a summary shows.
LAST_INITCALLS = 5
LOG_TAIL_LINES = 10


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
class ExplainingLoop:
    """A hot loop a report lists, and why: the run ended in it, it reads a device, or both."""

    loop: NamedHotLoop
    ended_in: bool
    polls_device: bool

    @property
    def kinds(self) -> tuple[str, ...]:
        return (("ended-in",) if self.ended_in else ()) + (("polls-device",) if self.polls_device else ())


@dataclass(frozen=True)
class RunAnalysis:
    exit_reason: str  # "user_space", "panic", ...: ExitReason without its prefix, lower case
    exit_icount: int
    exit_detail: str
    partial_reason: str  # empty when the run ended on its own terms
    milestones: tuple[NamedMilestone, ...]
    initcalls: tuple[NamedInitcall, ...]
    call_stack: tuple[NamedFrame, ...]  # innermost first
    hot_loops: tuple[NamedHotLoop, ...]
    mmio_accesses: int  # all of them, including those the master did not keep
    coverage_instructions: int
    coverage_functions: int
    log_tail: tuple[str, ...]  # the last lines of the guest log, or of the console without one
    log_source: str  # "log", "console" or "" (neither was captured)


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
    frames = tuple(
        NamedFrame(place(frame.function, symbols), place(frame.return_address, symbols))
        for frame in result.call_stack.frames
    )
    log_source, log = ("log", result.log) if result.log else ("console", result.console)
    return RunAnalysis(
        exit_reason=_ending(result),
        exit_icount=result.exit.icount,
        exit_detail=result.exit.detail,
        partial_reason=result.partial_reason if result.partial else "",
        milestones=tuple(NamedMilestone(m.name, m.address, m.icount) for m in result.milestones),
        initcalls=initcalls,
        call_stack=frames,
        hot_loops=tuple(_named_loop(result, loop, symbols) for loop in result.hot_loops),
        mmio_accesses=len(result.mmio_accesses) + result.mmio_accesses_dropped,
        coverage_instructions=result.coverage.instructions,
        coverage_functions=result.coverage.functions,
        log_tail=_last_lines(log, LOG_TAIL_LINES),
        log_source=log_source if log else "",
    )


def polled_addresses(result: RunResult, start_pc: int, end_pc: int) -> tuple[int, ...]:
    """MMIO addresses read by instructions in [start_pc, end_pc], in the order first read."""
    polled: dict[int, None] = {}
    for access in result.mmio_accesses:
        if not access.is_write and start_pc <= access.pc <= end_pc:
            polled.setdefault(access.address)
    return tuple(polled)


def explaining_loops(analysis: RunAnalysis) -> tuple[ExplainingLoop, ...]:
    """The hot loops that explain the run, in the runner's order: those a stuck run (budget,
    timeout) ended in, i.e. whose function is on the call stack at the exit, and those that read
    MMIO. A loop that touched no device in a run that did not end in it only computed.

    Which function holds a loop is what the symbols prove: without them (or outside them) no loop
    is known to be on the call stack, and only the loops that read a device are listed.
    """
    stuck = analysis.exit_reason in STUCK_ENDINGS
    on_stack = {_function_entry(frame.function) for frame in analysis.call_stack} if stuck else set()
    on_stack.discard(None)
    listed = (
        ExplainingLoop(loop, _function_entry(loop.start) in on_stack, bool(loop.polled))
        for loop in analysis.hot_loops
    )
    return tuple(loop for loop in listed if loop.ended_in or loop.polls_device)


def describe(analysis: RunAnalysis) -> list[str]:
    """The run for people: how it ended, how far it got, where it stopped."""
    lines = [
        f"exit: {analysis.exit_reason}"
        + (f" at insn {analysis.exit_icount}" if analysis.exit_icount else "")
        + (f": {analysis.exit_detail}" if analysis.exit_detail else "")
    ]
    if analysis.partial_reason:
        lines.append(f"partial: {analysis.partial_reason}")
    if analysis.milestones:
        lines.append("milestones: " + " -> ".join(milestone.name for milestone in analysis.milestones))
    lines.append(f"initcalls: {len(analysis.initcalls)}")
    for call in analysis.initcalls[-LAST_INITCALLS:]:
        lines.append(f"  {call.function} (0x{call.function.address:x}) at insn {call.icount}")
    if analysis.call_stack:
        lines.append("call stack at exit (innermost first):")
        lines += [f"  {frame.function} <- {frame.return_to}" for frame in analysis.call_stack]
    listed = explaining_loops(analysis)
    lines += [f"hot loop ({', '.join(loop.kinds)}): {loop.loop.sentence()}" for loop in listed]
    if computing := len(analysis.hot_loops) - len(listed):
        lines.append(
            f"hot loops: {computing} computation loops not shown (no MMIO read, not where the run ended)"
        )
    if analysis.mmio_accesses:
        lines.append(f"mmio accesses: {analysis.mmio_accesses}")
    if analysis.coverage_instructions:
        covered = f"{analysis.coverage_instructions} instructions, {analysis.coverage_functions} functions"
        lines.append(f"coverage: {covered}")
    if analysis.log_tail:
        lines.append(f"{analysis.log_source} tail:")
        lines += [f"  | {line}" for line in analysis.log_tail]
    return lines


def to_dict(analysis: RunAnalysis) -> dict[str, Any]:
    """JSON-able form; addresses as "0x..." strings, as configs spell them."""
    return {
        "exit": {
            "reason": analysis.exit_reason,
            "icount": analysis.exit_icount,
            "detail": analysis.exit_detail,
        },
        "partial_reason": analysis.partial_reason,
        "milestones": [
            {"name": m.name, "address": f"0x{m.address:x}", "icount": m.icount} for m in analysis.milestones
        ],
        "initcalls": [
            {"function": str(call.function), "address": f"0x{call.function.address:x}", "icount": call.icount}
            for call in analysis.initcalls
        ],
        "call_stack": [
            {
                "function": str(frame.function),
                "address": f"0x{frame.function.address:x}",
                "return_to": str(frame.return_to),
                "return_address": f"0x{frame.return_to.address:x}",
            }
            for frame in analysis.call_stack
        ],
        **hot_loops_to_dict(analysis),
        "mmio_accesses": analysis.mmio_accesses,
        "coverage": {
            "instructions": analysis.coverage_instructions,
            "functions": analysis.coverage_functions,
        },
        "log_source": analysis.log_source,
        "log_tail": list(analysis.log_tail),
    }


def hot_loops_to_dict(analysis: RunAnalysis) -> dict[str, Any]:
    """The loops that explain the run (`explaining_loops`), each with its kinds ("ended-in",
    "polls-device"), and how many computation loops were left out; JSON-able."""
    listed = explaining_loops(analysis)
    return {
        "hot_loops": [
            {
                "function": loop.loop.start.function,
                "start_pc": f"0x{loop.loop.start.address:x}",
                "end_pc": f"0x{loop.loop.end_pc:x}",
                "iterations": loop.loop.iterations,
                "polled": [f"0x{address:x}" for address in loop.loop.polled],
                "kinds": list(loop.kinds),
                "summary": loop.loop.sentence(),
            }
            for loop in listed
        ],
        "computation_loops_not_shown": len(analysis.hot_loops) - len(listed),
    }


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
    """The exit reason without its prefix, lower case: "user_space", "budget", ..."""
    return ExitReason.Name(result.exit.reason).removeprefix("EXIT_").lower()


def _function_entry(code: Place) -> int | None:
    """The entry address of the function the symbols say holds `code`; None when none does."""
    return code.address - code.offset if code.function is not None else None


def _last_lines(text: bytes, count: int) -> tuple[str, ...]:
    lines = [line.rstrip() for line in text.decode(errors="replace").splitlines()]
    return tuple(line for line in lines if line)[-count:]
