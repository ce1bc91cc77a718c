/* test_conformance.c - every op of every available backend against the CPU backend, on fresh
 * random inputs. A reference CPU context runs a prefix through the public API; each candidate
 * context is given the same caches, then every op of the backend table runs on both with the same
 * inputs, layer by layer, and each result is compared:
 *   load_input, q_path, kv_path, out_path, index_q, compress (entries and state), index_topk,
 *   attend, window_write (the ring), store_output.
 * Candidates: a second CPU backend (one thread, other piece size), which must agree bitwise
 * everywhere; CUDA when the module and a device are there (hc_backend_info_get), with the
 * tolerances of docs/cuda.md and bitwise equality where the backend promises it (compressed
 * entries, compressor state, indexer head weights, top-k sets, window). The seed comes from
 * HC_TEST_SEED or the clock, and is printed. Each candidate names its numerics: the CUDA
 * candidates that must give the CPU's bits ask for HC_NUMERICS_EXACT, "cuda (fast)" takes the
 * default, which is FAST on CUDA (docs/numerics.md). argv[1] "flash": three layers of V4-Flash geometry
 * (the GPU run); default: the tiny model. HC_CONFORM_ONLY=TEXT runs the candidates whose name
 * holds TEXT; HC_CONFORM_TOKENS=N sets the prefix plus piece length (e.g. more compressed entries
 * than V4-Flash's 512 top-k picks, so that the fast indexer's selections are really tested);
 * HC_TEST_FAST_OPTIONS (testopts.h) sets CUDA options on the FAST candidates; HC_CONFORM_PIECE=N
 * compares a piece of N tokens (default 64, at most the candidate's chunk). A candidate with the
 * fused projections (proj_in: decode_fused=1) has them checked bitwise against its own q_path,
 * kv_path and index_q. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "ctx/ctx.h"
#include "util/bf16.h"
#include "hybridctx_experimental.h"
#include "testopts.h"
#include "testutil.h"
#include "runner.h"

typedef struct candidate {
    const char *name;
    int backend, numerics, n_threads, max_chunk;
    int bitwise;           /* every result bitwise equal to the CPU's */
    double proj, out, att; /* otherwise: rel L2 bounds of the projections, out_path, attend */
    const char *options[4]; /* backend options set to 1, or "name=0" (hc_x_ctx_set_option) */
    int batch_invariant;    /* check that a token's projections do not depend on the call's others */
    double topk_overlap;    /* 0: top-k sets bitwise equal; else the least mean share of equal picks
                             * (fast scores), the picks then also deterministic and batch-invariant */
    double entries;         /* 0: compressed entries and state bitwise equal; else a rel L2 bound */
} candidate;

static const candidate candidates[] = {
    {"cpu (1 thread, pieces of 64)", HC_BACKEND_CPU, HC_NUMERICS_DEFAULT, 1, 64, 1, 0, 0, 0, {NULL}, 0, 0, 0},
    {"cuda (exact)", HC_BACKEND_CUDA, HC_NUMERICS_EXACT, 0, 512, 0, 2e-2, 2e-2, 2e-3, {NULL}, 0, 0, 0},
    /* the CUDA backend's alternative paths (docs/cuda.md, Options) must conform as well */
    {"cuda (exact, index_exact_only, attend_simple)", HC_BACKEND_CUDA, HC_NUMERICS_EXACT, 0, 512, 0, 2e-2, 2e-2,
     2e-3, {"index_exact_only", "attend_simple"}, 0, 0, 0},
    /* the fast GEMVs alone take the 64-token pieces: also checked for batch invariance */
    {"cuda (exact, gemv_fast)", HC_BACKEND_CUDA, HC_NUMERICS_EXACT, 0, 512, 0, 2e-2, 2e-2, 2e-3, {"gemv_fast"}, 1, 0,
     0},
    /* the wgmma FP8 GEMM (sm_90; elsewhere the option falls back) for the pieces past 64 tokens,
     * its rows checked for batch invariance (check_gemm_invariance: 80 and 144 of 208 tokens) */
    {"cuda (exact, gemv_fast, gemm_wgmma)", HC_BACKEND_CUDA, HC_NUMERICS_EXACT, 0, 512, 0, 2e-2, 2e-2, 2e-3,
     {"gemv_fast", "gemm_wgmma"}, 1, 0, 0},
    /* fast numerics, the default on CUDA (gemv_fast, index_fast, comp_fast): the docs/golden.md
     * share of the top-k picks */
    {"cuda (fast)", HC_BACKEND_CUDA, HC_NUMERICS_DEFAULT, 0, 512, 0, 2e-2, 2e-2, 2e-3, {NULL}, 1, 0.95, 1e-2},
    /* FAST on the kernels it had before 2026-12-07 (the native FP8 GEMM, the ping-pong attention
     * and the indexer's tensor-core head sum off), its rows checked for batch invariance */
    {"cuda (fast, previous kernels)", HC_BACKEND_CUDA, HC_NUMERICS_DEFAULT, 0, 512, 0, 2e-2, 2e-2, 2e-3,
     {"gemm_fp8_native=0", "attend_pingpong=0", "index_tcsum=0"}, 1, 0.95, 1e-2},
    /* FAST with the native FP8 prefill GEMM (off by default: NEXT-gemm-native.md), its rows
     * checked for batch invariance; HC_CONFORM_PIECE=256 compares its projections with the CPU's */
    {"cuda (fast, gemm_fp8_native)", HC_BACKEND_CUDA, HC_NUMERICS_DEFAULT, 0, 512, 0, 2e-2, 2e-2, 2e-3,
     {"gemm_fp8_native"}, 1, 0.95, 1e-2},
    /* the native FP8 GEMM for wo_b only (gemm_fp8_native_out): with HC_CONFORM_PIECE=256 its
     * out_path against the CPU's, the other projections FAST's usual kernels */
    {"cuda (fast, gemm_fp8_native_out)", HC_BACKEND_CUDA, HC_NUMERICS_DEFAULT, 0, 512, 0, 2e-2, 2e-2, 2e-3,
     {"gemm_fp8_native_out"}, 1, 0.95, 1e-2},
    /* the indexer's production fp32 head sum (index_f32sum, off by default: not the reference's
     * roundings, so its own share of the picks) */
    {"cuda (fast, index_f32sum)", HC_BACKEND_CUDA, HC_NUMERICS_DEFAULT, 0, 512, 0, 2e-2, 2e-2, 2e-3,
     {"index_f32sum"}, 1, 0.95, 1e-2},
    /* the projections of small pieces in fewer launches (decode_fused, off by default: EXACT up to
     * 16 tokens, FAST up to 64), bitwise the candidate's own ops (check_proj_in) */
    {"cuda (exact, decode_fused)", HC_BACKEND_CUDA, HC_NUMERICS_EXACT, 0, 512, 0, 2e-2, 2e-2, 2e-3, {"decode_fused"},
     0, 0, 0},
    {"cuda (fast, decode_fused)", HC_BACKEND_CUDA, HC_NUMERICS_DEFAULT, 0, 512, 0, 2e-2, 2e-2, 2e-3, {"decode_fused"},
     1, 0.95, 1e-2},
};

