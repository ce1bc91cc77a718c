/* cache.c - the layer caches of a context from creation to free: empty sets (new or as a
 * shadow to fill and commit), clones that share entry pages, clearing, sizes, the engine's
 * preflight (pages grown and unshared) and the snapshot that rolls one layer back. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "cache.h"
#include "hybridctx.h"
#include "../backend/backend.h"
#include "../model/config.h"

static size_t state_bytes(const hci_comp_cache *cc) { return hci_comp_state_floats(cc) * sizeof(float); }

static int ring_pages(const hci_layer_cache *lc) { return (lc->window + HCI_PAGE_ENTRIES - 1) / HCI_PAGE_ENTRIES; }

/* (0, -inf) in every row: the state of a compressor that has seen no token. */
static int init_state(hci_backend *be, hci_comp_cache *cc)
{
    size_t nf = hci_comp_state_floats(cc);
    float *host = malloc(nf * sizeof(float));
    if (!host) return HC_ERR_OUT_OF_MEMORY;
    for (size_t i = 0; i < nf; i++) host[i] = -INFINITY;
    int st = be->ops->upload(be, cc->state_score, host, nf * sizeof(float));
    memset(host, 0, nf * sizeof(float));
    if (!st) st = be->ops->upload(be, cc->state_kv, host, nf * sizeof(float));
    free(host);
    return st;
}

/* ---- geometry: everything of a layer cache but its buffers ---- */

static void set_comp(hci_comp_cache *cc, int ratio, int dc, int rotate, hci_entry_layout layout)
{
    cc->ratio = ratio;
    cc->coff = hci_cfg_coff(ratio);
    cc->dc = dc;
    cc->rotate = rotate;
    cc->layout = layout;
    cc->entries.page_bytes = hci_page_bytes(&layout);
}

static void set_layer(hci_layer_cache *lc, const hci_config *cfg, int fmt, int i)
{
    lc->layer = i;
    lc->ratio = cfg->ratios[i];
    lc->window = cfg->window;
    lc->win_layout = hci_layout_main(fmt, cfg->head_dim, cfg->rope_dim);
    lc->ring.page_bytes = hci_page_bytes(&lc->win_layout);
    lc->win_log.page_bytes = lc->ring.page_bytes;
    if (lc->ratio) set_comp(&lc->comp, lc->ratio, cfg->head_dim, 0, lc->win_layout);
    if (lc->ratio == 4)
        set_comp(&lc->idx, 4, cfg->index_head_dim, 1, hci_layout_index(fmt, cfg->index_head_dim));
}

static void empty_list(hci_page_list *l)
{
    size_t pb = l->page_bytes;
    memset(l, 0, sizeof *l);
    l->page_bytes = pb;
}

static void copy_geometry(hci_layer_cache *dst, const hci_layer_cache *src)
{
    *dst = *src;
    empty_list(&dst->ring);
    empty_list(&dst->win_log); /* the history's sizes are geometry, its buffers are not */
    hci_comp_cache *ccs[2] = {&dst->comp, &dst->idx};
    for (int k = 0; k < 2; k++) {
        ccs[k]->state_kv = ccs[k]->state_score = NULL;
        empty_list(&ccs[k]->entries);
        ccs[k]->n_entries = 0;
        ccs[k]->log.kv = ccs[k]->log.score = NULL;
        ccs[k]->log.from = 0;
    }
}

/* ---- buffers ---- */

/* Ring pages (zeroed), state buffers and history of a layer whose geometry is set. */
static int alloc_layer(hci_backend *be, hci_layer_cache *lc)
{
    int st = hci_pages_grow(be, &lc->ring, ring_pages(lc));
    for (int k = 0; !st && k < HCI_CACHE_COMPS; k++) {
        hci_comp_cache *cc = hci_cache_comp(lc, k);
        if (!cc) continue;
        st = be->ops->alloc(be, state_bytes(cc), (void **)&cc->state_kv);
        if (!st) st = be->ops->alloc(be, state_bytes(cc), (void **)&cc->state_score);
    }
    if (!st) st = hci_hist_alloc_layer(be, lc);
    return st;
}

