# Devices of our arm-softmmu build (configure --without-default-devices keeps only these).
# The rehosting machine selects what it instantiates (see hw/arm/Kconfig in patches/).
CONFIG_REHOSTING=y
# Stock board kept as the reference for benchmarks/runner_vs_qemu.py.
CONFIG_VEXPRESS=y
