/* writer.c - hc_ctx -> session bytes. The calling thread downloads cache pages through the
 * backend's ops (host or device memory alike) and writes finished chunks in file order; worker
 * threads convert, hash and compress them. Host memory: the slots' chunk buffers, the TOC, and
 * one layer's window ring and compressor state. A backend with pages_download and host_alloc
 * (CUDA) copies a chunk's entry pages into a slot's page-locked buffer asynchronously: the
 * calling thread queues the next chunks while the worker waits for its own (host_wait). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zstd.h>
#include "dio.h"
#include "entry.h"
#include "io.h"
#include "pipe.h"
#include "session.h"
#include "../util/error.h"
#include "../util/threadpool.h"

#define HOOK_EXTRA_BYTES 5000 /* size of the optional section the test hook adds (hcs_hooks) */

hcs_test_hooks hcs_hooks;

typedef struct wsec {
    hcs_plan_sec p;
    uint32_t flags, rpc, n_chunks, first_chunk;
    uint64_t offset, stored;
    const hci_layer_cache *lc;
    const hci_comp_cache *cc;
} wsec;

typedef struct wslot {
    uint32_t sec, chunk, rows, raw_size, stored_size, codec;
    uint64_t row0, hash;
    const uint8_t *raw, *stored;
    uint8_t *b_raw, *b_io, *b_pg;
    const uint8_t *pending;      /* a buffer that pages_download may still be filling, or NULL */
    int convert, status;
    char err[200];
    ZSTD_CCtx *zc;
} wslot;

typedef struct writer {
    const hc_ctx *c;
    hcs_sink *sink;
    wsec *secs;
    uint32_t n_secs, n_chunks, opened;
    hcs_chunk *chunks;
    wslot *slots;
    int n_slots, level, any_zstd;
    hcs_pipe *pipe;
    hci_entry_layout cm, ci, xm, xi; /* canonical and context layouts, main and indexer */
    int pin_raw, pin_pg;             /* the slots' b_raw / b_pg come from the backend's host_alloc */
    uint8_t *cfg_rec, *extra;
    uint8_t *ring;                   /* host copy of the current layer's window ring */
    float *st_kv, *st_sc;            /* host copy of the current compressor state */
    int st_rows[128];
    uint64_t wpos;
    uint64_t done, total_raw;        /* payload bytes written, of all (progress) */
    hcs_dio *dio;                    /* file sinks: the bytes from offset 4096 on are staged in units */
    int ucur;                        /* the unit being filled */
    uint64_t uoff;                   /* its file offset */
    size_t ufill, ucap;
    char *err;
    size_t errsz;
} writer;

static const uint8_t zeros[HCS_BLOCK];

int hcs_workers(int n_threads, uint64_t total_raw)
{
    if (total_raw < (2u << 20)) return 0; /* small sessions: no thread start-up */
    int n = n_threads > 0 ? n_threads : hci_online_cores();
    return n > 16 ? 16 : n; /* 16 hash/zstd workers outrun any disk; each costs ~3 MiB of buffers */
}

static int sink_write(hcs_sink *s, uint64_t off, const void *p, size_t n, char *err, size_t errsz)
{
    if (off + n > s->end) s->end = off + n;
    if (off <= s->cap && n <= s->cap - off) memcpy(s->buf + off, p, n); /* a caller buffer */
    (void)err, (void)errsz;
    return HC_OK;
}

/* Hand the unit being filled to the I/O thread and take the next one (once its previous
 * transfer has finished: a failure of that one surfaces here). */
static int stage_flush(writer *w)
{
    hcs_unit *u = hcs_dio_unit(w->dio, w->ucur);
    u->off = w->uoff, u->len = w->ufill;
    hcs_dio_submit(w->dio, w->ucur);
    w->uoff += w->ufill, w->ufill = 0;
    w->ucur = (w->ucur + 1) % HCS_IO_UNITS;
    return hcs_dio_wait(w->dio, w->ucur, w->err, w->errsz);
}

