/* test_session_async.c - the asynchronous transfer protocol of session saves and loads
 * (backend.h "bulk transfers", used by the CUDA backend) on a machine without a GPU: a CPU
 * context whose ops table gains host_alloc / host_wait / upload_async / pages_download /
 * pages_alloc_block that defer every copy out of or into a host_alloc buffer until the buffer is
 * waited for or freed. A stream that wrote a buffer again before waiting for it, or read a
 * downloaded buffer before waiting, would then load or save the wrong bytes: every session must
 * round-trip exactly as through the plain ops, and failed or stopped loads leave the context as
 * it was, with no buffer left behind. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "hybridctx.h"
#include "hybridctx_experimental.h"
#include "backend/backend.h"
#include "ctx/ctx.h"
#include "session/io.h"
#include "session/session.h"
#include "util/trace.h"
#include "test_session_util.h"
#include "testutil.h"
#include "runner.h"

/* ---- the deferring ops ---- */

typedef struct pending {
    int down;                   /* 1: pages of l into dst; 0: bytes of src into dst */
    void *dst;
    const void *src;
    size_t n;
    const hci_page_list *l;
    int first, count;
} pending;

typedef struct fbuf {
    uint8_t *p;
    size_t n;
    pending *q;
    int nq, capq;
} fbuf;

static struct {
    pthread_mutex_t lock;
    fbuf bufs[256];
    int n_bufs;
    size_t live_bytes, max_live_bytes;
    long uploads, downloads, waits;       /* deferred ones */
} F = {.lock = PTHREAD_MUTEX_INITIALIZER};

static hci_backend_ops g_async;           /* the CPU ops plus the deferring ones */
static const hci_backend_ops *g_plain;

/* The buffer holding the byte at p (not one past a buffer's end: allocations may be adjacent, and
 * that is the next one's first byte). */
static fbuf *find(const void *p)
{
    for (int i = 0; i < F.n_bufs; i++)
        if ((const uint8_t *)p >= F.bufs[i].p && (const uint8_t *)p < F.bufs[i].p + F.bufs[i].n) return &F.bufs[i];
    return NULL;
}

static void run_pending(fbuf *b)
{
    for (int i = 0; i < b->nq; i++) {
        pending *q = &b->q[i];
        if (!q->down) {
            memcpy(q->dst, q->src, q->n);
            continue;
        }
        for (int k = 0; k < q->count; k++)
            memcpy((uint8_t *)q->dst + (size_t)k * q->l->page_bytes, q->l->pages[q->first + k], q->l->page_bytes);
    }
    b->nq = 0;
}

static void defer(fbuf *b, pending q)
{
    if (b->nq == b->capq) {
        b->capq = b->capq ? 2 * b->capq : 16;
        b->q = realloc(b->q, sizeof *b->q * (size_t)b->capq);
        ck_assert_ptr_nonnull(b->q);
    }
    b->q[b->nq++] = q;
}

static int f_host_alloc(hci_backend *be, size_t bytes, void **out)
{
    (void)be;
    void *p = NULL;
    if (posix_memalign(&p, 4096, bytes ? bytes : 1)) return HC_ERR_OUT_OF_MEMORY;
    memset(p, 0xEE, bytes);
    pthread_mutex_lock(&F.lock);
    ck_assert_int_lt(F.n_bufs, 256);
    F.bufs[F.n_bufs++] = (fbuf){p, bytes, NULL, 0, 0};
    F.live_bytes += bytes;
    if (F.live_bytes > F.max_live_bytes) F.max_live_bytes = F.live_bytes;
    pthread_mutex_unlock(&F.lock);
    *out = p;
    return HC_OK;
}

static void f_host_free(hci_backend *be, void *p)
{
    (void)be;
    pthread_mutex_lock(&F.lock);
    fbuf *b = find(p);
    ck_assert_ptr_nonnull(b);
    ck_assert_ptr_eq(b->p, p);
    run_pending(b);
    free(b->q);
    F.live_bytes -= b->n;
    *b = F.bufs[--F.n_bufs];
    pthread_mutex_unlock(&F.lock);
    free(p);
}

