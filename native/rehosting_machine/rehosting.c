/*
 * The part of the `rehosting` machines that does not depend on the CPU architecture: the
 * JSON config (reading, typed getters, one-line errors), RAM regions, the catch-all MMIO
 * region and sysbus devices by type. It must never guess: anything missing or malformed in
 * the config stops QEMU with one line naming the file and the field. The catch-all's answers
 * and events must depend on nothing but the config and the order of the accesses (runs replay
 * bit for bit), and nothing it keeps may grow with the number of accesses.
 *
 * Config keys handled here (integers may be JSON numbers or strings such as "0x60000000"):
 *   "ram": [ {"base": A, "size": N} ]       at least one region
 *   "devices": [ {"type": T, "mmio": [A...], "props": {...}} ]   (irqs: per machine)
 *   "unmapped_log_limit": 16                catch-all accesses logged with -d unimp
 * and the catch-all's value model and recording (proto/machine_config.proto's JSON mapping):
 *   "seed": S                               every random value derives from it
 *   "mmio_rules": [ {"address": A, "constant": V | "sequence": {"values": [...]} |
 *                    "forced_bits": {"and_mask", "or_mask"} | "echo": {} | "random": {} |
 *                    "counter": {"hz": F, "down": false}} ]
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
#include "qemu/log.h"
#include "qemu/timer.h"
#include "qobject/qbool.h"
#include "qobject/qjson.h"
#include "qobject/qnum.h"
#include "qobject/qstring.h"
#include "qom/object.h"
#include "qom/qom-qobject.h"
#include "hw/sysbus.h"
#include "hw/qdev-properties-system.h"
#include "exec/cpu-common.h"
#include "exec/icount.h"
#include "exec/target_page.h"
#include "exec/translation-block.h"
#include "hw/core/cpu.h"
#include "system/address-spaces.h"
#include "system/runstate.h"
#include "migration/vmstate.h"
#include "system/system.h"
#include "tcg/insn-start-words.h"
#include "hw/misc/rehosting.h"
#include "hw/misc/rehosting_control.h"
#include "rehost.pb-c.h"

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

/* How many accesses of one (address, pc, read/write) are sent before they are only counted. */
#define EVENTS_PER_SITE 8
/* Generous for the largest Event the machine writes (an Exit naming a poll) and its length. */
#define MMIO_FRAME_MAX 128
/* Guest time between two looks at a CPU that was busy, or had timers, at idle_deadline_ns. */
#define IDLE_RECHECK_NS 100000000
/* A guest idling between ticks ends at this many times idle_deadline_ns of its time. */
#define IDLE_GUEST_TIME_FACTOR 4
/* Addresses whose reads are counted for stuck_reads: beyond, new addresses are not watched. */
#define STUCK_ADDRESSES_MAX 65536

typedef enum RehostingRuleKind {
    RULE_CONSTANT,
    RULE_SEQUENCE,
    RULE_FORCED_BITS,
    RULE_ECHO,
    RULE_RANDOM,
    RULE_COUNTER,
} RehostingRuleKind;

typedef struct RehostingMmioRule {
    RehostingRuleKind kind;
    uint64_t *values;  /* constant: one; sequence: in order */
    size_t value_count;
    size_t next_value; /* sequence: stays on the last */
    uint64_t and_mask;
    uint64_t or_mask;
    bool written;
    uint64_t last_write;
    uint64_t draws;    /* random: values drawn so far */
    uint64_t hz;       /* counter: ticks per second of virtual time */
    bool down;         /* counter: counts down from all ones */
} RehostingMmioRule;

typedef struct RehostingEventSite {
    uint64_t address;
    uint64_t pc;
    bool is_write;
} RehostingEventSite;

/* splitmix64's finalizer: a bijection that spreads every input bit over the output. */
static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* The draw-th random value of an address: a pure function, so runs replay bit for bit. */
static uint64_t seeded_random(uint64_t seed, uint64_t address, uint64_t draw)
{
    return mix64(mix64(mix64(seed) ^ address) ^ draw);
}

static guint event_site_hash(gconstpointer key)
{
    const RehostingEventSite *site = key;

    return mix64(site->address ^ mix64(site->pc ^ site->is_write));
}

