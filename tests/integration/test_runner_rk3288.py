"""`explorer boot` of armmp on an empty rk3288-tinker: the run names the PLL-lock poll it hangs in.

Only RAM and a CPU, as the Tinker Board's device tree describes them. The kernel gets through
setup_arch and init_IRQ; in time_init, rockchip_timer_init registers the CRU's clocks
(of_clk_init), which sets the rates the device tree assigns: rockchip_rk3066_pll_set_rate
reprograms a PLL in the CRU (0xff760000) and rockchip_pll_wait_lock waits for its lock bit in the
GRF's SOC_STATUS1 register, through regmap_read. Nothing sets that bit, and the poll's 1 ms
timeout never expires: no timer ticks yet, so ktime_get does not advance. The kernel spins there
for good.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from explorer.corpus import Corpus
from explorer.firmware.devicetree import parse_dtb
from explorer.firmware.ingest import ingest
from explorer.runner.analysis import place
from explorer.runner.config import config_from_dict
from explorer.runner.result import deserialize
from tests.integration.test_runner_boot import explorer_boot

pytestmark = [pytest.mark.qemu, pytest.mark.corpus]

# rk3288 general register file: SOC_STATUS1 holds the lock bit of each PLL (the CRU has none).
GRF_SOC_STATUS1 = 0xFF770284


def rk3288_tinker_ram(dtb: Path) -> list[dict[str, str]]:
    """The device tree's memory node as it is: 2 GiB at physical address 0."""
    return [
        {"base": hex(base), "size": hex(size)} for base, size in parse_dtb(dtb.read_bytes(), "given").memory
    ]


def test_armmp_on_an_empty_rk3288_tinker_names_the_pll_lock_poll(
    qemu_build: Path, corpus: Corpus, tmp_path: Path
) -> None:
    dtb = corpus.dtb("armmp", "rk3288-tinker")
    config = config_from_dict(
        {
            "target": "arm",
            "cpu": "cortex-a15",
            "ram": rk3288_tinker_ram(dtb),
            "boot": {"kernel": str(corpus.kernel("armmp")), "dtb": str(dtb), "cmdline": "console=ttyS2"},
            "mmio_event_limit": 4096,
            # time_init starts at about 2.33e9 instructions (2e9 of them decompressing); the poll's
            # loop is reported hot between 2.6e9 and 2.8e9.
            "instruction_budget": 3_000_000_000,
        }
    )
    result_path = tmp_path / "result.pb"
    printed = json.loads(
        explorer_boot(qemu_build, config, tmp_path, "--json", "--result-out", str(result_path))
    )
    assert printed["exit"]["reason"] == "budget", printed["exit"]
    spins = [loop for loop in printed["hot_loops"] if loop["function"] == "rockchip_pll_wait_lock"]
    assert spins, printed["hot_loops"]
    assert spins[0]["summary"].startswith("spins in rockchip_pll_wait_lock (")
    assert spins[0]["polled"] == [f"0x{GRF_SOC_STATUS1:x}"]  # read by a callee, at the end of the run

    # Innermost first: whatever the poll called last (regmap_read, ktime_get, ...), then the poll.
    functions = [frame["function"] for frame in printed["call_stack"]]
    assert "rockchip_pll_wait_lock" in functions, functions
    poll = functions.index("rockchip_pll_wait_lock")
    assert functions[poll : poll + 3] == [
        "rockchip_pll_wait_lock",
        "rockchip_rk3066_pll_set_rate",
        "clk_change_rate",
    ]
    assert functions[-1] == "time_init"

    # The read happens in regmap's MMIO accessor, outside the loop's own code: the run's MMIO
    # accesses show which function reads it and that it reads 0.
    accesses = deserialize(result_path.read_bytes()).mmio_accesses
    symbols = ingest(corpus.kernel("armmp")).symbols
    lock_reads = [access for access in accesses if access.address == GRF_SOC_STATUS1]
    assert lock_reads and accesses[-1].address == GRF_SOC_STATUS1
    assert {place(access.pc, symbols).function for access in lock_reads} == {"regmap_mmio_read32le"}
    assert all(not access.is_write and access.value == 0 for access in lock_reads)
