/* test_tsan_batch.c - batches from several threads at once: each thread owns its own contexts
 * (over one shared model) and drives them through hc_append_batch (ragged) and hc_decode_batch,
 * with progress callbacks on some of them; every output is compared bitwise with a
 * single-threaded reference made of separate calls. Meant to run under ThreadSanitizer
 * (tools/check-tsan.sh), which then checks the engine's batch path, the contexts' snapshot
 * storage and thread pools for races; it also runs in the normal builds.
 * HC_TEST_QUICK=1 runs fewer threads and tokens. Exit status 0 = pass. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "hybridctx.h"
#include "testutil.h"

#define K 3 /* contexts per batch */

/* Steps: ragged appends (per context), then decode steps (one token each). */
static const int64_t steps_full[][K] = {{100, 7, 40}, {30, 1, 90}, {1, 1, 1}, {1, 1, 1}};
static const int64_t steps_quick[][K] = {{9, 2, 5}, {1, 1, 1}};

static const int64_t (*steps)[K];
static int n_steps;
static int64_t n_tok[K];
static hc_model *model;
static int n_layers, dim;
static float *x[K];   /* per context: [layer][n_tok][dim] */
static float *ref[K]; /* reference outputs, same layout */

static size_t at(int i, int layer, int64_t t) { return ((size_t)layer * (size_t)n_tok[i] + (size_t)t) * (size_t)dim; }

typedef struct job {
    int id;
    float *y[K];
    int reports;
    char err[256];
} job;

static int count_reports(void *user, uint64_t done, uint64_t total)
{
    job *j = user;
    if (done > total) snprintf(j->err, sizeof j->err, "progress %llu of %llu", (unsigned long long)done,
                               (unsigned long long)total);
    j->reports++;
    return 0;
}

static hc_ctx *new_ctx(int threads, int fmt)
{
    hc_ctx_params p;
    hc_ctx_params_init(&p, sizeof p);
    p.backend = HC_BACKEND_CPU;
    p.n_threads = threads;
    p.cache_format = fmt;
    p.max_chunk = 32;
    hc_ctx *c = NULL;
    return hc_ctx_create(model, &p, &c) == HC_OK ? c : NULL;
}

/* The reference: each context on its own, separate calls. */
static int run_separate(float **y)
{
    for (int i = 0; i < K; i++) {
        hc_ctx *c = new_ctx(1, HC_CACHE_BF16);
        if (!c) return -1;
        int64_t t = 0;
        for (int s = 0; s < n_steps; s++) {
            for (int l = 0; l < n_layers; l++)
                if (hc_append(c, l, x[i] + at(i, l, t), steps[s][i], y[i] + at(i, l, t)) != HC_OK) {
                    fprintf(stderr, "reference: %s\n", hc_ctx_last_error(c));
                    hc_ctx_free(c);
                    return -1;
                }
            t += steps[s][i];
        }
        hc_ctx_free(c);
    }
    return 0;
}

