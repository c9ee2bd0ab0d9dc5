"""The found machine for people: the search run's machine and NOPs, nothing that ends or watches it."""

from __future__ import annotations

from pathlib import Path

import pytest

from explorer.errors import BadInput, RunnerError
from explorer.runner.command import DETERMINISTIC_TIME
from explorer.runner.interactive import (
    FORWARD_DEFAULT_ADDRESS,
    PAST_USER_SPACE,
    Forward,
    Network,
    for_people,
    interactive_command,
)
from explorer.runner.kernel_hooks import CONSOLE_INPUT
from explorer.runner.machine_config_pb2 import HookKind, MachineConfig, MmioRule

QEMU = Path("/q/bin/qemu-system-arm")
PLUGIN = Path("/q/lib/librehost.so")


def searched_config(*, nops: bool) -> MachineConfig:
    """A config as `bootable` gives the runner: the machine, the search's ends and hooks, maybe NOPs."""
    config = MachineConfig(
        target="arm",
        cpu="cortex-a9",
        seed=7,
        instruction_budget=6_000_000_000,
        stuck_reads=3_000_000,
        idle_deadline_ns=96_000_000_000,
        mmio_event_limit=4096,
        user_space_below=0xC0000000,
        random_unruled_reads=True,
    )
    config.ram.add(base=0x60000000, size=0x20000000)
    config.devices.add(type="pl011", mmio=[0x10009000])
    config.mmio_rules.append(MmioRule(address=0x10000000, constant=0x1190F500))
    config.boot.kernel = "/k/vmlinuz"
    config.boot.cmdline = "rdinit=/init console=ttyAMA0"
    config.hooks.add(name="start_kernel", address=0xC1200C28, kind=HookKind.HOOK_MILESTONE)
    config.hooks.add(name="panic", address=0xC0A4E1F8, kind=HookKind.HOOK_PANIC)
    config.hooks.add(name="early_trace_init", address=0xC1210000, kind=HookKind.HOOK_NOPS_AGAIN)
    config.hooks.add(name=CONSOLE_INPUT, address=0xC0600000, kind=HookKind.HOOK_HALT)
    if nops:
        config.nops.add(address=0xC0200000, return_value=0xFFFFFFED, name="omap_irq_soft_reset")
    return config


def test_the_machine_is_kept_whole_and_nothing_ends_or_watches_the_run() -> None:
    searched = searched_config(nops=True)
    people = for_people(searched)
    for field in (
        "target",
        "cpu",
        "seed",
        "ram",
        "devices",
        "mmio_rules",
        "boot",
        "nops",
        "random_unruled_reads",
    ):
        assert getattr(people, field) == getattr(searched, field), field
    assert (people.instruction_budget, people.stuck_reads, people.idle_deadline_ns) == (0, 0, 0)
    assert (people.mmio_event_limit, people.events_fd) == (0, 0)
    # What rewrites the NOPs after the kernel patched its code stays; observing and ending hooks go.
    assert [hook.name for hook in people.hooks] == ["early_trace_init"]
    assert people.user_space_below == searched.user_space_below


def test_the_plugin_writes_the_nops_and_goes_on_past_user_space(tmp_path: Path) -> None:
    people = for_people(searched_config(nops=True))
    command = interactive_command(QEMU, people, tmp_path / "m.json", PLUGIN, None)
    plugin = command[command.index("-plugin") + 1].split(",")
    assert plugin == [
        str(PLUGIN),
        "nops_again=0xc1210000",
        "nop=0xc0200000:0xffffffed",
        "user_below=0xc0000000",
        PAST_USER_SPACE,
    ]
    assert " ".join(DETERMINISTIC_TIME) in " ".join(command)


def test_without_nops_no_plugin_runs(tmp_path: Path) -> None:
    people = for_people(searched_config(nops=False))
    assert (list(people.hooks), people.user_space_below) == ([], 0)
    assert "-plugin" not in interactive_command(QEMU, people, tmp_path / "m.json", PLUGIN, None)


def test_nops_without_a_plugin_are_refused(tmp_path: Path) -> None:
    with pytest.raises(RunnerError, match="no rehost plugin"):
        interactive_command(QEMU, for_people(searched_config(nops=True)), tmp_path / "m.json", None, None)


def test_the_console_and_monitor_share_the_terminal_and_gdb_listens_on_localhost(tmp_path: Path) -> None:
    command = interactive_command(
        QEMU, for_people(searched_config(nops=False)), tmp_path / "m.json", None, 1234
    )
    joined = " ".join(command)
    assert "-serial chardev:console" in joined
    assert "-chardev stdio,id=console,mux=on,signal=off" in joined
    assert "-mon chardev=console,mode=readline" in joined
    assert command[-2:] == ["-gdb", "tcp:127.0.0.1:1234"]
    assert "-serial stdio" not in joined


def test_without_a_network_the_machine_gets_no_nic_backend(tmp_path: Path) -> None:
    command = interactive_command(
        QEMU, for_people(searched_config(nops=False)), tmp_path / "m.json", None, None
    )
    assert "-nic" not in command and "-netdev" not in command


def test_the_network_is_user_mode_with_one_hostfwd_per_forward(tmp_path: Path) -> None:
    network = Network((Forward.parse("8080:80"), Forward.parse("0.0.0.0:2222:22")))
    command = interactive_command(
        QEMU, for_people(searched_config(nops=False)), tmp_path / "m.json", None, None, network
    )
    assert command[-2:] == ["-nic", "user,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=tcp:0.0.0.0:2222-:22"]


def test_a_forward_without_an_address_listens_on_the_loopback_only() -> None:
    assert Forward.parse("8080:80") == Forward(FORWARD_DEFAULT_ADDRESS, 8080, 80)
    assert FORWARD_DEFAULT_ADDRESS == "127.0.0.1"
    assert Forward.parse("10.1.2.3:1:65535") == Forward("10.1.2.3", 1, 65535)


@pytest.mark.parametrize(
    "text", ["8080", "8080:", ":80", "a:8080:80", "1.2.3:8080:80", "0:80", "8080:65536", "8080-80"]
)
def test_a_forward_that_is_not_address_hostport_guestport_is_refused(text: str) -> None:
    with pytest.raises(BadInput, match="--forward"):
        Forward.parse(text)
