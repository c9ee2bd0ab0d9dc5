"""The test firmware (tests/firmware/) on the real runner and through the real search: each program
stops a naive boot where one search operator must get it past.

Runner level: a MachineConfig per program (RAM where kernel.ld links it, the standard watch from
its ingested symbols), booted by explorer.runner.launch with the rehost plugin and read through
explorer.runner.analysis, shows where each program stops and that the change the operator
should make gets it to the end. Search level: `explorer search` and `explorer show --json` as a
person runs them, in a subprocess; each search must boot its program to the end (run_init_process,
then machine_power_off) and name the operators that got it there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from explorer.firmware.ingest import ingest
from explorer.runner.analysis import RunAnalysis, analyse
from explorer.runner.build import PLUGIN
from explorer.runner.command import Plugin
from explorer.runner.config import config_from_dict, read_config
from explorer.runner.containment import RunnerLimits
from explorer.runner.kernel_hooks import STANDARD_OBSERVATION, watching_kernel
from explorer.runner.launch import run
from explorer.runner.machine_config_pb2 import MachineConfig
from explorer.runner.rehost_pb2 import RunResult
from tests.firmware import build as test_firmware
from tests.integration.rehosting import REPO

pytestmark = pytest.mark.qemu

# Milestones every program passes before its initcalls, and the one it reaches once past them.
BEFORE_INITCALLS = ["start_kernel", "setup_arch", "init_IRQ", "time_init", "calibrate_delay", "rest_init"]
THE_END = [*BEFORE_INITCALLS, "kernel_init", "run_init_process"]
# Far beyond what any program needs to reach its end (a few thousand instructions), and beyond a
# million iterations of a stuck poll, so that the plugin reports it as a hot loop.
INSTRUCTION_BUDGET = 50_000_000
RUNNER_LIMITS = RunnerLimits(deadline_seconds=120)  # a hang guard, not a performance claim

# The search's settings: a wall-clock budget that is only a hang guard (the searches below end
# by completing the boot, in 1 to 40 runs), a seed, one runner at a time (the machine's cores are
# shared), and an instruction budget that a stuck poll of a million iterations (about 5e6
# instructions, when the plugin reports it as a hot loop) fits in, so a stuck run ends in about a
# second instead of the default 6e9 instructions a Linux boot needs.
SEARCH_OPTIONS = ("--budget", "5m", "--seed", "1", "--workers", "1", "--instruction-budget", "10000000")
SEARCH_DEADLINE_SECONDS = 600

SPIN_STATUS = 0x1F00_0004
HANDSHAKE_KEY = 0x1F00_2000
UART, TIMER = 0x1C09_0000, 0x1C11_0000
UART_MISSING = "pl011: no PrimeCell UART at 0x1c090000"
TIMER_MISSING = "sp804: no PrimeCell timer at 0x1c110000"


@pytest.fixture(scope="session")
def firmware() -> test_firmware.FirmwareBuild:
    return test_firmware.build()


def program_config(elf: Path, dtb: Path | None = None, **fields: object) -> MachineConfig:
    """A cortex-a9 with RAM where the program is linked, the program's standard watch, and `fields`."""
    config = config_from_dict(
        {
            "target": "arm",
            "cpu": "cortex-a9",
            "ram": [{"base": test_firmware.RAM_BASE, "size": test_firmware.RAM_SIZE}],
            "boot": {"kernel": str(elf), "dtb": str(dtb) if dtb else ""},
            "instruction_budget": INSTRUCTION_BUDGET,
            "mmio_event_limit": 1000,
            **fields,
        }
    )
    return watching_kernel(config, ingest(elf, dtb=dtb))


def boot(qemu_build: Path, config: MachineConfig) -> tuple[RunResult, RunAnalysis]:
    plugin = Plugin(qemu_build / PLUGIN, STANDARD_OBSERVATION)
    result = run(config, qemu_build, plugin=plugin, limits=RUNNER_LIMITS).result
    return result, analyse(result, ingest(Path(config.boot.kernel)).symbols)


def ready() -> dict[str, int]:
    """The rule the bitwise search must find for spin.c's controller: ready, not busy."""
    return {"address": SPIN_STATUS, "constant": 1 << 5}


def milestones(analysis: RunAnalysis) -> list[str]:
    return [milestone.name for milestone in analysis.milestones]


def assert_reached_the_end(analysis: RunAnalysis) -> None:
    assert (analysis.exit_reason, analysis.exit_detail) == ("halt", "machine_power_off"), analysis
    assert milestones(analysis) == THE_END


