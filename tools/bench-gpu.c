/* bench-gpu - CUDA timings of the attention block for the V4-Flash geometry, each next to its
 * floor (bytes / 4.3 TB/s, FLOPs / peak: 790 TFLOP/s bf16, 1481 TFLOP/s fp8, the planning
 * ceilings of /shared/spec/performance.md). A program that prints numbers, not a test.
 *   bench-gpu [--out FILE.md] [--quick] [--full-only] [--profile] [--numerics exact|fast] [--help]
 * Contexts compute in EXACT numerics unless --numerics fast (the library's default on CUDA) is
 * given, so that runs stay comparable with earlier records and with builds of before the default
 * changed; --option NAME=1 adds single fast paths to EXACT.
 * Decode (batch 1) per layer kind at 4K, 128K and 1M tokens, split into projections, compressors,
 * indexer (scores + top-k), attention and the rest; contexts are filled by the documented fast
 * path hc_x_ctx_fill_random (valid random cache state, not a real prefill). Prefill tokens/s at
 * 8K and 128K from an empty context. The cache bytes of a whole V4-Flash context at 1M, and a
 * decode step through all 43 layers of a 1M-token context.
 * --batch B: only batched decode of B contexts per layer kind (CSA, HCA) at 4K and 128K: B
 * separate hc_decode calls, one hc_decode_batch with the shared launches off (CUDA option
 * batch_shared 0: the contexts' ops one after another) and on (the projections as one launch over
 * the B rows, docs/cuda.md "Batches"). */
#include <cuda_runtime.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "timing.h"
#include "cli.h"
#include "ctx/ctx.h"
#include "hybridctx_experimental.h"

#define BW 4.3e12
#define BF16_PEAK 790e12
#define FP8_PEAK 1481e12

static FILE *g_out;
static void emit(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    if (g_out) {
        va_start(ap, fmt);
        vfprintf(g_out, fmt, ap);
        va_end(ap);
    }
    fflush(stdout);
}

/* --json FILE: the same numbers as series (docs/perf/README.md schema; tools/plot-perf.py) */
static char g_js[5][16384]; /* decode, decode_model, prefill, memory, decode_batch: comma-separated objects */
enum { J_DECODE, J_MODEL, J_PREFILL, J_MEMORY, J_BATCH };
static void jrow(int section, const char *fmt, ...)
{
    char row[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(row, sizeof row, fmt, ap);
    va_end(ap);
    size_t len = strlen(g_js[section]);
    snprintf(g_js[section] + len, sizeof g_js[section] - len, "%s\n    %s", len ? "," : "", row);
}
static const char *g_numerics = "exact"; /* the numerics, and the options that change it */
static int g_numerics_mode = HC_NUMERICS_EXACT; /* --numerics */

static hc_model *flash_model(const char *ratios, int layers, int geometry_only)
{
    char json[4096];
    snprintf(json, sizeof json, "{\"num_hidden_layers\": %d, \"compress_ratios\": [%s]}", layers, ratios);
    hc_model_params mp;
    hc_model_params_init(&mp, sizeof mp);
    if (geometry_only) mp.flags = HC_MODEL_GEOMETRY_ONLY;
    hc_model *m = NULL;
    if (hc_model_create_random(layers == 43 ? "v4-flash" : json, 1, &mp, &m)) {
        fprintf(stderr, "bench-gpu: model failed\n");
        exit(1);
    }
    return m;
}

/* --option NAME=VALUE: backend options for every context (hc_x_ctx_set_option) */
static cli_option_value g_options[CLI_MAX_OPTIONS];
static int g_n_options;

static hc_ctx *cuda_ctx(hc_model *m)
{
    hc_ctx_params p;
    hc_ctx_params_init(&p, sizeof p);
    p.backend = HC_BACKEND_CUDA;
    p.cache_format = HC_CACHE_FP8;
    p.numerics = g_numerics_mode; /* explicit: DEFAULT is FAST on CUDA */
    hc_ctx *c = NULL;
    hc_status st = hc_ctx_create(m, &p, &c);
    if (st) {
        fprintf(stderr, "bench-gpu: context: %s\n", hc_strerror(st));
        exit(1);
    }
    for (int i = 0; i < g_n_options; i++)
        if ((st = hc_x_ctx_set_option(c, g_options[i].name, g_options[i].value))) {
            fprintf(stderr, "bench-gpu: --option %s: %s\n", g_options[i].name, hc_ctx_last_error(c));
            exit(1);
        }
    return c;
}

static void fill(float *x, size_t n, uint64_t s)
{
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((int64_t)(s >> 33) - (1ll << 30)) / (float)(1 << 30);
    }
}

