/*
 * The part of the `rehosting` machines that does not depend on the CPU architecture: the
 * JSON config (reading, typed getters, one-line errors), RAM regions, the catch-all MMIO
 * region and sysbus devices by type. It must never guess: anything missing or malformed in
 * the config stops QEMU with one line naming the file and the field.
 *
 * Config keys handled here (integers may be JSON numbers or strings such as "0x60000000"):
 *   "ram": [ {"base": A, "size": N} ]       at least one region
 *   "devices": [ {"type": T, "mmio": [A...], "props": {...}} ]   (irqs: per machine)
 *   "pinned_reads": [ {"address": A, "value": V} ]   what the catch-all answers at A
 *                                           (any access size; other addresses read 0)
 *   "unmapped_log_limit": 16                catch-all accesses logged with -d unimp
 *   "boot": {"kernel", "initrd", "dtb", "cmdline"}   paths and the command line
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/cutils.h"
#include "qemu/error-report.h"
#include "qemu/log.h"
#include "qobject/qjson.h"
#include "qobject/qnum.h"
#include "qobject/qstring.h"
#include "qom/object.h"
#include "qom/qom-qobject.h"
#include "hw/sysbus.h"
#include "hw/qdev-properties-system.h"
#include "system/address-spaces.h"
#include "system/system.h"
#include "hw/misc/rehosting.h"

/* Lowest priority: anything the config maps wins over the catch-all. */
#define UNMAPPED_PRIORITY -1000
#define DEFAULT_UNMAPPED_LOG_LIMIT 16

void rehosting_config_fail(const RehostingConfig *config, const char *fmt, ...)
{
    va_list ap;
    g_autofree char *message = NULL;

    va_start(ap, fmt);
    message = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    error_report("rehosting: config %s: %s", config->path, message);
    exit(1);
}

void rehosting_config_load(RehostingConfig *config)
{
    g_autofree char *text = NULL;
    g_autoptr(GError) gerror = NULL;
    Error *err = NULL;
    QObject *parsed;

    if (!config->path) {
        error_report("rehosting: no config given: "
                     "use -M rehosting,config=FILE");
        exit(1);
    }
    if (!g_file_get_contents(config->path, &text, NULL, &gerror)) {
        rehosting_config_fail(config, "cannot read it: %s", gerror->message);
    }
    parsed = qobject_from_json(text, &err);
    if (!parsed) {
        rehosting_config_fail(config, "not valid JSON: %s",
                              error_get_pretty(err));
    }
    config->root = qobject_to(QDict, parsed);
    if (!config->root) {
        rehosting_config_fail(config, "the top level must be a JSON object");
    }
}

uint64_t rehosting_config_to_u64(const RehostingConfig *config, QObject *value,
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
    rehosting_config_fail(config, "%s must be an unsigned integer "
                          "(number or \"0x...\")", what);
}

uint64_t rehosting_config_get_u64(const RehostingConfig *config,
                                  const QDict *dict, const char *key,
                                  const char *where)
{
    QObject *value = qdict_get(dict, key);
    g_autofree char *what = g_strdup_printf("%s.%s", where, key);

    if (!value) {
        rehosting_config_fail(config, "%s is missing", what);
    }
    return rehosting_config_to_u64(config, value, what);
}

const char *rehosting_config_get_str(const RehostingConfig *config,
                                     const QDict *dict, const char *key,
                                     const char *where)
{
    QObject *value = qdict_get(dict, key);

    if (!value) {
        return NULL;
    }
    if (!qobject_to(QString, value)) {
        rehosting_config_fail(config, "%s.%s must be a string", where, key);
    }
    return qstring_get_str(qobject_to(QString, value));
}

QList *rehosting_config_get_list(const RehostingConfig *config,
                                 const QDict *dict, const char *key,
                                 const char *where)
{
    QObject *value = qdict_get(dict, key);

    if (!value) {
        return NULL;
    }
    if (!qobject_to(QList, value)) {
        rehosting_config_fail(config, "%s.%s must be a list", where, key);
    }
    return qobject_to(QList, value);
}

