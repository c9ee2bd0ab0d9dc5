/*
 * The catch-all's state across a snapshot: the `rehosting-recorder` vmstate section, packed
 * before a save and unpacked after a load. Only the blob's layout lives here: what the words
 * mean is rehosting_catch_all.c's and rehosting_clock.c's. Never changes a rule or a timer
 * but to restore it.
 */

#include "qemu/osdep.h"
#include "qemu/timer.h"
#include "migration/vmstate.h"
#include "hw/misc/rehosting.h"
#include "rehosting_catch_all.h"

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

void rehosting_register_recorder(RehostingConfig *config)
{
    /* Not tied to a device: the catch-all is the machine's (no instance id needed, one machine). */
    vmstate_register(NULL, 0, &vmstate_rehosting_recorder, config);
}