/* Everything after the superblock is written in file order: file sinks copy it into units of
 * ucap bytes (a multiple of 4096, so every unit but the last starts and ends aligned, as
 * O_DIRECT wants) that the I/O thread writes while this thread produces the next chunks. */
static int out_write(writer *w, uint64_t off, const void *p, size_t n)
{
    if (w->sink->fd < 0) return sink_write(w->sink, off, p, n, w->err, w->errsz);
    if (off != w->uoff + w->ufill)
        return hci_errf(w->err, w->errsz, HC_ERR_INTERNAL, "save: write at %llu out of order",
                        (unsigned long long)off);
    const uint8_t *b = p;
    while (n) {
        size_t k = w->ucap - w->ufill < n ? w->ucap - w->ufill : n;
        memcpy(hcs_dio_unit(w->dio, w->ucur)->buf + w->ufill, b, k);
        w->ufill += k, b += k, n -= k;
        if (w->ufill == w->ucap) {
            int st = stage_flush(w);
            if (st) return st;
        }
    }
    return HC_OK;
}

/* The last unit, every transfer finished, then the superblock (last: a file without it is not
 * a session). */
static int out_close(writer *w, const uint8_t *superblock)
{
    if (w->sink->fd < 0) return sink_write(w->sink, 0, superblock, HCS_BLOCK, w->err, w->errsz);
    int st = w->ufill ? stage_flush(w) : HC_OK;
    for (int i = 0; i < HCS_IO_UNITS; i++) {
        int s2 = hcs_dio_wait(w->dio, i, st ? NULL : w->err, st ? 0 : w->errsz);
        if (!st) st = s2;
    }
    if (st) return st;
    hcs_unit *u = hcs_dio_unit(w->dio, 0);
    memcpy(u->buf, superblock, HCS_BLOCK);
    u->off = 0, u->len = HCS_BLOCK;
    hcs_dio_submit(w->dio, 0);
    return hcs_dio_wait(w->dio, 0, w->err, w->errsz);
}

/* ---- the sections of a context ---- */

static int is_entry(uint32_t dtype) { return dtype == HCS_DT_FP8_ENTRY || dtype == HCS_DT_FP4_ENTRY; }

static uint32_t build_secs(const hc_ctx *c, wsec *out, const hcs_plan_sec *plan, uint32_t n_plan)
{
    uint32_t k = 0, chunk = 0;
    for (uint32_t i = 0; i < n_plan; i++) {
        wsec *s = &out[k++];
        memset(s, 0, sizeof *s);
        s->p = plan[i];
        s->rpc = hcs_plan_rows_per_chunk(&s->p);
        if (is_entry(s->p.dtype) && hcs_hooks.entry_rows_per_chunk) s->rpc = hcs_hooks.entry_rows_per_chunk;
        if (s->p.layer != HCS_NO_LAYER) {
            s->lc = &c->layers[s->p.layer];
            if (s->p.type == HCS_SEC_COMP || s->p.type == HCS_SEC_COMP_STATE) s->cc = hci_cache_comp_const(s->lc, 0);
            if (s->p.type == HCS_SEC_INDEX || s->p.type == HCS_SEC_INDEX_STATE) s->cc = hci_cache_comp_const(s->lc, 1);
        }
        if (i == 1 && hcs_hooks.extra_section) { /* test hook: an optional section of a future minor */
            wsec *e = &out[k++];
            memset(e, 0, sizeof *e);
            e->p.type = hcs_hooks.extra_section, e->p.layer = HCS_NO_LAYER, e->p.dtype = HCS_DT_BYTES;
            e->p.row_bytes = 1, e->p.n_rows = HOOK_EXTRA_BYTES, e->flags = HCS_SEC_OPTIONAL, e->rpc = 4096;
        }
    }
    for (uint32_t i = 0; i < k; i++) {
        out[i].n_chunks = (uint32_t)((out[i].p.n_rows + out[i].rpc - 1) / out[i].rpc);
        out[i].first_chunk = chunk;
        chunk += out[i].n_chunks;
    }
    return k;
}

