# Devices of our aarch64-softmmu build (configure --without-default-devices keeps only these).
# Every device of the arm build (the rehosting machine, the stock 32-bit boards): its GIC symbol
# brings the GICv3 (arm-gicv3) beside the GICv2, and the machine already selects PL011 and 16550;
# the generic timer is the CPU's own. Stock `virt` (ARM_VIRT) is left out: it selects ACPI, whose
# CXL tables need CXL, the PCI expander bridge, the CXL memory device and PCIe ports before the
# binary links and starts in QEMU 10.2; the arm64 ground truth boots on Debian's packaged QEMU.
include ../arm-softmmu/rehosting.mak
