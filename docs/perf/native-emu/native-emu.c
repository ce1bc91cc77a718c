/* native-emu.c - test_gpu's whole-layer run (tiny model seed 11, 900 tokens, its chunk sizes,
 * max_chunk 512) twice on the CPU: exact, then with the FP8 projections of pieces of more than 64
 * tokens computed as cpu_linear-emu.patch's HC_EMU_TC modes say (a model of the FP8 tensor cores,
 * or random ulps); per layer the rel. L2 of the outputs against the exact run (all tokens, 95th
 * percentile and worst token, the first chunk) and of the window rings after the run.
 * Throw-away evidence for NEXT-gemm-native.md, not built by meson. From a checkout with the patch
 * applied and built (meson setup build && ninja -C build):
 *   cc -O2 -Iinclude -Ilib -Itests -o /tmp/native-emu docs/perf/native-emu/native-emu.c tests/testutil.c \
 *      build/libhybridctx_internal.a -lm -lpthread $(pkg-config --libs jansson libxxhash libzstd)
 *   /tmp/native-emu [preset] [tokens] [modes, e.g. 1,2,3,4]; HC_EMU_P, HC_EMU_ONLY as in the patch */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cache/format.h"
#include "ctx/ctx.h"
#include "hybridctx.h"
#include "testutil.h"

static float *g_ring[64]; /* the last run's window rings, per layer */

static void run(hc_model *m, const float *x, int64_t T, float *y)
{
    static const int sizes[] = {300, 1, 1, 1, 129, 7, 500, 1, 2, 64};
    hc_ctx_params p;
    hc_ctx_params_init(&p, sizeof p);
    p.backend = HC_BACKEND_CPU;
    p.cache_format = HC_CACHE_FP8;
    p.max_chunk = 512;
    p.numerics = HC_NUMERICS_EXACT;
    hc_ctx *c = NULL;
    if (hc_ctx_create(m, &p, &c)) exit(1);
    int L = hc_model_n_layers(m), D = hc_model_dim(m);
    int64_t t = 0;
    for (int k = 0; t < T; k++) {
        int64_t n = sizes[k % 10];
        if (n > T - t) n = T - t;
        for (int l = 0; l < L; l++)
            if (hc_append(c, l, x + ((size_t)l * T + t) * D, n, y + ((size_t)l * T + t) * D)) {
                fprintf(stderr, "%s\n", hc_ctx_last_error(c));
                exit(1);
            }
        t += n;
    }
    for (int l = 0; l < L; l++) {
        hci_layer_cache *lc = &c->layers[l];
        int dim = lc->win_layout.dim;
        free(g_ring[l]);
        g_ring[l] = malloc(sizeof(float) * lc->window * dim);
        for (int j = 0; j < lc->window; j++)
            hci_entry_unpack(&lc->win_layout, lc->ring.pages[j / HCI_PAGE_ENTRIES], j % HCI_PAGE_ENTRIES,
                             g_ring[l] + (size_t)j * dim);
    }
    hc_ctx_free(c);
}

static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    const char *geom = argc > 1 ? argv[1] : "tiny";
    int64_t T = argc > 2 ? atoll(argv[2]) : 900;
    char modes[64];
    snprintf(modes, sizeof modes, "%s", argc > 3 ? argv[3] : "1,2,3,4");
    hc_model *m = NULL;
    if (hc_model_create_random(geom, 11, NULL, &m)) return 1;
    int L = hc_model_n_layers(m), D = hc_model_dim(m);
    size_t nx = (size_t)L * T * D, ring = (size_t)m->cfg.window * m->cfg.head_dim;
    float *x = malloc(nx * 4), *y0 = malloc(nx * 4), *y1 = malloc(nx * 4), *ring0[64];
    double *e = malloc(sizeof(double) * T);
    tu_fill_normal(x, nx, 99, 1.0f);
    unsetenv("HC_EMU_TC");
    run(m, x, T, y0);
    for (int l = 0; l < L; l++) ring0[l] = g_ring[l], g_ring[l] = NULL;
    for (char *tok = strtok(modes, ","); tok; tok = strtok(NULL, ",")) {
        setenv("HC_EMU_TC", tok, 1);
        run(m, x, T, y1);
        printf("mode %s:", tok);
        for (int l = 0; l < L; l++) {
            const float *a = y1 + (size_t)l * T * D, *b = y0 + (size_t)l * T * D;
            for (int64_t t = 0; t < T; t++) e[t] = tu_rel_l2(a + t * D, b + t * D, D);
            qsort(e, T, sizeof *e, cmpd);
            printf("  L%d rel %.2e p95 %.2e worst %.2e first300 %.2e", l, tu_rel_l2(a, b, (size_t)T * D),
                   e[(size_t)(0.95 * (T - 1))], e[T - 1], tu_rel_l2(a, b, (size_t)300 * D));
        }
        printf("\n  window rings:");
        for (int l = 0; l < L; l++) printf(" L%d %.2e", l, tu_rel_l2(g_ring[l], ring0[l], ring));
        printf("\n");
        fflush(stdout);
    }
    return 0;
}