static int f_host_wait(hci_backend *be, const void *p, char *err, size_t errsz)
{
    (void)be, (void)err, (void)errsz;
    pthread_mutex_lock(&F.lock);
    fbuf *b = find(p);
    if (b && b->nq) F.waits++, run_pending(b);
    pthread_mutex_unlock(&F.lock);
    return HC_OK;
}

static int f_upload_async(hci_backend *be, void *dst, const void *src, size_t n)
{
    pthread_mutex_lock(&F.lock);
    fbuf *b = find(src);
    if (b) F.uploads++, defer(b, (pending){0, dst, src, n, NULL, 0, 0});
    pthread_mutex_unlock(&F.lock);
    return b ? HC_OK : g_plain->upload(be, dst, src, n);
}

static int f_pages_download(hci_backend *be, const hci_page_list *l, int first, int n, void *dst)
{
    (void)be;
    pthread_mutex_lock(&F.lock);
    fbuf *b = find(dst);
    if (b) {
        F.downloads++;
        memset(dst, 0xA5, (size_t)n * l->page_bytes); /* what a reader that did not wait would see */
        defer(b, (pending){1, dst, NULL, 0, l, first, n});
    }
    pthread_mutex_unlock(&F.lock);
    for (int k = 0; !b && k < n; k++) memcpy((uint8_t *)dst + (size_t)k * l->page_bytes, l->pages[first + k], l->page_bytes);
    return HC_OK;
}

static void set_async(hc_ctx *c, int on)
{
    if (!g_plain) {
        g_plain = c->be->ops;
        g_async = *g_plain;
        g_async.pages_alloc_block = g_plain->pages_alloc_host; /* its slab pages are freed page by page */
        g_async.pages_alloc_host = NULL; /* device-like: the stream never reads into the pages */
        g_async.host_alloc = f_host_alloc, g_async.host_free = f_host_free, g_async.host_wait = f_host_wait;
        g_async.upload_async = f_upload_async, g_async.pages_download = f_pages_download;
    }
    c->be->ops = on ? &g_async : g_plain;
}

/* ---- helpers ---- */

static hc_model *g_model;
static char g_path[256];

static void setup(void)
{
    g_model = tsu_model(tsu_micro_json, 1, 1);
    snprintf(g_path, sizeof g_path, "%s/hc-async-%d.hcs", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid());
}

static void teardown(void)
{
    unlink(g_path);
    hc_model_free(g_model);
}

static hc_ctx *filled(int fmt, int64_t n, uint64_t seed)
{
    hc_ctx *c = tsu_ctx(g_model, fmt, 0);
    ck_assert_int_eq(hc_x_ctx_fill_random(c, n, seed), HC_OK);
    ck_assert_int_eq(hc_ctx_set_metadata(c, "async", 5), HC_OK);
    return c;
}

/* The digest through the plain ops, in the default layout. */
static uint64_t digest(hc_ctx *c)
{
    const hci_backend_ops *o = c->be->ops;
    hcs_test_hooks h = hcs_hooks;
    memset(&hcs_hooks, 0, sizeof hcs_hooks);
    c->be->ops = g_plain ? g_plain : o;
    uint64_t d = tsu_digest(c);
    c->be->ops = o;
    hcs_hooks = h;
    return d;
}

/* File transfers: 8 KiB units with O_DIRECT and 64-row chunks (many of each), or the defaults. */
static void small_units(int on)
{
    hcs_hooks.io_unit = on ? 8192 : 0, hcs_hooks.direct_io = on, hcs_hooks.entry_rows_per_chunk = on ? 64 : 0;
}

/* ---- tests ---- */

/* Saves through pages_download and loads through upload_async, both formats, raw and zstd, files
 * and buffers, small sessions (no workers) and several MiB (workers, many units): the same
 * sessions and the same states as through the plain ops. */
