/* prefill-e2e - the end-to-end prefill of issue 11 on one GPU: a V4-Flash model with random
 * weights, an empty CUDA context in fast numerics, T tokens fed by real hc_append calls through
 * every layer, chunk after chunk. x and y are bf16 in device memory (two buffers of one chunk,
 * ping-ponged: each layer's y is the next layer's x, no MLP between layers). A program that
 * prints numbers, not a test.
 *   prefill-e2e [--tokens T] [--chunk C] [--layers N] [--exact] [--option NAME=0|1]... [--seed S] [--json FILE]
 *               [--commit ID]
 * The clock runs from the first hc_append to the end of the last layer of the last chunk (a final
 * cudaStreamSynchronize). CUDA events on the context's stream around every layer call add up the
 * GPU time of each layer kind (SWA ratio 0, CSA ratio 4, HCA ratio 128, from
 * hc_model_layer_ratio). Peak device memory: cudaMemGetInfo after every chunk, minus its value
 * before the context was created (so the device copy of the weights is included); the context's
 * own view (hc_ctx_memory_info) at the end and the largest workspace seen.
 * A shorter run (--tokens) projects the full 1,048,560 tokens: per layer kind the cost of a token
 * is fitted as a + b * position over the run's chunks (the window part and the projections are
 * constant per token; the indexer's scores and top-k over position/4 keys and HCA's attention over
 * position/128 entries grow linearly), so a prefill of L tokens takes about a L + b L^2 / 2. The
 * first chunk (warm-up) is left out of the fit. Exit 77 without a CUDA device. */
#define _POSIX_C_SOURCE 200809L
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "timing.h"
#include "cli.h"
#include "hybridctx.h"
#include "hybridctx_experimental.h"

#define PROG "prefill-e2e"
#define FULL_TOKENS 1048560 /* the 1M run: 2^20 - 16 */
#define MAX_LAYERS 1024

enum { K_SWA, K_CSA, K_HCA, NKINDS };
static const char *kind_name[NKINDS] = {"SWA", "CSA", "HCA"};

static int kind_of(int ratio) { return ratio == 0 ? K_SWA : ratio == 4 ? K_CSA : ratio == 128 ? K_HCA : -1; }

static void die_hc(const char *what, const hc_ctx *c, hc_status st)
{
    fprintf(stderr, PROG ": %s: %s (%s)\n", what, hc_status_name(st), c ? hc_ctx_last_error(c) : hc_strerror(st));
    exit(1);
}