QDict *rehosting_config_get_dict(const RehostingConfig *config,
                                 const QDict *dict, const char *key,
                                 const char *where)
{
    QObject *value = qdict_get(dict, key);

    if (!value) {
        return NULL;
    }
    if (!qobject_to(QDict, value)) {
        rehosting_config_fail(config, "%s.%s must be an object", where, key);
    }
    return qobject_to(QDict, value);
}

static uint64_t unmapped_read(void *opaque, hwaddr addr, unsigned size)
{
    RehostingConfig *config = opaque;
    gpointer pinned = NULL;
    uint64_t value = 0;

    if (g_hash_table_lookup_extended(config->pinned_reads, &addr, NULL,
                                     &pinned)) {
        value = *(uint64_t *)pinned;
    }
    if (config->unmapped_accesses++ < config->unmapped_log_limit) {
        qemu_log_mask(LOG_UNIMP, "rehosting: unmapped read  0x%" HWADDR_PRIx
                      " size %u -> 0x%" PRIx64 "\n", addr, size, value);
    }
    return value;
}

static void unmapped_write(void *opaque, hwaddr addr, uint64_t value,
                           unsigned size)
{
    RehostingConfig *config = opaque;

    if (config->unmapped_accesses++ < config->unmapped_log_limit) {
        qemu_log_mask(LOG_UNIMP, "rehosting: unmapped write 0x%" HWADDR_PRIx
                      " size %u <- 0x%" PRIx64 "\n", addr, size, value);
    }
}

static const MemoryRegionOps unmapped_ops = {
    .read = unmapped_read,
    .write = unmapped_write,
    /* Guest-endian: a pinned 32-bit value reads back as that number. */
    .endianness = DEVICE_NATIVE_ENDIAN,
    .valid = { .min_access_size = 1, .max_access_size = 8 },
};

static void load_pinned_reads(RehostingConfig *config)
{
    QList *pins = rehosting_config_get_list(config, config->root,
                                            "pinned_reads", "config");
    const QListEntry *entry;
    int index = 0;

    config->pinned_reads = g_hash_table_new_full(g_int64_hash, g_int64_equal,
                                                 g_free, g_free);
    if (!pins) {
        return;
    }
    QLIST_FOREACH_ENTRY(pins, entry) {
        QDict *pin = qobject_to(QDict, qlist_entry_obj(entry));
        g_autofree char *where = g_strdup_printf("pinned_reads[%d]", index++);
        uint64_t *address = g_new(uint64_t, 1);
        uint64_t *value = g_new(uint64_t, 1);

        if (!pin) {
            rehosting_config_fail(config, "%s must be an object", where);
        }
        *address = rehosting_config_get_u64(config, pin, "address", where);
        *value = rehosting_config_get_u64(config, pin, "value", where);
        g_hash_table_insert(config->pinned_reads, address, value);
    }
}

void rehosting_map_catch_all(RehostingConfig *config, Object *owner)
{
    QObject *limit = qdict_get(config->root, "unmapped_log_limit");

    config->unmapped_log_limit = limit ?
        rehosting_config_to_u64(config, limit, "unmapped_log_limit") :
        DEFAULT_UNMAPPED_LOG_LIMIT;
    load_pinned_reads(config);
    memory_region_init_io(&config->unmapped, owner, &unmapped_ops, config,
                          "rehosting.unmapped", UINT64_MAX);
    memory_region_add_subregion_overlap(get_system_memory(), 0,
                                        &config->unmapped, UNMAPPED_PRIORITY);
}

void rehosting_create_ram(RehostingConfig *config)
{
    QList *regions = rehosting_config_get_list(config, config->root, "ram",
                                               "config");
    const QListEntry *entry;
    int index = 0;

    if (!regions || qlist_empty(regions)) {
        rehosting_config_fail(config, "ram must list at least one "
                              "{\"base\", \"size\"}");
    }
    QLIST_FOREACH_ENTRY(regions, entry) {
        QDict *region = qobject_to(QDict, qlist_entry_obj(entry));
        g_autofree char *where = g_strdup_printf("ram[%d]", index);
        g_autofree char *name = g_strdup_printf("rehosting.ram%d", index);
        MemoryRegion *ram = g_new(MemoryRegion, 1);
        uint64_t base, size;

        if (!region) {
            rehosting_config_fail(config, "%s must be an object", where);
        }
        base = rehosting_config_get_u64(config, region, "base", where);
        size = rehosting_config_get_u64(config, region, "size", where);
        if (size == 0) {
            rehosting_config_fail(config, "%s.size must not be 0", where);
        }
        /* No owner: memory_region_init_ram wants a device, not a machine. */
        memory_region_init_ram(ram, NULL, name, size, &error_fatal);
        memory_region_add_subregion(get_system_memory(), base, ram);
        if (index == 0) {
            config->first_ram_base = base;
            config->first_ram_size = size;
        }
        index++;
    }
}