START_TEST(round_trip)
{
    static const int64_t lengths[] = {700, 40000};
    for (size_t li = 0; li < 2; li++)
        for (int fmt = 0; fmt < 2; fmt++) {
            int cf = fmt ? HC_CACHE_BF16 : HC_CACHE_FP8;
            hc_ctx *c = filled(cf, lengths[li], 11 + li);
            uint64_t d = digest(c);
            uint64_t refn;
            uint8_t *ref = tsu_save(c, HC_COMPRESS_NONE, &refn);
            for (int comp = 0; comp < 2; comp++)
                for (int units = 0; units < 2; units++) {
                    long up = F.uploads, down = F.downloads;
                    small_units(units);
                    set_async(c, 1);
                    tsu_save_file(c, g_path, comp ? HC_COMPRESS_ZSTD : HC_COMPRESS_NONE);
                    set_async(c, 0);
                    /* chunks of whole fp8 blocks go to page-locked buffers (all chunks of a bf16
                     * context, being converted, go to its b_pg) */
                    if (li || units) ck_assert_int_gt(F.downloads, down);
                    if (!comp && !units) { /* the writer's own layout: the bytes of a plain save */
                        size_t n;
                        uint8_t *got = tu_read_file(g_path, &n);
                        uint64_t where = 0;
                        ck_assert_msg(tsu_same_session(ref, refn, got, n, &where), "differs at %llu",
                                      (unsigned long long)where);
                        free(got);
                    }
                    hc_ctx *e = tsu_ctx(g_model, fmt ? HC_CACHE_FP8 : HC_CACHE_BF16, 0); /* the other format */
                    ck_assert_int_eq(hc_x_ctx_fill_random(e, 300, 5), HC_OK);
                    set_async(e, 1);
                    ck_assert_msg(hc_ctx_load(e, g_path) == HC_OK, "load: %s", hc_ctx_last_error(e));
                    small_units(0);
                    if (li || units) ck_assert_int_gt(F.uploads, up);
                    ck_assert_uint_eq(digest(e), d);
                    ck_assert_int_eq(F.n_bufs, 0);
                    /* and from a buffer (pieces point into the caller's memory: plain copies) */
                    uint64_t n;
                    uint8_t *b = tsu_save(c, comp ? HC_COMPRESS_ZSTD : HC_COMPRESS_NONE, &n);
                    ck_assert_int_eq(hc_ctx_reset(e), HC_OK);
                    ck_assert_msg(hc_ctx_load_buffer(e, b, n) == HC_OK, "load: %s", hc_ctx_last_error(e));
                    ck_assert_uint_eq(digest(e), d);
                    free(b);
                    hc_ctx_free(e);
                }
            free(ref);
            hc_ctx_free(c);
        }
    printf("async: %ld uploads, %ld downloads deferred, %ld waits ran copies, at most %zu bytes of buffers\n",
           F.uploads, F.downloads, F.waits, F.max_live_bytes);
    ck_assert_int_gt(F.waits, 0);
    ck_assert_uint_lt(F.max_live_bytes, 64u << 20);
}
END_TEST

static int stop_at(void *user, uint64_t done, uint64_t total)
{
    (void)total;
    return done >= *(uint64_t *)user;
}

/* A chunk damaged late in the file, and a stop half-way: the load fails after many pieces went
 * out asynchronously, the context keeps its state, and every buffer is back. */
START_TEST(failed_loads_change_nothing)
{
    hc_ctx *c = filled(HC_CACHE_FP8, 40000, 3);
    small_units(1);
    tsu_save_file(c, g_path, HC_COMPRESS_NONE);
    small_units(0);
    hc_ctx *e = filled(HC_CACHE_FP8, 5000, 4);
    uint64_t d = digest(e);
    set_async(e, 1);
    /* the middle of the last entry section's stored bytes */
    size_t n;
    uint8_t *bytes = tu_read_file(g_path, &n);
    hcs_file f;
    char err[256];
    hcs_src src = {-1, "buffer", bytes, n};
    ck_assert_int_eq(hcs_file_open(&f, &src, err, sizeof err), HC_OK);
    uint64_t at = 0;
    for (uint32_t i = 0; i < f.n_sec; i++)
        if ((f.sec[i].type == HCS_SEC_COMP || f.sec[i].type == HCS_SEC_INDEX) && f.sec[i].stored_length)
            at = f.sec[i].offset + f.sec[i].stored_length / 2;
    uint64_t total = f.total_raw;
    hcs_file_close(&f);
    ck_assert_uint_gt(at, n / 2);
    bytes[at] ^= 0x40;
    char bad[300];
    snprintf(bad, sizeof bad, "%s.bad", g_path);
    ck_assert_int_eq(tu_write_file(bad, bytes, n), 0);
    small_units(1);
    hc_status st = hc_ctx_load(e, bad);
    ck_assert_msg(st == HC_ERR_CORRUPT, "%s: %s", hc_status_name(st), hc_ctx_last_error(e));
    ck_assert_int_eq(F.n_bufs, 0);
    ck_assert_uint_eq(digest(e), d);
    /* stopped by the progress callback half-way */
    uint64_t half = total / 2;
    hc_ctx_set_progress(e, stop_at, &half);
    st = hc_ctx_load(e, g_path);
    hc_ctx_set_progress(e, NULL, NULL);
    small_units(0);
    ck_assert_msg(st == HC_ERR_ABORTED, "%s: %s", hc_status_name(st), hc_ctx_last_error(e));
    ck_assert_int_eq(F.n_bufs, 0);
    ck_assert_uint_eq(digest(e), d);
    /* and the context goes on: the good file loads */
    ck_assert_msg(hc_ctx_load(e, g_path) == HC_OK, "%s", hc_ctx_last_error(e));
    ck_assert_uint_eq(digest(e), digest(c));
    unlink(bad);
    free(bytes);
    hc_ctx_free(e), hc_ctx_free(c);
}
END_TEST

