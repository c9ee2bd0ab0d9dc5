/*
 * What the units of the rehosting machines' catch-all share (hw/misc/ only, never the
 * machines): its value rules and event sites (which the snapshot's recorder saves), and the
 * calls between the catch-all, the clock and the snapshot units. Declarations only.
 */

#ifndef HW_MISC_REHOSTING_CATCH_ALL_H
#define HW_MISC_REHOSTING_CATCH_ALL_H

#include "hw/misc/rehosting.h"
#include "rehost.pb-c.h"

typedef enum RehostingRuleKind {
    RULE_CONSTANT,
    RULE_SEQUENCE,
    RULE_FORCED_BITS,
    RULE_ECHO,
    RULE_RANDOM,
    RULE_COUNTER,
    RULE_TICK_PENDING,
} RehostingRuleKind;

typedef struct RehostingMmioRule {
    RehostingRuleKind kind;
    uint64_t *values;  /* constant, tick_pending: one; sequence: in order */
    size_t value_count;
    size_t next_value; /* sequence: stays on the last */
    uint64_t and_mask;
    uint64_t or_mask;
    bool written;
    uint64_t last_write;
    /*
     * random: values drawn so far; tick_pending: the tick's deadline when the value was last
     * answered (a raise moves the deadline, so it names the raise; saved in snapshots alike)
     */
    uint64_t draws;
    uint64_t hz;       /* counter: ticks per second of virtual time */
    bool down;         /* counter: counts down from all ones */
} RehostingMmioRule;

typedef struct RehostingEventSite {
    uint64_t address;
    uint64_t pc;
    bool is_write;
} RehostingEventSite;


/* Write one Event frame to config->events_fd (rehosting_catch_all.c). */
void rehosting_write_event_frame(RehostingConfig *config,
                                 const Explorer__Rehost__Event *event);

/* Lower the tick's line if raised: the guest acknowledged it (rehosting_clock.c). */
void rehosting_acknowledge_tick(RehostingTick *tick);

/* The idle timer's callback, `opaque` the config (rehosting_clock.c). */
void rehosting_end_run_if_idle(void *opaque);

/* Register the recorder's vmstate section for `config` (rehosting_snapshot.c). */
void rehosting_register_recorder(RehostingConfig *config);

#endif
