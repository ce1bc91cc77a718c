/* history.c - the rollback history of a context's caches (cache.h, "rollback history").
 *
 * A context with max_rollback R can go back from length n to any length in [lo, n], lo >= n - R
 * (the context keeps lo). Three things change when tokens are appended, and the history keeps
 * what each needs to go back:
 *
 *  - the window ring (W slots, position p at slot p % W) overwrites position p with p + W. The
 *    window log keeps the overwritten entries of positions [lo - W, n - W), position p at slot
 *    p % S, S = roundup(R, 64) >= n - lo: entries of positions before a layer call are copied
 *    from the ring before the call overwrites them (hci_hist_begin), entries of the call's own
 *    positions that the ring will not hold at its end are written from the piece's window rows
 *    by the backend's window_write into the log (hci_hist_piece).
 *  - a compressor's state at length k is a function of the state rows of positions
 *    [k/m*m - (coff-1)*m, k) alone (cpu_compress.c update_state: unused rows are (0, -inf)). The
 *    compress op writes each position's row into the row log, slot t % C, C = R + coff*m - 1, so
 *    the log holds the rows of [n - C, n), which covers every length down to n - R. A history
 *    that starts at length n (a new context, a load, a fork) is seeded with the rows the state
 *    holds (hci_hist_seed).
 *  - compressed entries and indexer keys are written once each and never changed: going back
 *    only lowers the entry count and releases the pages past it.
 *
 * Every ring is keyed by position, so taking tokens back and appending others needs no clean-up:
 * a discarded position's slot holds what an older position held only when that older position
 * is out of reach (hc_ctx keeps lo at the old limit when it truncates). */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "cache.h"
#include "hybridctx.h"
#include "../backend/backend.h"

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

static size_t row_floats(const hci_comp_cache *cc) { return (size_t)cc->coff * cc->dc; }

/* Slot 0 of the state: the position whose row it holds at length k (may be negative). */
static int64_t state_base(const hci_comp_cache *cc, int64_t k)
{
    return k / cc->ratio * cc->ratio - (int64_t)(cc->coff - 1) * cc->ratio;
}

/* The first position whose row rebuilding the state at length k needs. */
static int64_t rows_from(const hci_comp_cache *cc, int64_t k) { return max64(0, state_base(cc, k)); }

/* ---- copies between buffers keyed by position: slot = (p - origin) % cap ---- */

typedef struct rows_at {
    float *kv, *score;
    int64_t cap, origin;
} rows_at;

static rows_at log_rows(const hci_comp_cache *cc) { return (rows_at){cc->log.kv, cc->log.score, cc->log.cap, 0}; }
static rows_at state_rows(const hci_comp_cache *cc, int64_t k)
{
    return (rows_at){cc->state_kv, cc->state_score, INT64_MAX, state_base(cc, k)};
}

/* The rows of positions [p0, p1) from src to dst, in runs that wrap neither. */
static int copy_rows(hci_backend *be, rows_at dst, rows_at src, size_t w, int64_t p0, int64_t p1)
{
    for (int64_t p = p0; p < p1;) {
        int64_t ds = (p - dst.origin) % dst.cap, ss = (p - src.origin) % src.cap;
        int64_t k = min64(p1 - p, min64(dst.cap - ds, src.cap - ss));
        size_t bytes = (size_t)k * w * sizeof(float);
        int st = be->ops->copy(be, dst.kv + (size_t)ds * w, src.kv + (size_t)ss * w, bytes);
        if (!st) st = be->ops->copy(be, dst.score + (size_t)ds * w, src.score + (size_t)ss * w, bytes);
        if (st) return st;
        p += k;
    }
    return HC_OK;
}

/* The entries of positions [p0, p1) from the ring src (position p at slot p % scap) to the ring
 * dst, both pages of layout l: runs within one page of each, data and scale parts apart. */
static int copy_entries(hci_backend *be, const hci_entry_layout *l, hci_page_list *dst, int64_t dcap,
                        const hci_page_list *src, int64_t scap, int64_t p0, int64_t p1)
{
    for (int64_t p = p0; p < p1;) {
        int64_t ds = p % dcap, ss = p % scap;
        int di = (int)(ds % HCI_PAGE_ENTRIES), si = (int)(ss % HCI_PAGE_ENTRIES);
        int64_t k = min64(min64(p1 - p, min64(dcap - ds, scap - ss)),
                          min64(HCI_PAGE_ENTRIES - di, HCI_PAGE_ENTRIES - si));
        void *dp = dst->pages[ds / HCI_PAGE_ENTRIES], *sp = src->pages[ss / HCI_PAGE_ENTRIES];
        int st = be->ops->copy(be, hci_entry_data(l, dp, di), hci_entry_data(l, sp, si), (size_t)k * l->data_bytes);
        if (!st && l->scale_bytes)
            st = be->ops->copy(be, hci_entry_scales(l, dp, di), hci_entry_scales(l, sp, si), (size_t)k * l->scale_bytes);
        if (st) return st;
        p += k;
    }
    return HC_OK;
}

