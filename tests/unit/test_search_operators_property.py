"""Every operator, on random states and random runs: none raises, and no proposal can end a search.

The engine checks each child as the runner would (explorer.search.proposal.unbootable) and drops one
no runner would boot, with the check's line as the reason: that guard must answer for every child
any operator makes, never raise. The operators themselves must not need it: a state the engine
booted (one the check accepts) has only children the check accepts too.

The world: a device tree mixing what the operators answer on real boards (a GIC the search can map,
a SoC wake-up controller in front of it that has no model, an am335x-like controller without one,
timers behind each, UARTs, a register block with no node), symbols the operators read by name (the
panic path, the boot skeleton, irq handlers, calibrate_delay), and PC I/O ports behind a MIPS
window. A lineage is walked the way the engine walks one: a random state and run, then a random
bootable child of any operator with a random run of its own, a few times over.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

import explorer.search.operators as operators_package
from explorer.firmware.model import DeviceTreeFacts, DtDevice, Firmware, Symbol
from explorer.runner.kernel_hooks import MILESTONES
from explorer.runner.machine_config_pb2 import Device, Echo, ForcedBits, MmioRule, Nop, SeededRandom, Sequence
from explorer.runner.rehost_pb2 import (
    CallStack,
    Coverage,
    Exit,
    ExitReason,
    Frame,
    HotLoop,
    MmioAccess,
    RunResult,
)
from explorer.search.device_models import placement
from explorer.search.engine import LINEAGE_DEPTH
from explorer.search.operators import Child, Context, Evaluated, Operator
from explorer.search.proposal import OperatorPhases, unbootable
from explorer.search.state import State, Target, state_id
from tests.helpers import arm_firmware

GIC = DtDevice("/gic", ("arm,cortex-a9-gic",), ((0x1E001000, 0x1000), (0x1E000100, 0x100)), None, (), "okay")
GPC = DtDevice("/gpc", ("fsl,imx6ul-gpc",), ((0x020DC000, 0x4000),), "/gic", (0, 89, 4), "okay")
INTC = DtDevice("/intc", ("ti,am33xx-intc",), ((0x48200000, 0x1000),), None, (), "okay")
NODES = (
    GIC,
    GPC,
    INTC,
    DtDevice(
        "/gpt", ("fsl,imx6ul-gpt", "fsl,imx6sx-gpt"), ((0x02098000, 0x4000),), "/gpc", (0, 55, 4), "okay"
    ),
    DtDevice("/uart2", ("fsl,imx6ul-uart",), ((0x02020000, 0x4000),), "/gpc", (0, 26, 4), "okay"),
    DtDevice("/i2c", ("fsl,imx21-i2c",), ((0x021A0000, 0x4000),), "/gpc", (0, 36, 4), "okay"),
    DtDevice("/dmtimer2", ("ti,am335x-timer",), ((0x48040000, 0x400),), "/intc", (68,), "okay"),
    DtDevice("/dmtimer3", ("ti,am335x-timer",), ((0x48042000, 0x400),), "/intc", (69,), "okay"),
    DtDevice("/serial0", ("ti,am3352-uart",), ((0x44E09000, 0x2000),), "/intc", (72,), "okay"),
    DtDevice("/pl011", ("arm,pl011", "arm,primecell"), ((0x10009000, 0x1000),), "/gic", (0, 5, 4), "okay"),
    DtDevice("/sp804", ("arm,sp804", "arm,primecell"), ((0x10011000, 0x1000),), "/gic", (0, 2, 4), "okay"),
    DtDevice("/sysctl", ("arm,sp810",), ((0x10001000, 0x1000),), None, (), "okay"),
)
RAM_BASE = 0x60000000
ISA_WINDOW = 0x18000000
NAMES = (
    "start_kernel",
    "kernel_init",
    "do_one_initcall",
    "calibrate_delay",
    "time_init",
    "omap_intc_handle_irq",
    "gic_handle_irq",
    "panic",
    "make_task_dead",
    "__und_fault",
    "__warn",
    "dump_stack",
    "__schedule",
    "dmtimer_probe",
    "pl011_probe",
    "omap_irq_soft_reset",
    "clk_prepare",
    "strcmp",
    "__gnu_mcount_nc",
    "_etext",
)
SYMBOLS = tuple(Symbol(0xC0008000 + 0x1000 * index, "T", name) for index, name in enumerate(NAMES))
PCS = [symbol.address + offset for symbol in SYMBOLS for offset in (0, 4, 0x10)] + [0xC1000000]
OFFSETS = (0, 4, 0x10, 0x14, 0x40, 0x98)
ISA_PORTS = [ISA_WINDOW + port for port in (0x70, 0x71, 0x3F8, 0x3FD)]
ADDRESSES = sorted(
    {base + offset for node in NODES for base, _ in node.reg for offset in OFFSETS}
    | set(ISA_PORTS)
    | {0xF1012000, 0xF1012004, RAM_BASE + 0x10}
)
# Where the operators look first, drawn as often as all the rest together.
FOCUS_FUNCTIONS = [symbol.address for symbol in SYMBOLS if symbol.name in ("calibrate_delay", "clk_prepare")]
ENDINGS = [ExitReason.EXIT_BUDGET, ExitReason.EXIT_TIMEOUT, ExitReason.EXIT_PANIC, *ExitReason.values()]
ARM_CPUS = ("cortex-a9", "cortex-a8", "cortex-a15")
TARGET_COMMAND_LINES = ("", "rdinit=/init", "rdinit=/init lpj=100000", "clocksource=dmtimer")
LOG_LINES = (
    "Calibrating delay loop...",
    "Internal error: Oops - undefined instruction: 0 [#1] ARM",
    "kernel BUG at drivers/clk/clk.c:100!",
    "Unable to handle kernel NULL pointer dereference at virtual address 00000000",
    "random: crng init done",
)


def every_operator() -> dict[str, Operator]:
    """Every propose function (`propose`, `propose_*`) of every module in explorer/search/operators/,
    by module name (and the function's suffix, for a module with one operator per tier)."""
    found = {}
    for module in pkgutil.iter_modules(operators_package.__path__):
        imported = importlib.import_module(f"{operators_package.__name__}.{module.name}")
        for name, value in vars(imported).items():
            if name == "propose" or name.startswith("propose_"):
                found[f"{module.name}{name.removeprefix('propose')}"] = value
    return found


OPERATORS = every_operator()


def test_the_engine_asks_every_operator_module() -> None:
    phases = OperatorPhases()
    asked = {*phases.structural, *(propose for tier in phases.stall_tiers for propose in tier)}
    assert asked == set(OPERATORS.values())


@st.composite
def firmwares(draw: st.DrawFn) -> Firmware:
    nodes = draw(st.none() | st.lists(st.sampled_from(NODES), unique=True, min_size=1))
    tree = (
        DeviceTreeFacts("given", None, (), ((RAM_BASE, 0x20000000),), tuple(nodes), None, None)
        if nodes is not None
        else None
    )
    return arm_firmware(SYMBOLS, device_tree=tree)


rules = st.builds(
    MmioRule,
    address=st.sampled_from(ADDRESSES),
    constant=st.integers(0, 2**32 - 1),
) | st.sampled_from(ADDRESSES).flatmap(
    lambda address: st.sampled_from(
        [
            MmioRule(address=address, echo=Echo()),
            MmioRule(address=address, random=SeededRandom()),
            MmioRule(address=address, sequence=Sequence(values=[0, 1, 0xFFFFFFFF])),
            MmioRule(address=address, forced_bits=ForcedBits(and_mask=0xFFFFFFFE, or_mask=1)),
        ]
    )
)


@st.composite
def states(draw: st.DrawFn, firmware: Firmware) -> State:
    """A machine of the kind the search builds, sometimes one no runner accepts (a tick beside an
    interrupt controller): the guard must answer for the children of those too."""
    target = draw(st.sampled_from(("arm", "arm", "arm", "mipsel")))
    state = State(
        target=target,
        cpu=draw(st.sampled_from(ARM_CPUS)) if target == "arm" else "24Kf",
        seed=draw(st.integers(0, 2**64 - 1)),
        random_unruled_reads=draw(st.booleans()),
        instruction_budget=draw(st.sampled_from((0, 1_000_000, 6_000_000_000))),
    )
    state.ram.add(base=RAM_BASE, size=draw(st.sampled_from((0x10000000, 0x20000000))))
    tree = firmware.device_tree
    model = placement(GIC, tree, state.cpu) if tree is not None and target == "arm" else None
    if model is not None and draw(st.booleans()):
        state.interrupt_controller.CopyFrom(model.device(()))
    if target == "arm" and draw(st.booleans()):
        base, size = draw(st.sampled_from([INTC.reg[0], GPC.reg[0]]))
        state.tick.period_ns, state.tick.ack_base, state.tick.ack_size = 4_000_000, base, size
    if draw(st.booleans()):
        state.devices.append(Device(type="pl011", mmio=[0x10009000]))
    if target != "arm" and draw(st.booleans()):
        state.isa.io_base = ISA_WINDOW
        state.isa_devices.append(Device(type="mc146818rtc"))
    for rule in draw(st.lists(rules, max_size=6, unique_by=lambda rule: rule.address)):
        state.mmio_rules.append(rule)
    for symbol in draw(st.lists(st.sampled_from(SYMBOLS), max_size=3, unique=True)):
        state.nops.append(Nop(address=symbol.address, return_value=draw(st.sampled_from((0, 2**32 - 19)))))
    state.boot.cmdline = " ".join(
        draw(st.lists(st.sampled_from(("lpj=100000", "clocksource=jiffies")), unique=True))
    )
    return state


accesses = st.builds(
    MmioAccess,
    address=st.sampled_from(ADDRESSES) | st.sampled_from(ISA_PORTS),
    size=st.sampled_from((1, 2, 4)),
    value=st.integers(0, 2**32 - 1),
    pc=st.sampled_from(PCS),
    is_write=st.booleans(),
)
hot_loops = st.builds(
    lambda start, iterations, reads: HotLoop(
        start_pc=start, end_pc=start + 0x10, iterations=iterations, mmio_reads=reads
    ),
    st.sampled_from(PCS),
    st.sampled_from((10, 1_000_000, 5_000_000)),
    st.lists(st.sampled_from(ADDRESSES), max_size=3, unique=True),
)
frames = st.builds(
    Frame,
    function=st.sampled_from(FOCUS_FUNCTIONS)
    | st.sampled_from([symbol.address for symbol in SYMBOLS] + [0xC1000000]),
    return_address=st.sampled_from(PCS),
)


ADDRESS_OF = {symbol.name: symbol.address for symbol in SYMBOLS}
# The innermost frames of a crash (a panic, an undefined instruction's oops), then anything.
CRASH_CHAINS = ((), ("panic",), ("panic", "make_task_dead", "__und_fault"), ("__warn", "dump_stack"))


@st.composite
def call_stacks(draw: st.DrawFn) -> CallStack:
    chain = [
        Frame(function=ADDRESS_OF[name], return_address=draw(st.sampled_from(PCS)))
        for name in draw(st.sampled_from(CRASH_CHAINS))
    ]
    return CallStack(frames=chain + draw(st.lists(frames, max_size=6)))


@st.composite
def results(draw: st.DrawFn) -> RunResult:
    """A run as the runner reports one: any ending, milestones in boot order, accesses in order."""
    touched = draw(st.lists(accesses, max_size=20))
    for order, access in enumerate(touched):
        access.order = order
    return RunResult(
        exit=Exit(
            reason=draw(st.sampled_from(ENDINGS)),
            icount=draw(st.integers(0, 10**10)),
            detail=draw(
                st.sampled_from(("", "Attempted to kill the idle task!", "VFS: Unable to mount root"))
            ),
        ),
        milestones=[{"name": name} for name in MILESTONES[: draw(st.integers(0, len(MILESTONES)))]],
        mmio_accesses=touched,
        mmio_accesses_dropped=draw(st.sampled_from((0, 0, 5))),
        hot_loops=draw(st.lists(hot_loops, max_size=3)),
        call_stack=draw(call_stacks()),
        log="\n".join(draw(st.lists(st.sampled_from(LOG_LINES), max_size=4))).encode(),
        coverage=Coverage(instructions=draw(st.integers(0, 10**6)), functions=draw(st.integers(0, 10**4))),
    )


def proposed(context: Context) -> list[Child]:
    """Every operator's children of the context's state (any exception fails the test)."""
    return [child for propose in OPERATORS.values() for child in propose(context)]


@st.composite
def contexts(draw: st.DrawFn) -> Context:
    """A state with its lineage, walked as the engine walks: each step a bootable child of any
    operator (the engine never boots the others), with a random run."""
    firmware = draw(firmwares())
    target = Target(Path("/k"), cmdline=draw(st.sampled_from(TARGET_COMMAND_LINES)))
    state = draw(states(firmware))
    lineage = [Evaluated(state_id(state), state, draw(results()))]
    for _ in range(draw(st.integers(0, 4))):
        children = [
            child
            for child in proposed(Context(firmware, target, tuple(lineage)))
            if unbootable(child.state, target, firmware) is None
        ]
        if not children:
            break
        child = draw(st.sampled_from(children))
        lineage.insert(0, Evaluated(state_id(child.state), child.state, draw(results()), child))
    return Context(firmware, target, tuple(lineage[:LINEAGE_DEPTH]))


@settings(max_examples=300)
@given(contexts())
def test_no_operator_raises_and_every_child_is_bootable_or_dropped_with_a_reason(context: Context) -> None:
    parent = context.current.state
    before = parent.SerializeToString(deterministic=True)
    parent_bootable = unbootable(parent, context.target, context.firmware) is None
    for name, propose in OPERATORS.items():
        for child in propose(context):
            assert child.operator and child.reason, name
            why = unbootable(child.state, context.target, context.firmware)
            # The guard's answer: None (boot it) or the line it is dropped with.
            assert why is None or why.startswith("config: "), (name, why)
            # The operators' own contract: a bootable state's children are bootable.
            assert not parent_bootable or why is None, (name, child.reason, why)
    assert parent.SerializeToString(deterministic=True) == before
