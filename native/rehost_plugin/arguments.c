/*
 * The -plugin arguments (KEY=VALUE, described in rehost.c's head comment), parsed into the
 * plugin's state at install. One line on stderr for each malformed one, then QEMU refuses the
 * plugin. Nothing here runs once the guest does.
 */

#include "rehost.h"

static bool parse_address(const char *text, uint64_t *address)
{
    char *end;

    *address = g_ascii_strtoull(text, &end, 0);
    return end != text && *end == '\0';
}

/* "NAME@ADDRESS", or only "ADDRESS" when the kind names the hook. */
static bool parse_hook(const char *key, const char *value, HookKind kind)
{
    const char *at = strrchr(value, '@');
    Hook hook = { .kind = kind };

    if (kind == HOOK_MILESTONE || kind == HOOK_HALT) {
        if (!at || at == value || !parse_address(at + 1, &hook.vaddr)) {
            fprintf(stderr, "rehost: %s=%s is not NAME@ADDRESS\n", key, value);
            return false;
        }
        hook.name = g_strndup(value, at - value);
    } else {
        if (!parse_address(value, &hook.vaddr)) {
            fprintf(stderr, "rehost: %s=%s is not an ADDRESS\n", key, value);
            return false;
        }
        hook.name = g_strdup(key);
    }
    g_array_append_val(state.hooks, hook);
    return true;
}

static bool parse_positive(const char *key, const char *value, uint64_t *number)
{
    if (!parse_address(value, number) || *number == 0) {
        fprintf(stderr, "rehost: %s=%s is not a positive integer\n", key, value);
        return false;
    }
    return true;
}

static bool parse_switch(const char *key, const char *value, bool *on)
{
    if (!qemu_plugin_bool_parse(key, value, on)) {
        fprintf(stderr, "rehost: %s=%s is not on or off\n", key, value);
        return false;
    }
    return true;
}

/* "ADDRESS:VALUE"; VALUE may be negative ("-19" is -ENODEV). */
static bool parse_nop(const char *value)
{
    g_auto(GStrv) parts = g_strsplit(value, ":", 2);
    Nop nop;
    uint64_t returned;

    if (!parts[0] || !parts[1] || !parse_address(parts[0], &nop.vaddr) ||
        !parse_address(parts[1], &returned)) {
        fprintf(stderr, "rehost: nop=%s is not ADDRESS:VALUE\n", value);
        return false;
    }
    nop.value = returned;
    g_array_append_val(state.nops, nop);
    return true;
}

static bool parse_argument(const char *key, const char *value)
{
    uint64_t number;

    if (g_str_equal(key, "budget")) {
        return parse_positive(key, value, &state.budget);
    }
    if (g_str_equal(key, "hot_loops")) {
        return parse_positive(key, value, &state.hot_loop_iterations);
    }
    if (g_str_equal(key, "events_fd")) {
        if (!parse_address(value, &number) || number > INT_MAX) {
            fprintf(stderr, "rehost: events_fd=%s is not a file descriptor\n",
                    value);
            return false;
        }
        state.events_fd = number;
        return true;
    }
    if (g_str_equal(key, "nop")) {
        return parse_nop(value);
    }
    if (g_str_equal(key, "pause_at")) {
        return parse_positive(key, value, &state.pause_at);
    }
    if (g_str_equal(key, "state_out")) {
        state.state_out = g_strdup(value);
        return true;
    }
    if (g_str_equal(key, "state_in")) {
        gchar *data;
        gsize length;

        if (!g_file_get_contents(value, &data, &length, NULL)) {
            fprintf(stderr, "rehost: state_in=%s cannot be read\n", value);
            return false;
        }
        state.restored = g_byte_array_new_take((guint8 *)data, length);
        return true;
    }
    if (g_str_equal(key, "log")) {
        if (!parse_address(value, &state.log_function) || !state.log_function) {
            fprintf(stderr, "rehost: log=%s is not an ADDRESS\n", value);
            return false;
        }
        return true;
    }
    if (g_str_equal(key, "thread_size")) {
        if (!parse_positive(key, value, &state.thread_size) ||
            (state.thread_size & (state.thread_size - 1))) {
            fprintf(stderr, "rehost: thread_size=%s is not a power of two\n", value);
            return false;
        }
        return true;
    }
    if (g_str_equal(key, "callstack")) {
        return parse_switch(key, value, &state.callstack);
    }
    if (g_str_equal(key, "past_user")) {
        return parse_switch(key, value, &state.past_user);
    }
    if (g_str_equal(key, "coverage")) {
        return parse_switch(key, value, &state.coverage);
    }
    if (g_str_equal(key, "user_below")) {
        if (!parse_address(value, &state.user_below)) {
            fprintf(stderr, "rehost: user_below=%s is not an ADDRESS\n", value);
            return false;
        }
        return true;
    }
    if (g_str_equal(key, "hook")) {
        return parse_hook(key, value, HOOK_MILESTONE);
    }
    if (g_str_equal(key, "initcalls")) {
        return parse_hook(key, value, HOOK_INITCALL);
    }
    if (g_str_equal(key, "panic")) {
        return parse_hook(key, value, HOOK_PANIC);
    }
    if (g_str_equal(key, "halt")) {
        return parse_hook(key, value, HOOK_HALT);
    }
    if (g_str_equal(key, "nops_again")) {
        return parse_hook(key, value, HOOK_NOPS_AGAIN);
    }
    fprintf(stderr, "rehost: unknown argument %s (budget, hook, initcalls, "
            "panic, halt, user_below, callstack, coverage, hot_loops, nop, "
            "nops_again, log, events_fd, pause_at, state_out, "
            "state_in, thread_size, past_user)\n", key);
    return false;
}

bool parse_arguments(int argc, char **argv)
{
    int i;

    for (i = 0; i < argc; i++) {
        g_auto(GStrv) pair = g_strsplit(argv[i], "=", 2);

        if (!pair[0] || !pair[1]) {
            fprintf(stderr, "rehost: argument %s is not KEY=VALUE\n", argv[i]);
            return false;
        }
        if (!parse_argument(pair[0], pair[1])) {
            return false;
        }
    }
    return true;
}

