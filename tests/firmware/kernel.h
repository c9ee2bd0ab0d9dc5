/* The few "kernel" services every test program shares (kernel.c), and the initcall table. */
#ifndef TEST_FIRMWARE_KERNEL_H
#define TEST_FIRMWARE_KERNEL_H

typedef unsigned int u32;
typedef int (*initcall_t)(void);

/* Put `fn` in the table do_initcalls walks, in link order. */
#define initcall(fn) \
    static initcall_t __initcall_##fn __attribute__((used, section(".initcall"))) = fn

/* Always inlined (the build says -fno-inline): a poll's loads must lie in the polling loop. */
static inline __attribute__((always_inline)) u32 readl(u32 address)
{
    return *(volatile u32 *)address;
}

static inline __attribute__((always_inline)) void writel(u32 value, u32 address)
{
    *(volatile u32 *)address = value;
}

/* Ends the boot: the rehost plugin's panic hook reads `message` (its format string) from r0. */
void panic(const char *message) __attribute__((noreturn));
/* One line of the guest log: goes through printk_sprint, which the plugin's log hook reads. */
void printk(const char *text);

#endif
