/*
 * The `rehosting` machine for 32-bit ARM: a board assembled at start-up from
 * one JSON file that the explorer master writes (-M rehosting,config=FILE).
 *
 * The machine only builds what the config declares (CPU, RAM regions, one
 * interrupt controller, QEMU devices at given addresses, boot parameters) and
 * puts a catch-all MMIO region of the lowest priority under the whole address
 * space, so a kernel touching a device nobody declared reads 0 instead of
 * taking a bus fault. It must never guess: anything missing or malformed in
 * the config stops QEMU with one line naming the file and the field.
 *
 * Config (integers may be JSON numbers or strings such as "0x60000000"):
 * {
 *   "cpu": "cortex-a9",                 QEMU ARM CPU model name
 *   "ram": [ {"base": A, "size": N} ],  at least one region
 *   "interrupt_controller": {           optional
 *     "type": "a9mpcore_priv",          or a15mpcore_priv, arm_gic, ...
 *     "mmio": [A, ...],                 address of each sysbus MMIO region
 *     "props": {"num-irq": 96}          QOM properties, set as given
 *   },
 *   "devices": [ {                      any sysbus device type
 *     "type": "pl011", "mmio": [A, ...],
 *     "irqs": [37],                     GIC interrupt ID of each IRQ output
 *                                       (SPI n is ID 32 + n), null = unwired
 *     "props": {...}                    QOM properties, set as given
 *   } ],                                devices with a "chardev" property get
 *                                       the next -serial backend, in order
 *   "boot": {                           each falls back to -kernel etc.
 *     "kernel": PATH, "initrd": PATH, "dtb": PATH, "cmdline": STR,
 *     "board_id": N, "loader_start": A  default: the first RAM region's base
 *   },
 *   "unmapped_log_limit": 16            accesses to the catch-all region
 *                                       logged with -d unimp, then silence
 * }
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/cutils.h"
#include "qemu/error-report.h"
#include "qemu/log.h"
#include "qobject/qdict.h"
#include "qobject/qjson.h"
#include "qobject/qlist.h"
#include "qobject/qnum.h"
#include "qobject/qstring.h"
#include "qom/object.h"
#include "qom/qom-qobject.h"
#include "hw/boards.h"
#include "hw/sysbus.h"
#include "hw/qdev-properties-system.h"
#include "hw/arm/boot.h"
#include "hw/arm/machines-qom.h"
#include "system/address-spaces.h"
#include "system/system.h"
#include "target/arm/cpu-qom.h"

#define TYPE_REHOSTING_MACHINE MACHINE_TYPE_NAME("rehosting")
OBJECT_DECLARE_SIMPLE_TYPE(RehostingMachineState, REHOSTING_MACHINE)

/* GIC interrupt IDs below this are per-CPU (SGI, PPI); devices use SPIs. */
#define GIC_FIRST_SPI 32
/* Lowest priority: anything the config maps wins over the catch-all. */
#define UNMAPPED_PRIORITY -1000
#define DEFAULT_UNMAPPED_LOG_LIMIT 16

struct RehostingMachineState {
    MachineState parent_obj;

    char *config_path;
    QDict *config;
    DeviceState *interrupt_controller;
    int next_serial;

    MemoryRegion unmapped;
    uint64_t unmapped_log_limit;
    uint64_t unmapped_accesses;

    struct arm_boot_info boot;
};

static G_NORETURN G_GNUC_PRINTF(2, 3)
void config_fail(const RehostingMachineState *s, const char *fmt, ...)
{
    va_list ap;
    g_autofree char *message = NULL;

    va_start(ap, fmt);
    message = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    error_report("rehosting: config %s: %s", s->config_path, message);
    exit(1);
}

static uint64_t config_to_u64(const RehostingMachineState *s, QObject *value,
                              const char *what)
{
    uint64_t result;
    QNum *number = qobject_to(QNum, value);
    QString *text = qobject_to(QString, value);

    if (number && qnum_get_try_uint(number, &result)) {
        return result;
    }
    if (text && qemu_strtou64(qstring_get_str(text), NULL, 0, &result) == 0) {
        return result;
    }
    config_fail(s, "%s must be an unsigned integer (number or \"0x...\")",
                what);
}