static uint64_t toc_bytes(uint32_t n_secs, uint32_t n_chunks)
{
    return HCS_TOC_HEAD + (uint64_t)HCS_SEC_ENTRY * n_secs + (uint64_t)HCS_CHUNK_ENTRY * n_chunks;
}

static int plan_of(const hc_ctx *c, hcs_plan_sec **plan, uint32_t *n_plan, wsec **secs, uint32_t *n_secs,
                   uint32_t *n_chunks)
{
    const hci_config *cfg = &c->model->cfg;
    *n_plan = hcs_plan_count(cfg);
    *plan = malloc(sizeof **plan * *n_plan);
    *secs = malloc(sizeof **secs * (*n_plan + 1));
    if (!*plan || !*secs) {
        free(*plan), free(*secs);
        *plan = NULL, *secs = NULL; /* the caller frees them too */
        return HC_ERR_OUT_OF_MEMORY;
    }
    hcs_plan_build(cfg, c->n_tokens, c->meta_len, *plan);
    *n_secs = build_secs(c, *secs, *plan, *n_plan);
    *n_chunks = (*n_secs ? (*secs)[*n_secs - 1].first_chunk + (*secs)[*n_secs - 1].n_chunks : 0);
    return HC_OK;
}

uint64_t hcs_save_size(const hc_ctx *c)
{
    hcs_plan_sec *plan;
    wsec *secs;
    uint32_t n_plan, n_secs, n_chunks;
    if (plan_of(c, &plan, &n_plan, &secs, &n_secs, &n_chunks)) return 0;
    uint64_t pos = HCS_BLOCK;
    for (uint32_t i = 0; i < n_secs; i++) pos = hcs_align(pos) + secs[i].p.n_rows * secs[i].p.row_bytes;
    pos = hcs_align(hcs_align(pos) + toc_bytes(n_secs, n_chunks)) + HCS_BLOCK;
    free(plan), free(secs);
    return pos;
}

/* ---- workers: convert pages, hash, compress ---- */

static void save_work(void *arg, int si)
{
    writer *w = arg;
    wslot *s = &w->slots[si];
    const wsec *ws = &w->secs[s->sec];
    s->status = HC_OK;
    hci_backend *be = w->c->be;
    if (s->pending && (s->status = be->ops->host_wait(be, s->pending, s->err, sizeof s->err))) return;
    if (s->convert) {
        int idx = ws->p.dtype == HCS_DT_FP4_ENTRY;
        const hci_entry_layout *x = idx ? &w->xi : &w->xm, *cl = idx ? &w->ci : &w->cm;
        size_t pb = hci_page_bytes(x);
        for (uint32_t b = 0; b * HCI_PAGE_ENTRIES < s->rows; b++) {
            int k = (int)(s->rows - b * HCI_PAGE_ENTRIES < HCI_PAGE_ENTRIES ? s->rows - b * HCI_PAGE_ENTRIES
                                                                            : HCI_PAGE_ENTRIES);
            if (hcs_block_from_page(x, s->b_pg + b * pb, cl, k, s->b_raw + (size_t)b * HCI_PAGE_ENTRIES * cl->entry_bytes)) {
                s->status = hci_errf(s->err, sizeof s->err, HC_ERR_INTERNAL,
                                     "layer %u %s: a cache value is off the FP8/FP4 grid", ws->p.layer,
                                     hcs_section_name(ws->p.type));
                return;
            }
        }
        s->raw = s->b_raw;
    }
    s->hash = hcs_hash(s->raw, s->raw_size);
    s->stored = s->raw, s->stored_size = s->raw_size, s->codec = HCS_CODEC_RAW;
    if (w->level && ws->p.type != HCS_SEC_METADATA && s->raw_size >= 128) {
        if (!s->zc) s->zc = ZSTD_createCCtx();
        /* keep the frame only when it saves at least 1/64 of the chunk */
        size_t cap = s->raw_size - s->raw_size / 64 - 1;
        size_t n = s->zc ? ZSTD_compressCCtx(s->zc, s->b_io, cap, s->raw, s->raw_size, w->level) : 0;
        if (s->zc && !ZSTD_isError(n) && n > 0 && n <= cap) {
            s->stored = s->b_io, s->stored_size = (uint32_t)n, s->codec = HCS_CODEC_ZSTD;
        }
    }
}

