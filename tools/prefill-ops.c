/* prefill-ops - where the time of one prefill chunk goes, per op, on the CUDA backend: for each
 * layer kind (V4-Flash geometry), a context filled to 64K tokens, then chunks of 2048 tokens:
 * the wall time of hc_append (host input and output) and, for the same chunk through the ops
 * with an event after each, the GPU time of each op. A program that prints numbers.
 *   prefill-ops [CONTEXT_TOKENS [OPTION[=0|1]...] [--json=FILE]]   (a bare OPTION is set to 1, e.g. index_fast)
 * Contexts compute in EXACT numerics (asked for: the library's default on CUDA is FAST), so that a
 * run compares with earlier builds; the options add fast paths (gemv_fast index_fast comp_fast:
 * what FAST sets).
 * --json=FILE also writes the medians as series ("ops") and the indexer's rate as a "kernels" row
 * (FLOPs: 2 x heads x head_dim per visible (query, key) pair of the median timed chunk).
 * Built by hand against an internal tree (it reads ctx/ctx.h); -DHC_OLD_CACHE_API for trees
 * before lib/cache (parent 26242f0 of the architecture change), so one source times both. */
#define _POSIX_C_SOURCE 200809L
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "timing.h"
#include "cli.h"
#include "ctx/ctx.h"
#include "hybridctx_experimental.h"

