/*
 * What the rehosting machines do on guest time (QEMU_CLOCK_VIRTUAL, which follows the
 * instruction count under icount): the "tick", a periodic interrupt for boards whose interrupt
 * controller has no model, and the end of a run whose guest idles with nothing left to wake
 * it ("idle_deadline_ns"). Never reads the catch-all's rules; the catch-all tells it when the
 * guest acknowledges a tick.
 */

#include "qemu/osdep.h"
#include "qemu/timer.h"
#include "hw/core/cpu.h"
#include "system/runstate.h"
#include "qobject/qbool.h"
#include "hw/misc/rehosting.h"
#include "rehosting_catch_all.h"

/* Guest time between two looks at a CPU that was busy, or had timers, at idle_deadline_ns. */
#define IDLE_RECHECK_NS 100000000
/* A guest idling between ticks ends at this many times idle_deadline_ns of its time. */
#define IDLE_GUEST_TIME_FACTOR 4

/*
 * The tick's line is level: raised on time, lowered when the kernel's interrupt handler
 * acknowledges. With an ack region (the unmodelled controller's registers) that is its first
 * write there: every controller's handler acks, masks or ends the interrupt by writing its
 * registers (the first write to the controller after the raise, not the exact register, so no
 * SoC's layout is needed). Without one, the first catch-all read: a handler first reads which
 * interrupt is pending. A read by code that runs with interrupts masked drops that one tick
 * (the next period raises again), which only slows jiffies down; keeping the line up instead
 * could trap the guest in an interrupt storm it has no way to end. With ack_reads, a read in
 * the region acknowledges too: a timer's handler that reads its status and writes it only when
 * it reads a pending bit (the value model may answer none) still lowers the line.
 */
void rehosting_acknowledge_tick(RehostingTick *tick)
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
    /* proto3 JSON leaves out a false bool. */
    if (qdict_haskey(desc, "ack_reads") &&
        !qobject_to(QBool, qdict_get(desc, "ack_reads"))) {
        rehosting_config_fail(config, "tick.ack_reads must be true or false");
    }
    tick->ack_reads = qdict_haskey(desc, "ack_reads") &&
        qbool_get_bool(qobject_to(QBool, qdict_get(desc, "ack_reads")));
    /* QEMU_CLOCK_VIRTUAL follows the instruction count under icount. */
    tick->timer = timer_new_ns(QEMU_CLOCK_VIRTUAL, tick_fire, tick);
    tick->deadline = qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL) + tick->period_ns;
    tick->first_deadline = tick->deadline;
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
void rehosting_end_run_if_idle(void *opaque)
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
    rehosting_write_event_frame(config, &event);
    /*
     * Stop the CPU here, before any timer after this one (a tick due at the same time) can
     * wake it: the shutdown request alone lets it run on until the main loop gets to it.
     */
    vm_stop(RUN_STATE_SHUTDOWN);
    qemu_system_shutdown_request(SHUTDOWN_CAUSE_GUEST_SHUTDOWN);
}

