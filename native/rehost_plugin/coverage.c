/*
 * Coverage: unique instruction addresses, set at translation in bitmaps of
 * COVERAGE_REGION_SIZE addresses (retranslation never counts twice), and the direct call targets
 * entered, counted at the end. Indirect targets are counted by callstack.c at the call. Nothing
 * here runs at execution time.
 */

#include "rehost.h"

static bool is_covered(uint64_t vaddr)
{
    const uint8_t *bits = g_hash_table_lookup(state.instructions,
                                              GSIZE_TO_POINTER(vaddr >> COVERAGE_REGION_BITS));
    uint64_t offset = vaddr % COVERAGE_REGION_SIZE;

    return bits && (bits[offset / 8] & (1 << (offset % 8)));
}

/*
 * A direct call's target counts as entered when its first instruction is covered. (Counting it
 * when its block is translated after the call's would depend on the translation cache.)
 */
void add_entered_direct_targets(void)
{
    GHashTableIter iter;
    gpointer target;

    g_hash_table_iter_init(&iter, state.call_targets);
    while (g_hash_table_iter_next(&iter, &target, NULL)) {
        if (is_covered(GPOINTER_TO_SIZE(target))) {
            g_hash_table_add(state.functions, target);
        }
    }
}

/* Adds the block's instruction addresses to coverage's set; a block spans one or two regions. */
void cover_instructions(struct qemu_plugin_tb *tb, size_t count)
{
    uint64_t region = 0;
    uint8_t *bits = NULL;
    size_t i;

    for (i = 0; i < count; i++) {
        uint64_t vaddr = qemu_plugin_insn_vaddr(qemu_plugin_tb_get_insn(tb, i));
        uint64_t offset = vaddr % COVERAGE_REGION_SIZE;
        uint8_t mask = 1 << (offset % 8);

        if (!bits || vaddr >> COVERAGE_REGION_BITS != region) {
            region = vaddr >> COVERAGE_REGION_BITS;
            bits = g_hash_table_lookup(state.instructions,
                                       GSIZE_TO_POINTER(region));
            if (!bits) {
                bits = g_malloc0(COVERAGE_REGION_SIZE / 8);
                g_hash_table_insert(state.instructions,
                                    GSIZE_TO_POINTER(region), bits);
            }
        }
        if (!(bits[offset / 8] & mask)) {
            bits[offset / 8] |= mask;
            state.instructions_covered++;
        }
    }
}