static const char *g_geom;
static int64_t g_tokens;
static uint64_t g_seed;

static hc_ctx *make(hc_model *m, int backend, int numerics, int n_threads, int max_chunk)
{
    hc_ctx_params p;
    hc_ctx_params_init(&p, sizeof p);
    p.backend = backend;
    p.numerics = numerics;
    p.n_threads = n_threads;
    p.max_chunk = max_chunk;
    p.cache_format = HC_CACHE_FP8;
    hc_ctx *c = NULL;
    ck_assert_int_eq(hc_ctx_create(m, &p, &c), HC_OK);
    return c;
}

/* A copy in host memory of n bytes of backend memory. */
static void *fetch(hc_ctx *c, const void *src, size_t n)
{
    void *h = malloc(n ? n : 1);
    ck_assert_int_eq(c->be->ops->download(c->be, h, src, n), HC_OK);
    return h;
}

static void put(hc_ctx *c, void *dst, const void *host, size_t n)
{
    ck_assert_int_eq(c->be->ops->upload(c->be, dst, host, n), HC_OK);
}

/* Make b's page list hold a's pages' bytes (a in host memory: the reference is a CPU context). */
static void mirror_pages(hc_ctx *cb, const hci_page_list *a, hci_page_list *b)
{
    ck_assert_int_eq(hci_pages_grow(cb->be, b, a->n_pages), HC_OK);
    for (int p = 0; p < a->n_pages; p++) put(cb, b->pages[p], a->pages[p], a->page_bytes);
}

static void mirror_comp(hc_ctx *cb, const hci_comp_cache *a, hci_comp_cache *b)
{
    mirror_pages(cb, &a->entries, &b->entries);
    size_t nf = hci_comp_state_floats(a) * sizeof(float);
    put(cb, b->state_kv, a->state_kv, nf);
    put(cb, b->state_score, a->state_score, nf);
    b->n_entries = a->n_entries;
}

/* Relative L2 of bf16 values (b's in backend memory), and whether all bits agree. */
static double cmp_bf16(hc_ctx *cb, const uint16_t *dev, const uint16_t *ref, size_t n, int *same)
{
    uint16_t *g = fetch(cb, dev, n * 2);
    float *a = malloc(n * 4), *r = malloc(n * 4);
    for (size_t i = 0; i < n; i++) a[i] = tu_bf16(g[i]), r[i] = tu_bf16(ref[i]);
    *same = memcmp(g, ref, n * 2) == 0;
    double e = tu_rel_l2(a, r, n);
    free(g), free(a), free(r);
    return e;
}

/* One bf16 result against the reference: bitwise for bitwise candidates, else within bound. */
static void check_bf16(const candidate *k, hc_ctx *cb, int l, const char *what, const uint16_t *dev,
                       const uint16_t *ref, size_t n, double bound, int must_be_equal)
{
    int same = 0;
    double e = cmp_bf16(cb, dev, ref, n, &same);
    printf("  layer %d %-14s rel L2 %.2e %s\n", l, what, e, same ? "(bitwise equal)" : "");
    if (k->bitwise || must_be_equal) ck_assert_msg(same, "%s: layer %d %s differs from the CPU's", k->name, l, what);
    else ck_assert_msg(e < bound, "%s: layer %d %s rel L2 %.3g >= %.3g", k->name, l, what, e, bound);
}

