"""The standard hooks of a kernel: exactly what its symbols prove, in boot order, never a guess."""

from __future__ import annotations

import dataclasses

from explorer.firmware.model import Firmware, Symbol, SymbolTable
from explorer.runner.config import validate
from explorer.runner.kernel_hooks import CONSOLE_INPUT, MILESTONES, kernel_hooks, watching_kernel
from explorer.runner.machine_config_pb2 import Hook, HookKind, MachineConfig
from tests.helpers import arm_firmware

PAGE_OFFSET = 0xC0000000
NAMES = (
    *MILESTONES,
    "do_one_initcall",
    "panic",
    "machine_halt",
    "machine_restart",
    "machine_power_off",
    "printk_sprint",
    "early_trace_init",
    "n_tty_read",
    "n_tty_poll",
)


def firmware(names: tuple[str, ...], page_offset: int | None = PAGE_OFFSET) -> Firmware:
    symbols = tuple(Symbol(0xC0100000 + 0x100 * index, "T", name) for index, name in enumerate(names))
    return arm_firmware(symbols, page_offset=page_offset)


def arm_config() -> MachineConfig:
    config = MachineConfig(target="arm", cpu="cortex-a9")
    config.ram.add(base=0x60000000, size=0x1000000)
    config.boot.kernel = "/k"
    return config


def test_every_standard_function_is_hooked_with_its_kind() -> None:
    hooks = kernel_hooks(firmware(NAMES))
    kinds = {hook.name: hook.kind for hook in hooks}
    assert [hook.name for hook in hooks if hook.kind == HookKind.HOOK_MILESTONE] == list(MILESTONES)
    assert kinds["do_one_initcall"] == HookKind.HOOK_INITCALL
    assert kinds["panic"] == HookKind.HOOK_PANIC
    assert kinds["machine_halt"] == kinds["machine_restart"] == HookKind.HOOK_HALT
    assert kinds["machine_power_off"] == HookKind.HOOK_POWEROFF
    assert kinds["printk_sprint"] == HookKind.HOOK_LOG
    assert kinds["early_trace_init"] == HookKind.HOOK_NOPS_AGAIN
    # The tty line discipline's read and poll end the run like a halt, named for what they mean.
    waits = [hook for hook in hooks if hook.name == CONSOLE_INPUT]
    assert [hook.kind for hook in waits] == [HookKind.HOOK_HALT] * 2
    assert [hook.address for hook in waits] == [
        0xC0100000 + 0x100 * NAMES.index(name) for name in ("n_tty_read", "n_tty_poll")
    ]
    assert all(
        hook.address == 0xC0100000 + 0x100 * NAMES.index(hook.name) for hook in hooks if hook not in waits
    )


def test_a_function_the_symbols_do_not_name_is_not_hooked() -> None:
    hooks = kernel_hooks(firmware(("start_kernel", "panic")))
    assert [hook.name for hook in hooks] == ["start_kernel", "panic"]


def test_two_names_of_one_function_give_one_hook() -> None:
    aliased = firmware(("machine_halt",))
    symbols = (*aliased.symbols.symbols, Symbol(0xC0100000, "T", "machine_power_off"))
    aliased = dataclasses.replace(aliased, symbols=SymbolTable(symbols, "kallsyms", 0xC0100000, ""))
    assert [hook.name for hook in kernel_hooks(aliased)] == ["machine_halt"]


def test_watching_a_kernel_keeps_the_config_own_hooks_and_bound() -> None:
    config = arm_config()
    config.hooks.append(Hook(name="my_panic", address=0xC0100000 + 0x100 * NAMES.index("panic"), kind=1))
    config.user_space_below = 0x80000000
    watched = watching_kernel(config, firmware(NAMES))
    validate(watched)
    assert watched.user_space_below == 0x80000000
    assert [hook.name for hook in watched.hooks].count("panic") == 0
    assert watched.hooks[0].name == "my_panic" and len(watched.hooks) == len(NAMES)
    assert not config.hooks[1:]  # the given config is left as it was


def test_watching_a_kernel_sets_user_space_from_page_offset_when_known() -> None:
    assert watching_kernel(arm_config(), firmware(NAMES)).user_space_below == PAGE_OFFSET
    assert watching_kernel(arm_config(), firmware(NAMES, page_offset=None)).user_space_below == 0
