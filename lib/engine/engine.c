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
 * The contexts of a batch run on their own streams, joined to the first context's stream by
 * events at the start and at the end. Where the backend has the share_* ops (CUDA), the jobs
 * whose whole call is one piece small enough (share_rows: up to 64 tokens in FAST, 16 in
 * EXACT) form groups of at most that many rows in all, and each group runs its projections
 * (q_path, kv_path, index_q, the compressors' projections, out_path) as one launch over the rows
 * of all its contexts, on the stream of its first context (the lead), in the lead's shared
 * workspace; the per-context ops (compress, index_topk, attend, the history, window_write, the
 * input and output copies) run on each context's own stream, on its rows of that workspace,
 * ordered by events between the lead's stream and the others' (run_group). The projections'
 * kernels are batch-invariant per row within the size class, so the results are bitwise those
 * of separate calls; a group of one, larger pieces (prefill) and backends without the ops run
 * run_job() as before. The shared workspace is reserved after every context's preflight; when
 * it cannot be, the batch runs unshared.
 *
 * Where the backend has proj_in (CUDA with the option decode_fused), run_piece() computes a small
 * piece's projections (q_path, kv_path, index_q, the compressors') with it, in fewer launches and
 * with the same bits; a group's share_in does the same on the backend's side. */
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
    /* the projections in fewer launches where the backend has them (CUDA's decode_fused); its
     * compress then takes the compressors' projections that proj_in made (x NULL) */
    int fused = op->proj_in && op->proj_in_ok(be, layer, n);
    const uint16_t *cx = fused ? NULL : w->x;
    int st = fused ? op->proj_in(be, layer, n, pos0, w->x, w->c, w->q, w->kv, w->qi, w->w)
                   : op->q_path(be, layer, n, pos0, w->x, w->c, w->q);
    if (!st && !fused) st = op->kv_path(be, layer, n, pos0, w->x, w->kv);
    if (!st && idx) {
        if (!fused) st = op->index_q(be, layer, n, pos0, w->x, w->c, w->qi, w->w);
        if (!st) st = op->compress(be, layer, 1, idx, n, pos0, cx);
        if (!st) st = op->index_topk(be, layer, idx, n, pos0, w->qi, w->w, w->sel);
    }
    if (!st && comp) st = op->compress(be, layer, 0, comp, n, pos0, cx);
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

/* ---- shared launches ---- */

/* Groups: every job whose call is one piece that share_rows admits, with the next such jobs of
 * the same ops table, key and row limit, as long as their rows fit; a group of one runs alone. */
static void plan_shares(hci_engine_job *jobs, int n_jobs, int layer)
{
    for (int i = 0; i < n_jobs; i++) {
        hci_engine_job *j = &jobs[i];
        hci_backend *be = j->c->be;
        j->share_lead = -1, j->share_row = 0, j->share_cap = 0, j->share_key = 0, j->share_n = 0;
        if (n_jobs > 1 && be->ops->share_rows && j->n <= j->c->ws.tokens && j->n <= HCI_SHARE_MAX_ROWS) {
            int cap = be->ops->share_rows(be, layer, (int)j->n, &j->share_key);
            j->share_cap = cap > HCI_SHARE_MAX_ROWS ? HCI_SHARE_MAX_ROWS : cap;
            if (j->n > j->share_cap) j->share_cap = 0;
        }
    }
    for (int i = 0; i < n_jobs; i++) {
        hci_engine_job *l = &jobs[i];
        if (!l->share_cap || l->share_lead >= 0) continue;
        int rows = (int)l->n, members = 1;
        l->share_lead = i;
        for (int k = i + 1; k < n_jobs; k++) {
            hci_engine_job *m = &jobs[k];
            if (m->share_lead >= 0 || m->share_cap != l->share_cap || m->share_key != l->share_key ||
                m->c->be->ops != l->c->be->ops || rows + m->n > l->share_cap)
                continue;
            m->share_lead = i, m->share_row = rows;
            rows += (int)m->n, members++;
        }
        if (members == 1) l->share_lead = -1;
        else l->share_n = rows;
    }
}

