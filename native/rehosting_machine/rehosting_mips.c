/*
 * The `rehosting` machine for 32-bit MIPS (qemu-system-mipsel and -mips): a board assembled
 * at start-up from one JSON file that the explorer master writes (-M rehosting,config=FILE).
 *
 * Like the ARM machine it builds only what the config declares and leaves every other
 * address to the catch-all region (rehosting_catch_all.c). MIPS adds an optional ISA bus (PC-style
 * peripherals behind an I/O window, as on Malta) and the YAMON boot protocol: the kernel ELF
 * is loaded, and the CPU starts at its entry with a0 = argc, a1 = argv, a2 = envp and
 * a3 = the first RAM region's size, as the Malta firmware passes them. It must never guess:
 * anything missing or malformed in the config stops QEMU with one line naming the field.
 *
 * Config (integers may be JSON numbers or strings such as "0x18000000"):
 * {
 *   "cpu": "24Kf",                      QEMU MIPS CPU model name (4Kc, 24Kf, 34Kf, ...)
 *   "cpu_clock_hz": 200000000,          optional; CP0 Count runs at half of it
 *   "ram": [ {"base": A, "size": N} ],  the first one holds the boot arguments and initrd
 *   "devices": [ {                      any sysbus device type
 *     "type": "serial-mm", "mmio": [A], "props": {...},
 *     "irqs": [2]                       CPU interrupt line (0..7) of each output, null = unwired
 *   } ],
 *   "isa": {                            optional ISA bus
 *     "io_base": A,                     physical address of I/O port 0
 *     "irqs": [null, ..., 2],           CPU interrupt line of ISA IRQ n (index n), null = unwired
 *     "i8259": {                        or: the PC's cascaded i8259 pair takes all 16 ISA IRQs
 *       "cpu_line": 2,                  the CPU interrupt line its output raises
 *       "acknowledge": A                optional: reads of this address are the pair's
 *     }                                 interrupt acknowledge cycle (a PCI host bridge's IACK)
 *   },
 *   "isa_devices": [ {"type": "mc146818rtc", "props": {"iobase": 112, "irq": 8}} ],
 *   "mmio_rules": [ {"address": A, "constant": V} ],  what the catch-all answers (rehosting.c)
 *   "boot": {
 *     "kernel": PATH (ELF), "initrd": PATH, "cmdline": STR,
 *     "env": {"memsize": "134217728", ...}   the firmware environment, strings
 *   },
 *   "console_sink": A                   the low byte of each write there is a console byte
 *                                       (a UART without a model: rehosting_devices.c)
 *   "unmapped_log_limit": 16
 * }
 * The initrd goes to the top of the first RAM region and is announced on the command line as
 * "rd_start=0x... rd_size=N", which is how the kernel learns it from YAMON-style firmware.
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/cutils.h"
#include "qemu/units.h"
#include "qom/object.h"
#include "qobject/qstring.h"
#include "elf.h"
#include "hw/boards.h"
#include "hw/clock.h"
#include "hw/intc/i8259.h"
#include "hw/isa/isa.h"
#include "hw/loader.h"
#include "hw/sysbus.h"
#include "hw/qdev-properties-system.h"
#include "hw/misc/rehosting.h"
#include "system/address-spaces.h"
#include "system/reset.h"
#include "system/system.h"
#include "target/mips/cpu.h"

#define TYPE_REHOSTING_MIPS_MACHINE MACHINE_TYPE_NAME("rehosting")
OBJECT_DECLARE_SIMPLE_TYPE(RehostingMipsMachineState, REHOSTING_MIPS_MACHINE)

#define CPU_INTERRUPT_LINES 8
#define ISA_IRQS 16
#define ISA_IO_SIZE 0x10000
/* The acknowledge register is one 32-bit word (the vector is its low byte). */
#define ACKNOWLEDGE_SIZE 4
#define DEFAULT_CPU_CLOCK_HZ 200000000
/* Where the argv/envp tables go, as on Malta: low RAM the kernel reads before reusing it. */
#define PROM_OFFSET 0x2000
#define PROM_ENTRIES 32
#define PROM_ENTRY_SIZE 256
/* The kernel's early allocations go right after the initrd: leave them room, as Malta does. */
#define INITRD_MARGIN (128 * KiB)
#define INITRD_ALIGN (4 * KiB)

