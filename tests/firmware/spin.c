/* spin.elf: a driver polls the status register of a device nothing describes until it reports
   "ready" (bit 5) and not "busy" (bit 0) on 32 reads in a row (the controller settles). Reads of
   0 spin forever, and so do the search's seeded random reads (each read passes with probability
   1/4, so 32 in a row never happen): the bitwise value search must find that 1 << 5 lets it
   through (all ones stays busy). Then run_init_process, and power off. */
#include "kernel.h"

#define CONTROLLER_STATUS 0x1f000004u
#define STATUS_BUSY (1u << 0)
#define STATUS_READY (1u << 5)
#define READY_READS_WANTED 32u

static void controller_wait_ready(void)
{
    u32 ready_reads = 0;
    while (ready_reads < READY_READS_WANTED) {
        u32 status = readl(CONTROLLER_STATUS);
        ready_reads = (status & STATUS_BUSY) || !(status & STATUS_READY) ? 0 : ready_reads + 1;
    }
}

static int controller_init(void)
{
    printk("controller: waiting for ready");
    controller_wait_ready();
    printk("controller: ready");
    return 0;
}
initcall(controller_init);
