/*
 * How the rehost plugin asks the rehosting machine to stop the VM where a snapshot is taken.
 *
 * Shared by the machine (hw/misc/rehosting_catch_all.c) and the plugin (rehost_plugin/counts.c), which
 * otherwise know nothing of each other: the plugin may only use QEMU's public plugin API, and
 * that API can write memory but cannot stop the VM. So the plugin writes the 4-byte token to
 * the address through qemu_plugin_write_memory_hwaddr, from its callback at the point, and the
 * catch-all region, which lies under every address nothing else maps, takes that write as the
 * request: it stops the VM from the vCPU thread (vm_stop), so the vCPU stops at the end of the
 * block it is in, with no round trip through the driver.
 *
 * No guest can forge it: the address is past anything a 32-bit or LPAE CPU can reach, and a
 * CPU's own accesses carry specified memory attributes, the plugin's write does not. The token
 * reads the same in either byte order (the catch-all is guest-endian; MIPS may be big-endian).
 */
#ifndef REHOSTING_CONTROL_H
#define REHOSTING_CONTROL_H

#define REHOSTING_STOP_ADDRESS 0xfffffffffffff000ULL
#define REHOSTING_STOP_TOKEN 0x5aa5a55aU

#endif
