"""Free-running counters: a register a kernel reads to tell time must answer increasing values.

The mechanism: a kernel measures time by reading a free-running counter of an SoC timer. A timer
driver registers it as the delay timer (register_current_timer_delay: udelay and ndelay become
__timer_delay, `while (get_cycles() - start < cycles)` over read_current_timer), as sched_clock
(sched_clock_register with a read callback) and as a clocksource (clocksource_mmio_init with
clocksource_mmio_readl_up/down, read by ktime_get, which readx_poll_timeout's timeouts compare
with). A register no model answers reads the same value every time (0, or whatever a rule pins),
so a delay loop never ends, nor does a timeout loop that reads its time from the counter: the run
spins in it until the stuck-poll limit or its instruction budget.

When: the run being expanded ended reading a device in a loop: the runner cut it at the
stuck-read limit (explorer.runner.analysis.stuck_poll: one address read that many times; a
delay loop calls its read through read_current_timer, so the loop and the read are in different
functions), or it ended spinning in a loop that polls MMIO (bitwise.final_spin); and the kernel
was telling time there: a function of TIME_READERS is on the call stack at the exit, or made one
of the address's reads. Which addresses: those read so (the stuck one first) whose every read in
the run answered the same value, since a counter that moves is not what stops a loop (an address
without a rule reads random values, and a delay loop over them ends by chance; one a rule pins,
a constant or a sequence's last value, never does), and that no counter answers yet, at most
MAX_ADDRESSES. What: two children per address: it counts up, and it counts down
(clocksource_mmio_readl_down inverts a down-counter; a delay loop ends with either direction).
The machine's `counter` rule counts the ticks of the guest's virtual time at COUNTER_HZ, so the
values are the same in every run (icount). A counting address still counts toward the
stuck-read limit: a loop that reads it millions of times waits for something else (jiffies that
no tick advances, a secondary CPU's pen), and ends as cheaply as any other poll. A rule the
address had before is replaced in place.

Invariants: never modifies the states it is given; never proposes for an address a counter
already answers, so a lineage asks once per address; each child differs from the expanded state
in one rule.
"""

from __future__ import annotations

from explorer.firmware.model import SymbolTable
from explorer.runner.analysis import Place, place, stuck_poll
from explorer.runner.machine_config_pb2 import Counter, MmioRule
from explorer.runner.rehost_pb2 import RunResult
from explorer.search.operators import Child, Context, Evaluated
from explorer.search.operators.bitwise import final_spin, with_rule

OPERATOR = "timer_counters"
# The counter's rate. The kernel reads the real rate from the device tree or a clock driver and
# converts with it, so a different rate only scales its delays and its clock; a crystal's 24 MHz,
# the commonest SoC timer input, keeps them near what the kernel expects.
COUNTER_HZ = 24_000_000
# Addresses given a counter per proposal: a poll of a status register with a timeout reads two
# (the status and the counter), a 64-bit counter read as two words two as well.
MAX_ADDRESSES = 2
# The kernel's generic paths that read a free-running counter (arch/arm/lib/delay.c,
# kernel/time/sched_clock.c, drivers/clocksource/mmio.c, kernel/time/timekeeping.c): a board's
# own read function is called from these, or is one of them.
TIME_READERS = frozenset(
    {
        "__timer_delay",
        "__timer_const_udelay",
        "__timer_udelay",
        "read_current_timer",
        "sched_clock",
        "sched_clock_register",
        "clocksource_mmio_readl_up",
        "clocksource_mmio_readl_down",
        "clocksource_mmio_readw_up",
        "clocksource_mmio_readw_down",
        "ktime_get",
        "ktime_get_mono_fast_ns",
    }
)


def propose(context: Context) -> list[Child]:
    current = context.current
    symbols = context.firmware.symbols
    spin = final_spin(current.result, symbols)
    stuck = stuck_poll(current.result.exit.detail)
    read: list[int] = [stuck.address] if stuck is not None else []
    read += list(spin.polled) if spin is not None else []
    if not read:
        return []
    counting = {rule.address for rule in current.state.mmio_rules if rule.WhichOneof("value") == "counter"}
    values = _values_read(current.result)
    on_stack = _telling_time(current.result, symbols)
    addresses = [
        address
        for address in dict.fromkeys(read)
        if address not in counting
        and len(values.get(address, set())) <= 1
        and (on_stack or _read_by_time_reader(current.result, symbols, address))
    ][:MAX_ADDRESSES]
    if stuck is not None and stuck.pc is not None:
        where = place(stuck.pc, symbols)
    else:
        where = spin.start if spin is not None else None
    return [_child(current, where, address, down) for address in addresses for down in (False, True)]


def _values_read(result: RunResult) -> dict[int, set[int]]:
    values: dict[int, set[int]] = {}
    for access in result.mmio_accesses:
        if not access.is_write:
            values.setdefault(access.address, set()).add(access.value)
    return values


def _telling_time(result: RunResult, symbols: SymbolTable) -> bool:
    """Whether a function of TIME_READERS is on the call stack at the exit (running or returned to)."""
    for frame in result.call_stack.frames:
        for address in (frame.function, frame.return_address):
            symbol = symbols.containing(address)
            if symbol is not None and symbol.name in TIME_READERS:
                return True
    return False


def _read_by_time_reader(result: RunResult, symbols: SymbolTable, address: int) -> bool:
    for access in result.mmio_accesses:
        if access.address == address and not access.is_write:
            symbol = symbols.containing(access.pc)
            if symbol is not None and symbol.name in TIME_READERS:
                return True
    return False


def _child(current: Evaluated, where: Place | None, address: int, down: bool) -> Child:
    direction = "down" if down else "up"
    rule = MmioRule(address=address, counter=Counter(hz=COUNTER_HZ, down=down))
    reason = (
        f"reads 0x{address:x} in a loop ({_named(where)}): a delay or timeout loop waits for a "
        f"free-running counter to move; 0x{address:x} counts {direction} at {COUNTER_HZ // 1_000_000} MHz"
    )
    detail = {"function": where.function if where else None, "address": address, "down": down}
    return Child(with_rule(current.state, rule), OPERATOR, reason, detail)


def _named(where: Place | None) -> str:
    if where is None:
        return "no code known"
    return where.function or f"0x{where.address:x}"
