/*
 * The `rehosting` machine for 32-bit ARM and AArch64: a board assembled at
 * start-up from one JSON file that the explorer master writes
 * (-M rehosting,config=FILE). The same file builds into qemu-system-arm and
 * qemu-system-aarch64; with an AArch64 CPU model the kernel is entered at EL1
 * by QEMU's arm64 boot protocol (hw/arm/boot.c: x0 = the DTB's address).
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
 *   "cpu": "cortex-a9",                 QEMU ARM or AArch64 CPU model name
 *   "ram": [ {"base": A, "size": N} ],  at least one region
 *   "interrupt_controller": {           optional
 *     "type": "a9mpcore_priv",          or a15mpcore_priv, arm_gic, arm-gicv3
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
 *   "tick": {"period_ns": P,            optional: raises the CPU's IRQ line every P ns
 *            "ack_base": A,             (see rehosting_clock.c), never with an
 *            "ack_size": N,             interrupt_controller; the kernel's own handler reads
 *            "irq": I}                  the unmodelled controller's registers. With "irq"
 *                                       (a GIC interrupt ID, PPI or SPI), that input of the
 *                                       declared GIC instead: a timer without a model
 *   "timer_irqs": [29, 30, 27, 26],     optional: the GIC interrupt IDs of the
 *                                       generic timers (secure, non-secure
 *                                       physical, virtual, hyp: the
 *                                       arm,armv8-timer binding's order), wired
 *                                       for a plain arm_gic or arm-gicv3
 *   "psci_conduit": "smc",              optional ("smc" or "hvc"): QEMU answers
 *                                       the kernel's PSCI calls
 *   "secure_entry": true,               optional: CPUs with EL3 (and EL2),
 *                                       the kernel entered in Secure SVC
 *   "mmio_rules": [ {"address": A, "constant": V} ]  catch-all answers
 *                                       (all rule kinds: rehosting.c)
 *   "console_sink": A                   the low byte of each write there is a console byte
 *                                       (a UART without a model: rehosting_devices.c)
 *   "unmapped_log_limit": 16            accesses to the catch-all region
 *                                       logged with -d unimp, then silence
 * }
 * Config reading, RAM, the catch-all and sysbus devices are shared with the
 * MIPS machine (hw/misc/rehosting*.c); this file adds the CPU, GIC or tick wiring and
 * boot.
 *
 * One change to the CPU, invisible to the guest: a DACR write that keeps the
 * register's value flushes nothing (see dacr_write_flushing_on_change).
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qobject/qbool.h"
#include "qom/object.h"
#include "hw/boards.h"
#include "hw/sysbus.h"
#include "hw/arm/boot.h"
#include "hw/arm/machines-qom.h"
#include "hw/misc/rehosting.h"
#include "target/arm/cpu-qom.h"
#include "cpu.h"
#include "target/arm/cpregs.h"
#include "target/arm/gtimer.h"
#include "exec/cputlb.h"

#define TYPE_REHOSTING_MACHINE MACHINE_TYPE_NAME("rehosting")
OBJECT_DECLARE_SIMPLE_TYPE(RehostingMachineState, REHOSTING_MACHINE)

/* GIC interrupt IDs below this are per-CPU (SGI, PPI); devices use SPIs. */
#define GIC_FIRST_SPI 32
/* The first GIC interrupt ID a device can raise (below: software-generated). */
#define GIC_FIRST_PPI 16

struct RehostingMachineState {
    MachineState parent_obj;

    RehostingConfig config;
    DeviceState *interrupt_controller;
    struct arm_boot_info boot;
};

/*
 * QEMU's TLB does not record MMU domains, so its DACR write flushes the whole
 * TLB and jump cache. Linux with CONFIG_CPU_SW_DOMAIN_PAN (Debian's armmp)
 * writes DACR on every exception entry and exit, nearly always with the value
 * it already holds: a full flush per interrupt, refilled by page walks and
 * block lookups, a cost that grows with guest time (the icount shift). A write
 * of the value the register holds changes no permission, so no cached entry
 * can be stale: only a change flushes.
 */
static void dacr_write_flushing_on_change(CPUARMState *env,
                                          const ARMCPRegInfo *ri,
                                          uint64_t value)
{
    if (raw_read(env, ri) == value) {
        return;
    }
    raw_write(env, ri, value);
    tlb_flush(env_cpu(env));
}

/*
 * Every register entry of DACR (each bank, each CP_ANY copy, AArch64's view
 * DACR32_EL2) has QEMU's dacr_write as its write function, and no other
 * register has: replace it
 * wherever it is, right after the CPU is realized, before the guest runs.
 */
