/*
 * The part of the `rehosting` machines that does not depend on the CPU architecture, in units
 * by concept (all copied to hw/misc/ by native/build.py):
 *   rehosting.c            the JSON config: reading it, typed getters, one-line errors (here)
 *   rehosting_catch_all.c  the catch-all MMIO region: its value model, recording accesses as
 *                          events, ending a run stuck polling; the snapshot's stop request
 *   rehosting_clock.c      guest time: the tick, and ending a run idle for ever
 *   rehosting_snapshot.c   the catch-all's state across a snapshot (a vmstate section)
 *   rehosting_devices.c    RAM regions, sysbus devices by type, the boot files
 * It must never guess: anything missing or malformed in the config stops QEMU with one line
 * naming the file and the field. The catch-all's answers and events must depend on nothing but
 * the config and the order of the accesses (runs replay bit for bit), and nothing it keeps may
 * grow with the number of accesses. This unit only reads the config: it creates nothing.
 *
 * Config keys handled by these units (integers may be JSON numbers or strings such as "0x60000000"):
 *   "ram": [ {"base": A, "size": N} ]       at least one region
 *   "devices": [ {"type": T, "mmio": [A...], "props": {...}} ]   (irqs: per machine)
 *   "unmapped_log_limit": 16                catch-all accesses logged with -d unimp
 * and the catch-all's value model and recording (proto/machine_config.proto's JSON mapping):
 *   "seed": S                               every random value derives from it
 *   "mmio_rules": [ {"address": A, "constant": V | "sequence": {"values": [...]} |
 *                    "forced_bits": {"and_mask", "or_mask"} | "echo": {} | "random": {} |
 *                    "counter": {"hz": F, "down": false} | "tick_pending": {"value": V}} ]
 *   "random_unruled_reads": false           addresses without a rule read 0, or seeded random
 *   "events_fd": N, "mmio_event_limit": M   the first M accesses (EVENTS_PER_SITE per address,
 *                                           pc and direction) go to fd N as MmioAccess events
 *   "idle_deadline_ns": T                   from guest time T on, end the run (EXIT_BUDGET,
 *                                           "idle: ...") when the CPU waits for an interrupt
 *                                           with no timer armed (or at 4 T) (0: never)
 *   "stuck_reads": R                        end the run (EXIT_BUDGET, "stuck: ...") once one
 *                                           address has been read R times (0: never)
 *   "boot": {"kernel", "initrd", "dtb", "cmdline"}   paths and the command line
 * and, for a board whose interrupt controller has no model (the machine picks the line):
 *   "tick": {"period_ns": P, "ack_base": A, "ack_size": N}   raise the line every P ns of
 *                                           virtual time; a guest write into [A, A+N) lowers
 *                                           it (N = 0: the first catch-all read does)
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qemu/cutils.h"
#include "qemu/error-report.h"
#include "qobject/qjson.h"
#include "qobject/qnum.h"
#include "qobject/qstring.h"
#include "hw/misc/rehosting.h"

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

