"""Snapshot sharing in the search: which children may continue from a snapshot of their parent's boot.

A child differs from its parent in a few rules or devices; until the guest first touches one of
them, the child's boot is the parent's, instruction for instruction (runs are deterministic).
So the parent can boot once to a point before that first touch, save the VM there
(explorer.runner.snapshot), and each such child continues from the save, which is to give byte
for byte the RunResult of its full boot (tests/integration/test_runner_snapshot.py), cheaper.

This module decides *where* a child may share its parent's boot (`divergence_point`: pure, from
the two states and the parent's run), which earlier save of an ancestor's boot it may continue
from instead (`inherited_point`), which children of a generation share which new snapshot
(`sharing_plan`), and where a search keeps the saved snapshots (WORK/snapshots/, an
explorer.execution.snapshot_cache.SnapshotCache beside the store). It never boots anything:
explorer.search.engine does, when a search runs with snapshots (SearchOptions.snapshots). That
is sound because the plugin counts every instruction exactly once, even in a block an exception
or an I/O access cuts short, and a guest idling between the ticks of the machine's timer
interrupt is woken at the same instruction on every run (native/README.md, "Counts" and
`tick`), so a continued run is its full boot, and a search stores the same runs with snapshots
as without (tests/integration/test_search_snapshots_invariant.py; the whole am335x search to
user space, 27 of its 36 runs continued from saves of ticking parents: BENCHMARKS.md).

Invariant (what makes sharing safe): a point is only ever *earlier* than the first instruction
at which the child's run can differ from the parent's. Every doubt gives None (boot in full).
"""

from __future__ import annotations

import shutil
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path

from google.protobuf.message import Message

from explorer.execution.snapshot_cache import SnapshotCache
from explorer.runner.machine_config_pb2 import Device
from explorer.runner.rehost_pb2 import MmioAccess, RunResult
from explorer.search.device_models import MODEL_SPANS
from explorer.search.state import SEARCH_MMIO_EVENT_LIMIT, State, canonical_bytes

# Instructions kept between a point and the first access that may differ. The save stops at the
# end of the block in which the plugin's count reaches the point, so up to a block (at most 512
# instructions) past it; an access's count is QEMU's icount, which the plugin's count equals at
# every access (native/rehost_plugin/rehost.c's head comment). The margin is a block with room to
# spare. The plugin's two known, deterministic differences from QEMU (an ARM coprocessor trap at
# run time, a store into its own block) make its count run ahead, which only moves the save earlier.
SAFETY_MARGIN = 10_000
# A snapshot only pays when a child continuing from it skips more boot than saving and restoring
# cost (a fraction of a second): at least this share of the parent's boot, or at least
# MIN_SHARED_INSTRUCTIONS, a second or more of boot on a loaded host, whatever the parent's length
# (a parent that ran to its budget long after the point still saves its children that boot).
WORTHWHILE_SHARE = 0.5
MIN_SHARED_INSTRUCTIONS = 500_000_000


def divergence_point(parent_state: State, parent_result: RunResult, child_state: State) -> int | None:
    """The last instruction count (the plugin's) at which a run of the child is still the parent's run.

    None when the child shares nothing worth a snapshot: any difference in what boots (kernel,
    DTB, initrd, command line, CPU, RAM, interrupt controller, ISA bus, tick, budgets,
    limits), different NOPs, a parent device the child lacks or changes, a parent run that did
    not end on its own (partial: not a function of its state), or a point that skips too little
    boot (before WORTHWHILE_SHARE of the parent's, as far as its events show: `_known_end`, and
    before MIN_SHARED_INSTRUCTIONS). Otherwise
    SAFETY_MARGIN before the parent's first recorded access to an address whose answer differs
    in the child (a rule added, removed or changed; a new device's regions; with another seed,
    any read the seed answers: the machine draws nothing else from it), and, when the
    parent's MMIO stream was cut off by its event limit, no later than its last recorded access
    (later first touches went unseen).
    """
    if sharing_obstacle(parent_state, parent_result, child_state) is not None:
        return None
    added_devices = _added_devices(parent_state, child_state) or []
    regions = [(address, 1) for address in _changed_rule_addresses(parent_state, child_state)]
    for device in added_devices:
        regions += [(base, MODEL_SPANS[device.type]) for base in device.mmio]
    # Another seed: every read whose answer the seed draws differs too (an address without a rule,
    # or whose rule draws or, before a write, answers as one without).
    seeded = _seed_free_addresses(parent_state) if parent_state.seed != child_state.seed else None
    accesses = parent_result.mmio_accesses
    end = _known_end(parent_result)
    latest = end
    first_touch = next(
        (
            access.icount
            for access in accesses
            if _touches(access, regions)
            or (seeded is not None and not access.is_write and access.address not in seeded)
        ),
        None,
    )
    if first_touch is not None:
        latest = min(latest, first_touch)
    if _stream_truncated(parent_state, parent_result):
        latest = min(latest, max((access.icount for access in accesses), default=0))
    point = latest - SAFETY_MARGIN
    if point <= 0 or point < min(end * WORTHWHILE_SHARE, MIN_SHARED_INSTRUCTIONS):
        return None
    return point