/* One thread: K contexts of its own, every step as one batch per layer. */
static int run_batched(job *j)
{
    hc_ctx *c[K];
    for (int i = 0; i < K; i++) {
        c[i] = new_ctx(1 + (j->id + i) % 2, j->id % 2 ? HC_CACHE_FP8 : HC_CACHE_BF16); /* one format per batch */
        if (!c[i]) return snprintf(j->err, sizeof j->err, "hc_ctx_create failed"), -1;
        if ((j->id + i) % 2) hc_ctx_set_progress(c[i], count_reports, j);
    }
    int64_t t[K] = {0};
    size_t rows_max = 0;
    for (int s = 0; s < n_steps; s++) {
        size_t r = 0;
        for (int i = 0; i < K; i++) r += (size_t)steps[s][i];
        if (r > rows_max) rows_max = r;
    }
    float *xb = malloc(sizeof(float) * rows_max * (size_t)dim), *yb = malloc(sizeof(float) * rows_max * (size_t)dim);
    int rc = xb && yb ? 0 : -1;
    for (int s = 0; s < n_steps && !rc; s++) {
        int decode = 1;
        for (int i = 0; i < K; i++) decode &= steps[s][i] == 1;
        for (int l = 0; l < n_layers && !rc; l++) {
            size_t r = 0;
            for (int i = 0; i < K; i++) {
                memcpy(xb + r * (size_t)dim, x[i] + at(i, l, t[i]), sizeof(float) * (size_t)steps[s][i] * (size_t)dim);
                r += (size_t)steps[s][i];
            }
            hc_status st = decode ? hc_decode_batch(c, K, l, xb, yb) : hc_append_batch(c, K, l, xb, steps[s], yb);
            if (st) {
                snprintf(j->err, sizeof j->err, "step %d layer %d: %s", s, l, hc_ctx_last_error(c[0]));
                rc = -1;
                break;
            }
            r = 0;
            for (int i = 0; i < K; i++) {
                memcpy(j->y[i] + at(i, l, t[i]), yb + r * (size_t)dim, sizeof(float) * (size_t)steps[s][i] * (size_t)dim);
                r += (size_t)steps[s][i];
            }
        }
        for (int i = 0; i < K; i++) t[i] += steps[s][i];
    }
    for (int i = 0; i < K; i++) {
        if (!rc && hc_ctx_n_tokens(c[i]) != n_tok[i])
            snprintf(j->err, sizeof j->err, "context %d: n_tokens %lld", i, (long long)hc_ctx_n_tokens(c[i])), rc = -1;
        hc_ctx_free(c[i]);
    }
    free(xb), free(yb);
    return rc || j->err[0] ? -1 : 0;
}

static void *worker(void *arg)
{
    job *j = arg;
    if (run_batched(j) == 0)
        for (int i = 0; i < K; i++)
            if (memcmp(j->y[i], ref[i], at(i, n_layers, 0) * sizeof(float)) != 0)
                snprintf(j->err, sizeof j->err, "context %d: outputs differ from the separate calls", i);
    return NULL;
}

int main(void)
{
    int quick = getenv("HC_TEST_QUICK") && atoi(getenv("HC_TEST_QUICK")) > 0;
    steps = quick ? steps_quick : steps_full;
    n_steps = quick ? 2 : 4;
    int n_workers = quick ? 2 : 4;
    for (int s = 0; s < n_steps; s++)
        for (int i = 0; i < K; i++) n_tok[i] += steps[s][i];

    hc_model_params mp;
    hc_model_params_init(&mp, sizeof mp);
    mp.n_threads = 2;
    if (hc_model_create_random("tiny", 42, &mp, &model) != HC_OK) return fprintf(stderr, "model failed\n"), 1;
    n_layers = hc_model_n_layers(model);
    dim = hc_model_dim(model);
    for (int i = 0; i < K; i++) {
        x[i] = malloc(at(i, n_layers, 0) * sizeof(float));
        ref[i] = malloc(at(i, n_layers, 0) * sizeof(float));
        if (!x[i] || !ref[i]) return 1;
        tu_fill_normal(x[i], at(i, n_layers, 0), 30 + (uint64_t)i, 1.0f);
    }
    if (run_separate(ref) != 0) return 1;

    job *jobs = calloc((size_t)n_workers, sizeof *jobs);
    pthread_t *tids = calloc((size_t)n_workers, sizeof *tids);
    if (!jobs || !tids) return 1;
    for (int w = 0; w < n_workers; w++) {
        jobs[w].id = w;
        for (int i = 0; i < K; i++)
            if (!(jobs[w].y[i] = malloc(at(i, n_layers, 0) * sizeof(float)))) return 1;
        if (pthread_create(&tids[w], NULL, worker, &jobs[w]) != 0) return 1;
    }
    int failures = 0;
    for (int w = 0; w < n_workers; w++) {
        pthread_join(tids[w], NULL);
        if (jobs[w].err[0]) fprintf(stderr, "thread %d: %s\n", w, jobs[w].err), failures++;
        else if (!jobs[w].reports) fprintf(stderr, "thread %d: no progress reports\n", w), failures++;
        for (int i = 0; i < K; i++) free(jobs[w].y[i]);
    }
    printf("tsan batch test: %d threads x %d contexts x %d steps x %d layers: %s\n", n_workers, K, n_steps, n_layers,
           failures ? "FAILED" : "ok");
    for (int i = 0; i < K; i++) free(x[i]), free(ref[i]);
    free(jobs), free(tids);
    hc_model_free(model);
    return failures ? 1 : 0;
}
