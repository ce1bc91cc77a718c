/* load.c - all-or-nothing load: the checked chunk stream fills a shadow cache (an empty set of
 * layer caches made by lib/cache, in backend memory, reached only through the backend's ops);
 * when the last chunk has passed, lib/cache swaps it into the context by pointer moves that
 * cannot fail. Entry lists are grown to their loaded size, each in one block where the backend
 * can: host pages (CPU fp8), made before the stream, are read straight into; a device block
 * (CUDA), made at its section's first piece, takes each chunk's pages in one asynchronous copy out
 * of the stream's page-locked buffers. Where the stream does not read into the pages, the shadow
 * itself is made at the first piece too: its backend allocations (CUDA: each a cudaMalloc and a
 * synchronisation) then run while the disk reads the next units, not before the first read. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "entry.h"
#include "session.h"
#include "../util/error.h"
#include "../util/threadpool.h"
#include "../util/trace.h"

typedef struct loader {
    hc_ctx *c;
    const hcs_file *f;
    hci_layer_cache *sh;        /* the shadow set (lib/cache) that the stream fills */
    uint8_t **dest;             /* [n_sec]: host address of an entry section's pages, or NULL */
    uint8_t **block;            /* [n_sec]: backend address of an entry section's pages (one block), or NULL
                                   (not grown yet, or not an entry section) */
    int prepared;               /* the shadow exists (and the host blocks, when dest) */
    hcs_bufs bufs;              /* the stream's buffers, from the backend's host_alloc */
    uint8_t *meta;
    uint8_t *ring;              /* host ring of the current layer, context format */
    float *kv, *sc;             /* host state of the current compressor */
    int rows[128];
    hci_entry_layout cm, xm;
    uint64_t done;              /* payload bytes applied (progress) */
} loader;

static int upload(loader *ld, void *dst, const void *src, size_t n, char *err, size_t errsz)
{
    hci_backend *be = ld->c->be;
    hci_trace *t = hci_trace_tls;
    uint64_t t0 = t ? hci_now_ns() : 0;
    int st = be->ops->upload(be, dst, src, n);
    if (t0) hci_trace_add(t, HCI_T_UPLOAD, hci_now_ns() - t0, n);
    if (st) hci_errf(err, errsz, st, "writing the cache to the %s backend failed", be->ops->name);
    return st;
}

static int apply_window(loader *ld, const hcs_section *sec, const hcs_piece *p, int layer, char *err, size_t errsz)
{
    hci_layer_cache *lc = &ld->sh[layer];
    size_t pb = lc->ring.page_bytes;
    if (p->row0 == 0) memset(ld->ring, 0, pb * (size_t)lc->ring.n_pages);
    int64_t n = ld->f->rec.n_tokens, W = lc->window, p0 = n > W ? n - W : 0;
    for (uint32_t r = 0; r < p->rows; r++) {
        int64_t slot = (p0 + (int64_t)(p->row0 + r)) % W;
        uint32_t b = r / HCI_PAGE_ENTRIES;
        int k = (int)(p->rows - b * HCI_PAGE_ENTRIES < HCI_PAGE_ENTRIES ? p->rows - b * HCI_PAGE_ENTRIES : HCI_PAGE_ENTRIES);
        hcs_entry_from_canon(&ld->cm, p->raw + (size_t)b * HCI_PAGE_ENTRIES * ld->cm.entry_bytes, k,
                             (int)(r % HCI_PAGE_ENTRIES), &ld->xm, ld->ring + (size_t)(slot / HCI_PAGE_ENTRIES) * pb,
                             (int)(slot % HCI_PAGE_ENTRIES));
    }
    if (p->chunk + 1 < sec->n_chunks) return HC_OK;
    for (int i = 0; i < lc->ring.n_pages; i++) {
        int st = upload(ld, lc->ring.pages[i], ld->ring + (size_t)i * pb, pb, err, errsz);
        if (st) return st;
    }
    return HC_OK;
}

