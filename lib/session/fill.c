/* fill.c - hc_x_ctx_fill_random(): valid random cache state without computing it, for
 * benchmarks and session tests. Entries are drawn directly in the canonical FP8/FP4 encoding
 * from normal-shaped code tables (what the quantization simulation of normal values gives),
 * with each block's largest code in the top binade so that the stored exponent is the one
 * packing chooses; then converted to the context's format and uploaded through the backend. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "entry.h"
#include "session.h"
#include "hybridctx_experimental.h"
#include "../util/error.h"
#include "../util/numerics.h"
#include "../util/threadpool.h"

typedef struct tables {
    uint8_t e4m3[256];  /* codes of N(0,1) * 120 quantiles, |value| <= 416 */
    uint16_t e4m3x2[65536]; /* two codes per 16 random bits */
    uint8_t e2m1x2[256]; /* two 4-bit codes of N(0,1) * 2 quantiles (16 levels each) */
    uint16_t bf16[256]; /* N(0,1) quantiles */
} tables;

static double normal_quantile(double p)
{
    double lo = -12, hi = 12;
    for (int i = 0; i < 80; i++) {
        double mid = 0.5 * (lo + hi);
        if (0.5 * erfc(-mid / sqrt(2.0)) < p) lo = mid;
        else hi = mid;
    }
    return 0.5 * (lo + hi);
}

static void make_tables(tables *t)
{
    uint8_t e2m1[16];
    for (int i = 0; i < 16; i++) e2m1[i] = hci_e2m1_encode(hci_e2m1_round((float)(normal_quantile((i + 0.5) / 16.0) * 2.0)));
    for (int i = 0; i < 256; i++) t->e2m1x2[i] = (uint8_t)(e2m1[i & 15] | e2m1[i >> 4] << 4);
    for (int i = 0; i < 256; i++) {
        double q = normal_quantile((i + 0.5) / 256.0);
        float a = hci_e4m3_round((float)(q * 120.0));
        t->e4m3[i] = hci_e4m3_encode(fmaxf(fminf(a, 416.0f), -416.0f));
        t->bf16[i] = hci_bf16_from_f32((float)q);
    }
    for (int i = 0; i < 65536; i++) t->e4m3x2[i] = (uint16_t)(t->e4m3[i & 255] | t->e4m3[i >> 8] << 8);
}

static uint64_t mix(uint64_t x)
{
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* xorshift64*: cheap and plenty for benchmark data; *s is seeded through mix() (never 0) */
static uint64_t next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1dull;
}

static uint64_t seeded(uint64_t v)
{
    uint64_t x = mix(v);
    return x ? x : 1;
}

/* One canonical entry (data d, scales s) of layout c: codes from the tables, and in each block
 * one code forced into the top binade (magnitude 256..416 for e4m3, 4 or 6 for e2m1; the
 * tables stay below), so that the block's largest code fixes its exponent as packing would. */
static void gen_entry(const tables *t, const hci_entry_layout *c, uint64_t *rs, uint8_t *d, uint8_t *s)
{
    int nb = c->quant_dim / c->qblock;
    memset(s, 0, (size_t)c->scale_bytes);
    for (int b = 0; b < nb; b++) {
        uint64_t u = next(rs);
        int k = (int)(u % (uint64_t)c->qblock);
        if (c->fp4) {
            uint8_t *p = d + b * c->qblock / 2;
            for (int i = 0; i < c->qblock / 2; i += 8) {
                uint64_t v = next(rs);
                for (int j = 0; j < 8; j++) p[i + j] = t->e2m1x2[(v >> 8 * j) & 255];
            }
            uint8_t code = (uint8_t)((u >> 8 & 8) | (6 + (u >> 9 & 1)));
            p[k / 2] = k & 1 ? (uint8_t)((p[k / 2] & 0x0f) | code << 4) : (uint8_t)((p[k / 2] & 0xf0) | code);
            s[b] = (uint8_t)(127 - 1 + (int)(u >> 16 & 1) - (int)(u >> 17 & 1));
        } else {
            uint8_t *p = d + (size_t)b * c->qblock;
            for (int i = 0; i < c->qblock; i += 8) {
                uint64_t v = next(rs);
                for (int j = 0; j < 4; j++) memcpy(p + i + 2 * (size_t)j, &t->e4m3x2[(v >> 16 * j) & 0xffff], 2);
            }
            p[k] = (uint8_t)((u >> 8 & 0x80) | (0x78 + (u >> 9) % 6));
            s[b] = (uint8_t)(127 - 6 + (int)(u >> 16 & 1) - (int)(u >> 17 & 1));
        }
    }
    uint8_t *rope = d + c->quant_dim;
    for (int i = 0; i < c->dim - c->quant_dim; i += 4) {
        uint64_t v = next(rs);
        for (int j = 0; j < 4 && i + j < c->dim - c->quant_dim; j++) {
            uint16_t h = t->bf16[(v >> 16 * j) & 255];
            memcpy(rope + 2 * (size_t)(i + j), &h, 2);
        }
    }
}