static gboolean event_site_equal(gconstpointer a, gconstpointer b)
{
    const RehostingEventSite *x = a, *y = b;

    return x->address == y->address && x->pc == y->pc &&
           x->is_write == y->is_write;
}

static void free_mmio_rule(gpointer data)
{
    RehostingMmioRule *rule = data;

    g_free(rule->values);
    g_free(rule);
}

/*
 * The guest PC of the load or store being served. The TCG helper recorded its host return
 * address in mem_io_pc; the unwind data of that spot holds the guest PC (only its page
 * offset when the translation is PC-relative, as QEMU's restore_state_to_opc hooks read it).
 * Unwinding leaves the CPU untouched: restoring state would also refund icount.
 */
static uint64_t access_pc(void)
{
    uint64_t insn_start[INSN_START_WORDS];
    uint64_t page_mask = (uint64_t)(int64_t)qemu_target_page_mask();

    if (!current_cpu) {
        return 0;
    }
    if (!cpu_unwind_state_data(current_cpu, current_cpu->mem_io_pc,
                               insn_start)) {
        return current_cpu->cc->get_pc(current_cpu);
    }
    if (tcg_cflags_has(current_cpu, CF_PCREL)) {
        return (current_cpu->cc->get_pc(current_cpu) & page_mask) |
               insn_start[0];
    }
    return insn_start[0];
}

/* Write one frame with one write(): frames this small are atomic on a pipe shared with the
 * plugin. When the master is gone (EPIPE) the run has no reader: stop it quietly. */
static void write_event_frame(RehostingConfig *config,
                              const Explorer__Rehost__Event *event)
{
    uint8_t frame[MMIO_FRAME_MAX];
    size_t length = explorer__rehost__event__get_packed_size(event);
    size_t header = 0;
    size_t rest = length;
    ssize_t written;

    g_assert(length + 10 <= sizeof(frame));
    do {
        frame[header++] = (rest & 0x7f) | (rest > 0x7f ? 0x80 : 0);
        rest >>= 7;
    } while (rest);
    explorer__rehost__event__pack(event, frame + header);
    do {
        written = write(config->events_fd, frame, header + length);
    } while (written < 0 && errno == EINTR);
    if (written != (ssize_t)(header + length)) {
        config->events_fd = -1;
        qemu_system_shutdown_request(SHUTDOWN_CAUSE_HOST_ERROR);
    }
}

/* Send the access unless the run's budget is spent or this site has been sent often enough. */
static void record_access(RehostingConfig *config, hwaddr addr, unsigned size,
                          uint64_t value, bool is_write, uint64_t order)
{
    Explorer__Rehost__MmioAccess access = EXPLORER__REHOST__MMIO_ACCESS__INIT;
    Explorer__Rehost__Event event = EXPLORER__REHOST__EVENT__INIT;
    RehostingEventSite site = { .address = addr, .is_write = is_write };
    uint64_t *seen;

    if (config->events_fd < 0 ||
        config->mmio_events_sent >= config->mmio_event_limit) {
        return;
    }
    site.pc = access_pc();
    seen = g_hash_table_lookup(config->event_sites, &site);
    if (!seen) {
        /* At most mmio_event_limit sites exist: each was sent at least once. */
        seen = g_new0(uint64_t, 1);
        g_hash_table_insert(config->event_sites, g_memdup2(&site, sizeof(site)),
                            seen);
    }
    if ((*seen)++ >= EVENTS_PER_SITE) {
        return;
    }
    config->mmio_events_sent++;
    access.address = addr;
    access.size = size;
    access.value = value;
    access.pc = site.pc;
    access.is_write = is_write;
    access.order = order;
    access.icount = icount_enabled() ? icount_get_raw() : 0;
    event.kind_case = EXPLORER__REHOST__EVENT__KIND_MMIO_ACCESS;
    event.mmio_access = &access;
    write_event_frame(config, &event);
}

static uint64_t unruled_value(const RehostingConfig *config, hwaddr addr,
                              uint64_t order)
{
    return config->random_unruled_reads ?
        seeded_random(config->seed, addr, order) : 0;
}

/*
 * A free-running counter: the ticks of virtual time at the rule's rate, so it holds no state of
 * its own (a snapshot restores the clock) and, under icount, reads the same in every run. The
 * caller masks it to the access size, where it wraps as a narrower hardware counter does.
 */