def stack_functions(analysis: RunAnalysis) -> list[str | None]:
    return [frame.function.function for frame in analysis.call_stack]


def test_ingestion_proves_each_program_is_linked_like_a_kernel(
    firmware: test_firmware.FirmwareBuild,
) -> None:
    for program in test_firmware.PROGRAMS:
        facts = ingest(firmware.elf(program))
        assert facts.page_offset == test_firmware.RAM_BASE
        assert facts.load_address == facts.entry == test_firmware.LINK_ADDRESS
        for name in [*THE_END, "do_one_initcall", "panic", "machine_power_off", "printk_sprint"]:
            assert facts.symbols.address_of(name) is not None, (program, name)


def test_spin_polls_its_status_register_until_bit_5_alone_is_pinned(
    qemu_build: Path, firmware: test_firmware.FirmwareBuild
) -> None:
    elf = firmware.elf("spin")
    _, stuck = boot(qemu_build, program_config(elf))
    assert stuck.exit_reason == "budget"
    assert milestones(stuck) == [*BEFORE_INITCALLS, "kernel_init"]
    (loop,) = [loop for loop in stuck.hot_loops if loop.polled]
    assert (loop.start.function, loop.polled) == ("controller_wait_ready", (SPIN_STATUS,))
    # The search's default read model does not get through by luck.
    _, random = boot(qemu_build, program_config(elf, random_unruled_reads=True, seed=1))
    assert random.exit_reason == "budget"
    assert stack_functions(random)[:2] == ["controller_wait_ready", "controller_init"]

    assert_reached_the_end(boot(qemu_build, program_config(elf, mmio_rules=[ready()]))[1])
    # All ones also says "busy" (bit 0): only the right bit gets through.
    all_ones = [{"address": SPIN_STATUS, "constant": 0xFFFF_FFFF}]
    assert boot(qemu_build, program_config(elf, mmio_rules=all_ones))[1].exit_reason == "budget"


def test_probe_panic_panics_in_foo_probe_and_a_nop_of_it_reaches_the_end(
    qemu_build: Path, firmware: test_firmware.FirmwareBuild
) -> None:
    elf = firmware.elf("probe_panic")
    _, crashed = boot(qemu_build, program_config(elf))
    assert (crashed.exit_reason, crashed.exit_detail) == ("panic", "foo: unknown chip id")
    # The first frame above the panic path is the function to NOP.
    assert stack_functions(crashed)[:4] == ["panic", "foo_probe", "foo_init", "do_one_initcall"]

    foo_probe = ingest(elf).symbols.address_of("foo_probe")
    nopped = program_config(elf, nops=[{"address": foo_probe, "return_value": 0, "name": "foo_probe"}])
    _, past = boot(qemu_build, nopped)
    assert_reached_the_end(past)
    assert "foo: registered" in past.log_tail


def test_escalate_panics_one_frame_up_when_its_innermost_frame_is_nopped(
    qemu_build: Path, firmware: test_firmware.FirmwareBuild
) -> None:
    elf = firmware.elf("escalate")
    symbols = ingest(elf).symbols

    def nopped(*names: str) -> RunAnalysis:
        nops = [{"address": symbols.address_of(name), "return_value": 0, "name": name} for name in names]
        return boot(qemu_build, program_config(elf, nops=nops))[1]

    first = nopped()
    assert (first.exit_reason, first.exit_detail) == ("panic", "bar: the bus does not answer")
    assert stack_functions(first)[:5] == ["panic", "bar_read_id", "bar_probe", "bar_register", "bar_init"]
    moved = nopped("bar_read_id")
    assert (moved.exit_reason, moved.exit_detail) == ("panic", "bar: unknown chip id")
    assert stack_functions(moved)[:4] == ["panic", "bar_probe", "bar_register", "bar_init"]
    past = nopped("bar_probe")
    assert_reached_the_end(past)
    assert "bar: registered" in past.log_tail


