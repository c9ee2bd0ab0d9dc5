/*
 * Where the config puts things: RAM regions ("ram"), sysbus devices by QOM type with their
 * properties and MMIO addresses ("devices"), and the boot files ("boot"). Wiring a device's
 * interrupts and loading the kernel are per architecture (rehosting_arm.c, rehosting_mips.c),
 * never here.
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qom/object.h"
#include "qom/qom-qobject.h"
#include "hw/sysbus.h"
#include "hw/qdev-properties-system.h"
#include "net/net.h"
#include "system/address-spaces.h"
#include "system/system.h"
#include "hw/misc/rehosting.h"

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
    if (object_property_find(OBJECT(dev), "netdev")) {
        /*
         * A NIC takes the next -nic of the command line (as the stock boards' NICs do); with
         * none it has no network behind it, and what the guest sends is dropped.
         */
        qemu_configure_nic_device(dev, true, NULL);
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