static uint64_t counter_value(const RehostingMmioRule *rule)
{
    uint64_t ticks = muldiv64(qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL),
                              (uint32_t)rule->hz, NANOSECONDS_PER_SECOND);

    return rule->down ? ~ticks : ticks;
}

static uint64_t rule_value(RehostingConfig *config, RehostingMmioRule *rule,
                           hwaddr addr, uint64_t order)
{
    uint64_t written = rule->written ? rule->last_write :
                       unruled_value(config, addr, order);

    switch (rule->kind) {
    case RULE_CONSTANT:
        return rule->values[0];
    case RULE_SEQUENCE:
        if (rule->next_value + 1 < rule->value_count) {
            return rule->values[rule->next_value++];
        }
        return rule->values[rule->value_count - 1];
    case RULE_FORCED_BITS:
        return (written & rule->and_mask) | rule->or_mask;
    case RULE_ECHO:
        return written;
    case RULE_RANDOM:
        return seeded_random(config->seed, addr, rule->draws++);
    case RULE_COUNTER:
        return counter_value(rule);
    }
    g_assert_not_reached();
}

/*
 * One address read stuck_reads times: the guest polls a register no value has satisfied and
 * never will. End the run there, as a spent budget naming the poll, instead of burning the
 * budget; QEMU's exit runs the plugin's exit handler, which still sends the call stack. The
 * count is of reads, so the point is the same in every run of the same state and seed.
 */
static void end_run_if_stuck(RehostingConfig *config, hwaddr addr)
{
    Explorer__Rehost__Exit exit_message = EXPLORER__REHOST__EXIT__INIT;
    Explorer__Rehost__Event event = EXPLORER__REHOST__EVENT__INIT;
    g_autofree char *detail = NULL;
    uint64_t *reads;

    if (!config->stuck_reads || config->events_fd < 0) {
        return;
    }
    reads = g_hash_table_lookup(config->read_counts, &addr);
    if (!reads) {
        if (g_hash_table_size(config->read_counts) >= STUCK_ADDRESSES_MAX) {
            return;
        }
        reads = g_new0(uint64_t, 2);
        reads[0] = addr;
        g_hash_table_insert(config->read_counts, reads, reads);
    }
    if (++reads[1] < config->stuck_reads) {
        return;
    }
    detail = g_strdup_printf("stuck: %" PRIu64 " reads of 0x%" HWADDR_PRIx
                             " (last at pc 0x%" PRIx64 ")", reads[1], addr,
                             access_pc());
    exit_message.reason = EXPLORER__REHOST__EXIT_REASON__EXIT_BUDGET;
    /* The instruction count is the plugin's to know (0: not given). */
    exit_message.detail = detail;
    event.kind_case = EXPLORER__REHOST__EVENT__KIND_EXIT;
    event.exit = &exit_message;
    write_event_frame(config, &event);
    exit(0);
}

/*
 * The tick's line is level: raised on time, lowered when the kernel's interrupt handler
 * acknowledges. With an ack region (the unmodelled controller's registers) that is its first
 * write there: every controller's handler acks, masks or ends the interrupt by writing its
 * registers (the first write to the controller after the raise, not the exact register, so no
 * SoC's layout is needed). Without one, the first catch-all read: a handler first reads which
 * interrupt is pending. A read by code that runs with interrupts masked drops that one tick
 * (the next period raises again), which only slows jiffies down; keeping the line up instead
 * could trap the guest in an interrupt storm it has no way to end.
 */
static void acknowledge_tick(RehostingTick *tick)
{
    if (tick->raised) {
        tick->raised = false;
        qemu_irq_lower(tick->irq);
    }
}

static void tick_fire(void *opaque)
{
    RehostingTick *tick = opaque;

    tick->raised = true;
    qemu_irq_raise(tick->irq);
    /* From the deadline, not from now: late callbacks never shift the period. */
    tick->deadline += tick->period_ns;
    timer_mod_ns(tick->timer, tick->deadline);
}

bool rehosting_config_has_tick(const RehostingConfig *config)
{
    return qdict_haskey(config->root, "tick");
}