def test_values_needs_changing_reads_and_a_pinned_sequence_of_them_reproduces_the_progress(
    qemu_build: Path, firmware: test_firmware.FirmwareBuild
) -> None:
    elf = firmware.elf("values")
    _, stuck = boot(qemu_build, program_config(elf, mmio_rules=[ready()]))
    assert stuck.exit_reason == "budget"
    (loop,) = [loop for loop in stuck.hot_loops if loop.polled]
    # Read inside the loop first; the controller's status follows as a read repeated at the end
    # of the run (explorer.runner.analysis looks there for reads made by callees).
    assert (loop.start.function, loop.polled[0]) == ("handshake_init", HANDSHAKE_KEY)

    random = {"random_unruled_reads": True, "seed": 1}
    lucky, through = boot(qemu_build, program_config(elf, mmio_rules=[ready()], **random))
    assert_past_the_handshake(through)
    # Value collapse by hand: the values the lucky run read, in order, as a sequence rule.
    read = [a.value for a in lucky.mmio_accesses if a.address == HANDSHAKE_KEY and not a.is_write]
    assert len(set(read)) > 1
    pinned = {"address": HANDSHAKE_KEY, "sequence": {"values": read}}
    assert_past_the_handshake(boot(qemu_build, program_config(elf, mmio_rules=[ready(), pinned]))[1])
    # Any constant, however chosen, spins.
    constant = {"address": HANDSHAKE_KEY, "constant": read[-1]}
    _, spins = boot(qemu_build, program_config(elf, mmio_rules=[ready(), constant]))
    assert spins.exit_reason == "budget"


def assert_past_the_handshake(analysis: RunAnalysis) -> None:
    """Through the handshake, as far as the next obstacle: foo's probe (probe_panic.c)."""
    assert "handshake: accepted" in analysis.log_tail
    assert (analysis.exit_reason, analysis.exit_detail) == ("panic", "foo: unknown chip id")


def test_devices_panics_without_its_devices_and_reaches_the_end_with_the_qemu_models(
    qemu_build: Path, firmware: test_firmware.FirmwareBuild
) -> None:
    elf, dtb = firmware.elf("devices"), firmware.dtb("devices")
    _, bare = boot(qemu_build, program_config(elf, dtb))
    assert (bare.exit_reason, bare.exit_detail) == ("panic", UART_MISSING)

    uart = {"type": "pl011", "mmio": [UART]}
    _, uart_only = boot(qemu_build, program_config(elf, dtb, devices=[uart]))
    assert (uart_only.exit_reason, uart_only.exit_detail) == ("panic", TIMER_MISSING)

    timer = {"type": "sp804", "mmio": [TIMER]}
    result, both = boot(qemu_build, program_config(elf, dtb, devices=[uart, timer]))
    assert_reached_the_end(both)
    assert b"devices: uart ok" in result.console
    assert "sp804: timer counts" in both.log_tail


def test_devices_reads_of_a_timer_that_does_not_count_spin(
    qemu_build: Path, firmware: test_firmware.FirmwareBuild
) -> None:
    # The SP804's ID registers answered by pinned values, its counter by seeded random values:
    # the probe passes, and the wait for a steady count never ends.
    elf, dtb = firmware.elf("devices"), firmware.dtb("devices")
    sp804_ids = [0x04, 0x18, 0x14, 0x00, 0x0D, 0xF0, 0x05, 0xB1]
    rules = [{"address": TIMER + 0xFE0 + 4 * i, "constant": v} for i, v in enumerate(sp804_ids)]
    config = program_config(
        elf, dtb, devices=[{"type": "pl011", "mmio": [UART]}], mmio_rules=rules,
        random_unruled_reads=True, seed=7,
    )  # fmt: skip
    _, stuck = boot(qemu_build, config)
    assert stuck.exit_reason == "budget"
    assert stack_functions(stuck)[:2] == ["timer_wait_counting", "sp804_init"]