static int apply_state(loader *ld, const hcs_section *sec, const hcs_piece *p, int layer, int k, char *err,
                       size_t errsz)
{
    hci_comp_cache *cc = hci_cache_comp(&ld->sh[layer], k);
    size_t nf = hci_comp_state_floats(cc), w2 = (size_t)cc->coff * cc->dc;
    if (p->row0 == 0) {
        for (size_t i = 0; i < nf; i++) ld->kv[i] = 0.0f, ld->sc[i] = -INFINITY;
        hcs_state_rows(cc->ratio, ld->f->rec.n_tokens, ld->rows);
    }
    for (uint32_t r = 0; r < p->rows; r++) {
        int row = ld->rows[p->row0 + r];
        const uint8_t *in = p->raw + (size_t)r * sec->row_bytes;
        memcpy(ld->kv + (size_t)row * w2, in, w2 * sizeof(float));
        memcpy(ld->sc + (size_t)row * w2, in + w2 * sizeof(float), w2 * sizeof(float));
    }
    if (p->chunk + 1 < sec->n_chunks) return HC_OK;
    int st = upload(ld, cc->state_kv, ld->kv, nf * sizeof(float), err, errsz);
    if (!st) st = upload(ld, cc->state_score, ld->sc, nf * sizeof(float), err, errsz);
    return st;
}

static int grow_one(loader *ld, uint32_t i, int host, char *err, size_t errsz);

/* Pages that the stream wrote in place (grown in advance by grow_host) need nothing more. */
static int apply_entries(loader *ld, const hcs_piece *p, int layer, int k, char *err, size_t errsz)
{
    hci_backend *be = ld->c->be;
    hci_page_list *pl = &hci_cache_comp(&ld->sh[layer], k)->entries;
    int nb = (int)((p->rows + HCI_PAGE_ENTRIES - 1) / HCI_PAGE_ENTRIES), first = (int)(p->row0 / HCI_PAGE_ENTRIES);
    if (p->row0 % HCI_PAGE_ENTRIES || first > pl->n_pages) return hci_errf(err, errsz, HC_ERR_INTERNAL, "pages out of order");
    if (ld->block && !ld->block[p->sec] && p->row0 == 0) { /* the section's block, at its first piece */
        int st = grow_one(ld, p->sec, 0, err, errsz);
        if (st) return st;
    }
    if (ld->block && ld->block[p->sec]) { /* the chunk's pages are one range of the block */
        if (first + nb > pl->n_pages) return hci_errf(err, errsz, HC_ERR_INTERNAL, "pages past the block");
        hci_trace *t = hci_trace_tls;
        uint64_t t0 = t ? hci_now_ns() : 0;
        size_t n = (size_t)nb * pl->page_bytes;
        int st = be->ops->upload_async ? be->ops->upload_async(be, ld->block[p->sec] + (size_t)first * pl->page_bytes,
                                                               p->pages, n)
                                       : be->ops->upload(be, ld->block[p->sec] + (size_t)first * pl->page_bytes, p->pages, n);
        if (t0) hci_trace_add(t, be->ops->upload_async ? HCI_T_UPLOAD_ASYNC : HCI_T_UPLOAD, hci_now_ns() - t0, n);
        if (st) hci_errf(err, errsz, st, "writing the cache to the %s backend failed", be->ops->name);
        return st;
    }
    int st = first + nb > pl->n_pages ? hci_pages_grow(be, pl, first + nb) : HC_OK;
    if (st) return hci_errf(err, errsz, st, "out of %s memory for the loaded cache", be->ops->name);
    for (int b = 0; b < nb && !st; b++) {
        const uint8_t *src = p->pages + (size_t)b * pl->page_bytes;
        if (src != pl->pages[first + b]) st = upload(ld, pl->pages[first + b], src, pl->page_bytes, err, errsz);
    }
    return st;
}

/* Host pages of an fp8 context, that the stream reads (or decompresses) chunks straight into
 * (dest), where the backend has them. */
static int host_pages(const hc_ctx *c) { return c->cache_fmt == HCI_FMT_FP8 && c->be->ops->pages_alloc_host; }