/* Rows [0, m) of the n-token result at dev equal those of the m-token call (bitwise). */
static void same_rows(hc_ctx *cb, const uint16_t *all, const uint16_t *dev, int m, size_t width, int l,
                      const char *what, int n)
{
    uint16_t *part = fetch(cb, dev, sizeof(uint16_t) * (size_t)m * width);
    ck_assert_msg(memcmp(part, all, sizeof(uint16_t) * (size_t)m * width) == 0,
                  "layer %d: %s of the first %d tokens differs from theirs in a call of %d", l, what, m, n);
    free(part);
}

/* A token's projections must not depend on the other tokens of the call: q_path of the piece's
 * first m tokens (m = 1, 5, 17, 40) gives bitwise the rows that the whole piece (already in ws.q)
 * gave at the same positions. cb's ws.x holds the piece's input. */
static void check_batch_invariance(hc_ctx *cb, int l, int n, int64_t pos0, int qw)
{
    const hci_backend_ops *ob = cb->be->ops;
    hci_workspace *w = &cb->ws;
    uint16_t *all = fetch(cb, w->q, sizeof(uint16_t) * (size_t)n * qw);
    static const int ms[] = {1, 5, 17, 40};
    for (size_t i = 0; i < sizeof ms / sizeof ms[0] && ms[i] < n; i++) {
        ck_assert_int_eq(ob->q_path(cb->be, l, ms[i], pos0, w->x, w->c, w->q), HC_OK);
        same_rows(cb, all, w->q, ms[i], qw, l, "q_path", n);
    }
    printf("  layer %d %-14s the rows of 1, 5, 17, 40 tokens equal theirs among %d (batch invariance)\n", l,
           "q_path", n);
    free(all);
}

/* The indexer's q and head weights of the first m tokens alone equal theirs in the call of n. */
static void check_index_q_invariance(hc_ctx *cb, int l, int n, int64_t pos0, int IH, int ID)
{
    const hci_backend_ops *ob = cb->be->ops;
    hci_workspace *w = &cb->ws;
    uint16_t *qi = fetch(cb, w->qi, sizeof(uint16_t) * (size_t)n * IH * ID), *wt = fetch(cb, w->w, sizeof(uint16_t) * (size_t)n * IH);
    static const int ms[] = {1, 17};
    for (size_t i = 0; i < sizeof ms / sizeof ms[0] && ms[i] < n; i++) {
        ck_assert_int_eq(ob->index_q(cb->be, l, ms[i], pos0, w->x, w->c, w->qi, w->w), HC_OK);
        same_rows(cb, qi, w->qi, ms[i], (size_t)IH * ID, l, "index_q qi", n);
        same_rows(cb, wt, w->w, ms[i], IH, l, "index_q w", n);
    }
    printf("  layer %d %-14s the rows of 1, 17 tokens equal theirs among %d (batch invariance)\n", l, "index_q", n);
    free(qi), free(wt);
}

/* A backend with proj_in (CUDA's option decode_fused, e.g. HC_TEST_FAST_OPTIONS=decode_fused=1):
 * the fused projections of the piece's first m tokens (m = 1, 17 and all n, where proj_in takes
 * them) equal bitwise what q_path, kv_path and index_q give. Overwrites the candidate's c, q, kv,
 * qi and w (the caller puts the reference's there next). */
static void check_proj_in(hc_ctx *cb, int l, int n, int64_t pos0, int ratio)
{
    const hci_config *cfg = &cb->model->cfg;
    const hci_backend_ops *ob = cb->be->ops;
    hci_workspace *w = &cb->ws;
    if (!ob->proj_in) return;
    const size_t wc = (size_t)cfg->q_lora_rank, wq = (size_t)cfg->n_heads * cfg->head_dim, wkv = (size_t)cfg->head_dim;
    const size_t wqi = (size_t)cfg->index_n_heads * cfg->index_head_dim, ww = (size_t)cfg->index_n_heads;
    const int ms[] = {1, 17, n};
    int done = 0;
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) {
        int m = ms[i];
        if (m > n || (i == 2 && n == 17) || !ob->proj_in_ok(cb->be, l, m)) continue;
        ck_assert_int_eq(ob->q_path(cb->be, l, m, pos0, w->x, w->c, w->q), HC_OK);
        ck_assert_int_eq(ob->kv_path(cb->be, l, m, pos0, w->x, w->kv), HC_OK);
        uint16_t *c = fetch(cb, w->c, sizeof(uint16_t) * m * wc), *q = fetch(cb, w->q, sizeof(uint16_t) * m * wq);
        uint16_t *kv = fetch(cb, w->kv, sizeof(uint16_t) * m * wkv), *qi = NULL, *wt = NULL;
        if (ratio == 4) {
            ck_assert_int_eq(ob->index_q(cb->be, l, m, pos0, w->x, w->c, w->qi, w->w), HC_OK);
            qi = fetch(cb, w->qi, sizeof(uint16_t) * m * wqi);
            wt = fetch(cb, w->w, sizeof(uint16_t) * m * ww);
        }
        ck_assert_int_eq(ob->proj_in(cb->be, l, m, pos0, w->x, w->c, w->q, w->kv, w->qi, w->w), HC_OK);
        same_rows(cb, c, w->c, m, wc, l, "proj_in c", m);
        same_rows(cb, q, w->q, m, wq, l, "proj_in q", m);
        same_rows(cb, kv, w->kv, m, wkv, l, "proj_in kv", m);
        if (ratio == 4) {
            same_rows(cb, qi, w->qi, m, wqi, l, "proj_in qi", m);
            same_rows(cb, wt, w->w, m, ww, l, "proj_in w", m);
        }
        free(c), free(q), free(kv), free(qi), free(wt);
        done++;
    }
    printf("  layer %d %-14s %d piece sizes bitwise as q_path, kv_path%s\n", l, "proj_in", done,
           ratio == 4 ? ", index_q" : "");
}