static void free_layer(hci_backend *be, hci_layer_cache *lc)
{
    hci_hist_free_layer(be, lc);
    hci_pages_drop(be, &lc->ring, 0);
    for (int k = 0; k < HCI_CACHE_COMPS; k++) {
        hci_comp_cache *cc = hci_cache_comp(lc, k);
        if (!cc) continue;
        hci_pages_drop(be, &cc->entries, 0);
        if (cc->state_kv) be->ops->free(be, cc->state_kv);
        if (cc->state_score) be->ops->free(be, cc->state_score);
        cc->state_kv = cc->state_score = NULL;
    }
}

void hci_cache_free(hci_backend *be, hci_layer_cache *lcs, int n_layers)
{
    if (!lcs) return;
    for (int i = 0; i < n_layers; i++) free_layer(be, &lcs[i]);
    free(lcs);
}

/* Buffers of an empty cache for a set whose geometry is set; the set is freed on failure. */
static int fill_empty(hci_backend *be, hci_layer_cache *lcs, int n_layers, hci_layer_cache **out)
{
    int st = HC_OK;
    for (int i = 0; i < n_layers && !st; i++) {
        st = alloc_layer(be, &lcs[i]);
        for (int k = 0; k < HCI_CACHE_COMPS && !st; k++)
            if (hci_cache_comp(&lcs[i], k)) st = init_state(be, hci_cache_comp(&lcs[i], k));
    }
    if (st) {
        hci_cache_free(be, lcs, n_layers);
        return st;
    }
    *out = lcs;
    return HC_OK;
}

int hci_cache_create(hci_backend *be, const hci_config *cfg, int fmt, hci_layer_cache **out)
{
    *out = NULL;
    hci_layer_cache *lcs = calloc((size_t)cfg->n_layers, sizeof *lcs);
    if (!lcs) return HC_ERR_OUT_OF_MEMORY;
    for (int i = 0; i < cfg->n_layers; i++) set_layer(&lcs[i], cfg, fmt, i);
    return fill_empty(be, lcs, cfg->n_layers, out);
}

int hci_cache_shadow(hci_backend *be, const hci_layer_cache *like, int n_layers, hci_layer_cache **out)
{
    *out = NULL;
    hci_layer_cache *lcs = calloc((size_t)n_layers, sizeof *lcs);
    if (!lcs) return HC_ERR_OUT_OF_MEMORY;
    for (int i = 0; i < n_layers; i++) copy_geometry(&lcs[i], &like[i]);
    return fill_empty(be, lcs, n_layers, out);
}

void hci_cache_commit(hci_backend *be, hci_layer_cache **lcs, hci_layer_cache *shadow, int n_layers)
{
    hci_layer_cache *old = *lcs;
    *lcs = shadow;
    hci_cache_free(be, old, n_layers);
}

int hci_cache_clear(hci_backend *be, hci_layer_cache *lcs, int n_layers)
{
    for (int i = 0; i < n_layers; i++)
        for (int k = 0; k < HCI_CACHE_COMPS; k++) {
            hci_comp_cache *cc = hci_cache_comp(&lcs[i], k);
            if (!cc) continue;
            hci_pages_drop(be, &cc->entries, 0);
            cc->n_entries = 0;
            int st = init_state(be, cc);
            if (st) return st;
        }
    return HC_OK;
}

static void add_pages(const hci_page_list *l, hci_cache_usage *u)
{
    for (int i = 0; i < l->n_pages; i++) {
        if (hci_page_refcount(l, i) > 1) u->shared += l->page_bytes;
        else u->own += l->page_bytes;
    }
}

hci_cache_usage hci_cache_bytes(const hci_layer_cache *lcs, int n_layers)
{
    hci_cache_usage u = {0, 0};
    for (int i = 0; i < n_layers; i++) {
        add_pages(&lcs[i].ring, &u);
        for (int k = 0; k < HCI_CACHE_COMPS; k++) {
            const hci_comp_cache *cc = hci_cache_comp_const(&lcs[i], k);
            if (!cc) continue;
            add_pages(&cc->entries, &u);
            u.own += 2 * (uint64_t)state_bytes(cc);
        }
    }
    return u;
}