static uint64_t config_get_u64(const RehostingMachineState *s,
                               const QDict *dict, const char *key,
                               const char *where)
{
    QObject *value = qdict_get(dict, key);
    g_autofree char *what = g_strdup_printf("%s.%s", where, key);

    if (!value) {
        config_fail(s, "%s is missing", what);
    }
    return config_to_u64(s, value, what);
}

static const char *config_get_str(const RehostingMachineState *s,
                                  const QDict *dict, const char *key,
                                  const char *where)
{
    QObject *value = qdict_get(dict, key);

    if (!value) {
        return NULL;
    }
    if (!qobject_to(QString, value)) {
        config_fail(s, "%s.%s must be a string", where, key);
    }
    return qstring_get_str(qobject_to(QString, value));
}

static QList *config_get_list(const RehostingMachineState *s,
                              const QDict *dict, const char *key,
                              const char *where)
{
    QObject *value = qdict_get(dict, key);

    if (!value) {
        return NULL;
    }
    if (!qobject_to(QList, value)) {
        config_fail(s, "%s.%s must be a list", where, key);
    }
    return qobject_to(QList, value);
}

static QDict *config_get_dict(const RehostingMachineState *s,
                              const QDict *dict, const char *key,
                              const char *where)
{
    QObject *value = qdict_get(dict, key);

    if (!value) {
        return NULL;
    }
    if (!qobject_to(QDict, value)) {
        config_fail(s, "%s.%s must be an object", where, key);
    }
    return qobject_to(QDict, value);
}

static void load_config(RehostingMachineState *s)
{
    g_autofree char *text = NULL;
    g_autoptr(GError) gerror = NULL;
    Error *err = NULL;
    QObject *parsed;

    if (!s->config_path) {
        error_report("rehosting: no config given: use -M rehosting,config=FILE");
        exit(1);
    }
    if (!g_file_get_contents(s->config_path, &text, NULL, &gerror)) {
        config_fail(s, "cannot read it: %s", gerror->message);
    }
    parsed = qobject_from_json(text, &err);
    if (!parsed) {
        config_fail(s, "not valid JSON: %s", error_get_pretty(err));
    }
    s->config = qobject_to(QDict, parsed);
    if (!s->config) {
        config_fail(s, "the top level must be a JSON object");
    }
}

static uint64_t unmapped_read(void *opaque, hwaddr addr, unsigned size)
{
    RehostingMachineState *s = opaque;

    if (s->unmapped_accesses++ < s->unmapped_log_limit) {
        qemu_log_mask(LOG_UNIMP, "rehosting: unmapped read  0x%" HWADDR_PRIx
                      " size %u -> 0\n", addr, size);
    }
    return 0;
}

static void unmapped_write(void *opaque, hwaddr addr, uint64_t value,
                           unsigned size)
{
    RehostingMachineState *s = opaque;

    if (s->unmapped_accesses++ < s->unmapped_log_limit) {
        qemu_log_mask(LOG_UNIMP, "rehosting: unmapped write 0x%" HWADDR_PRIx
                      " size %u <- 0x%" PRIx64 "\n", addr, size, value);
    }
}

static const MemoryRegionOps unmapped_ops = {
    .read = unmapped_read,
    .write = unmapped_write,
    .endianness = DEVICE_LITTLE_ENDIAN,
    .valid = { .min_access_size = 1, .max_access_size = 8 },
};

static void map_unmapped_catch_all(RehostingMachineState *s)
{
    QObject *limit = qdict_get(s->config, "unmapped_log_limit");

    s->unmapped_log_limit = limit ?
        config_to_u64(s, limit, "unmapped_log_limit") :
        DEFAULT_UNMAPPED_LOG_LIMIT;
    memory_region_init_io(&s->unmapped, OBJECT(s), &unmapped_ops, s,
                          "rehosting.unmapped", UINT64_MAX);
    memory_region_add_subregion_overlap(get_system_memory(), 0, &s->unmapped,
                                        UNMAPPED_PRIORITY);
}

