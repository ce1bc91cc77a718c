/* pipe.c - a FIFO of slot numbers served by worker threads. */
#include "pipe.h"
#include <pthread.h>
#include <stdlib.h>

enum { IDLE, QUEUED, DONE };

struct hcs_pipe {
    hcs_pipe_fn fn;
    void *arg;
    int n_slots, n_threads;
    pthread_t *threads;
    pthread_mutex_t lock;
    pthread_cond_t work, done;
    int *queue, head, count;
    int *state;
    int quit;
};

static void *worker(void *a)
{
    hcs_pipe *p = a;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->quit && p->count == 0) pthread_cond_wait(&p->work, &p->lock);
        if (p->count == 0) break;
        int s = p->queue[p->head];
        p->head = (p->head + 1) % p->n_slots;
        p->count--;
        pthread_mutex_unlock(&p->lock);
        p->fn(p->arg, s);
        pthread_mutex_lock(&p->lock);
        p->state[s] = DONE;
        pthread_cond_broadcast(&p->done);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

hcs_pipe *hcs_pipe_create(int n_workers, int n_slots, hcs_pipe_fn fn, void *arg)
{
    hcs_pipe *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->fn = fn, p->arg = arg, p->n_slots = n_slots;
    p->queue = calloc((size_t)n_slots, sizeof(int));
    p->state = calloc((size_t)n_slots, sizeof(int));
    p->threads = n_workers > 0 ? calloc((size_t)n_workers, sizeof(pthread_t)) : NULL;
    if (!p->queue || !p->state || (n_workers > 0 && !p->threads)) {
        free(p->queue), free(p->state), free(p->threads), free(p);
        return NULL;
    }
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->done, NULL);
    for (int i = 0; i < n_workers; i++) {
        if (pthread_create(&p->threads[p->n_threads], NULL, worker, p)) break;
        p->n_threads++;
    }
    return p;
}

void hcs_pipe_submit(hcs_pipe *p, int s)
{
    if (p->n_threads == 0) {
        p->fn(p->arg, s);
        p->state[s] = DONE;
        return;
    }
    pthread_mutex_lock(&p->lock);
    p->state[s] = QUEUED;
    p->queue[(p->head + p->count) % p->n_slots] = s;
    p->count++;
    pthread_cond_signal(&p->work);
    pthread_mutex_unlock(&p->lock);
}

int hcs_pipe_done(hcs_pipe *p, int s)
{
    if (p->n_threads == 0) return 1;
    pthread_mutex_lock(&p->lock);
    int done = p->state[s] != QUEUED;
    pthread_mutex_unlock(&p->lock);
    return done;
}

void hcs_pipe_wait(hcs_pipe *p, int s)
{
    if (p->n_threads == 0) {
        p->state[s] = IDLE;
        return;
    }
    pthread_mutex_lock(&p->lock);
    while (p->state[s] == QUEUED) pthread_cond_wait(&p->done, &p->lock);
    p->state[s] = IDLE;
    pthread_mutex_unlock(&p->lock);
}

void hcs_pipe_destroy(hcs_pipe *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->lock);
    p->quit = 1;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->n_threads; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->done);
    free(p->queue), free(p->state), free(p->threads), free(p);
}
