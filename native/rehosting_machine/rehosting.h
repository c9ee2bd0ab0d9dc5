/*
 * What every `rehosting` machine (ARM, MIPS) shares: reading the JSON config the explorer
 * master writes, RAM regions, the catch-all MMIO region under the whole address space, and
 * sysbus devices declared by type (hw/misc/rehosting*.c; rehosting.c lists the units). Wiring
 * interrupts and loading a kernel are per architecture and live in the machines, never here.
 */

#ifndef HW_MISC_REHOSTING_H
#define HW_MISC_REHOSTING_H

#include "exec/hwaddr.h"
#include "hw/boards.h"
#include "hw/irq.h"
#include "qemu/timer.h"
#include "qobject/qdict.h"
#include "qobject/qlist.h"
#include "system/memory.h"

/*
 * A periodic interrupt for boards whose interrupt controller has no model (rehosting_clock.c): it
 * raises `irq` every period_ns of virtual time and lowers it when the guest acknowledges.
 */
typedef struct RehostingTick {
    QEMUTimer *timer;     /* NULL: no tick */
    qemu_irq irq;
    uint64_t period_ns;
    int64_t deadline;     /* QEMU_CLOCK_VIRTUAL time of the next raise */
    /* The deadline before any raise: set at machine start, so a restored machine has it too. */
    int64_t first_deadline;
    hwaddr ack_base;
    uint64_t ack_size;    /* 0: the first catch-all read after raising acknowledges */
    bool ack_reads;       /* reads in the ack region acknowledge too, not only writes */
    bool raised;
} RehostingTick;

typedef struct RehostingConfig {
    char *path;
    QDict *root;
    int next_serial; /* "chardev" devices take -serial backends in order */

    /* The catch-all region: its value model and its access recording (rehosting_catch_all.c). */
    MemoryRegion unmapped;
    GHashTable *mmio_rules;  /* guest physical address -> RehostingMmioRule */
    uint64_t seed;
    bool random_unruled_reads; /* else addresses without a rule read 0 */
    uint64_t unmapped_log_limit;
    uint64_t unmapped_accesses; /* also the order of the next access */
    int events_fd;              /* -1: no events */
    uint64_t mmio_event_limit;
    uint64_t mmio_events_sent;
    GHashTable *event_sites;    /* (address, pc, is_write) -> accesses seen */
    uint64_t stuck_reads;       /* 0: a run never ends for polling */
    GHashTable *read_counts;    /* address -> reads, while stuck_reads is set */
    RehostingTick tick;
    uint64_t idle_deadline_ns;  /* 0: an idle guest waits for the driver's deadline */
    QEMUTimer *idle_timer;
    /* The recorder's state packed for the migration stream (rehosting_snapshot.c). */
    uint8_t *recorder_blob;
    uint32_t recorder_blob_size;

    hwaddr first_ram_base;
    uint64_t first_ram_size;
} RehostingConfig;

/* Print "rehosting: config FILE: <message>" and exit(1): the config is the user's to fix. */
G_NORETURN G_GNUC_PRINTF(2, 3)
void rehosting_config_fail(const RehostingConfig *config, const char *fmt, ...);

/* Read and parse config->path; the top level must be an object. */
void rehosting_config_load(RehostingConfig *config);

uint64_t rehosting_config_to_u64(const RehostingConfig *config, QObject *value,
                                 const char *what);
/* Required: fails when missing. */
uint64_t rehosting_config_get_u64(const RehostingConfig *config,
                                  const QDict *dict, const char *key,
                                  const char *where);
/* Optional: NULL when missing, fails when of another JSON type. */
const char *rehosting_config_get_str(const RehostingConfig *config,
                                     const QDict *dict, const char *key,
                                     const char *where);
QList *rehosting_config_get_list(const RehostingConfig *config,
                                 const QDict *dict, const char *key,
                                 const char *where);
QDict *rehosting_config_get_dict(const RehostingConfig *config,
                                 const QDict *dict, const char *key,
                                 const char *where);

/* The catch-all region at the lowest priority: "seed", "mmio_rules", "random_unruled_reads",
 * "events_fd", "mmio_event_limit", "unmapped_log_limit", "stuck_reads". */
void rehosting_map_catch_all(RehostingConfig *config, Object *owner);

/* Whether the config asks for a "tick" (the machine decides which line it drives). */
bool rehosting_config_has_tick(const RehostingConfig *config);

/* Start the "tick": {"period_ns", "ack_base", "ack_size", "ack_reads"} driving `irq`. */
void rehosting_start_tick(RehostingConfig *config, qemu_irq irq);

/* Every "ram" region; the first one's base and size are kept in config. */
void rehosting_create_ram(RehostingConfig *config);

/* Before any device: the sink takes the first serial port, the console. */
void rehosting_create_console_sink(RehostingConfig *config, Object *owner);

/* Set QOM properties from a JSON object, failing with the property's name. */
void rehosting_set_props(RehostingConfig *config, DeviceState *dev,
                         const QDict *props, const char *where);

/* Realize the sysbus device described by desc ("type", "props", "mmio") and map it. */
DeviceState *rehosting_create_sysbus_device(RehostingConfig *config,
                                            const QDict *desc,
                                            const char *where);

/* boot.kernel, .initrd, .dtb, .cmdline into the MachineState (each overrides -kernel etc.);
 * fails unless a kernel is given and every named file exists. Returns "boot" or NULL. */
QDict *rehosting_configure_boot_files(RehostingConfig *config,
                                      MachineState *machine);

#endif
