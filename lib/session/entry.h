/* entry.h - the canonical entry encoding of sessions (docs/session-format.md §4.2): blocks of
 * k <= 64 rows in the fp8 cache layout, their canonical-form check, and conversion to and from
 * a context's cache pages of either format. */
#ifndef HCS_ENTRY_H
#define HCS_ENTRY_H
#include <stdint.h>
#include "../cache/format.h"

/* A block of k rows: data parts of the k rows, then their scale parts. */
static inline uint8_t *hcs_blk_data(const hci_entry_layout *c, uint8_t *blk, int k, int row)
{
    (void)k;
    return blk + (size_t)row * (size_t)c->data_bytes;
}
static inline uint8_t *hcs_blk_scales(const hci_entry_layout *c, uint8_t *blk, int k, int row)
{
    return blk + (size_t)k * (size_t)c->data_bytes + (size_t)row * (size_t)c->scale_bytes;
}

/* 1 when the entry (data d, scales s, canonical layout c) is what packing its own values gives. */
int hcs_entry_canonical(const hci_entry_layout *c, const uint8_t *d, const uint8_t *s);
/* First non-canonical row of a block of k rows, or -1. */
int hcs_block_check(const hci_entry_layout *c, const uint8_t *blk, int k);

/* Entry `slot` of a context page (layout x) -> row `row` of a canonical block of k rows.
 * Returns 0, or -1 when a bf16 value is not on the grid (the cache would be inconsistent). */
int hcs_entry_to_canon(const hci_entry_layout *x, const void *page, int slot, const hci_entry_layout *c,
                       uint8_t *blk, int k, int row);
/* Row `row` of a canonical block (canonical, checked) -> entry `slot` of a context page. */
void hcs_entry_from_canon(const hci_entry_layout *c, const uint8_t *blk, int k, int row,
                          const hci_entry_layout *x, void *page, int slot);

/* Whole blocks: the first k entries of a context page <-> a canonical block of k rows. A page
 * made from a block has zero bytes in its unused slots. */
int hcs_block_from_page(const hci_entry_layout *x, const void *page, const hci_entry_layout *c, int k, uint8_t *blk);
void hcs_page_from_block(const hci_entry_layout *c, const uint8_t *blk, int k, const hci_entry_layout *x, void *page);

#endif
