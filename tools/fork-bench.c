/* fork-bench - many forks of one long context held at once on one GPU (issue: serving).
 *   fork-bench [--forks N] [--tokens T] [--extend E] [--fast | --exact] [--json FILE]
 * Numerics: the library's default (FAST on CUDA); --exact asks for HC_NUMERICS_EXACT, --fast for
 * HC_NUMERICS_FAST. The forks keep the source's mode; the checks compare forks with each other.
 * A V4-Flash context (43 layers, fp8 cache) is filled to T tokens (hc_x_ctx_fill_random), forked
 * N times, and each fork is extended by E tokens through all layers. All forks stay alive to the
 * end. Prints the cache bytes of the source, each fork's own and shared bytes
 * (hc_ctx_memory_info), the device memory in use (cudaMemGetInfo) against what N + 1 unshared
 * copies would take, and checks that two forks given the same input give the same output bits
 * while a third given other input does not disturb them. Exit 0 when everything passed. A
 * program that prints numbers; defaults: 64 forks, 1,047,552 tokens (1M - 1024), 1,000 more. */
#define _POSIX_C_SOURCE 200809L
#include <cuda_runtime.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "timing.h"
#include "hybridctx.h"
#include "hybridctx_experimental.h"

static void die(const char *what, hc_ctx *c, hc_status st)
{
    fprintf(stderr, "fork-bench: %s: %s (%s)\n", what, hc_status_name(st), c ? hc_ctx_last_error(c) : "");
    exit(1);
}

static double gib(double b) { return b / (1024.0 * 1024.0 * 1024.0); }

static size_t used_bytes(void)
{
    size_t free_b = 0, total = 0;
    if (cudaMemGetInfo(&free_b, &total) != cudaSuccess) return 0;
    return total - free_b;
}

/* E tokens through every layer of c, input seeded by `seed`; y holds the last layer's output */
static void extend(hc_ctx *c, int layers, int dim, int64_t e, uint64_t seed, float *x, float *y)
{
    for (int64_t i = 0; i < e * dim; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((int64_t)(seed >> 40) - (1 << 23)) / (float)(1 << 23);
    }
    for (int l = 0; l < layers; l++) {
        hc_status st = hc_append(c, l, l ? y : x, e, y);
        if (st) die("hc_append", c, st);
    }
}