/* A disk whose reads take 10 ms each, whatever their size. */
static ssize_t slow_pread(int fd, void *b, size_t n, off_t off)
{
    usleep(10000);
    return hci_io_posix.pread(fd, b, n, off);
}

/* The number after "key": in a trace line's object that starts at obj. */
static double trace_value(const char *obj, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    const char *p = obj ? strstr(obj, pat) : NULL;
    ck_assert_msg(p != NULL, "no %s in the trace", key);
    return strtod(p + strlen(pat), NULL);
}

/* Reads stay in flight while the calling thread applies chunks: through the deferring ops
 * (every unit read into a stream buffer, as on CUDA), with units of 8 chunks, 4 unit buffers, as
 * many slots as 16 workers bring (those of a 16-core host) and a disk of 10 ms per read, the two
 * read threads have a read in progress together most of the time. Before the buffered units' buffers were
 * released as their chunks were applied, they stayed full of read but unapplied units until the
 * calling thread ran out of queued reads: then one read at a time, the disk idle in between
 * (docs/perf/NEXT-cuda-load.md). The load's trace (HYBRIDCTX_SESSION_TRACE) tells.
 * HC_TEST_KNOBS replaces the stream knobs (HYBRIDCTX_SESSION_IO): with ",eager=0" added, the old
 * release, this fails. */
START_TEST(reads_stay_in_flight)
{
    hc_ctx *c = filled(HC_CACHE_FP8, 40000, 21);
    uint64_t d = digest(c);
    /* units of 8 chunks of the main entries (64 rows of 200 bytes), as 8 MiB units of 1 MiB chunks */
    hcs_hooks.io_unit = 8 * 64 * 200, hcs_hooks.direct_io = 1, hcs_hooks.entry_rows_per_chunk = 64;
    tsu_save_file(c, g_path, HC_COMPRESS_NONE);
    char trace[300];
    snprintf(trace, sizeof trace, "%s.trace", g_path);
    unlink(trace);
    setenv("HYBRIDCTX_SESSION_TRACE", trace, 1);
    setenv("HYBRIDCTX_SESSION_IO", getenv("HC_TEST_KNOBS") ? getenv("HC_TEST_KNOBS") : "workers=16,read_threads=2,read_bufs=4", 1);
    hci_io_ops slow = hci_io_posix;
    slow.pread = slow_pread;
    hci_io_set(&slow);
    hc_ctx *e = tsu_ctx(g_model, HC_CACHE_FP8, 0);
    set_async(e, 1);
    hc_status st = hc_ctx_load(e, g_path);
    hci_io_set(NULL);
    unsetenv("HYBRIDCTX_SESSION_TRACE"), unsetenv("HYBRIDCTX_SESSION_IO");
    memset(&hcs_hooks, 0, sizeof hcs_hooks);
    ck_assert_msg(st == HC_OK, "load: %s", hc_ctx_last_error(e));
    ck_assert_uint_eq(digest(e), d);
    ck_assert_int_eq(F.n_bufs, 0);
    size_t n;
    char *line = tu_read_file(trace, &n);
    ck_assert_ptr_nonnull(line);
    ck_assert_msg(n > 0 && line[n - 1] == '\n' && memchr(line, '\n', n) == line + n - 1, "one line per load");
    line[n - 1] = 0;
    ck_assert_ptr_nonnull(strstr(line, "{\"op\": \"load\", \"status\": 0, "));
    const char *sec = strstr(line, "\"s\": {");
    double units = trace_value(line, "units"), busy = trace_value(sec, "disk_busy"), busy2 = trace_value(sec, "disk_busy2");
    double reads = trace_value(strstr(line, "\"n\": {"), "io_read");
    printf("reads in flight: %.0f units, %.0f reads, a read in progress %.3f s, two %.3f s\n", units, reads, busy, busy2);
    ck_assert_double_ge(units, 24);
    ck_assert_double_eq(reads, units);
    ck_assert_msg(busy2 > 0.5 * busy, "two reads in progress %.3f s of %.3f s", busy2, busy);
    free(line);
    unlink(trace);
    hc_ctx_free(e), hc_ctx_free(c);
}
END_TEST