struct RehostingMipsMachineState {
    MachineState parent_obj;

    RehostingConfig config;
    MIPSCPU *cpu;
    ISABus *isa_bus;
    uint64_t kernel_entry;
    uint32_t prom_vaddr;
    uint32_t argc;
};

static void create_cpu(RehostingMipsMachineState *s)
{
    RehostingConfig *config = &s->config;
    const char *model = rehosting_config_get_str(config, config->root, "cpu",
                                                 "config");
    QObject *hz = qdict_get(config->root, "cpu_clock_hz");
    g_autofree char *cpu_type = NULL;
    Clock *clock;

    if (!model) {
        rehosting_config_fail(config, "cpu is missing (e.g. \"24Kf\")");
    }
    cpu_type = g_strdup_printf(MIPS_CPU_TYPE_NAME("%s"), model);
    if (!object_class_dynamic_cast(object_class_by_name(cpu_type),
                                   TYPE_MIPS_CPU)) {
        rehosting_config_fail(config, "cpu \"%s\" is not a MIPS CPU model of "
                              "this QEMU (see -cpu help)", model);
    }
    clock = clock_new(OBJECT(s), "cpu-refclk");
    clock_set_hz(clock, hz ? rehosting_config_to_u64(config, hz, "cpu_clock_hz")
                           : DEFAULT_CPU_CLOCK_HZ);
    s->cpu = mips_cpu_create_with_clock(cpu_type, clock, TARGET_BIG_ENDIAN);
    cpu_mips_irq_init_cpu(s->cpu);
    cpu_mips_clock_init(s->cpu);
}

static qemu_irq cpu_interrupt_line(RehostingMipsMachineState *s,
                                   QObject *value, const char *what)
{
    uint64_t line = rehosting_config_to_u64(&s->config, value, what);

    if (line >= CPU_INTERRUPT_LINES) {
        rehosting_config_fail(&s->config, "%s = %" PRIu64 " is not a CPU "
                              "interrupt line (0..%d)", what, line,
                              CPU_INTERRUPT_LINES - 1);
    }
    return s->cpu->env.irq[line];
}

static void create_devices(RehostingMipsMachineState *s)
{
    RehostingConfig *config = &s->config;
    QList *devices = rehosting_config_get_list(config, config->root, "devices",
                                               "config");
    const QListEntry *entry, *irq;
    int index = 0;

    if (!devices) {
        return;
    }
    QLIST_FOREACH_ENTRY(devices, entry) {
        QDict *desc = qobject_to(QDict, qlist_entry_obj(entry));
        g_autofree char *where = g_strdup_printf("devices[%d]", index++);
        DeviceState *dev;
        QList *irqs;
        int output = 0;

        if (!desc) {
            rehosting_config_fail(config, "%s must be an object", where);
        }
        dev = rehosting_create_sysbus_device(config, desc, where);
        irqs = rehosting_config_get_list(config, desc, "irqs", where);
        if (!irqs) {
            continue;
        }
        QLIST_FOREACH_ENTRY(irqs, irq) {
            g_autofree char *what = g_strdup_printf("%s.irqs[%d]", where,
                                                    output);

            if (qobject_type(qlist_entry_obj(irq)) != QTYPE_QNULL) {
                sysbus_connect_irq(SYS_BUS_DEVICE(dev), output,
                                   cpu_interrupt_line(s, qlist_entry_obj(irq),
                                                      what));
            }
            output++;
        }
    }
}

/* The interrupt acknowledge cycle: the pending interrupt's number, as the pair's INTA answers it. */
static uint64_t acknowledge_read(void *opaque, hwaddr offset, unsigned size)
{
    return pic_read_irq(isa_pic);
}

static void acknowledge_write(void *opaque, hwaddr offset, uint64_t value,
                              unsigned size)
{
}

static const MemoryRegionOps acknowledge_ops = {
    .read = acknowledge_read,
    .write = acknowledge_write,
    .endianness = DEVICE_NATIVE_ENDIAN,
};

