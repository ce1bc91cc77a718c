/* test_gpu.c - the CUDA backend against the CPU backend, on fresh random inputs, in both numerics
 * (docs/numerics.md): whole layers, both cache formats (EXACT: outputs within the documented
 * tolerance, compressed entries and indexer keys identical, top-k sets equal; FAST: the faithful
 * tolerance of docs/golden.md), split invariance, prefill against decode and determinism,
 * sessions across backends and numerics and through the asynchronous transfers, device-memory
 * I/O, host-memory I/O through the pinned staging pieces (in the default numerics, FAST on CUDA);
 * in the case "decode-fused", the option decode_fused against the ops one by one, bitwise.
 * Exits 77 (skipped) where there is no CUDA device. Tolerances: docs/cuda.md. HC_TEST_FAST_OPTIONS
 * (testopts.h) sets CUDA options on every FAST context, e.g. gemm_fp8_native=1. */
#include <check.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "ctx/ctx.h"
#include "session/session.h"
#include "util/bf16.h"
#include "test_session_util.h"
#include "hybridctx_experimental.h"
#include "testopts.h"
#include "testutil.h"
#include "runner.h"

static const char *g_geom;       /* preset or config JSON */
static int64_t g_tokens;         /* context length of the whole-layer runs */

/* The faithful tolerance (docs/golden.md, docs/numerics.md): what FAST promises against the
 * reference, and what it is held to here against the CPU backend and between its own paths. */
#define TOL_LAYER 1e-2 /* rel L2 of a layer's outputs */
#define TOL_TOKEN 5e-2 /* rel L2 of a token whose top-k set is the other's */
#define TOL_P95 3e-2   /* the 95th percentile of the tokens' rel L2 */
#define TOL_TOPK 0.95  /* the least mean share of the other's top-k picks picked */

static const char *mode_name(int numerics) { return numerics == HC_NUMERICS_FAST ? "fast" : "exact"; }

/* A context in the given numerics (the CPU computes EXACT whatever is asked). */
static hc_ctx *make_n(hc_model *m, int backend, int fmt, int numerics, int max_chunk)
{
    hc_ctx_params p;
    hc_ctx_params_init(&p, sizeof p);
    p.backend = backend;
    p.cache_format = fmt;
    p.max_chunk = max_chunk;
    p.numerics = numerics;
    hc_ctx *c = NULL;
    ck_assert_int_eq(hc_ctx_create(m, &p, &c), HC_OK);
    int want = backend == HC_BACKEND_CPU || numerics == HC_NUMERICS_EXACT ? HC_NUMERICS_EXACT : HC_NUMERICS_FAST;
    ck_assert_int_eq(hc_ctx_numerics(c), want); /* HC_NUMERICS_DEFAULT: FAST on CUDA */
    ck_assert_int_eq(tu_fast_env_options(c), 0);
    return c;
}

/* In the default numerics (FAST on CUDA): the tests of I/O paths, which compare CUDA with CUDA. */
static hc_ctx *make(hc_model *m, int backend, int fmt) { return make_n(m, backend, fmt, HC_NUMERICS_DEFAULT, 512); }

static void download(hc_ctx *c, void *dst, const void *src, size_t n)
{
    ck_assert_int_eq(c->be->ops->download(c->be, dst, src, n), HC_OK);
}

/* All values of entries [0, count) of a page list, through the backend. */
static float *entries(hc_ctx *c, const hci_entry_layout *l, const hci_page_list *pl, int64_t count)
{
    float *v = malloc(sizeof(float) * (size_t)(count ? count : 1) * l->dim);
    unsigned char *page = malloc(pl->page_bytes);
    for (int64_t j = 0; j < count; j++) {
        if (j % HCI_PAGE_ENTRIES == 0) download(c, page, pl->pages[j / HCI_PAGE_ENTRIES], pl->page_bytes);
        hci_entry_unpack(l, page, (int)(j % HCI_PAGE_ENTRIES), v + (size_t)j * l->dim);
    }
    free(page);
    return v;
}

static void run_chunks(hc_ctx *c, const float *x, int64_t total, const int *sizes, int ns, float *y, int32_t *sel)
{
    const hci_config *cfg = &c->model->cfg;
    int D = cfg->dim, L = cfg->n_layers, K = cfg->index_topk;
    int64_t t = 0;
    for (int k = 0; t < total; k++) {
        int64_t n = sizes[k % ns];
        if (n > total - t) n = total - t;
        for (int l = 0; l < L; l++) {
            ck_assert_msg(hc_append(c, l, x + ((size_t)l * total + t) * D, n, y + ((size_t)l * total + t) * D) == HC_OK,
                          "%s", hc_ctx_last_error(c));
            /* the selections of the last piece of the chunk (pieces of max_chunk tokens) */
            if (sel && cfg->ratios[l] == 4 && n <= c->ws.tokens)
                download(c, sel + ((size_t)l * total + t) * K, c->ws.sel, sizeof(int32_t) * (size_t)n * K);
        }
        t += n;
    }
}

static int same_set(const int32_t *a, const int32_t *b, int k)
{
    for (int i = 0; i < k; i++) {
        if (a[i] < 0) continue;
        int f = 0;
        for (int j = 0; j < k; j++) f |= a[i] == b[j];
        if (!f) return 0;
    }
    for (int i = 0; i < k; i++) if ((a[i] < 0) != (b[i] < 0)) return 0;
    return 1;
}

/* The share of ref's picks (-1: none) that a row also picks; 1 for a row without picks. */
static double shared_picks(const int32_t *a, const int32_t *ref, int k)
{
    int n = 0, f = 0;
    for (int i = 0; i < k; i++) {
        if (ref[i] < 0) continue;
        n++;
        for (int j = 0; j < k; j++)
            if (a[j] == ref[i]) {
                f++;
                break;
            }
    }
    return n ? (double)f / n : 1.0;
}

/* Tokens [t0, t1) of one layer, a against the reference r (outputs [T][D], selections [T][K] or
 * NULL): the layer's rel L2, the worst token among those whose top-k set equals r's, the 95th
 * percentile of all tokens, the rows with r's set and the mean share of r's picks. */
typedef struct layer_cmp {
    double rel, worst, p95, shared;
    int same, total;
} layer_cmp;

static layer_cmp compare_layer(const float *a, const float *r, const int32_t *sa, const int32_t *sr, int64_t t0,
                               int64_t t1, int D, int K)
{
    layer_cmp c = {tu_rel_l2(a + (size_t)t0 * D, r + (size_t)t0 * D, (size_t)(t1 - t0) * D), 0, 0, 0, 0, 0};
    double *e = malloc(sizeof(double) * (size_t)(t1 - t0));
    for (int64_t t = t0; t < t1; t++) {
        e[t - t0] = tu_rel_l2(a + (size_t)t * D, r + (size_t)t * D, (size_t)D);
        int ok = 1;
        if (sa) {
            ok = same_set(sa + (size_t)t * K, sr + (size_t)t * K, K);
            c.same += ok, c.total++;
            c.shared += shared_picks(sa + (size_t)t * K, sr + (size_t)t * K, K);
        }
        if (ok && e[t - t0] > c.worst) c.worst = e[t - t0];
    }
    c.p95 = tu_quantile(e, (size_t)(t1 - t0), 0.95);
    c.shared = c.total ? c.shared / c.total : 1.0;
    free(e);
    return c;
}

/* The faithful tolerance, or a message naming what is beyond it. */
static int within_faithful(const layer_cmp *c, char *why, size_t n)
{
    if (c->rel > TOL_LAYER) snprintf(why, n, "layer rel L2 %.3g > %.0e", c->rel, TOL_LAYER);
    else if (c->worst > TOL_TOKEN) snprintf(why, n, "a token's rel L2 %.3g > %.0e", c->worst, TOL_TOKEN);
    else if (c->p95 > TOL_P95) snprintf(why, n, "95th percentile token rel L2 %.3g > %.0e", c->p95, TOL_P95);
    else if (c->total && c->shared < TOL_TOPK) snprintf(why, n, "%.4f of the top-k picks shared", c->shared);
    else return 1;
    return 0;
}

