/* engine.c - the attention block as a fixed sequence of backend ops, over pieces of at most
 * max_chunk tokens (pieces do not change results: every op is split-invariant).
 *
 * A layer call is all-or-nothing. Before any op runs, the engine checks the input and grows
 * the cache pages the chunk needs; on backends whose ops may still fail (CPU: memory), it
 * snapshots the layer's mutable state (window ring, compressor states, entry counts) and
 * restores it when an op fails. On the CUDA backend a failure after preflight is a device
 * fault and poisons the context. */
#include <stdlib.h>
#include <string.h>
#include "../ctx/ctx.h"

typedef struct snapshot {
    void *ring;
    void *state[4];       /* comp kv, comp score, idx kv, idx score */
    size_t ring_bytes, state_bytes[4];
    int64_t n_entries[2];
    int n_pages[2];
} snapshot;

static hci_comp_cache *comp_of(hci_layer_cache *lc, int k)
{
    if (k == 0) return lc->ratio ? &lc->comp : NULL;
    return lc->ratio == 4 ? &lc->idx : NULL;
}

static void snap_free(hci_backend *be, snapshot *s)
{
    if (s->ring) be->ops->free(be, s->ring);
    for (int i = 0; i < 4; i++)
        if (s->state[i]) be->ops->free(be, s->state[i]);
}

static int snap_take(hci_backend *be, hci_layer_cache *lc, snapshot *s)
{
    memset(s, 0, sizeof *s);
    for (int k = 0; k < 2; k++) {
        hci_comp_cache *cc = comp_of(lc, k);
        if (!cc) continue;
        s->n_entries[k] = cc->n_entries;
        s->n_pages[k] = cc->entries.n_pages;
    }
    if (!be->ops_may_fail) return HC_OK;
    s->ring_bytes = lc->ring.page_bytes;
    int st = be->ops->alloc(be, s->ring_bytes * (size_t)lc->ring.n_pages, &s->ring);
    for (int p = 0; !st && p < lc->ring.n_pages; p++)
        st = be->ops->copy(be, (char *)s->ring + (size_t)p * s->ring_bytes, lc->ring.pages[p], s->ring_bytes);
    for (int k = 0; !st && k < 2; k++) {
        hci_comp_cache *cc = comp_of(lc, k);
        if (!cc) continue;
        size_t b = hci_comp_state_floats(cc) * sizeof(float);
        float *src[2] = {cc->state_kv, cc->state_score};
        for (int h = 0; !st && h < 2; h++) {
            s->state_bytes[2 * k + h] = b;
            st = be->ops->alloc(be, b, &s->state[2 * k + h]);
            if (!st) st = be->ops->copy(be, s->state[2 * k + h], src[h], b);
        }
    }
    if (st) snap_free(be, s);
    return st;
}

static void snap_restore(hci_backend *be, hci_layer_cache *lc, snapshot *s)
{
    for (int k = 0; k < 2; k++) {
        hci_comp_cache *cc = comp_of(lc, k);
        if (!cc) continue;
        cc->n_entries = s->n_entries[k];
        be->ops->pages_shrink(be, &cc->entries, s->n_pages[k]);
        float *dst[2] = {cc->state_kv, cc->state_score};
        for (int h = 0; h < 2; h++)
            if (s->state[2 * k + h]) be->ops->copy(be, dst[h], s->state[2 * k + h], s->state_bytes[2 * k + h]);
    }
    for (int p = 0; s->ring && p < lc->ring.n_pages; p++)
        be->ops->copy(be, lc->ring.pages[p], (char *)s->ring + (size_t)p * s->ring_bytes, s->ring_bytes);
}

static int grow_for(hci_backend *be, hci_comp_cache *cc, int64_t end_pos)
{
    if (!cc) return HC_OK;
    int64_t entries = end_pos / cc->ratio;
    int64_t pages = (entries + HCI_PAGE_ENTRIES - 1) / HCI_PAGE_ENTRIES;
    if (pages > 0x7fffffff) return HC_ERR_LIMIT;
    return be->ops->pages_grow(be, &cc->entries, (int)pages);
}