/* ---- buffers ---- */

static void set_capacity(hci_layer_cache *lc, int64_t R)
{
    lc->win_log_slots = R ? (int)((R + HCI_PAGE_ENTRIES - 1) / HCI_PAGE_ENTRIES * HCI_PAGE_ENTRIES) : 0;
    for (int k = 0; k < HCI_CACHE_COMPS; k++) {
        hci_comp_cache *cc = hci_cache_comp(lc, k);
        if (cc) cc->log.cap = R ? (int)(R + (int64_t)cc->coff * cc->ratio - 1) : 0;
    }
}

int hci_hist_alloc_layer(hci_backend *be, hci_layer_cache *lc)
{
    int st = lc->win_log_slots ? hci_pages_grow(be, &lc->win_log, lc->win_log_slots / HCI_PAGE_ENTRIES) : HC_OK;
    for (int k = 0; !st && k < HCI_CACHE_COMPS; k++) {
        hci_comp_cache *cc = hci_cache_comp(lc, k);
        if (!cc || !cc->log.cap) continue;
        size_t bytes = (size_t)cc->log.cap * row_floats(cc) * sizeof(float);
        st = be->ops->alloc(be, bytes, (void **)&cc->log.kv);
        if (!st) st = be->ops->alloc(be, bytes, (void **)&cc->log.score);
    }
    return st;
}

void hci_hist_free_layer(hci_backend *be, hci_layer_cache *lc)
{
    hci_pages_drop(be, &lc->win_log, 0);
    for (int k = 0; k < HCI_CACHE_COMPS; k++) {
        hci_comp_cache *cc = hci_cache_comp(lc, k);
        if (!cc) continue;
        if (cc->log.kv) be->ops->free(be, cc->log.kv);
        if (cc->log.score) be->ops->free(be, cc->log.score);
        cc->log.kv = cc->log.score = NULL;
    }
}

int hci_hist_copy_layer(hci_backend *be, hci_layer_cache *dst, const hci_layer_cache *src)
{
    int st = HC_OK;
    for (int p = 0; !st && p < src->win_log.n_pages; p++)
        st = be->ops->copy(be, dst->win_log.pages[p], src->win_log.pages[p], src->win_log.page_bytes);
    for (int k = 0; !st && k < HCI_CACHE_COMPS; k++) {
        const hci_comp_cache *sc = hci_cache_comp_const(src, k);
        hci_comp_cache *dc = hci_cache_comp(dst, k);
        if (!sc || !sc->log.cap) continue;
        size_t bytes = (size_t)sc->log.cap * row_floats(sc) * sizeof(float);
        st = be->ops->copy(be, dc->log.kv, sc->log.kv, bytes);
        if (!st) st = be->ops->copy(be, dc->log.score, sc->log.score, bytes);
    }
    return st;
}

int hci_hist_alloc(hci_backend *be, hci_layer_cache *lcs, int n_layers, int64_t R)
{
    int st = HC_OK;
    for (int i = 0; i < n_layers && !st; i++) {
        hci_hist_free_layer(be, &lcs[i]);
        set_capacity(&lcs[i], R);
        st = hci_hist_alloc_layer(be, &lcs[i]);
    }
    if (st)
        for (int i = 0; i < n_layers; i++) {
            hci_hist_free_layer(be, &lcs[i]);
            set_capacity(&lcs[i], 0);
        }
    return st;
}

/* The rows that the state of cc holds at length n, into its log. */
static int seed_rows(hci_backend *be, hci_comp_cache *cc, int64_t n)
{
    if (!cc->log.cap) return HC_OK;
    return copy_rows(be, log_rows(cc), state_rows(cc, n), row_floats(cc), rows_from(cc, n), n);
}

int hci_hist_seed(hci_backend *be, hci_layer_cache *lcs, int n_layers, int64_t n)
{
    int st = HC_OK;
    for (int i = 0; i < n_layers && !st; i++)
        for (int k = 0; k < HCI_CACHE_COMPS && !st; k++) {
            hci_comp_cache *cc = hci_cache_comp(&lcs[i], k);
            if (cc) st = seed_rows(be, cc, n);
        }
    return st;
}