/*
 * The PC's two i8259s (master at ports 0x20, slave at 0xa0 on the master's IRQ 2) with the
 * master's output on one CPU interrupt line: what a PC-style southbridge puts between the ISA
 * IRQs and a MIPS CPU. Kernels learn the pending interrupt either by polling the i8259's
 * ports or by reading a host bridge's interrupt acknowledge register, mapped here at
 * "acknowledge" above the catch-all.
 */
static qemu_irq *create_i8259(RehostingMipsMachineState *s, QDict *i8259)
{
    RehostingConfig *config = &s->config;
    QObject *line = qdict_get(i8259, "cpu_line");
    QObject *acknowledge = qdict_get(i8259, "acknowledge");
    qemu_irq *irqs;

    if (!line) {
        rehosting_config_fail(config, "isa.i8259.cpu_line is missing");
    }
    irqs = i8259_init(s->isa_bus, cpu_interrupt_line(s, line,
                                                     "isa.i8259.cpu_line"));
    if (acknowledge) {
        MemoryRegion *region = g_new(MemoryRegion, 1);

        memory_region_init_io(region, OBJECT(s), &acknowledge_ops, s,
                              "rehosting.i8259-acknowledge", ACKNOWLEDGE_SIZE);
        memory_region_add_subregion(get_system_memory(),
            rehosting_config_to_u64(config, acknowledge,
                                    "isa.i8259.acknowledge"), region);
    }
    return irqs;
}

static void create_isa_bus(RehostingMipsMachineState *s)
{
    RehostingConfig *config = &s->config;
    QDict *isa = rehosting_config_get_dict(config, config->root, "isa",
                                           "config");
    MemoryRegion *io = g_new(MemoryRegion, 1);
    qemu_irq *irqs = g_new0(qemu_irq, ISA_IRQS);
    const QListEntry *entry;
    QList *lines;
    QDict *i8259;
    int n = 0;

    if (!isa) {
        return;
    }
    /* A container: ports no ISA device claims fall through to the catch-all. */
    memory_region_init(io, OBJECT(s), "rehosting.isa-io", ISA_IO_SIZE);
    memory_region_add_subregion(get_system_memory(),
                                rehosting_config_get_u64(config, isa, "io_base",
                                                         "isa"), io);
    s->isa_bus = isa_bus_new(NULL, get_system_memory(), io, &error_fatal);
    lines = rehosting_config_get_list(config, isa, "irqs", "isa");
    i8259 = rehosting_config_get_dict(config, isa, "i8259", "isa");
    if (i8259 && lines) {
        rehosting_config_fail(config, "isa: irqs and i8259 both wire the ISA "
                              "IRQs: give one");
    }
    if (i8259) {
        g_free(irqs);
        isa_bus_register_input_irqs(s->isa_bus, create_i8259(s, i8259));
        return;
    }
    if (lines) {
        QLIST_FOREACH_ENTRY(lines, entry) {
            g_autofree char *what = g_strdup_printf("isa.irqs[%d]", n);

            if (n >= ISA_IRQS) {
                rehosting_config_fail(config, "isa.irqs lists more than %d "
                                      "ISA IRQs", ISA_IRQS);
            }
            if (qobject_type(qlist_entry_obj(entry)) != QTYPE_QNULL) {
                irqs[n] = cpu_interrupt_line(s, qlist_entry_obj(entry), what);
            }
            n++;
        }
    }
    isa_bus_register_input_irqs(s->isa_bus, irqs);
}

static void create_isa_devices(RehostingMipsMachineState *s)
{
    RehostingConfig *config = &s->config;
    QList *devices = rehosting_config_get_list(config, config->root,
                                               "isa_devices", "config");
    const QListEntry *entry;
    int index = 0;

    if (!devices) {
        return;
    }
    if (!s->isa_bus) {
        rehosting_config_fail(config, "isa_devices given but no isa bus "
                              "declared");
    }
    QLIST_FOREACH_ENTRY(devices, entry) {
        QDict *desc = qobject_to(QDict, qlist_entry_obj(entry));
        g_autofree char *where = g_strdup_printf("isa_devices[%d]", index++);
        const char *type;
        ISADevice *dev;
        Error *err = NULL;

        if (!desc) {
            rehosting_config_fail(config, "%s must be an object", where);
        }
        type = rehosting_config_get_str(config, desc, "type", where);
        if (!type || !object_class_dynamic_cast(object_class_by_name(type),
                                                TYPE_ISA_DEVICE)) {
            rehosting_config_fail(config, "%s.type \"%s\" is not an ISA device "
                                  "of this QEMU", where, type ? type : "");
        }
        dev = isa_new(type);
        if (object_property_find(OBJECT(dev), "chardev")) {
            qdev_prop_set_chr(DEVICE(dev), "chardev",
                              serial_hd(config->next_serial++));
        }
        rehosting_set_props(config, DEVICE(dev),
                            rehosting_config_get_dict(config, desc, "props",
                                                      where), where);
        if (!isa_realize_and_unref(dev, s->isa_bus, &err)) {
            rehosting_config_fail(config, "%s (%s): %s", where, type,
                                  error_get_pretty(err));
        }
    }
}