#define CHECK(call)                                                                 \
    do {                                                                            \
        int st_ = (call);                                                           \
        if (st_) { fprintf(stderr, "bench-gpu: %s: %d %s\n", #call, st_, c->err); exit(1); } \
    } while (0)

enum { P_PROJ, P_COMP, P_INDEX, P_ATTN, P_OTHER, NPARTS };

/* One decode step of layer 0 through the ops, with an event after each op. */
static void timed_step(hc_ctx *c, const float *x, double ms[NPARTS])
{
    hci_backend *be = c->be;
    const hci_backend_ops *op = be->ops;
    hci_layer_cache *lc = &c->layers[0];
    hci_workspace *w = &c->ws;
    int64_t pos = c->n_tokens;
    cudaStream_t s = (cudaStream_t)be->ops->stream(be);
    cudaEvent_t ev[16];
    int part[16], ne = 0;
    for (int i = 0; i < 16; i++) cudaEventCreate(&ev[i]);
#define MARK(p) do { cudaEventRecord(ev[ne], s); part[ne++] = (p); } while (0)
    CHECK(be->ops->reserve(be, 0, 1, pos + 1));
    CHECK(hci_cache_prepare(be, lc, pos + 1));
    MARK(P_OTHER);
    CHECK(op->load_input(be, x, HC_DTYPE_F32, 1, c->model->cfg.dim, w->x));
    MARK(P_OTHER);
    /* as the engine's run_piece: with the option decode_fused, the projections (the compressors'
     * too) by proj_in, and the compressors from what it made (x NULL) */
    int fused = op->proj_in && op->proj_in_ok(be, 0, 1);
    const uint16_t *cx = fused ? NULL : w->x;
    if (fused) {
        CHECK(op->proj_in(be, 0, 1, pos, w->x, w->c, w->q, w->kv, w->qi, w->w));
    } else {
        CHECK(op->q_path(be, 0, 1, pos, w->x, w->c, w->q));
        CHECK(op->kv_path(be, 0, 1, pos, w->x, w->kv));
    }
    MARK(P_PROJ);
    if (lc->ratio == 4) {
        if (!fused) CHECK(op->index_q(be, 0, 1, pos, w->x, w->c, w->qi, w->w));
        MARK(P_PROJ);
        CHECK(op->compress(be, 0, 1, &lc->idx, 1, pos, cx));
        MARK(P_COMP);
        CHECK(op->index_topk(be, 0, &lc->idx, 1, pos, w->qi, w->w, w->sel));
        MARK(P_INDEX);
    }
    if (lc->ratio) {
        CHECK(op->compress(be, 0, 0, &lc->comp, 1, pos, cx));
        MARK(P_COMP);
    }
    CHECK(op->attend(be, 0, lc, 1, pos, w->q, w->kv, lc->ratio == 4 ? w->sel : NULL, w->o));
    MARK(P_ATTN);
    CHECK(op->window_write(be, lc, 1, pos, w->kv));
    MARK(P_OTHER);
    CHECK(op->out_path(be, 0, 1, pos, w->o, w->y));
    MARK(P_PROJ);
    cudaEventSynchronize(ev[ne - 1]);
    for (int p = 0; p < NPARTS; p++) ms[p] = 0;
    for (int i = 1; i < ne; i++) {
        float t = 0;
        cudaEventElapsedTime(&t, ev[i - 1], ev[i]);
        ms[part[i]] += t;
    }
    for (int i = 0; i < 16; i++) cudaEventDestroy(ev[i]);
    /* the step is a real decode: count the token */
    c->n_tokens++;
}

/* The bytes of one layer's weights that a decode step reads (FP8 1 B, bf16 2 B). */
static double weight_bytes(const hci_config *g, int ratio)
{
    return (double)g->q_lora_rank * g->dim + (double)g->n_heads * g->head_dim * g->q_lora_rank +
           (double)g->head_dim * g->dim + 2.0 * g->o_groups * g->o_lora_rank * g->n_heads / g->o_groups * g->head_dim +
           (double)g->dim * g->o_groups * g->o_lora_rank + (ratio ? 2.0 * 2 * (ratio == 4 ? 2 : 1) * g->head_dim * g->dim : 0) +
           (ratio == 4 ? 2.0 * 2 * 2 * g->index_head_dim * g->dim : 0);
}

static void decode_table(int ratio, const int64_t *lens, int nlens, int steps)
{
    hc_model *m = flash_model(ratio == 4 ? "4" : "128", 1, 0);
    const hci_config *g = &m->cfg;
    emit("\n### Decode, one %s layer (V4-Flash geometry), batch 1, fp8 cache\n\n", ratio == 4 ? "CSA" : "HCA");
    emit("| context | projections | compressors | indexer+top-k | attention | other | total ms | floor ms |\n");
    emit("|---|---|---|---|---|---|---|---|\n");
    float *x = malloc(sizeof(float) * g->dim);
    for (int li = 0; li < nlens; li++) {
        hc_ctx *c = cuda_ctx(m);
        double t0 = now_s();
        if (hc_x_ctx_fill_random(c, lens[li], 7)) { fprintf(stderr, "fill failed: %s\n", c->err); exit(1); }
        double tf = now_s() - t0;
        double acc[NPARTS][64], tot[64];
        for (int s = 0; s < steps + 3; s++) {
            double ms[NPARTS];
            fill(x, (size_t)g->dim, (uint64_t)s);
            timed_step(c, x, ms);
            if (s < 3) continue;
            tot[s - 3] = 0;
            for (int p = 0; p < NPARTS; p++) acc[p][s - 3] = ms[p], tot[s - 3] += ms[p];
        }
        /* floors: weights read once (FP8 1 B, bf16 2 B, the double compressor copies 8 B), the
         * indexer keys (68 B), the attended entries (584 B); FLOPs at the matching peak */
        int64_t n = lens[li];
        double wbytes = weight_bytes(g, ratio);
        double ent = g->window + (ratio == 4 ? g->index_topk : (double)(n / 128));
        double abytes = ent * 584, aflops = 4.0 * g->n_heads * g->head_dim * ent;
        double ibytes = ratio == 4 ? (double)(n / 4) * 68 + (double)g->index_n_heads * g->index_head_dim * g->q_lora_rank : 0;
        double iflops = ratio == 4 ? 2.0 * g->index_n_heads * g->index_head_dim * (double)(n / 4) : 0;
        double floor_ms = 1e3 * (wbytes / BW + (abytes / BW > aflops / BF16_PEAK ? abytes / BW : aflops / BF16_PEAK) +
                                 (ibytes / BW > iflops / FP8_PEAK ? ibytes / BW : iflops / FP8_PEAK));
        double mp = median(acc[P_PROJ], steps), mc = median(acc[P_COMP], steps), mi = median(acc[P_INDEX], steps);
        double ma = median(acc[P_ATTN], steps), mo = median(acc[P_OTHER], steps), mt = median(tot, steps);
        emit("| %lldK | %.3f | %.3f | %.3f | %.3f | %.3f | **%.3f** | %.4f |\n", (long long)(n / 1024), mp, mc, mi, ma,
             mo, mt, floor_ms);
        jrow(J_DECODE,
             "{\"layer\": \"%s\", \"ctx\": %lld, \"batch\": 1, \"io\": \"host f32\", \"numerics\": \"%s\", "
             "\"us\": %.1f, \"floor_us\": %.1f, \"parts_us\": {\"projections\": %.1f, \"compressors\": %.1f, "
             "\"indexer_topk\": %.1f, \"attention\": %.1f, \"other\": %.1f}}",
             ratio == 4 ? "CSA" : "HCA", (long long)n, g_numerics, 1e3 * mt, 1e3 * floor_ms, 1e3 * mp, 1e3 * mc,
             1e3 * mi, 1e3 * ma, 1e3 * mo);
        fprintf(stderr, "  (fill of %lld tokens: %.2f s)\n", (long long)n, tf);
        hc_ctx_free(c);
    }
    emit("\nFloor = every weight read once at its checkpoint width (FP8 1 B, bf16 2 B; the compressor's bf16) "
         "+ max(entries x 584 B / BW, attention FLOPs / bf16 peak) + max(keys x 68 B / BW, indexer FLOPs / fp8 peak).\n");
    free(x);
    hc_model_free(m);
}

/* --batch B: one decode step of B contexts of one layer, three ways (each the median over steps,
 * host-memory f32 x and y, so every way ends with its outputs on the host): B separate hc_decode
 * calls; hc_decode_batch with the option batch_shared 0 (the contexts' ops one after another,
 * each on its own stream); hc_decode_batch with the shared launches (the default). The contexts
 * are filled apart (hc_x_ctx_fill_random, a seed each), so that their attention reads their own
 * entries. */
static void batch_table(int ratio, const int64_t *lens, int nlens, int B, int steps)
{
    hc_model *m = flash_model(ratio == 4 ? "4" : "128", 1, 0);
    const hci_config *g = &m->cfg;
    const char *kind = ratio == 4 ? "CSA" : "HCA";
    emit("\n### Batched decode, one %s layer (V4-Flash geometry), %d contexts, fp8 cache, host f32 x and y\n\n", kind, B);
    emit("| context | separate ms | batch, unshared ms | batch, shared ms | shared us per token | separate / shared | "
         "weights once ms |\n");
    emit("|---|---|---|---|---|---|---|\n");
    size_t D = (size_t)g->dim;
    float *x = malloc(sizeof(float) * D * B), *y = malloc(sizeof(float) * D * B);
    hc_ctx **cs = calloc((size_t)B, sizeof *cs);
    double *t[3];
    for (int k = 0; k < 3; k++) t[k] = calloc((size_t)steps, sizeof(double));
    for (int li = 0; li < nlens; li++) {
        int64_t n = lens[li];
        double t0 = now_s();
        for (int i = 0; i < B; i++) {
            cs[i] = cuda_ctx(m);
            if (hc_x_ctx_fill_random(cs[i], n, 7 + (uint64_t)i)) {
                fprintf(stderr, "bench-gpu: fill failed: %s\n", hc_ctx_last_error(cs[i]));
                exit(1);
            }
        }
        double tf = now_s() - t0;
        for (int way = 0; way < 3; way++) {
            for (int i = 0; i < B; i++)
                if (hc_x_ctx_set_option(cs[i], "batch_shared", way == 2)) {
                    fprintf(stderr, "bench-gpu: batch_shared: %s\n", hc_ctx_last_error(cs[i]));
                    exit(1);
                }
            for (int s = 0; s < steps + 2; s++) {
                fill(x, D * B, (uint64_t)(100 * way + s));
                double t1 = now_s();
                hc_status st = HC_OK;
                if (way == 0)
                    for (int i = 0; i < B && !st; i++) st = hc_decode(cs[i], 0, x + D * i, y + D * i);
                else
                    st = hc_decode_batch(cs, B, 0, x, y);
                if (st) {
                    fprintf(stderr, "bench-gpu: batched decode: %s\n", hc_ctx_last_error(cs[0]));
                    exit(1);
                }
                if (s >= 2) t[way][s - 2] = 1e3 * (now_s() - t1);
            }
        }
        double ms[3];
        for (int k = 0; k < 3; k++) ms[k] = median(t[k], steps);
        double wms = 1e3 * weight_bytes(g, ratio) / BW;
        uint64_t shared = 0;
        for (int i = 0; i < B; i++) shared += cs[i]->shared_pieces;
        emit("| %lldK | %.3f | %.3f | %.3f | %.1f | %.2fx | %.4f |\n", (long long)(n / 1024), ms[0], ms[1], ms[2],
             1e3 * ms[2] / B, ms[0] / ms[2], wms);
        jrow(J_BATCH,
             "{\"layer\": \"%s\", \"ctx\": %lld, \"batch\": %d, \"io\": \"host f32\", \"numerics\": \"%s\", "
             "\"separate_ms\": %.4f, \"unshared_ms\": %.4f, \"shared_ms\": %.4f, \"weights_once_ms\": %.4f, "
             "\"shared_pieces\": %llu}",
             kind, (long long)n, B, g_numerics, ms[0], ms[1], ms[2], wms, (unsigned long long)shared);
        fprintf(stderr, "  (%d fills of %lld tokens: %.2f s; %llu pieces ran shared)\n", B, (long long)n, tf,
                (unsigned long long)shared);
        for (int i = 0; i < B; i++) hc_ctx_free(cs[i]);
    }
    emit("\nEach way is one decode step of all %d contexts, x and y in host memory (f32); weights once = one "
         "layer's weights read once at %.1f TB/s, the part a shared launch reads once instead of %d times.\n",
         B, BW / 1e12, B);
    for (int k = 0; k < 3; k++) free(t[k]);
    free(cs), free(x), free(y);
    hc_model_free(m);
}

static void prefill_table(const int64_t *lens, int nlens)
{
    emit("\n### Prefill from an empty context, one layer (V4-Flash geometry), chunks of 2048\n\n");
    emit("| kind | tokens | seconds | tokens/s | floor s (FLOPs at peak) |\n|---|---|---|---|---|\n");
    int ratios[3] = {0, 4, 128};
    for (int k = 0; k < 3; k++) {
        char r[8];
        snprintf(r, sizeof r, "%d", ratios[k]);
        hc_model *m = flash_model(r, 1, 0);
        const hci_config *g = &m->cfg;
        float *x = malloc(sizeof(float) * 2048 * g->dim), *y = malloc(sizeof(float) * 2048 * g->dim);
        fill(x, (size_t)2048 * g->dim, 5);
        for (int li = 0; li < nlens; li++) {
            hc_ctx *c = cuda_ctx(m);
            int64_t n = lens[li];
            double t0 = now_s();
            for (int64_t done = 0; done < n; done += 2048)
                if (hc_append(c, 0, x, 2048, y)) { fprintf(stderr, "prefill: %s\n", c->err); exit(1); }
            double t = now_s() - t0;
            /* FLOPs: projections 2 x params per token (fp8), indexer 2048 L^2 (fp8), attention */
            double params = (double)g->q_lora_rank * g->dim + (double)g->n_heads * g->head_dim * g->q_lora_rank +
                            (double)g->head_dim * g->dim + 2.0 * g->dim * g->o_groups * g->o_lora_rank;
            double f8 = 2.0 * params * n + (ratios[k] == 4 ? 2048.0 * (double)n * n : 0);
            double ent = ratios[k] == 4 ? g->window + g->index_topk : (ratios[k] ? g->window + n / 256.0 : g->window);
            double f16 = 4.0 * g->n_heads * g->head_dim * ent * n;
            const char *kind = ratios[k] == 0 ? "SWA" : ratios[k] == 4 ? "CSA" : "HCA";
            emit("| %s | %lldK | %.2f | %.0f | %.3f |\n", kind, (long long)(n / 1024), t, (double)n / t,
                 f8 / FP8_PEAK + f16 / BF16_PEAK);
            jrow(J_PREFILL,
                 "{\"layer\": \"%s\", \"ctx\": %lld, \"tokens\": %lld, \"chunk\": 2048, \"io\": \"host f32\", "
                 "\"numerics\": \"%s\", \"s\": %.3f, \"tokens_per_s\": %.0f, \"floor_s\": %.4f}",
                 kind, (long long)n, (long long)n, g_numerics, t, (double)n / t, f8 / FP8_PEAK + f16 / BF16_PEAK);
            hc_ctx_free(c);
        }
        free(x), free(y);
        hc_model_free(m);
    }
}

static void full_model_1m(int64_t n, int steps)
{
    hc_model *m = flash_model("", 43, 0);
    uint64_t kv_fp8, st_fp8, kv_bf16;
    hc_model_cache_bytes(m, n, HC_CACHE_FP8, &kv_fp8, &st_fp8);
    hc_model_cache_bytes(m, n, HC_CACHE_BF16, &kv_bf16, NULL);
    hc_ctx *c = cuda_ctx(m);
    double t0 = now_s();
    /* leave room for the decode steps below the model's maximum length */
    if (hc_x_ctx_fill_random(c, n - 64, 3)) { fprintf(stderr, "fill: %s\n", c->err); exit(1); }
    double tf = now_s() - t0;
    emit("\n### Whole V4-Flash (43 layers) at %lld tokens on one GPU\n\n", (long long)(n - 64));
    emit("- cache held by the context: %.3f GiB (formula: %.3f GiB fp8 KV + %.1f MiB compressor state; "
         "bf16 format would be %.3f GiB)\n", (double)hc_ctx_memory_bytes(c) / (1 << 30), (double)kv_fp8 / (1 << 30),
         (double)st_fp8 / (1 << 20), (double)kv_bf16 / (1 << 30));
    emit("- filled by hc_x_ctx_fill_random in %.1f s\n", tf);
    int D = m->cfg.dim;
    float *x = malloc(sizeof(float) * D), *y = malloc(sizeof(float) * D);
    double times[32];
    for (int s = 0; s < steps + 1 && s < 32; s++) {
        fill(x, (size_t)D, (uint64_t)s);
        double t1 = now_s();
        for (int l = 0; l < 43; l++)
            if (hc_decode(c, l, x, y)) { fprintf(stderr, "decode: %s\n", c->err); exit(1); }
        if (s) times[s - 1] = now_s() - t1;
    }
    double ms = 1e3 * median(times, steps);
    emit("- decode, all 43 layers, batch 1: median %.2f ms per token over %d tokens\n", ms, steps);
    jrow(J_MODEL,
         "{\"layers\": 43, \"ctx\": %lld, \"batch\": 1, \"io\": \"host f32\", \"numerics\": \"%s\", "
         "\"ms_per_step\": %.3f, \"floor_ms\": null}",
         (long long)(n - 64), g_numerics, ms);
    jrow(J_MEMORY, "{\"ctx\": %lld, \"bytes\": %llu, \"bf16_bytes\": %llu, \"source\": \"hc_ctx_memory_bytes\"}",
         (long long)(n - 64), (unsigned long long)hc_ctx_memory_bytes(c), (unsigned long long)(kv_bf16 + st_fp8));
    free(x), free(y);
    hc_ctx_free(c);
    hc_model_free(m);
}

/* --profile: a few decode steps of one CSA layer at 4K, for a kernel profiler (ncu). */
static void profile_decode(void)
{
    hc_model *m = flash_model("4", 1, 0);
    hc_ctx *c = cuda_ctx(m);
    if (hc_x_ctx_fill_random(c, 4096, 7)) exit(1);
    float *x = malloc(sizeof(float) * m->cfg.dim);
    for (int s = 0; s < 3; s++) {
        double ms[NPARTS];
        fill(x, (size_t)m->cfg.dim, (uint64_t)s);
        double t0 = now_s();
        timed_step(c, x, ms);
        printf("step %d: host %.3f ms; device proj %.3f comp %.3f index %.3f attn %.3f other %.3f\n", s,
               1e3 * (now_s() - t0), ms[P_PROJ], ms[P_COMP], ms[P_INDEX], ms[P_ATTN], ms[P_OTHER]);
    }
    free(x);
    hc_ctx_free(c);
    hc_model_free(m);
}

static int write_json(const char *path, const char *gpu, const char *commit)
{
    if (!path) return 0;
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "bench-gpu: %s: cannot open for writing\n", path);
        return 1;
    }
    time_t now = time(NULL);
    char date[16];
    strftime(date, sizeof date, "%Y-%m-%d", gmtime(&now));
    fprintf(f, "{\n  \"date\": \"%s\", \"gpu\": \"%s\", \"commit\": \"%s\", \"model\": \"V4-Flash geometry\",\n", date,
            gpu, commit);
    fprintf(f, "  \"ceilings\": {\"read_tb_s\": %.2f, \"bf16_tflops\": %.0f, \"fp8_tflops\": %.0f},\n", BW / 1e12,
            BF16_PEAK / 1e12, FP8_PEAK / 1e12);
    static const char *names[5] = {"decode", "decode_model", "prefill", "memory", "decode_batch"};
    for (int i = 0; i < 5; i++) fprintf(f, "  \"%s\": [%s\n  ],\n", names[i], g_js[i]);
    fprintf(f, "  \"kernels\": []\n}\n");
    return fclose(f) ? 1 : 0;
}