/* ---- the reads of a load through the CUDA-like ops ---- */

typedef struct rec_read {
    uint64_t off, n;
    uintptr_t buf;
    int direct;                 /* the descriptor had O_DIRECT */
} rec_read;

static struct {
    pthread_mutex_t lock;
    rec_read r[4096];
    int n;
    int refuse;                 /* reads with O_DIRECT fail with EINVAL (a file system without it) */
} R = {.lock = PTHREAD_MUTEX_INITIALIZER};

static ssize_t rec_pread(int fd, void *b, size_t n, off_t off)
{
    int fl = fcntl(fd, F_GETFL), direct = fl != -1 && (fl & O_DIRECT);
    if (direct && R.refuse) {
        errno = EINVAL;
        return -1;
    }
    pthread_mutex_lock(&R.lock);
    ck_assert_int_lt(R.n, 4096);
    R.r[R.n++] = (rec_read){(uint64_t)off, n, (uintptr_t)b, direct};
    pthread_mutex_unlock(&R.lock);
    return hci_io_posix.pread(fd, b, n, off);
}

static int by_offset(const void *a, const void *b)
{
    const rec_read *x = a, *y = b;
    return (x->off > y->off) - (x->off < y->off);
}

/* Whether the file system under path reads with O_DIRECT (tmpfs did not before Linux 6.6). */
static int fs_takes_direct(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECT);
    if (fd < 0) return 0;
    void *b = NULL;
    int ok = posix_memalign(&b, 4096, 4096) == 0 && pread(fd, b, 4096, 0) == 4096;
    free(b);
    close(fd);
    return ok;
}

/* The unit reads of a load into a device-like context (every unit into a stream buffer, as on
 * CUDA) are what O_DIRECT takes and what the raw read does: 4096-aligned offsets, lengths and
 * buffers, each starting where the one before ended (no block read twice), and with the default
 * cut on the unit grid of the file; the trace counts them as O_DIRECT. Before, a unit re-read the
 * last block of the one before whenever a chunk ended inside a block (cut=0 still does). Where
 * a read with O_DIRECT is refused, the trace counts one fallback and the reads as buffered. */