static void create_ram(RehostingMachineState *s)
{
    QList *regions = config_get_list(s, s->config, "ram", "config");
    const QListEntry *entry;
    int index = 0;

    if (!regions || qlist_empty(regions)) {
        config_fail(s, "ram must list at least one {\"base\", \"size\"}");
    }
    QLIST_FOREACH_ENTRY(regions, entry) {
        QDict *region = qobject_to(QDict, qlist_entry_obj(entry));
        g_autofree char *where = g_strdup_printf("ram[%d]", index);
        g_autofree char *name = g_strdup_printf("rehosting.ram%d", index);
        MemoryRegion *ram = g_new(MemoryRegion, 1);
        uint64_t base, size;

        if (!region) {
            config_fail(s, "%s must be an object", where);
        }
        base = config_get_u64(s, region, "base", where);
        size = config_get_u64(s, region, "size", where);
        if (size == 0) {
            config_fail(s, "%s.size must not be 0", where);
        }
        /* No owner: memory_region_init_ram wants a device, the machine is not one. */
        memory_region_init_ram(ram, NULL, name, size, &error_fatal);
        memory_region_add_subregion(get_system_memory(), base, ram);
        if (index == 0) {
            s->boot.loader_start = base;
            s->boot.ram_size = size;
        }
        index++;
    }
}

static void create_cpus(RehostingMachineState *s, hwaddr periphbase)
{
    MachineState *machine = MACHINE(s);
    const char *model = config_get_str(s, s->config, "cpu", "config");
    g_autofree char *cpu_type = NULL;
    unsigned int n;

    if (!model) {
        config_fail(s, "cpu is missing (e.g. \"cortex-a9\")");
    }
    cpu_type = g_strdup_printf("%s-" TYPE_ARM_CPU, model);
    if (!object_class_dynamic_cast(object_class_by_name(cpu_type),
                                   TYPE_ARM_CPU)) {
        config_fail(s, "cpu \"%s\" is not an ARM CPU model of this QEMU "
                    "(see -cpu help)", model);
    }
    for (n = 0; n < machine->smp.cpus; n++) {
        Object *cpu = object_new(cpu_type);

        /* Boot the kernel in the mode Linux expects from a boot loader. */
        if (object_property_find(cpu, "has_el3")) {
            object_property_set_bool(cpu, "has_el3", false, &error_abort);
        }
        if (object_property_find(cpu, "has_el2")) {
            object_property_set_bool(cpu, "has_el2", false, &error_abort);
        }
        if (object_property_find(cpu, "reset-cbar")) {
            object_property_set_int(cpu, "reset-cbar", periphbase,
                                    &error_abort);
        }
        qdev_realize(DEVICE(cpu), NULL, &error_fatal);
        object_unref(cpu);
    }
}

static void set_props(RehostingMachineState *s, DeviceState *dev,
                      const QDict *props, const char *where)
{
    const QDictEntry *entry;
    Error *err = NULL;

    if (!props) {
        return;
    }
    for (entry = qdict_first(props); entry; entry = qdict_next(props, entry)) {
        if (!object_property_set_qobject(OBJECT(dev), qdict_entry_key(entry),
                                         qdict_entry_value(entry), &err)) {
            config_fail(s, "%s.props.%s: %s", where, qdict_entry_key(entry),
                        error_get_pretty(err));
        }
    }
}

static void map_mmio(RehostingMachineState *s, SysBusDevice *busdev,
                     const QList *mmio, const char *where)
{
    const QListEntry *entry;
    int region = 0;

    if (!mmio) {
        return;
    }
    QLIST_FOREACH_ENTRY(mmio, entry) {
        g_autofree char *what = g_strdup_printf("%s.mmio[%d]", where, region);

        if (!sysbus_has_mmio(busdev, region)) {
            config_fail(s, "%s: the device has only %d MMIO regions", what,
                        region);
        }
        sysbus_mmio_map(busdev, region,
                        config_to_u64(s, qlist_entry_obj(entry), what));
        region++;
    }
}

/* Realize a sysbus device of the given config entry and map its regions. */
static DeviceState *create_sysbus_device(RehostingMachineState *s,
                                         const QDict *desc, const char *where)
{
    const char *type = config_get_str(s, desc, "type", where);
    DeviceState *dev;
    Error *err = NULL;

    if (!type) {
        config_fail(s, "%s.type is missing", where);
    }
    if (!object_class_dynamic_cast(object_class_by_name(type),
                                   TYPE_SYS_BUS_DEVICE)) {
        config_fail(s, "%s.type \"%s\" is not a sysbus device of this QEMU",
                    where, type);
    }
    dev = qdev_new(type);
    if (object_property_find(OBJECT(dev), "num-cpu")) {
        qdev_prop_set_uint32(dev, "num-cpu", MACHINE(s)->smp.cpus);
    }
    if (object_property_find(OBJECT(dev), "chardev")) {
        qdev_prop_set_chr(dev, "chardev", serial_hd(s->next_serial++));
    }
    set_props(s, dev, config_get_dict(s, desc, "props", where), where);
    if (!sysbus_realize_and_unref(SYS_BUS_DEVICE(dev), &err)) {
        config_fail(s, "%s (%s): %s", where, type, error_get_pretty(err));
    }
    map_mmio(s, SYS_BUS_DEVICE(dev), config_get_list(s, desc, "mmio", where),
             where);
    return dev;
}

