"""The catch-all region of the `rehosting` machine on real QEMU: its value model and its MmioAccess events.

A hand-written ARM image exercises each rule kind with known program counters; the armmp kernel
on an AM335x device tree, with only RAM and a Cortex-A8, shows the recording on a real spin (the
interrupt controller's soft reset in omap_irq_soft_reset) and a rule that lets the boot past it;
the malta kernel shows the same on the MIPS machine. Events are read straight from the pipe the
machine writes to (config key "events_fd"), program counters named by the recovered symbols.
"""

from __future__ import annotations

import itertools
import json
import os
import selectors
import struct
import subprocess
import time
from pathlib import Path

import pytest

from explorer.corpus import Corpus
from explorer.firmware.ingest import ingest
from explorer.firmware.model import Firmware
from explorer.runner.build import PLUGIN, binary
from explorer.runner.protocol import EventDecoder
from explorer.runner.rehost_pb2 import Event, MmioAccess
from tests.integration.rehosting import BOOT_DEADLINE_SECONDS, DETERMINISM_OPTIONS, plugin_arguments
from tests.integration.test_native_mips import malta_config

pytestmark = pytest.mark.qemu

# The machine sends this many accesses of one (address, pc, direction), then only counts them.
EVENTS_PER_SITE = 8

# The tiny image: RAM at 0x60000000; QEMU's ARM boot stub enters a raw image 0x10000 above it.
TINY_RAM = 0x60000000
TINY_ENTRY = TINY_RAM + 0x10000
UNMAPPED = 0x50000000
CONSTANT, SEQUENCE, FORCED, ECHO, RANDOM, UNRULED = (UNMAPPED + 4 * i for i in range(6))


def ldr(rd: int, rn: int, offset: int) -> int:
    return 0xE5900000 | rn << 16 | rd << 12 | offset


def strw(rd: int, rn: int, offset: int) -> int:
    return 0xE5800000 | rn << 16 | rd << 12 | offset


BRANCH_TO_SELF = 0xEAFFFFFE  # b .
BRANCH_BACK_ONE = 0xEAFFFFFD  # b .-4
MOV_R2_FF = 0xE3A020FF  # mov r2, #0xff


def with_base_literal(body: list[int]) -> tuple[int, ...]:
    """`ldr r0, =UNMAPPED`, then body, then the literal: r0 is the base of every access."""
    literal_index = 1 + len(body)
    return (0xE59F0000 | (literal_index * 4 - 8), *body, UNMAPPED)


# Every rule kind once, with the writes that echo and forced bits answer with.
RULE_PROGRAM = with_base_literal(
    [
        ldr(1, 0, CONSTANT - UNMAPPED),
        *[ldr(1, 0, SEQUENCE - UNMAPPED)] * 4,
        ldr(1, 0, FORCED - UNMAPPED),
        MOV_R2_FF,
        strw(2, 0, FORCED - UNMAPPED),
        ldr(1, 0, FORCED - UNMAPPED),
        ldr(1, 0, ECHO - UNMAPPED),
        strw(2, 0, ECHO - UNMAPPED),
        ldr(1, 0, ECHO - UNMAPPED),
        *[ldr(1, 0, RANDOM - UNMAPPED)] * 2,
        ldr(1, 0, UNRULED - UNMAPPED),
        BRANCH_TO_SELF,
    ]
)
RULES = [
    {"address": hex(CONSTANT), "constant": "0x12345678"},
    {"address": hex(SEQUENCE), "sequence": {"values": ["1", "2", "3"]}},
    {"address": hex(FORCED), "forced_bits": {"and_mask": "0xf0", "or_mask": "0x1"}},
    {"address": hex(ECHO), "echo": {}},
    {"address": hex(RANDOM), "random": {}},
]
POLL_FOREVER = with_base_literal([ldr(1, 0, 0), BRANCH_BACK_ONE])
TINY_BUDGET = 200_000  # instructions: the spin at the end is all that runs after the accesses

