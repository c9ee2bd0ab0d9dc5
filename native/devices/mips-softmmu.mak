# Devices of our mips-softmmu and mipsel-softmmu builds (configure --without-default-devices keeps only these).
# Stock board kept as the reference for the MIPS rehosting machine to come.
CONFIG_MALTA=y