/* ---- the calling thread: produce chunks from the context ---- */

static int download(writer *w, void *dst, const void *src, size_t n)
{
    hci_backend *be = w->c->be;
    int st = be->ops->download(be, dst, src, n);
    if (st) hci_errf(w->err, w->errsz, st, "reading the cache from the %s backend failed", be->ops->name);
    return st;
}

static int produce_window(writer *w, const wsec *ws, wslot *s)
{
    const hci_layer_cache *lc = ws->lc;
    size_t pb = lc->ring.page_bytes;
    if (s->row0 == 0)
        for (int p = 0; p < lc->ring.n_pages; p++) {
            int st = download(w, w->ring + p * pb, lc->ring.pages[p], pb);
            if (st) return st;
        }
    int64_t n = w->c->n_tokens, W = lc->window;
    int64_t p0 = n > W ? n - W : 0;
    for (uint32_t r = 0; r < s->rows; r++) {
        int64_t slot = (p0 + (int64_t)(s->row0 + r)) % W;
        uint32_t b = r / HCI_PAGE_ENTRIES;
        int k = (int)(s->rows - b * HCI_PAGE_ENTRIES < HCI_PAGE_ENTRIES ? s->rows - b * HCI_PAGE_ENTRIES : HCI_PAGE_ENTRIES);
        uint8_t *blk = s->b_raw + (size_t)b * HCI_PAGE_ENTRIES * w->cm.entry_bytes;
        if (hcs_entry_to_canon(&w->xm, w->ring + (size_t)(slot / HCI_PAGE_ENTRIES) * pb, (int)(slot % HCI_PAGE_ENTRIES),
                               &w->cm, blk, k, (int)(r % HCI_PAGE_ENTRIES)))
            return hci_errf(w->err, w->errsz, HC_ERR_INTERNAL, "layer %u window: a cache value is off the FP8 grid",
                            ws->p.layer);
    }
    s->raw = s->b_raw;
    return HC_OK;
}

static int produce_state(writer *w, const wsec *ws, wslot *s)
{
    const hci_comp_cache *cc = ws->cc;
    size_t nf = hci_comp_state_floats(cc);
    if (s->row0 == 0) {
        int st = download(w, w->st_kv, cc->state_kv, nf * sizeof(float));
        if (!st) st = download(w, w->st_sc, cc->state_score, nf * sizeof(float));
        if (st) return st;
        hcs_state_rows(cc->ratio, w->c->n_tokens, w->st_rows);
    }
    size_t w2 = (size_t)cc->coff * cc->dc;
    for (uint32_t r = 0; r < s->rows; r++) {
        int row = w->st_rows[s->row0 + r];
        uint8_t *o = s->b_raw + (size_t)r * ws->p.row_bytes;
        memcpy(o, w->st_kv + (size_t)row * w2, w2 * sizeof(float));
        memcpy(o + w2 * sizeof(float), w->st_sc + (size_t)row * w2, w2 * sizeof(float));
    }
    s->raw = s->b_raw;
    return HC_OK;
}