void rehosting_start_tick(RehostingConfig *config, qemu_irq irq)
{
    QDict *desc = rehosting_config_get_dict(config, config->root, "tick",
                                            "config");
    RehostingTick *tick = &config->tick;

    tick->irq = irq;
    tick->period_ns = rehosting_config_get_u64(config, desc, "period_ns",
                                               "tick");
    if (tick->period_ns == 0 || tick->period_ns > INT64_MAX / 2) {
        rehosting_config_fail(config, "tick.period_ns must be above 0 and "
                              "below 2**62");
    }
    /* proto3 JSON leaves out fields that are 0: no ack region. */
    tick->ack_base = qdict_haskey(desc, "ack_base") ?
        rehosting_config_get_u64(config, desc, "ack_base", "tick") : 0;
    tick->ack_size = qdict_haskey(desc, "ack_size") ?
        rehosting_config_get_u64(config, desc, "ack_size", "tick") : 0;
    /* QEMU_CLOCK_VIRTUAL follows the instruction count under icount. */
    tick->timer = timer_new_ns(QEMU_CLOCK_VIRTUAL, tick_fire, tick);
    tick->deadline = qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL) + tick->period_ns;
    timer_mod_ns(tick->timer, tick->deadline);
}

/*
 * Under icount with sleep=off an idle CPU makes the guest clock jump to the next timer, so a
 * guest waiting for an interrupt nobody will raise waits for the host, until the driver's
 * wall-clock deadline. This timer is then the next one. From idle_deadline_ns of guest time on,
 * a halted CPU with no other timer armed ends the run: nothing can ever wake it. A guest that
 * still has timers (a tick, a modelled timer) runs on, until its instruction budget or, should
 * it idle between ticks for ever, until IDLE_GUEST_TIME_FACTOR times that guest time. Timers
 * fire at fixed instruction counts under icount, so the run ends at the same point every time.
 */
static void end_run_if_idle(void *opaque)
{
    RehostingConfig *config = opaque;
    Explorer__Rehost__Exit exit_message = EXPLORER__REHOST__EXIT__INIT;
    Explorer__Rehost__Event event = EXPLORER__REHOST__EVENT__INIT;
    int64_t now = qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL);
    bool nothing_armed = qemu_clock_deadline_ns_all(QEMU_CLOCK_VIRTUAL,
                                                    QEMU_TIMER_ATTR_ALL) < 0;
    bool out_of_time = now >= config->idle_deadline_ns * IDLE_GUEST_TIME_FACTOR;
    g_autofree char *detail = NULL;

    /*
     * A timer that fired just before this one (a tick) may have raised an interrupt the
     * halted CPU has not taken yet: it waits for the lock this callback holds, so asking
     * for work, not only `halted`, decides the same way every time.
     */
    if (!first_cpu->halted || cpu_has_work(first_cpu) || !(nothing_armed || out_of_time)) {
        timer_mod_ns(config->idle_timer, now + IDLE_RECHECK_NS);
        return;
    }
    detail = g_strdup_printf(nothing_armed ?
                             "idle: the guest waited for an interrupt with no "
                             "timer armed at %" PRId64 " ms of its time" :
                             "idle: the guest's clock reached %" PRId64 " ms",
                             now / 1000000);
    exit_message.reason = EXPLORER__REHOST__EXIT_REASON__EXIT_BUDGET;
    exit_message.detail = detail;
    event.kind_case = EXPLORER__REHOST__EVENT__KIND_EXIT;
    event.exit = &exit_message;
    write_event_frame(config, &event);
    /*
     * Stop the CPU here, before any timer after this one (a tick due at the same time) can
     * wake it: the shutdown request alone lets it run on until the main loop gets to it.
     */
    vm_stop(RUN_STATE_SHUTDOWN);
    qemu_system_shutdown_request(SHUTDOWN_CAUSE_GUEST_SHUTDOWN);
}

static uint64_t unmapped_read(void *opaque, hwaddr addr, unsigned size)
{
    RehostingConfig *config = opaque;
    RehostingMmioRule *rule = g_hash_table_lookup(config->mmio_rules, &addr);
    uint64_t order = config->unmapped_accesses++;
    uint64_t value = rule ? rule_value(config, rule, addr, order) :
                     unruled_value(config, addr, order);

    value &= MAKE_64BIT_MASK(0, size * 8);
    if (order < config->unmapped_log_limit) {
        qemu_log_mask(LOG_UNIMP, "rehosting: unmapped read  0x%" HWADDR_PRIx
                      " size %u -> 0x%" PRIx64 "\n", addr, size, value);
    }
    record_access(config, addr, size, value, false, order);
    if (config->tick.timer && !config->tick.ack_size) {
        acknowledge_tick(&config->tick);
    }
    end_run_if_stuck(config, addr);
    return value;
}

