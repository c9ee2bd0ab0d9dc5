"""NOP escalation: for a run that crashed, make the failing function return at once, then its callers.

The original design's answer to a driver that panics because its device is not there: walk up
the call stack at the crash past the panic path, NOP the first function that is the failing
code, and when the next run crashes again in the same place, NOP the next function up instead.
It never runs anything; it reads the call stack the rehost plugin reports at the run's exit.

What is a crash: a run that ended in `panic`, or any other ending (budget, timeout, halt) whose
stack at the exit holds a DYING function (die, make_task_dead, ...: a kernel stuck in or looping
through its own oops). Reports that return (WARN, "bad: scheduling from the idle thread!", whose
dump_stack a budget may well end in) are not crashes; a run that reached user space never is.

The panic path (PANIC_PATH, PANIC_PATH_PREFIXES) is the code that only reports or dies, read
off real stacks of the armmp kernel (6.1) and the ARM and MIPS trap code. An undefined
instruction in arch_timer_of_init (a Cubieboard's device tree on a Cortex-A9) stops as
    panic <- make_task_dead <- __und_fault <- arch_timer_of_init <- timer_probe <- time_init
A data abort goes through __dabt_svc, do_DataAbort, do_page_fault, die_kernel_fault, a BUG()
through the undefined-instruction path, a WARN with panic_on_warn through __warn and
check_panic_on_warn, a stack protector or a fortify check through __stack_chk_fail and
fortify_panic. The failing code starts just above the *outermost* panic-path frame: helpers the
panic path calls (printk, console drivers) lie inside it and are passed over whatever their
names, and the exception entries (__und_fault, __dabt_svc, ...) sit right below the function that
faulted, because an exception is not a call. A tail call leaves no frame: with no root fs,
    panic <- mount_root <- prepare_namespace
is what the plugin sees, panic's return address lying in mount_block_root (which mount_root
branched to); the function a panic-path frame returns into is the innermost failing frame.

Where the failing code ends (BOUNDARY): the boot's skeleton (start_kernel, kernel_init,
do_one_initcall, ...), whose NOP would skip the rest of the boot or every initcall; context
switches (__schedule, ...), past which the plugin's one shadow stack holds another task's frames
(the idle task's below kernel_init's, measured); interrupt entries, above which lies whatever
code the interrupt stopped, not a caller. The chain stops at a boundary frame, or after the first
frame a boundary function called. Never NOP'd either: a frame no symbol starts at (a NOP is
written at a function's first instruction, and only the symbols prove where that is), and
ftrace's stubs (TRAMPOLINES).

Return values: two children per NOP, 0 and -ENODEV. 0 is what int-returning init and probe
functions return on success (and NULL for pointer-returning ones, which their callers check);
-ENODEV makes the driver core and the initcall runner treat the device as absent, and as a
pointer it is ERR_PTR(-ENODEV), which IS_ERR() callers handle. Which one lets the boot go on
depends on the caller (0 may make it use what was never set up; -ENODEV may make it give up),
so the search boots both and keeps whichever goes further. For a void function both behave the
same and the second run is the price of not decoding the caller.

Similarity (`stack_similarity`): the longest common *outer* part of two call chains (innermost
first, compared by function address from the outermost frame in), over the length of the longer
chain. Outer-aligned because the callers are the context of a failure, and a NOP changes a chain
from the inside: when NOP'ing F makes its caller P crash, the new chain is the old one minus F.
So the new crash is compared with the old chain *above the NOP'd frame*: a crash that moved one
level up scores 1.0, one in another callee of P (a sibling of F, or something P does with what F
never set up) n/(n+1), one elsewhere low. Jaccard of function sets would count a helper reused
at another depth as shared and ignore the order; an innermost-aligned measure scores the moved
crash 0 by construction. Chains end at the boundary, so the skeleton every crash shares counts
for nothing: the next initcall failing after foo_init was NOP'd is a new crash, not a similar
one. At or above `SIMILAR` (70%, the original design's figure) the NOP did not fix the
failure, only moved it: escalate.

Escalation NOPs the next frame up the recorded chain and *drops* the deeper NOP: NOPs apply
kernel-wide, the deeper function is often a shared helper (a clock getter, a register accessor)
that the rest of the kernel needs, and NOP'ing its caller already keeps the failing path from
reaching it. When the new crash's own failing frame is not that next frame up (another callee of
it failed), that frame gets a fresh NOP as well, keeping the deeper one: the two children
together cover "the caller is broken" and "the next callee is broken". When nothing is left to
NOP above (the boundary, or only unnamed or tried frames), escalation stops and says so in the
reason of the fresh NOP it falls back to; with nothing to NOP at all there is no child.

Invariants: never modifies the states it is given; never NOPs a panic-path, boundary or
trampoline function, an address no symbol starts at, or a function this operator already NOP'd
anywhere in the lineage (so every escalation ends); each child differs from the expanded state
only in its NOPs, kept sorted by address. `detail` holds what the next generation reads back:
the failing chain (`stack`: [function, name] innermost first), which of its frames was NOP'd
(`frame`), its `address`, `name` and `return_value`, the NOP it replaced (`dropped`), and every
function NOP'd in the lineage so far (`tried`). The lineage is looked through: other operators'
children in between (a device mapped after the NOP) do not hide the NOP that came before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from explorer.firmware.model import SymbolTable
from explorer.runner.analysis import place, reached_user_space
from explorer.runner.machine_config_pb2 import Nop
from explorer.runner.rehost_pb2 import ExitReason, RunResult
from explorer.search.operators import Child, Context
from explorer.search.state import State, derive

OPERATOR = "nops"
# Stacks at least this similar mean the NOP moved the crash instead of fixing it.
SIMILAR = 0.70
# Both architectures the runner boots are 32-bit: a return value is a register's 32 bits.
REGISTER_MASK = 0xFFFF_FFFF
ENODEV = 19
RETURN_VALUES = ((0, "return 0"), (-ENODEV & REGISTER_MASK, "return -ENODEV"))

PANIC_PATH = frozenset(
    {
        # dying and reporting
        "panic",
        "nmi_panic",
        "make_task_dead",
        "do_exit",
        "die",
        "__die",
        "die_if_kernel",
        "oops_enter",
        "oops_exit",
        "__warn",
        "warn_slowpath_fmt",
        "warn_slowpath_null",
        "check_panic_on_warn",
        "report_bug",
        "dump_stack",
        "dump_stack_lvl",
        "show_stack",
        "__stack_chk_fail",
        "fortify_panic",
        "__fortify_panic",
        "__fortify_report",
        "usercopy_abort",
        "__list_add_valid",
        "__list_del_entry_valid",
        "__list_add_valid_or_report",
        "__list_del_entry_valid_or_report",
        "refcount_warn_saturate",
        "__div0",
        "Ldiv0",
        # ARM faults
        "do_undefinstr",
        "do_DataAbort",
        "do_PrefetchAbort",
        "do_page_fault",
        "do_translation_fault",
        "do_sect_fault",
        "do_bad_area",
        "do_bad",
        "do_alignment",
        "die_kernel_fault",
        "__do_kernel_fault",
        "arm_notify_die",
        "bad_mode",
        "baddataabort",
        # MIPS faults
        "do_ade",
        "do_be",
        "do_ri",
        "do_bp",
        "do_tr",
        "do_reserved",
        "do_mcheck",
        "__do_page_fault",
        "nmi_exception_handler",
        "handle_ade",
        "handle_adel_int",
        "handle_ades_int",
        "handle_ibe",
        "handle_dbe",
        "handle_ri",
        "handle_bp",
        "handle_tr",
        "handle_tlbl",
        "handle_tlbs",
        "handle_mod",
    }
)
# The panic path's functions that only run once the kernel has given up on the task: on the
# stack of a run that did not end in panic, they mean it crashed (the fault handlers do not: a
# vmalloc fault is handled and returns).
DYING = frozenset(
    {
        "panic",
        "nmi_panic",
        "make_task_dead",
        "die",
        "__die",
        "die_if_kernel",
        "die_kernel_fault",
        "__do_kernel_fault",
        "arm_notify_die",
        "bad_mode",
        # report and BUG(): they never return (the marvell kernel as a TS-209 hangs in
        # fortify_panic from parse_tag_cmdline, the BUG's oops never reaching panic)
        "fortify_panic",
        "__fortify_panic",
        "__stack_chk_fail",
        "usercopy_abort",
    }
)
# ARM exception entries (__und_fault, __dabt_svc, __pabt_svc, __und_invalid, ...) and the
# sanitizers' reports.
PANIC_PATH_PREFIXES = ("__und_", "__dabt_", "__pabt_", "__ubsan_handle_")
# The ARM CPU-specific abort decoders the exception entries call (v5t_early_abort,
# v4t_late_abort, v7_pabort, ...: the ARMv5 marvell kernel's data abort goes through
# v5t_early_abort): NOP'd, every later fault would be ignored and the boot spins.
PANIC_PATH_SUFFIXES = ("_early_abort", "_late_abort", "_pabort")
# The C library's leaves: a fault inside one is its caller's bad argument (the TS-209's
# mvebu_mbus_init hands strcmp a NULL name), and NOP'd, every caller in the kernel would get a
# wrong answer. Walked past like the panic path, so the caller is the failing frame.
LIBRARY_LEAVES = frozenset(
    {
        "strcmp", "strncmp", "strcasecmp", "strncasecmp", "strlen", "strnlen", "strcpy", "strncpy",
        "strscpy", "strlcpy", "strcat", "strlcat", "strchr", "strrchr", "strstr", "strsep",
        "memcpy", "memmove", "memset", "memcmp", "memchr", "memscan", "__memzero",
    }
)  # fmt: skip

BOUNDARY = frozenset(
    {
        # the boot's skeleton
        "start_kernel",
        "rest_init",
        "arch_call_rest_init",
        "kernel_init",
        "kernel_init_freeable",
        "do_basic_setup",
        "do_initcalls",
        "do_initcall_level",
        "do_one_initcall",
        "do_pre_smp_initcalls",
        "ret_from_fork",
        "kthread",
        "worker_thread",
        "process_one_work",
        "secondary_start_kernel",
        "cpu_startup_entry",
        "do_idle",
        # context switches: below them lie another task's frames (the shadow stack is the CPU's)
        "__schedule",
        "schedule",
        "schedule_idle",
        "__switch_to",
        # interrupt entries: what lies above them was interrupted, it did not call
        "__irq_svc",
        "__irq_usr",
        "generic_handle_arch_irq",
        "handle_int",
        "plat_irq_dispatch",
        "do_IRQ",
    }
)
# ftrace's entry stubs: called at every traced function's entry with a calling convention of
# their own (the caller's lr on the stack), so a plain return there would break every caller,
# and their frames linger on the shadow stack (their return is not the one pushed): not callers.
TRAMPOLINES = frozenset({"__gnu_mcount_nc", "_mcount", "mcount", "ftrace_caller", "ftrace_regs_caller"})
# Log lines that name the fault behind a panic such as "Attempted to kill the idle task!".
FAULT_MARKERS = ("Internal error: ", "Unable to handle kernel ", "kernel BUG at ")


def stack_similarity(first: Sequence[int], second: Sequence[int]) -> float:
    """Longest common outer part of two call chains (innermost first) over the longer's length.

    Symmetric, in [0, 1], 1.0 for equal chains (two empty chains are equal).
    """
    longer = max(len(first), len(second))
    if longer == 0:
        return 1.0
    shared = 0
    for outer_first, outer_second in zip(reversed(first), reversed(second), strict=False):
        if outer_first != outer_second:
            break
        shared += 1
    return shared / longer


def is_panic_path(name: str | None) -> bool:
    return name is not None and (
        name in PANIC_PATH
        or name in LIBRARY_LEAVES
        or name.startswith(PANIC_PATH_PREFIXES)
        or name.endswith(PANIC_PATH_SUFFIXES)
    )


@dataclass(frozen=True)
class Crash:
    """The failing code of a crashed run: its frames above the panic path, below the boundary."""

    # (function entry, its name when a symbol starts there), innermost first.
    frames: tuple[tuple[int, str | None], ...]
    message: str  # for people: the panic and the fault behind it

    def chain(self, start: int) -> tuple[int, ...]:
        """The function addresses from frame `start` outward."""
        return tuple(function for function, _ in self.frames[start:])

    def describe(self) -> str:
        """'foo <- bar <- baz', innermost first."""
        return " <- ".join(name or f"0x{function:x}" for function, name in self.frames)


def crash_of(result: RunResult, symbols: SymbolTable) -> Crash | None:
    """The crash a run ended in, or None: not a crash, or no code of its own to NOP.

    Where the crash starts: in a panicked run, at its innermost panic-path frame; in any other
    run, at its innermost DYING frame (a report such as "bad: scheduling from the idle thread!"
    returns, and a budget that ends inside its dump_stack is no crash). From there outward to
    the boundary (the first boundary frame, excluded, or the first frame a boundary function
    called, included), the failing code is what lies above the outermost panic-path frame.
    A tail call leaves no frame (mount_root branches to mount_block_root, which calls panic):
    when that panic-path frame returns into a function that is not the next frame's, that
    function is the innermost failing frame. TRAMPOLINES frames are left out.
    """
    if reached_user_space(result):
        return None
    frames = result.call_stack.frames
    names = [_function_name(frame.function, symbols) for frame in frames]
    callers = [place(frame.return_address, symbols) for frame in frames]
    panicked = result.exit.reason == ExitReason.EXIT_PANIC
    start = next(
        (index for index, name in enumerate(names) if (is_panic_path(name) if panicked else name in DYING)),
        None,
    )
    if start is None:
        return None
    end = len(frames)
    for index in range(start, len(frames)):
        if names[index] in BOUNDARY or callers[index].function in BOUNDARY:
            end = index if names[index] in BOUNDARY else index + 1
            break
    outermost = max(index for index in range(start, end) if is_panic_path(names[index]))
    own = [(frames[index].function, names[index]) for index in range(outermost + 1, end)]
    own = [(function, name) for function, name in own if name not in TRAMPOLINES]
    called_panic = callers[outermost]
    if _may_nop(called_panic.function) and (not own or own[0][1] != called_panic.function):
        own.insert(0, (called_panic.address - called_panic.offset, called_panic.function))
    return Crash(tuple(own), _crash_message(result)) if own else None


def propose(context: Context) -> list[Child]:
    current = context.current
    crash = crash_of(current.result, context.firmware.symbols)
    if crash is None:
        return []
    made = [evaluated.made_by for evaluated in context.lineage if evaluated.made_by is not None]
    nop_history = [child for child in made if child.operator == OPERATOR]
    tried = {int(address) for child in nop_history for address in child.detail["tried"]}
    tried |= {nop.address for nop in current.state.nops}
    where = f"{crash.message} in {crash.describe()}: "
    fresh = _nop_target(crash, 0, tried)
    if not nop_history:
        return _children(current.state, crash, fresh, tried, None, where)
    latest = nop_history[0].detail
    recorded = Crash(tuple((int(function), name) for function, name in latest["stack"]), "")
    above_nop = int(latest["frame"]) + 1
    similarity = stack_similarity(crash.chain(0), recorded.chain(above_nop))
    if similarity < SIMILAR:
        return _children(current.state, crash, fresh, tried, None, where)
    again = f"{where}{similarity:.0%} like the crash that NOP'd {latest['name']}, "
    up = _nop_target(recorded, above_nop, tried)
    if up is None:
        return _children(current.state, crash, fresh, tried, None, f"{again}nothing left to NOP above it; ")
    deeper = int(latest["address"])
    dropped = deeper if any(nop.address == deeper for nop in current.state.nops) else None
    escalated = _children(current.state, recorded, up, tried, dropped, f"{again}so one frame up: ")
    if fresh is None or crash.frames[fresh][0] == recorded.frames[up][0]:
        return escalated
    beside = f"{again}but failing in {crash.frames[fresh][1]}, which may be broken itself: "
    return escalated + _children(current.state, crash, fresh, tried, None, beside)


def _nop_target(crash: Crash, start: int, tried: set[int]) -> int | None:
    """The first frame from `start` outward that may be NOP'd and was not tried, or None."""
    for index in range(start, len(crash.frames)):
        function, name = crash.frames[index]
        if _may_nop(name) and function not in tried:
            return index
    return None