size_t hci_cache_max_state_floats(const hci_layer_cache *lcs, int n_layers)
{
    size_t nf = 1;
    for (int i = 0; i < n_layers; i++)
        for (int k = 0; k < HCI_CACHE_COMPS; k++) {
            const hci_comp_cache *cc = hci_cache_comp_const(&lcs[i], k);
            if (cc && hci_comp_state_floats(cc) > nf) nf = hci_comp_state_floats(cc);
        }
    return nf;
}

/* ---- clones ---- */

static int clone_layer(hci_backend *be, const hci_layer_cache *src, hci_layer_cache *dst)
{
    copy_geometry(dst, src);
    int st = alloc_layer(be, dst);
    for (int p = 0; !st && p < dst->ring.n_pages; p++)
        st = be->ops->copy(be, dst->ring.pages[p], src->ring.pages[p], dst->ring.page_bytes);
    for (int k = 0; !st && k < HCI_CACHE_COMPS; k++) {
        const hci_comp_cache *sc = hci_cache_comp_const(src, k);
        hci_comp_cache *dc = hci_cache_comp(dst, k);
        if (!dc) continue;
        st = be->ops->copy(be, dc->state_kv, sc->state_kv, state_bytes(sc));
        if (!st) st = be->ops->copy(be, dc->state_score, sc->state_score, state_bytes(sc));
        if (!st) st = hci_pages_share(be, &sc->entries, &dc->entries);
        if (!st) dc->n_entries = sc->n_entries;
    }
    if (!st) st = hci_hist_copy_layer(be, dst, src);
    return st;
}

int hci_cache_clone(hci_backend *be, const hci_layer_cache *src, int n_layers, hci_layer_cache **out)
{
    *out = NULL;
    hci_layer_cache *lcs = calloc((size_t)n_layers, sizeof *lcs);
    if (!lcs) return HC_ERR_OUT_OF_MEMORY;
    int st = HC_OK;
    for (int i = 0; i < n_layers && !st; i++) st = clone_layer(be, &src[i], &lcs[i]);
    if (st) {
        hci_cache_free(be, lcs, n_layers);
        return st;
    }
    *out = lcs;
    return HC_OK;
}

/* ---- the engine's preflight and rollback ---- */

int hci_cache_prepare(hci_backend *be, hci_layer_cache *lc, int64_t end_pos)
{
    for (int k = 0; k < HCI_CACHE_COMPS; k++) {
        hci_comp_cache *cc = hci_cache_comp(lc, k);
        if (!cc) continue;
        int64_t end = end_pos / cc->ratio, pages = (end + HCI_PAGE_ENTRIES - 1) / HCI_PAGE_ENTRIES;
        if (pages > INT_MAX) return HC_ERR_LIMIT;
        /* the call writes entries [n_entries, end): from the page of n_entries on, if any */
        int64_t first = end > cc->n_entries ? cc->n_entries / HCI_PAGE_ENTRIES : pages;
        int st = hci_pages_prepare(be, &cc->entries, (int)pages, (int)first);
        if (st) return st;
    }
    return HC_OK;
}

void hci_cache_snap_free(hci_backend *be, hci_cache_snap *s)
{
    if (!s->borrowed) {
        if (s->ring) be->ops->free(be, s->ring);
        for (int k = 0; k < HCI_CACHE_COMPS; k++)
            for (int h = 0; h < 2; h++)
                if (s->state[k][h]) be->ops->free(be, s->state[k][h]);
    }
    /* the history parts are the snapshot's own, borrowed storage or not */
    if (s->hist_win) be->ops->free(be, s->hist_win);
    for (int k = 0; k < HCI_CACHE_COMPS; k++)
        for (int h = 0; h < 2; h++)
            if (s->hist_rows[k][h]) be->ops->free(be, s->hist_rows[k][h]);
    memset(s, 0, sizeof *s);
}

/* Storage of a copying snapshot: the ring, then each compressor's kv and score states, each
 * part 256-byte aligned. */
static size_t snap_align(size_t n) { return (n + 255) & ~(size_t)255; }

static size_t snap_layer_bytes(const hci_layer_cache *lc)
{
    size_t n = snap_align(lc->ring.page_bytes * (size_t)lc->ring.n_pages);
    for (int k = 0; k < HCI_CACHE_COMPS; k++) {
        const hci_comp_cache *cc = hci_cache_comp_const(lc, k);
        if (cc) n += 2 * snap_align(state_bytes(cc));
    }
    return n;
}

