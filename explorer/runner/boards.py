"""Memory maps of real boards, declared for the `rehosting` machine: the runner's known-good references.

A board here is what its device tree and QEMU's model of it say is at each address, written as
a MachineConfig, so that a kernel known to boot on the stock QEMU board boots the same way on
our machine (the runner benchmark and the integration tests compare the two). It must never
look at a kernel or the host: the caller names the files to boot.
"""

from __future__ import annotations

from pathlib import Path

from explorer.runner.config import config_from_dict
from explorer.runner.machine_config_pb2 import MachineConfig

VEXPRESS_A9_BOARD_ID = 0x8E0
VEXPRESS_A9_CMDLINE = "console=ttyAMA0 rdinit=/init"


def vexpress_a9(
    kernel: Path, dtb: Path, initrd: Path | None, cmdline: str = VEXPRESS_A9_CMDLINE
) -> MachineConfig:
    """Versatile Express, Cortex-A9 tile: as vexpress-v2p-ca9.dts, and QEMU's -M vexpress-a9 -m 512."""
    return config_from_dict(
        {
            "target": "arm",
            "cpu": "cortex-a9",
            "ram": [{"base": "0x60000000", "size": "0x20000000"}],
            "interrupt_controller": {
                "type": "a9mpcore_priv",
                "mmio": ["0x1e000000"],
                "props": {"num-irq": 96},
            },
            "devices": [
                {
                    "type": "realview_sysctl",
                    "mmio": ["0x10000000"],
                    "props": {"sys_id": 0x1190F500, "proc_id": 0x0C000191},
                },
                {"type": "pl011", "mmio": ["0x10009000"], "irqs": [37]},
                {"type": "sp804", "mmio": ["0x10011000"], "irqs": [34]},
                {"type": "sp804", "mmio": ["0x10012000"], "irqs": [35]},
                {"type": "pl031", "mmio": ["0x10017000"], "irqs": [36]},
                {"type": "l2x0", "mmio": ["0x1e00a000"]},
            ],
            "boot": {
                "kernel": str(kernel),
                "dtb": str(dtb),
                "initrd": str(initrd) if initrd is not None else "",
                "cmdline": cmdline,
                "board_id": VEXPRESS_A9_BOARD_ID,
            },
        }
    )


VIRT_ARM64_CMDLINE = "console=ttyAMA0 rdinit=/init"
# virt's interrupt controller by GIC version (hw/arm/virt.c's memory map): the GICv2's distributor
# and CPU interface, or the GICv3's distributor and redistributors; 256 SPIs either way.
VIRT_GICS = {
    2: {"type": "arm_gic", "mmio": ["0x08000000", "0x08010000"], "props": {"num-irq": 288, "revision": 2}},
    3: {
        "type": "arm-gicv3",
        "mmio": ["0x08000000", "0x080a0000"],
        "props": {"num-irq": 288, "revision": 3, "redist-region-count": [1]},
    },
}


def virt_arm64(
    kernel: Path, dtb: Path, initrd: Path | None, cmdline: str = VIRT_ARM64_CMDLINE, gic_version: int = 3
) -> MachineConfig:
    """QEMU's AArch64 `virt`, as `-M virt,gic-version=N -cpu cortex-a57 -m 1024` lays it out
    (hw/arm/virt.c's memory map) and the device tree it dumps describes it: the GIC, the PL011 on
    SPI 1, the PL031 on SPI 2, the generic timers on PPIs 13, 14, 11, 10, and PSCI through HVC.
    QEMU's other virt devices (PCIe, virtio-mmio, fw_cfg, flash, GPIO) are left to the catch-all."""
    return config_from_dict(
        {
            "target": "aarch64",
            "cpu": "cortex-a57",
            "ram": [{"base": "0x40000000", "size": "0x40000000"}],
            "interrupt_controller": VIRT_GICS[gic_version],
            "timer_irqs": [29, 30, 27, 26],
            "devices": [
                {"type": "pl011", "mmio": ["0x09000000"], "irqs": [33]},
                {"type": "pl031", "mmio": ["0x09010000"], "irqs": [34]},
            ],
            "psci_conduit": "hvc",
            "boot": {
                "kernel": str(kernel),
                "dtb": str(dtb),
                "initrd": str(initrd) if initrd is not None else "",
                "cmdline": cmdline,
            },
        }
    )
