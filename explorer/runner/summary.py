"""What is said about an analysed run: lines for people (`describe`) and JSON (`to_dict`).

A RunAnalysis (explorer.runner.analysis) keeps every hot loop the runner reported; what is said
about a run lists only the loops that explain it (`explaining_loops`): the loop a stuck run ended
in, and loops that read a device. A boot runs many loops a million times that only compute
(copying, clearing, bignum arithmetic, decompressing); those are counted, not listed. The choice
rests on what the run observed, never on a function's name. Pure functions of the analysis: no
I/O, no scoring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from explorer.runner.analysis import STUCK_ENDINGS, NamedHotLoop, RunAnalysis, ThreadWait, function_entry

# How many of the last initcalls a summary shows.
LAST_INITCALLS = 5


@dataclass(frozen=True)
class ExplainingLoop:
    """A hot loop a report lists, and why: the run ended in it, it reads a device, or both."""

    loop: NamedHotLoop
    ended_in: bool
    polls_device: bool

    @property
    def kinds(self) -> tuple[str, ...]:
        return (("ended-in",) if self.ended_in else ()) + (("polls-device",) if self.polls_device else ())


def explaining_loops(analysis: RunAnalysis) -> tuple[ExplainingLoop, ...]:
    """The hot loops that explain the run, in the runner's order: those a stuck run (budget,
    timeout) ended in, i.e. whose function is on the call stack at the exit, and those that read
    MMIO. A loop that touched no device in a run that did not end in it only computed.

    Which function holds a loop is what the symbols prove: without them (or outside them) no loop
    is known to be on the call stack, and only the loops that read a device are listed.
    """
    stuck = analysis.exit_reason in STUCK_ENDINGS
    on_stack = {function_entry(frame.function) for frame in analysis.call_stack} if stuck else set()
    on_stack.discard(None)
    listed = (
        ExplainingLoop(loop, function_entry(loop.start) in on_stack, bool(loop.polled))
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
    stuck = analysis.exit_reason in STUCK_ENDINGS
    if analysis.kernel_init is not None:
        lines.append(analysis.kernel_init.sentence(stuck))
    lines += [worker.sentence(stuck) for worker in analysis.workers]
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
        **thread_waits_to_dict(analysis),
        "threads": [
            {
                "stack": f"0x{thread.stack:x}",
                "current": thread.current,
                "frames": [f"{frame.function} <- {frame.return_to}" for frame in thread.frames],
            }
            for thread in analysis.threads
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


def thread_waits_to_dict(analysis: RunAnalysis) -> dict[str, Any]:
    """Where kernel_init stood at the exit (`kernel_init_wait`; None when unknown) and the busy
    workers (`busy_workers`), JSON-able."""
    stuck = analysis.exit_reason in STUCK_ENDINGS

    def as_dict(wait: ThreadWait) -> dict[str, Any]:
        return {
            "summary": wait.sentence(stuck),
            "current": wait.current,
            "waits": list(wait.waits),
            "initcall": str(wait.initcall) if wait.initcall is not None else None,
            "frames": [
                {"function": str(frame.function), "return_to": str(frame.return_to)} for frame in wait.frames
            ],
        }

    return {
        "kernel_init": as_dict(analysis.kernel_init) if analysis.kernel_init is not None else None,
        "busy_workers": [as_dict(worker) for worker in analysis.workers],
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
