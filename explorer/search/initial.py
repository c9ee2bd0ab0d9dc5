"""The initial state: where a search starts when it knows nothing but the kernel (and its DTB).

The initial state is the smallest machine that can run the kernel at all: a CPU model our QEMU
has that executes the kernel's instruction set, RAM where the kernel can live, an instruction
budget, and the value model for every other address, plus the one device a person needs to see
the result: the UART the kernel's console is on (explorer.search.console), first in device order
so that QEMU's first serial port feeds it. It maps no other device and no interrupt controller:
those are for device discovery (explorer.search.operators.devices) to find from what the kernel
touches (it wires the console's interrupt once it places the controller). Firmware calls the
device tree says the kernel makes (PSCI) are answered by QEMU. Invariants: it is a pure function
of (firmware, seed, kernel arguments); it never runs anything and never guesses a device;
everything it chooses is a documented default or a fact of the firmware or its device tree.
"""

from __future__ import annotations

from explorer.errors import BadInput
from explorer.firmware.model import Arch, Endian, Firmware
from explorer.runner.config import PSCI_CONDUITS
from explorer.search.console import console_uart
from explorer.search.state import State

# Guest instructions after which a run ends. Measured: armmp on the vexpress-a9 map reaches
# user space at 3.53e9 instructions (about 2.0e9 of them the decompressor and head.S), malta at
# 3.97e9. A rehosted boot runs more code than the reference (probe retries, timeouts counted in
# instructions while no timer ticks), so the budget leaves 50% over the longest known boot; a
# stuck run costs at most this much (measured 14 s to 41 s wall, depending on the load of the
# two shared cores).
INSTRUCTION_BUDGET = 6_000_000_000

# RAM: at most this much is given to the guest, whatever the device tree says. Enough for any
# boot to user space from an initramfs, and it bounds each runner's host memory and the time
# the kernel spends initialising its page tables and struct pages.
MAX_RAM_BYTES = 512 << 20
# RAM when the device tree gives none, aligned to this (boards put DRAM on such boundaries).
DEFAULT_RAM_BYTES = 256 << 20
# Where DRAM sits on the ARM SoCs Debian's kernels support, in order of how common; the first
# that no device-tree node overlaps is chosen when neither the DT nor the kernel says.
ARM_RAM_BASES = (0x80000000, 0x40000000, 0x60000000, 0x00000000, 0x20000000, 0xC0000000)
# Without a device tree (an ATAG boot): the ARMv4-v6 board files put DRAM at 0.
ATAG_RAM_BASE = 0
# MIPS kernels run from KSEG0, physical 0 upwards; YAMON's low memory is at most 256 MiB
# (above it lie the board's I/O windows on Malta-like boards).
MIPS_RAM_BASE = 0

# QEMU CPU models per ARM architecture class: each runs every kernel built for its class.
DEFAULT_ARM_CPU = {"ARMv5": "arm926", "ARMv6": "arm1176", "ARMv7": "cortex-a15"}
# Device-tree CPU compatibles (without the "arm," vendor) and the QEMU model that runs their
# code. Cortex-A12/A17 have no QEMU model; the A15 implements the same ARMv7-A + virtualization
# + LPAE architecture.
ARM_CPU_FOR_COMPATIBLE = {
    "cortex-a5": "cortex-a9",
    "cortex-a7": "cortex-a7",
    "cortex-a8": "cortex-a8",
    "cortex-a9": "cortex-a9",
    "cortex-a12": "cortex-a15",
    "cortex-a15": "cortex-a15",
    "cortex-a17": "cortex-a15",
    "arm926ej-s": "arm926",
    "arm1176jzf-s": "arm1176",
    "arm1136jf-s": "arm1136",
}
# The architecture class each of those models implements: a model is only chosen for a kernel
# of its own class.
ARCHITECTURE_OF_MODEL = {
    "arm926": "ARMv5",
    "arm1136": "ARMv6",
    "arm1176": "ARMv6",
    "cortex-a7": "ARMv7",
    "cortex-a8": "ARMv7",
    "cortex-a9": "ARMv7",
    "cortex-a15": "ARMv7",
}
# The function of a relocatable kernel (CONFIG_RELOCATABLE, MIPS) that moves it to a random
# address unless told "nokaslr".
SELF_RELOCATION = "relocate_kernel"
# The MIPS32r2 model with an FPU: Debian's malta kernels are built for MIPS32r2 (seb, ext),
# which a 4Kc traps on.
MIPS_CPU = "24Kf"


