/* hybridctx - command-line tool of libhybridctx.
 *   hybridctx demo [options]   run a long synthetic context through every layer of a model,
 *                              decode a few tokens, and report speed and cache memory.
 *   hybridctx inspect [--json] FILE   what a session file holds (no model needed).
 *   hybridctx verify [--json] FILE    check every checksum and entry of a session file; the exit
 *                              status says the result (0 valid, 1 damaged, 3 not a session file,
 *                              4 unsupported version, 5 unreadable, 2 usage). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "hybridctx.h"
#include "hybridctx_experimental.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: hybridctx demo [--model PRESET|FILE] [--tokens N] [--chunk N] [--decode N]\n"
            "                      [--threads N] [--cache fp8|bf16] [--backend auto|cpu|cuda] [--seed N]\n"
            "  PRESET: tiny (default), v4-flash, v4-pro; FILE: a checkpoint directory or .safetensors\n"
            "       hybridctx inspect [--json] FILE   describe a session file\n"
            "       hybridctx verify [--json] FILE    check a session file (exit 0 valid, 1 damaged,\n"
            "                                         3 not a session, 4 unsupported version, 5 unreadable)\n");
}

static const char *human(double b, char *buf, size_t n)
{
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (b >= 1024 && i < 4) b /= 1024, i++;
    snprintf(buf, n, "%.2f %s", b, u[i]);
    return buf;
}

/* Synthetic inputs: a smooth random walk per channel, so that neighbouring tokens are related. */
static void synth_tokens(float *x, int64_t n, int dim, uint64_t *state)
{
    for (int64_t t = 0; t < n; t++)
        for (int i = 0; i < dim; i++) {
            uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
            z ^= z >> 31;
            float u = (float)((double)(z >> 11) / 9007199254740992.0) * 2.0f - 1.0f;
            x[t * dim + i] = u * 1.7f + sinf(0.001f * (float)(t + i));
        }
}

/* Stand-in for the MLP between layers: next input = RMS-normalised (x + y). */
static void next_input(float *x, const float *y, int64_t n, int dim)
{
    for (int64_t t = 0; t < n; t++) {
        double ss = 0;
        for (int i = 0; i < dim; i++) {
            x[t * dim + i] += y[t * dim + i];
            ss += (double)x[t * dim + i] * x[t * dim + i];
        }
        float r = (float)(1.0 / sqrt(ss / dim + 1e-6));
        for (int i = 0; i < dim; i++) x[t * dim + i] *= r;
    }
}

static void progress(int64_t done, int64_t total, double t0)
{
    if (!isatty(2)) return;
    int w = 40, f = (int)(w * done / total);
    double el = now_s() - t0;
    fprintf(stderr, "\r  [%.*s%*s] %3d%%  %lld/%lld tokens  %.0f tok/s ", f,
            "########################################", w - f, "", (int)(100 * done / total),
            (long long)done, (long long)total, el > 0 ? (double)done / el : 0.0);
    if (done == total) fputc('\n', stderr);
    fflush(stderr);
}

static int run_chunk(hc_ctx *c, int layers, int dim, float *x, float *y, int64_t n)
{
    for (int l = 0; l < layers; l++) {
        hc_status st = hc_append(c, l, x, n, y);
        if (st) {
            fprintf(stderr, "hybridctx: layer %d: %s (%s)\n", l, hc_strerror(st), hc_ctx_last_error(c));
            return 1;
        }
        next_input(x, y, n, dim);
    }
    return 0;
}

