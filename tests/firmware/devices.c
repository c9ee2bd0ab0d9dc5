/* devices.elf (boots with devices.dtb): a UART and a timer at the addresses the device tree
   gives, with compatibles our QEMU has models for (arm,pl011 and arm,sp804). Each driver checks
   the PrimeCell ID registers (panic when they are wrong), then only goes on when the device
   behaves: the UART must hand back, in loopback, the characters written to it; the timer must
   count down steadily. No value model does either by luck: device discovery must map the QEMU
   models (then "devices: uart ok" appears on the console). */
#include "kernel.h"

#define UART_BASE 0x1c090000u
#define TIMER_BASE 0x1c110000u

#define UART_DR 0x000u
#define UART_FR 0x018u
#define UART_CR 0x030u
#define UART_FR_RXFE (1u << 4)
#define UART_FR_TXFF (1u << 5)
#define UART_CR_ENABLE_LOOPBACK 0x381u /* UARTEN | LBE | TXE | RXE */
#define PL011_PART 0x011u

#define TIMER1_LOAD 0x00u
#define TIMER1_VALUE 0x04u
#define TIMER1_CONTROL 0x08u
#define TIMER_CONTROL_FREE_RUNNING_32BIT 0x82u /* enable | 32-bit counter */
#define SP804_PART 0x804u
/* A running SP804 at 1 MHz moves at most a few ticks between two reads. */
#define TIMER_LARGEST_STEP 0x10000u
#define TIMER_TICKS_WANTED 1000u
#define TIMER_STEADY_READS 16u

static int primecell_id_matches(u32 base, u32 part)
{
    static const u32 cell_id[4] = {0x0d, 0xf0, 0x05, 0xb1};
    for (u32 i = 0; i < 4; i++)
        if ((readl(base + 0xff0 + 4 * i) & 0xff) != cell_id[i])
            return 0;
    return ((readl(base + 0xfe0) & 0xff) | ((readl(base + 0xfe4) & 0xf) << 8)) == part;
}

static u32 uart_loopback(u32 character)
{
    while (readl(UART_BASE + UART_FR) & UART_FR_TXFF)
        ;
    writel(character, UART_BASE + UART_DR);
    while (readl(UART_BASE + UART_FR) & UART_FR_RXFE)
        ;
    return readl(UART_BASE + UART_DR) & 0xff;
}

static void uart_wait_loopback(const char *text)
{
    const char *next = text;
    while (*next != '\0')
        next = uart_loopback((u32)*next) == (u32)*next ? next + 1 : text;
}

static int pl011_init(void)
{
    if (!primecell_id_matches(UART_BASE, PL011_PART))
        panic("pl011: no PrimeCell UART at 0x1c090000");
    writel(UART_CR_ENABLE_LOOPBACK, UART_BASE + UART_CR);
    uart_wait_loopback("devices: uart ok\n");
    printk("pl011: loopback works");
    return 0;
}
initcall(pl011_init);

static void timer_wait_counting(void)
{
    u32 start = readl(TIMER_BASE + TIMER1_VALUE), previous = start, steady = 0;
    for (;;) {
        u32 now = readl(TIMER_BASE + TIMER1_VALUE);
        if (now > previous || previous - now >= TIMER_LARGEST_STEP) {
            start = now;
            steady = 0;
        } else if (++steady >= TIMER_STEADY_READS && start - now >= TIMER_TICKS_WANTED) {
            return;
        }
        previous = now;
    }
}

static int sp804_init(void)
{
    if (!primecell_id_matches(TIMER_BASE, SP804_PART))
        panic("sp804: no PrimeCell timer at 0x1c110000");
    writel(0xffffffffu, TIMER_BASE + TIMER1_LOAD);
    writel(TIMER_CONTROL_FREE_RUNNING_32BIT, TIMER_BASE + TIMER1_CONTROL);
    timer_wait_counting();
    printk("sp804: timer counts");
    return 0;
}
initcall(sp804_init);