def initial_state(firmware: Firmware, seed: int, cmdline: str = "") -> State:
    """The machine a search starts from: CPU, RAM, budget, seed, the read model and the console.

    `cmdline`: the kernel arguments the search's target passes (a console= among them names the
    console; without one, and without a device tree that names it, the state adds one).

    boot.loader_start is left to the machine's default, the base of the one RAM region: the
    zImage and its ATAGs or DTB are placed from there, which suits every RAM chosen here.

    Unmapped reads are random (`random_unruled_reads`), as in the original design: a driver
    polling a status bit sees it flip within a few reads, so spin loops on devices nobody has
    modelled yet pass by luck instead of burning the whole budget, and the run reaches the next
    place that really needs a model. The randomness is a pure function of (seed, address,
    order of the access), so a run stays reproducible; value collapse pins the values that
    mattered, and device discovery turns touched regions into models. Measured on armmp +
    am335x-boneblack from this state: with random reads the boot passes the interrupt
    controller's reset poll (omap_irq_soft_reset) and stops in calibrate_delay (no tick) at the
    budget; with zeros it spins in that poll until the 120 s wall-clock deadline (a loop on
    MMIO runs far slower than plain code under icount, so it never even reaches the budget).
    """
    state = State()
    state.target = qemu_target(firmware)
    state.cpu = cpu_model(firmware)
    for base, size in ram_regions(firmware):
        region = state.ram.add()
        region.base, region.size = base, size
    if firmware.arch == Arch.MIPS:
        # The machine boots like YAMON: the kernel learns its memory from the firmware environment.
        memory = str(state.ram[0].size)
        state.boot.env["memsize"] = memory
        state.boot.env["ememsize"] = memory
    if firmware.symbols.address_of(SELF_RELOCATION) is not None:
        # A kernel that moves itself to a random address would run where no hook is: the search
        # watches the kernel by its symbols' link addresses.
        state.boot.cmdline = "nokaslr"
    console = console_uart(firmware, cmdline)
    if console is not None:
        # Unwired: no interrupt controller yet (device discovery wires it with the controller).
        state.devices.append(console.placement.device(()))
        if console.argument is not None:
            state.boot.cmdline = f"{state.boot.cmdline} {console.argument}".strip()
    if firmware.device_tree is not None and firmware.device_tree.psci_method in PSCI_CONDUITS[1:]:
        # The board's secure firmware answers PSCI calls (setup_arch -> psci_dt_init asks its
        # version at once); with no EL3 or EL2 on our CPU the call would be undefined: QEMU
        # answers instead.
        state.psci_conduit = firmware.device_tree.psci_method
    state.seed = seed
    state.random_unruled_reads = True
    state.instruction_budget = INSTRUCTION_BUDGET
    return state


def qemu_target(firmware: Firmware) -> str:
    """Which qemu-system-* runs the firmware: "arm", "mipsel" or "mips"."""
    if firmware.arch == Arch.AARCH64:
        raise BadInput(
            "AArch64 kernels are ingested (explorer inspect) and boot on the runner's AArch64 "
            "machine, but the search cannot place their devices yet"
        )
    if firmware.arch == Arch.ARM:
        if firmware.endian != Endian.LITTLE:
            raise BadInput("big-endian ARM kernels are not supported: only little-endian ARM boots")
        return "arm"
    return "mipsel" if firmware.endian == Endian.LITTLE else "mips"


def cpu_model(firmware: Firmware) -> str:
    """A QEMU CPU model that runs the kernel: the device tree's CPU (given, or appended to the
    kernel) when we have a model of it, else a default."""
    if firmware.arch == Arch.MIPS:
        return MIPS_CPU
    for compatible in firmware.device_tree.cpus if firmware.device_tree is not None else ():
        model = ARM_CPU_FOR_COMPATIBLE.get(compatible.removeprefix("arm,"))
        # A DT may name a CPU of another architecture class than the kernel's (a v6 tree handed
        # to a v5 kernel): only a model of the kernel's own class is sure to run it.
        if model is not None and ARCHITECTURE_OF_MODEL[model] == firmware.cpu_class:
            return model
    try:
        return DEFAULT_ARM_CPU[firmware.cpu_class]
    except KeyError:
        raise BadInput(
            f"no QEMU CPU model runs {firmware.cpu_class} kernels: only ARMv5, ARMv6, ARMv7 and MIPS32 boot"
        ) from None


def ram_regions(firmware: Firmware) -> tuple[tuple[int, int], ...]:
    """RAM as (base, size): the device tree's first memory bank (capped), else a default.

    One region: Linux only needs one bank to boot, and QEMU's DTB loader rewrites /memory from
    the first RAM region anyway. Without a DT bank, ARM RAM goes where the kernel's load address
    says (aligned down to DEFAULT_RAM_BYTES), else at 0 without a DT, else at the first usual
    DRAM base no DT node overlaps (a zImage is position independent); MIPS RAM starts at 0.
    """
    tree = firmware.device_tree
    if tree is not None and tree.memory:
        base, size = tree.memory[0]
        return ((base, min(size, MAX_RAM_BYTES)),)
    if firmware.arch == Arch.MIPS:
        return ((MIPS_RAM_BASE, DEFAULT_RAM_BYTES),)
    if firmware.load_address is not None:
        return ((firmware.load_address & ~(DEFAULT_RAM_BYTES - 1), DEFAULT_RAM_BYTES),)
    if tree is None:
        return ((ATAG_RAM_BASE, DEFAULT_RAM_BYTES),)
    taken = [reg for device in tree.devices for reg in device.reg]
    for base in ARM_RAM_BASES:
        if not any(address < base + DEFAULT_RAM_BYTES and base < address + size for address, size in taken):
            return ((base, DEFAULT_RAM_BYTES),)
    raise BadInput(
        "the device tree leaves no room for RAM at any usual DRAM base: give a DTB with a memory node"
    )