/* The groups' shared workspaces (after every context's preflight). A lead that cannot have one
 * dissolves its group: its jobs run alone, nothing else changes. */
static void reserve_shares(hci_engine_job *jobs, int n_jobs)
{
    for (int i = 0; i < n_jobs; i++) {
        hci_engine_job *l = &jobs[i];
        if (l->share_lead != i) continue;
        hci_backend *be = l->c->be;
        if (be->ops->share_reserve(be, l->share_n, &l->share) == HC_OK && l->share.rows >= l->share_n) continue;
        l->c->err[0] = 0; /* not a failure of the call */
        for (int k = i; k < n_jobs; k++)
            if (jobs[k].share_lead == i) jobs[k].share_lead = -1;
    }
}

/* Order the group's streams: to_members, every member's after the lead's work so far; else the
 * lead's after every member's. */
static int order_group(hci_engine_job *jobs, int n_jobs, int lead, int to_members, int *at)
{
    hci_backend *lb = jobs[lead].c->be;
    if (!lb->ops->stream_wait) return HC_OK;
    for (int k = lead + 1; k < n_jobs; k++) {
        if (jobs[k].share_lead != lead) continue;
        hci_backend *be = jobs[k].c->be;
        int st = to_members ? be->ops->stream_wait(be, lb) : lb->ops->stream_wait(lb, be);
        if (st) {
            *at = to_members ? k : lead;
            return st;
        }
    }
    return HC_OK;
}

static int group_fail(hci_engine_job *jobs, int k, int layer, int st, int *at)
{
    hc_ctx *c = jobs[k].c;
    if (!c->err[0]) hci_errf(c->err, sizeof c->err, st, "layer %d failed (status %d)", layer, st);
    *at = k;
    return st;
}

/* A member's ops between the shared launches, on its own stream: run_piece() without the
 * projections, on its rows of the lead's workspace S (sel stays in its own workspace). */
static int run_member(hc_ctx *c, int layer, int n, int64_t pos0, const hci_share_ws *S, int row)
{
    hci_backend *be = c->be;
    const hci_backend_ops *op = be->ops;
    const hci_config *cfg = &c->model->cfg;
    hci_layer_cache *lc = &c->layers[layer];
    hci_comp_cache *comp = hci_cache_comp(lc, 0), *idx = hci_cache_comp(lc, 1);
    size_t r = (size_t)row, hd = (size_t)cfg->n_heads * cfg->head_dim;
    const uint16_t *q = S->q + r * hd, *kv = S->kv + r * (size_t)cfg->head_dim;
    uint16_t *o = S->o + r * hd;
    int st = HC_OK;
    if (idx) {
        st = op->compress_rows(be, layer, 1, idx, n, pos0, S, row);
        if (!st)
            st = op->index_topk(be, layer, idx, n, pos0, S->qi + r * (size_t)cfg->index_n_heads * cfg->index_head_dim,
                                S->w + r * (size_t)cfg->index_n_heads, c->ws.sel);
    }
    if (!st && comp) st = op->compress_rows(be, layer, 0, comp, n, pos0, S, row);
    if (!st) st = op->attend(be, layer, lc, n, pos0, q, kv, idx ? c->ws.sel : NULL, o);
    if (!st) st = hci_hist_piece(be, lc, pos0, n, pos0 + n, kv, cfg->head_dim);
    if (!st) st = op->window_write(be, lc, n, pos0, kv);
    return st;
}

/* One group: the members' inputs (their streams), the shared projections in (the lead's), the
 * members' own ops (theirs), the shared output projections (the lead's), the members' outputs
 * and progress reports (theirs); events between each. Each member's call is one piece. */
