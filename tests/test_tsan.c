/* test_tsan.c - many threads, each driving its own context over one shared model: chunks and
 * decode steps through every layer, every output compared bitwise with a single-threaded
 * reference (the CPU backend is deterministic). A second phase forks one context into one fork
 * per thread; each thread forks its fork again (distinct sources, pages shared by all), runs
 * both on, takes a token back and redoes it, while the main thread frees the first context. Meant to run under ThreadSanitizer
 * (tools/check-sanitizers.sh), which then checks the model, the contexts' internal thread pools
 * and the lazily built tables for races; it also runs in the normal builds.
 * HC_TEST_QUICK=1 runs fewer threads and tokens (valgrind). Exit status 0 = pass. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "hybridctx.h"
#include "testutil.h"

/* A chunk that wraps the 128-token window and completes a ratio-128 entry, a second chunk,
 * then single-token decode steps. */
static const int64_t steps_full[] = {100, 30, 1, 1, 1};
static const int64_t steps_quick[] = {9, 1, 1};

static const int64_t *steps;
static int n_steps, n_tok;
static hc_model *model;
static int n_layers, dim;
static float *x;   /* [layer][n_tok][dim] */
static float *ref; /* the reference outputs, same layout */

static size_t at(int layer, int64_t t) { return ((size_t)layer * (size_t)n_tok + (size_t)t) * (size_t)dim; }

typedef struct job {
    int id, n_threads, cache_format;
    float *y;
    char err[256];
} job;

/* Run the whole sequence on a new context; y receives every output. 0 or -1 with job->err. */
static int run(job *j)
{
    hc_ctx_params p;
    hc_ctx_params_init(&p, sizeof p);
    p.backend = HC_BACKEND_CPU;
    p.n_threads = j->n_threads;
    p.cache_format = j->cache_format;
    hc_ctx *c = NULL;
    hc_status st = hc_ctx_create(model, &p, &c);
    if (st) {
        snprintf(j->err, sizeof j->err, "hc_ctx_create: %s", hc_strerror(st));
        return -1;
    }
    int64_t t = 0;
    for (int s = 0; s < n_steps; s++) {
        for (int l = 0; l < n_layers; l++) {
            st = steps[s] == 1 ? hc_decode(c, l, x + at(l, t), j->y + at(l, t))
                               : hc_append(c, l, x + at(l, t), steps[s], j->y + at(l, t));
            if (st) {
                snprintf(j->err, sizeof j->err, "step %d layer %d: %s", s, l, hc_ctx_last_error(c));
                hc_ctx_free(c);
                return -1;
            }
        }
        t += steps[s];
    }
    if (hc_ctx_n_tokens(c) != n_tok) snprintf(j->err, sizeof j->err, "n_tokens %lld", (long long)hc_ctx_n_tokens(c));
    hc_ctx_free(c);
    return j->err[0] ? -1 : 0;
}

static void *worker(void *arg)
{
    job *j = arg;
    if (run(j) == 0 && memcmp(j->y, ref, at(n_layers, 0) * sizeof(float)) != 0)
        snprintf(j->err, sizeof j->err, "outputs differ from the single-threaded reference");
    return NULL;
}

/* ---- phase 2: forks ---- */

typedef struct fjob {
    hc_ctx *src;   /* this thread's fork of the shared base */
    int id;
    float *y;
    char err[256];
} fjob;

/* Steps 1.. of the sequence on c (the base took step 0), with a wrong token taken back before
 * each decode step when `undo`. 0 or -1 with err. */
static int run_rest(hc_ctx *c, int undo, float *y, char *err, size_t errsz)
{
    int64_t t = steps[0];
    for (int s = 1; s < n_steps; s++) {
        if (undo && steps[s] == 1) { /* a wrong token (the next one's input), then taken back */
            for (int l = 0; l < n_layers; l++)
                if (hc_decode(c, l, x + at(l, t + 1 < n_tok ? t + 1 : 0), y + at(l, t)))
                    return snprintf(err, errsz, "wrong token: %s", hc_ctx_last_error(c)), -1;
            if (hc_ctx_truncate(c, t)) return snprintf(err, errsz, "truncate: %s", hc_ctx_last_error(c)), -1;
        }
        for (int l = 0; l < n_layers; l++)
            if (hc_append(c, l, x + at(l, t), steps[s], y + at(l, t)))
                return snprintf(err, errsz, "step %d layer %d: %s", s, l, hc_ctx_last_error(c)), -1;
        t += steps[s];
    }
    return 0;
}