static void skip_unchanged_dacr_flushes(ARMCPU *cpu)
{
    const ARMCPRegInfo *dacr = get_arm_cp_reginfo(
        cpu->cp_regs, ENCODE_CP_REG(15, 0, 1, 3, 0, 0, 0));
    CPWriteFn *flushing_write;
    GHashTableIter iter;
    gpointer value;

    if (!dacr) {
        dacr = get_arm_cp_reginfo(cpu->cp_regs,
                                  ENCODE_CP_REG(15, 0, 0, 3, 0, 0, 0));
    }
    if (!dacr || !dacr->writefn) {
        return; /* an MPU core: no DACR */
    }
    flushing_write = dacr->writefn;
    g_hash_table_iter_init(&iter, cpu->cp_regs);
    while (g_hash_table_iter_next(&iter, NULL, &value)) {
        ARMCPRegInfo *ri = value;

        if (ri->writefn == flushing_write) {
            ri->writefn = dacr_write_flushing_on_change;
        }
    }
}

/*
 * "secure_entry": true enters the kernel in Secure SVC on CPUs with EL3 (and
 * EL2 where the model has it), as
 * the boot loader of a board whose kernel programs secure-only registers
 * itself leaves it (absent or false: Non-secure SVC without EL3 or EL2).
 */
static bool secure_entry(RehostingConfig *config)
{
    QObject *value = qdict_get(config->root, "secure_entry");

    if (!value) {
        return false;
    }
    if (!qobject_to(QBool, value)) {
        rehosting_config_fail(config, "secure_entry must be true or false");
    }
    return qbool_get_bool(qobject_to(QBool, value));
}