/* Entries [0, count) of a page list of two contexts: whether every value is equal, and rel L2. */
static int same_entries(hc_ctx *ca, const hci_entry_layout *la, const hci_page_list *pa, hc_ctx *cb,
                        const hci_entry_layout *lb, const hci_page_list *pb, int64_t count, double *rel)
{
    float *ea = entries(ca, la, pa, count), *eb = entries(cb, lb, pb, count);
    size_t n = (size_t)count * la->dim;
    int same = memcmp(ea, eb, sizeof(float) * n) == 0;
    if (rel) *rel = tu_rel_l2(ea, eb, n);
    free(ea), free(eb);
    return same;
}

/* Whole layers, CPU vs CUDA, chunks of mixed sizes (prefill pieces and decode steps), the CPU run
 * once and CUDA in each numerics. EXACT: compressed entries and indexer keys identical, >= 98% of
 * the top-k sets equal, outputs within 1e-2 per layer (docs/cuda.md). FAST: the faithful
 * tolerance (TOL_*), entries and keys within 1e-2 rel L2. */
static void compare_backends(int fmt)
{
    hc_model *m = NULL;
    ck_assert_int_eq(hc_model_create_random(g_geom, 11, NULL, &m), HC_OK);
    const hci_config *cfg = &m->cfg;
    int L = cfg->n_layers, D = cfg->dim, K = cfg->index_topk;
    int64_t T = g_tokens;
    size_t nx = (size_t)L * T * D;
    float *x = malloc(nx * sizeof(float)), *yc = malloc(nx * sizeof(float)), *yg = malloc(nx * sizeof(float));
    int32_t *sc = calloc((size_t)L * T * K, 4), *sg = calloc((size_t)L * T * K, 4);
    tu_fill_normal(x, nx, 99, 1.0f);
    static const int sizes[] = {300, 1, 1, 1, 129, 7, 500, 1, 2, 64};
    hc_ctx *cc = make_n(m, HC_BACKEND_CPU, fmt, HC_NUMERICS_EXACT, 512);
    run_chunks(cc, x, T, sizes, 10, yc, sc);
    int bad = 0;
    static const int modes[2] = {HC_NUMERICS_EXACT, HC_NUMERICS_FAST};
    for (int mi = 0; mi < 2; mi++) {
        int fast = modes[mi] == HC_NUMERICS_FAST;
        hc_ctx *cg = make_n(m, HC_BACKEND_CUDA, fmt, modes[mi], 512);
        memset(sg, 0, (size_t)L * T * K * 4);
        run_chunks(cg, x, T, sizes, 10, yg, sg);
        printf("\n%s, %lld tokens, %s cache, CUDA in %s numerics\n%-6s %-5s %10s %10s %10s %12s %8s %10s %10s\n",
               L == 4 ? "tiny" : "v4-flash geometry", (long long)T, fmt == HC_CACHE_BF16 ? "bf16" : "fp8",
               mode_name(modes[mi]), "layer", "kind", "out relL2", "worst tok", "p95 tok", "topk equal", "shared",
               "entries", "idx keys");
        for (int l = 0; l < L; l++) {
            const float *a = yg + (size_t)l * T * D, *b = yc + (size_t)l * T * D;
            int csa = cfg->ratios[l] == 4;
            layer_cmp r = compare_layer(a, b, csa ? sg + (size_t)l * T * K : NULL, csa ? sc + (size_t)l * T * K : NULL, 0,
                                        T, D, K);
            double first = tu_rel_l2(a, b, (size_t)300 * D); /* the first chunk sees no ring */
            char ent[32] = "-", keys[32] = "-";
            hci_layer_cache *lg = &cg->layers[l], *lcpu = &cc->layers[l];
            for (int k = 0; k < 2; k++) {
                const hci_comp_cache *eg = k ? &lg->idx : &lg->comp, *ec = k ? &lcpu->idx : &lcpu->comp;
                if (!lg->ratio || (k && lg->ratio != 4)) continue;
                double rel = 0;
                int same = same_entries(cg, &eg->layout, &eg->entries, cc, &ec->layout, &ec->entries, T / lg->ratio, &rel);
                char *out = k ? keys : ent;
                if (same) snprintf(out, sizeof ent, "identical");
                else snprintf(out, sizeof ent, "%.2e", rel);
                bad |= fast ? rel > 1e-2 : !same; /* EXACT: identical; FAST: within rounding */
            }
            printf("%-6d %-5s %10.2e %10.2e %10.2e %6d/%-5d %8.4f %10s %10s  (first chunk %.2e)\n", l,
                   cfg->ratios[l] == 0 ? "SWA" : csa ? "CSA" : "HCA", r.rel, r.worst, r.p95, r.same, r.total, r.shared,
                   ent, keys, first);
            char why[128];
            if (fast && !within_faithful(&r, why, sizeof why)) {
                printf("  layer %d: %s\n", l, why);
                bad = 1;
            }
            if (!fast) bad |= r.rel >= 1e-2 || (r.total && r.same < 0.98 * r.total);
        }
        /* the window rings after the run (same positions on both) */
        for (int l = 0; l < L; l++) {
            hci_layer_cache *lg = &cg->layers[l], *lcpu = &cc->layers[l];
            float *rg = entries(cg, &lg->win_layout, &lg->ring, lg->window);
            float *rc = entries(cc, &lcpu->win_layout, &lcpu->ring, lg->window);
            printf("layer %d window ring: rel L2 %.2e\n", l, tu_rel_l2(rg, rc, (size_t)lg->window * cfg->head_dim));
            free(rg), free(rc);
        }
        hc_ctx_free(cg);
    }
    hc_ctx_free(cc);
    hc_model_free(m);
    free(x), free(yc), free(yg), free(sc), free(sg);
    ck_assert_msg(!bad, "CUDA and CPU disagree beyond tolerance (tables above)");
}

START_TEST(layers_bf16_cache) { compare_backends(HC_CACHE_BF16); }
END_TEST
START_TEST(layers_fp8_cache) { compare_backends(HC_CACHE_FP8); }
END_TEST

/* The same sequence split differently on the GPU, in each numerics: compressed entries and indexer
 * keys identical (a token's compressor and indexer projections do not depend on its chunk),
 * outputs within 1e-2 per layer and 3e-2 at the 95th percentile of the tokens (the pieces of
 * 1..5 tokens take the GEMVs, FAST's fast ones, the others the GEMMs). */
static void split_invariance(int numerics)
{
    hc_model *m = NULL;
    ck_assert_int_eq(hc_model_create_random(g_geom, 3, NULL, &m), HC_OK);
    int L = m->cfg.n_layers, D = m->cfg.dim;
    int64_t T = g_tokens;
    size_t nx = (size_t)L * T * D;
    float *x = malloc(nx * sizeof(float)), *y1 = malloc(nx * sizeof(float)), *y2 = malloc(nx * sizeof(float));
    tu_fill_normal(x, nx, 123, 1.0f);
    int whole[] = {(int)T}, parts[] = {1, 3, 4, 5, 127, 128, 129, 250};
    hc_ctx *a = make_n(m, HC_BACKEND_CUDA, HC_CACHE_FP8, numerics, 512);
    hc_ctx *b = make_n(m, HC_BACKEND_CUDA, HC_CACHE_FP8, numerics, 512);
    run_chunks(a, x, T, whole, 1, y1, NULL);
    run_chunks(b, x, T, parts, 8, y2, NULL);
    for (int l = 0; l < L; l++) {
        layer_cmp r = compare_layer(y2 + (size_t)l * T * D, y1 + (size_t)l * T * D, NULL, NULL, 0, T, D, 0);
        printf("split invariance (%s) layer %d: rel L2 %.2e, worst token %.2e, p95 %.2e\n", mode_name(numerics), l,
               r.rel, r.worst, r.p95);
        ck_assert_msg(r.rel < TOL_LAYER && r.p95 <= TOL_P95, "%s layer %d: %.3g (p95 %.3g)", mode_name(numerics), l,
                      r.rel, r.p95);
        hci_layer_cache *la = &a->layers[l], *lb = &b->layers[l];
        if (la->ratio)
            ck_assert_msg(same_entries(a, &la->comp.layout, &la->comp.entries, b, &lb->comp.layout, &lb->comp.entries,
                                       T / la->ratio, NULL),
                          "%s layer %d entries", mode_name(numerics), l);
        if (la->ratio == 4)
            ck_assert_msg(same_entries(a, &la->idx.layout, &la->idx.entries, b, &lb->idx.layout, &lb->idx.entries,
                                       T / 4, NULL),
                          "%s layer %d indexer keys", mode_name(numerics), l);
    }
    hc_ctx_free(a), hc_ctx_free(b);
    hc_model_free(m);
    free(x), free(y1), free(y2);
}