/* One piece: n tokens at pos0, input already in ws.x; output in ws.y. */
static int run_piece(hc_ctx *c, int layer, int n, int64_t pos0)
{
    hci_backend *be = c->be;
    const hci_backend_ops *op = be->ops;
    hci_layer_cache *lc = &c->layers[layer];
    hci_workspace *w = &c->ws;
    int st = op->q_path(be, layer, n, pos0, w->x, w->c, w->q);
    if (!st) st = op->kv_path(be, layer, n, pos0, w->x, w->kv);
    if (!st && lc->ratio == 4) {
        st = op->index_q(be, layer, n, pos0, w->x, w->c, w->qi, w->w);
        if (!st) st = op->compress(be, layer, 1, &lc->idx, n, pos0, w->x);
        if (!st) st = op->index_topk(be, layer, &lc->idx, n, pos0, w->qi, w->w, w->sel);
    }
    if (!st && lc->ratio) st = op->compress(be, layer, 0, &lc->comp, n, pos0, w->x);
    if (!st) st = op->attend(be, layer, lc, n, pos0, w->q, w->kv, lc->ratio == 4 ? w->sel : NULL, w->o);
    if (!st) st = op->window_write(be, lc, n, pos0, w->kv);
    if (!st) st = op->out_path(be, layer, n, pos0, w->o, w->y);
    return st;
}

int hci_engine_layer(hc_ctx *c, int layer, const void *x, int64_t n, void *y)
{
    hci_backend *be = c->be;
    const hci_config *cfg = &c->model->cfg;
    int from_host = c->io_memory == HC_MEM_HOST;
    size_t esz = c->io_dtype == HC_DTYPE_BF16 ? 2 : 4;
    int bad = 0;
    int st = be->ops->check_input(be, x, c->io_dtype, from_host, n * cfg->dim, &bad);
    if (st) return st;
    if (bad) return hci_errf(c->err, sizeof c->err, HC_ERR_NONFINITE, "layer %d: x holds NaN or infinity", layer);

    hci_layer_cache *lc = &c->layers[layer];
    int64_t pos0 = c->n_tokens;
    snapshot snap;
    if ((st = snap_take(be, lc, &snap)))
        return hci_errf(c->err, sizeof c->err, st, "layer %d: out of memory for the rollback snapshot", layer);
    st = grow_for(be, comp_of(lc, 0), pos0 + n);
    if (!st) st = grow_for(be, comp_of(lc, 1), pos0 + n);
    if (!st && be->ops->reserve)
        st = be->ops->reserve(be, layer, (int)(n < c->ws.tokens ? n : c->ws.tokens), pos0 + n);
    if (st) {
        snap_restore(be, lc, &snap);
        snap_free(be, &snap);
        if (!c->err[0])
            hci_errf(c->err, sizeof c->err, st, "layer %d: out of memory growing the cache to %lld tokens",
                     layer, (long long)(pos0 + n));
        return st;
    }
    for (int64_t off = 0; off < n && !st; off += c->ws.tokens) {
        int pn = (int)(n - off < c->ws.tokens ? n - off : c->ws.tokens);
        const char *xs = (const char *)x + (size_t)off * cfg->dim * esz;
        char *ys = (char *)y + (size_t)off * cfg->dim * esz;
        st = be->ops->load_input(be, xs, c->io_dtype, from_host, (int64_t)pn * cfg->dim, c->ws.x);
        if (!st) st = run_piece(c, layer, pn, pos0 + off);
        /* y may alias x: the piece's input is already in the workspace */
        if (!st) st = be->ops->store_output(be, c->ws.y, c->io_dtype, from_host, (int64_t)pn * cfg->dim, ys);
    }
    if (st) {
        if (be->ops_may_fail) {
            snap_restore(be, lc, &snap);
        } else {
            c->poisoned = 1;
        }
        snap_free(be, &snap);
        if (!c->err[0]) hci_errf(c->err, sizeof c->err, st, "layer %d failed (status %d)", layer, st);
        return st;
    }
    snap_free(be, &snap);
    return HC_OK;
}
