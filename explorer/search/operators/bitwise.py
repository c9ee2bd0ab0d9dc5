"""Bitwise value search: for a run that ended spinning on a device register, try its bits.

The original design's answer to a driver waiting for a status bit nobody models: when a run
ends spinning in a loop that polls MMIO, propose one child per bit of the polled register (the
register reads 1 << b), plus all zero and all ones, all in one generation, so the engine boots
them side by side and the winning value is whichever child gets further.

Which loop: the one the run ended in, i.e. a hot loop whose function is on the call stack at
the exit of a run that ran out of instructions or time (`final_spin`). Its polled addresses are
explorer.runner.analysis's (reads inside the loop, and reads by callees at the end of the run).

Which register: one per generation, the first polled address not searched yet for this loop.
The engine boots at most `max_children` (40) children per generation: one 32-bit register's 34
fit, two registers' 68 would be cut in the middle of the second (a 64-bit register's 66 are
cut after bit 37: zero and ones come first). Further registers come from narrowing, below.

Which rule: a `constant`, or `forced_bits` (the searched bits forced on, every other bit the
driver's last write) when the driver wrote the register before it last read it. A driver that
writes a register it polls keeps its own settings there (enable bits, a mode, a reset request),
and often checks them when it reads back; a constant would clobber them and fail a check that
has nothing to do with the bit being searched. All zero and all ones are constants: they are
the values of every bit at once.

Narrowing, when the state being expanded came from a bitwise child (its lineage says which
loop, register and value; other operators' children in between, such as value collapse, are
looked through):
  moved on    it spins in another loop, or the same code polling other registers: the value
              that won stays in the state, and the new spin gets a fresh search;
  new poll    same loop, and it now polls an address it did not poll when the value was chosen:
              the value let the driver further through the loop's body, so keep it and search
              that address;
  pairs       same loop, a single bit b was tried, and an address the loop polled before is
              no longer polled: bit b changed a branch without ending the loop, so one bit is
              not enough: try b with each other bit (pairs proposed from both of their bits'
              children are the same state: the store keeps one);
  next        same loop, no new poll, and the all-zero child is expanded: the condition is
              not on this register alone, so search the next polled address not searched yet,
              this one staying zero (most registers' reset value). Only the all-zero child does
              this, so that the next register is searched once, not once per sibling;
  dead end    otherwise: this value changed nothing, and its siblings cover the other values.

Invariants: never modifies the states it is given; each child differs from the expanded state
only in the rule at the searched address (replaced in place when there is one, so the same
value reached from two siblings is the same state); at most width + 2 children per proposal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from explorer.firmware.model import SymbolTable
from explorer.runner.analysis import NamedHotLoop, analyse
from explorer.runner.machine_config_pb2 import ForcedBits, MmioRule
from explorer.runner.rehost_pb2 import ExitReason, RunResult
from explorer.search.operators import Child, Context, Evaluated
from explorer.search.state import State, derive

OPERATOR = "bitwise"
# Runs that did not end on their own: only these can have ended spinning.
_UNFINISHED = (ExitReason.EXIT_BUDGET, ExitReason.EXIT_TIMEOUT)
# Width of a register whose reads were not kept (the runner names it, no access shows its
# size): a word, what readl reads.
DEFAULT_REGISTER_BYTES = 4


def propose(context: Context) -> list[Child]:
    """Children trying values of a register the expanded run ended polling (see the module's phases)."""
    current = context.current
    spin = final_spin(current.result, context.firmware.symbols)
    if spin is None:
        return []
    history = _search_history(context.lineage, spin)
    searched = {int(made_by.detail["address"]) for made_by in history}
    unsearched = [address for address in spin.polled if address not in searched]
    if not history:
        return [*_steady(current, spin), *_register_search(current, spin, unsearched[0], "")]
    latest = history[0].detail
    polled_before = [int(address) for address in latest["polled"]]
    new_polls = [address for address in unsearched if address not in polled_before]
    if new_polls:
        return _register_search(
            current, spin, new_polls[0], f"with {_choice(latest)} it also polls 0x{new_polls[0]:x}; "
        )
    vanished = [address for address in polled_before if address not in spin.polled]
    if latest["kind"] == "bit" and vanished:
        return _pairs(current, spin, latest, vanished)
    if latest["kind"] == "zero" and unsearched:
        return _register_search(
            current, spin, unsearched[0], f"{_choice(latest)} did not end the loop, so the next register; "
        )
    return []


def final_spin(result: RunResult, symbols: SymbolTable) -> NamedHotLoop | None:
    """The MMIO-polling loop the run ended in: a hot loop with polled addresses whose function is
    on the call stack at the exit (innermost first) of a run that ran out of instructions or time.
    None when the run ended on its own or in no such loop, and when there is no call stack to
    tell which loop it ended in.
    """
    if result.exit.reason not in _UNFINISHED:
        return None
    analysis = analyse(result, symbols)
    polling = [loop for loop in analysis.hot_loops if loop.polled and loop.start.function]
    for frame in analysis.call_stack:
        for loop in polling:
            if loop.start.function == frame.function.function:
                return loop
    return None


@dataclass(frozen=True)
class _Register:
    address: int
    width_bits: int
    driver_writes: bool

    @property
    def all_ones(self) -> int:
        return (1 << self.width_bits) - 1

    def rule(self, value: int, kind: str) -> MmioRule:
        if self.driver_writes and kind in ("bit", "pair"):
            forced = ForcedBits(and_mask=self.all_ones & ~value, or_mask=value)
            return MmioRule(address=self.address, forced_bits=forced)
        return MmioRule(address=self.address, constant=value)


def _register(result: RunResult, address: int) -> _Register:
    """The register as the run used it: its width (the widest read) and whether the driver wrote it
    before its last read."""
    reads = [access for access in result.mmio_accesses if access.address == address and not access.is_write]
    last_read = max((access.order for access in reads), default=-1)
    writes_before = any(
        access.is_write and access.address == address and access.order < last_read
        for access in result.mmio_accesses
    )
    width = max((access.size for access in reads), default=DEFAULT_REGISTER_BYTES)
    return _Register(address, width * 8, writes_before)


def _register_search(current: Evaluated, spin: NamedHotLoop, address: int, why: str) -> list[Child]:
    """All zero, all ones, then one child per bit of the register at `address`."""
    register = _register(current.result, address)
    candidates = [("zero", ()), ("ones", tuple(range(register.width_bits)))]
    candidates += [("bit", (bit,)) for bit in range(register.width_bits)]
    return [_child(current, spin, register, kind, bits, why) for kind, bits in candidates]


def _steady(current: Evaluated, spin: NamedHotLoop) -> list[Child]:
    """With several polled addresses, one more child: each pinned to the last value it read.

    Some loops wait for no bit at all but for agreement: read a clock's date and time until two
    reads in a row agree (sunxi_rtc_gettime), which random answers never give and a search of one
    register at a time gives only a generation per register later.
    """
    if len(spin.polled) < 2:
        return []
    last_read = {
        access.address: access.value
        for access in sorted(current.result.mmio_accesses, key=lambda access: access.order)
        if not access.is_write and access.address in spin.polled
    }
    rules = [MmioRule(address=address, constant=last_read.get(address, 0)) for address in spin.polled]
    state = current.state
    for rule in rules:
        state = with_rule(state, rule)
    polled = ", ".join(f"0x{address:x}" for address in spin.polled)
    detail = {
        "loop": spin.start.address,
        "function": spin.start.function,
        "address": spin.polled[0],
        "kind": "steady",
        "bits": [],
        "value": last_read.get(spin.polled[0], 0),
        "rule": "constant",
        "polled": list(spin.polled),
    }
    reason = f"spins in {spin.start.function} polling {polled}: pin each to its last value, so reads agree"
    return [Child(state=state, operator=OPERATOR, reason=reason, detail=detail)]


def _pairs(
    current: Evaluated, spin: NamedHotLoop, latest: dict[str, Any], vanished: list[int]
) -> list[Child]:
    register = _register(current.result, int(latest["address"]))
    (bit,) = latest["bits"]
    why = f"{_choice(latest)} stopped it polling 0x{vanished[0]:x} but not the loop, so pairs; "
    return [
        _child(current, spin, register, "pair", (bit, other), why)
        for other in range(register.width_bits)
        if other != bit
    ]


def _child(
    current: Evaluated, spin: NamedHotLoop, register: _Register, kind: str, bits: tuple[int, ...], why: str
) -> Child:
    value = sum(1 << bit for bit in bits)
    rule = register.rule(value, kind)
    polled = ", ".join(f"0x{address:x}" for address in spin.polled)
    forcing = "force" if rule.WhichOneof("value") == "forced_bits" else "try"
    echo = ", other bits echo the driver's writes" if forcing == "force" else ""
    what = f"0x{register.address:x} {_bits_in_words(kind, bits)} (0x{value:x})"
    detail = {
        "loop": spin.start.address,
        "function": spin.start.function,
        "address": register.address,
        "kind": kind,
        "bits": list(bits),
        "value": value,
        "rule": rule.WhichOneof("value"),
        "polled": list(spin.polled),
    }
    return Child(
        state=with_rule(current.state, rule),
        operator=OPERATOR,
        reason=f"spins in {spin.start.function} polling {polled}: {why}{forcing} {what}{echo}",
        detail=detail,
    )


def _bits_in_words(kind: str, bits: tuple[int, ...]) -> str:
    if kind == "zero":
        return "all zero"
    if kind == "ones":
        return "all ones"
    return f"bit {bits[0]}" if len(bits) == 1 else f"bits {bits[0]} and {bits[1]}"


def with_rule(state: State, rule: MmioRule) -> State:
    """A child of `state` whose rule at the rule's address is `rule` (in place, else appended)."""

    def change(child: State) -> None:
        for existing in child.mmio_rules:
            if existing.address == rule.address:
                existing.CopyFrom(rule)
                return
        child.mmio_rules.append(rule)

    return derive(state, change)


def _search_history(lineage: tuple[Evaluated, ...], spin: NamedHotLoop) -> list[Child]:
    """The bitwise children, newest first, of the search still going on in this loop: the lineage's
    bitwise steps in `spin`'s loop over some of its polled addresses, up to the first bitwise step
    elsewhere (other operators' steps are looked through)."""
    history: list[Child] = []
    for evaluated in lineage:
        made_by = evaluated.made_by
        if made_by is None or made_by.operator != OPERATOR:
            continue
        same_poll = set(made_by.detail["polled"]) & set(spin.polled)
        if made_by.detail["loop"] != spin.start.address or not same_poll:
            break
        history.append(made_by)
    return history


def _choice(detail: dict[str, Any]) -> str:
    return f"0x{int(detail['address']):x} = 0x{int(detail['value']):x}"
