"""The propose phase: the operators turn a state and its lineage into children, tier by tier.

First the structural operators (device discovery from the device tree and from ISA ports, value
collapse, a tick on the GIC input of a timer without a model or on the CPU's line beside a
controller without one, for a run that idled with no timer armed; the pins of the likeliest
clock event's interrupt for a ticking run; lpj= for a run stuck calibrating the delay loop);
only when they have nothing new is the state *stalled*, and the cheap fixes (the other kernel
arguments, a timer tick on the CPU's line for any other stall, the other timers' pins, a timer
counter, a tick on the GIC input of a device whose driver waits for its interrupt) are asked,
and only when those have
nothing either, the searches that cost a generation of 30+ runs (bitwise values, NOP
escalation): as the original design does, a spin loop or a panic is examined once nothing
simpler is left. Every child is checked here, once for all operators, as the runner would check
it (explorer.runner.config.validate of its bootable config): one no runner would boot is
*dropped*, kept with the check's one line and never booted, and counts as nothing new (a tier
that proposed only dropped children hands on to the next).

Invariant: no proposal ends a search. Proposing never runs anything and never writes the store
(explorer.search.engine commits what it returns); it only asks whether a state is stored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from explorer.errors import BadInput
from explorer.firmware.model import Firmware
from explorer.runner.config import validate
from explorer.search.operators import (
    Child,
    Context,
    Operator,
    bitwise,
    collapse,
    console_sink,
    device_interrupts,
    devices,
    firmware_calls,
    interrupt_pins,
    interrupts,
    isa,
    kernel_arguments,
    nops,
    reseed,
    secure_world,
    timer_counters,
    timer_interrupts,
    traced_interrupts,
)
from explorer.search.state import State, Target, bootable, state_id


@dataclass(frozen=True)
class OperatorPhases:
    # Asked first, for every state.
    structural: tuple[Operator, ...] = (
        firmware_calls.propose,
        secure_world.propose,
        interrupt_pins.propose,
        traced_interrupts.propose_pin,
        devices.propose,
        isa.propose,
        console_sink.propose,
        collapse.propose,
        timer_interrupts.propose,
        kernel_arguments.propose_calibration,
        interrupts.propose_when_idle,
    )
    # Asked in turn while the tiers before have nothing new for a state (which is then stalled).
    stall_tiers: tuple[tuple[Operator, ...], ...] = (
        (
            kernel_arguments.propose,
            interrupts.propose,
            interrupt_pins.propose_others,
            traced_interrupts.propose_tick,
            timer_counters.propose,
            device_interrupts.propose,
        ),
        (bitwise.propose, nops.propose),
        (reseed.propose,),
    )


@dataclass(frozen=True)
class Dropped:
    """A proposed child no runner would boot, and why (explorer.runner.config.validate's line)."""

    child: Child
    why: str


@dataclass(frozen=True)
class Proposal:
    """What expanding a state proposed: children to boot, children dropped, and whether the
    structural operators had nothing new for it (it is stalled)."""

    children: list[Child]
    dropped: list[Dropped]
    stalled: bool


def propose(
    context: Context, phases: OperatorPhases, stored: Callable[[str], bool], max_children: int
) -> Proposal:
    """What expanding `context`'s state proposes: at most `max_children` new bootable children of
    the first tier that has any; `stored` says which state ids the store holds (nothing new)."""
    dropped: dict[str, Dropped] = {}
    children = _new_children(context, phases.structural, dropped, stored, max_children)
    if children:
        return Proposal(children, list(dropped.values()), stalled=False)
    for tier in phases.stall_tiers:
        children = _new_children(context, tier, dropped, stored, max_children)
        if children:
            break
    return Proposal(children, list(dropped.values()), stalled=True)


def _new_children(
    context: Context,
    operators: Sequence[Operator],
    dropped: dict[str, Dropped],
    stored: Callable[[str], bool],
    max_children: int,
) -> list[Child]:
    """Bootable children not stored yet, each once, in the order proposed, at most
    `max_children`; those no runner would boot go into `dropped` (by state id) instead."""
    seen: set[str] = set()
    fresh: list[Child] = []
    for operator in operators:
        for child in operator(context):
            identity = state_id(child.state)
            # A stored state was booted, or dropped: either way, it is nothing new.
            if identity in seen or identity in dropped or stored(identity):
                continue
            why = unbootable(child.state, context.target, context.firmware)
            if why is not None:
                dropped[identity] = Dropped(child, why)
                continue
            seen.add(identity)
            fresh.append(child)
    return fresh[:max_children]


def unbootable(state: State, target: Target, firmware: Firmware) -> str | None:
    """Why no runner would boot `state` (the one line of explorer.runner.config.validate, which
    every runner asks before it starts QEMU), or None when one would."""
    try:
        validate(bootable(state, target, firmware))
    except BadInput as error:
        return str(error)
    return None