static int produce_entries(writer *w, const wsec *ws, wslot *s)
{
    const hci_page_list *pl = &ws->cc->entries;
    size_t pb = pl->page_bytes;
    uint32_t b0 = (uint32_t)(s->row0 / HCI_PAGE_ENTRIES), nb = (s->rows + HCI_PAGE_ENTRIES - 1) / HCI_PAGE_ENTRIES;
    /* fp8 cache, whole pages: the page bytes are the canonical bytes */
    s->convert = !(w->c->cache_fmt == HCI_FMT_FP8 && s->rows % HCI_PAGE_ENTRIES == 0);
    uint8_t *dst = s->convert ? s->b_pg : s->b_raw;
    hci_backend *be = w->c->be;
    if (be->ops->pages_download) { /* one transfer; the worker waits for it (host_wait) */
        int st = be->ops->pages_download(be, pl, (int)b0, (int)nb, dst);
        if (st) return hci_errf(w->err, w->errsz, st, "reading the cache from the %s backend failed", be->ops->name);
        s->pending = be->ops->host_wait ? dst : NULL;
        s->raw = s->b_raw;
        return HC_OK;
    }
    for (uint32_t b = 0; b < nb; b++) {
        int st = download(w, dst + (size_t)b * pb, pl->pages[b0 + b], pb);
        if (st) return st;
    }
    s->raw = s->b_raw;
    return HC_OK;
}

static int produce(writer *w, wslot *s)
{
    const wsec *ws = &w->secs[s->sec];
    s->convert = 0, s->pending = NULL;
    switch (ws->p.type) {
    case HCS_SEC_CONFIG: s->raw = w->cfg_rec + s->row0; return HC_OK;
    case HCS_SEC_METADATA: s->raw = (const uint8_t *)w->c->meta + s->row0; return HC_OK;
    case HCS_SEC_WINDOW: return produce_window(w, ws, s);
    case HCS_SEC_COMP_STATE:
    case HCS_SEC_INDEX_STATE: return produce_state(w, ws, s);
    case HCS_SEC_COMP:
    case HCS_SEC_INDEX: return produce_entries(w, ws, s);
    default: s->raw = w->extra + s->row0; return HC_OK; /* the test hook's extra section */
    }
}

/* Sections are placed when their first chunk (or a later section's) is written. */
static int open_sections(writer *w, uint32_t upto)
{
    while (w->opened <= upto && w->opened < w->n_secs) {
        uint64_t off = hcs_align(w->wpos);
        if (off > w->wpos) {
            int st = out_write(w, w->wpos, zeros, (size_t)(off - w->wpos));
            if (st) return st;
        }
        w->wpos = off;
        w->secs[w->opened++].offset = off;
    }
    return HC_OK;
}

static int finish(writer *w, wslot *s)
{
    hcs_pipe_wait(w->pipe, (int)(s - w->slots));
    if (s->status) return hci_errf(w->err, w->errsz, s->status, "%s", s->err);
    int st = open_sections(w, s->sec);
    if (!st) st = out_write(w, w->wpos, s->stored, s->stored_size);
    if (st) return st;
    wsec *ws = &w->secs[s->sec];
    w->wpos += s->stored_size;
    ws->stored += s->stored_size;
    w->any_zstd |= s->codec == HCS_CODEC_ZSTD;
    hcs_chunk ch = {s->hash, s->stored_size, s->raw_size, s->codec, 0};
    w->chunks[ws->first_chunk + s->chunk] = ch;
    w->done += s->raw_size;
    if (w->c->progress && w->c->progress(w->c->progress_user, w->done, w->total_raw))
        return hci_errf(w->err, w->errsz, HC_ERR_ABORTED, "save stopped by the progress callback after %llu of %llu bytes",
                        (unsigned long long)w->done, (unsigned long long)w->total_raw);
    return HC_OK;
}