/*
 * The rehost plugin's request to stop the VM at a snapshot's point (rehosting_control.h): from
 * the vCPU thread, vm_stop only asks the CPU to stop, which it does when the block it is in
 * ends, the block the plugin's callback stands at the start of. The guest's clock stops at
 * once, as QMP `stop` stops it before the vCPU is told to: otherwise a timer due at the end of
 * that block fires in the vCPU thread before the main loop gets to stopping the VM, and the
 * continuation differed from the full boot (a cubieboard2 state by 16 instructions 46 M
 * instructions later).
 */
static bool is_stop_request(hwaddr addr, uint64_t value, unsigned size,
                            MemTxAttrs attrs)
{
    return attrs.unspecified && addr == REHOSTING_STOP_ADDRESS &&
           size == 4 && value == REHOSTING_STOP_TOKEN;
}

static MemTxResult unmapped_write(void *opaque, hwaddr addr, uint64_t value,
                                  unsigned size, MemTxAttrs attrs)
{
    RehostingConfig *config = opaque;
    RehostingMmioRule *rule;
    uint64_t order;

    if (is_stop_request(addr, value, size, attrs)) {
        qemu_clock_enable(QEMU_CLOCK_VIRTUAL, false);
        vm_stop(RUN_STATE_PAUSED);
        return MEMTX_OK;
    }
    rule = g_hash_table_lookup(config->mmio_rules, &addr);
    order = config->unmapped_accesses++;
    if (rule) {
        rule->written = true;
        rule->last_write = value;
    }
    if (order < config->unmapped_log_limit) {
        qemu_log_mask(LOG_UNIMP, "rehosting: unmapped write 0x%" HWADDR_PRIx
                      " size %u <- 0x%" PRIx64 "\n", addr, size, value);
    }
    record_access(config, addr, size, value, true, order);
    if (config->tick.timer && addr - config->tick.ack_base <
        config->tick.ack_size) {
        acknowledge_tick(&config->tick);
    }
    return MEMTX_OK;
}

static const MemoryRegionOps unmapped_ops = {
    .read = unmapped_read,
    .write_with_attrs = unmapped_write,
    /* Guest-endian: a 32-bit rule value reads back as that number. */
    .endianness = DEVICE_NATIVE_ENDIAN,
    .valid = { .min_access_size = 1, .max_access_size = 8 },
};

static uint64_t *load_sequence(RehostingConfig *config, const QDict *sequence,
                               size_t *count, const char *where)
{
    QList *values = rehosting_config_get_list(config, sequence, "values",
                                              where);
    const QListEntry *entry;
    uint64_t *result;
    size_t index = 0;

    if (!values || qlist_empty(values)) {
        rehosting_config_fail(config, "%s.values must list at least one value",
                              where);
    }
    *count = qlist_size(values);
    result = g_new(uint64_t, *count);
    QLIST_FOREACH_ENTRY(values, entry) {
        g_autofree char *what = g_strdup_printf("%s.values[%zu]", where, index);

        result[index++] = rehosting_config_to_u64(config,
                                                  qlist_entry_obj(entry), what);
    }
    return result;
}