/* Move the history of src (a layer of the same geometry) into dst, releasing dst's. */
static void take_history(hci_backend *be, hci_layer_cache *dst, hci_layer_cache *src)
{
    hci_hist_free_layer(be, dst);
    dst->win_log = src->win_log;
    dst->win_log_slots = src->win_log_slots;
    memset(&src->win_log, 0, sizeof src->win_log);
    for (int k = 0; k < HCI_CACHE_COMPS; k++) {
        hci_comp_cache *d = hci_cache_comp(dst, k), *s = hci_cache_comp(src, k);
        if (!d) continue;
        d->log = s->log;
        s->log.kv = s->log.score = NULL;
    }
}

int hci_hist_resize(hci_backend *be, hci_layer_cache *lcs, int n_layers, int64_t R, int64_t lo, int64_t n)
{
    /* the new histories beside the old ones: each a copy of the layer's geometry */
    hci_layer_cache *nu = calloc((size_t)n_layers, sizeof *nu);
    if (!nu) return HC_ERR_OUT_OF_MEMORY;
    int st = HC_OK, made = 0;
    for (int i = 0; i < n_layers && !st; i++, made++) {
        hci_layer_cache *o = &lcs[i], *v = &nu[i];
        *v = *o;
        memset(&v->win_log, 0, sizeof v->win_log);
        v->win_log.page_bytes = o->ring.page_bytes;
        for (int k = 0; k < HCI_CACHE_COMPS; k++) {
            hci_comp_cache *cc = hci_cache_comp(v, k);
            if (cc) cc->log.kv = cc->log.score = NULL;
        }
        set_capacity(v, R);
        st = hci_hist_alloc_layer(be, v);
        if (st || !R) continue;
        /* overwritten window entries of [lo - W, n - W) from the old log, then the rows: those
         * before the state's from the old log, the state's own from the state */
        int64_t w0 = max64(0, lo - o->window), w1 = max64(0, n - o->window);
        if (w0 < w1) st = copy_entries(be, &o->win_layout, &v->win_log, v->win_log_slots, &o->win_log,
                                       o->win_log_slots, w0, w1);
        for (int k = 0; k < HCI_CACHE_COMPS && !st; k++) {
            hci_comp_cache *oc = hci_cache_comp(o, k), *vc = hci_cache_comp(v, k);
            if (!oc) continue;
            int64_t r0 = rows_from(oc, lo), r1 = rows_from(oc, n);
            if (r0 < r1) st = copy_rows(be, log_rows(vc), log_rows(oc), row_floats(oc), r0, r1);
            if (!st) st = seed_rows(be, vc, n);
        }
    }
    if (!st)
        for (int i = 0; i < n_layers; i++) take_history(be, &lcs[i], &nu[i]);
    for (int i = 0; i < made; i++) hci_hist_free_layer(be, &nu[i]);
    free(nu);
    return st;
}

uint64_t hci_hist_bytes(const hci_layer_cache *lcs, int n_layers)
{
    uint64_t b = 0;
    for (int i = 0; i < n_layers; i++) {
        b += (uint64_t)lcs[i].win_log.n_pages * lcs[i].win_log.page_bytes;
        for (int k = 0; k < HCI_CACHE_COMPS; k++) {
            const hci_comp_cache *cc = hci_cache_comp_const(&lcs[i], k);
            if (cc && cc->log.kv) b += 2ull * (uint64_t)cc->log.cap * row_floats(cc) * sizeof(float);
        }
    }
    return b;
}

/* ---- a layer call ---- */

int hci_hist_begin(hci_backend *be, hci_layer_cache *lc, int64_t pos0, int64_t end)
{
    for (int k = 0; k < HCI_CACHE_COMPS; k++) {
        hci_comp_cache *cc = hci_cache_comp(lc, k);
        if (cc && cc->log.cap) cc->log.from = end - cc->log.cap;
    }
    if (!lc->win_log_slots) return HC_OK;
    /* ring positions [pos0 - W, pos0) that the call's positions overwrite */
    int64_t W = lc->window, S = lc->win_log_slots;
    int64_t a = max64(0, max64(pos0 - W, end - W - S)), b = min64(pos0, end - W);
    return a < b ? copy_entries(be, &lc->win_layout, &lc->win_log, S, &lc->ring, W, a, b) : HC_OK;
}

