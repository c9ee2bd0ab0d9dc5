/*
 * The catch-all MMIO region under the whole address space (rehosting.c lists the config keys):
 * what an access no device maps reads (the seeded value model and the config's rules), each
 * access recorded as an MmioAccess event, the end of a run stuck polling one address, and the
 * rehost plugin's request to stop the VM for a snapshot. Answers depend only on the config and
 * the order of the accesses. Its guest-time side (tick, idle) is rehosting_clock.c's, its state
 * across a snapshot rehosting_snapshot.c's.
 */

#include "qemu/osdep.h"
#include "qemu/log.h"
#include "qemu/timer.h"
#include "qobject/qbool.h"
#include "exec/cpu-common.h"
#include "exec/icount.h"
#include "exec/target_page.h"
#include "exec/translation-block.h"
#include "hw/core/cpu.h"
#include "system/address-spaces.h"
#include "system/runstate.h"
#include "tcg/insn-start-words.h"
#include "hw/misc/rehosting.h"
#include "hw/misc/rehosting_control.h"
#include "rehosting_catch_all.h"

/* Lowest priority: anything the config maps wins over the catch-all. */
#define UNMAPPED_PRIORITY -1000
#define DEFAULT_UNMAPPED_LOG_LIMIT 16

/* How many accesses of one (address, pc, read/write) are sent before they are only counted. */
#define EVENTS_PER_SITE 8
/* Generous for the largest Event the machine writes (an Exit naming a poll) and its length. */
#define MMIO_FRAME_MAX 128
/* Addresses whose reads are counted for stuck_reads: beyond, new addresses are not watched. */
#define STUCK_ADDRESSES_MAX 65536

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
void rehosting_write_event_frame(RehostingConfig *config,
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
    rehosting_write_event_frame(config, &event);
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

/*
 * A pending-interrupt register of a controller with no model, seen by the tick's handlers: the
 * rule's value on its first read after each raise of the tick (acked or not since: a root's
 * handler may ack by its first read before a chained handler reads its own register), 0 on
 * every other read and before the first raise, so a handler that reads until nothing is pending
 * dispatches the tick once. A raise moves the deadline, which names it.
 */
static uint64_t tick_pending_value(const RehostingTick *tick,
                                   RehostingMmioRule *rule)
{
    if (!tick->timer || tick->deadline == tick->first_deadline ||
        rule->draws == (uint64_t)tick->deadline) {
        return 0;
    }
    rule->draws = tick->deadline;
    return rule->values[0];
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
    case RULE_TICK_PENDING:
        return tick_pending_value(&config->tick, rule);
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
    rehosting_write_event_frame(config, &event);
    exit(0);
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
    if (config->tick.timer && (!config->tick.ack_size ||
        (config->tick.ack_reads &&
         addr - config->tick.ack_base < config->tick.ack_size))) {
        rehosting_acknowledge_tick(&config->tick);
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
        rehosting_acknowledge_tick(&config->tick);
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
        [RULE_TICK_PENDING] = "tick_pending",
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
                              "sequence, forced_bits, echo, random, counter, "
                              "tick_pending",
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
    } else if (rule->kind == RULE_TICK_PENDING) {
        rule->value_count = 1;
        rule->values = g_new(uint64_t, 1);
        /* proto3 JSON leaves out a value of 0. */
        rule->values[0] = qdict_haskey(body, "value") ?
            rehosting_config_get_u64(config, body, "value", what) : 0;
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
        config->idle_timer = timer_new_ns(QEMU_CLOCK_VIRTUAL,
                                          rehosting_end_run_if_idle, config);
        timer_mod_ns(config->idle_timer, config->idle_deadline_ns);
    }
    load_mmio_rules(config);
    config->event_sites = g_hash_table_new_full(event_site_hash,
                                                event_site_equal, g_free,
                                                g_free);
    rehosting_register_recorder(config);
    memory_region_init_io(&config->unmapped, owner, &unmapped_ops, config,
                          "rehosting.unmapped", UINT64_MAX);
    memory_region_add_subregion_overlap(get_system_memory(), 0,
                                        &config->unmapped, UNMAPPED_PRIORITY);
}