/* Whether TOC section i is an entry section with rows (its list grows in one block). */
static int entry_section(const hcs_file *f, uint32_t i)
{
    int32_t pi = f->plan_of[i];
    return pi >= 0 && (f->plan[pi].type == HCS_SEC_COMP || f->plan[pi].type == HCS_SEC_INDEX) && f->sec[i].n_rows;
}

/* Every page of section i's list in one block (host: into dest[i], else block[i]). */
static int grow_one(loader *ld, uint32_t i, int host, char *err, size_t errsz)
{
    hc_ctx *c = ld->c;
    const hcs_file *f = ld->f;
    if (!entry_section(f, i)) return HC_OK;
    int32_t pi = f->plan_of[i];
    hci_page_list *pl = &hci_cache_comp(&ld->sh[f->plan[pi].layer], f->plan[pi].type == HCS_SEC_INDEX)->entries;
    int n = (int)((f->sec[i].n_rows + HCI_PAGE_ENTRIES - 1) / HCI_PAGE_ENTRIES);
    int st = host ? hci_pages_grow_host(c->be, pl, n, &ld->dest[i]) : hci_pages_grow_block(c->be, pl, n, &ld->block[i]);
    if (st) return hci_errf(err, errsz, st, "out of %s memory for the loaded cache", c->be->ops->name);
    return HC_OK;
}

/* Every page of the entry lists in one block per list: host pages (dest), all of them before
 * the stream starts, else a block of backend memory that takes each chunk's pages in one copy
 * (block), each made at its section's first piece (apply_entries). */
static int grow_blocks(loader *ld, char *err, size_t errsz)
{
    hc_ctx *c = ld->c;
    int host = host_pages(c);
    if (!host && !c->be->ops->pages_alloc_block) return HC_OK;
    const hcs_file *f = ld->f;
    uint8_t **v = calloc(f->n_sec, sizeof *v);
    if (!v) return hci_errf(err, errsz, HC_ERR_OUT_OF_MEMORY, "out of memory");
    if (!host) {
        ld->block = v;
        return HC_OK;
    }
    ld->dest = v;
    for (uint32_t i = 0; i < f->n_sec; i++) {
        int st = grow_one(ld, i, 1, err, errsz);
        if (st) return st;
    }
    return HC_OK;
}

/* The shadow (empty layer caches in backend memory) and the blocks' plan (host blocks made). */
static int prepare(loader *ld, char *err, size_t errsz)
{
    hc_ctx *c = ld->c;
    hci_trace *t = hci_trace_tls;
    uint64_t t0 = t ? hci_now_ns() : 0;
    ld->prepared = 1;
    int st = hci_cache_shadow(c->be, c->layers, c->model->cfg.n_layers, &ld->sh);
    if (st) return hci_errf(err, errsz, st, "out of %s memory for the loaded cache", c->be->ops->name);
    if (t0) hci_trace_add(t, HCI_T_SHADOW, hci_now_ns() - t0, 0);
    return grow_blocks(ld, err, errsz);
}

/* The stream's buffers from the backend's host_alloc (page-locked on CUDA): a piece's pages are
 * copied out of them asynchronously, and the stream writes a buffer again only after host_wait. */
static void *bufs_alloc(void *arg, size_t n)
{
    hci_backend *be = arg;
    void *p = NULL;
    return be->ops->host_alloc(be, n, &p) == HC_OK ? p : NULL;
}
static void bufs_free(void *arg, void *p)
{
    hci_backend *be = arg;
    be->ops->host_free(be, p);
}
static int bufs_wait(void *arg, const void *p, char *err, size_t errsz)
{
    hci_backend *be = arg;
    return be->ops->host_wait(be, p, err, errsz);
}

static int apply_piece(loader *ld, const hcs_piece *p, char *err, size_t errsz);

