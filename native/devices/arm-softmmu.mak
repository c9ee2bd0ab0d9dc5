# Devices of our arm-softmmu build (configure --without-default-devices keeps only these).
# The rehosting machine selects what it instantiates (see hw/arm/Kconfig in patches/).
CONFIG_REHOSTING=y
# Stock boards: the reference for benchmarks/runner_vs_qemu.py (vexpress-a9), and the ground
# truth `explorer bench` boots the development set's kernels on (explorer/bench/stock.py).
CONFIG_VEXPRESS=y
CONFIG_CUBIEBOARD=y
CONFIG_SABRELITE=y
CONFIG_FSL_IMX6UL=y
CONFIG_ALLWINNER_H3=y
CONFIG_RASPI=y
# Models `explorer run --net` places from the device tree that no board above brings in: Cadence
# GEM (cdns,gem, cdns,macb; the same symbol builds the Cadence UART).
CONFIG_CADENCE=y