void rehosting_set_props(RehostingConfig *config, DeviceState *dev,
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
            rehosting_config_fail(config, "%s.props.%s: %s", where,
                                  qdict_entry_key(entry),
                                  error_get_pretty(err));
        }
    }
}

static void map_mmio(RehostingConfig *config, SysBusDevice *busdev,
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
            rehosting_config_fail(config, "%s: the device has only %d MMIO "
                                  "regions", what, region);
        }
        sysbus_mmio_map(busdev, region,
                        rehosting_config_to_u64(config, qlist_entry_obj(entry),
                                                what));
        region++;
    }
}

DeviceState *rehosting_create_sysbus_device(RehostingConfig *config,
                                            const QDict *desc,
                                            const char *where)
{
    const char *type = rehosting_config_get_str(config, desc, "type", where);
    DeviceState *dev;
    Error *err = NULL;

    if (!type) {
        rehosting_config_fail(config, "%s.type is missing", where);
    }
    if (!object_class_dynamic_cast(object_class_by_name(type),
                                   TYPE_SYS_BUS_DEVICE)) {
        rehosting_config_fail(config, "%s.type \"%s\" is not a sysbus device "
                              "of this QEMU", where, type);
    }
    dev = qdev_new(type);
    if (object_property_find(OBJECT(dev), "num-cpu")) {
        qdev_prop_set_uint32(dev, "num-cpu",
                             MACHINE(qdev_get_machine())->smp.cpus);
    }
    if (object_property_find(OBJECT(dev), "chardev")) {
        qdev_prop_set_chr(dev, "chardev", serial_hd(config->next_serial++));
    }
    rehosting_set_props(config, dev,
                        rehosting_config_get_dict(config, desc, "props", where),
                        where);
    if (!sysbus_realize_and_unref(SYS_BUS_DEVICE(dev), &err)) {
        rehosting_config_fail(config, "%s (%s): %s", where, type,
                              error_get_pretty(err));
    }
    map_mmio(config, SYS_BUS_DEVICE(dev),
             rehosting_config_get_list(config, desc, "mmio", where), where);
    return dev;
}

QDict *rehosting_configure_boot_files(RehostingConfig *config,
                                      MachineState *machine)
{
    QDict *boot = rehosting_config_get_dict(config, config->root, "boot",
                                            "config");
    const char *value;
    const char *files[3];
    size_t i;

    if (boot && (value = rehosting_config_get_str(config, boot, "kernel",
                                                  "boot"))) {
        g_free(machine->kernel_filename);
        machine->kernel_filename = g_strdup(value);
    }
    if (boot && (value = rehosting_config_get_str(config, boot, "initrd",
                                                  "boot"))) {
        g_free(machine->initrd_filename);
        machine->initrd_filename = g_strdup(value);
    }
    if (boot && (value = rehosting_config_get_str(config, boot, "dtb",
                                                  "boot"))) {
        g_free(machine->dtb);
        machine->dtb = g_strdup(value);
    }
    if (boot && (value = rehosting_config_get_str(config, boot, "cmdline",
                                                  "boot"))) {
        g_free(machine->kernel_cmdline);
        machine->kernel_cmdline = g_strdup(value);
    }
    if (!machine->kernel_filename) {
        rehosting_config_fail(config, "no kernel: set boot.kernel "
                              "(or pass -kernel)");
    }
    files[0] = machine->kernel_filename;
    files[1] = machine->initrd_filename;
    files[2] = machine->dtb;
    for (i = 0; i < ARRAY_SIZE(files); i++) {
        if (files[i] && !g_file_test(files[i], G_FILE_TEST_IS_REGULAR)) {
            rehosting_config_fail(config, "boot file %s does not exist",
                                  files[i]);
        }
    }
    return boot;
}