static int run_chunks(writer *w)
{
    uint64_t seq = 0, fin = 0;
    int st = HC_OK;
    for (uint32_t i = 0; i < w->n_secs && !st; i++) {
        const wsec *ws = &w->secs[i];
        for (uint32_t j = 0; j < ws->n_chunks && !st; j++, seq++) {
            wslot *s = &w->slots[seq % (uint64_t)w->n_slots];
            if (seq >= (uint64_t)w->n_slots && (st = finish(w, s))) break;
            if (seq >= (uint64_t)w->n_slots) fin++;
            s->sec = i, s->chunk = j, s->row0 = (uint64_t)j * ws->rpc;
            uint64_t left = ws->p.n_rows - s->row0;
            s->rows = (uint32_t)(left < ws->rpc ? left : ws->rpc);
            s->raw_size = s->rows * ws->p.row_bytes;
            if ((st = produce(w, s))) break;
            hcs_pipe_submit(w->pipe, (int)(seq % (uint64_t)w->n_slots));
        }
    }
    for (; fin < seq; fin++) { /* drain in order; after an error only wait */
        wslot *s = &w->slots[fin % (uint64_t)w->n_slots];
        if (st) hcs_pipe_wait(w->pipe, (int)(fin % (uint64_t)w->n_slots));
        else st = finish(w, s);
    }
    if (!st) st = open_sections(w, w->n_secs);
    return st;
}

/* ---- TOC, footer, superblock ---- */

static int write_tail(writer *w, uint64_t *total)
{
    const hc_ctx *c = w->c;
    uint64_t tl = toc_bytes(w->n_secs, w->n_chunks);
    uint8_t *toc = malloc(tl);
    if (!toc) return hci_errf(w->err, w->errsz, HC_ERR_OUT_OF_MEMORY, "out of memory for the TOC");
    memset(toc, 0, HCS_TOC_HEAD);
    memcpy(toc, hcs_magic_toc, 8);
    hcs_put32(toc + 8, w->n_secs), hcs_put32(toc + 12, w->n_chunks);
    hcs_put32(toc + 16, HCS_SEC_ENTRY), hcs_put32(toc + 20, HCS_CHUNK_ENTRY);
    for (uint32_t i = 0; i < w->n_secs; i++) {
        const wsec *ws = &w->secs[i];
        hcs_section e = {ws->p.type, 1, ws->flags, ws->p.layer, ws->p.dtype, ws->p.row_bytes, ws->rpc,
                         ws->p.n_rows, ws->offset, ws->stored, ws->p.n_rows * ws->p.row_bytes, ws->first_chunk,
                         ws->n_chunks};
        hcs_section_encode(&e, toc + HCS_TOC_HEAD + (size_t)i * HCS_SEC_ENTRY);
    }
    uint8_t *ct = toc + HCS_TOC_HEAD + (size_t)w->n_secs * HCS_SEC_ENTRY;
    for (uint32_t i = 0; i < w->n_chunks; i++) hcs_chunk_encode(&w->chunks[i], ct + (size_t)i * HCS_CHUNK_ENTRY);

    hcs_record r;
    memset(&r, 0, sizeof r);
    r.major = HCS_MAJOR, r.minor = hcs_hooks.minor ? hcs_hooks.minor : HCS_MINOR;
    r.endian = HCS_ENDIAN, r.block = HCS_BLOCK, r.record_size = HCS_RECORD_SIZE;
    r.required_flags = hcs_hooks.required_flags;
    r.optional_flags = (w->any_zstd ? HCS_FLAG_OPT_ZSTD : 0) | hcs_hooks.optional_flags;
    uint64_t toc_off = hcs_align(w->wpos), foot_off = hcs_align(toc_off + tl);
    r.file_length = foot_off + HCS_BLOCK, r.toc_offset = toc_off, r.toc_length = tl, r.toc_hash = hcs_hash(toc, tl);
    hcs_random(r.uuid, sizeof r.uuid);
    r.generation = c->sess_generation + 1;
    r.n_tokens = c->n_tokens;
    r.n_layers = (uint32_t)c->model->cfg.n_layers;
    r.cache_format = (uint32_t)c->cache_fmt, r.backend = (uint32_t)c->be->kind;
    r.has_weights = (uint32_t)c->model->has_weights;
    memcpy(r.fingerprint, c->model->fingerprint, 32);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    r.created_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    r.metadata_length = c->meta_len;
    snprintf(r.writer, sizeof r.writer, "libhybridctx %s", HC_VERSION_STRING);

    uint8_t block[HCS_BLOCK];
    int st = out_write(w, w->wpos, zeros, (size_t)(toc_off - w->wpos));
    if (!st) st = out_write(w, toc_off, toc, tl);
    if (!st) st = out_write(w, toc_off + tl, zeros, (size_t)(foot_off - toc_off - tl));
    hcs_footer_build(&r, block);
    if (!st) st = out_write(w, foot_off, block, HCS_BLOCK);
    hcs_superblock_build(&r, block);
    if (!st) st = out_close(w, block);
    free(toc);
    *total = r.file_length;
    return st;
}

