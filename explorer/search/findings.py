"""What a search found, for people and programs: `explorer show` and `explorer status` read this.

Reading only: it opens nothing for writing and may run while a search writes the same store.
The best state is the one with the highest score, the earliest found among equals. Everything
shown of a state comes from the store: its machine, its run, and the edges that led to it; of
the search, why it stopped (explorer.search.engine.stop_record) and the children it dropped.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from explorer.errors import BadInput
from explorer.firmware.model import Firmware
from explorer.runner.analysis import analyse, console_text, reached_console
from explorer.runner.result import deserialize
from explorer.runner.summary import describe, hot_loops_to_dict, thread_waits_to_dict
from explorer.search.engine import BOOT_COMPLETED, BUDGET_SPENT, EXHAUSTED, STOPPED
from explorer.search.score import Score
from explorer.search.state import SHORT_ID, State, parse_state
from explorer.store import RunRecord, Store

LOG_TAIL_LINES = 20


def best_run(store: Store) -> RunRecord | None:
    best: RunRecord | None = None
    for run in store.runs():
        if best is None or (Score.from_bytes(run.score), -run.generation) > (
            Score.from_bytes(best.score),
            -best.generation,
        ):
            best = run
    return best


def path_to(store: Store, identity: str) -> list[dict[str, Any]]:
    """The edges from the initial state to `identity`, oldest first."""
    steps: list[dict[str, Any]] = []
    current: str | None = identity
    while current is not None:
        edge = store.edge(current)
        run = store.run(current)
        if edge is None or run is None:
            break
        steps.append(
            {
                "state": current[:SHORT_ID],
                "generation": edge.generation,
                "operator": edge.operator,
                "reason": edge.reason,
                "score": Score.from_bytes(run.score).describe(),
            }
        )
        current = edge.parent
    steps.reverse()
    return steps


def machine_summary(state: State) -> dict[str, Any]:
    """The memory map, value model and NOPs of a state, as JSON-able data."""
    as_dict = json_format.MessageToDict(state, preserving_proto_field_name=True)
    return {
        "cpu": state.cpu,
        "psci_conduit": state.psci_conduit or None,
        "secure_entry": state.secure_entry,
        "ram": [{"base": hex(region.base), "size": hex(region.size)} for region in state.ram],
        "interrupt_controller": _device(as_dict.get("interrupt_controller")),
        "devices": [_device(device) for device in as_dict.get("devices", [])],
        "mmio_rules": [_rule(rule) for rule in state.mmio_rules],
        "nops": [
            {
                "function": nop.name or hex(nop.address),
                "address": hex(nop.address),
                "returns": nop.return_value,
            }
            for nop in state.nops
        ],
        "kernel_arguments": state.boot.cmdline,
        "tick": (
            {
                "period_ns": state.tick.period_ns,
                "ack": f"{state.tick.ack_base:#x}+{state.tick.ack_size:#x}",
            }
            if state.HasField("tick")
            else None
        ),
        "seed": state.seed,
        "instruction_budget": state.instruction_budget,
    }


def dropped_children(store: Store) -> list[dict[str, Any]]:
    """The children the search dropped unbooted, in the order they were proposed, with why."""
    edges = sorted(
        (edge for edge in store.edges() if edge.dropped is not None), key=lambda edge: edge.generation
    )
    return [
        {
            "state": edge.child[:SHORT_ID],
            "parent": edge.parent[:SHORT_ID] if edge.parent is not None else None,
            "generation": edge.generation,
            "operator": edge.operator,
            "reason": edge.reason,
            "dropped": edge.dropped,
        }
        for edge in edges
    ]


def stop_description(stopped: dict[str, Any] | None, recorded: bool = True) -> str:
    """Why the search stopped, in one line, from its stop record (`recorded` False: the store
    was written before explorer recorded it)."""
    if not recorded:
        return "why it stopped was not recorded (the search was written by an older explorer)"
    if stopped is None:
        return "not stopped: it is running, or was interrupted or killed (explorer resume continues it)"
    dropped = stopped["dropped"]
    left = (
        f"; {dropped} proposed children were dropped unbooted (`explorer show` says why)" if dropped else ""
    )
    generations = f"after {stopped['generations']} generations"
    if stopped["why"] == BOOT_COMPLETED:
        return f"a run completed the boot {generations}"
    if stopped["why"] == BUDGET_SPENT:
        return f"the budget was spent {generations}, {stopped['frontier']} states still on the frontier{left}"
    if stopped["why"] == EXHAUSTED:
        return f"nothing left to try {generations}: no state's operators proposed anything new{left}"
    return f"{stopped['why']} {generations}{left}"


def search_summary(store: Store) -> dict[str, Any]:
    metadata = store.metadata()
    counters = store.counters()
    wall = float(counters.get("wall_seconds", 0.0))
    waiting = float(counters.get("runner_wait_seconds", 0.0))
    best = best_run(store)
    best_score = Score.from_bytes(best.score) if best is not None else None
    return {
        "furthest_milestone": best_score.furthest_milestone if best_score else None,
        "reached_userspace": bool(best_score and best_score.user_space),
        "reached_console": bool(best_score and best_score.console),
        "runs": int(counters.get("runs", 0)),
        "generations": store.generations(),
        "wall_seconds": round(wall, 3),
        "master_overhead": round((wall - waiting) / wall, 4) if wall > 0 else 0.0,
        "frontier": len(store.frontier()),
        "best_state": best.state_id if best is not None else None,
        "stopped": metadata.get(STOPPED),
        "stop": stop_description(metadata.get(STOPPED), recorded=STOPPED in metadata),
        "dropped": dropped_children(store),
    }


def state_report(store: Store, identity: str, firmware: Firmware) -> dict[str, Any]:
    """Everything `explorer show` says about one state."""
    data = store.state(identity)
    run = store.run(identity)
    if data is None or run is None:
        edge = store.edge(identity)
        if edge is not None and edge.dropped is not None:
            raise BadInput(
                f"state {identity[:SHORT_ID]} was dropped unbooted ({edge.dropped}): {edge.operator} "
                f"proposed it in generation {edge.generation} ({edge.reason})"
            )
        raise BadInput(f"state {identity[:SHORT_ID]} is not stored with a run")
    result = deserialize(run.result)
    analysis = analyse(result, firmware.symbols)
    log_lines = result.log.decode(errors="replace").splitlines()
    return {
        "state": identity,
        "score": Score.from_bytes(run.score).describe(),
        "exit": analysis.exit_reason.replace("_", " "),
        "exit_detail": result.exit.detail,
        "milestones": [milestone.name for milestone in result.milestones],
        "initcalls": len(result.initcalls),
        "run_summary": describe(analysis),
        **hot_loops_to_dict(analysis),
        **thread_waits_to_dict(analysis),
        "log_tail": log_lines[-LOG_TAIL_LINES:],
        # User space printed the marker on the console; the console's text (the first serial port).
        "reached_console": reached_console(result),
        "console": console_text(result),
        "machine": machine_summary(parse_state(data)),
        "path": path_to(store, identity),
    }


def _device(device: dict[str, Any] | None) -> dict[str, Any] | None:
    if device is None:
        return None
    return {
        "type": device.get("type"),
        "mmio": [hex(int(address)) for address in device.get("mmio", [])],
        # Struct numbers are doubles in protobuf's JSON form: IRQ numbers are integers.
        "irqs": [int(irq) if isinstance(irq, float) else irq for irq in device.get("irqs", [])],
        **({"props": device["props"]} if device.get("props") else {}),
    }


def _rule(rule: Any) -> dict[str, Any]:
    kind = rule.WhichOneof("value")
    described: dict[str, Any] = {"address": hex(rule.address), "kind": kind}
    if kind == "constant":
        described["value"] = hex(rule.constant)
    elif kind == "sequence":
        described["values"] = [hex(value) for value in rule.sequence.values]
    elif kind == "forced_bits":
        described["and_mask"] = hex(rule.forced_bits.and_mask)
        described["or_mask"] = hex(rule.forced_bits.or_mask)
    elif kind == "counter":
        described["hz"] = rule.counter.hz
        described["down"] = rule.counter.down
    elif kind == "tick_pending":
        described["value"] = hex(rule.tick_pending.value)
    return described