/* Each piece, then a progress report: bytes of the file's payload checked and applied. */
static int apply(void *arg, const hcs_piece *p, char *err, size_t errsz)
{
    loader *ld = arg;
    if (!ld->prepared) {
        hci_trace *t = hci_trace_tls;
        uint64_t t0 = t ? hci_now_ns() : 0;
        int st = prepare(ld, err, errsz);
        if (t0) hci_trace_add(t, HCI_T_PREPARE, hci_now_ns() - t0, 0);
        if (st) return st;
    }
    int st = apply_piece(ld, p, err, errsz);
    if (st) return st;
    ld->done += p->raw_bytes;
    hc_ctx *c = ld->c;
    if (c->progress && c->progress(c->progress_user, ld->done, ld->f->total_raw))
        return hci_errf(err, errsz, HC_ERR_ABORTED, "load stopped by the progress callback after %llu of %llu bytes",
                        (unsigned long long)ld->done, (unsigned long long)ld->f->total_raw);
    return HC_OK;
}

static int apply_piece(loader *ld, const hcs_piece *p, char *err, size_t errsz)
{
    int32_t pi = ld->f->plan_of[p->sec];
    if (pi < 0) return HC_OK; /* an optional section of a newer writer */
    const hcs_plan_sec *ps = &ld->f->plan[pi];
    const hcs_section *sec = &ld->f->sec[p->sec];
    int layer = (int)ps->layer;
    switch (ps->type) {
    case HCS_SEC_METADATA: memcpy(ld->meta + p->row0, p->raw, p->rows); return HC_OK;
    case HCS_SEC_WINDOW: return apply_window(ld, sec, p, layer, err, errsz);
    case HCS_SEC_COMP: return apply_entries(ld, p, layer, 0, err, errsz);
    case HCS_SEC_INDEX: return apply_entries(ld, p, layer, 1, err, errsz);
    case HCS_SEC_COMP_STATE: return apply_state(ld, sec, p, layer, 0, err, errsz);
    case HCS_SEC_INDEX_STATE: return apply_state(ld, sec, p, layer, 1, err, errsz);
    default: return HC_OK;
    }
}

static void hex8(const uint8_t *p, char *out)
{
    for (int i = 0; i < 8; i++) sprintf(out + 2 * (size_t)i, "%02x", p[i]);
}

static int check_model(const hc_ctx *c, const hcs_file *f, char *err, size_t errsz)
{
    const hc_model *m = c->model;
    int st = hcs_config_compare(&f->cfg, &m->cfg, err, errsz);
    if (st) return st;
    if (memcmp(f->rec.fingerprint, m->fingerprint, 16) != 0)
        return hci_errf(err, errsz, HC_ERR_MODEL_MISMATCH, "the session's configuration fingerprint differs from this model's");
    if ((f->rec.has_weights != 0) != (m->has_weights != 0))
        return hci_errf(err, errsz, HC_ERR_MODEL_MISMATCH,
                        f->rec.has_weights ? "the session belongs to a model with weights; this model is geometry-only"
                                           : "the session was saved from a geometry-only model; it loads only into a "
                                             "geometry-only model of the same configuration");
    if (memcmp(f->rec.fingerprint + 16, m->fingerprint + 16, 16) != 0) {
        char a[17], b[17];
        hex8(f->rec.fingerprint + 16, a), hex8(m->fingerprint + 16, b);
        return hci_errf(err, errsz, HC_ERR_MODEL_MISMATCH,
                        "same configuration, different weights (session %s..., model %s...)", a, b);
    }
    return HC_OK;
}

static void commit(loader *ld)
{
    hc_ctx *c = ld->c;
    int L = c->model->cfg.n_layers;
    for (int l = 0; l < L; l++)
        for (int k = 0; k < HCI_CACHE_COMPS; k++) {
            hci_comp_cache *cc = hci_cache_comp(&ld->sh[l], k);
            if (cc) cc->n_entries = ld->f->rec.n_tokens / cc->ratio;
        }
    hci_cache_commit(c->be, &c->layers, ld->sh, L);
    ld->sh = NULL;
    free(c->meta);
    c->meta = ld->meta, c->meta_len = ld->f->rec.metadata_length;
    ld->meta = NULL;
    c->n_tokens = ld->f->rec.n_tokens;
    c->next_layer = 0, c->chunk_n = 0;
    c->sess_generation = ld->f->rec.generation;
    c->hist_from = c->n_tokens; /* sessions hold no rollback history: it starts here */
}