/* Every window slot, compressed entry and indexer key of two contexts at the same length: equal. */
static void assert_same_caches(hc_ctx *a, hc_ctx *b, const char *what)
{
    const hci_config *cfg = &a->model->cfg;
    int64_t n = hc_ctx_n_tokens(a);
    ck_assert_int_eq(hc_ctx_n_tokens(b), n);
    for (int l = 0; l < cfg->n_layers; l++) {
        hci_layer_cache *la = &a->layers[l], *lb = &b->layers[l];
        ck_assert_msg(n >= la->window, "the window must be full");
        ck_assert_msg(same_entries(a, &la->win_layout, &la->ring, b, &lb->win_layout, &lb->ring, la->window, NULL),
                      "%s: layer %d window differs", what, l);
        if (la->ratio)
            ck_assert_msg(same_entries(a, &la->comp.layout, &la->comp.entries, b, &lb->comp.layout, &lb->comp.entries,
                                       n / la->ratio, NULL),
                          "%s: layer %d compressed entries differ", what, l);
        if (la->ratio == 4)
            ck_assert_msg(same_entries(a, &la->idx.layout, &la->idx.entries, b, &lb->idx.layout, &lb->idx.entries,
                                       n / 4, NULL),
                          "%s: layer %d indexer keys differ", what, l);
    }
}

/* FAST options that promise FAST's bits (cuda_options.h): index_tcpipe, index_rega and index_tcmix
 * against index_tcsum's kernel, gemv_teams against the previous GEMVs. A prefix past the top-k
 * (picks are chosen, not all taken), then decode-sized pieces: outputs, the picks and the caches
 * (windows, compressed entries, indexer keys) bitwise equal. */
START_TEST(fast_options_same_bits)
{
    hc_model *m = NULL;
    ck_assert_int_eq(hc_model_create_random(g_geom, 5, NULL, &m), HC_OK);
    int L = m->cfg.n_layers, D = m->cfg.dim, K = m->cfg.index_topk;
    int64_t T = 8 * (int64_t)K + 8 + 4 * 64; /* a prefix of 8K + 8 tokens: the later half picks */
    size_t nx = (size_t)L * T * D, ns = (size_t)L * T * K;
    float *x = malloc(nx * sizeof(float)), *y1 = malloc(nx * sizeof(float)), *y2 = malloc(nx * sizeof(float));
    int32_t *s1 = calloc(ns, sizeof(int32_t)), *s2 = calloc(ns, sizeof(int32_t));
    ck_assert(x && y1 && y2 && s1 && s2);
    tu_fill_normal(x, nx, 77, 1.0f);
    const int parts[] = {8 * K + 8, 1, 2, 3, 17, 41, 64, 1, 127};
    hc_ctx *a = make_n(m, HC_BACKEND_CUDA, HC_CACHE_FP8, HC_NUMERICS_FAST, 512);
    ck_assert_int_eq(hc_x_ctx_set_option(a, "index_tcpipe", 0), HC_OK);
    ck_assert_int_eq(hc_x_ctx_set_option(a, "index_rega", 0), HC_OK);
    ck_assert_int_eq(hc_x_ctx_set_option(a, "index_tcmix", 0), HC_OK);
    ck_assert_int_eq(hc_x_ctx_set_option(a, "gemv_teams", 1), HC_OK);
    run_chunks(a, x, T, parts, 9, y1, s1);
    /* each against a: {option set to 1, gemv_teams} */
    static const struct { const char *option; int gemv_teams; } vars[] = {
        {"index_tcpipe", 0}, {"index_rega", 1}, {"index_tcmix", 1}};
    for (size_t v = 0; v < sizeof vars / sizeof vars[0]; v++) {
        hc_ctx *b = make_n(m, HC_BACKEND_CUDA, HC_CACHE_FP8, HC_NUMERICS_FAST, 512);
        ck_assert_int_eq(hc_x_ctx_set_option(b, vars[v].option, 1), HC_OK);
        ck_assert_int_eq(hc_x_ctx_set_option(b, "gemv_teams", vars[v].gemv_teams), HC_OK);
        run_chunks(b, x, T, parts, 9, y2, s2);
        for (int l = 0; l < L; l++) {
            ck_assert_msg(!memcmp(y1 + (size_t)l * T * D, y2 + (size_t)l * T * D, sizeof(float) * (size_t)T * D),
                          "%s: layer %d outputs differ", vars[v].option, l);
            ck_assert_msg(!memcmp(s1 + (size_t)l * T * K, s2 + (size_t)l * T * K, sizeof(int32_t) * (size_t)T * K),
                          "%s: layer %d picks differ", vars[v].option, l);
        }
        assert_same_caches(a, b, vars[v].option); /* windows, compressed entries, indexer keys */
        printf("fast options of the same bits (%s): %lld tokens, outputs, caches and picks equal\n",
               vars[v].option, (long long)T);
        hc_ctx_free(b);
    }
    hc_ctx_free(a);
    hc_model_free(m);
    free(x), free(y1), free(y2), free(s1), free(s2);
}
END_TEST

START_TEST(split_invariance_exact) { split_invariance(HC_NUMERICS_EXACT); }
END_TEST
START_TEST(split_invariance_fast) { split_invariance(HC_NUMERICS_FAST); }
END_TEST

/* Prefill against decode, and determinism, in each numerics. Context a takes T tokens as one chunk
 * (one piece: the prefill GEMMs); b takes T - ND of them as one chunk, then ND decode steps (the
 * GEMVs; FAST: the fast tensor-core GEMVs). The ND decoded tokens agree with a's within the
 * faithful tolerance (TOL_*: per layer, per token with an equal top-k set, 95th percentile, the
 * picks shared); compressed entries and indexer keys are identical (chunk-invariant in both
 * modes). Context b2 repeats b's calls and gives its bits: outputs, selections, window ring,
 * compressed entries, indexer keys (no atomics, fixed splits). */