size_t hci_cache_snap_bytes(const hci_layer_cache *lcs, int n_layers)
{
    size_t most = 256;
    for (int i = 0; i < n_layers; i++)
        if (snap_layer_bytes(&lcs[i]) > most) most = snap_layer_bytes(&lcs[i]);
    return most;
}

int hci_cache_snap_take_in(hci_backend *be, const hci_layer_cache *lc, void *store, hci_cache_snap *s)
{
    int st = hci_cache_snap_take(be, lc, 0, s);
    if (st) return st;
    s->borrowed = 1;
    char *p = store;
    s->ring_bytes = lc->ring.page_bytes;
    s->ring = p;
    for (int q = 0; !st && q < lc->ring.n_pages; q++)
        st = be->ops->copy(be, p + (size_t)q * s->ring_bytes, lc->ring.pages[q], s->ring_bytes);
    p += snap_align(s->ring_bytes * (size_t)lc->ring.n_pages);
    for (int k = 0; !st && k < HCI_CACHE_COMPS; k++) {
        const hci_comp_cache *cc = hci_cache_comp_const(lc, k);
        if (!cc) continue;
        const float *src[2] = {cc->state_kv, cc->state_score};
        s->state_bytes[k] = state_bytes(cc);
        for (int h = 0; !st && h < 2; h++) {
            s->state[k][h] = p;
            p += snap_align(s->state_bytes[k]);
            st = be->ops->copy(be, s->state[k][h], src[h], s->state_bytes[k]);
        }
    }
    if (st) hci_cache_snap_free(be, s);
    return st;
}

int hci_cache_snap_take(hci_backend *be, const hci_layer_cache *lc, int copy, hci_cache_snap *s)
{
    memset(s, 0, sizeof *s);
    for (int k = 0; k < HCI_CACHE_COMPS; k++) {
        const hci_comp_cache *cc = hci_cache_comp_const(lc, k);
        if (!cc) continue;
        s->n_entries[k] = cc->n_entries;
        s->n_pages[k] = cc->entries.n_pages;
    }
    if (!copy) return HC_OK;
    s->ring_bytes = lc->ring.page_bytes;
    int st = be->ops->alloc(be, s->ring_bytes * (size_t)lc->ring.n_pages, &s->ring);
    for (int p = 0; !st && p < lc->ring.n_pages; p++)
        st = be->ops->copy(be, (char *)s->ring + (size_t)p * s->ring_bytes, lc->ring.pages[p], s->ring_bytes);
    for (int k = 0; !st && k < HCI_CACHE_COMPS; k++) {
        const hci_comp_cache *cc = hci_cache_comp_const(lc, k);
        if (!cc) continue;
        const float *src[2] = {cc->state_kv, cc->state_score};
        s->state_bytes[k] = state_bytes(cc);
        for (int h = 0; !st && h < 2; h++) {
            st = be->ops->alloc(be, s->state_bytes[k], &s->state[k][h]);
            if (!st) st = be->ops->copy(be, s->state[k][h], src[h], s->state_bytes[k]);
        }
    }
    if (st) hci_cache_snap_free(be, s);
    return st;
}

int hci_cache_snap_restore(hci_backend *be, hci_layer_cache *lc, const hci_cache_snap *s)
{
    int first = HC_OK;
    for (int k = 0; k < HCI_CACHE_COMPS; k++) {
        hci_comp_cache *cc = hci_cache_comp(lc, k);
        if (!cc) continue;
        cc->n_entries = s->n_entries[k];
        hci_pages_drop(be, &cc->entries, s->n_pages[k]);
        float *dst[2] = {cc->state_kv, cc->state_score};
        for (int h = 0; h < 2; h++)
            if (s->state[k][h]) {
                int st = be->ops->copy(be, dst[h], s->state[k][h], s->state_bytes[k]);
                if (!first) first = st;
            }
    }
    for (int p = 0; s->ring && p < lc->ring.n_pages; p++) {
        int st = be->ops->copy(be, lc->ring.pages[p], (char *)s->ring + (size_t)p * s->ring_bytes, s->ring_bytes);
        if (!first) first = st;
    }
    int st = hci_hist_snap_restore(be, lc, s);
    if (!first) first = st;
    return first;
}