# The armmp kernel on the BeagleBone Black's device tree, with nothing but RAM and a CPU.
INTC_SYSSTATUS = 0x48200014
INTC_RESETDONE = 0x1
# Instructions: the spin starts at about 2.077e9 (the decompressor takes 2e9), time_init follows at
# 2.083e9 once the reset-done bit reads 1. A spinning guest runs slowly (an MMIO exit per poll), so
# the budget ends the run soon after.
AM335X_BUDGET = 2_100_000_000

# The malta kernel's first accesses (prom_init reads the board revision) come after about 2.2e9
# instructions of decompression; its i8259 is set up shortly after.
MALTA_BUDGET = 2_300_000_000
MALTA_REVISION = 0x1FC00010
I8259_COMMAND = 0x18000020  # ISA port 0x20 in the GT64120's I/O window


def tiny_config(tmp_path: Path, words: tuple[int, ...], **settings: object) -> dict:
    kernel = tmp_path / "tiny.bin"
    kernel.write_bytes(struct.pack(f"<{len(words)}I", *words))
    return {
        "cpu": "cortex-a9",
        "ram": [{"base": hex(TINY_RAM), "size": "0x1000000"}],
        "boot": {"kernel": str(kernel), "board_id": "0x8e0"},
        "unmapped_log_limit": "0",
        **settings,
    }


def function_at(firmware: Firmware, pc: int) -> str | None:
    symbol = firmware.symbols.containing(pc)
    return symbol.name if symbol else None


def am335x_config(corpus: Corpus, **settings: object) -> dict:
    return {
        "cpu": "cortex-a8",
        "ram": [{"base": "0x80000000", "size": "0x20000000"}],
        "boot": {
            "kernel": str(corpus.kernel("armmp")),
            "dtb": str(corpus.dtb("armmp", "am335x-boneblack")),
            "cmdline": "console=ttyS0",
        },
        "unmapped_log_limit": "0",
        **settings,
    }