#define ND 48
static void prefill_vs_decode(int numerics)
{
    hc_model *m = NULL;
    ck_assert_int_eq(hc_model_create_random(g_geom, 17, NULL, &m), HC_OK);
    const hci_config *cfg = &m->cfg;
    int L = cfg->n_layers, D = cfg->dim, K = cfg->index_topk;
    int64_t T = g_tokens; /* at most 2048: the whole chunk is one piece, its selections all in ws.sel */
    ck_assert(T - ND > 64 && T <= 2048);
    size_t nx = (size_t)L * T * D, ns = (size_t)L * T * K;
    float *x = malloc(nx * sizeof(float)), *ya = malloc(nx * sizeof(float));
    float *yb = malloc(nx * sizeof(float)), *yb2 = malloc(nx * sizeof(float));
    int32_t *sa = calloc(ns, 4), *sb = calloc(ns, 4), *sb2 = calloc(ns, 4);
    tu_fill_normal(x, nx, 171, 1.0f);
    int whole[] = {(int)T}, split[ND + 1];
    split[0] = (int)(T - ND);
    for (int i = 1; i <= ND; i++) split[i] = 1;
    hc_ctx *a = make_n(m, HC_BACKEND_CUDA, HC_CACHE_FP8, numerics, 2048);
    hc_ctx *b = make_n(m, HC_BACKEND_CUDA, HC_CACHE_FP8, numerics, 2048);
    hc_ctx *b2 = make_n(m, HC_BACKEND_CUDA, HC_CACHE_FP8, numerics, 2048);
    run_chunks(a, x, T, whole, 1, ya, sa);
    run_chunks(b, x, T, split, ND + 1, yb, sb);
    run_chunks(b2, x, T, split, ND + 1, yb2, sb2);
    int bad = 0;
    for (int l = 0; l < L; l++) {
        int csa = cfg->ratios[l] == 4;
        const int32_t *pb = csa ? sb + (size_t)l * T * K : NULL, *pa = csa ? sa + (size_t)l * T * K : NULL;
        layer_cmp r = compare_layer(yb + (size_t)l * T * D, ya + (size_t)l * T * D, pb, pa, T - ND, T, D, K);
        double head = tu_rel_l2(yb + (size_t)l * T * D, ya + (size_t)l * T * D, (size_t)(T - ND) * D);
        printf("prefill vs decode (%s) layer %d %s: the %d decoded tokens rel L2 %.2e, worst %.2e, p95 %.2e, top-k "
               "%d/%d equal, %.4f shared; the %lld prefilled %.2e\n",
               mode_name(numerics), l, cfg->ratios[l] == 0 ? "SWA" : csa ? "CSA" : "HCA", ND, r.rel, r.worst, r.p95,
               r.same, r.total, r.shared, (long long)(T - ND), head);
        char why[128];
        if (!within_faithful(&r, why, sizeof why) || head > TOL_LAYER) {
            printf("  layer %d: %s\n", l, head > TOL_LAYER ? "the prefilled tokens differ" : why);
            bad = 1;
        }
        hci_layer_cache *la = &a->layers[l], *lb = &b->layers[l], *lb2 = &b2->layers[l];
        if (la->ratio) {
            bad |= !same_entries(a, &la->comp.layout, &la->comp.entries, b, &lb->comp.layout, &lb->comp.entries,
                                 T / la->ratio, NULL);
            bad |= !same_entries(b, &lb->comp.layout, &lb->comp.entries, b2, &lb2->comp.layout, &lb2->comp.entries,
                                 T / la->ratio, NULL);
        }
        if (la->ratio == 4) {
            bad |= !same_entries(a, &la->idx.layout, &la->idx.entries, b, &lb->idx.layout, &lb->idx.entries, T / 4, NULL);
            bad |= !same_entries(b, &lb->idx.layout, &lb->idx.entries, b2, &lb2->idx.layout, &lb2->idx.entries, T / 4,
                                 NULL);
        }
        ck_assert_msg(same_entries(b, &lb->win_layout, &lb->ring, b2, &lb2->win_layout, &lb2->ring, lb->window, NULL),
                      "%s layer %d: the window ring differs between two identical runs", mode_name(numerics), l);
    }
    ck_assert_msg(memcmp(yb, yb2, nx * sizeof(float)) == 0, "%s: two identical runs give other outputs",
                  mode_name(numerics));
    ck_assert_msg(memcmp(sb, sb2, ns * 4) == 0, "%s: two identical runs select other entries", mode_name(numerics));
    ck_assert_msg(!bad, "%s: prefill and decode disagree beyond tolerance, or entries differ (above)",
                  mode_name(numerics));
    hc_ctx_free(a), hc_ctx_free(b), hc_ctx_free(b2);
    hc_model_free(m);
    free(x), free(ya), free(yb), free(yb2), free(sa), free(sb), free(sb2);
}

START_TEST(prefill_vs_decode_exact) { prefill_vs_decode(HC_NUMERICS_EXACT); }
END_TEST
START_TEST(prefill_vs_decode_fast) { prefill_vs_decode(HC_NUMERICS_FAST); }
END_TEST

/* x and y in device memory on the caller's own stream give the same bits as host buffers. */
START_TEST(device_io_and_caller_stream)
{
    hc_model *m = NULL;
    ck_assert_int_eq(hc_model_create_random("tiny", 21, NULL, &m), HC_OK);
    int L = m->cfg.n_layers, D = m->cfg.dim, n = 200;
    size_t bytes = sizeof(float) * (size_t)n * D;
    float *x = malloc(bytes), *yh = malloc(bytes), *yd = malloc(bytes);
    tu_fill_normal(x, (size_t)n * D, 77, 1.0f);
    cudaStream_t stream;
    ck_assert_int_eq(cudaStreamCreate(&stream), cudaSuccess);
    float *dx = NULL, *dy = NULL;
    ck_assert_int_eq(cudaMalloc((void **)&dx, bytes), cudaSuccess);
    ck_assert_int_eq(cudaMalloc((void **)&dy, bytes), cudaSuccess);
    ck_assert_int_eq(cudaMemcpy(dx, x, bytes, cudaMemcpyHostToDevice), cudaSuccess);
    hc_ctx_params p;
    hc_ctx_params_init(&p, sizeof p);
    p.backend = HC_BACKEND_CUDA;
    p.io_memory = HC_MEM_DEVICE;
    p.cuda_stream = stream;
    hc_ctx *cd = NULL, *ch = make(m, HC_BACKEND_CUDA, HC_CACHE_DEFAULT);
    ck_assert_int_eq(hc_ctx_create(m, &p, &cd), HC_OK);
    ck_assert_int_eq(tu_fast_env_options(cd), 0);
    for (int step = 0; step < 2; step++) { /* a prefill chunk, then a decode step */
        int k = step ? 1 : n;
        for (int l = 0; l < L; l++) {
            ck_assert_int_eq(hc_append(ch, l, x, k, yh), HC_OK);
            ck_assert_msg(hc_append(cd, l, dx, k, dy) == HC_OK, "%s", hc_ctx_last_error(cd));
            ck_assert_int_eq(cudaStreamSynchronize(stream), cudaSuccess);
            ck_assert_int_eq(cudaMemcpy(yd, dy, sizeof(float) * (size_t)k * D, cudaMemcpyDeviceToHost), cudaSuccess);
            ck_assert_mem_eq(yd, yh, sizeof(float) * (size_t)k * D);
        }
    }
    /* a NaN in device memory is refused and changes nothing */
    float nan = NAN;
    ck_assert_int_eq(cudaMemcpy(dx + 5, &nan, sizeof nan, cudaMemcpyHostToDevice), cudaSuccess);
    ck_assert_int_eq(hc_append(cd, 0, dx, 1, dy), HC_ERR_NONFINITE);
    ck_assert_int_eq(hc_ctx_next_layer(cd), 0);
    hc_ctx_free(cd), hc_ctx_free(ch);
    cudaFree(dx), cudaFree(dy);
    cudaStreamDestroy(stream);
    hc_model_free(m);
    free(x), free(yh), free(yd);
}
END_TEST

/* Host-memory x and y go through pinned staging pieces of at most 1 Mi values (HCI_CU_STAGE_BYTES):
 * a tiny chunk of 5000 tokens (2.56 Mi values: two whole pieces and an odd tail) in f32 and in
 * bf16, in one engine piece and in several, gives the bits of device-memory I/O; a NaN or an
 * infinity in the last piece (or the first) is refused and leaves the context unchanged. */
static hc_ctx *make_io(hc_model *m, int dtype, int memory, int max_chunk)
{
    hc_ctx_params p;
    hc_ctx_params_init(&p, sizeof p);
    p.backend = HC_BACKEND_CUDA;
    p.io_dtype = dtype;
    p.io_memory = memory;
    p.max_chunk = max_chunk;
    hc_ctx *c = NULL;
    ck_assert_int_eq(hc_ctx_create(m, &p, &c), HC_OK);
    ck_assert_int_eq(tu_fast_env_options(c), 0);
    return c;
}