#define CU(call)                                                                                            \
    do {                                                                                                    \
        cudaError_t e_ = (call);                                                                            \
        if (e_ != cudaSuccess) {                                                                            \
            fprintf(stderr, PROG ": %s: %s\n", #call, cudaGetErrorString(e_));                              \
            exit(1);                                                                                        \
        }                                                                                                   \
    } while (0)

static double gib(double b) { return b / (1024.0 * 1024.0 * 1024.0); }
static double mib(double b) { return b / (1024.0 * 1024.0); }

static size_t used_bytes(void)
{
    size_t free_b = 0, total = 0;
    CU(cudaMemGetInfo(&free_b, &total));
    return total - free_b;
}

/* round-to-nearest-even float -> bf16 bits (the inputs are finite) */
static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* n bf16 values, roughly normal with unit variance (sum of 4 uniforms), from seed */
static void fill_bf16(uint16_t *x, size_t n, uint64_t s)
{
    for (size_t i = 0; i < n; i++) {
        float v = 0;
        for (int k = 0; k < 4; k++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            v += (float)(s >> 40) / (float)(1 << 24) - 0.5f;
        }
        x[i] = to_bf16(v * 1.7320508f);
    }
}

/* Per-token cost of a layer kind as a + b * position, least squares over chunks [from, to):
 * t[k] seconds for the n[k] tokens starting at p0[k] (the chunk's mean position p0 + (n-1)/2). */
typedef struct { double a, b; int ok; } fit_t;

static fit_t fit_linear(const double *t, const int64_t *p0, const int64_t *n, int from, int to)
{
    fit_t f = {0, 0, 0};
    int m = to - from;
    if (m < 1) return f;
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (int k = from; k < to; k++) {
        double x = (double)p0[k] + 0.5 * (double)(n[k] - 1), y = t[k] / (double)n[k];
        sx += x, sy += y, sxx += x * x, sxy += x * y;
    }
    double den = m * sxx - sx * sx;
    if (m >= 2 && den > 0) {
        f.b = (m * sxy - sx * sy) / den;
        f.a = (sy - f.b * sx) / m;
    } else {
        f.a = sy / m; /* one point: a constant cost per token */
    }
    f.ok = 1;
    return f;
}

/* Seconds the fit predicts for the chunks of C tokens covering positions [from, to). */
static double fit_predict(fit_t f, int64_t from, int64_t to, int64_t chunk)
{
    double s = 0;
    for (int64_t p = from; p < to; p += chunk) {
        int64_t n = to - p < chunk ? to - p : chunk;
        s += (double)n * (f.a + f.b * ((double)p + 0.5 * (double)(n - 1)));
    }
    return s;
}

typedef struct {
    int64_t tokens, chunk;
    int n_chunks, done;       /* chunks planned, chunks run */
    int64_t *p0, *n;          /* per chunk: first position, tokens */
    double *t[NKINDS];        /* per chunk: GPU seconds of each kind (all its layers) */
    double other;             /* wall seconds outside the chunks' events (host work between chunks) */
    int layers_of[NKINDS];
} run_t;

/* Projected seconds of a prefill of `target` tokens: what the run measured for its chunks, plus the
 * fit of each kind (and the measured time between chunks, per chunk) for the chunks it did not run.
 * out_kind (may be NULL) receives the projection of each kind. */
static double project(const run_t *r, int64_t target, double out_kind[NKINDS])
{
    int64_t reached = r->done ? r->p0[r->done - 1] + r->n[r->done - 1] : 0;
    int from = r->done >= 3 ? 1 : 0; /* leave the warm-up chunk out when there are others */
    double total = 0;
    for (int k = 0; k < NKINDS; k++) {
        double s = 0;
        for (int i = 0; i < r->done; i++) s += r->t[k][i];
        if (target > reached && r->layers_of[k]) s += fit_predict(fit_linear(r->t[k], r->p0, r->n, from, r->done), reached,
                                                                  target, r->chunk);
        if (out_kind) out_kind[k] = s;
        total += s;
    }
    if (r->done && target > reached) {
        int64_t more = (target - reached + r->chunk - 1) / r->chunk;
        total += r->other / r->done * (double)more;
    }
    return total + r->other;
}

static const char usage[] =
    "usage: prefill-e2e [--tokens T] [--chunk C] [--layers N] [--exact] [--option NAME=0|1]... [--seed S]\n"
    "                   [--json FILE] [--commit ID]\n"
    "\n"
    "End-to-end prefill on one GPU: a V4-Flash model with random weights, an empty CUDA context, T\n"
    "tokens through every layer by hc_append, bf16 x and y in device memory, each layer's output the\n"
    "next layer's input. Prints the time per layer kind, the peak device memory, and a projection of\n"
    "the 1,048,560-token run (per-token cost a + b * position per layer kind, fitted on the chunks).\n"
    "\n"
    "  --tokens T      tokens to prefill (default 1048560, at most the model's max_position_embeddings)\n"
    "  --chunk C       tokens per hc_append call, 1..65536 (default 2048; the context's max_chunk)\n"
    "  --layers N      the first N layers of v4-flash (default all 43)\n"
    "  --exact         HC_NUMERICS_EXACT instead of HC_NUMERICS_FAST\n"
    "  --option NAME=V a CUDA backend option, V 0 or 1 (docs/cuda.md), set after the numerics' own,\n"
    "                  e.g. gemm_wgmma=0 for the mma.sync prefill GEMM (up to 8)\n"
    "  --seed S        seed of the weights and of the input (default 1)\n"
    "  --json FILE     also write the results as JSON\n"
    "  --commit ID     the commit measured, for the JSON\n"
    "  -h, --help      this text\n"
    "\n"
    "Exit status: 0 done, 1 a failure, 2 a usage error, 77 no CUDA device.\n";

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* lines appear as they are made, also when cut off */
    static const struct option opts[] = {
        {"tokens", required_argument, NULL, 't'}, {"chunk", required_argument, NULL, 'C'},
        {"layers", required_argument, NULL, 'L'}, {"exact", no_argument, NULL, 'x'},
        {"seed", required_argument, NULL, 's'},   {"json", required_argument, NULL, 'j'},
        {"commit", required_argument, NULL, 'c'}, {"help", no_argument, NULL, 'h'},
        {"option", required_argument, NULL, 'o'},
        {NULL, 0, NULL, 0},
    };
    int64_t tokens = FULL_TOKENS, chunk = 2048;
    int layers = 0, exact = 0, bad = 0, o;
    uint64_t seed = 1;
    const char *json = NULL, *commit = "unknown";
    cli_option_value option[CLI_MAX_OPTIONS];
    int n_option = 0;
    while (!bad && (o = cli_getopt(PROG, argc, argv, "h", opts)) != -1) {
        switch (o) {
        case 't': bad = cli_int64(PROG, "--tokens", optarg, 1, INT64_MAX, &tokens) != 0; break;
        case 'C': bad = cli_int64(PROG, "--chunk", optarg, 1, 65536, &chunk) != 0; break;
        case 'L': bad = cli_int(PROG, "--layers", optarg, 1, MAX_LAYERS, &layers) != 0; break;
        case 'x': exact = 1; break;
        case 's': bad = cli_uint64(PROG, "--seed", optarg, &seed) != 0; break;
        case 'j': json = optarg; break;
        case 'c': commit = optarg; break;
        case 'o': bad = cli_backend_option(PROG, optarg, option, &n_option) != 0; break;
        case 'h': fputs(usage, stdout); return 0;
        default: bad = 1;
        }
    }
    if (!bad && optind < argc) cli_unexpected(PROG, argv[optind]), bad = 1;
    if (!bad && json && !*json) fprintf(stderr, PROG ": --json needs a file name\n"), bad = 1;

    /* the geometry (no weights, no device): layer count, ratios, maximum length */
    hc_model *geo = NULL;
    hc_model_params gp;
    hc_status st = hc_model_params_init(&gp, sizeof gp);
    if (st) die_hc("hc_model_params_init", NULL, st);
    gp.flags = HC_MODEL_GEOMETRY_ONLY;
    if ((st = hc_model_create_random("v4-flash", 0, &gp, &geo))) die_hc("hc_model_create_random (geometry)", NULL, st);
    hc_model_info gi = {.struct_size = sizeof gi};
    if ((st = hc_model_info_get(geo, &gi))) die_hc("hc_model_info_get", NULL, st);
    if (!layers) layers = gi.n_layers;
    if (!bad && layers > gi.n_layers)
        fprintf(stderr, PROG ": invalid value '%d' for --layers: v4-flash has %d layers\n", layers, gi.n_layers), bad = 1;
    if (!bad && tokens > gi.max_positions)
        fprintf(stderr, PROG ": invalid value '%lld' for --tokens: at most %lld (max_position_embeddings)\n",
                (long long)tokens, (long long)gi.max_positions), bad = 1;
    if (bad) {
        hc_model_free(geo);
        fprintf(stderr, "%.*s\n(" PROG " --help for details)\n", (int)(strstr(usage, "\n\n") - usage), usage);
        return CLI_EXIT_USAGE;
    }
    int ratio[MAX_LAYERS];
    char cfg[16 + 8 * MAX_LAYERS + 64];
    int len = snprintf(cfg, sizeof cfg, "{\"num_hidden_layers\": %d, \"compress_ratios\": [", layers);
    for (int l = 0; l < layers; l++) {
        ratio[l] = hc_model_layer_ratio(geo, l);
        if (kind_of(ratio[l]) < 0) {
            fprintf(stderr, PROG ": layer %d has compression ratio %d (expected 0, 4 or 128)\n", l, ratio[l]);
            return 1;
        }
        len += snprintf(cfg + len, sizeof cfg - (size_t)len, "%s%d", l ? ", " : "", ratio[l]);
    }
    snprintf(cfg + len, sizeof cfg - (size_t)len, "]}");
    hc_model_free(geo);

    int32_t nd = 0;
    if (hc_cuda_device_count(&nd) || !nd) {
        fprintf(stderr, PROG ": no CUDA device\n");
        return 77;
    }
    struct cudaDeviceProp prop;
    CU(cudaGetDeviceProperties(&prop, 0));
    CU(cudaSetDevice(0));

    double t0 = now_s();
    hc_model *m = NULL;
    if ((st = hc_model_create_random(layers == gi.n_layers ? "v4-flash" : cfg, seed, NULL, &m)))
        die_hc("hc_model_create_random", NULL, st);
    const int D = hc_model_dim(m);
    if (hc_model_n_layers(m) != layers || D <= 0) {
        fprintf(stderr, PROG ": the model has %d layers of width %d, expected %d layers\n", hc_model_n_layers(m), D,
                layers);
        return 1;
    }
    run_t r = {.tokens = tokens, .chunk = chunk};
    for (int l = 0; l < layers; l++) {
        if (hc_model_layer_ratio(m, l) != ratio[l]) {
            fprintf(stderr, PROG ": layer %d: ratio %d, expected %d\n", l, hc_model_layer_ratio(m, l), ratio[l]);
            return 1;
        }
        r.layers_of[kind_of(ratio[l])]++;
    }
    printf("## prefill-e2e: %s, %d SMs, libhybridctx %s\n\n", prop.name, prop.multiProcessorCount, hc_version_string());
    printf("V4-Flash, %d layers (SWA %d, CSA %d, HCA %d), random weights (seed %llu, made in %.1f s); %lld tokens "
           "in chunks of %lld, %s numerics, fp8 cache, bf16 x and y in device memory\n\n",
           layers, r.layers_of[K_SWA], r.layers_of[K_CSA], r.layers_of[K_HCA], (unsigned long long)seed, now_s() - t0,
           (long long)tokens, (long long)chunk, exact ? "exact" : "fast");

    /* the stream the context runs on, the I/O buffers and the first input, before the baseline */
    cudaStream_t s;
    CU(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    const size_t io_bytes = sizeof(uint16_t) * (size_t)chunk * (size_t)D;
    void *buf[2] = {NULL, NULL};
    CU(cudaMalloc(&buf[0], io_bytes));
    CU(cudaMalloc(&buf[1], io_bytes));
    uint16_t *hx = malloc(io_bytes);
    r.n_chunks = (int)((tokens + chunk - 1) / chunk);
    r.p0 = malloc(sizeof(int64_t) * (size_t)r.n_chunks);
    r.n = malloc(sizeof(int64_t) * (size_t)r.n_chunks);
    for (int k = 0; k < NKINDS; k++) r.t[k] = calloc((size_t)r.n_chunks, sizeof(double));
    cudaEvent_t *ev = malloc(sizeof(cudaEvent_t) * (size_t)(layers + 1));
    if (!hx || !r.p0 || !r.n || !r.t[0] || !r.t[1] || !r.t[2] || !ev) {
        fprintf(stderr, PROG ": out of host memory\n");
        return 1;
    }
    for (int l = 0; l <= layers; l++) CU(cudaEventCreate(&ev[l]));
    fill_bf16(hx, (size_t)chunk * (size_t)D, seed ^ 0x9e3779b97f4a7c15ull);
    CU(cudaMemcpy(buf[0], hx, io_bytes, cudaMemcpyHostToDevice));
    CU(cudaMemset(buf[1], 0, io_bytes));
    CU(cudaDeviceSynchronize());
    free(hx);

    const size_t used0 = used_bytes();
    hc_ctx_params cp;
    if ((st = hc_ctx_params_init(&cp, sizeof cp))) die_hc("hc_ctx_params_init", NULL, st);
    char errbuf[512] = "";
    cp.backend = HC_BACKEND_CUDA;
    cp.device = 0;
    cp.cache_format = HC_CACHE_FP8;
    cp.io_dtype = HC_DTYPE_BF16;
    cp.io_memory = HC_MEM_DEVICE;
    cp.cuda_stream = s;
    cp.max_tokens = tokens;
    cp.max_chunk = chunk;
    cp.numerics = exact ? HC_NUMERICS_EXACT : HC_NUMERICS_FAST;
    cp.errbuf = errbuf;
    cp.errbuf_size = sizeof errbuf;
    hc_ctx *c = NULL;
    t0 = now_s();
    if ((st = hc_ctx_create(m, &cp, &c))) {
        fprintf(stderr, PROG ": hc_ctx_create: %s (%s)\n", hc_status_name(st), errbuf);
        return 1;
    }
    if (hc_ctx_numerics(c) != cp.numerics) {
        fprintf(stderr, PROG ": the context computes in numerics %d, asked for %d\n", hc_ctx_numerics(c), cp.numerics);
        return 1;
    }
    for (int i = 0; i < n_option; i++) {
        if ((st = hc_x_ctx_set_option(c, option[i].name, option[i].value))) {
            fprintf(stderr, PROG ": option %s: %s (%s)\n", option[i].name, hc_status_name(st), hc_ctx_last_error(c));
            return 1;
        }
        printf("option %s=%d\n", option[i].name, option[i].value);
    }
    CU(cudaStreamSynchronize(s));
    const size_t used1 = used_bytes();
    printf("context created in %.1f s; device memory in use: %.2f GiB before it, %.2f GiB after it "
           "(weights on the device, first workspace)\n\n",
           now_s() - t0, gib((double)used0), gib((double)used1));

    /* the run: for each chunk, every layer; an event before the first layer and after each */
    size_t peak = used1;
    uint64_t ws_max = 0, ws_first = 0;
    int64_t mark_step = tokens / 20 > 0 ? tokens / 20 : 1, next_mark = mark_step;
    int cur = 0;
    double gpu_sum = 0;
    const double start = now_s();
    for (int64_t pos = 0; pos < tokens; pos += chunk) {
        const int64_t n = tokens - pos < chunk ? tokens - pos : chunk;
        const int k = r.done;
        CU(cudaEventRecord(ev[0], s));
        for (int l = 0; l < layers; l++) {
            if ((st = hc_append(c, l, buf[cur], n, buf[cur ^ 1]))) {
                fprintf(stderr, PROG ": chunk %d (positions %lld..%lld), layer %d:\n", k, (long long)pos,
                        (long long)(pos + n - 1), l);
                die_hc("hc_append", c, st);
            }
            CU(cudaEventRecord(ev[l + 1], s));
            cur ^= 1;
        }
        CU(cudaEventSynchronize(ev[layers]));
        r.p0[k] = pos, r.n[k] = n;
        double chunk_gpu = 0;
        for (int l = 0; l < layers; l++) {
            float ms = 0;
            CU(cudaEventElapsedTime(&ms, ev[l], ev[l + 1]));
            r.t[kind_of(ratio[l])][k] += 1e-3 * ms;
            chunk_gpu += 1e-3 * ms;
        }
        gpu_sum += chunk_gpu;
        r.done = k + 1;
        r.other = (now_s() - start) - gpu_sum;
        size_t u = used_bytes();
        if (u > peak) peak = u;
        hc_ctx_memory_info mi = {.struct_size = sizeof mi};
        if ((st = hc_ctx_memory_info_get(c, &mi))) die_hc("hc_ctx_memory_info_get", c, st);
        if (!k) ws_first = mi.workspace_bytes;
        if (mi.workspace_bytes > ws_max) ws_max = mi.workspace_bytes;
        if (pos + n >= next_mark || pos + n == tokens) {
            while (next_mark <= pos + n) next_mark += mark_step;
            printf("  %lld / %lld tokens (%.0f%%), %.1f s, last chunk %.1f ms, device %.2f GiB, projected %.1f s%s\n",
                   (long long)(pos + n), (long long)tokens, 100.0 * (double)(pos + n) / (double)tokens,
                   now_s() - start, 1e3 * chunk_gpu, gib((double)u), project(&r, tokens, NULL),
                   pos + n == tokens ? "" : " (fit so far)");
        }
    }
    CU(cudaStreamSynchronize(s));
    const double wall = now_s() - start;
    r.other = wall - gpu_sum;
    if (hc_ctx_n_tokens(c) != tokens) {
        fprintf(stderr, PROG ": the context holds %lld tokens, expected %lld\n", (long long)hc_ctx_n_tokens(c),
                (long long)tokens);
        return 1;
    }
    hc_ctx_memory_info mi = {.struct_size = sizeof mi};
    if ((st = hc_ctx_memory_info_get(c, &mi))) die_hc("hc_ctx_memory_info_get", c, st);

    double kind_s[NKINDS], proj_kind[NKINDS];
    for (int k = 0; k < NKINDS; k++) {
        kind_s[k] = 0;
        for (int i = 0; i < r.done; i++) kind_s[k] += r.t[k][i];
    }
    const int full = tokens >= FULL_TOKENS;
    const double proj = full ? wall : project(&r, FULL_TOKENS, proj_kind);
    if (full)
        for (int k = 0; k < NKINDS; k++) proj_kind[k] = kind_s[k];
    int from = r.done >= 3 ? 1 : 0;
    fit_t fits[NKINDS];
    for (int k = 0; k < NKINDS; k++) fits[k] = fit_linear(r.t[k], r.p0, r.n, from, r.done);

    printf("\n| kind | layers | seconds | share | s per layer | tokens/s per layer | fit: us/token at 0 | + ns/token per 1K positions |\n");
    printf("|---|---|---|---|---|---|---|---|\n");
    for (int k = 0; k < NKINDS; k++) {
        if (!r.layers_of[k]) continue;
        double per = kind_s[k] / r.layers_of[k];
        printf("| %s | %d | %.2f | %.1f%% | %.3f | %.0f | %.3f | %.4f |\n", kind_name[k], r.layers_of[k], kind_s[k],
               100.0 * kind_s[k] / wall, per, (double)tokens / per, 1e6 * fits[k].a, 1e12 * fits[k].b);
    }
    printf("| between chunks (host) | | %.2f | %.1f%% | | | | |\n", r.other, 100.0 * r.other / wall);
    printf("| **all %d layers** | %d | **%.2f** | 100%% | | **%.0f** (end to end) | | |\n\n", layers, layers, wall,
           (double)tokens / wall);
    printf("- peak device memory: %.2f GiB above the %.2f GiB in use before the context (weights on the device "
           "included); %.2f GiB above the context just created\n",
           gib((double)(peak - used0)), gib((double)used0), gib((double)(peak > used1 ? peak - used1 : 0)));
    printf("- the context (hc_ctx_memory_info): cache %.3f GiB own + %.3f GiB shared, history %.1f MiB, workspace "
           "%.1f MiB (after the first chunk %.1f MiB, largest %.1f MiB)\n",
           gib((double)mi.own_bytes), gib((double)mi.shared_bytes), mib((double)mi.history_bytes),
           mib((double)mi.workspace_bytes), mib((double)ws_first), mib((double)ws_max));
    if (full)
        printf("- the %d-token run: %.1f s\n", FULL_TOKENS, wall);
    else
        printf("- projected %d-token run: %.1f s (SWA %.1f, CSA %.1f, HCA %.1f; per layer kind, a token at position p "
               "costs a + b p, fitted on chunks %d..%d of this run; the host time between chunks as measured per chunk)\n",
               FULL_TOKENS, proj, proj_kind[K_SWA], proj_kind[K_CSA], proj_kind[K_HCA], from, r.done - 1);

    int rc = 0;
    if (json) {
        FILE *f = fopen(json, "w");
        if (!f) {
            fprintf(stderr, PROG ": %s: cannot open for writing\n", json);
            return 1;
        }
        time_t now = time(NULL);
        char date[16];
        strftime(date, sizeof date, "%Y-%m-%d", gmtime(&now));
        fprintf(f, "{\n  \"date\": \"%s\", \"gpu\": ", date);
        cli_json_string(f, prop.name);
        fprintf(f, ", \"commit\": ");
        cli_json_string(f, commit);
        fprintf(f, ", \"model\": \"v4-flash\", \"layers\": %d,\n", layers);
        fprintf(f, "  \"tokens\": %lld, \"chunk\": %lld, \"numerics\": \"%s\", \"cache_format\": \"fp8\", "
                   "\"io\": \"device bf16\",\n",
                (long long)tokens, (long long)chunk, exact ? "exact" : "fast");
        fprintf(f, "  \"seconds\": %.3f, \"tokens_per_s\": %.1f, \"between_chunks_seconds\": %.3f,\n", wall,
                (double)tokens / wall, r.other);
        fprintf(f, "  \"per_kind_seconds\": {\"SWA\": %.3f, \"CSA\": %.3f, \"HCA\": %.3f},\n", kind_s[K_SWA],
                kind_s[K_CSA], kind_s[K_HCA]);
        fprintf(f, "  \"per_kind_layers\": {\"SWA\": %d, \"CSA\": %d, \"HCA\": %d},\n", r.layers_of[K_SWA],
                r.layers_of[K_CSA], r.layers_of[K_HCA]);
        fprintf(f, "  \"peak_device_bytes\": %zu, \"device_bytes_before\": %zu, \"device_bytes_after_create\": %zu,\n",
                peak - used0, used0, used1);
        fprintf(f, "  \"ctx_memory\": {\"own_bytes\": %llu, \"shared_bytes\": %llu, \"history_bytes\": %llu, "
                   "\"workspace_bytes\": %llu, \"workspace_bytes_first_chunk\": %llu, \"workspace_bytes_max\": %llu},\n",
                (unsigned long long)mi.own_bytes, (unsigned long long)mi.shared_bytes,
                (unsigned long long)mi.history_bytes, (unsigned long long)mi.workspace_bytes,
                (unsigned long long)ws_first, (unsigned long long)ws_max);
        fprintf(f, "  \"projected_1m_seconds\": ");
        cli_json_number(f, proj);
        fprintf(f, ", \"projected_1m_tokens\": %d, \"projected\": %s,\n", FULL_TOKENS, full ? "false" : "true");
        fprintf(f, "  \"projected_1m_per_kind_seconds\": {\"SWA\": %.3f, \"CSA\": %.3f, \"HCA\": %.3f},\n",
                proj_kind[K_SWA], proj_kind[K_CSA], proj_kind[K_HCA]);
        fprintf(f, "  \"fit\": {\"model\": \"seconds per token = a + b * position, per layer kind (all its layers)\", "
                   "\"first_chunk\": %d", from);
        for (int k = 0; k < NKINDS; k++) fprintf(f, ", \"%s\": {\"a\": %.6e, \"b\": %.6e}", kind_name[k], fits[k].a, fits[k].b);
        fprintf(f, "},\n");
        /* rows in the schema of docs/perf/README.md: per layer (a kind's time over its layer
         * count), and the whole model */
        fprintf(f, "  \"prefill\": [");
        int first = 1;
        for (int k = 0; k < NKINDS; k++) {
            if (!r.layers_of[k]) continue;
            double per = kind_s[k] / r.layers_of[k];
            fprintf(f, "%s\n    {\"layer\": \"%s\", \"ctx\": %lld, \"tokens\": %lld, \"chunk\": %lld, \"io\": \"device bf16\", "
                       "\"numerics\": \"%s\", \"s\": %.3f, \"tokens_per_s\": %.0f, \"floor_s\": null, \"source\": \"prefill-e2e\"}",
                    first ? "" : ",", kind_name[k], (long long)tokens, (long long)tokens, (long long)chunk,
                    exact ? "exact" : "fast", per, (double)tokens / per);
            first = 0;
        }
        fprintf(f, "\n  ],\n");
        fprintf(f, "  \"prefill_model\": [\n    {\"layers\": %d, \"ctx\": %lld, \"tokens\": %lld, \"chunk\": %lld, "
                   "\"io\": \"device bf16\", \"numerics\": \"%s\", \"s\": %.3f, \"tokens_per_s\": %.1f, "
                   "\"peak_device_bytes\": %zu, \"source\": \"prefill-e2e\"}\n  ]\n}\n",
                layers, (long long)tokens, (long long)tokens, (long long)chunk, exact ? "exact" : "fast", wall,
                (double)tokens / wall, peak - used0);
        if (fclose(f)) {
            fprintf(stderr, PROG ": %s: write failed\n", json);
            rc = 1;
        }
    }

    hc_ctx_free(c);
    hc_model_free(m);
    for (int l = 0; l <= layers; l++) cudaEventDestroy(ev[l]);
    CU(cudaFree(buf[0]));
    CU(cudaFree(buf[1]));
    CU(cudaStreamDestroy(s));
    free(ev), free(r.p0), free(r.n);
    for (int k = 0; k < NKINDS; k++) free(r.t[k]);
    return rc;
}
