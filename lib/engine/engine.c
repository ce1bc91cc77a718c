/* engine.c - the attention block as a fixed sequence of backend ops, over pieces of at most
 * max_chunk tokens (pieces do not change results: every op is split-invariant).
 *
 * A layer call is a batch of one; a batch (hc_decode_batch, hc_append_batch) is one call of
 * hci_engine_batch() for all its contexts, all or nothing. Before any op runs, the engine checks
 * every context's input and has each cache grow the pages the chunk needs and unshare those it
 * writes (lib/cache). When an op may still fail (CPU: memory) or a progress callback may stop
 * the call, it snapshots each context's layer state (window ring, compressor states, entry
 * counts) into storage the context keeps, and a failure or a stop restores every context of the
 * batch. On the CUDA backend any other failure after the preflight is a device fault and
 * poisons every context of the batch.
 *
 * With a rollback history (lib/cache/history.c), a call also logs what it overwrites and the
 * history keeps: ring entries before its first piece (hci_hist_begin), its own window entries
 * per piece, and the compressors' rows (the compress op); a copying snapshot then also covers
 * the parts of the history the call writes (hci_hist_snap_take, allocated apart from the
 * context's snapshot storage), and every restore puts them back.
 *
 * Today the contexts of a batch run one after another, each on its own stream, joined to the
 * first context's stream by events at the start and at the end; shared launches (one kernel
 * for the whole batch) replace run_jobs() without changing the contract. */
#include <stdio.h>
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

/* The job's input is refused when it holds NaN/Inf, before anything changes. Host memory on a
 * backend with check_load_input: the first piece is checked while it is converted into the
 * workspace (one pass over it instead of two; run_job then skips its load), the rest of a longer
 * chunk is checked alone. */
static int check_job(hci_engine_job *j, int layer)
{
    hc_ctx *c = j->c;
    hci_backend *be = c->be;
    int64_t dim = c->model->cfg.dim;
    int from_host = c->io_memory == HC_MEM_HOST;
    int bad = 0, st;
    j->loaded = 0;
    if (from_host && be->ops->check_load_input) {
        int64_t first = j->n < c->ws.tokens ? j->n : c->ws.tokens;
        size_t esz = c->io_dtype == HC_DTYPE_BF16 ? 2 : 4;
        st = be->ops->check_load_input(be, j->x, c->io_dtype, first * dim, c->ws.x, &bad);
        if (!st && !bad && j->n > first)
            st = be->ops->check_input(be, (const char *)j->x + (size_t)(first * dim) * esz, c->io_dtype, 1,
                                      (j->n - first) * dim, &bad);
        j->loaded = !st && !bad;
    } else {
        st = be->ops->check_input(be, j->x, c->io_dtype, from_host, j->n * dim, &bad);
    }
    if (st) return st;
    if (bad) return hci_errf(c->err, sizeof c->err, HC_ERR_NONFINITE, "layer %d: x holds NaN or infinity", layer);
    return HC_OK;
}

/* Preflight of one job: the snapshot (copies when `copy`: ring, states and the history parts the
 * call writes), the cache's pages, the backend's scratch. On failure the context is as before. */
static int prepare_job(hci_engine_job *j, int layer, int copy)
{
    hc_ctx *c = j->c;
    hci_backend *be = c->be;
    hci_layer_cache *lc = &c->layers[layer];
    int64_t end = c->n_tokens + j->n;
    int st = HC_OK;
    if (copy && !c->snap_store) {
        size_t bytes = hci_cache_snap_bytes(c->layers, c->model->cfg.n_layers);
        if (!(st = be->ops->alloc(be, bytes, &c->snap_store))) c->snap_store_bytes = bytes;
        else c->snap_store = NULL;
    }
    if (!st) st = copy ? hci_cache_snap_take_in(be, lc, c->snap_store, &j->snap) : hci_cache_snap_take(be, lc, 0, &j->snap);
    /* the parts of the rollback history that the call overwrites (none without a history) */
    if (!st && copy) st = hci_hist_snap_take(be, lc, c->n_tokens, end, &j->snap);
    if (st) {
        hci_cache_snap_free(be, &j->snap);
        return hci_errf(c->err, sizeof c->err, st, "layer %d: out of memory for the rollback snapshot", layer);
    }
    j->snapped = 1;
    st = hci_cache_prepare(be, lc, end);
    if (!st && be->ops->reserve) st = be->ops->reserve(be, layer, (int)(j->n < c->ws.tokens ? j->n : c->ws.tokens), end);
    if (st) {
        hci_cache_snap_restore(be, lc, &j->snap);
        hci_cache_snap_free(be, &j->snap);
        j->snapped = 0;
        if (!c->err[0])
            hci_errf(c->err, sizeof c->err, st, "layer %d: out of memory growing the cache to %lld tokens", layer,
                     (long long)end);
    }
    return st;
}

