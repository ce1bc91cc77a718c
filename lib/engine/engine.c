/* engine.c - the attention block as a fixed sequence of backend ops, over pieces of at most
 * max_chunk tokens (pieces do not change results: every op is split-invariant).
 *
 * A layer call is all-or-nothing. Before any op runs, the engine checks the input and has the
 * cache grow the pages the chunk needs and unshare those it writes (lib/cache); on backends
 * whose ops may still fail (CPU: memory), it snapshots the layer's mutable state (window ring,
 * compressor states, entry counts) and restores it when an op fails. On the CUDA backend a
 * failure after preflight is a device fault and poisons the context.
 *
 * With a rollback history (lib/cache/history.c), a call also logs what it overwrites and the
 * history keeps: ring entries before its first piece, its own window entries per piece, and the
 * compressors' rows (the compress op); the snapshot then covers the parts of the history the
 * call writes. */
#include "../ctx/ctx.h"

/* One piece: n tokens at pos0 of a call that ends at end, input already in ws.x; output in ws.y. */
static int run_piece(hc_ctx *c, int layer, int n, int64_t pos0, int64_t end)
{
    hci_backend *be = c->be;
    const hci_backend_ops *op = be->ops;
    hci_layer_cache *lc = &c->layers[layer];
    hci_comp_cache *comp = hci_cache_comp(lc, 0), *idx = hci_cache_comp(lc, 1);
    hci_workspace *w = &c->ws;
    int st = op->q_path(be, layer, n, pos0, w->x, w->c, w->q);
    if (!st) st = op->kv_path(be, layer, n, pos0, w->x, w->kv);
    if (!st && idx) {
        st = op->index_q(be, layer, n, pos0, w->x, w->c, w->qi, w->w);
        if (!st) st = op->compress(be, layer, 1, idx, n, pos0, w->x);
        if (!st) st = op->index_topk(be, layer, idx, n, pos0, w->qi, w->w, w->sel);
    }
    if (!st && comp) st = op->compress(be, layer, 0, comp, n, pos0, w->x);
    if (!st) st = op->attend(be, layer, lc, n, pos0, w->q, w->kv, idx ? w->sel : NULL, w->o);
    if (!st) st = hci_hist_piece(be, lc, pos0, n, end, w->kv, c->model->cfg.head_dim);
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
    hci_cache_snap snap;
    st = hci_cache_snap_take(be, lc, be->ops_may_fail, &snap);
    if (!st && be->ops_may_fail) st = hci_hist_snap_take(be, lc, pos0, pos0 + n, &snap);
    if (st) {
        hci_cache_snap_free(be, &snap);
        return hci_errf(c->err, sizeof c->err, st, "layer %d: out of memory for the rollback snapshot", layer);
    }
    st = hci_cache_prepare(be, lc, pos0 + n);
    if (!st && be->ops->reserve)
        st = be->ops->reserve(be, layer, (int)(n < c->ws.tokens ? n : c->ws.tokens), pos0 + n);
    if (st) {
        hci_cache_snap_restore(be, lc, &snap);
        hci_cache_snap_free(be, &snap);
        if (!c->err[0])
            hci_errf(c->err, sizeof c->err, st, "layer %d: out of memory growing the cache to %lld tokens",
                     layer, (long long)(pos0 + n));
        return st;
    }
    /* the rollback history: what the call overwrites and the history keeps */
    st = hci_hist_begin(be, lc, pos0, pos0 + n);
    for (int64_t off = 0; off < n && !st; off += c->ws.tokens) {
        int pn = (int)(n - off < c->ws.tokens ? n - off : c->ws.tokens);
        const char *xs = (const char *)x + (size_t)off * cfg->dim * esz;
        char *ys = (char *)y + (size_t)off * cfg->dim * esz;
        st = be->ops->load_input(be, xs, c->io_dtype, from_host, (int64_t)pn * cfg->dim, c->ws.x);
        if (!st) st = run_piece(c, layer, pn, pos0 + off, pos0 + n);
        /* y may alias x: the piece's input is already in the workspace */
        if (!st) st = be->ops->store_output(be, c->ws.y, c->io_dtype, from_host, (int64_t)pn * cfg->dim, ys);
    }
    if (st) {
        if (be->ops_may_fail) {
            hci_cache_snap_restore(be, lc, &snap);
        } else {
            c->poisoned = 1;
        }
        hci_cache_snap_free(be, &snap);
        if (!c->err[0]) hci_errf(c->err, sizeof c->err, st, "layer %d failed (status %d)", layer, st);
        return st;
    }
    hci_cache_snap_free(be, &snap);
    return HC_OK;
}