/* One MmioRule in protobuf's JSON mapping: "address" and exactly one value kind. */
static RehostingMmioRule *load_mmio_rule(RehostingConfig *config,
                                         const QDict *desc, const char *where)
{
    static const char *const kinds[] = {
        [RULE_CONSTANT] = "constant",
        [RULE_SEQUENCE] = "sequence",
        [RULE_FORCED_BITS] = "forced_bits",
        [RULE_ECHO] = "echo",
        [RULE_RANDOM] = "random",
        [RULE_COUNTER] = "counter",
    };
    RehostingMmioRule *rule = g_new0(RehostingMmioRule, 1);
    g_autofree char *what = NULL;
    QDict *body;
    int found = 0;
    size_t kind;

    for (kind = 0; kind < ARRAY_SIZE(kinds); kind++) {
        if (qdict_haskey(desc, kinds[kind])) {
            rule->kind = kind;
            found++;
        }
    }
    if (found != 1) {
        rehosting_config_fail(config, "%s must give exactly one of constant, "
                              "sequence, forced_bits, echo, random, counter",
                              where);
    }
    what = g_strdup_printf("%s.%s", where, kinds[rule->kind]);
    if (rule->kind == RULE_CONSTANT) {
        rule->value_count = 1;
        rule->values = g_new(uint64_t, 1);
        rule->values[0] = rehosting_config_to_u64(
            config, qdict_get(desc, "constant"), what);
        return rule;
    }
    body = rehosting_config_get_dict(config, desc, kinds[rule->kind], where);
    if (rule->kind == RULE_SEQUENCE) {
        rule->values = load_sequence(config, body, &rule->value_count, what);
    } else if (rule->kind == RULE_FORCED_BITS) {
        /* proto3 JSON leaves out masks that are 0. */
        rule->and_mask = qdict_haskey(body, "and_mask") ?
            rehosting_config_get_u64(config, body, "and_mask", what) : 0;
        rule->or_mask = qdict_haskey(body, "or_mask") ?
            rehosting_config_get_u64(config, body, "or_mask", what) : 0;
    } else if (rule->kind == RULE_COUNTER) {
        QObject *down = qdict_get(body, "down");

        rule->hz = rehosting_config_get_u64(config, body, "hz", what);
        /* muldiv64 multiplies by 32 bits. */
        if (!rule->hz || rule->hz > UINT32_MAX) {
            rehosting_config_fail(config, "%s.hz must be from 1 to %u", what,
                                  UINT32_MAX);
        }
        /* proto3 JSON leaves out a false bool. */
        if (down && !qobject_to(QBool, down)) {
            rehosting_config_fail(config, "%s.down must be true or false",
                                  what);
        }
        rule->down = down && qbool_get_bool(qobject_to(QBool, down));
    }
    return rule;
}

static void load_mmio_rules(RehostingConfig *config)
{
    QList *rules = rehosting_config_get_list(config, config->root,
                                             "mmio_rules", "config");
    const QListEntry *entry;
    int index = 0;

    config->mmio_rules = g_hash_table_new_full(g_int64_hash, g_int64_equal,
                                               g_free, free_mmio_rule);
    if (!rules) {
        return;
    }
    QLIST_FOREACH_ENTRY(rules, entry) {
        QDict *desc = qobject_to(QDict, qlist_entry_obj(entry));
        g_autofree char *where = g_strdup_printf("mmio_rules[%d]", index++);
        uint64_t *address = g_new(uint64_t, 1);

        if (!desc) {
            rehosting_config_fail(config, "%s must be an object", where);
        }
        *address = rehosting_config_get_u64(config, desc, "address", where);
        if (g_hash_table_contains(config->mmio_rules, address)) {
            rehosting_config_fail(config, "%s: address 0x%" PRIx64 " already "
                                  "has a rule", where, *address);
        }
        g_hash_table_insert(config->mmio_rules, address,
                            load_mmio_rule(config, desc, where));
    }
}

static uint64_t optional_u64(const RehostingConfig *config, const char *key,
                             uint64_t absent)
{
    QObject *value = qdict_get(config->root, key);

    return value ? rehosting_config_to_u64(config, value, key) : absent;
}

/* "events_fd": a descriptor QEMU inherited from the master, open for writing. */
static void load_events_fd(RehostingConfig *config)
{
    QObject *value = qdict_get(config->root, "events_fd");
    uint64_t fd;
    int flags;

    config->events_fd = -1;
    if (!value) {
        return;
    }
    fd = rehosting_config_to_u64(config, value, "events_fd");
    flags = fd <= INT_MAX ? fcntl(fd, F_GETFL) : -1;
    if (flags < 0 || (flags & O_ACCMODE) == O_RDONLY) {
        rehosting_config_fail(config, "events_fd %" PRIu64 " is not a "
                              "descriptor open for writing", fd);
    }
    config->events_fd = fd;
}