/* Pieces of more tokens than the GEMVs take (prefill) run the GEMMs (the own FP8 GEMM, wgmma or
 * mma.sync, and cuBLASLt's grouped bf16 GEMM with a pinned algorithm): a token's projections
 * must not depend on the piece's size there either. NB random tokens at pos0, then the first 80 and 144 alone:
 * q_path (c and q), kv_path, index_q (CSA) and out_path give the same rows. Overwrites the
 * layer's workspace. */
static void check_gemm_invariance(hc_ctx *cb, int l, int64_t pos0, int ratio)
{
    enum { NB = 208 };
    const hci_config *cfg = &cb->model->cfg;
    const hci_backend_ops *ob = cb->be->ops;
    hci_workspace *w = &cb->ws;
    if (w->tokens < NB) return;
    int D = cfg->dim, qw = cfg->n_heads * cfg->head_dim, C = cfg->q_lora_rank, d = cfg->head_dim;
    int IW = cfg->index_n_heads * cfg->index_head_dim, IH = cfg->index_n_heads;
    if (ob->reserve) ck_assert_int_eq(ob->reserve(cb->be, l, NB, pos0 + NB), HC_OK);
    size_t nx = (size_t)NB * D, no = (size_t)NB * qw;
    float *f = malloc(sizeof(float) * (nx > no ? nx : no));
    uint16_t *hx = malloc(sizeof(uint16_t) * nx), *ho = malloc(sizeof(uint16_t) * no);
    tu_fill_normal(f, nx, g_seed + 100 + l, 1.0f);
    for (size_t i = 0; i < nx; i++) hx[i] = hci_bf16_from_f32(f[i]);
    tu_fill_normal(f, no, g_seed + 200 + l, 1.0f);
    for (size_t i = 0; i < no; i++) ho[i] = hci_bf16_from_f32(f[i]);
    put(cb, w->x, hx, sizeof(uint16_t) * nx);
    ck_assert_int_eq(ob->q_path(cb->be, l, NB, pos0, w->x, w->c, w->q), HC_OK);
    ck_assert_int_eq(ob->kv_path(cb->be, l, NB, pos0, w->x, w->kv), HC_OK);
    uint16_t *c = fetch(cb, w->c, sizeof(uint16_t) * (size_t)NB * C), *q = fetch(cb, w->q, sizeof(uint16_t) * no);
    uint16_t *kv = fetch(cb, w->kv, sizeof(uint16_t) * (size_t)NB * d), *qi = NULL, *wt = NULL;
    if (ratio == 4) {
        ck_assert_int_eq(ob->index_q(cb->be, l, NB, pos0, w->x, w->c, w->qi, w->w), HC_OK);
        qi = fetch(cb, w->qi, sizeof(uint16_t) * (size_t)NB * IW);
        wt = fetch(cb, w->w, sizeof(uint16_t) * (size_t)NB * IH);
    }
    put(cb, w->o, ho, sizeof(uint16_t) * no);
    ck_assert_int_eq(ob->out_path(cb->be, l, NB, pos0, w->o, w->y), HC_OK);
    uint16_t *y = fetch(cb, w->y, sizeof(uint16_t) * nx);
    static const int ms[] = {80, 144};
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) {
        int m = ms[i];
        ck_assert_int_eq(ob->q_path(cb->be, l, m, pos0, w->x, w->c, w->q), HC_OK);
        same_rows(cb, c, w->c, m, C, l, "q_path c", NB);
        same_rows(cb, q, w->q, m, qw, l, "q_path q", NB);
        ck_assert_int_eq(ob->kv_path(cb->be, l, m, pos0, w->x, w->kv), HC_OK);
        same_rows(cb, kv, w->kv, m, d, l, "kv_path", NB);
        if (ratio == 4) {
            ck_assert_int_eq(ob->index_q(cb->be, l, m, pos0, w->x, w->c, w->qi, w->w), HC_OK);
            same_rows(cb, qi, w->qi, m, IW, l, "index_q qi", NB);
            same_rows(cb, wt, w->w, m, IH, l, "index_q w", NB);
        }
        put(cb, w->o, ho, sizeof(uint16_t) * no);
        ck_assert_int_eq(ob->out_path(cb->be, l, m, pos0, w->o, w->y), HC_OK);
        same_rows(cb, y, w->y, m, D, l, "out_path", NB);
    }
    printf("  layer %d %-14s the rows of 80, 144 tokens equal theirs among %d (prefill GEMMs)\n", l, "projections",
           NB);
    free(f), free(hx), free(ho), free(c), free(q), free(kv), free(qi), free(wt), free(y);
}

