/* dio.c - unit transfers on background threads (an hcs_pipe: units start in FIFO order, and with
 * no thread the transfer runs inside hcs_dio_submit), O_DIRECT with a buffered fallback. Reads
 * may use several threads, so that the disk is not idle while the next request is set up (its pages
 * pinned); the preparation of a read (a reader makes fresh destination pages resident) runs on
 * threads of its own as soon as the unit is queued, so that it is done, in parallel, by the time
 * the unit's read starts. */
#include "dio.h"
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include "hybridctx.h"
#include "io.h"
#include "pipe.h"
#include "../util/error.h"
#include "../util/trace.h"

struct hcs_dio {
    int fd, write, flags0; /* flags0: the descriptor's flags before, restored at the end */
    atomic_int direct;
    atomic_int fell;       /* O_DIRECT was refused once (counted in the trace) */
    atomic_int cancel;     /* hcs_dio_cancel: queued transfers are skipped */
    hcs_dio_prep_fn prep;  /* reads: before each transfer */
    void *prep_arg;
    hcs_pipe *prep_pipe;   /* runs prep as units are queued (NULL: on the I/O thread, just before) */
    pthread_mutex_t prep_lock;
    pthread_cond_t prep_cond;
    int *prepared;         /* [n_units]: prep of the unit's current transfer has finished */
    const char *name;
    hcs_unit *units;
    int n_units;
    hcs_pipe *pipe;
    const hcs_bufs *bufs;  /* reads: whose wait a destination needs first (NULL: none) */
    hci_trace *trace;      /* NULL: none */
};

static void set_direct(hcs_dio *d, int on)
{
    int fl = on ? d->flags0 | O_DIRECT : d->flags0 & ~O_DIRECT;
    if (fcntl(d->fd, F_SETFL, fl) != 0) on = 0;
    atomic_store(&d->direct, on);
}

/* Before unit i's read into p: its prep (run here, or waited for), then the copies that the
 * consumer of the buffer's last read may still be making out of it. The unit's status. */
static int prepare_read(hcs_dio *d, int i, const uint8_t *p)
{
    hcs_unit *u = &d->units[i];
    uint64_t t0 = d->trace ? hci_now_ns() : 0;
    if (d->prep && !d->prep_pipe) d->prep(d->prep_arg, u);
    if (d->prep_pipe) {
        pthread_mutex_lock(&d->prep_lock);
        while (!d->prepared[i]) pthread_cond_wait(&d->prep_cond, &d->prep_lock);
        pthread_mutex_unlock(&d->prep_lock);
    }
    if (!d->bufs || !d->bufs->wait) {
        if (t0) hci_trace_add(d->trace, HCI_T_IO_PREPWAIT, hci_now_ns() - t0, 0);
        return HC_OK;
    }
    uint64_t t1 = t0 ? hci_now_ns() : 0;
    int st = d->bufs->wait(d->bufs->arg, p, u->err, sizeof u->err);
    if (t0) {
        uint64_t t2 = hci_now_ns();
        hci_trace_add(d->trace, HCI_T_IO_PREPWAIT, t1 - t0, 0);
        hci_trace_add(d->trace, HCI_T_IO_BUFWAIT, t2 - t1, 0);
    }
    return st;
}