/*
 * Snapshots (explorer/runner/snapshot.py): QEMU migrates the devices' state, but what the
 * catch-all has learned during the run lives in hash tables no vmstate describes: the access
 * order that seeds random values and numbers the events, how many events were sent, each
 * rule's position, the event sites already seen, the stuck-read counts, and the machine's own
 * timers. Without it a restored run would number, draw and cap its accesses from zero. It
 * travels as one vmstate section holding a blob of u64 words, packed before the save and
 * unpacked after the load:
 *   unmapped_accesses, mmio_events_sent,
 *   rules:  count, then (address, next_value, written, last_write, draws) each,
 *   sites:  count, then (address, pc, is_write, accesses) each,
 *   reads:  count, then (address, reads) each,
 *   tick deadline, tick raised, tick timer expiry, idle timer expiry (UINT64_MAX: not armed).
 * The restoring config may differ from the saving one: a rule the blob lacks starts fresh,
 * a blob rule the config lacks is ignored. That is right only when the snapshot was taken
 * before the guest first touched the differing addresses, which is the master's to ensure.
 */
#define RECORDER_RULE_WORDS 5
#define RECORDER_SITE_WORDS 4
#define RECORDER_READ_WORDS 2

static void blob_put(GByteArray *blob, uint64_t word)
{
    g_byte_array_append(blob, (const guint8 *)&word, sizeof(word));
}

static uint64_t timer_expiry(QEMUTimer *timer)
{
    return timer && timer_pending(timer) ? timer_expire_time_ns(timer) :
                                           UINT64_MAX;
}

static void timer_set_expiry(QEMUTimer *timer, uint64_t expiry)
{
    if (!timer) {
        return;
    }
    if (expiry == UINT64_MAX) {
        timer_del(timer);
    } else {
        timer_mod_ns(timer, expiry);
    }
}

static int recorder_pre_save(void *opaque)
{
    RehostingConfig *config = opaque;
    GByteArray *blob = g_byte_array_new();
    GHashTableIter iter;
    gpointer key, value;

    blob_put(blob, config->unmapped_accesses);
    blob_put(blob, config->mmio_events_sent);
    blob_put(blob, g_hash_table_size(config->mmio_rules));
    g_hash_table_iter_init(&iter, config->mmio_rules);
    while (g_hash_table_iter_next(&iter, &key, &value)) {
        const RehostingMmioRule *rule = value;

        blob_put(blob, *(const uint64_t *)key);
        blob_put(blob, rule->next_value);
        blob_put(blob, rule->written);
        blob_put(blob, rule->last_write);
        blob_put(blob, rule->draws);
    }
    blob_put(blob, g_hash_table_size(config->event_sites));
    g_hash_table_iter_init(&iter, config->event_sites);
    while (g_hash_table_iter_next(&iter, &key, &value)) {
        const RehostingEventSite *site = key;

        blob_put(blob, site->address);
        blob_put(blob, site->pc);
        blob_put(blob, site->is_write);
        blob_put(blob, *(const uint64_t *)value);
    }
    blob_put(blob, g_hash_table_size(config->read_counts));
    g_hash_table_iter_init(&iter, config->read_counts);
    while (g_hash_table_iter_next(&iter, &key, &value)) {
        const uint64_t *reads = value;

        blob_put(blob, reads[0]);
        blob_put(blob, reads[1]);
    }
    blob_put(blob, config->tick.deadline);
    blob_put(blob, config->tick.raised);
    blob_put(blob, timer_expiry(config->tick.timer));
    blob_put(blob, timer_expiry(config->idle_timer));
    g_free(config->recorder_blob);
    config->recorder_blob_size = blob->len;
    config->recorder_blob = g_byte_array_free(blob, false);
    return 0;
}

/* Reads the next word; false once the blob is exhausted (a truncated blob fails the load). */
static bool blob_take(const RehostingConfig *config, size_t *offset,
                      uint64_t *word)
{
    if (*offset + sizeof(*word) > config->recorder_blob_size) {
        return false;
    }
    memcpy(word, config->recorder_blob + *offset, sizeof(*word));
    *offset += sizeof(*word);
    return true;
}

static bool blob_take_words(const RehostingConfig *config, size_t *offset,
                            uint64_t *words, size_t count)
{
    size_t i;

    for (i = 0; i < count; i++) {
        if (!blob_take(config, offset, &words[i])) {
            return false;
        }
    }
    return true;
}