def explorer(qemu_build: Path, *arguments: str | Path) -> str:
    """Run the venv's `explorer` as a person would; its stdout (the command must succeed)."""
    completed = subprocess.run(
        [Path(sys.executable).parent / "explorer", *map(str, arguments)],
        cwd=REPO,
        env={**os.environ, "EXPLORER_QEMU": str(qemu_build)},
        capture_output=True,
        text=True,
        timeout=SEARCH_DEADLINE_SECONDS,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed.stdout


def searched(qemu_build: Path, work: Path, elf: Path, *options: str | Path) -> dict[str, Any]:
    """`explorer search` on `elf`, then what `explorer show --json` says about the best state."""
    explorer(qemu_build, "search", elf, "--work", work, *SEARCH_OPTIONS, *options)
    return json.loads(explorer(qemu_build, "show", work, "--json"))


def assert_search_reached_the_end(shown: dict[str, Any]) -> None:
    best = shown["best"]
    assert (shown["furthest_milestone"], shown["reached_userspace"]) == ("run_init_process", False), shown
    assert (best["exit"], best["exit_detail"], best["milestones"]) == ("halt", "machine_power_off", THE_END)
    assert shown["runs"] >= len(best["path"]) and shown["generations"] >= len(best["path"]) - 1
    assert shown["wall_seconds"] > 0
    # Stored when the search stopped, for `explorer show` to say: the boot completed, nothing dropped.
    assert shown["stopped"]["why"] == "boot completed" and shown["stopped"]["dropped"] == 0
    assert shown["stop"].startswith("a run completed the boot after") and shown["dropped"] == []


def operators(shown: dict[str, Any]) -> list[str]:
    """The operator of each step from the initial state to the best one."""
    return [step["operator"] for step in shown["best"]["path"]]


def rules(shown: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {int(rule["address"], 16): rule for rule in shown["best"]["machine"]["mmio_rules"]}


def test_search_finds_the_status_bit_spin_polls_by_bitwise_search(
    qemu_build: Path, firmware: test_firmware.FirmwareBuild, tmp_path: Path
) -> None:
    shown = searched(qemu_build, tmp_path / "work", firmware.elf("spin"))
    assert_search_reached_the_end(shown)
    assert operators(shown) == ["initial", "bitwise"]
    assert "controller_wait_ready" in shown["best"]["path"][1]["reason"]
    assert rules(shown)[SPIN_STATUS]["value"] == hex(1 << 5)
    assert shown["best"]["machine"]["nops"] == []


def test_search_nops_the_probe_that_panics(
    qemu_build: Path, firmware: test_firmware.FirmwareBuild, tmp_path: Path
) -> None:
    shown = searched(qemu_build, tmp_path / "work", firmware.elf("probe_panic"))
    assert_search_reached_the_end(shown)
    assert operators(shown) == ["initial", "nops"]
    assert "foo: unknown chip id" in shown["best"]["path"][1]["reason"]
    # Either frame above the panic path gets the driver out of the way. (foo_probe's `bl panic`
    # is its last instruction, so panic's return address is foo_init's first: read as the
    # failing frame, that names foo_init.)
    (nop,) = shown["best"]["machine"]["nops"]
    assert nop["function"] in ("foo_probe", "foo_init")


def test_search_escalates_the_nop_when_the_panic_moves_one_frame_up(
    qemu_build: Path, firmware: test_firmware.FirmwareBuild, tmp_path: Path
) -> None:
    shown = searched(qemu_build, tmp_path / "work", firmware.elf("escalate"))
    assert_search_reached_the_end(shown)
    assert operators(shown) == ["initial", "nops", "nops"]
    first, escalated = shown["best"]["path"][1:]
    assert "NOP bar_read_id" in first["reason"] and "NOP bar_probe" in escalated["reason"]
    # The deeper NOP is dropped: only the caller stays NOP'd.
    assert [nop["function"] for nop in shown["best"]["machine"]["nops"]] == ["bar_probe"]


def test_search_maps_the_uart_and_timer_of_the_device_tree_to_qemu_models(
    qemu_build: Path, firmware: test_firmware.FirmwareBuild, tmp_path: Path
) -> None:
    elf, dtb = firmware.elf("devices"), firmware.dtb("devices")
    shown = searched(qemu_build, tmp_path / "work", elf, "--dtb", dtb)
    assert_search_reached_the_end(shown)
    assert operators(shown) == ["initial", "devices", "devices"]
    machine = shown["best"]["machine"]
    devices = {(device["type"], tuple(device["mmio"])) for device in machine["devices"]}
    assert devices == {("pl011", (hex(UART),)), ("sp804", (hex(TIMER),))}
    assert machine["nops"] == []


def test_search_pins_the_lucky_handshake_so_the_best_state_boots_whatever_the_seed(
    qemu_build: Path, firmware: test_firmware.FirmwareBuild, tmp_path: Path
) -> None:
    elf, work = firmware.elf("values"), tmp_path / "work"
    shown = searched(qemu_build, work, elf)
    assert_search_reached_the_end(shown)
    assert operators(shown) == ["initial", "bitwise", "collapse", "nops"]
    handshake = rules(shown)[HANDSHAKE_KEY]
    assert handshake["kind"] == "sequence" and len(set(handshake["values"])) > 1

    # The exported best state with another seed, which would redraw any read without a rule:
    # the handshake passes on its pinned values.
    exported = tmp_path / "best.json"
    explorer(qemu_build, "export", work, shown["best"]["state"], "-o", exported)
    config = watching_kernel(read_config(exported), ingest(elf))
    config.seed += 1
    _, reseeded = boot(qemu_build, config)
    assert_reached_the_end(reseeded)
    assert "handshake: accepted" in reseeded.log_tail