def sharing_obstacle(parent_state: State, parent_result: RunResult, child_state: State) -> str | None:
    """Why the child cannot share any of the parent's boot whatever the parent's run read, or None
    (the rules, the devices added and the seed are weighed by divergence_point).

    The parent's run did not end on its own; a field of what boots differs (named: NOPs, the
    interrupt controller, the tick, the command line...); a parent device the child lacks or
    changes; a device added whose model's span is unknown.
    """
    if parent_result.partial:
        return "the parent's run is partial"
    differing = _boot_differences(parent_state, child_state)
    if differing:
        return "differs in " + ", ".join(differing)
    added_devices = _added_devices(parent_state, child_state)
    if added_devices is None:
        return "a parent device changed or removed"
    if any(device.type not in MODEL_SPANS for device in added_devices):
        return "a device added whose span is unknown"
    return None


def inherited_point(
    ancestor: State, ancestor_result: RunResult, kept: Collection[int], child: State
) -> int | None:
    """The latest of `kept` (points of saved boots of `ancestor`) a run of `child` may continue from.

    divergence_point holds for any stored state whose boot the child shares, not only its
    parent's: the ancestor's run is the child's up to the first access, in the ancestor's run, to
    an address whose answer differs between the two (every change made along the lineage), and
    the same boot and device checks apply. So a save of a grandparent's boot serves a grandchild
    whose own change comes later, after the parent's. None when no kept point is early enough.
    """
    limit = divergence_point(ancestor, ancestor_result, child)
    if limit is None:
        return None
    return max((point for point in kept if point <= limit), default=None)


def _known_end(result: RunResult) -> int:
    """The latest instruction count the run is known to have reached.

    The exit's count when it has one; an exit the machine decided (a stuck poll, an idle guest)
    carries none, and then the last count any event carries stands in (earlier than the true end:
    a point bounded by it is only more cautious).
    """
    counted = [result.exit.icount]
    counted += [milestone.icount for milestone in result.milestones]
    counted += [initcall.icount for initcall in result.initcalls]
    counted += [access.icount for access in result.mmio_accesses]
    return max(counted)


def _boot_differences(parent: State, child: State) -> list[str]:
    """The fields that differ but the value rules and the devices (which `divergence_point` weighs)."""
    mine, theirs = _without_answers(parent), _without_answers(child)
    if canonical_bytes(mine) == canonical_bytes(theirs):
        return []
    return _differing_fields(mine, theirs) or ["the state's bytes"]


def _differing_fields(mine: Message, theirs: Message, prefix: str = "") -> list[str]:
    """The names of the fields that differ; in a singular message (the boot, the tick, the ISA bus),
    its own fields that do (an interrupt controller is one change: its type and place go together)."""
    differing = []
    for field in mine.DESCRIPTOR.fields:
        if _field_bytes(mine, field.name) == _field_bytes(theirs, field.name):
            continue
        inner = getattr(mine, field.name)
        if isinstance(inner, Message) and not prefix and field.name != "interrupt_controller":
            differing += _differing_fields(inner, getattr(theirs, field.name), f"{prefix}{field.name}.")
        else:
            differing.append(prefix + field.name)
    return differing


def _field_bytes(message: Message, name: str) -> bytes:
    alone = type(message)()
    alone.MergeFrom(message)
    for field in message.DESCRIPTOR.fields:
        if field.name != name:
            alone.ClearField(field.name)
    return alone.SerializeToString(deterministic=True)


def _without_answers(state: State) -> State:
    """The state without what only changes MMIO answers: its rules, devices and seed."""
    stripped = State()
    stripped.CopyFrom(state)
    del stripped.mmio_rules[:]
    del stripped.devices[:]
    stripped.seed = 0
    return stripped


# The rule kinds whose answers never derive from the seed (the catch-all's rule_value in
# native/rehosting_machine/rehosting_catch_all.c: `random` draws from it, `echo` and
# `forced_bits` answer as an address without a rule, a seeded draw, until the first write).
SEED_FREE_RULES = frozenset({"constant", "sequence", "counter", "tick_pending"})


def _seed_free_addresses(state: State) -> set[int]:
    """The addresses whose every read answers the same whatever the seed (one rule, seed free)."""
    kinds: dict[int, set[str | None]] = {}
    for rule in state.mmio_rules:
        kinds.setdefault(rule.address, set()).add(rule.WhichOneof("value"))
    return {address for address, kind in kinds.items() if kind <= SEED_FREE_RULES}


