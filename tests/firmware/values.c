/* values.elf (linked between spin.c and probe_panic.c: spin.c's controller, this handshake, then
   probe_panic.c's foo, in that order): a handshake that only a changing register completes. The
   driver reads a key register three times and goes on only when the three values differ in a way
   no constant can (first != second != third, and their XOR ends in binary 10); it retries
   forever otherwise. Reads of 0, any pinned constant and any single bit spin; seeded random
   reads get through after a few tries (each passes with probability about 1/4). So once the
   bitwise search has got the boot past the controller, the run gets through the handshake by
   luck and further than its parent, and value collapse must pin the values it read, as a
   sequence, before the NOP of foo that ends the search: the state that boots to the end then
   owes the handshake to its pinned values, not to its seed. */
#include "kernel.h"

#define HANDSHAKE_KEY 0x1f002000u

static int handshake_accepted(u32 first, u32 second, u32 third)
{
    return first != second && second != third && ((first ^ second ^ third) & 3u) == 2u;
}

static int handshake_init(void)
{
    u32 first, second, third;
    do {
        first = readl(HANDSHAKE_KEY);
        second = readl(HANDSHAKE_KEY);
        third = readl(HANDSHAKE_KEY);
    } while (!handshake_accepted(first, second, third));
    printk("handshake: accepted");
    return 0;
}
initcall(handshake_init);