#define CHECK(call)                                                                          \
    do {                                                                                     \
        int st_ = (call);                                                                    \
        if (st_) { fprintf(stderr, "prefill-ops: %s: %d %s\n", #call, st_, c->err); exit(1); } \
    } while (0)

enum { T_PREP, T_IN, T_Q, T_KV, T_IDXQ, T_ICOMP, T_TOPK, T_COMP, T_ATT, T_WIN, T_OUT, T_STORE, NT };
static const char *names[NT] = {"prepare", "input", "q_path", "kv_path", "index_q", "idx_comp", "topk",
                                "compress", "attend", "window", "out_path", "output"};

static void prepare(hc_ctx *c, int n)
{
    hci_backend *be = c->be;
    hci_layer_cache *lc = &c->layers[0];
    int64_t end = c->n_tokens + n;
    CHECK(be->ops->reserve(be, 0, n, end));
#ifdef HC_OLD_CACHE_API
    hci_comp_cache *cc[2] = {lc->ratio ? &lc->comp : NULL, lc->ratio == 4 ? &lc->idx : NULL};
    for (int k = 0; k < 2; k++)
        if (cc[k]) CHECK(be->ops->pages_grow(be, &cc[k]->entries, (int)((end / cc[k]->ratio + HCI_PAGE_ENTRIES - 1) / HCI_PAGE_ENTRIES)));
#else
    CHECK(hci_cache_prepare(be, lc, end));
#endif
}

/* One chunk of n tokens through the ops of layer 0, an event after each. */
static void timed_chunk(hc_ctx *c, const float *x, float *y, int n, double ms[NT])
{
    hci_backend *be = c->be;
    const hci_backend_ops *op = be->ops;
    hci_layer_cache *lc = &c->layers[0];
    hci_workspace *w = &c->ws;
    int64_t pos = c->n_tokens;
#ifdef HC_OLD_CACHE_API
    cudaStream_t s = (cudaStream_t)hci_backend_cuda_stream(be);
#else
    cudaStream_t s = (cudaStream_t)op->stream(be);
#endif
    cudaEvent_t ev[NT + 1];
    for (int i = 0; i <= NT; i++) cudaEventCreate(&ev[i]);
    for (int i = 0; i < NT; i++) ms[i] = 0;
    int dim = c->model->cfg.dim;
    cudaEventRecord(ev[0], s);
    prepare(c, n);
    cudaEventRecord(ev[T_PREP + 1], s);
    CHECK(op->load_input(be, x, HC_DTYPE_F32, 1, (int64_t)n * dim, w->x));
    cudaEventRecord(ev[T_IN + 1], s);
    CHECK(op->q_path(be, 0, n, pos, w->x, w->c, w->q));
    cudaEventRecord(ev[T_Q + 1], s);
    CHECK(op->kv_path(be, 0, n, pos, w->x, w->kv));
    cudaEventRecord(ev[T_KV + 1], s);
    if (lc->ratio == 4) {
        CHECK(op->index_q(be, 0, n, pos, w->x, w->c, w->qi, w->w));
        cudaEventRecord(ev[T_IDXQ + 1], s);
        CHECK(op->compress(be, 0, 1, &lc->idx, n, pos, w->x));
        cudaEventRecord(ev[T_ICOMP + 1], s);
        CHECK(op->index_topk(be, 0, &lc->idx, n, pos, w->qi, w->w, w->sel));
        cudaEventRecord(ev[T_TOPK + 1], s);
    } else {
        for (int i = T_IDXQ; i <= T_TOPK; i++) cudaEventRecord(ev[i + 1], s);
    }
    if (lc->ratio) CHECK(op->compress(be, 0, 0, &lc->comp, n, pos, w->x));
    cudaEventRecord(ev[T_COMP + 1], s);
    CHECK(op->attend(be, 0, lc, n, pos, w->q, w->kv, lc->ratio == 4 ? w->sel : NULL, w->o));
    cudaEventRecord(ev[T_ATT + 1], s);
    CHECK(op->window_write(be, lc, n, pos, w->kv));
    cudaEventRecord(ev[T_WIN + 1], s);
    CHECK(op->out_path(be, 0, n, pos, w->o, w->y));
    cudaEventRecord(ev[T_OUT + 1], s);
    CHECK(op->store_output(be, w->y, HC_DTYPE_F32, 1, (int64_t)n * dim, y));
    cudaEventRecord(ev[T_STORE + 1], s);
    cudaEventSynchronize(ev[NT]);
    for (int i = 0; i < NT; i++) {
        float t = 0;
        cudaEventElapsedTime(&t, ev[i], ev[i + 1]);
        ms[i] = t;
    }
    for (int i = 0; i <= NT; i++) cudaEventDestroy(ev[i]);
    c->n_tokens += n; /* a real chunk: count it */
}

int main(int argc, char **argv)
{
    int64_t ctx_len = argc > 1 ? atoll(argv[1]) : 65536;
    const int n = 2048, reps = 7;
    const char *json_path = NULL;
    for (int i = 2; i < argc; i++)
        if (!strncmp(argv[i], "--json=", 7)) json_path = argv[i] + 7;
    FILE *js = json_path ? fopen(json_path, "w") : NULL;
    if (json_path && !js) {
        perror(json_path);
        return 1;
    }
    if (js) {
        struct cudaDeviceProp prop;
        if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) prop.name[0] = 0;
        fprintf(js, "{\"tool\": \"prefill-ops\", \"gpu\": \"%s\", \"context\": %lld, \"chunk\": %d, \"options\": [",
                prop.name, (long long)ctx_len, n);
        int first = 1;
        for (int i = 2; i < argc; i++)
            if (strncmp(argv[i], "--json=", 7)) fprintf(js, "%s\"%s\"", first ? "" : ", ", argv[i]), first = 0;
        fprintf(js, "], \"ops\": [");
    }
    int js_rows = 0;
    char kern[512] = "";
    const char *kinds[3] = {"0", "4", "128"}, *label[3] = {"SWA", "CSA", "HCA"};
    printf("| kind | wall ms/chunk (hc_append) | GPU ms (sum of ops) |");
    for (int i = 0; i < NT; i++) printf(" %s |", names[i]);
    printf("\n|---|---|---|");
    for (int i = 0; i < NT; i++) printf("---|");
    printf("\n");
    for (int k = 0; k < 3; k++) {
        char json[256];
        snprintf(json, sizeof json, "{\"num_hidden_layers\": 1, \"compress_ratios\": [%s]}", kinds[k]);
        hc_model_params mp;
        hc_model_params_init(&mp, sizeof mp);
        hc_model *m = NULL;
        if (hc_model_create_random(json, 1, &mp, &m)) return 1;
        hc_ctx_params p;
        hc_ctx_params_init(&p, sizeof p);
        p.backend = HC_BACKEND_CUDA;
        p.cache_format = HC_CACHE_FP8;
#ifndef HC_OLD_CACHE_API
        p.numerics = HC_NUMERICS_EXACT; /* the options below add the fast paths */
#endif
        hc_ctx *c = NULL;
        if (hc_ctx_create(m, &p, &c)) return 1;
#ifndef HC_OLD_CACHE_API
        for (int i = 2; i < argc; i++) { /* NAME sets an option, NAME=0 / NAME=1 sets it to that */
            if (!strncmp(argv[i], "--json=", 7)) continue;
            cli_option_value ov[1];
            int nov = 0;
            if (!strchr(argv[i], '=')) CHECK(hc_x_ctx_set_option(c, argv[i], 1));
            else if (cli_backend_option("prefill-ops", argv[i], ov, &nov)) return 2;
            else CHECK(hc_x_ctx_set_option(c, ov[0].name, ov[0].value));
        }
#endif
        int dim = m->cfg.dim;
        float *x = malloc(sizeof(float) * n * dim), *y = malloc(sizeof(float) * n * dim);
        for (int64_t i = 0; i < (int64_t)n * dim; i++) x[i] = (float)((i * 7919) % 2001 - 1000) / 1000.0f;
        CHECK(hc_x_ctx_fill_random(c, ctx_len, 7));
        double wall[16], ops[NT][16], gsum[16];
        for (int r = 0; r < 3 + reps; r++) {
            double t0 = now_s();
            CHECK(hc_append(c, 0, x, n, y));
            if (r >= 3) wall[r - 3] = 1e3 * (now_s() - t0);
        }
        for (int r = 0; r < reps; r++) {
            double ms[NT];
            timed_chunk(c, x, y, n, ms);
            gsum[r] = 0;
            for (int i = 0; i < NT; i++) ops[i][r] = ms[i], gsum[r] += ms[i];
        }
        printf("| %s | %.3f | %.3f |", label[k], median(wall, reps), median(gsum, reps));
        for (int i = 0; i < NT; i++) printf(" %.3f |", median(ops[i], reps));
        printf("\n");
        if (js) {
            fprintf(js, "%s{\"kind\": \"%s\", \"op\": \"wall\", \"ms\": %.4f}", js_rows++ ? ", " : "", label[k],
                    median(wall, reps));
            for (int i = 0; i < NT; i++)
                fprintf(js, ", {\"kind\": \"%s\", \"op\": \"%s\", \"ms\": %.4f}", label[k], names[i],
                        median(ops[i], reps));
            if (m->cfg.ratios[0] == 4) {
                /* the median timed chunk starts after 3 + 7 untimed chunks and 3 timed ones */
                int64_t pos = ctx_len + (int64_t)(3 + reps + reps / 2) * n;
                double pairs = 0, ms = median(ops[T_TOPK], reps);
                for (int i = 0; i < n; i++) pairs += (double)((pos + i + 1) / 4);
                double flops = pairs * 2.0 * m->cfg.index_n_heads * m->cfg.index_head_dim;
                snprintf(kern, sizeof kern,
                         "{\"name\": \"indexer scores + top-k\", \"shape\": \"%d queries at %lld, %d heads x %d, top %d\", "
                         "\"us\": %.1f, \"tflops_or_tb_s\": %.1f, \"peak\": null}",
                         n, (long long)pos, m->cfg.index_n_heads, m->cfg.index_head_dim, m->cfg.index_topk, 1e3 * ms,
                         flops / (ms * 1e-3) / 1e12);
            }
        }
        fflush(stdout);
        free(x), free(y);
        hc_ctx_free(c);
        hc_model_free(m);
    }
    if (js) {
        fprintf(js, "], \"kernels\": [%s]}\n", kern);
        fclose(js);
    }
    return 0;
}