START_TEST(host_io_staging_pieces)
{
    hc_model *m = NULL;
    ck_assert_int_eq(hc_model_create_random("tiny", 61, NULL, &m), HC_OK);
    int L = m->cfg.n_layers, D = m->cfg.dim, T = 5000, steps[] = {T, 3};
    size_t nv = (size_t)T * D;
    float *x = malloc(nv * 4), *yf = malloc(nv * 4), *yd = malloc(nv * 4), *ys = malloc(nv * 4);
    uint16_t *xb = malloc(nv * 2), *yb = malloc(nv * 2);
    tu_fill_normal(x, nv, 62, 1.0f);
    for (size_t i = 0; i < nv; i++) xb[i] = hci_bf16_from_f32(x[i]);
    float *dx = NULL, *dy = NULL;
    ck_assert_int_eq(cudaMalloc((void **)&dx, nv * 4), cudaSuccess);
    ck_assert_int_eq(cudaMalloc((void **)&dy, nv * 4), cudaSuccess);
    ck_assert_int_eq(cudaMemcpy(dx, x, nv * 4, cudaMemcpyHostToDevice), cudaSuccess);
    /* one engine piece per chunk (f32, bf16, device reference), and pieces of 2048 tokens */
    hc_ctx *hf = make_io(m, HC_DTYPE_F32, HC_MEM_HOST, 8192), *hb = make_io(m, HC_DTYPE_BF16, HC_MEM_HOST, 8192);
    hc_ctx *dd = make_io(m, HC_DTYPE_F32, HC_MEM_DEVICE, 8192);
    hc_ctx *hs = make_io(m, HC_DTYPE_F32, HC_MEM_HOST, 2048), *ds = make_io(m, HC_DTYPE_F32, HC_MEM_DEVICE, 2048);
    /* refusals: a NaN in the last value (last staging piece; for hs the part checked alone), an
     * infinity in the first */
    float keep = x[nv - 1], keep0 = x[0];
    uint16_t keepb = xb[nv - 1];
    x[nv - 1] = NAN, xb[nv - 1] = 0x7fc0;
    ck_assert_int_eq(hc_append(hf, 0, x, T, yf), HC_ERR_NONFINITE);
    ck_assert_int_eq(hc_append(hs, 0, x, T, ys), HC_ERR_NONFINITE);
    ck_assert_int_eq(hc_append(hb, 0, xb, T, yb), HC_ERR_NONFINITE);
    x[nv - 1] = keep, xb[nv - 1] = keepb, x[0] = INFINITY;
    ck_assert_int_eq(hc_append(hf, 0, x, T, yf), HC_ERR_NONFINITE);
    ck_assert_int_eq(hc_append(hs, 0, x, T, ys), HC_ERR_NONFINITE);
    x[0] = keep0;
    hc_ctx *all[] = {hf, hb, hs};
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(hc_ctx_n_tokens(all[i]), 0);
        ck_assert_int_eq(hc_ctx_next_layer(all[i]), 0);
    }
    /* then a long chunk and a 3-token one: the same bits as device-memory x and y */
    for (int s = 0; s < 2; s++) {
        size_t n = (size_t)steps[s] * D;
        for (int l = 0; l < L; l++) {
            ck_assert_msg(hc_append(hf, l, x, steps[s], yf) == HC_OK, "%s", hc_ctx_last_error(hf));
            ck_assert_msg(hc_append(hb, l, xb, steps[s], yb) == HC_OK, "%s", hc_ctx_last_error(hb));
            ck_assert_msg(hc_append(dd, l, dx, steps[s], dy) == HC_OK, "%s", hc_ctx_last_error(dd));
            ck_assert_int_eq(cudaStreamSynchronize((cudaStream_t)dd->be->ops->stream(dd->be)), cudaSuccess);
            ck_assert_int_eq(cudaMemcpy(yd, dy, n * 4, cudaMemcpyDeviceToHost), cudaSuccess);
            ck_assert_msg(memcmp(yf, yd, n * 4) == 0, "layer %d: host f32 output differs from device I/O", l);
            for (size_t i = 0; i < n; i++)
                if (yb[i] != (uint16_t)(hci_bits_from_f32(yd[i]) >> 16))
                    ck_abort_msg("layer %d value %zu: host bf16 output differs from device I/O", l, i);
            ck_assert_msg(hc_append(hs, l, x, steps[s], ys) == HC_OK, "%s", hc_ctx_last_error(hs));
            ck_assert_msg(hc_append(ds, l, dx, steps[s], dy) == HC_OK, "%s", hc_ctx_last_error(ds));
            ck_assert_int_eq(cudaStreamSynchronize((cudaStream_t)ds->be->ops->stream(ds->be)), cudaSuccess);
            ck_assert_int_eq(cudaMemcpy(yd, dy, n * 4, cudaMemcpyDeviceToHost), cudaSuccess);
            ck_assert_msg(memcmp(ys, yd, n * 4) == 0, "layer %d: host f32 output (pieces) differs from device I/O", l);
        }
    }
    hc_ctx_free(hf), hc_ctx_free(hb), hc_ctx_free(dd), hc_ctx_free(hs), hc_ctx_free(ds);
    cudaFree(dx), cudaFree(dy);
    hc_model_free(m);
    free(x), free(yf), free(yd), free(ys), free(xb), free(yb);
}
END_TEST

/* With the GPU's memory nearly all taken, a long chunk fails with HC_ERR_OUT_OF_MEMORY in the
 * preflight; the context stays usable and gives the same results afterwards. */
START_TEST(out_of_memory_leaves_context_usable)
{
    /* under compute-sanitizer the intended failed allocation is reported as an API error */
    if (getenv("HC_TEST_NO_OOM")) return;
    hc_model *m = NULL; /* layer 0 compresses, so the chunk's first call must grow pages */
    ck_assert_int_eq(hc_model_create_random("{\"hidden_size\": 512, \"num_hidden_layers\": 2, \"num_attention_heads\": 8,"
                                            " \"head_dim\": 128, \"q_lora_rank\": 256, \"o_groups\": 2, \"o_lora_rank\": 256,"
                                            " \"index_n_heads\": 8, \"index_topk\": 16, \"compress_ratios\": [4, 0]}",
                                            31, NULL, &m), HC_OK);
    int L = m->cfg.n_layers, D = m->cfg.dim;
    hc_ctx *c = make(m, HC_BACKEND_CUDA, HC_CACHE_BF16), *ref = make(m, HC_BACKEND_CUDA, HC_CACHE_BF16);
    int64_t big = m->cfg.max_positions - 64;
    float *x = calloc((size_t)big, sizeof(float) * D), *y = malloc(sizeof(float) * (size_t)64 * D),
          *y2 = malloc(sizeof(float) * (size_t)64 * D);
    ck_assert_ptr_nonnull(x);
    tu_fill_normal(x, (size_t)64 * D, 5, 1.0f);
    for (int l = 0; l < L; l++) ck_assert_int_eq(hc_append(c, l, x, 64, y), HC_OK);
    size_t fr = 0, total = 0;
    ck_assert_int_eq(cudaMemGetInfo(&fr, &total), cudaSuccess);
    void *hog = NULL;
    size_t take = fr > (64u << 20) ? fr - (64u << 20) : 0;
    while (take && cudaMalloc(&hog, take) != cudaSuccess) {
        cudaGetLastError();
        take -= 256u << 20;
    }
    /* a million-token chunk needs far more than the 64 MiB left for its pages */
    hc_status st = hc_append(c, 0, x, big, x);
    if (hog) cudaFree(hog);
    ck_assert_msg(st == HC_ERR_OUT_OF_MEMORY, "status %d: %s", st, hc_ctx_last_error(c));
    ck_assert_int_eq(hc_ctx_n_tokens(c), 64);
    ck_assert_int_eq(hc_ctx_next_layer(c), 0);
    /* still usable, and the same as a context that never failed */
    tu_fill_normal(x, (size_t)64 * D, 5, 1.0f);
    for (int l = 0; l < L; l++) ck_assert_int_eq(hc_append(ref, l, x, 64, y2), HC_OK);
    tu_fill_normal(x, (size_t)64 * D, 6, 1.0f);
    for (int l = 0; l < L; l++) {
        ck_assert_msg(hc_append(c, l, x, 64, y) == HC_OK, "%s", hc_ctx_last_error(c));
        ck_assert_int_eq(hc_append(ref, l, x, 64, y2), HC_OK);
        ck_assert_mem_eq(y, y2, sizeof(float) * (size_t)64 * D);
    }
    free(x), free(y), free(y2);
    hc_ctx_free(c), hc_ctx_free(ref);
    hc_model_free(m);
}
END_TEST

