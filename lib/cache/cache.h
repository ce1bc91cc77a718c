/* cache.h - the per-layer cache of a context: window ring, compressed entries, indexer keys and
 * compressor state, in backend memory (host for CPU, device for CUDA). Entries live in pages of
 * HCI_PAGE_ENTRIES entries (format.h) that are allocated as the sequence grows. */
#ifndef HCI_CACHE_H
#define HCI_CACHE_H
#include <stdint.h>
#include "format.h"

struct hci_backend;

/* A growable list of pages. `pages` is the host-side table of page addresses (backend
 * memory); backends that need the table in device memory keep `dev_table` in sync. */
typedef struct hci_page_list {
    void **pages;
    int n_pages, cap;
    void *dev_table;       /* backend copy of pages[] (CUDA), or NULL */
    int dev_cap;
    size_t page_bytes;
} hci_page_list;

/* Compressor state rows, fp32: kv and score (ape already added), [coff*m][coff*dc] each.
 * Ratio 4 (overlap): rows [0,4) hold the previous complete block, rows [4,8) the current one
 * (row 4 + t%4); ratio 128: row t%128 of the current block. Unused rows are (0, -inf). */
typedef struct hci_comp_cache {
    int ratio, coff, dc;
    int rotate;            /* indexer keys: Hadamard + FP4; main: FP8 nope, bf16 rope */
    hci_entry_layout layout;
    float *state_kv, *state_score;
    hci_page_list entries;
    int64_t n_entries;
} hci_comp_cache;

typedef struct hci_layer_cache {
    int layer;
    int ratio;
    int window;
    hci_entry_layout win_layout;
    hci_page_list ring;    /* ceil(window/64) pages, allocated at creation; slot = pos % window */
    hci_comp_cache comp;   /* ratio > 0 */
    hci_comp_cache idx;    /* ratio == 4 */
} hci_layer_cache;

static inline size_t hci_comp_state_floats(const hci_comp_cache *c)
{
    return (size_t)c->coff * c->ratio * (size_t)c->coff * c->dc;
}

/* Entry address helpers (host view of the page table). */
static inline void *hci_pages_page(const hci_page_list *l, int64_t entry)
{
    return l->pages[entry / HCI_PAGE_ENTRIES];
}

#endif
