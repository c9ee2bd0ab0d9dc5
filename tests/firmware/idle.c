/* idle.elf: a driver waits for an interrupt that nothing will ever raise (no interrupt controller,
   no timer: the machine has a CPU and RAM only), as a kernel's idle task does once its initcalls
   are done and no timer is armed. Under icount QEMU would wait for the host for ever; the
   machine's idle deadline must end the run, at the same point every time. */
#include "kernel.h"

static void wait_for_interrupt(void)
{
    for (;;)
        __asm__ volatile("wfi");
}

static int idle_init(void)
{
    printk("idle: waiting for an interrupt");
    wait_for_interrupt();
    return 0;
}
initcall(idle_init);