/* A session saved by the CPU backend loads into a CUDA context and one saved by an EXACT CUDA
 * context into a CPU context; decoding then goes on as in a context of that backend that computed
 * the tokens itself (bitwise), and within tolerance of the other backend. A session saved by a
 * FAST context (caches made by the fast kernels) continues bitwise in a FAST context that loads
 * it; a CPU context and an EXACT CUDA context that load it make bitwise the same caches from there
 * on (EXACT's promise, from the same saved bytes) and outputs within the faithful tolerance of
 * the CPU that computed every token itself. A load keeps the loading context's numerics. */
static void decode_steps(hc_ctx *c, const float *x, int k, float *y)
{
    int L = c->model->cfg.n_layers, D = c->model->cfg.dim;
    for (int s = 0; s < k; s++)
        for (int l = 0; l < L; l++)
            ck_assert_msg(hc_decode(c, l, x + (size_t)(s * L + l) * D, y + (size_t)(s * L + l) * D) == HC_OK, "%s",
                          hc_ctx_last_error(c));
}

static void *save_buf(hc_ctx *c, uint64_t *len)
{
    uint64_t cap = 0;
    ck_assert_int_eq(hc_ctx_save_size(c, NULL, &cap), HC_OK);
    void *b = malloc(cap);
    ck_assert_msg(hc_ctx_save_buffer(c, b, cap, NULL, len) == HC_OK, "%s", hc_ctx_last_error(c));
    return b;
}

static void load_buf(hc_ctx *c, const void *buf, uint64_t len)
{
    int before = hc_ctx_numerics(c);
    ck_assert_msg(hc_ctx_load_buffer(c, buf, len) == HC_OK, "%s", hc_ctx_last_error(c));
    ck_assert_int_eq(hc_ctx_numerics(c), before); /* sessions hold caches, not a numerics mode */
}

START_TEST(sessions_across_backends)
{
    hc_model *m = NULL;
    ck_assert_int_eq(hc_model_create_random("tiny", 41, NULL, &m), HC_OK);
    int L = m->cfg.n_layers, D = m->cfg.dim, T = 300, K = 4;
    float *x = malloc(sizeof(float) * (size_t)L * T * D), *y = malloc(sizeof(float) * (size_t)L * T * D);
    size_t n = (size_t)K * L * D;
    float *xd = malloc(sizeof(float) * n);
    float *ya = malloc(sizeof(float) * n), *yb = malloc(sizeof(float) * n);
    float *yc = malloc(sizeof(float) * n), *yp = malloc(sizeof(float) * n);
    tu_fill_normal(x, (size_t)L * T * D, 51, 1.0f);
    tu_fill_normal(xd, n, 52, 1.0f);
    int whole[] = {T};
    /* CPU and EXACT CUDA sessions, each loaded by the other backend */
    hc_ctx *cpu = make_n(m, HC_BACKEND_CPU, HC_CACHE_FP8, HC_NUMERICS_DEFAULT, 512);
    hc_ctx *gself = make_n(m, HC_BACKEND_CUDA, HC_CACHE_BF16, HC_NUMERICS_EXACT, 512);
    hc_ctx *gload = make_n(m, HC_BACKEND_CUDA, HC_CACHE_FP8, HC_NUMERICS_EXACT, 512);
    hc_ctx *cload = make_n(m, HC_BACKEND_CPU, HC_CACHE_BF16, HC_NUMERICS_DEFAULT, 512);
    run_chunks(cpu, x, T, whole, 1, y, NULL);
    run_chunks(gself, x, T, whole, 1, y, NULL);
    uint64_t la = 0, lb = 0;
    void *from_cpu = save_buf(cpu, &la), *from_gpu = save_buf(gself, &lb);
    load_buf(gload, from_cpu, la);
    load_buf(cload, from_gpu, lb);
    ck_assert_int_eq(hc_ctx_n_tokens(gload), T);
    printf("sessions: CPU and CUDA (exact) sessions of %d tokens are %s\n", T,
           la == lb && memcmp(from_cpu, from_gpu, la) == 0 ? "byte-identical" : "different");
    decode_steps(cpu, xd, K, yp);
    decode_steps(gself, xd, K, ya);
    decode_steps(gload, xd, K, yb);
    decode_steps(cload, xd, K, yc);
    ck_assert_msg(memcmp(ya, yb, n * sizeof(float)) == 0, "CUDA: loaded from a CPU session differs from computed");
    ck_assert_msg(memcmp(yc, yp, n * sizeof(float)) == 0, "CPU: loaded from a CUDA session differs from computed");
    double rel = tu_rel_l2(yb, yp, n);
    printf("sessions: CUDA (exact) after a CPU session vs CPU: rel L2 %.2e\n", rel);
    ck_assert(rel < 1e-2);
    /* a FAST session: into FAST CUDA (bitwise as the saver), EXACT CUDA and the CPU (the same caches
     * from there on, outputs within tolerance of the CPU that computed everything) */
    hc_ctx *gfast = make_n(m, HC_BACKEND_CUDA, HC_CACHE_FP8, HC_NUMERICS_FAST, 512);
    hc_ctx *gf2 = make_n(m, HC_BACKEND_CUDA, HC_CACHE_FP8, HC_NUMERICS_DEFAULT, 512); /* FAST on CUDA */
    hc_ctx *gex = make_n(m, HC_BACKEND_CUDA, HC_CACHE_BF16, HC_NUMERICS_EXACT, 512);
    hc_ctx *cf = make_n(m, HC_BACKEND_CPU, HC_CACHE_FP8, HC_NUMERICS_FAST, 512); /* EXACT on the CPU */
    hc_ctx *gfc = make_n(m, HC_BACKEND_CUDA, HC_CACHE_FP8, HC_NUMERICS_FAST, 512);
    run_chunks(gfast, x, T, whole, 1, y, NULL);
    uint64_t lf = 0;
    void *from_fast = save_buf(gfast, &lf);
    load_buf(gf2, from_fast, lf);
    load_buf(gex, from_fast, lf);
    load_buf(cf, from_fast, lf);
    load_buf(gfc, from_cpu, la); /* and a CPU session continued in FAST */
    float *yf = malloc(sizeof(float) * n), *yf2 = malloc(sizeof(float) * n), *ye = malloc(sizeof(float) * n);
    float *ycf = malloc(sizeof(float) * n), *yfc = malloc(sizeof(float) * n);
    decode_steps(gfast, xd, K, yf);
    decode_steps(gf2, xd, K, yf2);
    decode_steps(gex, xd, K, ye);
    decode_steps(cf, xd, K, ycf);
    decode_steps(gfc, xd, K, yfc);
    ck_assert_msg(memcmp(yf, yf2, n * sizeof(float)) == 0, "FAST: loaded from a FAST session differs from the saver");
    assert_same_caches(gfast, gf2, "FAST session continued in FAST");
    assert_same_caches(gex, cf, "FAST session continued in EXACT on CUDA and on the CPU");
    double r_ex = tu_rel_l2(ye, ycf, n), r_cpu = tu_rel_l2(ycf, yp, n), r_fast = tu_rel_l2(yf, yp, n);
    double r_fc = tu_rel_l2(yfc, yp, n);
    printf("sessions: a FAST session continued: EXACT CUDA vs CPU %.2e; CPU vs the CPU's own %.2e; FAST vs the "
           "CPU's own %.2e; a CPU session continued in FAST vs the CPU's own %.2e\n",
           r_ex, r_cpu, r_fast, r_fc);
    ck_assert(r_ex < 1e-2 && r_cpu < TOL_LAYER && r_fast < TOL_LAYER && r_fc < TOL_LAYER);
    free(from_cpu), free(from_gpu), free(from_fast);
    hc_ctx_free(cpu), hc_ctx_free(gself), hc_ctx_free(gload), hc_ctx_free(cload);
    hc_ctx_free(gfast), hc_ctx_free(gf2), hc_ctx_free(gex), hc_ctx_free(cf), hc_ctx_free(gfc);
    hc_model_free(m);
    free(x), free(y), free(xd), free(ya), free(yb), free(yc), free(yp);
    free(yf), free(yf2), free(ye), free(ycf), free(yfc);
}
END_TEST

