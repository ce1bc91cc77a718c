/* bench - CPU (or CUDA) timings of the attention block per layer kind: prefill tokens/s and
 * decode ms/token at several context lengths. A program that prints numbers, not a test.
 *   bench [--model PRESET|JSON] [--layers-of KIND] [--contexts 1024,4096] [--threads N]
 *         [--backend cpu|cuda] [--decode N] */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "hybridctx.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void fill(float *x, size_t n, uint64_t s)
{
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((int64_t)(s >> 33) - (1ll << 30)) / (float)(1 << 30);
    }
}

/* One model per layer kind: a single layer of the geometry, so that each number is one layer. */
static hc_model *kind_model(const char *base, int ratio, char *json, size_t n)
{
    const char *geom = strcmp(base, "v4-pro") == 0
        ? "\"hidden_size\": 7168, \"num_attention_heads\": 128, \"q_lora_rank\": 1536, \"o_groups\": 16, \"index_topk\": 1024"
        : strcmp(base, "tiny") == 0
        ? "\"hidden_size\": 512, \"num_attention_heads\": 8, \"head_dim\": 128, \"q_lora_rank\": 256, \"o_groups\": 2,"
          " \"o_lora_rank\": 256, \"index_n_heads\": 8, \"index_topk\": 16"
        : "\"hidden_size\": 4096";
    snprintf(json, n, "{%s, \"num_hidden_layers\": 1, \"compress_ratios\": [%d]}", geom, ratio);
    hc_model *m = NULL;
    hc_status st = hc_model_create_random(json, 1, NULL, &m);
    if (st) fprintf(stderr, "bench: model: %s\n", hc_strerror(st));
    return m;
}

int main(int argc, char **argv)
{
    const char *base = "v4-flash", *backend = "cpu";
    char ctxs[256] = "512,2048,8192";
    int threads = 0, decode = 8;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--model")) base = argv[i + 1];
        else if (!strcmp(argv[i], "--contexts")) snprintf(ctxs, sizeof ctxs, "%s", argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--backend")) backend = argv[i + 1];
        else if (!strcmp(argv[i], "--decode")) decode = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "usage: bench [--model v4-flash|v4-pro|tiny] [--contexts N,N,...] [--threads N] "
                            "[--backend cpu|cuda] [--decode N]\n");
            return 2;
        }
    }
    int ratios[3] = {0, 4, 128};
    const char *names[3] = {"SWA", "CSA", "HCA"};
    printf("# bench: model %s geometry, one layer per kind, backend %s, threads %d (0 = all cores)\n", base,
           backend, threads);
    printf("%-4s %10s %14s %14s\n", "kind", "context", "prefill tok/s", "decode ms/tok");
    for (int k = 0; k < 3; k++) {
        char json[512];
        hc_model *m = kind_model(base, ratios[k], json, sizeof json);
        if (!m) return 1;
        int D = hc_model_dim(m);
        char list[256];
        snprintf(list, sizeof list, "%s", ctxs);
        for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
            int64_t n = atoll(tok);
            hc_ctx_params p;
            hc_ctx_params_init(&p, sizeof p);
            p.n_threads = threads;
            p.backend = !strcmp(backend, "cuda") ? HC_BACKEND_CUDA : HC_BACKEND_CPU;
            hc_ctx *c = NULL;
            if (hc_ctx_create(m, &p, &c)) { fprintf(stderr, "bench: context failed\n"); return 1; }
            int64_t chunk = 512;
            float *x = malloc(sizeof(float) * (size_t)chunk * D), *y = malloc(sizeof(float) * (size_t)chunk * D);
            double t0 = now_s();
            for (int64_t done = 0; done < n; done += chunk) {
                int64_t c1 = n - done < chunk ? n - done : chunk;
                fill(x, (size_t)c1 * D, (uint64_t)done);
                if (hc_append(c, 0, x, c1, y)) { fprintf(stderr, "bench: %s\n", hc_ctx_last_error(c)); return 1; }
            }
            double tp = now_s() - t0;
            double td = 1e30;
            for (int s = 0; s < decode; s++) {
                fill(x, (size_t)D, 999 + (uint64_t)s);
                double t1 = now_s();
                if (hc_decode(c, 0, x, y)) { fprintf(stderr, "bench: %s\n", hc_ctx_last_error(c)); return 1; }
                double dt = now_s() - t1;
                if (dt < td) td = dt;
            }
            printf("%-4s %10lld %14.1f %14.3f\n", names[k], (long long)n, (double)n / tp, decode ? td * 1e3 : 0.0);
            fflush(stdout);
            free(x), free(y);
            hc_ctx_free(c);
        }
        hc_model_free(m);
    }
    return 0;
}