def _added_devices(parent: State, child: State) -> list[Device] | None:
    """The child's devices after the parent's, when the parent's come first and unchanged; else None.

    The snapshot's migration stream holds the parent's devices: the child must have each of them,
    in the same order; a device only the child has keeps its reset state at the restore, as in
    its full boot until the guest first touches it.
    """
    shared = len(parent.devices)
    if len(child.devices) < shared:
        return None
    for mine, theirs in zip(parent.devices, child.devices[:shared], strict=True):
        if mine.SerializeToString(deterministic=True) != theirs.SerializeToString(deterministic=True):
            return None
    return list(child.devices[shared:])


def _changed_rule_addresses(parent: State, child: State) -> set[int]:
    before = _rules_by_address(parent)
    after = _rules_by_address(child)
    return {address for address in before.keys() | after.keys() if before.get(address) != after.get(address)}


def _rules_by_address(state: State) -> dict[int, list[bytes]]:
    rules: dict[int, list[bytes]] = {}
    for rule in state.mmio_rules:
        rules.setdefault(rule.address, []).append(rule.SerializeToString(deterministic=True))
    return rules


def _touches(access: MmioAccess, regions: Iterable[tuple[int, int]]) -> bool:
    end = access.address + max(access.size, 1)
    return any(base < end and access.address < base + span for base, span in regions)


def _stream_truncated(state: State, result: RunResult) -> bool:
    limit = state.mmio_event_limit or SEARCH_MMIO_EVENT_LIMIT
    return result.mmio_accesses_dropped > 0 or len(result.mmio_accesses) >= limit


# What a search keeps of snapshots unless told otherwise (`--snapshot-limit`).
DEFAULT_SNAPSHOT_LIMIT_BYTES = 4 << 30
# WORK/snapshots/: the snapshot cache beside a search's store.
SNAPSHOTS_DIRECTORY = "snapshots"


def snapshot_cache(
    work: Path, qemu_dir: Path, limit_bytes: int = DEFAULT_SNAPSHOT_LIMIT_BYTES
) -> SnapshotCache:
    """The snapshots kept beside the store in `work`, of the runner build in `qemu_dir`."""
    return SnapshotCache(work / SNAPSHOTS_DIRECTORY, qemu_dir, limit_bytes)


def remove_snapshots(work: Path) -> None:
    """Remove the snapshots kept beside the store in `work` (a search that will not run again)."""
    shutil.rmtree(work / SNAPSHOTS_DIRECTORY, ignore_errors=True)


# Snapshots one generation takes at most (each costs a boot of the parent to its point).
MAX_SNAPSHOTS_PER_GENERATION = 3
# Children that must share a new snapshot for it to be taken. One is enough: the parent's prefix
# boot costs what a lone child would have spent on it (it loses only the save and the restore, a
# fraction of a second), and the save then serves the parent's later generations and its
# descendants whose changes come after the point (`inherited_point`), which in a lineage of
# lone children (one value pinned per generation) is nearly every later run.
MIN_SHARING_CHILDREN = 1


def sharing_plan(points: Mapping[str, int | None], cached: Collection[int] = ()) -> dict[int, list[str]]:
    """Snapshot points for one generation, each with the children that continue from it.

    `points`: each child's divergence_point. Invariants: a child continues from a point no later
    than its own (so sharing stays safe); at most MAX_SNAPSHOTS_PER_GENERATION points, chosen
    among the children's own points so that each child's is as late as the number allows; a point
    not in `cached` serves at least MIN_SHARING_CHILDREN children (a smaller group joins the next
    earlier point, or boots in full); a child with None, or left out, boots in full.
    """
    ordered = sorted((point, child) for child, point in points.items() if point is not None)
    distinct = sorted({point for point, _ in ordered})
    if len(distinct) <= MAX_SNAPSHOTS_PER_GENERATION:
        chosen = distinct
    else:
        # Quantiles of the children's points: the earliest is always chosen, so every child has one.
        step = len(ordered) / MAX_SNAPSHOTS_PER_GENERATION
        chosen = sorted({ordered[int(index * step)][0] for index in range(MAX_SNAPSHOTS_PER_GENERATION)})
    groups: dict[int, list[str]] = {point: [] for point in chosen}
    for point, child in ordered:
        groups[max(candidate for candidate in chosen if candidate <= point)].append(child)
    plan: dict[int, list[str]] = {}
    pending: list[str] = []
    for point in reversed(chosen):
        group = groups[point] + pending
        if len(group) >= MIN_SHARING_CHILDREN or (group and point in cached):
            plan[point] = sorted(group)
            pending = []
        else:
            pending = group
    return dict(sorted(plan.items()))