static int cmd_demo(int argc, char **argv)
{
    const char *model_name = "tiny", *cache = "fp8", *backend = "auto";
    int64_t tokens = 20000, chunk = 1024, decode = 16;
    int threads = 0;
    uint64_t seed = 1;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) { usage(stderr); return 2; }
        if (!strcmp(a, "--model")) model_name = v;
        else if (!strcmp(a, "--tokens")) tokens = atoll(v);
        else if (!strcmp(a, "--chunk")) chunk = atoll(v);
        else if (!strcmp(a, "--decode")) decode = atoll(v);
        else if (!strcmp(a, "--threads")) threads = atoi(v);
        else if (!strcmp(a, "--cache")) cache = v;
        else if (!strcmp(a, "--backend")) backend = v;
        else if (!strcmp(a, "--seed")) seed = strtoull(v, NULL, 10);
        else { usage(stderr); return 2; }
        i++;
    }
    if (tokens < 1 || chunk < 1 || decode < 0) { usage(stderr); return 2; }
    hc_model *m = NULL;
    char err[512] = "";
    hc_model_params mp;
    hc_model_params_init(&mp, sizeof mp);
    mp.errbuf = err;
    mp.errbuf_size = sizeof err;
    double t0 = now_s();
    int preset = !strcmp(model_name, "tiny") || !strcmp(model_name, "v4-flash") || !strcmp(model_name, "v4-pro");
    hc_status st = preset ? hc_model_create_random(model_name, seed, &mp, &m) : hc_model_load(model_name, &mp, &m);
    if (st) {
        fprintf(stderr, "hybridctx: model %s: %s: %s\n", model_name, hc_strerror(st), err);
        return 1;
    }
    hc_model_info info = {.struct_size = sizeof info};
    hc_model_info_get(m, &info);
    hc_ctx_params p;
    hc_ctx_params_init(&p, sizeof p);
    p.n_threads = threads;
    p.cache_format = !strcmp(cache, "bf16") ? HC_CACHE_BF16 : HC_CACHE_FP8;
    p.backend = !strcmp(backend, "cpu") ? HC_BACKEND_CPU : !strcmp(backend, "cuda") ? HC_BACKEND_CUDA : HC_BACKEND_AUTO;
    hc_ctx *c = NULL;
    if ((st = hc_ctx_create(m, &p, &c))) {
        fprintf(stderr, "hybridctx: context: %s\n", hc_strerror(st));
        hc_model_free(m);
        return 1;
    }
    int L = info.n_layers, D = info.dim;
    printf("libhybridctx %s demo\n", hc_version_string());
    printf("  model   %s: %d layers (", model_name, L);
    for (int l = 0; l < L; l++) {
        int r = hc_model_layer_ratio(m, l);
        printf("%s%s", l ? " " : "", r == 0 ? "SWA" : r == 4 ? "CSA" : "HCA");
    }
    printf("), dim %d, %d heads x %d, built in %.2f s\n", D, info.n_heads, info.head_dim, now_s() - t0);
    printf("  backend %s, %s cache\n", hc_ctx_backend(c) == HC_BACKEND_CUDA ? "cuda" : "cpu", cache);
    float *x = malloc(sizeof(float) * (size_t)chunk * D), *y = malloc(sizeof(float) * (size_t)chunk * D);
    if (!x || !y) { fprintf(stderr, "hybridctx: out of memory\n"); return 1; }
    uint64_t rs = seed;
    int rc = 0;
    printf("  prefill %lld tokens in chunks of %lld\n", (long long)tokens, (long long)chunk);
    t0 = now_s();
    for (int64_t done = 0; done < tokens && !rc;) {
        int64_t n = tokens - done < chunk ? tokens - done : chunk;
        synth_tokens(x, n, D, &rs);
        rc = run_chunk(c, L, D, x, y, n);
        done += n;
        progress(done, tokens, t0);
    }
    double tp = now_s() - t0;
    double td = 0;
    for (int64_t k = 0; k < decode && !rc; k++) {
        synth_tokens(x, 1, D, &rs);
        double t1 = now_s();
        rc = run_chunk(c, L, D, x, y, 1);
        td += now_s() - t1;
    }
    if (!rc) {
        char a[32], b[32];
        uint64_t bytes = hc_ctx_memory_bytes(c);
        int64_t n = hc_ctx_n_tokens(c);
        /* dense: one head_dim-wide bf16 vector per token per layer (MQA, K = V), no compression */
        double dense = (double)L * (double)n * info.head_dim * 2.0;
        printf("  prefill %.1f tokens/s (%.2f s)\n", (double)tokens / tp, tp);
        if (decode) printf("  decode  %.2f ms/token over %lld tokens (all %d layers)\n", 1e3 * td / decode,
                           (long long)decode, L);
        printf("  context %lld tokens; cache %s (windows, compressed entries, indexer keys, compressor "
               "state)\n", (long long)n, human((double)bytes, a, sizeof a));
        printf("  a dense bf16 KV cache of the same length (one %d-wide vector per token and layer) would "
               "take %s: %.1fx more\n", info.head_dim, human(dense, b, sizeof b), dense / (double)bytes);
    }
    free(x), free(y);
    hc_ctx_free(c);
    hc_model_free(m);
    return rc;
}

/* inspect / verify: the library describes the file; the exit status classifies the result. */
static int cmd_session(int argc, char **argv, int verify)
{
    int json = 0;
    const char *path = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = 1;
        else if (!path && argv[i][0] != '-') path = argv[i];
        else { usage(stderr); return 2; }
    }
    if (!path) { usage(stderr); return 2; }
    int32_t flags = (json ? HC_X_INSPECT_JSON : 0) | (verify ? HC_X_INSPECT_VERIFY : 0);
    uint64_t cap = 1 << 20, len = 0;
    char *buf = NULL;
    hc_status st;
    for (;;) {
        char *nb = realloc(buf, (size_t)cap);
        if (!nb) { free(buf); fprintf(stderr, "hybridctx: out of memory\n"); return 5; }
        buf = nb;
        st = hc_x_session_inspect(path, flags, buf, cap, &len);
        if (st != HC_ERR_BUFFER_TOO_SMALL || len <= cap) break;
        cap = len;
    }
    if (st == HC_ERR_BUFFER_TOO_SMALL || st == HC_ERR_OUT_OF_MEMORY) {
        free(buf);
        fprintf(stderr, "hybridctx: %s: %s\n", path, hc_strerror(st));
        return 5;
    }
    if (json) printf("%s\n", buf);
    else printf("session %s\n%s", path, buf);
    free(buf);
    switch (st) {
    case HC_OK: return 0;
    case HC_ERR_CORRUPT:
    case HC_ERR_LIMIT: return 1;
    case HC_ERR_FORMAT: return 3;
    case HC_ERR_VERSION: return 4;
    default: return 5;
    }
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "demo")) return cmd_demo(argc - 2, argv + 2);
    if (!strcmp(argv[1], "inspect")) return cmd_session(argc - 2, argv + 2, 0);
    if (!strcmp(argv[1], "verify")) return cmd_session(argc - 2, argv + 2, 1);
    if (!strcmp(argv[1], "--version")) {
        printf("hybridctx %s\n", hc_version_string());
        return 0;
    }
    fprintf(stderr, "hybridctx: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
