"""Stock-QEMU ground truth: which firmware has a board model, what a stock boot's row says, and how
a stock board is started (tests/integration/test_bench_stock_boot.py boots real ones)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from explorer import corpus
from explorer.bench.campaign import append_result, read_results, run_ground_truth
from explorer.bench.sets import SETS_DIRECTORY, BenchFirmware, BenchSet
from explorer.bench.stock import STOCK_MODELS, stock_model, stock_row
from explorer.execution.jobs import RunnerSetup
from explorer.runner.command import Plugin, StockBoard, command_line
from explorer.runner.kernel_hooks import MILESTONES
from explorer.runner.launch import Run
from explorer.runner.machine_config_pb2 import MachineConfig
from explorer.runner.rehost_pb2 import Exit, ExitReason, Milestone, RunResult
from explorer.search.state import Target

# The report reads exactly these keys.
ROW_KEYS = {
    "firmware",
    "machine",
    "furthest_milestone",
    "reached_userspace",
    "wall_seconds",
    "ended",
    "wall_seconds_to_userspace",
}
# Development-set firmware with a QEMU model of their board; the others (am335x, sun7i, rk3288,
# the marvell boards) have none.
DEV_SET_MODELS = {
    "armmp-vexpress-v2p-ca9": "vexpress-a9",
    "armmp-sun4i-a10-cubieboard": "cubieboard",
    "armmp-imx6ul-14x14-evk": "mcimx6ul-evk",
    "malta": "malta",
}
# Issue 5's stock boards, by the DTB (or flavour) the larger set boots them as.
LARGE_SET_MODELS = {
    "vexpress-v2p-ca9": "vexpress-a9",
    "vexpress-v2p-ca15-tc1": "vexpress-a15",
    "sun4i-a10-cubieboard": "cubieboard",
    "imx6ul-14x14-evk": "mcimx6ul-evk",
    "imx6q-sabrelite": "sabrelite",
    "sun8i-h3-orangepi-pc": "orangepi-pc",
    "bcm2836-rpi-2-b": "raspi2b",
    "4kc-malta": "malta",
}


def set_entries(name: str) -> list[dict[str, str]]:
    return tomllib.loads((SETS_DIRECTORY / f"{name}.toml").read_text())["firmware"]


def machine_of(entry: dict[str, str]) -> str | None:
    model = stock_model(entry.get("flavour"), entry.get("dtb"))
    return model.machine if model is not None else None


def test_every_dev_set_firmware_with_a_qemu_board_gets_that_board_and_no_other_gets_one() -> None:
    machines = {entry["name"]: machine_of(entry) for entry in set_entries("dev")}
    assert {name: machine for name, machine in machines.items() if machine} == DEV_SET_MODELS
    assert len(machines) == 9


def test_every_stock_board_of_the_issue_is_found_for_the_larger_set() -> None:
    found = {entry.get("dtb", entry["flavour"]): machine_of(entry) for entry in set_entries("large")}
    assert {key: machine for key, machine in found.items() if machine} == LARGE_SET_MODELS


def test_a_kernel_outside_the_corpus_or_an_unmodelled_board_has_no_model() -> None:
    assert stock_model(None, "vexpress-v2p-ca9") is None
    assert stock_model("armmp", None) is None
    assert stock_model("armmp", "am335x-boneblack") is None
    assert stock_model("marvell", "vexpress-v2p-ca9") is None


def test_every_model_gives_qemu_whole_mebibytes_and_a_console() -> None:
    for model in STOCK_MODELS.values():
        assert model.memory_bytes > 0 and model.memory_bytes % (1 << 20) == 0
        assert model.console.startswith("tty")


@given(
    reason=st.sampled_from([reason for reason in ExitReason.values() if reason]),
    reached=st.sets(st.sampled_from(MILESTONES)),
    wall=st.floats(0.01, 1000, allow_nan=False),
    detail=st.text(max_size=40),
)
def test_a_stock_row_has_the_reports_keys_and_a_time_to_user_space_only_when_it_got_there(
    reason: ExitReason.ValueType, reached: set[str], wall: float, detail: str
) -> None:
    result = RunResult(
        exit=Exit(reason=reason, detail=detail), milestones=[Milestone(name=name) for name in reached]
    )
    row = stock_row("fw", "vexpress-a9", Run(result, wall, None, ""))
    assert set(row) == ROW_KEYS
    assert row["firmware"] == "fw" and row["machine"] == "vexpress-a9"
    user_space = reason == ExitReason.EXIT_USER_SPACE
    assert row["reached_userspace"] is user_space
    assert row["wall_seconds"] == round(wall, 3)
    assert row["wall_seconds_to_userspace"] == (row["wall_seconds"] if user_space else None)
    if user_space:
        assert row["furthest_milestone"] == "user space"
    elif reached:
        assert row["furthest_milestone"] == max(reached, key=MILESTONES.index)
    else:
        assert row["furthest_milestone"] is None
    assert row["ended"].startswith(ExitReason.Name(reason).removeprefix("EXIT_").lower().replace("_", " "))
    assert detail in row["ended"]


def test_a_panic_row_says_the_panic_and_how_far_the_boot_got() -> None:
    result = RunResult(
        exit=Exit(reason=ExitReason.EXIT_PANIC, detail="VFS: Unable to mount root fs"),
        milestones=[Milestone(name="start_kernel"), Milestone(name="kernel_init")],
    )
    row = stock_row("fw", "malta", Run(result, 4.1234, None, ""))
    assert row["ended"] == "panic: VFS: Unable to mount root fs"
    assert row["furthest_milestone"] == "kernel_init"
    assert (row["reached_userspace"], row["wall_seconds"], row["wall_seconds_to_userspace"]) == (
        False,
        4.123,
        None,
    )


def test_a_stock_board_gets_the_configs_cpu_ram_and_files_and_its_console_port_on_stdio(
    tmp_path: Path,
) -> None:
    config = MachineConfig(target="arm", cpu="cortex-a9", instruction_budget=5)
    config.ram.add(base=0, size=1 << 30)
    config.boot.kernel, config.boot.dtb, config.boot.initrd = "/k/zImage", "/k/b.dtb", "/k/initrd"
    config.boot.cmdline = "console=ttymxc1 rdinit=/init"
    command = command_line(
        Path("/q/bin/qemu-system-arm"),
        config,
        tmp_path / "unused.json",
        plugin=Plugin(Path("/q/lib/librehost.so")),
        events_fd=9,
        stock=StockBoard("sabrelite", console_port=1),
    )
    assert not any("rehosting" in argument for argument in command)

    def after(option: str) -> str:
        return command[command.index(option) + 1]

    assert (after("-M"), after("-cpu"), after("-m")) == ("sabrelite", "cortex-a9", "1024M")
    assert (after("-kernel"), after("-dtb"), after("-initrd")) == ("/k/zImage", "/k/b.dtb", "/k/initrd")
    assert after("-append") == "console=ttymxc1 rdinit=/init"
    serial_ports = [command[index + 1] for index, argument in enumerate(command) if argument == "-serial"]
    assert serial_ports == ["null", "stdio"]
    assert command[-1] == "/q/lib/librehost.so,budget=5,events_fd=9"


def test_a_board_without_a_dtb_or_initrd_gets_neither_option(tmp_path: Path) -> None:
    config = MachineConfig(target="mipsel", cpu="24Kf")
    config.ram.add(base=0, size=256 << 20)
    config.boot.kernel = "/k/vmlinuz"
    command = command_line(
        Path("/q/bin/qemu-system-mipsel"),
        config,
        tmp_path / "m.json",
        plugin=None,
        events_fd=None,
        stock=StockBoard("malta"),
    )
    assert "-dtb" not in command and "-initrd" not in command and "-append" not in command
    assert command[command.index("-serial") + 1] == "stdio"


def no_corpus() -> corpus.Corpus:
    raise AssertionError("no firmware of this set is a corpus kernel: the corpus must not be loaded")


def test_a_set_of_kernels_from_outside_the_corpus_has_no_ground_truth_and_needs_no_corpus(
    tmp_path: Path,
) -> None:
    kernel = tmp_path / "spin.elf"
    kernel.write_bytes(b"\x7fELF")
    bench_set = BenchSet("tiny", (BenchFirmware("spin", Target(kernel)),))
    stock = tmp_path / "stock.jsonl"
    setup = RunnerSetup(tmp_path / "no-qemu", Plugin(tmp_path / "no-plugin.so"))
    assert run_ground_truth(bench_set, stock, setup, corpus_loader=no_corpus) == []
    assert not stock.exists()


def test_a_firmware_with_a_row_is_not_looked_up_or_booted_again(tmp_path: Path) -> None:
    # A corpus kernel's path: without its row, the corpus would be loaded to find its flavour.
    bench_set = BenchSet("tiny", (BenchFirmware("vexpress", Target(corpus.corpus_root() / "zImage")),))
    stock = tmp_path / "stock.jsonl"
    user_space = RunResult(exit=Exit(reason=ExitReason.EXIT_USER_SPACE))
    booted = stock_row("vexpress", "vexpress-a9", Run(user_space, 5.0, None, ""))
    append_result(stock, booted)
    before = stock.read_bytes()
    setup = RunnerSetup(tmp_path / "no-qemu", Plugin(tmp_path / "no-plugin.so"))
    assert run_ground_truth(bench_set, stock, setup, corpus_loader=no_corpus) == [booted]
    assert stock.read_bytes() == before
    assert read_results(stock) == [booted]


def test_the_table_is_keyed_by_corpus_flavour_and_dtb_name_without_extension() -> None:
    for flavour, dtb in STOCK_MODELS:
        assert flavour in corpus.FLAVOUR_ARCH
        assert dtb is None or not dtb.endswith(".dtb")