/* Entry `index` of the argv/envp table: a pointer to its string, or the terminating 0. */
static void prom_set(RehostingMipsMachineState *s, uint8_t *prom, int index,
                     const char *text)
{
    uint32_t string_offset = PROM_ENTRIES * 4 + index * PROM_ENTRY_SIZE;
    uint32_t pointer = text ? s->prom_vaddr + string_offset : 0;

    if (index >= PROM_ENTRIES) {
        rehosting_config_fail(&s->config, "boot: more than %d boot arguments "
                              "and environment strings", PROM_ENTRIES - 1);
    }
    if (text && strlen(text) >= PROM_ENTRY_SIZE) {
        rehosting_config_fail(&s->config, "boot: \"%.40s...\" is longer than "
                              "%d bytes", text, PROM_ENTRY_SIZE - 1);
    }
    stl_p(prom + index * 4, pointer); /* target byte order */
    if (text) {
        pstrcpy((char *)prom + string_offset, PROM_ENTRY_SIZE, text);
    }
}

static void load_kernel(RehostingMipsMachineState *s, const QDict *boot)
{
    RehostingConfig *config = &s->config;
    MachineState *machine = MACHINE(s);
    QDict *env = boot ? rehosting_config_get_dict(config, boot, "env", "boot")
                      : NULL;
    g_autofree uint8_t *prom = g_malloc0(PROM_ENTRIES * (4 + PROM_ENTRY_SIZE));
    g_autofree char *arguments = NULL;
    g_autofree char *kernel_name =
        g_path_get_basename(machine->kernel_filename);
    uint64_t kernel_high, initrd_offset = 0;
    int64_t initrd_size = 0;
    const QDictEntry *variable;
    ssize_t kernel_size;
    int index = 0;

    kernel_size = load_elf(machine->kernel_filename, NULL,
                           cpu_mips_kseg0_to_phys, NULL, &s->kernel_entry,
                           NULL, &kernel_high, NULL,
                           TARGET_BIG_ENDIAN ? ELFDATA2MSB : ELFDATA2LSB,
                           EM_MIPS, 1, 0);
    if (kernel_size < 0) {
        rehosting_config_fail(config, "boot.kernel %s: %s (want a MIPS ELF "
                              "vmlinux of this endianness)",
                              machine->kernel_filename,
                              load_elf_strerror(kernel_size));
    }
    if (machine->initrd_filename) {
        initrd_size = get_image_size(machine->initrd_filename, NULL);
        initrd_offset = QEMU_ALIGN_DOWN(config->first_ram_size - initrd_size -
                                        INITRD_MARGIN, INITRD_ALIGN);
        if (initrd_size <= 0 || initrd_size + INITRD_MARGIN >
            config->first_ram_size ||
            kernel_high >= config->first_ram_base + initrd_offset) {
            rehosting_config_fail(config, "boot.initrd %s does not fit in "
                                  "ram[0] above the kernel",
                                  machine->initrd_filename);
        }
        load_image_targphys(machine->initrd_filename,
                            config->first_ram_base + initrd_offset,
                            initrd_size, &error_fatal);
    }

    s->prom_vaddr = cpu_mips_phys_to_kseg0(NULL, config->first_ram_base +
                                                 PROM_OFFSET);
    arguments = initrd_size ?
        g_strdup_printf("rd_start=0x%" PRIx32 " rd_size=%" PRId64 " %s",
                        (uint32_t)cpu_mips_phys_to_kseg0(NULL,
                            config->first_ram_base + initrd_offset),
                        initrd_size, machine->kernel_cmdline) :
        g_strdup(machine->kernel_cmdline);
    prom_set(s, prom, index++, kernel_name);
    prom_set(s, prom, index++, arguments);
    s->argc = index;
    for (variable = env ? qdict_first(env) : NULL; variable;
         variable = qdict_next(env, variable)) {
        QString *value = qobject_to(QString, qdict_entry_value(variable));

        if (!value) {
            rehosting_config_fail(config, "boot.env.%s must be a string",
                                  qdict_entry_key(variable));
        }
        prom_set(s, prom, index++, qdict_entry_key(variable));
        prom_set(s, prom, index++, qstring_get_str(value));
    }
    prom_set(s, prom, index, NULL);
    rom_add_blob_fixed("rehosting.prom", prom,
                       PROM_ENTRIES * (4 + PROM_ENTRY_SIZE),
                       config->first_ram_base + PROM_OFFSET);
}