static void transfer(void *arg, int i)
{
    hcs_dio *d = arg;
    hcs_unit *u = &d->units[i];
    uint8_t *p = u->dst && !d->write ? u->dst : u->buf;
    size_t n = u->len;
    uint64_t off = u->off;
    const char *verb = d->write ? "writing" : "reading";
    u->status = HC_OK;
    if (atomic_load(&d->cancel)) {
        u->status = hci_errf(u->err, sizeof u->err, HC_ERR_ABORTED, "%s %s: cancelled", verb, d->name);
        return;
    }
    if (!d->write && (u->status = prepare_read(d, i, p))) return;
    uint64_t t0 = 0;
    if (d->trace) {
        t0 = hci_now_ns();
        u->t_start = t0 - d->trace->t0 + 1;
        hci_trace_read_begin(d->trace);
    }
    int paged = 0; /* some of the unit came through the page cache */
    while (n) {
        size_t step = n < (1u << 30) ? n : (1u << 30);
        int was_direct = atomic_load(&d->direct);
        ssize_t r = d->write ? hci_io()->pwrite(d->fd, p, step, (off_t)off) : hci_io()->pread(d->fd, p, step, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && errno == EINVAL && was_direct) {
            /* refused as a direct transfer: buffered from now on (another I/O thread may have
             * switched already, after this transfer started) */
            if (atomic_load(&d->direct)) set_direct(d, 0);
            if (atomic_load(&d->direct)) break; /* the flag did not come off: report EINVAL */
            if (!atomic_exchange(&d->fell, 1)) hci_trace_add(d->trace, HCI_T_IO_FALLBACK, 0, 0);
            continue;
        }
        if (r > 0 && !was_direct) paged = 1;
        if (r <= 0) {
            int e = r < 0 ? errno : d->write ? EIO : 0;
            if (e)
                u->status = hci_errf(u->err, sizeof u->err, HC_ERR_IO, "%s %s at offset %" PRIu64 ": %s", verb, d->name,
                                     off, strerror(e));
            else
                u->status = hci_errf(u->err, sizeof u->err, HC_ERR_IO, "reading %s: unexpected end of file at offset %" PRIu64,
                                     d->name, off);
            break;
        }
        p += r, n -= (size_t)r, off += (uint64_t)r;
    }
    if (t0) {
        uint64_t t1 = hci_now_ns();
        hci_trace_read_end(d->trace);
        hci_trace_add(d->trace, HCI_T_IO_READ, t1 - t0, u->len - n);
        /* whether the disk saw direct reads: a silent fallback would explain a slow load */
        if (!u->status && !n) hci_trace_add(d->trace, paged ? HCI_T_IO_BUFFERED : HCI_T_IO_DIRECT, 0, u->len);
        u->t_end = t1 - d->trace->t0 + 1;
    }
    if (u->status) return;
    if (n)
        u->status = hci_errf(u->err, sizeof u->err, HC_ERR_IO, "%s %s at offset %" PRIu64 ": %s", verb, d->name, off,
                             strerror(EINVAL));
    else if (d->write && !atomic_load(&d->direct) && u->len)
        /* buffered: start writeback of what was just written, so that the final fsync is short
         * (advisory: errors surface at fsync) */
        sync_file_range(d->fd, (off64_t)u->off, (off64_t)u->len, SYNC_FILE_RANGE_WRITE);
}

hcs_dio *hcs_dio_create(int fd, const char *name, int write, int direct, int n_units, size_t cap, int n_threads,
                        const hcs_bufs *bufs)
{
    hcs_dio *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->fd = fd, d->write = write, d->name = name, d->n_units = n_units, d->bufs = bufs;
    d->units = calloc((size_t)n_units, sizeof *d->units);
    int ok = d->units != NULL;
    for (int i = 0; ok && cap && i < n_units; i++) {
        void *b = NULL;
        ok = posix_memalign(&b, HCS_DIO_ALIGN, cap) == 0;
        if (ok) d->units[i].buf = b;
    }
    atomic_init(&d->cancel, 0);
    atomic_init(&d->fell, 0);
    if (ok) d->pipe = hcs_pipe_create(write || n_threads < 1 ? 1 : n_threads, n_units, transfer, d);
    if (!ok || !d->pipe) {
        d->pipe = NULL;
        hcs_dio_destroy(d);
        return NULL;
    }
    d->flags0 = fcntl(fd, F_GETFL);
    atomic_init(&d->direct, 0);
    if (d->flags0 == -1) d->flags0 = 0;
    else if (direct) set_direct(d, 1);
    return d;
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14; older kernels answer EINVAL and pages fault as before */
#endif

/* Huge pages populated slower than this many bytes per CPU second are declined for the rest of
 * a stream: zeroing runs at 5-20 GB/s and small pages populate at 2-4 GB/s per core, while a host
 * that must back each fresh huge page first gave 0.3-0.5 GB/s (docs/perf/2026-12-07-sessions-cpu-load.md).
 * The rate counts the range rounded out to HCS_HUGE boundaries (what huge pages fault in; more
 * than was faulted where a neighbour was resident already, so a slow rate is never overstated);
 * ranges of at least HCS_POP_TIMED bytes are timed: a zstd chunk's pages are one range of ~1 MiB. */
#define HCS_HUGE_SLOW_BPS 1.5e9
#define HCS_HUGE ((uintptr_t)2 << 20)
#define HCS_POP_TIMED (256u << 10)

static uint64_t thread_ns(void)
{
    struct timespec t;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)) return 0;
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* The whole 4096-byte pages inside [p, p + n): their start, and their length (0: none). */
static char *inner_pages(void *p, size_t n, size_t *len)
{
    uintptr_t lo = ((uintptr_t)p + HCS_DIO_ALIGN - 1) & ~(uintptr_t)(HCS_DIO_ALIGN - 1);
    uintptr_t hi = ((uintptr_t)p + n) & ~(uintptr_t)(HCS_DIO_ALIGN - 1);
    *len = hi > lo ? (size_t)(hi - lo) : 0;
    return (char *)p + (lo - (uintptr_t)p);
}

