"""The standard watch of a Linux boot: which kernel functions the plugin hooks, found by symbol.

A config that carries these hooks describes a run that reports the boot milestones, every
initcall, and ends on panic, halt, power-off, the first user-space instruction, or (for a run
that goes on past user space) where user space first waits for console input. Only what
the firmware's recovered symbols prove is hooked: a missing symbol means a missing hook, never
a guessed address. It must never decide what a run means: that is analysis.
"""

from __future__ import annotations

from explorer.firmware.model import Firmware
from explorer.runner.machine_config_pb2 import Hook, HookKind, MachineConfig

# Boot milestones in the order start_kernel and kernel_init reach them. prepare_namespace only
# runs when no initramfs provides rdinit, run_init_process when init is started.
MILESTONES = (
    "start_kernel",
    "setup_arch",
    "init_IRQ",
    "time_init",
    "calibrate_delay",
    "rest_init",
    "kernel_init",
    "prepare_namespace",
    "run_init_process",
)
HALTS = ("machine_halt", "machine_restart")
POWER_OFF = "machine_power_off"
INITCALL_RUNNER = "do_one_initcall"
PANIC = "panic"
# Fills each printk record's text (5.10 to 6.x); hooking its return gives the guest log
# without a console and without the log buffer's (data) symbol.
LOG_WRITER = "printk_sprint"
# start_kernel calls it right after ftrace_init, which turns every function's mcount call into a
# NOP: where that call is the function's second instruction it lands inside a NOP'd function's
# two-instruction patch, so the plugin writes its NOPs again here (5.10 to 6.x).
AFTER_CODE_PATCHING = "early_trace_init"
# Where user space first waits for console input: every read of a tty goes through its line
# discipline's read (tty_read -> n_tty_read), and every poll or select of one through its poll
# (tty_poll -> n_tty_poll; busybox ash's line editing polls the console before it reads). The
# kernel never reads or polls a tty itself, so only user space reaches them. The marker
# initramfs's shell waits on the console right after the marker, so a run past user space ends
# there deterministically (halt hooks: the plugin ends the run at the first instruction of
# either, the hook's name as the exit's detail) instead of idling until its budget ends.
# `explorer run` drops them with every other ending hook.
CONSOLE_INPUT = "console_input"
CONSOLE_INPUT_FUNCTIONS = ("n_tty_read", "n_tty_poll")
# Hooks named for what they mean rather than for their function (the name is the exit's detail).
_HOOK_NAMES = dict.fromkeys(CONSOLE_INPUT_FUNCTIONS, CONSOLE_INPUT)
# What the rehost plugin observes besides the hooks (not part of a state, so not in the config):
# the call stack at the exit, coverage, and loops run a million times in a row (a boot to user
# space has a few, in memset and the decompressor; a stuck poll is one).
STANDARD_OBSERVATION = ("callstack=on", "coverage=on", "hot_loops=1000000")


def kernel_hooks(firmware: Firmware) -> list[Hook]:
    """Hooks on every standard boot function the firmware's symbols locate, in boot order."""
    wanted = [(name, HookKind.HOOK_MILESTONE) for name in MILESTONES]
    wanted += [(INITCALL_RUNNER, HookKind.HOOK_INITCALL), (PANIC, HookKind.HOOK_PANIC)]
    wanted += [(name, HookKind.HOOK_HALT) for name in HALTS]
    wanted.append((POWER_OFF, HookKind.HOOK_POWEROFF))
    wanted += [(name, HookKind.HOOK_HALT) for name in CONSOLE_INPUT_FUNCTIONS]
    wanted.append((LOG_WRITER, HookKind.HOOK_LOG))
    wanted.append((AFTER_CODE_PATCHING, HookKind.HOOK_NOPS_AGAIN))
    hooks: list[Hook] = []
    for name, kind in wanted:
        address = firmware.symbols.address_of(name)
        # Aliases (one function under two names) get one hook: the plugin keys hooks by address.
        if address is not None and all(hook.address != address for hook in hooks):
            hooks.append(Hook(name=_HOOK_NAMES.get(name, name), address=address, kind=kind))
    return hooks


def watching_kernel(config: MachineConfig, firmware: Firmware) -> MachineConfig:
    """A copy of `config` with the standard hooks of `firmware` and its user-space boundary.

    Hooks the config already has (by address) are kept as they are; user_space_below is set
    from the kernel's PAGE_OFFSET when ingestion found one and the config gives none.
    """
    watched = MachineConfig()
    watched.CopyFrom(config)
    hooked = {hook.address for hook in config.hooks}
    watched.hooks.extend(hook for hook in kernel_hooks(firmware) if hook.address not in hooked)
    if not watched.user_space_below and firmware.page_offset is not None:
        watched.user_space_below = firmware.page_offset
    return watched