static const char usage[] =
    "usage: bench-gpu [--out FILE.md] [--quick] [--full-only] [--profile] [--batch B]\n"
    "                 [--numerics exact|fast] [--option NAME=0|1]...\n"
    "\n"
    "CUDA timings of the attention block for the V4-Flash geometry, each next to its floor: decode\n"
    "per layer kind at 4K, 128K and 1M tokens, prefill at 8K and 128K, the whole model at 1M.\n"
    "\n"
    "  --out FILE.md       also write the tables (markdown) to FILE.md\n"
    "  --quick             fewer contexts and steps (a smoke run)\n"
    "  --full-only         only the whole 43-layer model at 1M tokens (--quick: at 64K)\n"
    "  --profile           only a few decode steps of one CSA layer at 4K, for a kernel profiler\n"
    "  --batch B           only batched decode of B contexts (2..256) per layer kind at 4K and\n"
    "                      128K: separate calls, a batch unshared, a batch shared (--quick: 5\n"
    "                      steps each instead of 20)\n"
    "  --numerics N        exact (default, as earlier records) or fast (the library's default on\n"
    "                      CUDA; docs/numerics.md)\n"
    "  --option NAME=V     a CUDA backend option for every context (docs/cuda.md, Options)\n"
    "  --json FILE         also write the numbers as JSON series (docs/perf/README.md)\n"
    "  --commit ID         the commit measured, for the JSON\n"
    "  -h, --help          this text\n";

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"out", required_argument, NULL, 'o'}, {"quick", no_argument, NULL, 'q'},
        {"full-only", no_argument, NULL, 'f'}, {"profile", no_argument, NULL, 'p'},
        {"option", required_argument, NULL, 'O'}, {"help", no_argument, NULL, 'h'},
        {"json", required_argument, NULL, 'j'}, {"commit", required_argument, NULL, 'c'},
        {"numerics", required_argument, NULL, 'n'}, {"batch", required_argument, NULL, 'b'},
        {NULL, 0, NULL, 0},
    };
    int quick = 0, full_only = 0, profile = 0, batch = 0, o, bad = 0;
    const char *out = NULL, *json = NULL, *commit = "unknown";
    while (!bad && (o = cli_getopt("bench-gpu", argc, argv, "h", opts)) != -1) {
        switch (o) {
        case 'o': out = optarg; break;
        case 'q': quick = 1; break;
        case 'f': full_only = 1; break;
        case 'p': profile = 1; break;
        case 'O': bad = cli_backend_option("bench-gpu", optarg, g_options, &g_n_options) != 0; break;
        case 'j': json = optarg; break;
        case 'n': {
            static const char *const modes[] = {"exact", "fast", NULL};
            int k = cli_choice("bench-gpu", "--numerics", optarg, modes);
            if (k < 0) bad = 1;
            else g_numerics_mode = k ? HC_NUMERICS_FAST : HC_NUMERICS_EXACT;
            break;
        }
        case 'c': commit = optarg; break;
        case 'b': {
            char *end = NULL;
            long v = strtol(optarg, &end, 10);
            if (!*optarg || *end || v < 2 || v > 256) {
                fprintf(stderr, "bench-gpu: invalid value '%s' for --batch: expected 2..256\n", optarg);
                bad = 1;
            } else {
                batch = (int)v;
            }
            break;
        }
        case 'h': fputs(usage, stdout); return 0;
        default: bad = 1;
        }
    }
    if (!bad && optind < argc) cli_unexpected("bench-gpu", argv[optind]), bad = 1;
    if (!bad && full_only + profile + (batch > 0) > 1)
        fprintf(stderr, "bench-gpu: --full-only, --profile and --batch exclude each other\n"), bad = 1;
    if (bad) {
        fprintf(stderr, "%.*s\n(bench-gpu --help for details)\n", (int)(strstr(usage, "\n\n") - usage), usage);
        return CLI_EXIT_USAGE;
    }
    static char numerics[600];
    snprintf(numerics, sizeof numerics, "%s", g_numerics_mode == HC_NUMERICS_FAST ? "fast" : "exact");
    for (int i = 0; i < g_n_options; i++) {
        size_t len = strlen(numerics);
        snprintf(numerics + len, sizeof numerics - len, "%s%s", g_options[i].value ? "+" : "-", g_options[i].name);
    }
    g_numerics = numerics;
    if (out && !(g_out = fopen(out, "w"))) {
        fprintf(stderr, "bench-gpu: %s: cannot open for writing\n", out);
        return 1;
    }
    if (profile) {
        profile_decode();
        return 0;
    }
    int32_t nd = 0;
    hc_cuda_device_count(&nd);
    if (!nd) {
        fprintf(stderr, "bench-gpu: no CUDA device\n");
        return 77;
    }
    struct cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, 0);
    if (full_only) { /* --quick: at 64K tokens (a short fill), for comparisons of options */
        full_model_1m(quick ? 65536 : 1048576, 10);
        if (g_out) fclose(g_out);
        return write_json(json, prop.name, commit);
    }
    if (batch) {
        emit("## bench-gpu --batch %d: %s, %d SMs, libhybridctx %s, numerics %s\n", batch, prop.name,
             prop.multiProcessorCount, hc_version_string(), g_numerics);
        int64_t bl[2] = {4096, 131072};
        batch_table(4, bl, 2, batch, quick ? 5 : 20);
        batch_table(128, bl, 2, batch, quick ? 5 : 20);
        if (g_out) fclose(g_out);
        return write_json(json, prop.name, commit);
    }
    emit("## bench-gpu: %s, %d SMs, libhybridctx %s\n", prop.name, prop.multiProcessorCount, hc_version_string());
    int64_t dl[3] = {4096, 131072, 1048576}, pl[2] = {8192, 131072};
    decode_table(4, dl, quick ? 2 : 3, quick ? 5 : 20);
    decode_table(128, dl, quick ? 2 : 3, quick ? 5 : 20);
    prefill_table(pl, quick ? 1 : 2);
    full_model_1m(quick ? 65536 : 1048576, quick ? 3 : 10);
    if (g_out) fclose(g_out);
    return write_json(json, prop.name, commit);
}