START_TEST(unit_reads_direct)
{
    hc_ctx *c = filled(HC_CACHE_FP8, 40000, 31);
    uint64_t d = digest(c);
    const uint64_t unit = 16 * 4096;
    hcs_hooks.io_unit = (uint32_t)unit, hcs_hooks.direct_io = 1, hcs_hooks.entry_rows_per_chunk = 64;
    tsu_save_file(c, g_path, HC_COMPRESS_NONE);
    int fs_direct = fs_takes_direct(g_path);
    char trace[300];
    snprintf(trace, sizeof trace, "%s.trace", g_path);
    hci_io_ops rec = hci_io_posix;
    rec.pread = rec_pread;
    for (int mode = 0; mode < 5; mode++) { /* cut 0, 1, 2; the default; the default with O_DIRECT refused */
        int cut = mode < 3 ? mode : -1, direct = fs_direct && mode < 4;
        char knobs[64];
        snprintf(knobs, sizeof knobs, "workers=4,cut=%d", cut);
        R.n = 0, R.refuse = mode == 4;
        unlink(trace);
        setenv("HYBRIDCTX_SESSION_TRACE", trace, 1);
        setenv("HYBRIDCTX_SESSION_IO", cut < 0 ? "workers=4" : knobs, 1);
        hc_ctx *e = tsu_ctx(g_model, HC_CACHE_FP8, 0);
        set_async(e, 1);
        hci_io_set(&rec);
        hc_status st = hc_ctx_load(e, g_path);
        hci_io_set(NULL);
        unsetenv("HYBRIDCTX_SESSION_TRACE"), unsetenv("HYBRIDCTX_SESSION_IO");
        ck_assert_msg(st == HC_OK, "cut %d: load: %s", cut, hc_ctx_last_error(e));
        ck_assert_uint_eq(digest(e), d);
        ck_assert_int_eq(F.n_bufs, 0);
        size_t n;
        char *line = tu_read_file(trace, &n);
        ck_assert_ptr_nonnull(line);
        const char *cnt = strstr(line, "\"n\": {");
        double units = trace_value(line, "units"), n_direct = trace_value(cnt, "io_direct"),
               n_buffered = trace_value(cnt, "io_buffered"), fallbacks = trace_value(cnt, "io_fallback"),
               read = trace_value(strstr(line, "\"bytes\": {"), "io_read");
        ck_assert_double_eq(trace_value(line, "cut"), cut < 0 ? HCS_CUT_DEFAULT : cut);
        free(line);
        ck_assert_double_ge(units, 20);
        ck_assert_double_eq(n_direct, direct ? units : 0);
        ck_assert_double_eq(n_buffered, direct ? 0 : units);
        /* a file system without O_DIRECT refuses the flag itself: nothing falls back */
        ck_assert_double_eq(fallbacks, fs_direct && mode == 4 ? 1 : 0);
        if (!direct) {
            hc_ctx_free(e);
            continue;
        }
        /* the unit reads: those with O_DIRECT on (the validation's come before) */
        rec_read u[4096];
        int k = 0;
        for (int i = 0; i < R.n; i++)
            if (R.r[i].direct) u[k++] = R.r[i];
        ck_assert_int_eq(k, (int)units);
        qsort(u, (size_t)k, sizeof *u, by_offset);
        int overlaps = 0;
        uint64_t sum = 0;
        for (int i = 0; i < k; i++) {
            ck_assert_msg(u[i].off % 4096 == 0 && u[i].n % 4096 == 0 && u[i].buf % 4096 == 0,
                          "cut %d: read %d of %llu bytes at %llu into %p", cut, i, (unsigned long long)u[i].n,
                          (unsigned long long)u[i].off, (void *)u[i].buf);
            sum += u[i].n;
            if (i && u[i].off < u[i - 1].off + u[i - 1].n) overlaps++;
            if (cut && i) ck_assert_uint_eq(u[i].off, u[i - 1].off + u[i - 1].n);
            if (cut == HCS_CUT_GRID || cut < 0) {
                if (i) ck_assert_uint_eq(u[i].off % unit, 0);
                if (i && i + 1 < k) ck_assert_uint_eq(u[i].n, unit);
            }
        }
        ck_assert_double_eq(read, (double)sum);
        if (cut == HCS_CUT_OVERLAP) ck_assert_int_gt(overlaps, 0);
        hc_ctx_free(e);
    }
    memset(&hcs_hooks, 0, sizeof hcs_hooks);
    unlink(trace);
    hc_ctx_free(c);
}
END_TEST

/* Every cut of the buffered runs loads the same state, both formats, raw and zstd chunks, with
 * units smaller than a chunk (the grid extends a unit until a chunk ends in it) and larger. */
