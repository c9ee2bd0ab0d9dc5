"""MachineConfig: written in the machine's JSON keys, read back from hand-written JSON, refused in a line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from explorer.errors import BadInput
from explorer.runner.config import config_from_dict, read_config, to_json, validate, write_config
from explorer.runner.machine_config_pb2 import HookKind, MachineConfig

# Speed is not the property: on a shared two-core machine a per-example deadline only flakes.
PROPERTY = settings(deadline=None)

Change = Callable[[dict], object]

# A hand-written config in the machine's spelling (hex strings, null for an unwired IRQ).
HAND_WRITTEN = {
    "target": "arm",
    "cpu": "cortex-a9",
    "ram": [{"base": "0x60000000", "size": "0x20000000"}],
    "interrupt_controller": {"type": "a9mpcore_priv", "mmio": ["0x1e000000"], "props": {"num-irq": 96}},
    "devices": [
        {"type": "realview_sysctl", "mmio": ["0x10000000"], "props": {"sys_id": 0x1190F500}},
        {"type": "pl011", "mmio": ["0x10009000"], "irqs": [37, None]},
    ],
    "boot": {"kernel": "/boot/zImage", "cmdline": "console=ttyAMA0", "board_id": "0x8e0", "loader_start": 0},
    "unmapped_log_limit": 0,
    "seed": 7,
    "mmio_rules": [
        {"address": "0x10001000", "constant": "0xff"},
        {"address": "0x10001004", "sequence": {"values": [0, 1]}},
        {"address": "0x10001008", "forced_bits": {"and_mask": "0xfffffffe", "or_mask": 1}},
        {"address": "0x1000100c", "echo": {}},
        {"address": "0x10001010", "random": {}},
    ],
    "hooks": [{"name": "start_kernel", "address": "0xc0b00a2c", "kind": "HOOK_MILESTONE"}],
    "nops": [{"address": "0xc0512340", "return_value": 0, "name": "omap_irq_soft_reset"}],
    "instruction_budget": 5_000_000_000,
    "user_space_below": "0xc0000000",
}


# A tick acknowledged by writes to an unmodelled controller's registers (am335x's intc).
TICK = {"period_ns": 4_000_000, "ack_base": "0x48200000", "ack_size": "0x1000"}


def hand_written() -> MachineConfig:
    return config_from_dict(json.loads(json.dumps(HAND_WRITTEN)))


def test_written_json_uses_the_machines_keys_and_values_it_accepts() -> None:
    written = json.loads(to_json(hand_written()))
    assert set(written) >= {"cpu", "ram", "interrupt_controller", "devices", "boot", "unmapped_log_limit"}
    assert written["ram"] == [{"base": str(0x60000000), "size": str(0x20000000)}]
    assert written["devices"][1] == {"type": "pl011", "mmio": [str(0x10009000)], "irqs": [37, None]}
    # QEMU's JSON parser keeps 96.0 a double, which no integer property accepts.
    assert written["interrupt_controller"]["props"] == {"num-irq": 96}
    assert isinstance(written["devices"][0]["props"]["sys_id"], int)
    # Present-but-zero fields the machine would otherwise default stay present.
    assert written["unmapped_log_limit"] == "0"
    assert written["boot"]["loader_start"] == "0"
    assert written["boot"]["board_id"] == str(0x8E0)


def test_written_json_reads_back_as_the_same_config(tmp_path: Path) -> None:
    path = tmp_path / "machine.json"
    write_config(hand_written(), path)
    assert read_config(path) == hand_written()


@PROPERTY
@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_addresses_survive_the_json_round_trip_in_any_spelling(address: int) -> None:
    for spelling in (address, str(address), hex(address)):
        config = config_from_dict({**HAND_WRITTEN, "user_space_below": spelling})
        assert config.user_space_below == address
        assert config_from_dict(json.loads(to_json(config))).user_space_below == address


def with_change(change: Change) -> dict:
    raw = json.loads(json.dumps(HAND_WRITTEN))
    change(raw)
    return raw


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (lambda c: c.update(target="x86"), "target 'x86' is not one of arm, aarch64, mipsel, mips"),
        (lambda c: c.pop("cpu"), "cpu is missing"),
        (lambda c: c["boot"].pop("kernel"), "boot.kernel is missing"),
        (lambda c: c.update(ram=[]), "ram must list at least one region"),
        (lambda c: c["ram"].append({"base": "0x70000000", "size": "0x1000"}), "ram[0] and ram[1] overlap"),
        (lambda c: c["ram"][0].update(size=0), "ram[0].size must not be 0"),
        (lambda c: c["devices"][1].update(type=""), "devices[1].type is missing"),
        (lambda c: c["devices"][1].update(irqs=[37.5]), "devices[1].irqs[0] must be a GIC interrupt ID"),
        (lambda c: c["devices"][1].update(irqs=["spi"]), "devices[1].irqs[0] must be a GIC interrupt ID"),
        (lambda c: c["devices"][0]["props"].update(sys_id=0.5), "devices[0].props.sys_id must be an integer"),
        (lambda c: c["mmio_rules"].append({"address": "0x10001000", "echo": {}}), "give one address two"),
        (lambda c: c["mmio_rules"].append({"address": "0x1"}), "mmio_rules[5] gives no value"),
        (lambda c: c["mmio_rules"][1]["sequence"].update(values=[]), "sequence must list at least one"),
        (
            lambda c: c["mmio_rules"].append({"address": "0x1", "tick_pending": {"value": 2}}),
            "mmio_rules[5].tick_pending answers the tick's interrupt: give a tick",
        ),
        (lambda c: c["hooks"][0].update(kind="HOOK_KIND_UNSPECIFIED"), "hooks[0] needs a name and a kind"),
        (lambda c: c["nops"].append({"address": "0xc0512340"}), "nops skip the same function twice"),
        (lambda c: c.update(tick=TICK), "tick and interrupt_controller both drive the CPU's IRQ line"),
        (lambda c: c.update(target="mipsel", tick=TICK), "tick is for the arm and aarch64 targets only"),
        (lambda c: c.update(psci_conduit="svc"), "psci_conduit 'svc' is not one of: smc, hvc"),
        (
            lambda c: c.update(target="mipsel", psci_conduit="smc"),
            "psci_conduit is for the arm and aarch64 targets only",
        ),
        (
            lambda c: c.update(timer_irqs=[29, 30, 27, 26, 28, 25]),
            "timer_irqs has 6 entries, the generic timers 5",
        ),
        (
            lambda c: c.update(timer_irqs=[29, 15]),
            "timer_irqs[1] = 15 is not a GIC PPI or SPI of this controller",
        ),
        (
            lambda c: c.update(target="mipsel", timer_irqs=[30]),
            "timer_irqs is for the arm and aarch64 targets only",
        ),
        (
            lambda c: (c.pop("interrupt_controller"), c.update(timer_irqs=[30])),
            "timer_irqs[0] given but no GIC interrupt_controller",
        ),
        (lambda c: (c.pop("interrupt_controller"), c.update(tick={})), "tick.period_ns must be above 0"),
        (
            lambda c: (c.pop("interrupt_controller"), c.update(tick={**TICK, "ack_size": 2**64 - 1})),
            "ack region runs past the end of the address space",
        ),
        (
            lambda c: c.update(
                target="mipsel", isa={"io_base": 0, "irqs": [None, 2], "i8259": {"cpu_line": 2}}
            ),
            "isa.irqs and isa.i8259 both wire the ISA IRQs",
        ),
        (
            lambda c: c.update(target="mipsel", isa={"io_base": 0, "i8259": {"cpu_line": 8}}),
            "isa.i8259.cpu_line = 8 is not a CPU interrupt line (0..7)",
        ),
    ],
)
def test_unusable_config_is_refused_naming_the_field(change: Change, complaint: str) -> None:
    with pytest.raises(BadInput) as raised:
        validate(config_from_dict(with_change(change)))
    assert complaint in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_tick_without_interrupt_controller_is_accepted_and_written_for_the_machine() -> None:
    raw = with_change(
        lambda c: (c.pop("interrupt_controller"), c["devices"][1].pop("irqs"), c.update(tick=TICK))
    )
    config = config_from_dict(raw)
    validate(config)
    written = json.loads(to_json(config))
    assert written["tick"] == {"period_ns": "4000000", "ack_base": str(0x48200000), "ack_size": "4096"}


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ('{"cpu": ', "not valid JSON"),
        ("[1, 2]", "the top level must be a JSON object"),
        ('{"target": "arm", "cpus": 2}', "cpus"),
        ('{"target": "arm", "seed": "many"}', "seed"),
        (
            '{"target": "arm", "cpu": "cortex-a9", "ram": [{"base": 0, "size": 4096}]}',
            "boot.kernel is missing",
        ),
    ],
)
def test_bad_config_file_is_one_line_naming_the_file(tmp_path: Path, text: str, complaint: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(BadInput) as raised:
        read_config(path)
    message = str(raised.value)
    assert str(path) in message and complaint in message and "\n" not in message


def test_missing_config_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="cannot read it"):
        read_config(tmp_path / "absent.json")


def test_hook_kinds_are_written_by_name() -> None:
    written = json.loads(to_json(hand_written()))
    assert written["hooks"][0]["kind"] == HookKind.Name(HookKind.HOOK_MILESTONE)


def test_the_i8259_pair_is_written_with_its_line_and_acknowledge_in_the_machines_keys() -> None:
    raw = {
        "target": "mipsel",
        "cpu": "24Kf",
        "ram": [{"base": 0, "size": "0x1000000"}],
        "boot": {"kernel": "/vmlinux"},
    }
    config = config_from_dict({**raw, "isa": {"io_base": "0x1fd00000", "i8259": {"cpu_line": 0}}})
    validate(config)
    # The machine requires cpu_line even where it is 0; no acknowledge is written as none.
    assert json.loads(to_json(config))["isa"] == {"io_base": str(0x1FD00000), "i8259": {"cpu_line": 0}}
    config.isa.i8259.cpu_line, config.isa.i8259.acknowledge = 2, 0x1FE80000
    assert json.loads(to_json(config))["isa"]["i8259"] == {"cpu_line": 2, "acknowledge": str(0x1FE80000)}