typedef struct fill_job {
    const tables *t;
    const hci_entry_layout *c, *x;
    uint8_t *host;       /* pages of the batch, context format */
    uint8_t *scratch;    /* per thread: one canonical block */
    size_t block_bytes;
    int64_t page0, n_entries;
    uint64_t seed;
} fill_job;

static void fill_pages(void *arg, int64_t lo, int64_t hi, int tid)
{
    fill_job *j = arg;
    size_t pb = hci_page_bytes(j->x);
    for (int64_t p = lo; p < hi; p++) {
        int64_t page = j->page0 + p, e0 = page * HCI_PAGE_ENTRIES;
        int k = (int)(j->n_entries - e0 < HCI_PAGE_ENTRIES ? j->n_entries - e0 : HCI_PAGE_ENTRIES);
        uint64_t rs = seeded(j->seed ^ mix((uint64_t)page));
        uint8_t *out = j->host + (size_t)p * pb;
        int direct = j->x->fmt == HCI_FMT_FP8 && k == HCI_PAGE_ENTRIES;
        /* cppcheck (2.10) takes `direct` for always false; full FP8 pages are common */
        // cppcheck-suppress knownConditionTrueFalse
        uint8_t *blk = direct ? out : j->scratch + (size_t)tid * j->block_bytes;
        for (int r = 0; r < k; r++)
            gen_entry(j->t, j->c, &rs, hcs_blk_data(j->c, blk, k, r), hcs_blk_scales(j->c, blk, k, r));
        // cppcheck-suppress knownConditionTrueFalse
        if (!direct) hcs_page_from_block(j->c, blk, k, j->x, out);
    }
}

typedef struct filler {
    hc_ctx *c;
    const tables *t;
    hci_pool *pool;
    uint8_t *host, *scratch;
    float *kv, *sc;
} filler;

#define BATCH_PAGES 32 /* a batch stays in cache until it is uploaded */

static int fill_entries(filler *F, hci_comp_cache *cc, uint64_t seed, int64_t n)
{
    hci_backend *be = F->c->be;
    int64_t ne = n / cc->ratio, pages = (ne + HCI_PAGE_ENTRIES - 1) / HCI_PAGE_ENTRIES;
    if (pages > 0x7fffffff) return HC_ERR_LIMIT;
    int st = hci_pages_prepare(be, &cc->entries, (int)pages, 0); /* every page is written */
    hci_entry_layout c = cc->rotate ? hcs_canon_index(&F->c->model->cfg) : hcs_canon_main(&F->c->model->cfg);
    fill_job j = {F->t, &c, &cc->layout, F->host, F->scratch, (size_t)HCI_PAGE_ENTRIES * c.entry_bytes, 0, ne, seed};
    for (int64_t p0 = 0; !st && p0 < pages; p0 += BATCH_PAGES) {
        int64_t np = pages - p0 < BATCH_PAGES ? pages - p0 : BATCH_PAGES;
        j.page0 = p0;
        hci_pool_for(F->pool, np, 1, fill_pages, &j);
        for (int64_t p = 0; p < np && !st; p++)
            st = be->ops->upload(be, cc->entries.pages[p0 + p], F->host + (size_t)p * cc->entries.page_bytes,
                                 cc->entries.page_bytes);
    }
    if (st) return st;
    cc->n_entries = ne;
    /* state: used rows finite, the others (0, -inf) */
    size_t nf = hci_comp_state_floats(cc), w2 = (size_t)cc->coff * cc->dc;
    for (size_t i = 0; i < nf; i++) F->kv[i] = 0.0f, F->sc[i] = -INFINITY;
    int rows[128], nr = hcs_state_rows(cc->ratio, n, rows);
    uint64_t rs = seeded(seed ^ 0x5157u);
    for (int r = 0; r < nr; r++)
        for (size_t i = 0; i < w2; i++) {
            uint64_t v = next(&rs);
            F->kv[(size_t)rows[r] * w2 + i] = hci_f32_from_bf16(F->t->bf16[v & 255]) + (float)(v >> 40 & 255) * 0x1p-12f;
            F->sc[(size_t)rows[r] * w2 + i] = hci_f32_from_bf16(F->t->bf16[v >> 8 & 255]) * 2.0f;
        }
    st = be->ops->upload(be, cc->state_kv, F->kv, nf * sizeof(float));
    if (!st) st = be->ops->upload(be, cc->state_score, F->sc, nf * sizeof(float));
    return st;
}

