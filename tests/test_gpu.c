/* test_gpu.c - the CUDA backend against the CPU backend, on fresh random inputs: whole layers
 * (outputs within the documented tolerance, compressed entries and indexer keys identical, top-k
 * sets equal), split invariance, both cache formats, device-memory I/O, host-memory I/O through
 * the pinned staging pieces. Exits 77 (skipped) where there is no CUDA device. Tolerances:
 * docs/cuda.md. */
#include <check.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ctx/ctx.h"
#include "util/bf16.h"
#include "testutil.h"
#include "runner.h"

static const char *g_geom;       /* preset or config JSON */
static int64_t g_tokens;         /* context length of the whole-layer runs */

static hc_ctx *make(hc_model *m, int backend, int fmt)
{
    hc_ctx_params p;
    hc_ctx_params_init(&p, sizeof p);
    p.backend = backend;
    p.cache_format = fmt;
    p.max_chunk = 512;
    hc_ctx *c = NULL;
    ck_assert_int_eq(hc_ctx_create(m, &p, &c), HC_OK);
    return c;
}

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

/* Whole layers, CPU vs CUDA, chunks of mixed sizes (prefill pieces and decode steps). */
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
    hc_ctx *cc = make(m, HC_BACKEND_CPU, fmt), *cg = make(m, HC_BACKEND_CUDA, fmt);
    run_chunks(cc, x, T, sizes, 10, yc, sc);
    run_chunks(cg, x, T, sizes, 10, yg, sg);
    printf("\n%s, %lld tokens, %s cache\n%-6s %-5s %10s %10s %12s %10s %10s\n", L == 4 ? "tiny" : "v4-flash geometry",
           (long long)T, fmt == HC_CACHE_BF16 ? "bf16" : "fp8", "layer", "kind", "out relL2", "worst tok",
           "topk equal", "entries", "idx keys");
    int bad = 0;
    for (int l = 0; l < L; l++) {
        const float *a = yg + (size_t)l * T * D, *b = yc + (size_t)l * T * D;
        double rel = tu_rel_l2(a, b, (size_t)T * D), worst = 0;
        double first = tu_rel_l2(a, b, (size_t)300 * D); /* the first chunk sees no ring */
        for (int64_t t = 0; t < T; t++) {
            double e = tu_rel_l2(a + (size_t)t * D, b + (size_t)t * D, (size_t)D);
            if (e > worst) worst = e;
        }
        int same = 0, total = 0;
        if (cfg->ratios[l] == 4)
            for (int64_t t = 0; t < T; t++, total++)
                same += same_set(sg + ((size_t)l * T + t) * K, sc + ((size_t)l * T + t) * K, K);
        const char *ent = "-", *keys = "-";
        hci_layer_cache *lg = &cg->layers[l], *lcpu = &cc->layers[l];
        if (lg->ratio) {
            int64_t ne = T / lg->ratio;
            float *eg = entries(cg, &lg->comp.layout, &lg->comp.entries, ne);
            float *ec = entries(cc, &lcpu->comp.layout, &lcpu->comp.entries, ne);
            size_t diff = 0;
            for (size_t i = 0; i < (size_t)ne * cfg->head_dim; i++) diff += memcmp(&eg[i], &ec[i], 4) != 0;
            ent = diff ? "DIFFER" : "identical";
            bad |= diff != 0;
            free(eg), free(ec);
        }
        if (lg->ratio == 4) {
            int64_t ne = T / 4;
            float *eg = entries(cg, &lg->idx.layout, &lg->idx.entries, ne);
            float *ec = entries(cc, &lcpu->idx.layout, &lcpu->idx.entries, ne);
            size_t diff = 0;
            for (size_t i = 0; i < (size_t)ne * cfg->index_head_dim; i++) diff += memcmp(&eg[i], &ec[i], 4) != 0;
            keys = diff ? "DIFFER" : "identical";
            bad |= diff != 0;
            free(eg), free(ec);
        }
        printf("%-6d %-5s %10.2e %10.2e %6d/%-5d %10s %10s  (first chunk %.2e)\n", l,
               cfg->ratios[l] == 0 ? "SWA" : cfg->ratios[l] == 4 ? "CSA" : "HCA", rel, worst, same, total, ent, keys,
               first);
        bad |= rel >= 1e-2 || (total && same < 0.98 * total);
    }
    /* the window rings after the run (same positions on both) */
    for (int l = 0; l < L; l++) {
        hci_layer_cache *lg = &cg->layers[l], *lcpu = &cc->layers[l];
        float *rg = entries(cg, &lg->win_layout, &lg->ring, lg->window);
        float *rc = entries(cc, &lcpu->win_layout, &lcpu->ring, lg->window);
        printf("layer %d window ring: rel L2 %.2e\n", l, tu_rel_l2(rg, rc, (size_t)lg->window * cfg->head_dim));
        free(rg), free(rc);
    }
    hc_ctx_free(cc), hc_ctx_free(cg);
    hc_model_free(m);
    free(x), free(yc), free(yg), free(sc), free(sg);
    ck_assert_msg(!bad, "CUDA and CPU disagree beyond tolerance (table above)");
}

START_TEST(layers_bf16_cache) { compare_backends(HC_CACHE_BF16); }
END_TEST
START_TEST(layers_fp8_cache) { compare_backends(HC_CACHE_FP8); }
END_TEST