/* ---- setup ---- */

static uint8_t *slot_buf(const writer *w, int pin, size_t n)
{
    hci_backend *be = w->c->be;
    void *p = NULL;
    if (!pin) return malloc(n);
    return be->ops->host_alloc(be, n, &p) == HC_OK ? p : NULL;
}

static int alloc_slots(writer *w)
{
    size_t cap_raw = 1, cap_pg = 1;
    for (uint32_t i = 0; i < w->n_secs; i++) {
        const wsec *ws = &w->secs[i];
        size_t raw = (size_t)ws->rpc * ws->p.row_bytes;
        if (ws->p.n_rows < ws->rpc) raw = (size_t)ws->p.n_rows * ws->p.row_bytes;
        if (raw > cap_raw) cap_raw = raw;
        if (is_entry(ws->p.dtype)) {
            size_t pages = (raw / ws->p.row_bytes + HCI_PAGE_ENTRIES - 1) / HCI_PAGE_ENTRIES;
            size_t pg = pages * (ws->cc ? ws->cc->entries.page_bytes : ws->lc->ring.page_bytes);
            if (pg > cap_pg) cap_pg = pg;
        }
    }
    w->slots = calloc((size_t)w->n_slots, sizeof *w->slots);
    if (!w->slots) return HC_ERR_OUT_OF_MEMORY;
    /* page-locked where pages_download lands: b_raw for whole fp8 blocks (the pages are the
     * canonical bytes), b_pg for pages to convert (every chunk of a bf16 context) */
    hci_backend *be = w->c->be;
    int pin = be->ops->pages_download && be->ops->host_alloc && be->ops->host_free && be->ops->host_wait;
    w->pin_raw = pin && w->c->cache_fmt == HCI_FMT_FP8, w->pin_pg = pin && w->c->cache_fmt != HCI_FMT_FP8;
    for (int i = 0; i < w->n_slots; i++) {
        wslot *s = &w->slots[i];
        s->b_raw = slot_buf(w, w->pin_raw, cap_raw);
        s->b_pg = slot_buf(w, w->pin_pg, cap_pg);
        s->b_io = w->level ? malloc(cap_raw) : NULL;
        if (!s->b_raw || !s->b_pg || (w->level && !s->b_io)) return HC_ERR_OUT_OF_MEMORY;
    }
    return HC_OK;
}

static void writer_free(writer *w)
{
    hcs_pipe_destroy(w->pipe);
    hcs_dio_destroy(w->dio);
    hci_backend *be = w->c->be;
    for (int i = 0; w->slots && i < w->n_slots; i++) {
        wslot *s = &w->slots[i];
        if (s->b_raw && w->pin_raw) be->ops->host_free(be, s->b_raw); /* after its transfers */
        else free(s->b_raw);
        if (s->b_pg && w->pin_pg) be->ops->host_free(be, s->b_pg);
        else free(s->b_pg);
        free(s->b_io);
        ZSTD_freeCCtx(s->zc);
    }
    free(w->slots), free(w->secs), free(w->chunks), free(w->cfg_rec), free(w->extra);
    free(w->ring), free(w->st_kv), free(w->st_sc);
}