int main(int argc, char **argv)
{
    int forks = 64;
    int64_t tokens = 1047552, ext = 1000;
    const char *json = NULL;
    int numerics = HC_NUMERICS_DEFAULT;
    setvbuf(stdout, NULL, _IOLBF, 0); /* lines appear as they are made, also when cut off */
    static const struct option opts[] = {{"forks", required_argument, NULL, 'f'},
                                         {"tokens", required_argument, NULL, 't'},
                                         {"extend", required_argument, NULL, 'e'},
                                         {"json", required_argument, NULL, 'j'},
                                         {"fast", no_argument, NULL, 'F'},
                                         {"exact", no_argument, NULL, 'X'},
                                         {NULL, 0, NULL, 0}};
    for (int o; (o = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        char *end = NULL;
        long long v = o == 'j' || o == 'F' || o == 'X' ? 0 : strtoll(optarg, &end, 10);
        if (o == 'j') json = optarg;
        else if (o == 'F') numerics = HC_NUMERICS_FAST;
        else if (o == 'X') numerics = HC_NUMERICS_EXACT;
        else if (!end || *end || v <= 0) o = '?';
        if (o == 'f') forks = (int)v;
        else if (o == 't') tokens = v;
        else if (o == 'e') ext = v;
        else if (o == '?') {
            fprintf(stderr, "usage: fork-bench [--forks N] [--tokens T] [--extend E] [--fast | --exact] [--json FILE]\n");
            return 2;
        }
    }
    int32_t nd = 0;
    if (hc_cuda_device_count(&nd) || !nd) {
        fprintf(stderr, "fork-bench: no CUDA device\n");
        return 77;
    }
    hc_model *m = NULL;
    hc_status st = hc_model_create_random("v4-flash", 1, NULL, &m);
    if (st) die("hc_model_create_random", NULL, st);
    const int layers = hc_model_n_layers(m), dim = hc_model_dim(m);
    hc_ctx_params cp;
    hc_ctx_params_init(&cp, sizeof cp);
    cp.backend = HC_BACKEND_CUDA;
    cp.cache_format = HC_CACHE_FP8;
    cp.numerics = numerics; /* the forks keep the source's mode */
    size_t used0 = used_bytes();
    hc_ctx *src = NULL;
    if ((st = hc_ctx_create(m, &cp, &src))) die("hc_ctx_create", src, st);
    double t0 = now_s();
    if ((st = hc_x_ctx_fill_random(src, tokens, 11))) die("hc_x_ctx_fill_random", src, st);
    const double src_bytes = (double)hc_ctx_memory_bytes(src);
    const char *mode = hc_ctx_numerics(src) == HC_NUMERICS_FAST ? "fast" : "exact";
    printf("source: V4-Flash, %d layers, %lld tokens, %s numerics, cache %.3f GiB (filled in %.1f s)\n", layers,
           (long long)tokens, mode, gib(src_bytes), now_s() - t0);

    hc_ctx **f = calloc((size_t)forks, sizeof *f);
    float *x = malloc(sizeof(float) * (size_t)ext * dim), *y = malloc(sizeof(float) * (size_t)ext * dim);
    float *y0 = malloc(sizeof(float) * (size_t)ext * dim);
    if (!f || !x || !y || !y0) die("out of host memory", NULL, HC_ERR_OUT_OF_MEMORY);
    int ok = 1;
    t0 = now_s();
    for (int i = 0; i < forks; i++) {
        if ((st = hc_ctx_fork(src, NULL, &f[i]))) die("hc_ctx_fork", src, st);
        /* forks 0 and 1 get the same input (seed 1); the others their own */
        extend(f[i], layers, dim, ext, i < 2 ? 1 : (uint64_t)i + 1, x, y);
        if (i == 0) memcpy(y0, y, sizeof(float) * (size_t)ext * dim);
        if (i == 1 && memcmp(y0, y, sizeof(float) * (size_t)ext * dim)) {
            fprintf(stderr, "fork-bench: forks 0 and 1 differ on the same input\n");
            ok = 0;
        }
        if (i == 0 || (i + 1) % 16 == 0) printf("  %d forks extended, %.1f s\n", i + 1, now_s() - t0);
    }
    const double t_forks = now_s() - t0;
    /* fork 0 once more after all the others wrote: its pages must be its own */
    hc_ctx *again = NULL;
    if ((st = hc_ctx_fork(src, NULL, &again))) die("hc_ctx_fork", src, st);
    extend(again, layers, dim, ext, 1, x, y);
    if (memcmp(y0, y, sizeof(float) * (size_t)ext * dim)) {
        fprintf(stderr, "fork-bench: a late fork differs from fork 0 on the same input\n");
        ok = 0;
    }
    hc_ctx_free(again);

    double own = 0, ws = 0; /* shared pages count in every holder: no sum of them */
    hc_ctx_memory_info mi0 = {.struct_size = sizeof mi0};
    for (int i = 0; i < forks; i++) {
        hc_ctx_memory_info mi = {.struct_size = sizeof mi};
        if ((st = hc_ctx_memory_info_get(f[i], &mi))) die("hc_ctx_memory_info_get", f[i], st);
        if (i == 0) mi0 = mi;
        own += (double)mi.own_bytes, ws += (double)mi.workspace_bytes;
    }
    const size_t used1 = used_bytes();
    const double unshared = (forks + 1.0) * (src_bytes + (double)mi0.own_bytes);
    printf("%d forks, each extended by %lld tokens through %d layers, in %.1f s, all held at once\n", forks,
           (long long)ext, layers, t_forks);
    printf("fork 0: own %.1f MiB, shared %.3f GiB, workspace %.1f MiB\n", mi0.own_bytes / 1048576.0,
           gib((double)mi0.shared_bytes), mi0.workspace_bytes / 1048576.0);
    printf("all forks: own %.3f GiB in all; source cache %.3f GiB; workspaces %.3f GiB\n", gib(own), gib(src_bytes),
           gib(ws));
    printf("device memory in use: %.2f GiB (before the source: %.2f GiB); without sharing: about %.1f GiB\n",
           gib((double)used1), gib((double)used0), gib(unshared));
    printf("same input, same bits (forks 0, 1 and a late fork): %s\n", ok ? "yes" : "NO");
    if (json) {
        FILE *j = fopen(json, "w");
        if (!j) die("cannot write the JSON file", NULL, HC_ERR_IO);
        fprintf(j,
                "{\"forks\": %d, \"tokens\": %lld, \"extend\": %lld, \"layers\": %d, \"numerics\": \"%s\", "
                "\"source_bytes\": %.0f, "
                "\"own_bytes_all\": %.0f, \"own_bytes_fork0\": %llu, \"shared_bytes_fork0\": %llu, "
                "\"workspace_bytes_all\": %.0f, \"device_used_bytes\": %zu, \"device_used_before\": %zu, "
                "\"unshared_estimate_bytes\": %.0f, \"seconds\": %.2f, \"same_bits\": %s}\n",
                forks, (long long)tokens, (long long)ext, layers, mode, src_bytes, own,
                (unsigned long long)mi0.own_bytes, (unsigned long long)mi0.shared_bytes, ws, used1, used0, unshared,
                t_forks, ok ? "true" : "false");
        fclose(j);
    }
    for (int i = 0; i < forks; i++) hc_ctx_free(f[i]);
    hc_ctx_free(src);
    hc_model_free(m);
    free(f), free(x), free(y), free(y0);
    return ok ? 0 : 1;
}