def run_machine(
    qemu_build: Path, tmp_path: Path, config: dict, plugin: str, target: str = "arm", serial: str = "null"
) -> tuple[list[MmioAccess], list[str]]:
    """Boot `config` with the plugin (deterministically), its first serial port on `serial`;
    return the MmioAccess events and plugin lines."""
    events: list[Event] = []
    decoder = EventDecoder(events.append)
    read_end, write_end = os.pipe()
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps({**config, "events_fd": write_end}))
    command = [
        str(qemu_build / binary(target)),
        *("-M", f"rehosting,config={config_path}", "-nodefaults", "-display", "none", "-serial", serial),
        *DETERMINISM_OPTIONS,
        *("-d", "plugin", "-plugin", f"{qemu_build / PLUGIN},{plugin}"),
    ]
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, pass_fds=(write_end,)
        )
    os.close(write_end)
    deadline = time.monotonic() + BOOT_DEADLINE_SECONDS
    try:
        with selectors.DefaultSelector() as selector, os.fdopen(read_end, "rb", buffering=0) as events_pipe:
            selector.register(events_pipe, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if selector.select(timeout=1.0):
                    chunk = events_pipe.read(65536)
                    if not chunk:
                        break
                    decoder.feed(chunk)
            else:
                pytest.fail(f"QEMU ran past {BOOT_DEADLINE_SECONDS} s")
        decoder.finish()
        assert process.wait(timeout=BOOT_DEADLINE_SECONDS) == 0, stderr_path.read_text()[-2000:]
    finally:
        process.kill()
        process.wait()
    lines = [line for line in stderr_path.read_text().splitlines() if line.startswith("rehost: ")]
    return [event.mmio_access for event in events if event.HasField("mmio_access")], lines


def run_tiny(
    qemu_build: Path, tmp_path: Path, words: tuple[int, ...], **settings: object
) -> list[MmioAccess]:
    accesses, _ = run_machine(
        qemu_build, tmp_path, tiny_config(tmp_path, words, **settings), f"budget={TINY_BUDGET}"
    )
    return accesses


def as_tuple(access: MmioAccess) -> tuple[int, int, int, int, bool, int]:
    return (access.address, access.size, access.value, access.pc, access.is_write, access.order)


def test_each_rule_kind_answers_as_the_schema_says(qemu_build: Path, tmp_path: Path) -> None:
    accesses = run_tiny(
        qemu_build, tmp_path, RULE_PROGRAM, mmio_rules=RULES, mmio_event_limit="100", seed="7"
    )
    reads = {}
    for access in accesses:
        reads.setdefault(access.address, []).append(
            access.value if not access.is_write else ("w", access.value)
        )
    assert reads[CONSTANT] == [0x12345678]
    assert reads[SEQUENCE] == [1, 2, 3, 3]  # then stays on the last
    assert reads[FORCED] == [0x1, ("w", 0xFF), 0xF1]  # unruled default (0) before the write
    assert reads[ECHO] == [0, ("w", 0xFF), 0xFF]
    assert reads[UNRULED] == [0]
    first_random, second_random = reads[RANDOM]
    assert first_random != second_random
    assert [access.order for access in accesses] == list(range(len(accesses)))
    assert {access.size for access in accesses} == {4}


def mov_r2(byte: int) -> int:
    return 0xE3A02000 | byte  # mov r2, #byte


SINK = UNMAPPED + 0x40
# Writes "ok\n" to the sink a byte at a time (the last as a word with bits above the byte), reads it.
SINK_PROGRAM = with_base_literal(
    [
        *[word for byte in b"ok" for word in (mov_r2(byte), strw(2, 0, SINK - UNMAPPED))],
        0xE3A02E10,  # mov r2, #0x100
        0xE282200A,  # add r2, r2, #0x0a: 0x10a, a newline with a bit above the byte
        strw(2, 0, SINK - UNMAPPED),
        ldr(1, 0, SINK - UNMAPPED),
        strw(1, 0, ECHO - UNMAPPED),
        BRANCH_TO_SELF,
    ]
)


def test_the_console_sink_sends_the_low_byte_of_each_write_to_the_first_serial_port(
    qemu_build: Path, tmp_path: Path
) -> None:
    console = tmp_path / "console.txt"
    config = tiny_config(tmp_path, SINK_PROGRAM, console_sink=hex(SINK), mmio_event_limit="100")
    accesses, _ = run_machine(qemu_build, tmp_path, config, f"budget={TINY_BUDGET}", serial=f"file:{console}")
    assert console.read_bytes() == b"ok\n"
    # The sink is no catch-all address: its accesses are not events, and its reads answer 0.
    assert [(access.address, access.value, access.is_write) for access in accesses] == [(ECHO, 0, True)]


def test_each_access_carries_the_pc_of_its_load_or_store(qemu_build: Path, tmp_path: Path) -> None:
    accesses = run_tiny(qemu_build, tmp_path, RULE_PROGRAM, mmio_rules=RULES, mmio_event_limit="100")
    # Word 0 loads the base; the accesses are words 1..16 except the mov at word 7.
    access_words = [index for index, word in enumerate(RULE_PROGRAM[:-2]) if index and word != MOV_R2_FF]
    assert [access.pc for access in accesses] == [TINY_ENTRY + 4 * index for index in access_words]


def test_random_values_follow_the_seed_and_unruled_reads_can_be_random(
    qemu_build: Path, tmp_path: Path
) -> None:
    def random_reads(seed: str) -> list[int]:
        settings = {
            "mmio_rules": RULES,
            "mmio_event_limit": "100",
            "seed": seed,
            "random_unruled_reads": True,
        }
        accesses = run_tiny(qemu_build, tmp_path, RULE_PROGRAM, **settings)
        return [a.value for a in accesses if a.address in (RANDOM, UNRULED, FORCED) and not a.is_write]

    first, again, other = random_reads("1"), random_reads("1"), random_reads("2")
    assert first == again
    assert first != other
    unruled = first[-1]
    assert unruled != 0
    forced_before_write = first[0]
    assert forced_before_write & ~0xF1 == 0  # a random base, masked and forced


def test_same_config_and_seed_give_the_same_event_stream(qemu_build: Path, tmp_path: Path) -> None:
    settings = {"mmio_rules": RULES, "mmio_event_limit": "100", "seed": "42", "random_unruled_reads": True}
    runs = [run_tiny(qemu_build, tmp_path, RULE_PROGRAM, **settings) for _ in range(2)]
    assert [as_tuple(a) for a in runs[0]] == [as_tuple(a) for a in runs[1]]
    assert len(runs[0]) == 14  # every access of the image


def test_a_polled_register_sends_a_few_events_then_only_counts(qemu_build: Path, tmp_path: Path) -> None:
    accesses = run_tiny(qemu_build, tmp_path, POLL_FOREVER, mmio_event_limit="1000")
    assert [(a.address, a.pc, a.order) for a in accesses] == [
        (UNMAPPED, TINY_ENTRY + 4, order) for order in range(EVENTS_PER_SITE)
    ]


def test_the_run_sends_at_most_mmio_event_limit_events(qemu_build: Path, tmp_path: Path) -> None:
    assert len(run_tiny(qemu_build, tmp_path, RULE_PROGRAM, mmio_rules=RULES, mmio_event_limit="3")) == 3
    assert run_tiny(qemu_build, tmp_path, RULE_PROGRAM, mmio_rules=RULES) == []


# A counter read every 1 + COUNTER_GAP instructions.
COUNTER_GAP = 16
COUNTER_READS = 5
COUNTER_PROGRAM = with_base_literal(
    [*[ldr(1, 0, 0), *[MOV_R2_FF] * COUNTER_GAP] * COUNTER_READS, ldr(1, 0, 4), BRANCH_TO_SELF]
)


def counter_reads(qemu_build: Path, tmp_path: Path, down: bool) -> list[int]:
    rules = [{"address": hex(UNMAPPED), "counter": {"hz": 1_000_000_000, **({"down": True} if down else {})}}]
    accesses = run_tiny(qemu_build, tmp_path, COUNTER_PROGRAM, mmio_rules=rules, mmio_event_limit="100")
    return [access.value for access in accesses if access.address == UNMAPPED]


def test_a_counter_counts_guest_time_up_or_down(qemu_build: Path, tmp_path: Path) -> None:
    up = counter_reads(qemu_build, tmp_path, down=False)
    assert len(up) == COUNTER_READS
    steps = {later - earlier for earlier, later in itertools.pairwise(up)}
    # At 1 GHz a tick is a nanosecond: the same number of instructions apart, the same step.
    assert len(steps) == 1 and steps.pop() > 0
    assert counter_reads(qemu_build, tmp_path, down=False) == up
    down = counter_reads(qemu_build, tmp_path, down=True)
    assert down == [~value & 0xFFFFFFFF for value in up]


@pytest.fixture(scope="module")
def armmp_firmware(corpus: Corpus) -> Firmware:
    return ingest(corpus.kernel("armmp"))


def am335x_plugin(firmware: Firmware) -> str:
    return f"{plugin_arguments(firmware)},budget={AM335X_BUDGET}"


Spin = tuple[list[MmioAccess], list[str]]


@pytest.fixture(scope="module")
def am335x_spins(
    qemu_build: Path, tmp_path_factory: pytest.TempPathFactory, corpus: Corpus, armmp_firmware: Firmware
) -> tuple[Spin, Spin]:
    """Two runs of the same config (seed 5, unruled reads 0): the kernel reaches the INTC reset poll."""
    config = am335x_config(corpus, mmio_event_limit="10000", seed="5")

    def spin() -> Spin:
        directory = tmp_path_factory.mktemp("am335x")
        return run_machine(qemu_build, directory, config, am335x_plugin(armmp_firmware))

    return spin(), spin()


def test_am335x_without_devices_spins_polling_the_interrupt_controller_reset(
    am335x_spins: tuple[Spin, Spin], armmp_firmware: Firmware
) -> None:
    accesses, lines = am335x_spins[0]
    polls = [a for a in accesses if a.address == INTC_SYSSTATUS and not a.is_write]
    assert len(polls) == EVENTS_PER_SITE
    assert {function_at(armmp_firmware, a.pc) for a in polls} == {"omap_irq_soft_reset"}
    assert {a.value for a in polls} == {0}
    assert accesses[-1] == polls[-1]  # nothing else happens: the reset never completes
    assert "budget" in next(line for line in lines if line.startswith("rehost: end "))
    assert not any("time_init" in line for line in lines)


def test_am335x_same_config_and_seed_give_the_same_event_stream(am335x_spins: tuple[Spin, Spin]) -> None:
    (first, _), (second, _) = am335x_spins
    assert len(first) > EVENTS_PER_SITE
    assert [as_tuple(a) for a in first] == [as_tuple(a) for a in second]


@pytest.mark.parametrize(
    "rule",
    [
        {"constant": hex(INTC_RESETDONE)},
        {"forced_bits": {"and_mask": "0xffffffff", "or_mask": hex(INTC_RESETDONE)}},
    ],
    ids=["constant", "forced_bits"],
)
def test_am335x_a_reset_done_rule_lets_the_boot_past_the_spin(
    qemu_build: Path, tmp_path: Path, corpus: Corpus, armmp_firmware: Firmware, rule: dict
) -> None:
    config = am335x_config(
        corpus, mmio_event_limit="10000", mmio_rules=[{"address": hex(INTC_SYSSTATUS), **rule}]
    )
    accesses, lines = run_machine(qemu_build, tmp_path, config, am335x_plugin(armmp_firmware))
    polls = [a for a in accesses if a.address == INTC_SYSSTATUS]
    assert [a.value for a in polls] == [INTC_RESETDONE]
    later = [a for a in accesses if a.order > polls[0].order]
    assert any(function_at(armmp_firmware, a.pc) != "omap_irq_soft_reset" for a in later)
    assert any(line.startswith("rehost: milestone time_init ") for line in lines)


def test_malta_accesses_name_the_mips_functions_that_made_them(
    qemu_build: Path, tmp_path: Path, corpus: Corpus
) -> None:
    malta = ingest(corpus.kernel("4kc-malta"))
    config = {**malta_config(corpus), "mmio_event_limit": "1000", "unmapped_log_limit": "0"}
    accesses, _ = run_machine(qemu_build, tmp_path, config, f"budget={MALTA_BUDGET}", target="mipsel")
    first = accesses[0]
    assert (first.address, first.size, first.value, first.is_write) == (MALTA_REVISION, 4, 0x420, False)
    assert function_at(malta, first.pc) == "prom_init"
    icw1 = (I8259_COMMAND, 1, 0x11, True, "init_8259A")
    assert icw1 in {(a.address, a.size, a.value, a.is_write, function_at(malta, a.pc)) for a in accesses}


def test_a_master_gone_ends_the_run_quietly(qemu_build: Path, tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will ever read: the first event write gets EPIPE
    config_path = tmp_path / "config.json"
    config = tiny_config(tmp_path, POLL_FOREVER, mmio_event_limit="10", events_fd=write_end)
    config_path.write_text(json.dumps(config))
    command = [
        str(qemu_build / binary("arm")),
        *("-M", f"rehosting,config={config_path}", "-nodefaults", "-display", "none", "-serial", "null"),
    ]
    try:
        completed = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=BOOT_DEADLINE_SECONDS,
            pass_fds=(write_end,),
            check=False,
        )
    finally:
        os.close(write_end)
    assert (completed.returncode, completed.stderr) == (0, "")