/* Option decode_fused (lib/backend/cuda/cuda_fused.cu: the projections of small pieces in fewer
 * launches) against the ops one by one, in each numerics: after a 300-token prefill (not fused),
 * pieces of 1, 5, 17 and 64 tokens and decode steps through every layer give bitwise the same
 * outputs, and then the same window rings, compressed entries and indexer keys (EXACT fuses up to
 * 16 tokens, FAST up to 64: the test checks that proj_in takes those). Then batches (the shared
 * launches' share_in, fused or not): decode steps and a batch of 1, 5 and 9 tokens of three
 * contexts, bitwise as well. */
static void set_fused(hc_ctx *c, int on)
{
    ck_assert_msg(hc_x_ctx_set_option(c, "decode_fused", on) == HC_OK, "%s", hc_ctx_last_error(c));
}

static void fused_vs_separate(int numerics)
{
    hc_model *m = NULL;
    ck_assert_int_eq(hc_model_create_random(g_geom, 29, NULL, &m), HC_OK);
    const hci_config *cfg = &m->cfg;
    int L = cfg->n_layers, D = cfg->dim, fast = numerics == HC_NUMERICS_FAST;
    static const int sizes[] = {300, 1, 5, 17, 64, 1, 1, 3, 1};
    const int ns = (int)(sizeof sizes / sizeof sizes[0]);
    int64_t T = 0;
    for (int i = 0; i < ns; i++) T += sizes[i];
    size_t nx = (size_t)L * T * D;
    float *x = malloc(nx * sizeof(float)), *ya = malloc(nx * sizeof(float)), *yb = malloc(nx * sizeof(float));
    tu_fill_normal(x, nx, 291, 1.0f);
    hc_ctx *a = make_n(m, HC_BACKEND_CUDA, HC_CACHE_FP8, numerics, 512);
    hc_ctx *b = make_n(m, HC_BACKEND_CUDA, HC_CACHE_FP8, numerics, 512);
    set_fused(a, 0), set_fused(b, 1);
    int64_t t = 0;
    int fused_pieces = 0;
    for (int k = 0; k < ns; t += sizes[k++]) {
        int n = sizes[k];
        for (int l = 0; l < L; l++) {
            const hci_backend_ops *op = b->be->ops;
            /* the fused path is what runs (after the first call has sized its buffer) */
            if (k > 0 && (n <= 16 || fast)) {
                ck_assert_msg(op->proj_in && op->proj_in_ok(b->be, l, n), "%s: proj_in does not take %d tokens of layer %d",
                              mode_name(numerics), n, l);
                fused_pieces++;
            }
            ck_assert_ptr_null(a->be->ops->proj_in);
            size_t off = ((size_t)l * T + (size_t)t) * D;
            ck_assert_msg(hc_append(a, l, x + off, n, ya + off) == HC_OK, "%s", hc_ctx_last_error(a));
            ck_assert_msg(hc_append(b, l, x + off, n, yb + off) == HC_OK, "%s", hc_ctx_last_error(b));
            ck_assert_msg(memcmp(ya + off, yb + off, sizeof(float) * (size_t)n * D) == 0,
                          "%s: decode_fused changes the outputs of a %d-token piece at %lld, layer %d", mode_name(numerics),
                          n, (long long)t, l);
        }
    }
    assert_same_caches(a, b, fast ? "decode_fused (fast)" : "decode_fused (exact)");
    printf("decode_fused (%s): %d fused layer calls of 1-64 tokens after a 300-token prefill, outputs and caches "
           "bitwise those of the ops one by one\n",
           mode_name(numerics), fused_pieces);
    hc_ctx_free(a), hc_ctx_free(b);

    /* batches of three contexts (their own prefills), decode_fused off and on */
    enum { NC = 3, STEPS = 4 };
    static const int64_t pre[NC] = {130, 131, 150}, piece[NC] = {1, 5, 9};
    hc_ctx *ca[NC], *cb[NC];
    float *xp = malloc(sizeof(float) * 150 * D), *yp = malloc(sizeof(float) * 150 * D);
    float *xs = malloc(sizeof(float) * 15 * D), *y1 = malloc(sizeof(float) * 15 * D), *y2 = malloc(sizeof(float) * 15 * D);
    for (int i = 0; i < NC; i++) {
        ca[i] = make_n(m, HC_BACKEND_CUDA, HC_CACHE_FP8, numerics, 512);
        cb[i] = make_n(m, HC_BACKEND_CUDA, HC_CACHE_FP8, numerics, 512);
        set_fused(ca[i], 0), set_fused(cb[i], 1);
        for (int l = 0; l < L; l++) {
            tu_fill_normal(xp, (size_t)pre[i] * D, 300 + 10 * i + l, 1.0f);
            ck_assert_int_eq(hc_append(ca[i], l, xp, pre[i], yp), HC_OK);
            ck_assert_int_eq(hc_append(cb[i], l, xp, pre[i], yp), HC_OK);
        }
    }
    for (int step = 0; step <= STEPS; step++) { /* STEPS decode steps, then one batch of pieces */
        int rows = step < STEPS ? NC : 15;
        for (int l = 0; l < L; l++) {
            tu_fill_normal(xs, (size_t)rows * D, 400 + 10 * step + l, 1.0f);
            if (step < STEPS) {
                ck_assert_int_eq(hc_decode_batch(ca, NC, l, xs, y1), HC_OK);
                ck_assert_msg(hc_decode_batch(cb, NC, l, xs, y2) == HC_OK, "%s", hc_ctx_last_error(cb[0]));
            } else {
                ck_assert_int_eq(hc_append_batch(ca, NC, l, xs, piece, y1), HC_OK);
                ck_assert_msg(hc_append_batch(cb, NC, l, xs, piece, y2) == HC_OK, "%s", hc_ctx_last_error(cb[0]));
            }
            ck_assert_msg(memcmp(y1, y2, sizeof(float) * (size_t)rows * D) == 0,
                          "%s: decode_fused changes a batch's outputs (step %d, layer %d)", mode_name(numerics), step, l);
        }
    }
    ck_assert_msg(cb[0]->shared_pieces > 0, "the batches did not share launches");
    for (int i = 0; i < NC; i++) {
        assert_same_caches(ca[i], cb[i], "decode_fused in batches");
        hc_ctx_free(ca[i]), hc_ctx_free(cb[i]);
    }
    printf("decode_fused (%s): batches of %d contexts (decode steps, pieces of 1, 5, 9 tokens) bitwise the same, "
           "%llu shared pieces\n",
           mode_name(numerics), NC, (unsigned long long)cb[0]->shared_pieces);
    hc_model_free(m);
    free(x), free(ya), free(yb), free(xp), free(yp), free(xs), free(y1), free(y2);
}

START_TEST(decode_fused_exact) { fused_vs_separate(HC_NUMERICS_EXACT); }
END_TEST
START_TEST(decode_fused_fast) { fused_vs_separate(HC_NUMERICS_FAST); }
END_TEST

/* Session bytes that do not depend on the save (sections and TOC: between superblock and footer)
 * are equal. */
static int same_state(const uint8_t *a, uint64_t na, const uint8_t *b, uint64_t nb)
{
    return na == nb && na >= 8192 && memcmp(a + 4096, b + 4096, (size_t)(na - 8192)) == 0;
}

/* Units of 64 KiB with O_DIRECT and chunks of 64 rows (many pieces), or the defaults. */
static void set_units(int small)
{
    hcs_hooks.io_unit = small ? 65536 : 0, hcs_hooks.direct_io = small, hcs_hooks.entry_rows_per_chunk = small ? 64 : 0;
}

static int stop_at(void *user, uint64_t done, uint64_t total)
{
    (void)total;
    return done >= *(uint64_t *)user;
}

/* Save and load of CUDA contexts through the page-locked pieces, the asynchronous copies and
 * the page blocks (xfer.cu), in many pieces (units of 64 KiB with O_DIRECT and chunks of 64 rows,
 * or the default layout): the loaded context holds the saved state bit for bit (a CPU context
 * reads the same file to the same state), decodes exactly as the original, and a corrupt,
 * truncated or stopped load leaves a context as it was. */