/* The same sequence split differently on the GPU: entries identical, outputs within tolerance. */
START_TEST(split_invariance)
{
    hc_model *m = NULL;
    ck_assert_int_eq(hc_model_create_random(g_geom, 3, NULL, &m), HC_OK);
    int L = m->cfg.n_layers, D = m->cfg.dim;
    int64_t T = g_tokens;
    size_t nx = (size_t)L * T * D;
    float *x = malloc(nx * sizeof(float)), *y1 = malloc(nx * sizeof(float)), *y2 = malloc(nx * sizeof(float));
    tu_fill_normal(x, nx, 123, 1.0f);
    int whole[] = {(int)T}, parts[] = {1, 3, 4, 5, 127, 128, 129, 250};
    hc_ctx *a = make(m, HC_BACKEND_CUDA, HC_CACHE_FP8), *b = make(m, HC_BACKEND_CUDA, HC_CACHE_FP8);
    run_chunks(a, x, T, whole, 1, y1, NULL);
    run_chunks(b, x, T, parts, 8, y2, NULL);
    for (int l = 0; l < L; l++) {
        double rel = tu_rel_l2(y2 + (size_t)l * T * D, y1 + (size_t)l * T * D, (size_t)T * D);
        printf("split invariance layer %d: rel L2 %.2e\n", l, rel);
        ck_assert_msg(rel < 1e-2, "layer %d: %.3g", l, rel);
        hci_layer_cache *la = &a->layers[l], *lb = &b->layers[l];
        if (la->ratio) {
            int64_t ne = T / la->ratio;
            float *ea = entries(a, &la->comp.layout, &la->comp.entries, ne);
            float *eb = entries(b, &lb->comp.layout, &lb->comp.entries, ne);
            ck_assert_msg(memcmp(ea, eb, sizeof(float) * (size_t)ne * m->cfg.head_dim) == 0, "layer %d entries", l);
            free(ea), free(eb);
        }
    }
    hc_ctx_free(a), hc_ctx_free(b);
    hc_model_free(m);
    free(x), free(y1), free(y2);
}
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

/* A session saved by the CPU backend loads into a CUDA context and one saved by the CUDA backend
 * into a CPU context; decoding then goes on as in a context of that backend that computed the
 * tokens itself (bitwise), and within tolerance of the other backend. */
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

START_TEST(sessions_across_backends)
{
    hc_model *m = NULL;
    ck_assert_int_eq(hc_model_create_random("tiny", 41, NULL, &m), HC_OK);
    int L = m->cfg.n_layers, D = m->cfg.dim, T = 300, K = 4;
    float *x = malloc(sizeof(float) * (size_t)L * T * D), *y = malloc(sizeof(float) * (size_t)L * T * D);
    float *xd = malloc(sizeof(float) * (size_t)K * L * D);
    float *ya = malloc(sizeof(float) * (size_t)K * L * D), *yb = malloc(sizeof(float) * (size_t)K * L * D);
    float *yc = malloc(sizeof(float) * (size_t)K * L * D), *yp = malloc(sizeof(float) * (size_t)K * L * D);
    tu_fill_normal(x, (size_t)L * T * D, 51, 1.0f);
    tu_fill_normal(xd, (size_t)K * L * D, 52, 1.0f);
    int whole[] = {T};
    hc_ctx *cpu = make(m, HC_BACKEND_CPU, HC_CACHE_FP8), *gself = make(m, HC_BACKEND_CUDA, HC_CACHE_BF16);
    hc_ctx *gload = make(m, HC_BACKEND_CUDA, HC_CACHE_FP8), *cload = make(m, HC_BACKEND_CPU, HC_CACHE_BF16);
    run_chunks(cpu, x, T, whole, 1, y, NULL);
    run_chunks(gself, x, T, whole, 1, y, NULL);
    uint64_t la = 0, lb = 0;
    void *from_cpu = save_buf(cpu, &la), *from_gpu = save_buf(gself, &lb);
    ck_assert_msg(hc_ctx_load_buffer(gload, from_cpu, la) == HC_OK, "%s", hc_ctx_last_error(gload));
    ck_assert_msg(hc_ctx_load_buffer(cload, from_gpu, lb) == HC_OK, "%s", hc_ctx_last_error(cload));
    ck_assert_int_eq(hc_ctx_n_tokens(gload), T);
    printf("sessions: CPU and CUDA sessions of %d tokens are %s\n", T,
           la == lb && memcmp(from_cpu, from_gpu, la) == 0 ? "byte-identical" : "different");
    decode_steps(cpu, xd, K, yp);
    decode_steps(gself, xd, K, ya);
    decode_steps(gload, xd, K, yb);
    decode_steps(cload, xd, K, yc);
    size_t n = (size_t)K * L * D;
    ck_assert_msg(memcmp(ya, yb, n * sizeof(float)) == 0, "CUDA: loaded from a CPU session differs from computed");
    ck_assert_msg(memcmp(yc, yp, n * sizeof(float)) == 0, "CPU: loaded from a CUDA session differs from computed");
    double rel = tu_rel_l2(yb, yp, n);
    printf("sessions: CUDA after a CPU session vs CPU: rel L2 %.2e\n", rel);
    ck_assert(rel < 1e-2);
    free(from_cpu), free(from_gpu);
    hc_ctx_free(cpu), hc_ctx_free(gself), hc_ctx_free(gload), hc_ctx_free(cload);
    hc_model_free(m);
    free(x), free(y), free(xd), free(ya), free(yb), free(yc), free(yp);
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
    tcase_add_test(tc, split_invariance);
    tcase_add_test(tc, device_io_and_caller_stream);
    tcase_add_test(tc, host_io_staging_pieces);
    tcase_add_test(tc, sessions_across_backends);
    tcase_add_test(tc, out_of_memory_leaves_context_usable);
    suite_add_tcase(s, tc);
    return s;
}