static void *fork_worker(void *arg)
{
    fjob *j = arg;
    hc_ctx_params p;
    hc_ctx_params_init(&p, sizeof p);
    p.n_threads = 1 + j->id % 2;
    p.max_rollback = 2;
    hc_ctx *g = NULL;
    if (hc_ctx_fork(j->src, &p, &g)) {
        snprintf(j->err, sizeof j->err, "fork: %s", hc_ctx_last_error(j->src));
        return NULL;
    }
    /* one order in even threads, the other in odd ones; each freed right after its run */
    hc_ctx *cs[2] = {j->id % 2 ? g : j->src, j->id % 2 ? j->src : g};
    for (int k = 0; k < 2; k++) {
        hc_ctx *c = cs[k];
        if (!j->err[0] && run_rest(c, c == g, j->y, j->err, sizeof j->err) == 0)
            for (int l = 0; l < n_layers && !j->err[0]; l++)
                if (memcmp(j->y + at(l, steps[0]), ref + at(l, steps[0]), sizeof(float) * (size_t)(n_tok - steps[0]) * dim))
                    snprintf(j->err, sizeof j->err, "%s: layer %d outputs differ", c == g ? "fork of the fork" : "fork", l);
        hc_ctx_free(c);
    }
    return NULL;
}

static int fork_phase(int n_workers)
{
    hc_ctx_params p;
    hc_ctx_params_init(&p, sizeof p);
    p.backend = HC_BACKEND_CPU;
    p.n_threads = 1;
    p.max_rollback = 2;
    hc_ctx *base = NULL;
    if (hc_ctx_create(model, &p, &base)) return fprintf(stderr, "fork phase: create failed\n"), 1;
    float *y = malloc(at(n_layers, 0) * sizeof(float));
    for (int l = 0; l < n_layers; l++)
        if (hc_append(base, l, x + at(l, 0), steps[0], y + at(l, 0))) return fprintf(stderr, "fork phase: base\n"), 1;
    fjob *jobs = calloc((size_t)n_workers, sizeof *jobs);
    pthread_t *tids = calloc((size_t)n_workers, sizeof *tids);
    if (!jobs || !tids || !y) return 1;
    for (int i = 0; i < n_workers; i++) {
        jobs[i].id = i;
        jobs[i].y = malloc(at(n_layers, 0) * sizeof(float));
        if (!jobs[i].y || hc_ctx_fork(base, NULL, &jobs[i].src)) return fprintf(stderr, "fork phase: fork %d\n", i), 1;
    }
    for (int i = 0; i < n_workers; i++)
        if (pthread_create(&tids[i], NULL, fork_worker, &jobs[i]) != 0) return 1;
    hc_ctx_free(base); /* while the forks share its pages */
    int failures = 0;
    for (int i = 0; i < n_workers; i++) {
        pthread_join(tids[i], NULL);
        if (jobs[i].err[0]) fprintf(stderr, "fork thread %d: %s\n", i, jobs[i].err), failures++;
        free(jobs[i].y);
    }
    printf("tsan test, forks: %d threads: %s\n", n_workers, failures ? "FAILED" : "ok");
    free(jobs), free(tids), free(y);
    return failures;
}

int main(void)
{
    int quick = getenv("HC_TEST_QUICK") && atoi(getenv("HC_TEST_QUICK")) > 0;
    steps = quick ? steps_quick : steps_full;
    n_steps = quick ? 3 : 5;
    int n_workers = quick ? 3 : 8;
    for (int s = 0; s < n_steps; s++) n_tok += (int)steps[s];

    hc_model_params mp;
    hc_model_params_init(&mp, sizeof mp);
    mp.n_threads = 2; /* random initialisation runs on a pool too */
    if (hc_model_create_random("tiny", 42, &mp, &model) != HC_OK) return fprintf(stderr, "model failed\n"), 1;
    n_layers = hc_model_n_layers(model);
    dim = hc_model_dim(model);
    x = malloc(at(n_layers, 0) * sizeof(float));
    ref = malloc(at(n_layers, 0) * sizeof(float));
    if (!x || !ref) return 1;
    tu_fill_normal(x, at(n_layers, 0), 11, 1.0f);

    job r = {.id = -1, .n_threads = 1, .cache_format = HC_CACHE_BF16, .y = ref};
    if (run(&r) != 0) return fprintf(stderr, "reference run: %s\n", r.err), 1;

    /* contexts differ in pool size and cache format; neither may change a bit of the output */
    job *jobs = calloc((size_t)n_workers, sizeof *jobs);
    pthread_t *tids = calloc((size_t)n_workers, sizeof *tids);
    if (!jobs || !tids) return 1;
    for (int i = 0; i < n_workers; i++) {
        jobs[i] = (job){.id = i, .n_threads = 1 + i % 2, .cache_format = i % 2 ? HC_CACHE_FP8 : HC_CACHE_BF16};
        jobs[i].y = malloc(at(n_layers, 0) * sizeof(float));
        if (!jobs[i].y || pthread_create(&tids[i], NULL, worker, &jobs[i]) != 0) return 1;
    }
    int failures = 0;
    for (int i = 0; i < n_workers; i++) {
        pthread_join(tids[i], NULL);
        if (jobs[i].err[0]) fprintf(stderr, "thread %d: %s\n", i, jobs[i].err), failures++;
        free(jobs[i].y);
    }
    printf("tsan test: %d threads x %d tokens x %d layers: %s\n", n_workers, n_tok, n_layers,
           failures ? "FAILED" : "ok");
    failures += fork_phase(n_workers);
    free(jobs), free(tids), free(x), free(ref);
    hc_model_free(model);
    return failures ? 1 : 0;
}
