/* escalate.elf: a driver whose failure moves up when its innermost frame is NOP'd. bar_read_id
   panics when the bus does not answer; with it NOP'd, bar_probe gets no ID and panics itself:
   the crash moved one level up, with the same callers around it. NOP escalation must see the
   similar stack and NOP bar_probe (the next frame up) instead, after which bar_register goes on
   without the device and the boot reaches the end. */
#include "kernel.h"

#define BAR_BUS_STATUS 0x1f003000u
#define BAR_ID 0x1f003004u
#define BAR_EXPECTED_ID 0x0b4a0001u
#define BAR_BUS_ANSWERS 0x600dbeefu

static u32 bar_read_id(void)
{
    if (readl(BAR_BUS_STATUS) != BAR_BUS_ANSWERS)
        panic("bar: the bus does not answer");
    return readl(BAR_ID);
}

static int bar_probe(void)
{
    if (bar_read_id() != BAR_EXPECTED_ID)
        panic("bar: unknown chip id");
    printk("bar: chip found");
    return 0;
}

static int bar_register(void)
{
    int error = bar_probe();
    printk(error ? "bar: no device" : "bar: registered");
    return error;
}

static int bar_init(void)
{
    bar_register();
    return 0;
}
initcall(bar_init);
