/* probe_panic.elf: a driver's probe reads its chip's ID register (unmapped) and panics when the
   ID is not its own, as drivers that cannot tolerate a missing chip do. No value is found by
   luck (a 32-bit ID), so the way past is NOP escalation: NOP foo_probe (return 0), the first
   frame above the panic path, and the boot reaches run_init_process and powers off. */
#include "kernel.h"

#define FOO_CHIP_ID 0x1f001000u
#define FOO_EXPECTED_ID 0x0a5c3e91u

static int foo_probe(void)
{
    if (readl(FOO_CHIP_ID) != FOO_EXPECTED_ID)
        panic("foo: unknown chip id");
    printk("foo: chip found");
    return 0;
}

static int foo_init(void)
{
    if (foo_probe() != 0)
        return -19;
    printk("foo: registered");
    return 0;
}
initcall(foo_init);