def _may_nop(name: str | None) -> bool:
    return name is not None and not is_panic_path(name) and name not in BOUNDARY and name not in TRAMPOLINES


def _children(
    state: State, crash: Crash, frame: int | None, tried: set[int], dropped: int | None, reason: str
) -> list[Child]:
    """One child per return value NOP'ing `crash`'s frame `frame`, without the NOP at `dropped`."""
    if frame is None:
        return []
    address, name = crash.frames[frame]
    dropping = f", dropping the NOP of {_nop_name(state, dropped)}" if dropped is not None else ""
    detail: dict[str, Any] = {
        "stack": [[function, function_name] for function, function_name in crash.frames],
        "frame": frame,
        "address": address,
        "name": name,
        "dropped": dropped,
        "tried": sorted(tried | {address}),
    }
    return [
        Child(
            state=_with_nop(state, Nop(address=address, return_value=value, name=name), dropped),
            operator=OPERATOR,
            reason=f"{reason}NOP {name} ({spelled}{dropping})",
            detail={**detail, "return_value": value},
        )
        for value, spelled in RETURN_VALUES
    ]


def _with_nop(state: State, nop: Nop, dropped: int | None) -> State:
    """`state` plus `nop`, less the NOP at `dropped`; NOPs sorted by address, so that the same set
    of NOPs reached in another order is the same state."""

    def change(child: State) -> None:
        kept = [existing for existing in child.nops if existing.address != dropped]
        del child.nops[:]
        child.nops.extend(sorted([*kept, nop], key=lambda each: each.address))

    return derive(state, change)


def _nop_name(state: State, address: int) -> str:
    return next((nop.name for nop in state.nops if nop.address == address), f"0x{address:x}")


def _function_name(function: int, symbols: SymbolTable) -> str | None:
    """The symbol starting at `function`; None when none does (no NOP can be placed there)."""
    where = place(function, symbols)
    return where.function if where.offset == 0 else None


def _crash_message(result: RunResult) -> str:
    """For people: "panic 'MESSAGE' after 'FAULT'", or "'FAULT', ENDING while handling it" for a run
    that ended otherwise inside an oops; FAULT is the guest log's last fault line, if any."""
    lines = result.log.decode(errors="replace").splitlines()
    # The last fault before the end: an earlier one may have been survived.
    fault = next((line.strip() for line in reversed(lines) if line.startswith(FAULT_MARKERS)), None)
    if result.exit.reason == ExitReason.EXIT_PANIC:
        return f"panic '{result.exit.detail}'" + (f" after '{fault}'" if fault else "")
    ending = ExitReason.Name(result.exit.reason).removeprefix("EXIT_").lower()
    return (f"'{fault}'" if fault else "an oops") + f", {ending} while handling it"