static void create_cpus(RehostingMachineState *s, hwaddr periphbase)
{
    RehostingConfig *config = &s->config;
    MachineState *machine = MACHINE(s);
    const char *model = rehosting_config_get_str(config, config->root, "cpu",
                                                 "config");
    g_autofree char *cpu_type = NULL;
    unsigned int n;

    if (!model) {
        rehosting_config_fail(config, "cpu is missing (e.g. \"cortex-a9\")");
    }
    cpu_type = g_strdup_printf("%s-" TYPE_ARM_CPU, model);
    if (!object_class_dynamic_cast(object_class_by_name(cpu_type),
                                   TYPE_ARM_CPU)) {
        rehosting_config_fail(config, "cpu \"%s\" is not an ARM CPU model of "
                              "this QEMU (see -cpu help)", model);
    }
    for (n = 0; n < machine->smp.cpus; n++) {
        Object *cpu = object_new(cpu_type);

        /* Boot the kernel in the mode Linux expects from a boot loader. */
        if (object_property_find(cpu, "has_el3")) {
            object_property_set_bool(cpu, "has_el3", s->boot.secure_boot,
                                     &error_abort);
        } else if (s->boot.secure_boot) {
            rehosting_config_fail(config, "secure_entry: cpu \"%s\" has no "
                                  "EL3 (the Security Extensions)", model);
        }
        /* In the secure world the CPU is whole, as on the board: Monitor
         * mode code may program the Hyp registers (CNTVOFF). */
        if (object_property_find(cpu, "has_el2")) {
            object_property_set_bool(cpu, "has_el2", s->boot.secure_boot,
                                     &error_abort);
        }
        if (object_property_find(cpu, "reset-cbar")) {
            object_property_set_int(cpu, "reset-cbar", periphbase,
                                    &error_abort);
        }
        qdev_realize(DEVICE(cpu), NULL, &error_fatal);
        skip_unchanged_dacr_flushes(ARM_CPU(cpu));
        object_unref(cpu);
    }
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
    RehostingConfig *config = &s->config;
    const QListEntry *entry;
    int output = 0;
    uint64_t num_irq;

    if (!irqs) {
        return;
    }
    if (!s->interrupt_controller ||
        !object_property_find(OBJECT(s->interrupt_controller), "num-irq")) {
        rehosting_config_fail(config, "%s.irqs given but no GIC "
                              "interrupt_controller declared", where);
    }
    /* The GIC's first inputs are its SPIs, in order. */
    num_irq = object_property_get_uint(OBJECT(s->interrupt_controller),
                                       "num-irq", &error_abort);
    QLIST_FOREACH_ENTRY(irqs, entry) {
        g_autofree char *what = g_strdup_printf("%s.irqs[%d]", where, output);
        QObject *value = qlist_entry_obj(entry);
        uint64_t irq;

        if (qobject_type(value) != QTYPE_QNULL) {
            irq = rehosting_config_to_u64(config, value, what);
            if (irq < GIC_FIRST_SPI || irq >= num_irq) {
                rehosting_config_fail(config, "%s = %" PRIu64 " is not a GIC "
                                      "SPI of this controller (%d..%" PRIu64
                                      ")", what, irq, GIC_FIRST_SPI,
                                      num_irq - 1);
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
    RehostingConfig *config = &s->config;
    QList *devices = rehosting_config_get_list(config, config->root, "devices",
                                               "config");
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
            rehosting_config_fail(config, "%s must be an object", where);
        }
        dev = rehosting_create_sysbus_device(config, desc, where);
        wire_device_irqs(s, dev,
                         rehosting_config_get_list(config, desc, "irqs", where),
                         where);
        index++;
    }
}

/*
 * The input of the declared GIC that raises interrupt ID `irq` (a PPI of the first CPU, or an
 * SPI); `what` names the config field. QEMU's GICs (arm_gic_common.c, arm_gicv3_common.c) have
 * num-irq - 32 SPI inputs, then 32 per CPU for its private interrupts; the MPCore blocks hold
 * theirs as a "gic" child and pass on only the SPIs, so the line is taken from the GIC itself.
 */
static qemu_irq gic_input(RehostingMachineState *s, uint64_t irq,
                          const char *what)
{
    RehostingConfig *config = &s->config;
    Object *gic;
    uint64_t num_irq;

    gic = s->interrupt_controller ?
        object_resolve_path_component(OBJECT(s->interrupt_controller), "gic") :
        NULL;
    if (s->interrupt_controller && !gic) {
        gic = OBJECT(s->interrupt_controller);
    }
    if (!gic || !object_property_find(gic, "num-irq")) {
        rehosting_config_fail(config, "%s given but no GIC "
                              "interrupt_controller declared", what);
    }
    num_irq = object_property_get_uint(gic, "num-irq", &error_abort);
    if (irq < GIC_FIRST_PPI || irq >= num_irq) {
        rehosting_config_fail(config, "%s = %" PRIu64 " is not a GIC "
                              "PPI or SPI of this controller (%d..%" PRIu64 ")",
                              what, irq, GIC_FIRST_PPI, num_irq - 1);
    }
    /* The first CPU's private inputs: the machine has one CPU. */
    return qdev_get_gpio_in(DEVICE(gic), irq >= GIC_FIRST_SPI ?
                            irq - GIC_FIRST_SPI :
                            num_irq - GIC_FIRST_SPI + irq);
}

/*
 * The line the tick raises. Without "irq": the CPU's IRQ input, standing in for an interrupt
 * controller that has no model (never beside one: two drivers of one level fight). With
 * "irq", a GIC interrupt ID: that input of the declared GIC, standing in for a timer that has
 * no model behind a controller that has one.
 */
static qemu_irq tick_line(RehostingMachineState *s)
{
    RehostingConfig *config = &s->config;
    QDict *desc = rehosting_config_get_dict(config, config->root, "tick",
                                            "config");

    /* proto3 JSON leaves out a field that is 0, and 0 is an SGI: no GIC input. */
    if (!qdict_haskey(desc, "irq")) {
        if (s->interrupt_controller) {
            rehosting_config_fail(config, "tick and interrupt_controller "
                                  "both drive the CPU's IRQ line: give one "
                                  "(or tick.irq, a GIC input)");
        }
        return qdev_get_gpio_in(DEVICE(first_cpu), ARM_CPU_IRQ);
    }
    return gic_input(s, rehosting_config_get_u64(config, desc, "irq", "tick"),
                     "tick.irq");
}

/*
 * "timer_irqs": the generic timers' outputs of the first CPU to the declared GIC, in the
 * arm,armv8-timer binding's order (as virt.c wires them). Only for a plain GIC: an MPCore
 * block (a15mpcore_priv, its "gic" child) wires its CPUs' timers itself.
 */
static void wire_generic_timers(RehostingMachineState *s)
{
    static const int binding_order[] = {
        GTIMER_SEC, GTIMER_PHYS, GTIMER_VIRT, GTIMER_HYP, GTIMER_HYPVIRT,
    };
    RehostingConfig *config = &s->config;
    QList *irqs = rehosting_config_get_list(config, config->root, "timer_irqs",
                                            "config");
    const QListEntry *entry;
    int index = 0;

    if (!irqs || qlist_empty(irqs)) {
        return;
    }
    if (!arm_feature(&ARM_CPU(first_cpu)->env, ARM_FEATURE_GENERIC_TIMER)) {
        rehosting_config_fail(config, "timer_irqs given but the cpu has no "
                              "generic timer");
    }
    if (s->interrupt_controller &&
        object_resolve_path_component(OBJECT(s->interrupt_controller), "gic")) {
        rehosting_config_fail(config, "timer_irqs given but the "
                              "interrupt_controller wires the generic timers "
                              "itself");
    }
    if (qlist_size(irqs) > ARRAY_SIZE(binding_order)) {
        rehosting_config_fail(config, "timer_irqs has %zu entries, the "
                              "generic timers %zu", qlist_size(irqs),
                              ARRAY_SIZE(binding_order));
    }
    QLIST_FOREACH_ENTRY(irqs, entry) {
        g_autofree char *what = g_strdup_printf("timer_irqs[%d]", index);
        uint64_t irq = rehosting_config_to_u64(config, qlist_entry_obj(entry),
                                               what);

        qdev_connect_gpio_out(DEVICE(first_cpu), binding_order[index],
                              gic_input(s, irq, what));
        index++;
    }
}

/*
 * "psci_conduit": "smc" or "hvc" (absent or "": none). QEMU then answers the
 * kernel's PSCI calls itself (target/arm/psci.c: version, CPU_ON/OFF, system
 * off and reset) instead of the SMC or HVC being undefined on a CPU without
 * EL3 or EL2, and hw/arm/boot.c replaces the DTB's /psci node by one naming
 * its own function IDs.
 */
static int psci_conduit(RehostingConfig *config)
{
    const char *conduit = rehosting_config_get_str(config, config->root,
                                                   "psci_conduit", "config");

    if (!conduit || !*conduit) {
        return QEMU_PSCI_CONDUIT_DISABLED;
    }
    if (g_str_equal(conduit, "smc")) {
        return QEMU_PSCI_CONDUIT_SMC;
    }
    if (g_str_equal(conduit, "hvc")) {
        return QEMU_PSCI_CONDUIT_HVC;
    }
    rehosting_config_fail(config, "psci_conduit \"%s\" is not \"smc\" or "
                          "\"hvc\"", conduit);
}

static void configure_boot(RehostingMachineState *s)
{
    RehostingConfig *config = &s->config;
    QDict *boot = rehosting_configure_boot_files(config, MACHINE(s));

    s->boot.loader_start = s->config.first_ram_base;
    s->boot.ram_size = s->config.first_ram_size;
    s->boot.board_id = -1;
    if (boot && qdict_haskey(boot, "board_id")) {
        s->boot.board_id = rehosting_config_get_u64(config, boot,
                                                    "board_id", "boot");
    }
    if (boot && qdict_haskey(boot, "loader_start")) {
        s->boot.loader_start = rehosting_config_get_u64(config, boot,
                                                        "loader_start", "boot");
    }
    s->boot.psci_conduit = psci_conduit(config);
}

static void rehosting_init(MachineState *machine)
{
    RehostingMachineState *s = REHOSTING_MACHINE(machine);
    RehostingConfig *config = &s->config;
    QDict *controller;
    QList *controller_mmio;
    hwaddr periphbase = 0;

    rehosting_config_load(config);
    rehosting_map_catch_all(config, OBJECT(s));
    rehosting_create_ram(config);
    rehosting_create_console_sink(config, OBJECT(s));

    controller = rehosting_config_get_dict(config, config->root,
                                           "interrupt_controller", "config");
    controller_mmio = controller ?
        rehosting_config_get_list(config, controller, "mmio",
                                  "interrupt_controller") : NULL;
    if (controller_mmio && !qlist_empty(controller_mmio)) {
        /* MPCore CPUs read their private peripheral base from CBAR. */
        periphbase = rehosting_config_to_u64(config,
                                             qlist_peek(controller_mmio),
                                             "interrupt_controller.mmio[0]");
    }
    /* CPUs first: a15mpcore_priv wires itself to their generic timers. */
    s->boot.secure_boot = secure_entry(config);
    create_cpus(s, periphbase);
    if (controller) {
        s->interrupt_controller = rehosting_create_sysbus_device(
            config, controller, "interrupt_controller");
        wire_interrupt_controller_to_cpus(s);
    }
    wire_generic_timers(s);
    if (rehosting_config_has_tick(config)) {
        rehosting_start_tick(config, tick_line(s));
    }
    create_devices(s);

    configure_boot(s);
    arm_load_kernel(ARM_CPU(first_cpu), machine, &s->boot);
}

static char *rehosting_get_config(Object *obj, Error **errp)
{
    return g_strdup(REHOSTING_MACHINE(obj)->config.path);
}

static void rehosting_set_config(Object *obj, const char *value, Error **errp)
{
    RehostingMachineState *s = REHOSTING_MACHINE(obj);

    g_free(s->config.path);
    s->config.path = g_strdup(value);
}

static void rehosting_finalize(Object *obj)
{
    RehostingMachineState *s = REHOSTING_MACHINE(obj);

    g_free(s->config.path);
    qobject_unref(s->config.root);
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
