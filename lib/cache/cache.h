/* cache.h - the per-layer cache of a context: window ring, compressed entries, indexer keys and
 * compressor state, in backend memory (host for CPU, device for CUDA). Entries live in pages of
 * HCI_PAGE_ENTRIES entries (format.h) that are allocated as the sequence grows.
 *
 * lib/cache owns a cache's whole life: creation, clearing, size, clones that share entry pages,
 * the engine's snapshot of one layer for all-or-nothing calls, and the shadow set that a
 * session load fills and then commits. Backends provide single pages (page_alloc, page_free)
 * and, where kernels need it, a device mirror of a page table (pages_sync); lists and reference
 * counts are kept here (pages.c). */
#ifndef HCI_CACHE_H
#define HCI_CACHE_H
#include <stdint.h>
#include "format.h"

struct hci_backend;
struct hci_config;
/* The reference count of one page, shared by every list that holds the page (pages.c; an atomic
 * count, so it stays opaque to the C++ of the CUDA backend). */
struct hci_page_ref;

/* A growable list of pages. `pages` is the host-side table of page addresses (backend
 * memory); backends that need the table in device memory keep `dev_table` in sync. */
typedef struct hci_page_list {
    void **pages;
    struct hci_page_ref **refs; /* refs[i] counts the lists holding pages[i] */
    int n_pages, cap;
    void *dev_table;       /* backend copy of pages[] (CUDA), or NULL; released with ops->free */
    int dev_cap;
    size_t page_bytes;
} hci_page_list;

/* Rollback history of a compressor (history.c): the state rows of the last `cap` positions, row
 * of position t at slot t % cap, kv and score (ape added) exactly as the state holds them. The
 * compress op writes the rows of its positions >= `from` (the engine sets it before each layer
 * call); cap == 0: no history, nothing is written. */
typedef struct hci_row_log {
    float *kv, *score;     /* [cap][coff*dc] each, backend memory; NULL when cap == 0 */
    int cap;
    int64_t from;
} hci_row_log;

/* Compressor state rows, fp32: kv and score (ape already added), [coff*m][coff*dc] each.
 * Ratio 4 (overlap): rows [0,4) hold the previous complete block, rows [4,8) the current one
 * (row 4 + t%4); ratio 128: row t%128 of the current block. Unused rows are (0, -inf). The
 * state at length n is a function of the rows of positions [n/m*m - (coff-1)*m, n) alone. */
typedef struct hci_comp_cache {
    int ratio, coff, dc;
    int rotate;            /* indexer keys: Hadamard + FP4; main: FP8 nope, bf16 rope */
    hci_entry_layout layout;
    float *state_kv, *state_score;
    hci_page_list entries;
    int64_t n_entries;
    hci_row_log log;       /* rollback history (cap part of the geometry, buffers not) */
} hci_comp_cache;