/* Entries [0, count) of two page lists, unpacked: identical values. */
static void check_entries(hc_ctx *cb, const hci_comp_cache *a, const hci_comp_cache *b, int l, const char *what)
{
    const hci_entry_layout *lay = &a->layout;
    float *va = malloc(sizeof(float) * lay->dim), *vb = malloc(sizeof(float) * lay->dim);
    size_t diff = 0;
    for (int p = 0; p * (int64_t)HCI_PAGE_ENTRIES < a->n_entries; p++) {
        unsigned char *pb = fetch(cb, b->entries.pages[p], b->entries.page_bytes);
        for (int e = 0; e < HCI_PAGE_ENTRIES && p * (int64_t)HCI_PAGE_ENTRIES + e < a->n_entries; e++) {
            hci_entry_unpack(lay, a->entries.pages[p], e, va);
            hci_entry_unpack(&b->layout, pb, e, vb);
            diff += memcmp(va, vb, sizeof(float) * lay->dim) != 0;
        }
        free(pb);
    }
    printf("  layer %d %-14s %lld entries, %zu differ\n", l, what, (long long)a->n_entries, diff);
    ck_assert_msg(diff == 0, "layer %d %s: %zu entries differ", l, what, diff);
    ck_assert_int_eq(a->n_entries, b->n_entries);
    size_t nf = hci_comp_state_floats(a) * sizeof(float);
    float *skv = fetch(cb, b->state_kv, nf), *ssc = fetch(cb, b->state_score, nf);
    ck_assert_msg(memcmp(skv, a->state_kv, nf) == 0 && memcmp(ssc, a->state_score, nf) == 0,
                  "layer %d %s: compressor state differs", l, what);
    free(skv), free(ssc), free(va), free(vb);
}

/* Relative L2 of a against the reference r; equal pairs (also equal infinities, which the
 * compressor state holds for slots not yet filled) add nothing, the norm is over finite r. */