/* What YAMON leaves behind when it jumps to the kernel. */
static void reset_to_kernel_entry(void *opaque)
{
    RehostingMipsMachineState *s = opaque;
    CPUMIPSState *env = &s->cpu->env;

    cpu_reset(CPU(s->cpu));
    env->CP0_Status &= ~((1 << CP0St_BEV) | (1 << CP0St_ERL));
    env->active_tc.gpr[4] = s->argc;                       /* a0 */
    env->active_tc.gpr[5] = s->prom_vaddr;                 /* a1: argv */
    env->active_tc.gpr[6] = s->prom_vaddr + s->argc * 4;   /* a2: envp */
    env->active_tc.gpr[7] = s->config.first_ram_size;      /* a3 */
    env->active_tc.gpr[29] = s->prom_vaddr - 64;           /* sp */
    env->active_tc.PC = s->kernel_entry;
}

static void rehosting_mips_init(MachineState *machine)
{
    RehostingMipsMachineState *s = REHOSTING_MIPS_MACHINE(machine);
    RehostingConfig *config = &s->config;
    QDict *boot;

    rehosting_config_load(config);
    rehosting_map_catch_all(config, OBJECT(s));
    rehosting_create_ram(config);
    rehosting_create_console_sink(config, OBJECT(s));
    create_cpu(s);
    create_devices(s);
    create_isa_bus(s);
    create_isa_devices(s);

    boot = rehosting_configure_boot_files(config, machine);
    load_kernel(s, boot);
    qemu_register_reset(reset_to_kernel_entry, s);
}

static char *rehosting_mips_get_config(Object *obj, Error **errp)
{
    return g_strdup(REHOSTING_MIPS_MACHINE(obj)->config.path);
}

static void rehosting_mips_set_config(Object *obj, const char *value,
                                      Error **errp)
{
    RehostingMipsMachineState *s = REHOSTING_MIPS_MACHINE(obj);

    g_free(s->config.path);
    s->config.path = g_strdup(value);
}

static void rehosting_mips_finalize(Object *obj)
{
    RehostingMipsMachineState *s = REHOSTING_MIPS_MACHINE(obj);

    g_free(s->config.path);
    qobject_unref(s->config.root);
}

static void rehosting_mips_class_init(ObjectClass *oc, const void *data)
{
    MachineClass *mc = MACHINE_CLASS(oc);

    mc->desc = "Board built from a JSON config (explorer rehosting)";
    mc->init = rehosting_mips_init;
    mc->max_cpus = 1;
    object_class_property_add_str(oc, "config", rehosting_mips_get_config,
                                  rehosting_mips_set_config);
    object_class_property_set_description(oc, "config",
        "JSON file describing CPU, RAM, devices and boot parameters");
}

static const TypeInfo rehosting_mips_machine_info = {
    .name = TYPE_REHOSTING_MIPS_MACHINE,
    .parent = TYPE_MACHINE,
    .instance_size = sizeof(RehostingMipsMachineState),
    .instance_finalize = rehosting_mips_finalize,
    .class_init = rehosting_mips_class_init,
};

static void rehosting_mips_machine_register(void)
{
    type_register_static(&rehosting_mips_machine_info);
}

type_init(rehosting_mips_machine_register);