static int run_group(hci_engine_job *jobs, int n_jobs, int lead, int layer, int *at)
{
    hci_backend *lb = jobs[lead].c->be;
    const hci_config *cfg = &jobs[lead].c->model->cfg;
    const hci_share_ws *S = &jobs[lead].share;
    int64_t pos[HCI_SHARE_MAX_ROWS];
    const uint16_t *xrow[HCI_SHARE_MAX_ROWS];
    int rows = 0, st;
    for (int k = lead; k < n_jobs; k++) {
        hci_engine_job *j = &jobs[k];
        if (j->share_lead != lead) continue;
        hc_ctx *c = j->c;
        hci_backend *be = c->be;
        int64_t pos0 = c->n_tokens;
        int n = (int)j->n;
        st = hci_hist_begin(be, &c->layers[layer], pos0, pos0 + n);
        if (!st && !j->loaded)
            st = be->ops->load_input(be, j->x, c->io_dtype, c->io_memory == HC_MEM_HOST, (int64_t)n * cfg->dim, c->ws.x);
        if (st) return group_fail(jobs, k, layer, st, at);
        for (int t = 0; t < n; t++, rows++) {
            pos[rows] = pos0 + t;
            xrow[rows] = c->ws.x + (size_t)t * cfg->dim;
        }
    }
    if ((st = order_group(jobs, n_jobs, lead, 0, at))) return group_fail(jobs, *at, layer, st, at);
    if ((st = lb->ops->share_in(lb, layer, rows, pos, xrow, S))) return group_fail(jobs, lead, layer, st, at);
    if ((st = order_group(jobs, n_jobs, lead, 1, at))) return group_fail(jobs, *at, layer, st, at);
    for (int k = lead; k < n_jobs; k++) {
        hci_engine_job *j = &jobs[k];
        if (j->share_lead != lead) continue;
        if ((st = run_member(j->c, layer, (int)j->n, j->c->n_tokens, S, j->share_row)))
            return group_fail(jobs, k, layer, st, at);
    }
    if ((st = order_group(jobs, n_jobs, lead, 0, at))) return group_fail(jobs, *at, layer, st, at);
    if ((st = lb->ops->share_out(lb, layer, rows, pos, S))) return group_fail(jobs, lead, layer, st, at);
    if ((st = order_group(jobs, n_jobs, lead, 1, at))) return group_fail(jobs, *at, layer, st, at);
    for (int k = lead; k < n_jobs; k++) {
        hci_engine_job *j = &jobs[k];
        if (j->share_lead != lead) continue;
        hc_ctx *c = j->c;
        hci_backend *be = c->be;
        const uint16_t *y = S->y + (size_t)j->share_row * cfg->dim;
        if ((st = be->ops->store_output(be, y, c->io_dtype, c->io_memory == HC_MEM_HOST, j->n * cfg->dim, j->y)))
            return group_fail(jobs, k, layer, st, at);
        c->shared_pieces++;
    }
    /* the reports come once the group's outputs are out, in job order */
    for (int k = lead; k < n_jobs; k++) {
        hci_engine_job *j = &jobs[k];
        hc_ctx *c = j->c;
        if (j->share_lead != lead || !c->progress) continue;
        if (c->progress(c->progress_user, (uint64_t)j->n, (uint64_t)j->n)) {
            *at = k;
            return hci_errf(c->err, sizeof c->err, HC_ERR_ABORTED,
                            "layer %d: stopped by the progress callback after %lld of %lld tokens", layer,
                            (long long)j->n, (long long)j->n);
        }
    }
    return HC_OK;
}

/* Each job in turn: a group's at its first job (its lead), the others alone on their streams. */
static int run_jobs(hci_engine_job *jobs, int n_jobs, int layer, int *at)
{
    for (int i = 0; i < n_jobs; i++) {
        int st;
        if (jobs[i].share_lead == i) {
            if ((st = run_group(jobs, n_jobs, i, layer, at))) return st;
            continue;
        }
        if (jobs[i].share_lead >= 0) continue; /* ran with its group */
        if ((st = run_job(&jobs[i], layer))) {
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
    plan_shares(jobs, n_jobs, layer);
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
    reserve_shares(jobs, n_jobs);
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
