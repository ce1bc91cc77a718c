#include "threadpool.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct worker_arg {
    struct hci_pool *p;
    int tid;
} worker_arg;

struct hci_pool {
    int n_threads;              /* including the caller */
    pthread_t *workers;
    struct worker_arg *wargs;
    int n_workers;
    pthread_mutex_t lock;
    pthread_cond_t wake, done;
    uint64_t generation;        /* bumped for each job */
    int quit;
    int busy;                   /* workers still inside the current job */
    /* the current job */
    hci_range_fn fn;
    void *arg;
    int64_t n, grain;
    atomic_int_fast64_t next;
};

int hci_online_cores(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (n > 1024 ? 1024 : (int)n);
}

static void run_pieces(hci_pool *p, int tid)
{
    for (;;) {
        int64_t lo = atomic_fetch_add(&p->next, p->grain);
        if (lo >= p->n) break;
        int64_t hi = lo + p->grain < p->n ? lo + p->grain : p->n;
        p->fn(p->arg, lo, hi, tid);
    }
}

static void *worker_main(void *arg)
{
    hci_pool *p = ((worker_arg *)arg)->p;
    int tid = ((worker_arg *)arg)->tid;
    uint64_t seen = 0;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->quit && p->generation == seen) pthread_cond_wait(&p->wake, &p->lock);
        if (p->quit) break;
        seen = p->generation;
        pthread_mutex_unlock(&p->lock);
        run_pieces(p, tid);
        pthread_mutex_lock(&p->lock);
        if (--p->busy == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

hci_pool *hci_pool_create(int n_threads)
{
    if (n_threads <= 0) n_threads = hci_online_cores();
    hci_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n_threads = 1;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    if (n_threads > 1) {
        p->workers = calloc((size_t)n_threads - 1, sizeof(pthread_t));
        p->wargs = calloc((size_t)n_threads - 1, sizeof(worker_arg));
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 8u << 20);
        for (int i = 0; p->workers && p->wargs && i < n_threads - 1; i++) {
            p->wargs[i].p = p;
            p->wargs[i].tid = i + 1;
            if (pthread_create(&p->workers[i], &attr, worker_main, &p->wargs[i]) != 0) break;
            p->n_workers++;
        }
        pthread_attr_destroy(&attr);
    }
    p->n_threads = 1 + p->n_workers;
    return p;
}

void hci_pool_destroy(hci_pool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->lock);
    p->quit = 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->n_workers; i++) pthread_join(p->workers[i], NULL);
    free(p->workers);
    free(p->wargs);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    free(p);
}

int hci_pool_size(const hci_pool *p) { return p ? p->n_threads : 1; }

void hci_pool_for(hci_pool *p, int64_t n, int64_t grain, hci_range_fn fn, void *arg)
{
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    if (!p || p->n_workers == 0 || n <= grain) {
        for (int64_t lo = 0; lo < n; lo += grain) fn(arg, lo, lo + grain < n ? lo + grain : n, 0);
        return;
    }
    pthread_mutex_lock(&p->lock);
    p->fn = fn;
    p->arg = arg;
    p->n = n;
    p->grain = grain;
    atomic_store(&p->next, 0);
    p->busy = p->n_workers;
    p->generation++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    run_pieces(p, 0);
    pthread_mutex_lock(&p->lock);
    while (p->busy > 0) pthread_cond_wait(&p->done, &p->lock);
    pthread_mutex_unlock(&p->lock);
}