static int fill_window(filler *F, hci_layer_cache *lc, uint64_t seed, int64_t n)
{
    hci_backend *be = F->c->be;
    hci_entry_layout c = hcs_canon_main(&F->c->model->cfg);
    size_t pb = lc->ring.page_bytes;
    uint8_t *ring = F->host; /* host holds at least the ring */
    memset(ring, 0, pb * (size_t)lc->ring.n_pages);
    int64_t W = lc->window;
    for (int64_t pos = n > W ? n - W : 0; pos < n; pos++) {
        uint64_t rs = seeded(seed ^ mix((uint64_t)pos + 0x77));
        gen_entry(F->t, &c, &rs, hcs_blk_data(&c, F->scratch, 1, 0), hcs_blk_scales(&c, F->scratch, 1, 0));
        hcs_entry_from_canon(&c, F->scratch, 1, 0, &lc->win_layout, ring + (size_t)(pos % W / HCI_PAGE_ENTRIES) * pb,
                             (int)(pos % W % HCI_PAGE_ENTRIES));
    }
    int st = HC_OK;
    for (int p = 0; p < lc->ring.n_pages && !st; p++) st = be->ops->upload(be, lc->ring.pages[p], ring + (size_t)p * pb, pb);
    return st;
}

HC_API hc_status hc_x_ctx_fill_random(hc_ctx *c, int64_t n, uint64_t seed)
{
    if (!c) return HC_ERR_NULL_ARG;
    c->err[0] = 0;
    if (c->poisoned) return hci_errf(c->err, sizeof c->err, HC_ERR_BAD_STATE, "context poisoned by an earlier device fault");
    if (c->n_tokens || c->next_layer) return hci_errf(c->err, sizeof c->err, HC_ERR_BAD_STATE, "the context is not empty");
    if (n < 0) return hci_errf(c->err, sizeof c->err, HC_ERR_INVALID_ARG, "n_tokens %lld is negative", (long long)n);
    if (n > c->max_tokens)
        return hci_errf(c->err, sizeof c->err, HC_ERR_POSITION, "%lld tokens pass the maximum length %lld", (long long)n,
                        (long long)c->max_tokens);
    const hci_config *cfg = &c->model->cfg;
    tables *t = malloc(sizeof *t); /* 130 KiB: not on the caller's stack */
    if (!t) return hci_errf(c->err, sizeof c->err, HC_ERR_OUT_OF_MEMORY, "out of memory");
    make_tables(t);
    filler F = {c, t, NULL, NULL, NULL, NULL, NULL};
    hci_pool *own = NULL;
    F.pool = c->be->ops->host_pool ? c->be->ops->host_pool(c->be) : NULL;
    if (!F.pool) F.pool = own = hci_pool_create(0);
    size_t page_max = c->layers[0].ring.page_bytes, ring = page_max * (size_t)c->layers[0].ring.n_pages;
    size_t nf = hci_cache_max_state_floats(c->layers, cfg->n_layers);
    for (int l = 0; l < cfg->n_layers; l++)
        for (int k = 0; k < HCI_CACHE_COMPS; k++) {
            const hci_comp_cache *cc = hci_cache_comp_const(&c->layers[l], k);
            if (cc && cc->entries.page_bytes > page_max) page_max = cc->entries.page_bytes;
        }
    size_t host = page_max * BATCH_PAGES > ring ? page_max * BATCH_PAGES : ring;
    int threads = hci_pool_size(F.pool);
    F.host = malloc(host);
    F.scratch = malloc((size_t)threads * HCI_PAGE_ENTRIES * 1200);
    F.kv = malloc(nf * sizeof(float));
    F.sc = malloc(nf * sizeof(float));
    int st = (F.pool && F.host && F.scratch && F.kv && F.sc) ? HC_OK : HC_ERR_OUT_OF_MEMORY;
    for (int l = 0; l < cfg->n_layers && !st; l++) {
        hci_layer_cache *lc = &c->layers[l];
        uint64_t ls = mix(seed + 0x1000193u * (uint64_t)(l + 1));
        st = fill_window(&F, lc, ls ^ 1, n);
        for (int k = 0; k < HCI_CACHE_COMPS && !st; k++)
            if (hci_cache_comp(lc, k)) st = fill_entries(&F, hci_cache_comp(lc, k), ls ^ (uint64_t)(2 + k), n);
    }
    free(F.host), free(F.scratch), free(F.kv), free(F.sc), free(t);
    hci_pool_destroy(own);
    if (!st) st = hci_hist_seed(c->be, c->layers, cfg->n_layers, n); /* a rollback history starts here */
    if (st) {
        hci_cache_clear(c->be, c->layers, cfg->n_layers); /* back to empty: what is in the ring is never read at length 0 */
        return hci_errf(c->err, sizeof c->err, st, "filling %lld tokens failed", (long long)n);
    }
    c->n_tokens = n;
    c->hist_from = n;
    return HC_OK;
}
