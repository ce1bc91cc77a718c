/* bench - CPU (or CUDA) timings of the attention block per layer kind: prefill tokens/s and
 * decode ms/token at several context lengths. A program that prints numbers, not a test.
 *   bench [--model v4-flash|v4-pro|tiny] [--contexts N,N,...] [--threads N] [--backend cpu|cuda]
 *         [--decode N] [--json] [--help] */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "cli.h"
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

static const char usage[] =
    "usage: bench [--model v4-flash|v4-pro|tiny] [--contexts N,N,...] [--threads N] [--backend cpu|cuda]\n"
    "             [--decode N] [--json]\n"
    "\n"
    "Times one layer of each kind (SWA, CSA, HCA) of the model's geometry: prefill tokens/s from an\n"
    "empty context in chunks of 512, then decode ms/token (the fastest of --decode steps).\n"
    "\n"
    "  --model M           geometry: v4-flash (default), v4-pro or tiny\n"
    "  --contexts LIST     context lengths, 1 to 32 comma-separated integers 1..16777216\n"
    "                      (default 512,2048,8192)\n"
    "  --threads N         CPU backend threads, 0..4096; 0 = all online cores (default 0)\n"
    "  --backend B         cpu (default) or cuda\n"
    "  --decode N          decode steps per context, 0..100000 (default 8)\n"
    "  --json              print the results as one JSON object on stdout\n"
    "  -h, --help          this text\n";

int main(int argc, char **argv)
{
    static const char *const models[] = {"v4-flash", "v4-pro", "tiny", NULL};
    static const char *const backends[] = {"cpu", "cuda", NULL};
    static const struct option opts[] = {
        {"model", required_argument, NULL, 'm'},   {"contexts", required_argument, NULL, 'c'},
        {"threads", required_argument, NULL, 'j'}, {"backend", required_argument, NULL, 'b'},
        {"decode", required_argument, NULL, 'd'},  {"json", no_argument, NULL, 'J'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
    };
    int model = 0, backend = 0, threads = 0, decode = 8, json = 0, nctx = 3, o, bad = 0;
    int64_t ctxs[32] = {512, 2048, 8192};
    while (!bad && (o = cli_getopt("bench", argc, argv, "h", opts)) != -1) {
        switch (o) {
        case 'm': bad = (model = cli_choice("bench", "--model", optarg, models)) < 0; break;
        case 'c': bad = cli_int64_list("bench", "--contexts", optarg, 1, 1 << 24, ctxs, 32, &nctx); break;
        case 'j': bad = cli_int("bench", "--threads", optarg, 0, 4096, &threads); break;
        case 'b': bad = (backend = cli_choice("bench", "--backend", optarg, backends)) < 0; break;
        case 'd': bad = cli_int("bench", "--decode", optarg, 0, 100000, &decode); break;
        case 'J': json = 1; break;
        case 'h': fputs(usage, stdout); return 0;
        default: bad = 1;
        }
    }
    if (!bad && optind < argc) cli_unexpected("bench", argv[optind]), bad = 1;
    if (bad) {
        fprintf(stderr, "%.*s\n(bench --help for details)\n", (int)(strstr(usage, "\n\n") - usage), usage);
        return CLI_EXIT_USAGE;
    }
    const char *base = models[model];
    int ratios[3] = {0, 4, 128};
    const char *names[3] = {"SWA", "CSA", "HCA"};
    if (json) {
        printf("{\n  \"bench\": \"bench\",\n  \"version\": \"%s\",\n  \"model\": \"%s\",\n  \"backend\": \"%s\",\n"
               "  \"threads\": %d,\n  \"decode_steps\": %d,\n  \"results\": [", hc_version_string(), base,
               backends[backend], threads, decode);
    } else {
        printf("# bench: model %s geometry, one layer per kind, backend %s, threads %d (0 = all cores)\n", base,
               backends[backend], threads);
        printf("%-4s %10s %14s %14s\n", "kind", "context", "prefill tok/s", "decode ms/tok");
    }
    int rows = 0;
    for (int k = 0; k < 3; k++) {
        char model_json[512];
        hc_model *m = kind_model(base, ratios[k], model_json, sizeof model_json);
        if (!m) return 1;
        int D = hc_model_dim(m);
        for (int ci = 0; ci < nctx; ci++) {
            int64_t n = ctxs[ci];
            hc_ctx_params p;
            hc_ctx_params_init(&p, sizeof p);
            p.n_threads = threads;
            p.backend = backend == 1 ? HC_BACKEND_CUDA : HC_BACKEND_CPU;
            hc_ctx *c = NULL;
            hc_status st = hc_ctx_create(m, &p, &c);
            if (st) { fprintf(stderr, "bench: context: %s\n", hc_strerror(st)); return 1; }
            int64_t chunk = 512;
            float *x = malloc(sizeof(float) * (size_t)chunk * D), *y = malloc(sizeof(float) * (size_t)chunk * D);
            if (!x || !y) { fprintf(stderr, "bench: out of memory\n"); return 1; }
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
            if (json) {
                printf("%s\n    {\"kind\": \"%s\", \"ctx\": %lld, \"prefill_s\": ", rows++ ? "," : "", names[k],
                       (long long)n);
                cli_json_number(stdout, tp);
                printf(", \"prefill_tokens_per_s\": ");
                cli_json_number(stdout, tp > 0 ? (double)n / tp : NAN);
                printf(", \"decode_ms\": ");
                cli_json_number(stdout, decode ? td * 1e3 : NAN);
                printf("}");
            } else {
                printf("%-4s %10lld %14.1f %14.3f\n", names[k], (long long)n, (double)n / tp, decode ? td * 1e3 : 0.0);
            }
            fflush(stdout);
            free(x), free(y);
            hc_ctx_free(c);
        }
        hc_model_free(m);
    }
    if (json) printf("\n  ]\n}\n");
    return 0;
}