/* The job's pieces, each followed by a progress report. */
static int run_job(hci_engine_job *j, int layer)
{
    hc_ctx *c = j->c;
    hci_backend *be = c->be;
    const hci_config *cfg = &c->model->cfg;
    int from_host = c->io_memory == HC_MEM_HOST;
    size_t esz = c->io_dtype == HC_DTYPE_BF16 ? 2 : 4;
    int64_t pos0 = c->n_tokens, n = j->n;
    /* the rollback history: what the call overwrites and the history keeps */
    int st0 = hci_hist_begin(be, &c->layers[layer], pos0, pos0 + n);
    if (st0) {
        if (!c->err[0]) hci_errf(c->err, sizeof c->err, st0, "layer %d failed (status %d)", layer, st0);
        return st0;
    }
    for (int64_t off = 0; off < n;) {
        int pn = (int)(n - off < c->ws.tokens ? n - off : c->ws.tokens);
        const char *xs = (const char *)j->x + (size_t)off * cfg->dim * esz;
        char *ys = (char *)j->y + (size_t)off * cfg->dim * esz;
        int st = off == 0 && j->loaded ? HC_OK
                                       : be->ops->load_input(be, xs, c->io_dtype, from_host, (int64_t)pn * cfg->dim, c->ws.x);
        if (!st) st = run_piece(c, layer, pn, pos0 + off, pos0 + n);
        /* y may alias x: the piece's input is already in the workspace */
        if (!st) st = be->ops->store_output(be, c->ws.y, c->io_dtype, from_host, (int64_t)pn * cfg->dim, ys);
        if (st) {
            if (!c->err[0]) hci_errf(c->err, sizeof c->err, st, "layer %d failed (status %d)", layer, st);
            return st;
        }
        off += pn;
        if (c->progress && c->progress(c->progress_user, (uint64_t)off, (uint64_t)n))
            return hci_errf(c->err, sizeof c->err, HC_ERR_ABORTED,
                            "layer %d: stopped by the progress callback after %lld of %lld tokens", layer,
                            (long long)off, (long long)n);
    }
    return HC_OK;
}

/* Today: each job in turn on its own stream. */
static int run_jobs(hci_engine_job *jobs, int n_jobs, int layer, int *at)
{
    for (int i = 0; i < n_jobs; i++) {
        int st = run_job(&jobs[i], layer);
        if (st) {
            *at = i;
            return st;
        }
    }
    return HC_OK;
}

static void poison_all(hci_engine_job *jobs, int n_jobs)
{
    for (int i = 0; i < n_jobs; i++) jobs[i].c->poisoned = 1;
}

static void free_snaps(hci_engine_job *jobs, int n_jobs)
{
    for (int i = 0; i < n_jobs; i++)
        if (jobs[i].snapped) {
            hci_cache_snap_free(jobs[i].c->be, &jobs[i].snap);
            jobs[i].snapped = 0;
        }
}

/* Join every other job's stream to the first one's (enter: they wait for it; leave: it waits
 * for them). */
static int join_streams(hci_engine_job *jobs, int n_jobs, int leave, int *at)
{
    hci_backend *lead = jobs[0].c->be;
    if (!lead->ops->stream_wait) return HC_OK;
    for (int i = 1; i < n_jobs; i++) {
        hci_backend *be = jobs[i].c->be;
        int st = leave ? lead->ops->stream_wait(lead, be) : be->ops->stream_wait(be, lead);
        if (st) {
            *at = leave ? 0 : i;
            return st;
        }
    }
    return HC_OK;
}

int hci_engine_batch(hci_engine_job *jobs, int n_jobs, int layer, int *at)
{
    *at = -1;
    /* one backend kind per batch: its ops may fail after the preflight (CPU), or not (CUDA) */
    int may_fail = jobs[0].c->be->ops_may_fail, copy = may_fail;
    for (int i = 0; i < n_jobs; i++) {
        jobs[i].snapped = 0;
        if (jobs[i].c->progress) copy = 1; /* a stop must be undoable on every backend */
    }
    int st = join_streams(jobs, n_jobs, 0, at);
    for (int i = 0; i < n_jobs && !st; i++)
        if ((st = check_job(&jobs[i], layer))) *at = i;
    for (int i = 0; i < n_jobs && !st; i++)
        if ((st = prepare_job(&jobs[i], layer, copy))) {
            *at = i;
            for (int k = 0; k < i; k++) hci_cache_snap_restore(jobs[k].c->be, &jobs[k].c->layers[layer], &jobs[k].snap);
        }
    if (st) { /* nothing has run */
        free_snaps(jobs, n_jobs);
        return st;
    }
    st = run_jobs(jobs, n_jobs, layer, at);
    if (st && (may_fail || (st == HC_ERR_ABORTED && copy))) {
        /* every context back as it was: those done, the one that failed, those not yet run */
        for (int i = 0; i < n_jobs; i++) {
            hc_ctx *c = jobs[i].c;
            int rst = hci_cache_snap_restore(c->be, &c->layers[layer], &jobs[i].snap);
            if (rst && st == HC_ERR_ABORTED) { /* the device failed the copies back: a device fault */
                st = rst;
                *at = i;
            }
        }
        if (st != HC_ERR_ABORTED && !may_fail) poison_all(jobs, n_jobs);
    } else if (st) {
        poison_all(jobs, n_jobs); /* a device fault after the preflight */
    }
    int ignored = -1;
    int jst = join_streams(jobs, n_jobs, 1, st ? &ignored : at);
    if (jst && !st) { /* the work is queued but cannot be ordered: a device fault */
        poison_all(jobs, n_jobs);
        st = jst;
    }
    free_snaps(jobs, n_jobs);
    return st;
}

int hci_engine_layer(hc_ctx *c, int layer, const void *x, int64_t n, void *y)
{
    hci_engine_job j = {.c = c, .x = x, .y = y, .n = n};
    int at;
    return hci_engine_batch(&j, 1, layer, &at);
}
