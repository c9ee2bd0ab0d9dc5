/* A pretend Linux kernel: the functions the rehost plugin hooks by name (kernel_hooks.py), called
   in the order a real boot calls them, so a search scores a test program as it scores a kernel.

   start_kernel -> setup_arch, init_IRQ, time_init, calibrate_delay, rest_init -> kernel_init ->
   do_one_initcall(each program initcall) -> run_init_process -> machine_power_off.
   Every call is a real bl (blx for an initcall) that returns to its caller (built without
   inlining or sibling calls), so the plugin's shadow call stack and its NOPs see them as in a
   kernel. An initcall that fails (returns non-zero) is logged and the boot goes on, as Linux
   does. panic and machine_power_off stop the guest in a loop: the plugin ends the run at their
   first instruction anyway. */
#include "kernel.h"

extern initcall_t __initcall_start[], __initcall_end[];

/* Ingestion accepts an image as a Linux kernel by its banner; printed first, as Linux does. */
const char linux_banner[] = "Linux version 6.1.0-explorer-test (tests/firmware) #1 SMP ARM";

static char log_record[128];

/* Linux's printk_sprint fills one log record's text and returns its length: the plugin hooks
   its return to read the record. */
unsigned short printk_sprint(char *text, unsigned short size, const char *source)
{
    unsigned short length = 0;
    while (length + 1 < size && source[length] != '\0') {
        text[length] = source[length];
        length++;
    }
    text[length] = '\0';
    return length;
}

void printk(const char *text)
{
    printk_sprint(log_record, sizeof(log_record), text);
}

void panic(const char *message)
{
    printk(message);
    for (;;)
        ;
}

void machine_power_off(void)
{
    for (;;)
        ;
}

/* ARM kernels carry cpu_<processor>_proc_init for each CPU they support: ingestion reads the CPU
   class (ARMv7) from this name. */
void cpu_v7_proc_init(void) {}

/* Each says what a real one would: distinct bodies, so no two milestones fold into one address. */
void setup_arch(void)
{
    cpu_v7_proc_init();
    printk("CPU: ARMv7 Processor, test firmware");
}
void init_IRQ(void) { printk("NR_IRQS: 0 (the program polls)"); }
void time_init(void) { printk("clocksource: none"); }
void calibrate_delay(void) { printk("Calibrating delay loop (skipped)"); }

int do_one_initcall(initcall_t fn)
{
    return fn();
}

void do_initcalls(void)
{
    for (initcall_t *call = __initcall_start; call < __initcall_end; call++)
        if (do_one_initcall(*call) != 0)
            printk("initcall failed");
}

void run_init_process(void)
{
    printk("Run /init as init process");
}

void kernel_init(void)
{
    do_initcalls();
    run_init_process();
    machine_power_off();
}

void rest_init(void)
{
    kernel_init();
}

void start_kernel(void)
{
    printk(linux_banner);
    setup_arch();
    init_IRQ();
    time_init();
    calibrate_delay();
    rest_init();
}