static void wire_interrupt_controller_to_cpus(RehostingMachineState *s)
{
    SysBusDevice *busdev = SYS_BUS_DEVICE(s->interrupt_controller);
    unsigned int cpus = MACHINE(s)->smp.cpus;
    unsigned int n;

    /* GIC outputs are IRQ, FIQ, VIRQ, VFIQ, each a block of one per CPU. */
    for (n = 0; n < cpus; n++) {
        DeviceState *cpu = DEVICE(qemu_get_cpu(n));

        sysbus_connect_irq(busdev, n, qdev_get_gpio_in(cpu, ARM_CPU_IRQ));
        sysbus_connect_irq(busdev, n + cpus,
                           qdev_get_gpio_in(cpu, ARM_CPU_FIQ));
        sysbus_connect_irq(busdev, n + 2 * cpus,
                           qdev_get_gpio_in(cpu, ARM_CPU_VIRQ));
        sysbus_connect_irq(busdev, n + 3 * cpus,
                           qdev_get_gpio_in(cpu, ARM_CPU_VFIQ));
    }
}

static void wire_device_irqs(RehostingMachineState *s, DeviceState *dev,
                             const QList *irqs, const char *where)
{
    const QListEntry *entry;
    int output = 0;
    uint64_t num_irq;

    if (!irqs) {
        return;
    }
    if (!s->interrupt_controller ||
        !object_property_find(OBJECT(s->interrupt_controller), "num-irq")) {
        config_fail(s, "%s.irqs given but no GIC interrupt_controller "
                    "declared", where);
    }
    /* The GIC's first inputs are its SPIs, in order. */
    num_irq = object_property_get_uint(OBJECT(s->interrupt_controller),
                                       "num-irq", &error_abort);
    QLIST_FOREACH_ENTRY(irqs, entry) {
        g_autofree char *what = g_strdup_printf("%s.irqs[%d]", where, output);
        QObject *value = qlist_entry_obj(entry);
        uint64_t irq;

        if (qobject_type(value) != QTYPE_QNULL) {
            irq = config_to_u64(s, value, what);
            if (irq < GIC_FIRST_SPI || irq >= num_irq) {
                config_fail(s, "%s = %" PRIu64 " is not a GIC SPI of this "
                            "controller (%d..%" PRIu64 ")", what, irq,
                            GIC_FIRST_SPI, num_irq - 1);
            }
            sysbus_connect_irq(SYS_BUS_DEVICE(dev), output,
                               qdev_get_gpio_in(s->interrupt_controller,
                                                irq - GIC_FIRST_SPI));
        }
        output++;
    }
}

static void create_devices(RehostingMachineState *s)
{
    QList *devices = config_get_list(s, s->config, "devices", "config");
    const QListEntry *entry;
    int index = 0;

    if (!devices) {
        return;
    }
    QLIST_FOREACH_ENTRY(devices, entry) {
        QDict *desc = qobject_to(QDict, qlist_entry_obj(entry));
        g_autofree char *where = g_strdup_printf("devices[%d]", index);
        DeviceState *dev;

        if (!desc) {
            config_fail(s, "%s must be an object", where);
        }
        dev = create_sysbus_device(s, desc, where);
        wire_device_irqs(s, dev, config_get_list(s, desc, "irqs", where),
                         where);
        index++;
    }
}

