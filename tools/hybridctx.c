/* hybridctx - command-line tool of libhybridctx.
 *   hybridctx demo [options]   run a long synthetic context through every layer of a model,
 *                              decode a few tokens, and report speed and cache memory; with
 *                              --load FILE start from a saved session, with --save FILE save
 *                              the context at the end.
 *   hybridctx inspect [--json] FILE   what a session file holds (no model needed).
 *   hybridctx verify [--json] FILE    check every checksum and entry of a session file; the exit
 *                              status says the result (0 valid, 1 damaged, 3 not a session file,
 *                              4 unsupported version, 5 unreadable, 2 usage).
 * Long steps (model load, prefill, save, load, verify) draw a progress bar on stderr when it is a
 * terminal; Ctrl-C stops them through the library's progress callback (HC_ERR_ABORTED: nothing
 * is changed, a saved file keeps its previous content) and exits with status 130. */
#include <math.h>
#include <signal.h>
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
            "                      [--load SESSION] [--save SESSION]\n"
            "  PRESET: tiny (default), v4-flash, v4-pro; FILE: a checkpoint directory or .safetensors\n"
            "  --load: start from a saved session (--tokens may then be 0); --save: save the context\n"
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

/* ---- progress bars (stderr, terminals only) and Ctrl-C ---- */

static volatile sig_atomic_t interrupted;
static void on_sigint(int sig) { (void)sig, interrupted = 1; }

static void catch_sigint(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
}

/* One bar: what it counts, and when it was last drawn. */
typedef struct bar {
    const char *label;
    const char *unit;   /* "tokens", "bytes", "layers" */
    double t0, drawn;
    int last_pct;
} bar;

static bar bar_new(const char *label, const char *unit) { return (bar){label, unit, now_s(), 0, -1}; }

static void bar_draw(bar *b, uint64_t done, uint64_t total)
{
    if (!isatty(2) || !total) return;
    int pct = (int)(100.0 * (double)done / (double)total);
    double t = now_s();
    if (done < total && pct == b->last_pct && t - b->drawn < 0.2) return;
    b->last_pct = pct, b->drawn = t;
    int w = 30, f = (int)((double)w * (double)done / (double)total);
    double el = t - b->t0, rate = el > 0 ? (double)done / el : 0.0;
    char amount[64];
    if (!strcmp(b->unit, "bytes"))
        snprintf(amount, sizeof amount, "%.1f/%.1f MiB  %.0f MiB/s", (double)done / 1048576.0,
                 (double)total / 1048576.0, rate / 1048576.0);
    else
        snprintf(amount, sizeof amount, "%llu/%llu %s  %.0f %s/s", (unsigned long long)done,
                 (unsigned long long)total, b->unit, rate, b->unit);
    fprintf(stderr, "\r  %-8s [%.*s%*s] %3d%%  %s ", b->label, f, "##############################", w - f, "", pct,
            amount);
    if (done == total) fputc('\n', stderr);
    fflush(stderr);
}

/* hc_progress_fn: draw the bar; a Ctrl-C stops the call. */
static int bar_cb(void *user, uint64_t done, uint64_t total)
{
    bar_draw(user, done, total);
    if (interrupted && isatty(2)) fputc('\n', stderr);
    return interrupted;
}

/* hc_progress_fn of the prefill's layer calls: no bar of their own (the chunks draw it), only
 * Ctrl-C. */
static int stop_cb(void *user, uint64_t done, uint64_t total)
{
    (void)user, (void)done, (void)total;
    return interrupted;
}

static void progress(int64_t done, int64_t total, double t0)
{
    static bar b;
    if (done == 0 || b.t0 != t0) b = (bar){"prefill", "tokens", t0, 0, -1};
    bar_draw(&b, (uint64_t)done, (uint64_t)total);
}

