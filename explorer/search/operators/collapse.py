"""Value collapse: pin the values that led to progress, so that the progress is reproducible.

A state whose unmapped reads are random (`random_unruled_reads`) gets each value from (seed,
address, position of the access among all MMIO accesses of the run). A run that got further
than its parent may owe that to lucky values, and any later change that adds or removes one
access (a device mapped, a function NOP'd) shifts every later position and redraws them. Value
collapse turns what the run's unruled reads returned into rules keyed by address alone, which
no such shift changes: one child, whose boot reads exactly what the run being expanded read.

When: only when the run being expanded scores above its parent's (explorer.search.score), and
only for a state whose unruled reads are random (with them off, every unruled read is 0 at any
position: there is nothing to make reproducible).

What is pinned, per address without a rule, from RunResult.mmio_accesses (reads in order):
  * a `constant` when every read saw the same value, else a `sequence` of the values in order,
    its trailing repeats dropped (the machine repeats a sequence's last value forever, so
    [1, 2, 3, 3] and [1, 2, 3] answer every read alike);
  * only addresses whose every read is known. The machine sends at most EVENTS_PER_SITE
    accesses per (address, pc, direction), then only counts them: an address with a read site
    at that cap had reads whose values nobody saw (a poll that passed on its 20th read), and
    pinning the first 8 would replay the failing ones forever. It stays random;
  * never the registers of the loop the run ended spinning in (bitwise.final_spin): their
    values are what stopped the run, not what moved it, and the bitwise search owns them;
  * sequences of at most MAX_SEQUENCE_VALUES values; a longer one stays random rather than
    being cut short (a cut sequence would answer the reads beyond it differently).
When the event stream was cut (the runner stops sending after the config's mmio_event_limit,
and the master keeps a bounded number: mmio_accesses_dropped), what came after the cut is
unknown for every address: the known prefix is still exactly what the boot read up to the cut,
so it is pinned, and the reads past it get the sequence's last value instead of a fresh random
one (nothing can reproduce values never seen). The reason says when this happened.

Invariants: never modifies the states it is given; never touches an address that has a rule;
pins exactly the values the run observed; a state it made, given the same run, proposes nothing.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from explorer.firmware.model import SymbolTable
from explorer.runner.machine_config_pb2 import MmioRule, Sequence
from explorer.runner.rehost_pb2 import RunResult
from explorer.search.operators import Child, Context
from explorer.search.operators.bitwise import final_spin
from explorer.search.score import score
from explorer.search.state import SEARCH_MMIO_EVENT_LIMIT, derive

OPERATOR = "collapse"
# Accesses the catch-all device sends per (address, pc, direction) before it only counts them
# (EVENTS_PER_SITE in native/rehosting_machine/rehosting_catch_all.c).
EVENTS_PER_SITE = 8
# A pinned sequence's longest length. An address whose reads are all known was read fewer than
# EVENTS_PER_SITE times at each pc, so 64 values is 9 reading sites at that limit, beyond any
# driver's probe of one register; what is read more is a counter or a FIFO, better modelled
# than replayed. It bounds a state's value model to about 640 bytes per address.
MAX_SEQUENCE_VALUES = 64


def propose(context: Context) -> list[Child]:
    """One child pinning the expanded run's unruled reads, when that run got further than its parent's."""
    current, parent = context.current, context.parent
    if parent is None or not current.state.random_unruled_reads:
        return []
    before, after = score(parent.result), score(current.result)
    if not after > before:
        return []
    ruled = {rule.address for rule in current.state.mmio_rules}
    reads = unruled_reads(current.result, ruled)
    unseen = _partly_seen(current.result, reads)
    spinning_on = _spin_registers(current.result, context.firmware.symbols)
    pins: list[MmioRule] = []
    too_long = 0
    for address in sorted(reads.keys() - unseen - spinning_on):
        rule = pinned(address, reads[address])
        if rule is None:
            too_long += 1
        else:
            pins.append(rule)
    if not pins:
        return []
    cut = _cut(current.result)
    return [
        Child(
            state=derive(current.state, lambda child: child.mmio_rules.extend(pins)),
            operator=OPERATOR,
            reason=_reason(before.describe(), after.describe(), pins, len(unseen), too_long, cut),
            detail={
                "pinned": len(pins),
                "sequences": sum(1 for rule in pins if rule.WhichOneof("value") == "sequence"),
                "partly_seen": len(unseen),
                "too_long": too_long,
                "spin_registers": sorted(spinning_on & reads.keys()),
                "stream_cut": cut,
            },
        )
    ]


def unruled_reads(result: RunResult, ruled: set[int]) -> dict[int, list[int]]:
    """The values each address without a rule returned, in the order it was read."""
    reads: defaultdict[int, list[int]] = defaultdict(list)
    for access in sorted(result.mmio_accesses, key=lambda access: access.order):
        if not access.is_write and access.address not in ruled:
            reads[access.address].append(access.value)
    return dict(reads)


def pinned(address: int, values: list[int]) -> MmioRule | None:
    """The rule that answers reads with `values` in order (None: longer than MAX_SEQUENCE_VALUES)."""
    distinct = list(values)
    while len(distinct) > 1 and distinct[-1] == distinct[-2]:
        distinct.pop()
    if len(distinct) == 1:
        return MmioRule(address=address, constant=distinct[0])
    if len(distinct) > MAX_SEQUENCE_VALUES:
        return None
    return MmioRule(address=address, sequence=Sequence(values=distinct))


def _partly_seen(result: RunResult, reads: dict[int, list[int]]) -> set[int]:
    """Addresses with a read site at the machine's per-site cap: some of their reads went unseen."""
    sites = Counter((access.address, access.pc) for access in result.mmio_accesses if not access.is_write)
    return {address for (address, _), count in sites.items() if count >= EVENTS_PER_SITE and address in reads}


def _spin_registers(result: RunResult, symbols: SymbolTable) -> set[int]:
    spin = final_spin(result, symbols)
    return set(spin.polled) if spin is not None else set()


def _cut(result: RunResult) -> bool:
    """Whether accesses after some point went unreported (event limit reached, or master's bound)."""
    reported = len(result.mmio_accesses) + result.mmio_accesses_dropped
    return result.mmio_accesses_dropped > 0 or reported >= SEARCH_MMIO_EVENT_LIMIT


def _reason(before: str, after: str, pins: list[MmioRule], unseen: int, too_long: int, cut: bool) -> str:
    sequences = sum(1 for rule in pins if rule.WhichOneof("value") == "sequence")
    left = [f"{unseen} with reads never reported"] if unseen else []
    left += [f"{too_long} read more than {MAX_SEQUENCE_VALUES} ways"] if too_long else []
    return (
        f"got further than its parent ({after}, was {before}): pin the reads of {len(pins)} addresses "
        f"({len(pins) - sequences} constants, {sequences} sequences) so that it is reproducible"
        + (f"; left random: {', '.join(left)}" if left else "")
        + ("; the runner stopped reporting accesses part way, later reads are unknown" if cut else "")
    )