int hcs_load(hc_ctx *c, const hcs_file *f, char *err, size_t errsz)
{
    int st = check_model(c, f, err, errsz);
    if (st) return st;
    if (f->rec.n_tokens > c->max_tokens)
        return hci_errf(err, errsz, HC_ERR_POSITION, "the session holds %" PRId64 " tokens, the context's maximum is %" PRId64,
                        f->rec.n_tokens, c->max_tokens);
    hci_trace *t = hci_trace_tls;
    uint64_t t0 = t ? hci_now_ns() : 0;
    if (t) t->backend = c->be->ops->name;
    loader ld;
    memset(&ld, 0, sizeof ld);
    ld.c = c, ld.f = f;
    const hci_config *cfg = &c->model->cfg;
    ld.cm = hcs_canon_main(cfg);
    ld.xm = hci_layout_main(c->cache_fmt, cfg->head_dim, cfg->rope_dim);
    size_t nf = hci_cache_max_state_floats(c->layers, cfg->n_layers);
    size_t ring = c->layers[0].ring.page_bytes * (size_t)c->layers[0].ring.n_pages;
    ld.ring = malloc(ring ? ring : 1);
    ld.kv = malloc(nf * sizeof(float));
    ld.sc = malloc(nf * sizeof(float));
    /* the metadata's size is proven by the file: METADATA is stored raw, inside the file */
    ld.meta = f->rec.metadata_length ? malloc((size_t)f->rec.metadata_length) : NULL;
    if (!ld.ring || !ld.kv || !ld.sc || (f->rec.metadata_length && !ld.meta))
        st = hci_errf(err, errsz, HC_ERR_OUT_OF_MEMORY, "out of memory");
    /* the stream reads into host pages: they exist first; else the shadow is made at the first piece */
    int host = host_pages(c);
    if (!st && host) st = prepare(&ld, err, errsz);
    /* async copies only into a block (host_alloc without it would gain nothing) */
    int async = !host && c->be->ops->pages_alloc_block && c->be->ops->host_alloc && c->be->ops->host_free &&
                c->be->ops->host_wait;
    ld.bufs = (hcs_bufs){bufs_alloc, bufs_free, bufs_wait, c->be};
    if (t0) hci_trace_add(t, HCI_T_SETUP, hci_now_ns() - t0, 0);
    hci_session_knobs knobs;
    hci_session_knobs_get(&knobs);
    int workers = hcs_workers(0, f->total_raw);
    if (workers && knobs.workers > 0) workers = knobs.workers;
    if (!st)
        st = hcs_file_stream(f, c->cache_fmt, workers, ld.dest, async ? &ld.bufs : NULL, apply, &ld, err, errsz);
    if (!st && !ld.prepared) st = prepare(&ld, err, errsz); /* a stream of no pieces */
    /* a rollback history starts at the loaded length: the state rows go into it */
    uint64_t t1 = t ? hci_now_ns() : 0;
    if (!st && (st = hci_hist_seed(c->be, ld.sh, cfg->n_layers, f->rec.n_tokens)))
        hci_errf(err, errsz, st, "writing the rollback history to the %s backend failed", c->be->ops->name);
    uint64_t t2 = t ? hci_now_ns() : 0;
    if (!st) commit(&ld);
    hci_cache_free(c->be, ld.sh, cfg->n_layers);
    if (t) {
        hci_trace_add(t, HCI_T_HIST, t2 - t1, 0);
        hci_trace_add(t, HCI_T_COMMIT, hci_now_ns() - t2, 0);
    }
    free(ld.meta), free(ld.ring), free(ld.kv), free(ld.sc), free(ld.dest), free(ld.block);
    return st;
}
