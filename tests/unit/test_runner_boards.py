"""Reference board maps: valid configs, and the machine's JSON holds what the device tree says."""

from __future__ import annotations

import json
from pathlib import Path

from explorer.runner.boards import VEXPRESS_A9_BOARD_ID, vexpress_a9
from explorer.runner.config import to_json, validate


def test_vexpress_a9_is_a_valid_config_with_the_board_files() -> None:
    config = vexpress_a9(Path("/k/zImage"), Path("/k/vexpress-v2p-ca9.dtb"), Path("/k/initrd.gz"))
    validate(config)
    as_json = json.loads(to_json(config))
    assert as_json["boot"]["kernel"] == "/k/zImage" and as_json["boot"]["initrd"] == "/k/initrd.gz"
    assert as_json["boot"]["board_id"] == str(VEXPRESS_A9_BOARD_ID)
    assert as_json["ram"] == [{"base": str(0x60000000), "size": str(512 << 20)}]
    uarts = [device for device in as_json["devices"] if device["type"] == "pl011"]
    assert uarts == [{"type": "pl011", "mmio": [str(0x10009000)], "irqs": [37]}]  # SPI 5


def test_without_an_initrd_none_is_named() -> None:
    config = vexpress_a9(Path("/k/zImage"), Path("/k/vexpress-v2p-ca9.dtb"), None, "console=ttyAMA0")
    assert "initrd" not in json.loads(to_json(config))["boot"]
    assert config.boot.cmdline == "console=ttyAMA0"
