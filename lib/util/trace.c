/* trace.c - the opt-in timing breakdown of session loads (trace.h). */
#include "trace.h"
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

_Thread_local hci_trace *hci_trace_tls;

uint64_t hci_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

hci_trace *hci_trace_begin(void)
{
    const char *p = getenv("HYBRIDCTX_SESSION_TRACE");
    if (!p || !*p || strlen(p) >= sizeof ((hci_trace *)0)->path) return NULL;
    hci_trace *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    for (int i = 0; i < HCI_T_N; i++) {
        atomic_init(&t->ns[i], 0);
        atomic_init(&t->count[i], 0);
        atomic_init(&t->bytes[i], 0);
    }
    pthread_mutex_init(&t->lock, NULL);
    snprintf(t->path, sizeof t->path, "%s", p);
    t->eager = t->cut = -1;
    t->t0 = hci_now_ns();
    return t;
}

void hci_trace_read_begin(hci_trace *t)
{
    if (!t) return;
    uint64_t now = hci_now_ns();
    pthread_mutex_lock(&t->lock);
    if (++t->in_flight == 1) t->busy_from = now;
    else if (t->in_flight == 2) t->busy2_from = now;
    pthread_mutex_unlock(&t->lock);
}

void hci_trace_read_end(hci_trace *t)
{
    if (!t) return;
    uint64_t now = hci_now_ns();
    pthread_mutex_lock(&t->lock);
    if (t->in_flight == 2) hci_trace_add(t, HCI_T_DISK_BUSY2, now - t->busy2_from, 0);
    if (t->in_flight == 1) hci_trace_add(t, HCI_T_DISK_BUSY, now - t->busy_from, 0);
    t->in_flight--;
    pthread_mutex_unlock(&t->lock);
}

static const char *const names[HCI_T_N] = {
    "total", "open", "setup", "shadow", "block_alloc", "page_sync", "stream", "buf_alloc", "wait_read",
    "wait_check", "apply", "upload_async", "upload", "prepare", "buf_free", "hist", "commit", "io_read",
    "io_bufwait", "io_prepwait", "disk_busy", "disk_busy2", "work", "work_bufwait", "populate", "carry",
    "io_direct", "io_buffered", "io_fallback",
};

void hci_trace_end(hci_trace *t)
{
    if (!t) return;
    FILE *f = strcmp(t->path, "-") == 0 ? stderr : fopen(t->path, "a");
    if (f) {
        fprintf(f, "{\"op\": \"load\", \"status\": %d, \"backend\": \"%s\", \"session_bytes\": %" PRIu64
                   ", \"chunks\": %" PRIu64 ", \"units\": %u, \"workers\": %d, \"read_threads\": %d, \"read_bufs\": %d, "
                   "\"populate_threads\": %d, \"direct\": %d, \"eager\": %d, \"cut\": %d, \"unit_bytes\": %" PRIu64
                   ", \"s\": {",
                t->status, t->backend ? t->backend : "?", t->session_bytes, t->n_chunks, t->n_units, t->workers,
                t->read_threads, t->read_bufs, t->populate_threads, t->direct, t->eager, t->cut, t->unit_bytes);
        for (int i = 0; i < HCI_T_N; i++)
            fprintf(f, "%s\"%s\": %.6f", i ? ", " : "", names[i], 1e-9 * (double)atomic_load(&t->ns[i]));
        fprintf(f, "}, \"n\": {");
        for (int i = 0; i < HCI_T_N; i++)
            fprintf(f, "%s\"%s\": %" PRIu64, i ? ", " : "", names[i], (uint64_t)atomic_load(&t->count[i]));
        fprintf(f, "}, \"bytes\": {");
        for (int i = 0, k = 0; i < HCI_T_N; i++)
            if (atomic_load(&t->bytes[i])) fprintf(f, "%s\"%s\": %" PRIu64, k++ ? ", " : "", names[i], (uint64_t)atomic_load(&t->bytes[i]));
        /* per unit, ms from the start of the load: queued, read started, read ended, waited for by
         * the calling thread, released (its buffer free again / its pages done) */
        fprintf(f, "}, \"unit_fields\": [\"queued_ms\", \"start_ms\", \"end_ms\", \"waited_ms\", \"released_ms\", \"bytes\"], \"units_ms\": [");
        for (uint32_t i = 0; t->units && i < t->n_units; i++) {
            const hci_trace_unit *u = &t->units[i];
            fprintf(f, "%s[%.3f, %.3f, %.3f, %.3f, %.3f, %" PRIu64 "]", i ? ", " : "", 1e-6 * (double)u->queued,
                    1e-6 * (double)u->start, 1e-6 * (double)u->end, 1e-6 * (double)u->waited, 1e-6 * (double)u->released,
                    u->bytes);
        }
        fprintf(f, "]}\n");
        if (f != stderr) fclose(f);
    }
    pthread_mutex_destroy(&t->lock);
    free(t->units);
    free(t);
}

/* "name=value" items separated by commas; an unknown name or a bad value is ignored. */
void hci_session_knobs_get(hci_session_knobs *k)
{
    k->read_threads = k->read_bufs = k->eager = k->workers = k->cut = k->unit_mib = -1;
    const char *s = getenv("HYBRIDCTX_SESSION_IO");
    while (s && *s) {
        static const struct { const char *name; int lo, hi; size_t off; } fields[] = {
            {"read_threads", 1, 16, offsetof(hci_session_knobs, read_threads)},
            {"read_bufs", 1, 32, offsetof(hci_session_knobs, read_bufs)},
            {"eager", 0, 1, offsetof(hci_session_knobs, eager)},
            {"workers", 1, 64, offsetof(hci_session_knobs, workers)},
            {"cut", 0, 2, offsetof(hci_session_knobs, cut)},
            {"unit_mib", 1, 64, offsetof(hci_session_knobs, unit_mib)},
        };
        const char *end = strchr(s, ','), *eq = strchr(s, '=');
        if (!end) end = s + strlen(s);
        for (size_t i = 0; eq && eq < end && i < sizeof fields / sizeof fields[0]; i++) {
            if (strlen(fields[i].name) != (size_t)(eq - s) || strncmp(s, fields[i].name, (size_t)(eq - s)) != 0) continue;
            char *stop;
            long v = strtol(eq + 1, &stop, 10);
            if (stop == end && stop != eq + 1 && v >= fields[i].lo && v <= fields[i].hi)
                *(int *)((char *)k + fields[i].off) = (int)v;
        }
        s = *end ? end + 1 : end;
    }
}
