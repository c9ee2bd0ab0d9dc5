"""The runner's machine config (proto/machine_config.proto): check it, write it as the machine's JSON.

The `rehosting` machine parses the JSON itself and stops with one line on what it cannot use;
`validate` catches here, before a QEMU starts, what is wrong whatever the host (shape, ranges,
overlaps). It must never look at the host: whether the kernel file exists is the machine's
question, asked where the run happens.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.struct_pb2 import Value

from explorer.errors import BadInput
from explorer.runner.build import TARGETS
from explorer.runner.machine_config_pb2 import Device, MachineConfig

# Struct numbers are doubles: integers above this would silently lose bits.
_LARGEST_EXACT_INTEGER = 2**53

_INTEGER_FIELD_TYPES = {
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_INT32,
}
# Message types whose JSON form is a bare number that a hand-written config may spell "0x...".
_NUMBER_MESSAGES = {"google.protobuf.UInt64Value", "google.protobuf.Value"}


# How the kernel calls PSCI firmware, which QEMU then answers (empty: no PSCI).
PSCI_CONDUITS = ("", "smc", "hvc")
# The first GIC interrupt ID a device raises (below: software-generated interrupts).
GIC_FIRST_PPI = 16
# The targets of the ARM machine (rehosting_arm.c builds into both QEMUs).
ARM_TARGETS = ("arm", "aarch64")
# The generic timers the arm,armv8-timer binding names: secure, non-secure physical, virtual,
# hyp, and hyp virtual.
GENERIC_TIMERS = 5


def validate(config: MachineConfig) -> None:
    """Raise BadInput naming the first field of `config` that no runner could use."""
    if config.target not in TARGETS:
        raise BadInput(f"config: target {config.target!r} is not one of {', '.join(TARGETS)}")
    if not config.cpu:
        raise BadInput('config: cpu is missing (a QEMU CPU model such as "cortex-a9")')
    if not config.boot.kernel:
        raise BadInput("config: boot.kernel is missing (the kernel image to boot)")
    _validate_ram(config)
    if config.HasField("interrupt_controller"):
        _validate_device(config.interrupt_controller, "interrupt_controller")
    for index, device in enumerate(config.devices):
        _validate_device(device, f"devices[{index}]")
    if config.isa_devices and not config.HasField("isa"):
        raise BadInput("config: isa_devices given but no isa bus declared")
    for index, line in enumerate(config.isa.irqs):
        if not _is_null_or_exact_unsigned(line):
            raise BadInput(f"config: isa.irqs[{index}] must be a CPU interrupt line or null")
    if config.isa.HasField("i8259"):
        _validate_i8259(config)
    for index, device in enumerate(config.isa_devices):
        _validate_device(device, f"isa_devices[{index}]")
    _validate_mmio_rules(config)
    if config.HasField("tick"):
        _validate_tick(config)
    if config.psci_conduit not in PSCI_CONDUITS:
        raise BadInput(f"config: psci_conduit {config.psci_conduit!r} is not one of: smc, hvc (or empty)")
    if config.psci_conduit and config.target not in ARM_TARGETS:
        raise BadInput(f"config: psci_conduit is for the arm and aarch64 targets only, not {config.target!r}")
    if config.secure_entry and config.target != "arm":
        raise BadInput(f"config: secure_entry is for the arm target only, not {config.target!r}")
    if config.secure_entry and config.psci_conduit == "smc":
        raise BadInput(
            "config: secure_entry with psci_conduit smc: in the secure world an SMC enters the guest's own "
            "monitor, QEMU would not answer it; give one"
        )
    if config.timer_irqs:
        _validate_timer_irqs(config)
    _validate_unique([hook.address for hook in config.hooks], "hooks", "hook the same address twice")
    for index, hook in enumerate(config.hooks):
        if not hook.name or not hook.kind:
            raise BadInput(f"config: hooks[{index}] needs a name and a kind")
    _validate_unique([nop.address for nop in config.nops], "nops", "skip the same function twice")


# MIPS CPU interrupt lines: 0 and 1 are software interrupts, 2..7 hardware.
CPU_INTERRUPT_LINES = 8


def _validate_i8259(config: MachineConfig) -> None:
    if config.isa.irqs:
        raise BadInput("config: isa.irqs and isa.i8259 both wire the ISA IRQs: give one")
    if config.isa.i8259.cpu_line >= CPU_INTERRUPT_LINES:
        raise BadInput(
            f"config: isa.i8259.cpu_line = {config.isa.i8259.cpu_line} is not a CPU interrupt line "
            f"(0..{CPU_INTERRUPT_LINES - 1})"
        )


def to_json(config: MachineConfig) -> str:
    """The JSON the machine reads: protobuf's JSON mapping with the proto field names as keys.

    Two departures: protobuf's Struct and Value hold doubles, which the mapping prints as 37.0,
    and QEMU's JSON parser keeps such a number a double that no integer property accepts, so
    integral doubles are written as integers (JSON itself does not tell the two apart). And the
    mapping leaves out integers that are 0, but the machine requires some keys whatever their
    value (RAM at address 0, a rule for address 0): those are written as 0.
    """
    as_dict = json_format.MessageToDict(config, preserving_proto_field_name=True)
    _write_required_zeros(as_dict)
    return json.dumps(_integral_floats_as_ints(as_dict), indent=1) + "\n"


def write_config(config: MachineConfig, path: Path) -> None:
    """Validate `config` and write it to `path` for `-M rehosting,config=PATH`."""
    validate(config)
    path.write_text(to_json(config))


def config_from_dict(raw: dict[str, Any], origin: str = "config") -> MachineConfig:
    """A MachineConfig from JSON data in the machine's own spelling: integers may be "0x..." strings."""
    try:
        return json_format.ParseDict(_with_plain_integers(MachineConfig.DESCRIPTOR, raw), MachineConfig())
    except json_format.ParseError as error:
        raise BadInput(f"{origin}: {_one_line(str(error))}") from None