START_TEST(cuts_round_trip)
{
    static const uint32_t units[] = {8192, 65536};
    for (int fmt = 0; fmt < 2; fmt++) {
        hc_ctx *c = filled(fmt ? HC_CACHE_BF16 : HC_CACHE_FP8, 40000, 41 + fmt);
        uint64_t d = digest(c);
        for (int comp = 0; comp < 2; comp++)
            for (int ui = 0; ui < 2; ui++) {
                hcs_hooks.io_unit = units[ui], hcs_hooks.direct_io = 1, hcs_hooks.entry_rows_per_chunk = 64;
                tsu_save_file(c, g_path, comp ? HC_COMPRESS_ZSTD : HC_COMPRESS_NONE);
                for (int cut = 0; cut < 3; cut++) {
                    char knobs[64];
                    snprintf(knobs, sizeof knobs, "cut=%d,read_bufs=%d", cut, cut + 1);
                    setenv("HYBRIDCTX_SESSION_IO", knobs, 1);
                    hc_ctx *e = tsu_ctx(g_model, fmt ? HC_CACHE_FP8 : HC_CACHE_BF16, 0); /* the other format */
                    set_async(e, 1);
                    hc_status st = hc_ctx_load(e, g_path);
                    unsetenv("HYBRIDCTX_SESSION_IO");
                    ck_assert_msg(st == HC_OK, "fmt %d zstd %d unit %u cut %d: %s", fmt, comp, units[ui], cut,
                                  hc_ctx_last_error(e));
                    ck_assert_uint_eq(digest(e), d);
                    ck_assert_int_eq(F.n_bufs, 0);
                    hc_ctx_free(e);
                }
            }
        memset(&hcs_hooks, 0, sizeof hcs_hooks);
        hc_ctx_free(c);
    }
}
END_TEST

/* HYBRIDCTX_SESSION_IO: known names with values in range, the rest ignored. */
START_TEST(stream_knobs)
{
    static const struct { const char *spec; int threads, bufs, eager, workers, cut, unit_mib; } cases[] = {
        {NULL, -1, -1, -1, -1, -1, -1},
        {"", -1, -1, -1, -1, -1, -1},
        {"read_threads=4,read_bufs=16,eager=0,workers=3", 4, 16, 0, 3, -1, -1},
        {"read_bufs=8,", -1, 8, -1, -1, -1, -1},
        {"read_threads=0,read_bufs=33,eager=2,workers=x,bogus=1", -1, -1, -1, -1, -1, -1},
        {"read_threads=2x,read_bufs=,eager=1,read_threads", -1, -1, 1, -1, -1, -1},
        {"eager=1,eager=0", -1, -1, 0, -1, -1, -1},
        {"workers=64,read_threads=16,read_bufs=1", 16, 1, -1, 64, -1, -1},
        {"cut=0,unit_mib=16", -1, -1, -1, -1, 0, 16},
        {"cut=2,unit_mib=64", -1, -1, -1, -1, 2, 64},
        {"cut=3,unit_mib=0", -1, -1, -1, -1, -1, -1},
        {"cut=-1,unit_mib=65", -1, -1, -1, -1, -1, -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (cases[i].spec) setenv("HYBRIDCTX_SESSION_IO", cases[i].spec, 1);
        else unsetenv("HYBRIDCTX_SESSION_IO");
        hci_session_knobs k;
        hci_session_knobs_get(&k);
        ck_assert_msg(k.read_threads == cases[i].threads && k.read_bufs == cases[i].bufs && k.eager == cases[i].eager &&
                          k.workers == cases[i].workers && k.cut == cases[i].cut && k.unit_mib == cases[i].unit_mib,
                      "'%s': %d %d %d %d %d %d", cases[i].spec ? cases[i].spec : "(unset)", k.read_threads, k.read_bufs,
                      k.eager, k.workers, k.cut, k.unit_mib);
    }
    unsetenv("HYBRIDCTX_SESSION_IO");
}
END_TEST

Suite *tu_suite(int argc, char **argv)
{
    (void)argc, (void)argv;
    Suite *s = suite_create("session_async");
    TCase *tc = tcase_create("async");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, round_trip);
    tcase_add_test(tc, failed_loads_change_nothing);
    tcase_add_test(tc, reads_stay_in_flight);
    tcase_add_test(tc, unit_reads_direct);
    tcase_add_test(tc, cuts_round_trip);
    tcase_add_test(tc, stream_knobs);
    suite_add_tcase(s, tc);
    return s;
}