static double rel_l2_eq(const float *a, const float *r, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (isfinite(r[i])) den += (double)r[i] * r[i];
        if (a[i] != r[i]) num += ((double)a[i] - r[i]) * ((double)a[i] - r[i]);
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* Entries [0, count) within a rel L2 bound (fast compressor projections), the state too. */
static void check_entries_close(hc_ctx *cb, const hci_comp_cache *a, const hci_comp_cache *b, int l, const char *what,
                                double bound)
{
    const hci_entry_layout *lay = &a->layout;
    size_t n = (size_t)a->n_entries * lay->dim;
    float *va = malloc(sizeof(float) * (n ? n : 1)), *vb = malloc(sizeof(float) * (n ? n : 1));
    for (int p = 0; p * (int64_t)HCI_PAGE_ENTRIES < a->n_entries; p++) {
        unsigned char *pb = fetch(cb, b->entries.pages[p], b->entries.page_bytes);
        for (int e = 0; e < HCI_PAGE_ENTRIES && p * (int64_t)HCI_PAGE_ENTRIES + e < a->n_entries; e++) {
            size_t i = ((size_t)p * HCI_PAGE_ENTRIES + e) * lay->dim;
            hci_entry_unpack(lay, a->entries.pages[p], e, va + i);
            hci_entry_unpack(&b->layout, pb, e, vb + i);
        }
        free(pb);
    }
    double err = rel_l2_eq(vb, va, n);
    ck_assert_int_eq(a->n_entries, b->n_entries);
    size_t nf = hci_comp_state_floats(a);
    float *skv = fetch(cb, b->state_kv, nf * sizeof(float)), *ssc = fetch(cb, b->state_score, nf * sizeof(float));
    double serr = fmax(rel_l2_eq(skv, a->state_kv, nf), rel_l2_eq(ssc, a->state_score, nf));
    printf("  layer %d %-14s %lld entries, rel L2 %.2e (state %.2e, bound %.0e)\n", l, what, (long long)a->n_entries,
           err, serr, bound);
    ck_assert_msg(err <= bound && serr <= bound, "layer %d %s: rel L2 %.3e / state %.3e above %.0e", l, what, err, serr,
                  bound);
    free(skv), free(ssc), free(va), free(vb);
}

/* The share of the reference's picks that the candidate also picks, over rows (equal counts of
 * valid picks required: visibility is exact in every mode). */
static double topk_overlap(const int32_t *a, const int32_t *b, int n, int K)
{
    double sum = 0;
    for (int r = 0; r < n; r++) {
        const int32_t *ra = a + (size_t)r * K, *rb = b + (size_t)r * K;
        int na = 0, nb = 0, same = 0;
        while (na < K && ra[na] >= 0) na++;
        while (nb < K && rb[nb] >= 0) nb++;
        ck_assert_msg(na == nb, "row %d: %d picks against the reference's %d", r, nb, na);
        for (int i = 0; i < na; i++)
            for (int j = 0; j < nb; j++)
                if (ra[i] == rb[j]) {
                    same++;
                    break;
                }
        sum += na ? (double)same / na : 1.0;
    }
    return n ? sum / n : 1.0;
}

/* Fast picks: the same bits when run again, and a token's row the same in a call of fewer. */
static void check_topk_stable(hc_ctx *cb, int l, const hci_comp_cache *idx, int n, int64_t pos0, int K, int IH,
                              int ID, const int32_t *first)
{
    const hci_backend_ops *ob = cb->be->ops;
    hci_workspace *w = &cb->ws;
    ck_assert_int_eq(ob->index_topk(cb->be, l, idx, n, pos0, w->qi, w->w, w->sel), HC_OK);
    int32_t *again = fetch(cb, w->sel, sizeof(int32_t) * (size_t)n * K);
    ck_assert_msg(memcmp(again, first, sizeof(int32_t) * (size_t)n * K) == 0, "layer %d: top-k not deterministic", l);
    free(again);
    int m = 17; /* the last m tokens alone */
    ck_assert_int_eq(ob->index_topk(cb->be, l, idx, m, pos0 + n - m, w->qi + (size_t)(n - m) * IH * ID,
                                    w->w + (size_t)(n - m) * IH, w->sel),
                     HC_OK);
    int32_t *part = fetch(cb, w->sel, sizeof(int32_t) * (size_t)m * K);
    ck_assert_msg(memcmp(part, first + (size_t)(n - m) * K, sizeof(int32_t) * (size_t)m * K) == 0,
                  "layer %d: top-k of the last %d tokens differs from theirs in a call of %d", l, m, n);
    free(part);
}

static void check_ring(hc_ctx *cb, const hci_layer_cache *a, const hci_layer_cache *b, int l)
{
    for (int p = 0; p < a->ring.n_pages; p++) {
        unsigned char *pb = fetch(cb, b->ring.pages[p], b->ring.page_bytes);
        ck_assert_msg(memcmp(pb, a->ring.pages[p], a->ring.page_bytes) == 0, "layer %d: window ring page %d differs", l, p);
        free(pb);
    }
}

static void conform(const candidate *k)
{
    hc_backend_info info = {.struct_size = sizeof info};
    ck_assert_int_eq(hc_backend_info_get(k->backend, 0, &info), HC_OK);
    if (info.state != HC_BACKEND_USABLE) {
        printf("%s: not available here (%s), skipped\n", k->name, info.detail);
        return;
    }
    hc_model *m = NULL;
    ck_assert_int_eq(hc_model_create_random(g_geom, g_seed, NULL, &m), HC_OK);
    const hci_config *cfg = &m->cfg;
    int L = cfg->n_layers, D = cfg->dim, H = cfg->n_heads, d = cfg->head_dim, K = cfg->index_topk;
    int IH = cfg->index_n_heads, ID = cfg->index_head_dim, n = 64;
    /* HC_CONFORM_PIECE=N: a piece of N tokens (64 to the candidate's chunk), so that the prefill
     * GEMMs rather than the GEMVs make its projections */
    const char *piece = getenv("HC_CONFORM_PIECE");
    if (piece && atoi(piece) > n) n = atoi(piece) < k->max_chunk ? atoi(piece) : k->max_chunk;
    int64_t T = g_tokens, pos0 = T - n;
    hc_ctx *ca = make(m, HC_BACKEND_CPU, HC_NUMERICS_DEFAULT, 0, 512);
    hc_ctx *cb = make(m, k->backend, k->numerics, k->n_threads, k->max_chunk);
    /* DEFAULT: FAST on CUDA, EXACT on the CPU */
    ck_assert_int_eq(hc_ctx_numerics(ca), HC_NUMERICS_EXACT);
    ck_assert_int_eq(hc_ctx_numerics(cb), k->backend == HC_BACKEND_CUDA && k->numerics != HC_NUMERICS_EXACT
                                              ? HC_NUMERICS_FAST
                                              : HC_NUMERICS_EXACT);
    for (int i = 0; i < 4 && k->options[i]; i++)
        ck_assert_msg(tu_set_option(cb, k->options[i]) == HC_OK, "%s: %s", k->options[i], hc_ctx_last_error(cb));
    ck_assert_int_eq(tu_fast_env_options(cb), 0); /* HC_TEST_FAST_OPTIONS on the FAST candidates */
    /* the CPU backend has no options; unknown names and bad values are refused */
    ck_assert_int_eq(hc_x_ctx_set_option(ca, "attend_simple", 1), HC_ERR_UNSUPPORTED);
    ck_assert_int_eq(hc_x_ctx_set_option(cb, "no_such_option", 1), HC_ERR_UNSUPPORTED);
    ck_assert_int_eq(hc_x_ctx_set_option(cb, NULL, 1), HC_ERR_NULL_ARG);
    if (k->backend == HC_BACKEND_CUDA) ck_assert_int_eq(hc_x_ctx_set_option(cb, "attend_simple", 2), HC_ERR_INVALID_ARG);
    size_t nx = (size_t)L * T * D;
    float *x = malloc(nx * sizeof(float)), *y = malloc(nx * sizeof(float));
    tu_fill_normal(x, nx, g_seed + 1, 1.0f);
    /* the prefix through the public API, as one chunk per layer */
    for (int l = 0; l < L; l++)
        ck_assert_msg(hc_append(ca, l, x + (size_t)l * T * D, pos0, y + (size_t)l * T * D) == HC_OK, "%s",
                      hc_ctx_last_error(ca));
    printf("%s vs cpu: %s geometry, %lld-token prefix, a piece of %d tokens, seed %llu\n", k->name,
           L == 4 ? "tiny" : "v4-flash", (long long)pos0, n, (unsigned long long)g_seed);
    const hci_backend_ops *oa = ca->be->ops, *ob = cb->be->ops;
    hci_workspace *wa = &ca->ws, *wb = &cb->ws;
    for (int l = 0; l < L; l++) {
        hci_layer_cache *a = &ca->layers[l], *b = &cb->layers[l];
        mirror_pages(cb, &a->ring, &b->ring);
        for (int c = 0; c < HCI_CACHE_COMPS; c++)
            if (hci_cache_comp(a, c)) mirror_comp(cb, hci_cache_comp(a, c), hci_cache_comp(b, c));
        if (ob->reserve) ck_assert_int_eq(ob->reserve(cb->be, l, n, T), HC_OK);
        /* the input */
        const float *xl = x + ((size_t)l * T + pos0) * D;
        ck_assert_int_eq(oa->load_input(ca->be, xl, HC_DTYPE_F32, 1, (int64_t)n * D, wa->x), HC_OK);
        ck_assert_int_eq(ob->load_input(cb->be, xl, HC_DTYPE_F32, 1, (int64_t)n * D, wb->x), HC_OK);
        check_bf16(k, cb, l, "load_input", wb->x, wa->x, (size_t)n * D, 0, 1);
        /* projections */
        ck_assert_int_eq(oa->q_path(ca->be, l, n, pos0, wa->x, wa->c, wa->q), HC_OK);
        ck_assert_int_eq(oa->kv_path(ca->be, l, n, pos0, wa->x, wa->kv), HC_OK);
        ck_assert_int_eq(ob->q_path(cb->be, l, n, pos0, wb->x, wb->c, wb->q), HC_OK);
        ck_assert_int_eq(ob->kv_path(cb->be, l, n, pos0, wb->x, wb->kv), HC_OK);
        check_bf16(k, cb, l, "q_path c", wb->c, wa->c, (size_t)n * cfg->q_lora_rank, k->proj, 0);
        check_bf16(k, cb, l, "q_path q", wb->q, wa->q, (size_t)n * H * d, k->proj, 0);
        check_bf16(k, cb, l, "kv_path", wb->kv, wa->kv, (size_t)n * d, k->proj, 0);
        if (k->batch_invariant) check_batch_invariance(cb, l, n, pos0, H * d);
        check_proj_in(cb, l, n, pos0, a->ratio);
        /* from here on both take the CPU's results as inputs */
        put(cb, wb->c, wa->c, sizeof(uint16_t) * (size_t)n * cfg->q_lora_rank);
        put(cb, wb->q, wa->q, sizeof(uint16_t) * (size_t)n * H * d);
        put(cb, wb->kv, wa->kv, sizeof(uint16_t) * (size_t)n * d);
        if (a->ratio == 4) {
            ck_assert_int_eq(oa->index_q(ca->be, l, n, pos0, wa->x, wa->c, wa->qi, wa->w), HC_OK);
            ck_assert_int_eq(ob->index_q(cb->be, l, n, pos0, wb->x, wb->c, wb->qi, wb->w), HC_OK);
            check_bf16(k, cb, l, "index_q qi", wb->qi, wa->qi, (size_t)n * IH * ID, k->proj, 0);
            /* the head weights come from the compressor-type projection: exact unless comp_fast */
            check_bf16(k, cb, l, "index_q w", wb->w, wa->w, (size_t)n * IH, k->entries ? k->proj : 0, !k->entries);
            if (k->batch_invariant) check_index_q_invariance(cb, l, n, pos0, IH, ID);
            put(cb, wb->qi, wa->qi, sizeof(uint16_t) * (size_t)n * IH * ID);
            put(cb, wb->w, wa->w, sizeof(uint16_t) * (size_t)n * IH);
        }
        ck_assert_int_eq(hci_cache_prepare(ca->be, a, T), HC_OK);
        ck_assert_int_eq(hci_cache_prepare(cb->be, b, T), HC_OK);
        for (int c = 0; c < HCI_CACHE_COMPS; c++) {
            hci_comp_cache *cca = hci_cache_comp(a, c), *ccb = hci_cache_comp(b, c);
            if (!cca) continue;
            ck_assert_int_eq(oa->compress(ca->be, l, c, cca, n, pos0, wa->x), HC_OK);
            ck_assert_int_eq(ob->compress(cb->be, l, c, ccb, n, pos0, wb->x), HC_OK);
            if (k->entries) {
                check_entries_close(cb, cca, ccb, l, c ? "compress idx" : "compress main", k->entries);
                mirror_comp(cb, cca, ccb); /* the next ops take the reference's entries */
            } else {
                check_entries(cb, cca, ccb, l, c ? "compress idx" : "compress main");
            }
        }
        if (a->ratio == 4) {
            ck_assert_int_eq(oa->index_topk(ca->be, l, &a->idx, n, pos0, wa->qi, wa->w, wa->sel), HC_OK);
            ck_assert_int_eq(ob->index_topk(cb->be, l, &b->idx, n, pos0, wb->qi, wb->w, wb->sel), HC_OK);
            int32_t *sb = fetch(cb, wb->sel, sizeof(int32_t) * (size_t)n * K);
            if (k->topk_overlap > 0) {
                double ov = topk_overlap(wa->sel, sb, n, K);
                printf("  layer %d %-14s %d x %d selections, %.4f of the picks shared (at least %.2f)\n", l,
                       "index_topk", n, K, ov, k->topk_overlap);
                ck_assert_msg(ov >= k->topk_overlap, "%s: layer %d top-k overlap %.4f", k->name, l, ov);
                check_topk_stable(cb, l, &b->idx, n, pos0, K, IH, ID, sb);
                put(cb, wb->sel, wa->sel, sizeof(int32_t) * (size_t)n * K); /* attend takes the same picks */
            } else {
                ck_assert_msg(memcmp(sb, wa->sel, sizeof(int32_t) * (size_t)n * K) == 0, "%s: layer %d top-k differs",
                              k->name, l);
                printf("  layer %d %-14s %d x %d selections identical\n", l, "index_topk", n, K);
            }
            free(sb);
        }
        ck_assert_int_eq(oa->attend(ca->be, l, a, n, pos0, wa->q, wa->kv, a->ratio == 4 ? wa->sel : NULL, wa->o), HC_OK);
        ck_assert_int_eq(ob->attend(cb->be, l, b, n, pos0, wb->q, wb->kv, a->ratio == 4 ? wb->sel : NULL, wb->o), HC_OK);
        check_bf16(k, cb, l, "attend", wb->o, wa->o, (size_t)n * H * d, k->att, 0);
        ck_assert_int_eq(oa->window_write(ca->be, a, n, pos0, wa->kv), HC_OK);
        ck_assert_int_eq(ob->window_write(cb->be, b, n, pos0, wb->kv), HC_OK);
        check_ring(cb, a, b, l);
        put(cb, wb->o, wa->o, sizeof(uint16_t) * (size_t)n * H * d);
        ck_assert_int_eq(oa->out_path(ca->be, l, n, pos0, wa->o, wa->y), HC_OK);
        ck_assert_int_eq(ob->out_path(cb->be, l, n, pos0, wb->o, wb->y), HC_OK);
        check_bf16(k, cb, l, "out_path", wb->y, wa->y, (size_t)n * D, k->out, 0);
        /* the output conversion of the same bf16 values */
        put(cb, wb->y, wa->y, sizeof(uint16_t) * (size_t)n * D);
        float *ya = malloc(sizeof(float) * (size_t)n * D), *yb = malloc(sizeof(float) * (size_t)n * D);
        ck_assert_int_eq(oa->store_output(ca->be, wa->y, HC_DTYPE_F32, 1, (int64_t)n * D, ya), HC_OK);
        ck_assert_int_eq(ob->store_output(cb->be, wb->y, HC_DTYPE_F32, 1, (int64_t)n * D, yb), HC_OK);
        ck_assert_msg(memcmp(ya, yb, sizeof(float) * (size_t)n * D) == 0, "layer %d: store_output differs", l);
        free(ya), free(yb);
        if (k->batch_invariant) check_gemm_invariance(cb, l, pos0, a->ratio);
    }
    free(x), free(y);
    hc_ctx_free(ca), hc_ctx_free(cb);
    hc_model_free(m);
}

START_TEST(every_op)
{
    const char *only = getenv("HC_CONFORM_ONLY");
    if (only && !strstr(candidates[_i].name, only)) return;
    conform(&candidates[_i]);
}
END_TEST

Suite *tu_suite(int argc, char **argv)
{
    int flash = argc > 1 && !strcmp(argv[1], "flash");
    g_geom = flash ? "{\"num_hidden_layers\": 3, \"compress_ratios\": [0, 4, 128]}" : "tiny";
    g_tokens = flash ? 1200 : 700;
    const char *tk = getenv("HC_CONFORM_TOKENS"); /* a longer prefix: more entries than top-k picks */
    if (tk && atoll(tk) > 64) g_tokens = atoll(tk);
    const char *s = getenv("HC_TEST_SEED");
    g_seed = s ? strtoull(s, NULL, 10) : (uint64_t)time(NULL);
    Suite *su = suite_create("conformance");
    TCase *tc = tcase_create("ops");
    tcase_set_timeout(tc, 1200);
    tcase_add_loop_test(tc, every_op, 0, (int)(sizeof candidates / sizeof candidates[0]));
    suite_add_tcase(su, tc);
    return su;
}