def read_config(path: Path) -> MachineConfig:
    """Load and validate a MachineConfig JSON file (written by `write_config`, or by hand)."""
    try:
        raw = json.loads(path.read_text())
    except OSError as error:
        raise BadInput(f"config {path}: cannot read it: {error.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BadInput(f"config {path}: not valid JSON: {error}") from None
    if not isinstance(raw, dict):
        raise BadInput(f"config {path}: the top level must be a JSON object")
    config = config_from_dict(raw, f"config {path}")
    try:
        validate(config)
    except BadInput as error:
        raise BadInput(str(error).replace("config:", f"config {path}:", 1)) from None
    return config


def _validate_ram(config: MachineConfig) -> None:
    if not config.ram:
        raise BadInput("config: ram must list at least one region")
    regions = sorted((region.base, region.size, index) for index, region in enumerate(config.ram))
    for base, size, index in regions:
        if size == 0:
            raise BadInput(f"config: ram[{index}].size must not be 0")
        if base + size > 2**64:
            raise BadInput(f"config: ram[{index}] runs past the end of the address space")
    for (base, size, index), (next_base, _, next_index) in itertools.pairwise(regions):
        if next_base < base + size:
            raise BadInput(f"config: ram[{index}] and ram[{next_index}] overlap")


def _validate_device(device: Device, where: str) -> None:
    if not device.type:
        raise BadInput(f"config: {where}.type is missing (a QEMU device type such as pl011)")
    for index, irq in enumerate(device.irqs):
        if not _is_null_or_exact_unsigned(irq):
            raise BadInput(f"config: {where}.irqs[{index}] must be a GIC interrupt ID or null")
    for name, value in device.props.items():
        if isinstance(value, float) and not (value.is_integer() and abs(value) < _LARGEST_EXACT_INTEGER):
            raise BadInput(f"config: {where}.props.{name} must be an integer below 2**53")


def _validate_mmio_rules(config: MachineConfig) -> None:
    _validate_unique([rule.address for rule in config.mmio_rules], "mmio_rules", "give one address two rules")
    for index, rule in enumerate(config.mmio_rules):
        kind = rule.WhichOneof("value")
        if kind is None:
            raise BadInput(f"config: mmio_rules[{index}] gives no value (constant, sequence, ...)")
        if kind == "sequence" and not rule.sequence.values:
            raise BadInput(f"config: mmio_rules[{index}].sequence must list at least one value")
        if kind == "tick_pending" and not config.HasField("tick"):
            raise BadInput(
                f"config: mmio_rules[{index}].tick_pending answers the tick's interrupt: give a tick"
            )


def _validate_tick(config: MachineConfig) -> None:
    # The ARM machine drives the CPU's IRQ line, or with tick.irq a GIC input; the MIPS machine
    # has no tick.
    if config.target not in ARM_TARGETS:
        raise BadInput(f"config: tick is for the arm and aarch64 targets only, not {config.target!r}")
    if config.tick.irq:
        _validate_tick_irq(config)
    elif config.HasField("interrupt_controller"):
        raise BadInput("config: tick and interrupt_controller both drive the CPU's IRQ line: give one")
    if not 0 < config.tick.period_ns < 2**62:
        raise BadInput("config: tick.period_ns must be above 0 and below 2**62 (nanoseconds of guest time)")
    if config.tick.ack_base + config.tick.ack_size > 2**64:
        raise BadInput("config: tick's ack region runs past the end of the address space")


def _validate_tick_irq(config: MachineConfig) -> None:
    _validate_gic_input(config, config.tick.irq, "tick.irq")


def _validate_timer_irqs(config: MachineConfig) -> None:
    if config.target not in ARM_TARGETS:
        raise BadInput(f"config: timer_irqs is for the arm and aarch64 targets only, not {config.target!r}")
    if len(config.timer_irqs) > GENERIC_TIMERS:
        raise BadInput(
            f"config: timer_irqs has {len(config.timer_irqs)} entries, the generic timers {GENERIC_TIMERS}"
        )
    for index, irq in enumerate(config.timer_irqs):
        _validate_gic_input(config, irq, f"timer_irqs[{index}]")


def _validate_gic_input(config: MachineConfig, irq: int, where: str) -> None:
    # What the machine checks again (rehosting_arm.c gic_input), said here before QEMU starts.
    controller = config.interrupt_controller if config.HasField("interrupt_controller") else None
    num_irq = controller.props.fields.get("num-irq") if controller is not None else None
    if num_irq is None:
        raise BadInput(f"config: {where} given but no GIC interrupt_controller (with num-irq) declared")
    if not GIC_FIRST_PPI <= irq < num_irq.number_value:
        raise BadInput(
            f"config: {where} = {irq} is not a GIC PPI or SPI of this controller "
            f"({GIC_FIRST_PPI}..{int(num_irq.number_value) - 1})"
        )


def _validate_unique(addresses: list[int], where: str, complaint: str) -> None:
    seen: set[int] = set()
    for address in addresses:
        if address in seen:
            raise BadInput(f"config: {where} {complaint} (0x{address:x})")
        seen.add(address)


def _is_null_or_exact_unsigned(value: Value) -> bool:
    kind = value.WhichOneof("kind")
    return kind == "null_value" or (kind == "number_value" and _is_exact_unsigned(value.number_value))


def _is_exact_unsigned(number: float) -> bool:
    return math.isfinite(number) and number.is_integer() and 0 <= number < _LARGEST_EXACT_INTEGER


def _write_required_zeros(as_dict: dict[str, Any]) -> None:
    """Put back the keys the machine requires (rehosting.c, rehosting_mips.c) that were 0."""
    for region in as_dict.get("ram", []):
        region.setdefault("base", 0)
    for rule in as_dict.get("mmio_rules", []):
        rule.setdefault("address", 0)
    if "isa" in as_dict:
        as_dict["isa"].setdefault("io_base", 0)
        if "i8259" in as_dict["isa"]:
            as_dict["isa"]["i8259"].setdefault("cpu_line", 0)


def _integral_floats_as_ints(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _integral_floats_as_ints(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integral_floats_as_ints(item) for item in value]
    return value


def _with_plain_integers(descriptor: Descriptor, raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` with "0x..." strings turned into ints wherever the schema expects an integer."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        field = descriptor.fields_by_name.get(key)
        if field is None:
            out[key] = value  # ParseDict names the unknown field
        elif field.message_type is not None and field.message_type.full_name in _NUMBER_MESSAGES:
            out[key] = _each(value, _plain_integer)
        elif field.message_type is not None and field.message_type.full_name != "google.protobuf.Struct":
            out[key] = _each(value, _nested_with_plain_integers(field.message_type))
        elif field.type in _INTEGER_FIELD_TYPES:
            out[key] = _each(value, _plain_integer)
        else:
            out[key] = value
    return out


def _nested_with_plain_integers(descriptor: Descriptor) -> Callable[[Any], Any]:
    def convert(item: Any) -> Any:
        return _with_plain_integers(descriptor, item) if isinstance(item, dict) else item

    return convert


def _each(value: Any, convert: Callable[[Any], Any]) -> Any:
    return [convert(item) for item in value] if isinstance(value, list) else convert(value)


def _plain_integer(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            return value  # ParseDict says what is wrong with it
    return value


def _one_line(text: str) -> str:
    return " ".join(text.split())