typedef struct hci_layer_cache {
    int layer;
    int ratio;
    int window;
    hci_entry_layout win_layout;
    hci_page_list ring;    /* ceil(window/64) pages, allocated at creation; slot = pos % window */
    hci_comp_cache comp;   /* ratio > 0 */
    hci_comp_cache idx;    /* ratio == 4 */
    /* rollback history (history.c): the window entries that the ring overwrote, position p at
     * slot p % win_log_slots (a multiple of 64, 0 = no history), in the ring's layout */
    hci_page_list win_log;
    int win_log_slots;
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

/* ---- the compressors of a layer: k = 0 main (ratio > 0), k = 1 indexer (ratio 4) ---- */
#define HCI_CACHE_COMPS 2
static inline hci_comp_cache *hci_cache_comp(hci_layer_cache *lc, int k)
{
    if (k == 0) return lc->ratio ? &lc->comp : NULL;
    return k == 1 && lc->ratio == 4 ? &lc->idx : NULL;
}
static inline const hci_comp_cache *hci_cache_comp_const(const hci_layer_cache *lc, int k)
{
    if (k == 0) return lc->ratio ? &lc->comp : NULL;
    return k == 1 && lc->ratio == 4 ? &lc->idx : NULL;
}

/* ---- page lists (pages.c) ---- */
/* Before a writer changes pages [first_write, n_pages) of l: make l hold at least n_pages pages
 * (new ones zero-filled), replace every page of that range that another list shares by a
 * private copy (copy-on-write), and bring the backend's mirror up to date. On failure l holds
 * what it held before. */
int hci_pages_prepare(struct hci_backend *be, hci_page_list *l, int n_pages, int first_write);
static inline int hci_pages_grow(struct hci_backend *be, hci_page_list *l, int n_pages)
{
    return hci_pages_prepare(be, l, n_pages, n_pages);
}
/* Grow l to n_pages (> its count) with new pages in one block of host memory (the backend's
 * pages_alloc_host: contiguous, zero-filled, not yet resident); *base receives the first new
 * page. HC_ERR_INTERNAL when the backend's pages are not host memory. */
int hci_pages_grow_host(struct hci_backend *be, hci_page_list *l, int n_pages, uint8_t **base);
/* The same with the backend's pages_alloc_block (pages in one block of backend memory, *base its
 * backend address). HC_ERR_INTERNAL when the backend has no such op. */
int hci_pages_grow_block(struct hci_backend *be, hci_page_list *l, int n_pages, uint8_t **base);
/* Release l's references to pages beyond the first n_pages (a page is freed with its last
 * reference); n_pages = 0 releases the tables too. */
void hci_pages_drop(struct hci_backend *be, hci_page_list *l, int n_pages);
/* A second list holding the same pages (counts incremented), with its own tables. */
int hci_pages_share(struct hci_backend *be, const hci_page_list *src, hci_page_list *dst);
/* How many lists hold page i. */
int hci_page_refcount(const hci_page_list *l, int i);

/* ---- a context's caches: arrays of n_layers layer caches (cache.c) ---- */
/* Empty caches for configuration cfg, entries in format fmt (HCI_FMT_*): ring pages zeroed,
 * states (0, -inf). On failure *out is NULL and nothing is left allocated. */
int hci_cache_create(struct hci_backend *be, const struct hci_config *cfg, int fmt, hci_layer_cache **out);
void hci_cache_free(struct hci_backend *be, hci_layer_cache *lcs, int n_layers);
/* Back to length 0: entry pages released, states (0, -inf); the ring is not read at length 0. */
int hci_cache_clear(struct hci_backend *be, hci_layer_cache *lcs, int n_layers);

/* Bytes held: pages that another set shares (reference count > 1) count as shared, everything
 * else (private pages, ring, states) as own. */
typedef struct hci_cache_usage {
    uint64_t own, shared;
} hci_cache_usage;
hci_cache_usage hci_cache_bytes(const hci_layer_cache *lcs, int n_layers);
/* Largest compressor state of the set, in floats (at least 1): the size of a host buffer that
 * holds any of them. */
size_t hci_cache_max_state_floats(const hci_layer_cache *lcs, int n_layers);

/* A new set with the same content, on backend be (of the same kind and device as src's): entry
 * pages are shared copy-on-write, ring, states and rollback history copied. The copies are
 * queued on be: src's backend must have finished its writes (CUDA: its stream synchronised),
 * and src must not write again before be has finished them (CUDA: be's stream synchronised). */
int hci_cache_clone(struct hci_backend *be, const hci_layer_cache *src, int n_layers, hci_layer_cache **out);

/* Preflight of a layer call that ends at position end_pos: every compressor's list covers its
 * entries up to end_pos and the pages the call writes (from entry n_entries on) are private. */
int hci_cache_prepare(struct hci_backend *be, hci_layer_cache *lc, int64_t end_pos);

/* ---- rollback of one layer for all-or-nothing calls ---- */
typedef struct hci_cache_snap {
    void *ring;
    void *state[HCI_CACHE_COMPS][2]; /* kv, score of each compressor */
    size_t ring_bytes, state_bytes[HCI_CACHE_COMPS];
    int64_t n_entries[HCI_CACHE_COMPS];
    int n_pages[HCI_CACHE_COMPS];
    /* the parts of the rollback history that the call overwrites (hci_hist_snap_take) */
    void *hist_win;                       /* the window log's pages */
    void *hist_rows[HCI_CACHE_COMPS][2];  /* rows of positions [hist_r0, hist_r1), kv and score */
    int64_t hist_r0[HCI_CACHE_COMPS], hist_r1[HCI_CACHE_COMPS];
    int borrowed;                    /* the copies live in caller storage (snap_take_in) */
} hci_cache_snap;
/* Record lc's entry counts and page counts; with `copy`, copies of its ring and states too (for
 * backends whose ops may fail after the preflight). */
int hci_cache_snap_take(struct hci_backend *be, const hci_layer_cache *lc, int copy, hci_cache_snap *s);
/* Bytes of storage that a copying snapshot of any layer of the set needs (hci_cache_snap_take_in):
 * its ring and states. The history parts (hci_hist_snap_take) are allocated apart. */
size_t hci_cache_snap_bytes(const hci_layer_cache *lcs, int n_layers);
/* hci_cache_snap_take with copies, into `store`: backend memory of at least
 * hci_cache_snap_bytes() bytes that the caller keeps (and may reuse) until the snapshot is
 * freed. Allocates nothing; on CUDA the copies are queued on be's stream. */
int hci_cache_snap_take_in(struct hci_backend *be, const hci_layer_cache *lc, void *store, hci_cache_snap *s);
/* Put lc back as recorded: pages grown since are dropped, ring, states and the history parts
 * recorded copied back. Returns the first failure of a copy (a device fault; CPU copies cannot
 * fail). */
int hci_cache_snap_restore(struct hci_backend *be, hci_layer_cache *lc, const hci_cache_snap *s);
void hci_cache_snap_free(struct hci_backend *be, hci_cache_snap *s);

/* ---- all-or-nothing replacement (session load) ---- */
/* An empty set shaped like `like` (as hci_cache_create makes it), for the caller to fill. */
int hci_cache_shadow(struct hci_backend *be, const hci_layer_cache *like, int n_layers, hci_layer_cache **out);
/* Swap the filled shadow in for *lcs by pointer moves that cannot fail, then free the old set. */
void hci_cache_commit(struct hci_backend *be, hci_layer_cache **lcs, hci_layer_cache *shadow, int n_layers);

/* ---- rollback history (history.c) ----
 * A context with max_rollback R keeps, per layer, what taking back its last R tokens needs:
 *  - the window entries that the ring overwrote: positions [lo - W, n - W) for the shortest
 *    length lo it can return to (a log of roundup(R, 64) slots, win_log);
 *  - each compressor's state rows of positions [lo/m*m - (coff-1)*m, n), from which the state
 *    at any length in [lo, n] is rebuilt (a row log of R + coff*m - 1 slots);
 *  - nothing for entries: the entries the discarded tokens completed are dropped, and the
 *    earlier ones are unchanged (copy-on-write never writes an entry twice).
 * Memory O(R) per layer; hci_hist_bytes() gives it. */

/* Give every layer a history for R tokens (R = 0: none), empty: the old one is released. On
 * failure the set has no history (and is otherwise unchanged). */
int hci_hist_alloc(struct hci_backend *be, hci_layer_cache *lcs, int n_layers, int64_t R);
/* The same, keeping what restoring to the lengths [lo, n] needs (lo >= n - R and lo >= n - the
 * old R, checked by the caller). On failure the set keeps its old history. */
int hci_hist_resize(struct hci_backend *be, hci_layer_cache *lcs, int n_layers, int64_t R, int64_t lo, int64_t n);
/* The buffers of one layer's history as its geometry sets them (win_log_slots, log.cap), zeroed;
 * their release; a copy of src's history into dst of the same geometry (cache.c's helpers). */
int hci_hist_alloc_layer(struct hci_backend *be, hci_layer_cache *lc);
void hci_hist_free_layer(struct hci_backend *be, hci_layer_cache *lc);
int hci_hist_copy_layer(struct hci_backend *be, hci_layer_cache *dst, const hci_layer_cache *src);
/* Bytes the history holds. */
uint64_t hci_hist_bytes(const hci_layer_cache *lcs, int n_layers);
/* The layer call of positions [pos0, end): tell the compressors what to log, and log the ring
 * entries that the call overwrites and the history keeps. */
int hci_hist_begin(struct hci_backend *be, hci_layer_cache *lc, int64_t pos0, int64_t end);
/* A piece [ps, ps + n) of that call, kv its window rows ([n][d] bf16, backend memory): log the
 * entries of the piece that the ring will not hold at the call's end but the history keeps. */
int hci_hist_piece(struct hci_backend *be, hci_layer_cache *lc, int64_t ps, int n, int64_t end, const uint16_t *kv,
                   int d);
/* For all-or-nothing calls: copy into s the parts of the history that the call [pos0, end)
 * overwrites (hci_cache_snap_restore puts them back, hci_cache_snap_free frees them). */
int hci_hist_snap_take(struct hci_backend *be, const hci_layer_cache *lc, int64_t pos0, int64_t end,
                       hci_cache_snap *s);
int hci_hist_snap_restore(struct hci_backend *be, hci_layer_cache *lc, const hci_cache_snap *s);
/* A history that starts at length n: the rows the states hold go into the row logs. */
int hci_hist_seed(struct hci_backend *be, hci_layer_cache *lcs, int n_layers, int64_t n);
/* Take the set from length n back to length to (n - R <= to <= n, and the history complete for
 * it: checked by the caller): ring slots restored, entries the discarded tokens completed
 * dropped, states rebuilt. host: hci_cache_max_state_floats(lcs) floats of scratch. Fails only
 * on a backend fault (CUDA); the set is then unusable. */
int hci_hist_truncate(struct hci_backend *be, hci_layer_cache *lcs, int n_layers, int64_t n, int64_t to, float *host);

#endif