int hcs_save(const hc_ctx *c, hcs_sink *sink, int level, int n_threads, uint64_t *total, char *err, size_t errsz)
{
    writer w;
    memset(&w, 0, sizeof w);
    w.c = c, w.sink = sink, w.level = level, w.err = err, w.errsz = errsz, w.wpos = HCS_BLOCK;
    const hci_config *cfg = &c->model->cfg;
    w.cm = hcs_canon_main(cfg), w.ci = hcs_canon_index(cfg);
    w.xm = hci_layout_main(c->cache_fmt, cfg->head_dim, cfg->rope_dim);
    w.xi = hci_layout_index(c->cache_fmt, cfg->index_head_dim);
    hcs_plan_sec *plan = NULL;
    uint32_t n_plan;
    int st = plan_of(c, &plan, &n_plan, &w.secs, &w.n_secs, &w.n_chunks);
    free(plan);
    if (st) return hci_errf(err, errsz, st, "out of memory");
    uint64_t total_raw = 0;
    for (uint32_t i = 0; i < w.n_secs; i++) total_raw += w.secs[i].p.n_rows * w.secs[i].p.row_bytes;
    w.total_raw = total_raw;
    int workers = hcs_workers(n_threads, total_raw);
    w.n_slots = workers ? 2 * workers + 2 : 1;
    size_t ring_bytes = c->layers[0].ring.page_bytes * (size_t)c->layers[0].ring.n_pages;
    size_t state_floats = hci_cache_max_state_floats(c->layers, cfg->n_layers);
    w.chunks = malloc(sizeof *w.chunks * (w.n_chunks ? w.n_chunks : 1));
    w.cfg_rec = malloc(hcs_config_size(cfg->n_layers));
    w.extra = hcs_hooks.extra_section ? malloc(HOOK_EXTRA_BYTES) : NULL; /* the test hook's section */
    w.ring = malloc(ring_bytes ? ring_bytes : 1);
    w.st_kv = malloc(state_floats * sizeof(float));
    w.st_sc = malloc(state_floats * sizeof(float));
    if (!w.chunks || !w.cfg_rec || (hcs_hooks.extra_section && !w.extra) || !w.ring || !w.st_kv || !w.st_sc || alloc_slots(&w)) {
        writer_free(&w);
        return hci_errf(err, errsz, HC_ERR_OUT_OF_MEMORY, "out of memory for the save buffers");
    }
    if (sink->fd >= 0) {
        w.uoff = HCS_BLOCK, w.ucap = hcs_hooks.io_unit ? hcs_hooks.io_unit : HCS_IO_UNIT;
        int direct = hcs_hooks.direct_io ? hcs_hooks.direct_io > 0 : total_raw >= HCS_DIRECT_MIN;
        if (!(w.dio = hcs_dio_create(sink->fd, sink->name, 1, direct, HCS_IO_UNITS, w.ucap, 1, NULL))) {
            writer_free(&w);
            return hci_errf(err, errsz, HC_ERR_OUT_OF_MEMORY, "out of memory for the save buffers");
        }
    }
    for (int i = 0; w.extra && i < HOOK_EXTRA_BYTES; i++) w.extra[i] = (uint8_t)(i * 7);
    hcs_config_encode(cfg, w.cfg_rec);
    w.pipe = hcs_pipe_create(workers, w.n_slots, save_work, &w);
    if (!w.pipe) {
        writer_free(&w);
        return hci_errf(err, errsz, HC_ERR_OUT_OF_MEMORY, "out of memory for the save workers");
    }
    st = run_chunks(&w);
    if (!st) st = write_tail(&w, total);
    writer_free(&w);
    return st;
}