START_TEST(sessions_async_transfers)
{
    hc_model *m = NULL;
    ck_assert_int_eq(hc_model_create_random("tiny", 43, NULL, &m), HC_OK);
    int L = m->cfg.n_layers, D = m->cfg.dim, K = 3;
    /* ~9 MiB in fp8 (~2.7 MiB quick: still worker threads and many units); partly filled last blocks */
    const int64_t T = getenv("HC_TEST_QUICK") ? 20000 + 37 : 65536 + 1000 + 37;
    float *xd = malloc(sizeof(float) * (size_t)(K + 1) * L * D), *ya = malloc(sizeof(float) * (size_t)(K + 1) * L * D);
    float *yb = malloc(sizeof(float) * (size_t)(K + 1) * L * D);
    tu_fill_normal(xd, (size_t)(K + 1) * L * D, 61, 1.0f);
    char path[256], bad[300];
    snprintf(path, sizeof path, "%s/hc-gpu-session-%d.hcs", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid());
    snprintf(bad, sizeof bad, "%s.bad", path);
    static const struct { int fmt, comp, small; } cases[] = {
        {HC_CACHE_FP8, HC_COMPRESS_NONE, 1}, {HC_CACHE_FP8, HC_COMPRESS_NONE, 0},
        {HC_CACHE_FP8, HC_COMPRESS_ZSTD, 0}, {HC_CACHE_BF16, HC_COMPRESS_NONE, 1},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        set_units(cases[ci].small);
        hc_ctx *a = make(m, HC_BACKEND_CUDA, cases[ci].fmt), *b = make(m, HC_BACKEND_CUDA, cases[ci].fmt);
        hc_ctx *cpu = make(m, HC_BACKEND_CPU, HC_CACHE_FP8);
        ck_assert_int_eq(hc_x_ctx_fill_random(a, T, 70 + ci), HC_OK);
        ck_assert_int_eq(hc_x_ctx_fill_random(b, 5000, 80 + ci), HC_OK); /* replaced by the load */
        tsu_save_file(a, path, cases[ci].comp);
        ck_assert_msg(hc_ctx_load(b, path) == HC_OK, "load: %s", hc_ctx_last_error(b));
        ck_assert_msg(hc_ctx_load(cpu, path) == HC_OK, "CPU load: %s", hc_ctx_last_error(cpu));
        ck_assert_int_eq(hc_ctx_n_tokens(b), T);
        hcs_hooks = (hcs_test_hooks){0}; /* the states compared in the default layout */
        uint64_t na, nb, nc;
        uint8_t *sa = save_buf(a, &na), *sb = save_buf(b, &nb), *sc = save_buf(cpu, &nc);
        ck_assert_msg(same_state(sa, na, sb, nb), "case %zu: the loaded CUDA context differs", ci);
        ck_assert_msg(same_state(sa, na, sc, nc), "case %zu: the CPU reads the CUDA save differently", ci);
        decode_steps(a, xd, K, ya);
        decode_steps(b, xd, K, yb);
        ck_assert_msg(memcmp(ya, yb, sizeof(float) * (size_t)K * L * D) == 0, "case %zu: decoding differs", ci);
        free(sb), free(sc);

        /* a chunk damaged in the middle of the last entry section (after many pieces went out),
         * the file cut short, a stop half-way: b keeps its state and goes on as a */
        free(sa);
        sa = save_buf(a, &na); /* a decoded K tokens */
        set_units(cases[ci].small);
        size_t n;
        uint8_t *bytes = tu_read_file(path, &n);
        hcs_src src = {-1, "buffer", bytes, n};
        hcs_file f;
        char err[256];
        ck_assert_int_eq(hcs_file_open(&f, &src, err, sizeof err), HC_OK);
        uint64_t at = 0, half = f.total_raw / 2;
        for (uint32_t i = 0; i < f.n_sec; i++)
            if ((f.sec[i].type == HCS_SEC_COMP || f.sec[i].type == HCS_SEC_INDEX) && f.sec[i].stored_length)
                at = f.sec[i].offset + f.sec[i].stored_length / 2;
        hcs_file_close(&f);
        bytes[at] ^= 0x10;
        ck_assert_int_eq(tu_write_file(bad, bytes, n), 0);
        hc_status st = hc_ctx_load(b, bad);
        ck_assert_msg(st == HC_ERR_CORRUPT, "damaged: %s (%s)", hc_status_name(st), hc_ctx_last_error(b));
        bytes[at] ^= 0x10;
        ck_assert_int_eq(tu_write_file(bad, bytes, n - 4096), 0);
        st = hc_ctx_load(b, bad);
        ck_assert_msg(st == HC_ERR_CORRUPT, "truncated: %s (%s)", hc_status_name(st), hc_ctx_last_error(b));
        hc_ctx_set_progress(b, stop_at, &half);
        st = hc_ctx_load(b, path);
        hc_ctx_set_progress(b, NULL, NULL);
        ck_assert_msg(st == HC_ERR_ABORTED, "stopped: %s (%s)", hc_status_name(st), hc_ctx_last_error(b));
        hcs_hooks = (hcs_test_hooks){0};
        sb = save_buf(b, &nb);
        ck_assert_msg(same_state(sa, na, sb, nb), "case %zu: a failed load changed the context", ci);
        decode_steps(a, xd + (size_t)K * L * D, 1, ya);
        decode_steps(b, xd + (size_t)K * L * D, 1, yb);
        ck_assert_msg(memcmp(ya, yb, sizeof(float) * (size_t)L * D) == 0, "case %zu: decoding differs after", ci);
        printf("sessions: CUDA %s %s%s: %llu bytes round-trip, failed loads change nothing\n",
               cases[ci].fmt == HC_CACHE_FP8 ? "fp8" : "bf16", cases[ci].comp ? "zstd" : "raw",
               cases[ci].small ? ", 64 KiB O_DIRECT units, 64-row chunks" : "", (unsigned long long)n);
        free(bytes), free(sa), free(sb);
        hc_ctx_free(a), hc_ctx_free(b), hc_ctx_free(cpu);
    }
    unlink(path), unlink(bad);
    free(xd), free(ya), free(yb);
    hc_model_free(m);
}
END_TEST

Suite *tu_suite(int argc, char **argv)
{
    int32_t nd = 0;
    hc_cuda_device_count(&nd);
    if (nd == 0) {
        printf("gpu: no CUDA device, skipped\n");
        return NULL;
    }
    /* default: the tiny geometry; "flash": three layers (SWA, CSA, HCA) of the v4-flash geometry */
    int flash = argc > 1 && !strcmp(argv[1], "flash");
    g_geom = flash ? "{\"num_hidden_layers\": 3, \"compress_ratios\": [0, 4, 128]}" : "tiny";
    g_tokens = flash ? 1200 : 900;
    if (getenv("HC_TEST_QUICK")) g_tokens = 300;
    Suite *s = suite_create(flash ? "gpu-flash" : "gpu");
    TCase *tc = tcase_create("cuda-vs-cpu");
    tcase_set_timeout(tc, 1800);
    tcase_add_test(tc, layers_bf16_cache);
    tcase_add_test(tc, layers_fp8_cache);
    tcase_add_test(tc, split_invariance_exact);
    tcase_add_test(tc, split_invariance_fast);
    tcase_add_test(tc, fast_options_same_bits);
    tcase_add_test(tc, prefill_vs_decode_exact);
    tcase_add_test(tc, prefill_vs_decode_fast);
    tcase_add_test(tc, device_io_and_caller_stream);
    tcase_add_test(tc, host_io_staging_pieces);
    tcase_add_test(tc, sessions_across_backends);
    tcase_add_test(tc, sessions_async_transfers);
    tcase_add_test(tc, out_of_memory_leaves_context_usable);
    suite_add_tcase(s, tc);
    /* a case of its own: CK_RUN_CASE=decode-fused runs only it (tools/gpu-decode-fused.sh) */
    TCase *tf = tcase_create("decode-fused");
    tcase_set_timeout(tf, 600);
    tcase_add_test(tf, decode_fused_exact);
    tcase_add_test(tf, decode_fused_fast);
    suite_add_tcase(s, tf);
    return s;
}
