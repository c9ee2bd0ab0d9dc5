/* deadlock.elf: a driver takes a spinlock its own CPU already holds, with interrupts masked
   (spin_lock_irqsave on a lock the code it interrupted holds), and waits for an event (WFE) that
   nothing on a one-CPU machine can send: the plugin must end the run there, soon, at the same
   point every time. Before it, a delay waits for events with interrupts masked too, but counts
   down in a register, SPIN_COUNTDOWN turns (more than the plugin's limit of waits with the same
   registers): that wait ends by itself and must not be taken for a dead spin. */
#include "kernel.h"

/* Above the plugin's SPIN_WAITS_MAX (65536): only a count of waits with equal registers may end
   a run. */
#define SPIN_COUNTDOWN 100000

static volatile u32 port_lock = 1; /* taken, by the code the driver interrupted */

static void countdown_wait(u32 turns)
{
    __asm__ volatile("cpsid i\n"
                     "1: wfe\n"
                     "subs %0, %0, #1\n"
                     "bne 1b\n"
                     "cpsie i"
                     : "+r"(turns)
                     :
                     : "cc", "memory");
}

static void spin_lock_irqsave(volatile u32 *lock)
{
    u32 held;

    __asm__ volatile("cpsid i\n"
                     "1: ldr %0, [%1]\n"
                     "cmp %0, #0\n"
                     "wfene\n"
                     "bne 1b"
                     : "=&r"(held)
                     : "r"(lock)
                     : "cc", "memory");
    *lock = 1;
}

static int countdown_init(void)
{
    countdown_wait(SPIN_COUNTDOWN);
    printk("deadlock: the countdown's waits ended");
    return 0;
}
initcall(countdown_init);

static int console_write_init(void)
{
    printk("deadlock: taking the port lock");
    spin_lock_irqsave(&port_lock);
    return 0;
}
initcall(console_write_init);