static void configure_boot(RehostingMachineState *s)
{
    MachineState *machine = MACHINE(s);
    QDict *boot = config_get_dict(s, s->config, "boot", "config");
    const char *value;

    s->boot.board_id = -1;
    if (!boot) {
        return;
    }
    /* arm_load_kernel() takes these from the MachineState. */
    if ((value = config_get_str(s, boot, "kernel", "boot"))) {
        g_free(machine->kernel_filename);
        machine->kernel_filename = g_strdup(value);
    }
    if ((value = config_get_str(s, boot, "initrd", "boot"))) {
        g_free(machine->initrd_filename);
        machine->initrd_filename = g_strdup(value);
    }
    if ((value = config_get_str(s, boot, "dtb", "boot"))) {
        g_free(machine->dtb);
        machine->dtb = g_strdup(value);
    }
    if ((value = config_get_str(s, boot, "cmdline", "boot"))) {
        g_free(machine->kernel_cmdline);
        machine->kernel_cmdline = g_strdup(value);
    }
    if (qdict_haskey(boot, "board_id")) {
        s->boot.board_id = config_get_u64(s, boot, "board_id", "boot");
    }
    if (qdict_haskey(boot, "loader_start")) {
        s->boot.loader_start = config_get_u64(s, boot, "loader_start", "boot");
    }
}

static void check_boot_files_exist(RehostingMachineState *s)
{
    MachineState *machine = MACHINE(s);
    const char *files[] = {
        machine->kernel_filename, machine->initrd_filename, machine->dtb,
    };
    size_t i;

    if (!machine->kernel_filename) {
        config_fail(s, "no kernel: set boot.kernel (or pass -kernel)");
    }
    for (i = 0; i < ARRAY_SIZE(files); i++) {
        if (files[i] && !g_file_test(files[i], G_FILE_TEST_IS_REGULAR)) {
            config_fail(s, "boot file %s does not exist", files[i]);
        }
    }
}

static void rehosting_init(MachineState *machine)
{
    RehostingMachineState *s = REHOSTING_MACHINE(machine);
    QDict *controller;
    QList *controller_mmio;
    hwaddr periphbase = 0;

    load_config(s);
    map_unmapped_catch_all(s);
    create_ram(s);

    controller = config_get_dict(s, s->config, "interrupt_controller",
                                 "config");
    controller_mmio = controller ?
        config_get_list(s, controller, "mmio", "interrupt_controller") : NULL;
    if (controller_mmio && !qlist_empty(controller_mmio)) {
        /* MPCore CPUs read their private peripheral base from CBAR. */
        periphbase = config_to_u64(s, qlist_peek(controller_mmio),
                                   "interrupt_controller.mmio[0]");
    }
    /* CPUs first: a15mpcore_priv wires itself to their generic timers. */
    create_cpus(s, periphbase);
    if (controller) {
        s->interrupt_controller = create_sysbus_device(s, controller,
                                                       "interrupt_controller");
        wire_interrupt_controller_to_cpus(s);
    }
    create_devices(s);

    configure_boot(s);
    check_boot_files_exist(s);
    arm_load_kernel(ARM_CPU(first_cpu), machine, &s->boot);
}

static char *rehosting_get_config(Object *obj, Error **errp)
{
    return g_strdup(REHOSTING_MACHINE(obj)->config_path);
}

static void rehosting_set_config(Object *obj, const char *value, Error **errp)
{
    RehostingMachineState *s = REHOSTING_MACHINE(obj);

    g_free(s->config_path);
    s->config_path = g_strdup(value);
}

static void rehosting_finalize(Object *obj)
{
    RehostingMachineState *s = REHOSTING_MACHINE(obj);

    g_free(s->config_path);
    qobject_unref(s->config);
}

static void rehosting_class_init(ObjectClass *oc, const void *data)
{
    MachineClass *mc = MACHINE_CLASS(oc);

    mc->desc = "Board built from a JSON config (explorer rehosting)";
    mc->init = rehosting_init;
    /* Secondary CPUs need a boot protocol we do not model yet. */
    mc->max_cpus = 1;
    object_class_property_add_str(oc, "config", rehosting_get_config,
                                  rehosting_set_config);
    object_class_property_set_description(oc, "config",
        "JSON file describing CPU, RAM, devices and boot parameters");
}

static const TypeInfo rehosting_machine_info = {
    .name = TYPE_REHOSTING_MACHINE,
    .parent = TYPE_MACHINE,
    .instance_size = sizeof(RehostingMachineState),
    .instance_finalize = rehosting_finalize,
    .class_init = rehosting_class_init,
    .interfaces = arm_machine_interfaces,
};

static void rehosting_machine_register(void)
{
    type_register_static(&rehosting_machine_info);
}

type_init(rehosting_machine_register);
