# Devices of our mips-softmmu and mipsel-softmmu builds (configure --without-default-devices keeps only these).
# The rehosting machine selects what it instantiates (see hw/mips/Kconfig in patches/).
CONFIG_REHOSTING_MIPS=y
# Stock board kept as the reference for the MIPS rehosting machine.
CONFIG_MALTA=y