int hci_hist_piece(hci_backend *be, hci_layer_cache *lc, int64_t ps, int n, int64_t end, const uint16_t *kv, int d)
{
    if (!lc->win_log_slots) return HC_OK;
    int64_t W = lc->window, S = lc->win_log_slots;
    int64_t a = max64(ps, end - W - S), b = min64(ps + n, end - W);
    if (a >= b) return HC_OK;
    /* the log is a ring of S slots in the ring's layout: the backend's ring write fills it */
    hci_layer_cache view = *lc;
    view.ring = lc->win_log;
    view.window = (int)S;
    return be->ops->window_write(be, &view, (int)(b - a), a, kv + (size_t)(a - ps) * (size_t)d);
}

int hci_hist_snap_take(hci_backend *be, const hci_layer_cache *lc, int64_t pos0, int64_t end, hci_cache_snap *s)
{
    int st = HC_OK;
    int64_t W = lc->window, S = lc->win_log_slots;
    if (S && max64(0, max64(pos0 - W, end - W - S)) < end - W) {
        size_t pb = lc->win_log.page_bytes;
        st = be->ops->alloc(be, pb * (size_t)lc->win_log.n_pages, &s->hist_win);
        for (int p = 0; !st && p < lc->win_log.n_pages; p++)
            st = be->ops->copy(be, (char *)s->hist_win + (size_t)p * pb, lc->win_log.pages[p], pb);
    }
    for (int k = 0; !st && k < HCI_CACHE_COMPS; k++) {
        const hci_comp_cache *cc = hci_cache_comp_const(lc, k);
        if (!cc || !cc->log.cap) continue;
        int64_t r0 = max64(pos0, end - cc->log.cap);
        size_t bytes = (size_t)(end - r0) * row_floats(cc) * sizeof(float);
        s->hist_r0[k] = r0, s->hist_r1[k] = end;
        st = be->ops->alloc(be, bytes, &s->hist_rows[k][0]);
        if (!st) st = be->ops->alloc(be, bytes, &s->hist_rows[k][1]);
        rows_at saved = {s->hist_rows[k][0], s->hist_rows[k][1], INT64_MAX, r0};
        if (!st) st = copy_rows(be, saved, log_rows(cc), row_floats(cc), r0, end);
    }
    return st;
}

int hci_hist_snap_restore(hci_backend *be, hci_layer_cache *lc, const hci_cache_snap *s)
{
    int first = HC_OK;
    for (int p = 0; s->hist_win && p < lc->win_log.n_pages; p++) {
        int st = be->ops->copy(be, lc->win_log.pages[p], (char *)s->hist_win + (size_t)p * lc->win_log.page_bytes,
                               lc->win_log.page_bytes);
        if (!first) first = st;
    }
    for (int k = 0; k < HCI_CACHE_COMPS; k++) {
        hci_comp_cache *cc = hci_cache_comp(lc, k);
        if (!cc || !s->hist_rows[k][1]) continue;
        rows_at saved = {s->hist_rows[k][0], s->hist_rows[k][1], INT64_MAX, s->hist_r0[k]};
        int st = copy_rows(be, log_rows(cc), saved, row_floats(cc), s->hist_r0[k], s->hist_r1[k]);
        if (!first) first = st;
    }
    return first;
}

/* ---- going back ---- */

static int fill_upload(hci_backend *be, float *dst, float *host, size_t nf, float v)
{
    for (size_t i = 0; i < nf; i++) host[i] = v;
    return be->ops->upload(be, dst, host, nf * sizeof(float));
}

int hci_hist_truncate(hci_backend *be, hci_layer_cache *lcs, int n_layers, int64_t n, int64_t to, float *host)
{
    int st = HC_OK;
    for (int i = 0; i < n_layers && !st; i++) {
        hci_layer_cache *lc = &lcs[i];
        /* ring slots of [to - W, to) that the discarded positions overwrote */
        int64_t W = lc->window, a = max64(0, to - W), b = min64(to, n - W);
        if (a < b) st = copy_entries(be, &lc->win_layout, &lc->ring, W, &lc->win_log, lc->win_log_slots, a, b);
        for (int k = 0; k < HCI_CACHE_COMPS && !st; k++) {
            hci_comp_cache *cc = hci_cache_comp(lc, k);
            if (!cc) continue;
            cc->n_entries = to / cc->ratio;
            hci_pages_drop(be, &cc->entries, (int)((cc->n_entries + HCI_PAGE_ENTRIES - 1) / HCI_PAGE_ENTRIES));
            size_t nf = hci_comp_state_floats(cc);
            st = fill_upload(be, cc->state_kv, host, nf, 0.0f);
            if (!st) st = fill_upload(be, cc->state_score, host, nf, -INFINITY);
            if (!st) st = copy_rows(be, state_rows(cc, to), log_rows(cc), row_floats(cc), rows_from(cc, to), to);
        }
    }
    return st;
}