static int recorder_post_load(void *opaque, int version_id)
{
    RehostingConfig *config = opaque;
    size_t offset = 0;
    uint64_t count, words[RECORDER_RULE_WORDS];

    if (!blob_take_words(config, &offset, words, 2)) {
        return -EINVAL;
    }
    config->unmapped_accesses = words[0];
    config->mmio_events_sent = words[1];
    if (!blob_take(config, &offset, &count)) {
        return -EINVAL;
    }
    for (; count; count--) {
        RehostingMmioRule *rule;

        if (!blob_take_words(config, &offset, words, RECORDER_RULE_WORDS)) {
            return -EINVAL;
        }
        rule = g_hash_table_lookup(config->mmio_rules, &words[0]);
        if (rule) {
            rule->next_value = words[1];
            rule->written = words[2];
            rule->last_write = words[3];
            rule->draws = words[4];
        }
    }
    if (!blob_take(config, &offset, &count)) {
        return -EINVAL;
    }
    for (; count; count--) {
        RehostingEventSite site = { 0 };

        if (!blob_take_words(config, &offset, words, RECORDER_SITE_WORDS)) {
            return -EINVAL;
        }
        site.address = words[0];
        site.pc = words[1];
        site.is_write = words[2];
        g_hash_table_insert(config->event_sites, g_memdup2(&site, sizeof(site)),
                            g_memdup2(&words[3], sizeof(uint64_t)));
    }
    if (!blob_take(config, &offset, &count)) {
        return -EINVAL;
    }
    for (; count; count--) {
        uint64_t *reads;

        if (!blob_take_words(config, &offset, words, RECORDER_READ_WORDS)) {
            return -EINVAL;
        }
        reads = g_memdup2(words, RECORDER_READ_WORDS * sizeof(uint64_t));
        g_hash_table_insert(config->read_counts, reads, reads);
    }
    if (!blob_take_words(config, &offset, words, 4)) {
        return -EINVAL;
    }
    config->tick.deadline = words[0];
    config->tick.raised = words[1];
    timer_set_expiry(config->tick.timer, words[2]);
    timer_set_expiry(config->idle_timer, words[3]);
    return offset == config->recorder_blob_size ? 0 : -EINVAL;
}

static const VMStateDescription vmstate_rehosting_recorder = {
    .name = "rehosting-recorder",
    .version_id = 1,
    .minimum_version_id = 1,
    .pre_save = recorder_pre_save,
    .post_load = recorder_post_load,
    .fields = (const VMStateField[]) {
        VMSTATE_UINT32(recorder_blob_size, RehostingConfig),
        VMSTATE_VBUFFER_ALLOC_UINT32(recorder_blob, RehostingConfig, 0, NULL,
                                     recorder_blob_size),
        VMSTATE_END_OF_LIST()
    },
};

void rehosting_map_catch_all(RehostingConfig *config, Object *owner)
{
    QObject *random_unruled = qdict_get(config->root, "random_unruled_reads");

    config->unmapped_log_limit = optional_u64(config, "unmapped_log_limit",
                                              DEFAULT_UNMAPPED_LOG_LIMIT);
    config->seed = optional_u64(config, "seed", 0);
    config->mmio_event_limit = optional_u64(config, "mmio_event_limit", 0);
    config->stuck_reads = optional_u64(config, "stuck_reads", 0);
    /* Keyed by the address in the first word of each counter (g_int64_hash reads one). */
    config->read_counts = g_hash_table_new_full(g_int64_hash, g_int64_equal,
                                                g_free, NULL);
    if (random_unruled && !qobject_to(QBool, random_unruled)) {
        rehosting_config_fail(config, "random_unruled_reads must be true or "
                              "false");
    }
    config->random_unruled_reads = random_unruled &&
        qbool_get_bool(qobject_to(QBool, random_unruled));
    load_events_fd(config);
    config->idle_deadline_ns = optional_u64(config, "idle_deadline_ns", 0);
    if (config->idle_deadline_ns && config->events_fd >= 0) {
        config->idle_timer = timer_new_ns(QEMU_CLOCK_VIRTUAL, end_run_if_idle,
                                          config);
        timer_mod_ns(config->idle_timer, config->idle_deadline_ns);
    }
    load_mmio_rules(config);
    config->event_sites = g_hash_table_new_full(event_site_hash,
                                                event_site_equal, g_free,
                                                g_free);
    /* Not tied to a device: the catch-all is the machine's (no instance id needed, one machine). */
    vmstate_register(NULL, 0, &vmstate_rehosting_recorder, config);
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
