"""Reseed: another draw of the value model's random answers, once nothing else is left for a state.

The mechanism: drivers poll status registers (a ready bit, a busy bit, two reads of a clock that
must agree) and take branches on ID and configuration registers; a register without a rule
answers a value drawn from (seed, address, position of the access), so one draw satisfies some
polls and probes and not others. The operators that follow a run read what that draw did (a
stuck poll for the bitwise search, a panic for NOPs); when none of them has anything left for a
state, the same machine under another seed is a different boot of the same kernel: other polls
pass, other probes fail. Measured on the development set (BENCHMARKS.md, "The bench"): with
seed 1 or 2 the initial state alone reaches user space on cubieboard2 and rk3288-tinker, where
seed 0 needs 3 to 40 runs.

The same holds for a run that reached user space with its console UART placed and wired and
nothing at all on its console, not even the kernel's log: the console driver never registered its
port, because its probe failed under this draw. Seen on OMAP4 (armmp's omap-serial): ti-sysc
probes the UART's interconnect module first, enabling its clock through the clkctrl driver
(_omap4_clkctrl_clk_enable polls the register's IDLEST field) and resetting it (sysc_reset
polls SYSSTATUS), each poll bounded by a timeout read from the clocksource (ktime_get); where the
clocksource's counter register has no rule its reads are random too, so time jumps and a poll
times out after a read or two whatever the status says: about one module in four fails to
probe, the console's UART among them under some draws. Another draw probes another set.

When: only in the last stall tier (every other operator had nothing new for the state), for a
state whose unruled reads are random, whose run ended waiting (out of instructions or time: a
poll, an idle wait; a panic is the NOP operator's), or reached user space with a silent console
UART (above), after reading at least one address without a
rule (else another seed boots the same run); at most RESEEDS
draws along the lineage an operator sees (explorer.search.engine.LINEAGE_DEPTH). The child's
seed is its parent's plus one, modulo 2**64 (a child inherits its parent's seed, so seeds only grow along a
lineage), so a search stays a function of its own seed.

Invariants: never modifies the given states; changes nothing but the seed (rules, devices and
NOPs stay: what the search learned holds under any draw).
"""

from __future__ import annotations

from explorer.runner.analysis import reached_user_space
from explorer.runner.rehost_pb2 import RunResult
from explorer.search.console import console_interrupt_wired
from explorer.search.operators import Child, Context
from explorer.search.operators.kernel_arguments import STUCK_ENDINGS
from explorer.search.state import State, derive

OPERATOR = "reseed"
# Draws after the first along one lineage: each reseeded state is explored again by every
# operator, so the cost of a draw is a subtree; three keep it a small multiple of the search.
RESEEDS = 3
# MachineConfig.seed is a uint64: the next seed after the largest is 0.
SEEDS = 2**64


def propose(context: Context) -> list[Child]:
    current = context.current
    if not current.state.random_unruled_reads:
        return []
    if reached_user_space(current.result):
        if not console_silent(current.state, current.result):
            return []
    elif current.result.exit.reason not in STUCK_ENDINGS:
        return []
    if not read_at_random(current.state, current.result):
        return []
    draws = len({evaluated.state.seed for evaluated in context.lineage}) - 1
    if draws >= RESEEDS:
        return []
    seed = (current.state.seed + 1) % SEEDS

    def redraw(state: State) -> None:
        state.seed = seed

    why = (
        "user space ran, but its console UART printed nothing (its driver never registered the port)"
        if reached_user_space(current.result)
        else "nothing else is left to try here"
    )
    reason = f"{why}: the same machine with seed {seed}, another draw of the random answers to unruled reads"
    return [Child(derive(current.state, redraw), OPERATOR, reason, {"seed": seed})]


def console_silent(state: State, result: RunResult) -> bool:
    """Did the run leave the console UART it places and wires (or its sink) without a byte?"""
    return not result.console and (console_interrupt_wired(state) or state.console_sink != 0)


def read_at_random(state: State, result: RunResult) -> bool:
    """Did the run read an address without a rule (one the seed answers)?"""
    ruled = {rule.address for rule in state.mmio_rules}
    return any(not access.is_write and access.address not in ruled for access in result.mmio_accesses)