int hcs_populate(void *p, size_t n, atomic_int *no_huge)
{
    size_t len;
    char *a = inner_pages(p, n, &len);
    if (!len) return 0;
    uint64_t t0 = len < HCS_POP_TIMED || atomic_load_explicit(no_huge, memory_order_relaxed) ? 0 : thread_ns();
    madvise(a, len, MADV_POPULATE_WRITE);
    if (!t0) return 0;
    uintptr_t lo = (uintptr_t)a & ~(HCS_HUGE - 1), hi = ((uintptr_t)a + len + HCS_HUGE - 1) & ~(HCS_HUGE - 1);
    if ((double)(thread_ns() - t0) * 1e-9 * HCS_HUGE_SLOW_BPS <= (double)(hi - lo)) return 0;
    return atomic_exchange(no_huge, 1) == 0;
}

void hcs_decline_huge(void *p, size_t n)
{
#ifdef MADV_NOHUGEPAGE
    size_t len;
    char *a = inner_pages(p, n, &len);
    if (len) madvise(a, len, MADV_NOHUGEPAGE);
#else
    (void)p, (void)n;
#endif
}

static void prep_job(void *arg, int i)
{
    hcs_dio *d = arg;
    if (!atomic_load(&d->cancel)) d->prep(d->prep_arg, &d->units[i]);
    pthread_mutex_lock(&d->prep_lock);
    d->prepared[i] = 1;
    pthread_cond_broadcast(&d->prep_cond);
    pthread_mutex_unlock(&d->prep_lock);
}

int hcs_dio_set_prep(hcs_dio *d, hcs_dio_prep_fn prep, void *arg, int n_threads)
{
    d->prep = prep, d->prep_arg = arg;
    if (n_threads < 1) return HC_OK;
    if (!(d->prepared = calloc((size_t)d->n_units, sizeof *d->prepared))) return HC_ERR_OUT_OF_MEMORY;
    pthread_mutex_init(&d->prep_lock, NULL);
    pthread_cond_init(&d->prep_cond, NULL);
    if (!(d->prep_pipe = hcs_pipe_create(n_threads, d->n_units, prep_job, d))) {
        pthread_mutex_destroy(&d->prep_lock);
        pthread_cond_destroy(&d->prep_cond);
        free(d->prepared), d->prepared = NULL;
        return HC_ERR_OUT_OF_MEMORY;
    }
    return HC_OK;
}

hcs_unit *hcs_dio_unit(hcs_dio *d, int i) { return &d->units[i]; }

void hcs_dio_set_trace(hcs_dio *d, struct hci_trace *t) { d->trace = t; }

int hcs_dio_ready(hcs_dio *d, int i) { return hcs_pipe_done(d->pipe, i); }

void hcs_dio_submit(hcs_dio *d, int i)
{
    if (d->prep_pipe) {
        pthread_mutex_lock(&d->prep_lock);
        d->prepared[i] = 0;
        pthread_mutex_unlock(&d->prep_lock);
        hcs_pipe_submit(d->prep_pipe, i);
    }
    hcs_pipe_submit(d->pipe, i);
}

int hcs_dio_wait(hcs_dio *d, int i, char *err, size_t errsz)
{
    hcs_pipe_wait(d->pipe, i);
    hcs_unit *u = &d->units[i];
    if (u->status) hci_errf(err, errsz, u->status, "%s", u->err);
    return u->status;
}

void hcs_dio_cancel(hcs_dio *d)
{
    if (d) atomic_store(&d->cancel, 1);
}

void hcs_dio_destroy(hcs_dio *d)
{
    if (!d) return;
    hcs_pipe_destroy(d->pipe);
    if (d->prep_pipe) { /* after the transfers: each waits for its prep, which the pipe still runs */
        hcs_pipe_destroy(d->prep_pipe);
        pthread_mutex_destroy(&d->prep_lock);
        pthread_cond_destroy(&d->prep_cond);
    }
    free(d->prepared);
    if (d->pipe && atomic_load(&d->direct)) fcntl(d->fd, F_SETFL, d->flags0);
    for (int i = 0; d->units && i < d->n_units; i++) free(d->units[i].buf);
    free(d->units), free(d);
}