static int run_chunk(hc_ctx *c, int layers, int dim, float *x, float *y, int64_t n)
{
    for (int l = 0; l < layers; l++) {
        hc_status st = hc_append(c, l, x, n, y);
        if (st == HC_ERR_ABORTED) {
            fprintf(stderr, "hybridctx: interrupted; the context keeps %lld tokens\n", (long long)hc_ctx_n_tokens(c));
            return 130;
        }
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
    const char *model_name = "tiny", *cache = "fp8", *backend = "auto", *load = NULL, *save = NULL;
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
        else if (!strcmp(a, "--load")) load = v;
        else if (!strcmp(a, "--save")) save = v;
        else { usage(stderr); return 2; }
        i++;
    }
    if (tokens < (load ? 0 : 1) || chunk < 1 || decode < 0) { usage(stderr); return 2; }
    catch_sigint();
    hc_model *m = NULL;
    char err[512] = "";
    hc_model_params mp;
    hc_model_params_init(&mp, sizeof mp);
    mp.errbuf = err;
    mp.errbuf_size = sizeof err;
    double t0 = now_s();
    int preset = !strcmp(model_name, "tiny") || !strcmp(model_name, "v4-flash") || !strcmp(model_name, "v4-pro");
    bar mb = bar_new("model", preset ? "layers" : "bytes");
    mp.progress = bar_cb;
    mp.progress_user = &mb;
    hc_status st = preset ? hc_model_create_random(model_name, seed, &mp, &m) : hc_model_load(model_name, &mp, &m);
    if (st == HC_ERR_ABORTED) {
        fprintf(stderr, "hybridctx: interrupted\n");
        return 130;
    }
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
    if (load) {
        bar lb = bar_new("load", "bytes");
        hc_ctx_set_progress(c, bar_cb, &lb);
        t0 = now_s();
        st = hc_ctx_load(c, load);
        hc_ctx_set_progress(c, NULL, NULL);
        if (st) {
            fprintf(stderr, "hybridctx: load %s: %s (%s)\n", load, st == HC_ERR_ABORTED ? "interrupted" : hc_strerror(st),
                    hc_ctx_last_error(c));
            rc = st == HC_ERR_ABORTED ? 130 : 1;
        } else {
            printf("  loaded  %s: %lld tokens in %.2f s\n", load, (long long)hc_ctx_n_tokens(c), now_s() - t0);
        }
    }
    if (!rc && tokens) printf("  prefill %lld tokens in chunks of %lld\n", (long long)tokens, (long long)chunk);
    hc_ctx_set_progress(c, stop_cb, NULL); /* Ctrl-C stops a layer call between pieces */
    t0 = now_s();
    for (int64_t done = 0; done < tokens && !rc;) {
        int64_t n = tokens - done < chunk ? tokens - done : chunk;
        synth_tokens(x, n, D, &rs);
        rc = run_chunk(c, L, D, x, y, n);
        done += n;
        progress(done, tokens, t0);
    }
    double tp = now_s() - t0;
    if (tokens == 0) tp = 0;
    hc_ctx_set_progress(c, NULL, NULL); /* decode: the lowest latency (no rollback copies on CUDA) */
    double td = 0;
    for (int64_t k = 0; k < decode && !rc; k++) {
        if (interrupted) {
            fprintf(stderr, "hybridctx: interrupted\n");
            rc = 130;
            break;
        }
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
        if (tokens) printf("  prefill %.1f tokens/s (%.2f s)\n", (double)tokens / tp, tp);
        if (decode) printf("  decode  %.2f ms/token over %lld tokens (all %d layers)\n", 1e3 * td / decode,
                           (long long)decode, L);
        printf("  context %lld tokens; cache %s (windows, compressed entries, indexer keys, compressor "
               "state)\n", (long long)n, human((double)bytes, a, sizeof a));
        printf("  a dense bf16 KV cache of the same length (one %d-wide vector per token and layer) would "
               "take %s: %.1fx more\n", info.head_dim, human(dense, b, sizeof b), dense / (double)bytes);
    }
    if (!rc && save) {
        bar sb = bar_new("save", "bytes");
        hc_ctx_set_progress(c, bar_cb, &sb);
        t0 = now_s();
        st = hc_ctx_save(c, save, NULL);
        hc_ctx_set_progress(c, NULL, NULL);
        if (st == HC_ERR_ABORTED) {
            fprintf(stderr, "hybridctx: save interrupted; %s is as it was\n", save);
            rc = 130;
        } else if (st) {
            fprintf(stderr, "hybridctx: save %s: %s (%s)\n", save, hc_strerror(st), hc_ctx_last_error(c));
            rc = 1;
        } else {
            printf("  saved   %s: %lld tokens in %.2f s\n", save, (long long)hc_ctx_n_tokens(c), now_s() - t0);
        }
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
    catch_sigint();
    for (;;) {
        char *nb = realloc(buf, (size_t)cap);
        if (!nb) { free(buf); fprintf(stderr, "hybridctx: out of memory\n"); return 5; }
        buf = nb;
        bar vb = bar_new("verify", "bytes");
        st = hc_x_session_inspect_progress(path, flags, bar_cb, &vb, buf, cap, &len);
        if (st != HC_ERR_BUFFER_TOO_SMALL || len <= cap) break;
        cap = len;
    }
    if (st == HC_ERR_ABORTED) {
        free(buf);
        fprintf(stderr, "hybridctx: %s: interrupted\n", path);
        return 130;
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
