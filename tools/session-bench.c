/* session-bench - save and load speed of a large session next to the raw speed of the disk.
 * Builds a context of the v4-flash geometry (geometry-only model) filled with random valid state
 * by hc_x_ctx_fill_random(), then times, in one directory:
 *   raw write   the session's byte count written in 8 MiB blocks, then fsync (like dd conv=fsync),
 *               once through the page cache and once with O_DIRECT; the faster is the disk's speed
 *   raw read    the same file read back in 8 MiB blocks after its pages were dropped from the page
 *               cache, buffered, with O_DIRECT, and with O_DIRECT by 4 threads (4 blocks in flight,
 *               loads read with several in flight too); the fastest is the disk's speed
 *   save        hc_ctx_save() (temporary, fsync, rename, directory fsync), without and with zstd
 *   load        hc_ctx_load() of that file after its pages were dropped, into a second context
 * With --rounds N all of it runs N times, interleaved (the disk of a shared machine changes speed
 * from minute to minute), and the medians are reported. GB/s are 10^9 bytes of session
 * (uncompressed size) per second. Files are removed at the end.
 *   session-bench [--model v4-flash|v4-pro|tiny] [--tokens N] [--dir DIR] [--threads N]
 *                 [--backend cpu|cuda] [--cache fp8|bf16] [--zstd-level L] [--no-zstd] [--rounds N]
 *                 [--no-check] [--keep] [--trace FILE] [--variant SPEC]... [--json] [--help]
 * --no-check skips the round-trip comparison (it holds a third copy of the session in memory);
 * --keep leaves the uncompressed session file in DIR (for `hybridctx verify`); --json prints the
 * results as one JSON object on stdout (the text then goes to stderr, as progress).
 * --trace FILE: every load appends its timing breakdown to FILE (one JSON object per line: the
 * library's HYBRIDCTX_SESSION_TRACE, lib/util/trace.h) and the tool prints where its time went.
 * --variant SPEC: each round also loads the uncompressed session with the stream knobs SPEC (the
 * library's HYBRIDCTX_SESSION_IO, e.g. "eager=0,read_bufs=4" or "read_threads=4"), cold, right
 * after the default load: paired comparisons on the same disk (docs/perf/NEXT-cuda-load.md). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include "cli.h"
#include "hybridctx.h"
#include "hybridctx_experimental.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* CPU seconds (user + system) of this process so far: the work a step did, on a shared machine. */
static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_sec +
           1e-6 * (double)ru.ru_stime.tv_usec;
}

static void die(const char *what, hc_status st, hc_ctx *c)
{
    fprintf(stderr, "session-bench: %s: %s%s%s\n", what, hc_strerror(st), c ? ": " : "", c ? hc_ctx_last_error(c) : "");
    exit(1);
}

/* Drop a file's pages from the page cache so that the next read comes from the disk. */
static void drop_cache(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) return;
    fdatasync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
}

/* dd-like: write n bytes (a multiple of 4096, as sessions are) in 8 MiB blocks and fsync, through
 * the page cache or with O_DIRECT (an aligned buffer). Returns the seconds. */
static double raw_write(const char *path, uint64_t n, int direct)
{
    size_t bs = 8u << 20;
    void *b = NULL;
    if (posix_memalign(&b, 4096, bs)) exit(1);
    uint8_t *buf = b;
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < bs; i += 8) { /* incompressible, like the codes of a cache */
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        memcpy(buf + i, &x, 8);
    }
    unlink(path);
    double t0 = now_s();
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | (direct ? O_DIRECT : 0), 0644);
    if (fd < 0) { perror(path); exit(1); }
    for (uint64_t off = 0; off < n;) {
        size_t k = n - off < bs ? (size_t)(n - off) : bs;
        ssize_t w = pwrite(fd, buf, k, (off_t)off);
        if (w <= 0) { perror(direct ? "write (O_DIRECT)" : "write"); exit(1); }
        off += (uint64_t)w;
    }
    if (fsync(fd) || close(fd)) { perror("fsync"); exit(1); }
    double s = now_s() - t0;
    free(buf);
    return s;
}

static uint64_t file_size(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return n > 0 ? (uint64_t)n : 0;
}

/* One reader of raw_read: the next 8 MiB block until the end of the file. */
typedef struct raw_reader {
    int fd;
    uint64_t size, next;
    pthread_mutex_t lock;
} raw_reader;

static void *raw_read_blocks(void *arg)
{
    raw_reader *rr = arg;
    size_t bs = 8u << 20;
    void *buf = NULL;
    if (posix_memalign(&buf, 4096, bs)) exit(1);
    for (;;) {
        pthread_mutex_lock(&rr->lock);
        uint64_t off = rr->next;
        rr->next += bs;
        pthread_mutex_unlock(&rr->lock);
        if (off >= rr->size) break;
        ssize_t r = pread(rr->fd, buf, bs, (off_t)off);
        if (r < 0) { perror("read"); exit(1); }
    }
    free(buf);
    return NULL;
}

/* Read a file in 8 MiB blocks after dropping its pages (cold), buffered or with O_DIRECT, one
 * block at a time or (threads > 1) that many blocks in flight. Returns the seconds. */
static double raw_read(const char *path, int direct, int threads)
{
    raw_reader rr = {.fd = -1, .size = file_size(path), .next = 0};
    pthread_mutex_init(&rr.lock, NULL);
    drop_cache(path);
    double t0 = now_s();
    rr.fd = open(path, O_RDONLY | (direct ? O_DIRECT : 0));
    if (rr.fd < 0) { perror(path); exit(1); }
    posix_fadvise(rr.fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    pthread_t th[8];
    int n = threads < 1 ? 1 : threads > 8 ? 8 : threads;
    for (int i = 1; i < n; i++)
        if (pthread_create(&th[i], NULL, raw_read_blocks, &rr)) { perror("pthread_create"); exit(1); }
    raw_read_blocks(&rr);
    for (int i = 1; i < n; i++) pthread_join(th[i], NULL);
    close(rr.fd);
    double s = now_s() - t0;
    pthread_mutex_destroy(&rr.lock);
    return s;
}

static double dmin(double a, double b) { return a < b ? a : b; }

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of n values (the mean of the middle two for even n). */
static double median(const double *v, int n)
{
    double t[64];
    memcpy(t, v, sizeof *v * (size_t)n);
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

/* A digest of a context's state: its session bytes between superblock and footer (sections and
 * TOC do not depend on when or by whom the session was saved). */
static uint64_t digest(hc_ctx *c, uint8_t **buf, uint64_t *cap)
{
    uint64_t n = 0;
    hc_status st = hc_ctx_save_size(c, NULL, &n);
    if (st) die("save size", st, c);
    if (n > *cap) {
        free(*buf);
        *buf = malloc(n);
        *cap = n;
        if (!*buf) { fprintf(stderr, "session-bench: out of memory for the check\n"); exit(1); }
    }
    if ((st = hc_ctx_save_buffer(c, *buf, *cap, NULL, &n))) die("save to a buffer", st, c);
    uint64_t h = 1469598103934665603ull;
    for (uint64_t i = 4096; i + 4096 < n; i++) h = (h ^ (*buf)[i]) * 1099511628211ull;
    return h;
}

/* ---- --trace: the library's breakdown of a load (one JSON line, lib/util/trace.c) ---- */

/* The number after "key": inside the object that starts at obj (0 when absent). */
static double jget(const char *obj, const char *key)
{
    if (!obj) return 0;
    const char *end = strchr(obj, '}');
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    const char *p = strstr(obj, pat);
    return p && (!end || p < end) ? strtod(p + strlen(pat), NULL) : 0;
}

/* The last line of a file (malloc'd), or NULL. */
static char *last_line(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *line = NULL, *keep = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        free(keep);
        keep = strdup(line);
    }
    free(line);
    fclose(f);
    return keep;
}

/* Where the last traced load's time went: the phases of the calling thread, the disk's busy time
 * and the gaps between reads, the I/O threads' and workers' time. */
static void print_trace(FILE *out, const char *path, const char *name)
{
    char *j = last_line(path);
    if (!j || !strstr(j, "\"op\": \"load\"")) {
        fprintf(out, "    trace: no record in %s\n", path);
        free(j);
        return;
    }
    const char *S = strstr(j, "\"s\": {"), *N = strstr(j, "\"n\": {"), *B = strstr(j, "\"bytes\": {");
    double tot = jget(S, "total"), stream = jget(S, "stream"), busy = jget(S, "disk_busy");
    /* the reads' span from the unit timeline: first start, last end */
    double first = -1, last = 0;
    const char *u = strstr(j, "\"units_ms\": [");
    for (const char *p = u ? strchr(u, '[') + 1 : NULL; p && (p = strchr(p, '['));) {
        double v[6] = {0};
        char *q = (char *)p + 1;
        for (int k = 0; k < 6; k++) v[k] = strtod(q, &q), q += *q == ',' ? 1 : 0;
        if (v[1] > 0 && (first < 0 || v[1] < first)) first = v[1];
        if (v[2] > last) last = v[2];
        p = strchr(p, ']');
    }
    first *= 1e-3, last *= 1e-3;
    double io_read = jget(S, "io_read"), rb = jget(B, "io_read"), nr = jget(N, "io_read");
    fprintf(out, "    trace %s: %.3f s = validation %.3f + until the first read %.3f + reading %.3f + after the last read %.3f\n",
            name, tot, jget(S, "open"), first > 0 ? first - jget(S, "open") : 0, first > 0 ? last - first : 0,
            first > 0 ? tot - last : 0);
    if (first > 0)
        fprintf(out, "      disk: a read in progress %.3f s of the %.3f s reading span (%.0f%%), two or more %.3f s; idle gaps %.3f s;"
                     " %.0f reads of %.1f MB, %.2f GB/s while busy, %.2f reads in progress on average\n",
                busy, last - first, 100.0 * busy / (last - first > 0 ? last - first : 1), jget(S, "disk_busy2"),
                last - first - busy, nr, nr > 0 ? rb / nr / 1e6 : 0, busy > 0 ? rb / busy / 1e9 : 0,
                busy > 0 ? io_read / busy : 0);
    /* how the disk was read: O_DIRECT or not (a silent fallback to the page cache), the layout */
    static const char *const cuts[] = {"overlapping units of whole chunks", "units of whole chunks", "the raw read's grid"};
    int cut = (int)jget(j, "cut");
    fprintf(out, "      reads: %.0f O_DIRECT (%.3f GB), %.0f through the page cache (%.3f GB), %.0f fallbacks to the page cache; "
                 "%.3f GB read for a %.3f GB file; %s, %.1f MiB; carried %.1f MB in %.3f s\n",
            jget(N, "io_direct"), jget(B, "io_direct") / 1e9, jget(N, "io_buffered"), jget(B, "io_buffered") / 1e9,
            jget(N, "io_fallback"), rb / 1e9, jget(j, "session_bytes") / 1e9, cut >= 0 && cut <= 2 ? cuts[cut] : "?",
            jget(j, "unit_bytes") / 1048576.0, jget(B, "carry") / 1e6, jget(S, "carry"));
    double wr = jget(S, "wait_read"), wc = jget(S, "wait_check"), ap = jget(S, "apply"), ba = jget(S, "buf_alloc"),
           bf = jget(S, "buf_free");
    fprintf(out, "      calling thread, stream %.3f s: waited for reads %.3f (%.0f times), for checks %.3f; applied %.3f "
                 "(upload_async %.3f x %.0f, uploads %.3f x %.0f, shadow and blocks at the first piece %.3f); "
                 "buffers: alloc %.3f x %.0f (%.0f MB), free %.3f; carry %.3f; other %.3f\n",
            stream, wr, jget(N, "wait_read"), wc, ap, jget(S, "upload_async"), jget(N, "upload_async"), jget(S, "upload"),
            jget(N, "upload"), jget(S, "prepare"), ba, jget(N, "buf_alloc"), jget(B, "buf_alloc") / 1e6, bf, jget(S, "carry"),
            stream - wr - wc - ap - ba - bf - jget(S, "carry"));
    fprintf(out, "      setup %.3f (shadow %.3f, blocks %.3f x %.0f, page tables %.3f x %.0f: wherever they ran); after: "
                 "history %.3f, commit %.3f\n",
            jget(S, "setup"), jget(S, "shadow"), jget(S, "block_alloc"), jget(N, "block_alloc"), jget(S, "page_sync"),
            jget(N, "page_sync"), jget(S, "hist"), jget(S, "commit"));
    fprintf(out, "      I/O threads (%.0f, %.0f buffers, eager %.0f): in pread %.3f, waiting for copies out of the buffer %.3f, "
                 "for the populate stage %.3f, idle %.3f; workers (%.0f): work %.3f, waiting for buffers %.3f; populate %.3f\n",
            jget(j, "read_threads"), jget(j, "read_bufs"), jget(j, "eager"), io_read, jget(S, "io_bufwait"),
            jget(S, "io_prepwait"), jget(j, "read_threads") * stream - io_read - jget(S, "io_bufwait") - jget(S, "io_prepwait"),
            jget(j, "workers"), jget(S, "work"), jget(S, "work_bufwait"), jget(S, "populate"));
    free(j);
}

static const char usage[] =
    "usage: session-bench [--model v4-flash|v4-pro|tiny] [--tokens N] [--dir DIR] [--threads N]\n"
    "                     [--backend cpu|cuda] [--cache fp8|bf16] [--zstd-level L] [--no-zstd]\n"
    "                     [--rounds N] [--no-check] [--keep] [--trace FILE] [--variant SPEC]... [--json]\n"
    "\n"
    "Save and load speed of a large session (geometry-only model, context filled with random valid\n"
    "state) next to the raw speed of the disk (the fastest of buffered and O_DIRECT transfers of the\n"
    "same size, cold; reads also with 4 O_DIRECT blocks in flight), in DIR. GB/s are 10^9 bytes of\n"
    "session per second.\n"
    "\n"
    "  --model M           geometry: v4-flash (default), v4-pro or tiny\n"
    "  --tokens N          context length, 0..16777216 (default 1048576)\n"
    "  --dir DIR           where the files are written (default .); they are removed at the end\n"
    "  --threads N         threads of the save and load, 0..4096; 0 = all online cores (default 0)\n"
    "  --backend B         cpu (default) or cuda\n"
    "  --cache FMT         fp8 (default) or bf16\n"
    "  --zstd-level L      level of the compressed run, 1..19 (default 1)\n"
    "  --no-zstd           no compressed run\n"
    "  --rounds N          run everything N times, interleaved, and report medians, 1..51 (default 1)\n"
    "  --no-check          skip the round-trip comparison (it holds a third copy in memory)\n"
    "  --keep              leave the uncompressed session in DIR/session-bench.hcs\n"
    "  --trace FILE        every load appends its timing breakdown to FILE (JSON lines) and the\n"
    "                      tool prints where the time went (HYBRIDCTX_SESSION_TRACE)\n"
    "  --variant SPEC      each round also loads the uncompressed session with these stream knobs,\n"
    "                      e.g. eager=0,read_bufs=4 or read_threads=4 (HYBRIDCTX_SESSION_IO; up to 4)\n"
    "  --json              the results as one JSON object on stdout (the text goes to stderr)\n"
    "  -h, --help          this text\n";

/* The results of one save + load round. */
typedef struct {
    char name[32];
    double save_s, save_cpu_s, load_s, load_cpu_s;
    uint64_t file_bytes;
    int same; /* -1: not checked */
} round_result;

/* The raw transfers of one round: write and read, buffered [0] and O_DIRECT [1]; reads also
 * O_DIRECT with RAW_QD blocks in flight [2]. */
#define RAW_QD 4
typedef struct {
    double write_s[2], read_s[3];
} raw_result;

static double read_best(const raw_result *r) { return dmin(r->read_s[0], dmin(r->read_s[1], r->read_s[2])); }

#define MAX_ROUNDS 51
#define MAX_VARIANTS 4

/* One cold load of path into d (reset first), timed; with knobs (HYBRIDCTX_SESSION_IO) when not
 * NULL. The seconds into *load_s, CPU seconds into *cpu. */
static void timed_load(hc_ctx *d, const char *path, const char *knobs, double *load_s, double *cpu)
{
    drop_cache(path);
    hc_status st = hc_ctx_reset(d);
    if (st) die("reset", st, d);
    char *was = getenv("HYBRIDCTX_SESSION_IO") ? strdup(getenv("HYBRIDCTX_SESSION_IO")) : NULL;
    if (knobs) setenv("HYBRIDCTX_SESSION_IO", knobs, 1);
    double t0 = now_s(), c0 = cpu_s();
    st = hc_ctx_load(d, path);
    *load_s = now_s() - t0, *cpu = cpu_s() - c0;
    if (knobs && was) setenv("HYBRIDCTX_SESSION_IO", was, 1); /* back to the knobs of the default loads */
    else if (knobs) unsetenv("HYBRIDCTX_SESSION_IO");
    free(was);
    if (st) die("load", st, d);
}

int main(int argc, char **argv)
{
    static const char *const models[] = {"v4-flash", "v4-pro", "tiny", NULL};
    static const char *const caches[] = {"fp8", "bf16", NULL};
    static const char *const backends[] = {"cpu", "cuda", NULL};
    static const struct option opts[] = {
        {"model", required_argument, NULL, 'm'},      {"tokens", required_argument, NULL, 't'},
        {"dir", required_argument, NULL, 'D'},        {"threads", required_argument, NULL, 'j'},
        {"cache", required_argument, NULL, 'C'},      {"backend", required_argument, NULL, 'b'},
        {"zstd-level", required_argument, NULL, 'z'}, {"no-check", no_argument, NULL, 'n'},
        {"keep", no_argument, NULL, 'k'},             {"json", no_argument, NULL, 'J'},
        {"no-zstd", no_argument, NULL, 'Z'},          {"rounds", required_argument, NULL, 'r'},
        {"trace", required_argument, NULL, 'T'},      {"variant", required_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},             {NULL, 0, NULL, 0},
    };
    const char *trace = NULL, *variants[MAX_VARIANTS];
    int n_var = 0;
    const char *dir = ".";
    int64_t tokens = 1 << 20;
    int model_i = 0, cache_i = 0, backend_i = 0, threads = 0, level = 1, check = 1, keep = 0, json = 0, o, bad = 0;
    int zstd = 1, rounds = 1;
    while (!bad && (o = cli_getopt("session-bench", argc, argv, "h", opts)) != -1) {
        switch (o) {
        case 'm': bad = (model_i = cli_choice("session-bench", "--model", optarg, models)) < 0; break;
        case 't': bad = cli_int64("session-bench", "--tokens", optarg, 0, 1 << 24, &tokens); break;
        case 'D': dir = optarg; break;
        case 'j': bad = cli_int("session-bench", "--threads", optarg, 0, 4096, &threads); break;
        case 'C': bad = (cache_i = cli_choice("session-bench", "--cache", optarg, caches)) < 0; break;
        case 'b': bad = (backend_i = cli_choice("session-bench", "--backend", optarg, backends)) < 0; break;
        case 'z': bad = cli_int("session-bench", "--zstd-level", optarg, 1, 19, &level); break;
        case 'n': check = 0; break;
        case 'Z': zstd = 0; break;
        case 'r': bad = cli_int("session-bench", "--rounds", optarg, 1, MAX_ROUNDS, &rounds); break;
        case 'k': keep = 1; break;
        case 'J': json = 1; break;
        case 'T': trace = optarg; break;
        case 'V':
            if (n_var == MAX_VARIANTS || !*optarg || strlen(optarg) > 200) {
                fprintf(stderr, "session-bench: --variant: at most %d, each 1 to 200 characters\n", MAX_VARIANTS);
                bad = 1;
            } else {
                variants[n_var++] = optarg;
            }
            break;
        case 'h': fputs(usage, stdout); return 0;
        default: bad = 1;
        }
    }
    if (!bad && optind < argc) cli_unexpected("session-bench", argv[optind]), bad = 1;
    if (bad) {
        fprintf(stderr, "%.*s\n(session-bench --help for details)\n", (int)(strstr(usage, "\n\n") - usage), usage);
        return CLI_EXIT_USAGE;
    }
    const char *model = models[model_i], *cache = caches[cache_i], *backend = backends[backend_i];
    FILE *txt = json ? stderr : stdout;
    if (trace) { /* a fresh file: the library appends a line per load */
        FILE *tf = fopen(trace, "w");
        if (!tf) { perror(trace); return 1; }
        fclose(tf);
        setenv("HYBRIDCTX_SESSION_TRACE", trace, 1);
    }
    if (getenv("HYBRIDCTX_SESSION_IO")) fprintf(txt, "session-bench: HYBRIDCTX_SESSION_IO=%s\n", getenv("HYBRIDCTX_SESSION_IO"));

    hc_model_params mp;
    hc_model_params_init(&mp, sizeof mp);
    mp.flags = HC_MODEL_GEOMETRY_ONLY;
    hc_model *m = NULL;
    hc_status st = hc_model_create_random(model, 1, &mp, &m);
    if (st) die("model", st, NULL);
    hc_ctx_params cp;
    hc_ctx_params_init(&cp, sizeof cp);
    cp.backend = backend_i == 1 ? HC_BACKEND_CUDA : HC_BACKEND_CPU;
    cp.n_threads = threads;
    cp.cache_format = cache_i == 1 ? HC_CACHE_BF16 : HC_CACHE_FP8;
    cp.max_tokens = tokens > 0 ? tokens : 1;
    hc_ctx *c = NULL, *d = NULL;
    if ((st = hc_ctx_create(m, &cp, &c)) || (st = hc_ctx_create(m, &cp, &d))) die("context", st, NULL);

    double t0 = now_s(), c0 = cpu_s();
    if ((st = hc_x_ctx_fill_random(c, tokens, 42))) die("fill", st, c);
    double t_fill = now_s() - t0, c_fill = cpu_s() - c0;
    uint32_t *ids = malloc(sizeof(uint32_t) * (size_t)(tokens ? tokens : 1)); /* token ids as metadata */
    if (!ids) { fprintf(stderr, "session-bench: out of memory\n"); return 1; }
    for (int64_t i = 0; i < tokens; i++) ids[i] = (uint32_t)(i * 2654435761u % 129280u);
    if ((st = hc_ctx_set_metadata(c, ids, sizeof(uint32_t) * (uint64_t)tokens))) die("metadata", st, c);
    free(ids);
    uint64_t bytes = 0, cache_bytes = hc_ctx_memory_bytes(c);
    if ((st = hc_ctx_save_size(c, NULL, &bytes))) die("save size", st, c);

    char raw[4096], path[4096], kept[4200] = "";
    snprintf(raw, sizeof raw, "%s/session-bench-raw.%ld", dir, (long)getpid());
    snprintf(path, sizeof path, "%s/session-bench.%ld.hcs", dir, (long)getpid());
    double la[3] = {0, 0, 0};
    getloadavg(la, 3);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    fprintf(txt, "session-bench: %s geometry, %lld tokens, %s cache, %s backend, %d threads (%ld cores online, load "
                 "average %.1f), %s\n", model, (long long)tokens, cache, backend, threads, cores, la[0], dir);
    fprintf(txt, "  session      %.3f GB (%llu bytes: cache %.3f GB, token ids %.3f GB), filled in %.2f s "
                 "(%.2f s CPU)\n",
            (double)bytes / 1e9, (unsigned long long)bytes, (double)cache_bytes / 1e9, 4.0 * (double)tokens / 1e9,
            t_fill, c_fill);
    fflush(txt);

    uint8_t *buf = NULL;
    uint64_t cap = 0, want = check ? digest(c, &buf, &cap) : 0;
    int n_modes = zstd ? 2 : 1;
    static raw_result raws[MAX_ROUNDS];
    static round_result res[MAX_ROUNDS][2], vres[MAX_ROUNDS][MAX_VARIANTS];
    int failed = 0, done = 0;
    for (int k = 0; k < rounds && !failed; k++, done++) {
        raw_result *rw = &raws[k];
        for (int dio = 0; dio < 2; dio++) rw->write_s[dio] = raw_write(raw, bytes, dio);
        for (int m = 0; m < 3; m++) rw->read_s[m] = raw_read(raw, m > 0, m == 2 ? RAW_QD : 1);
        unlink(raw);
        if (rounds > 1) fprintf(txt, "  round %d\n", k + 1);
        fprintf(txt, "  raw write    %6.2f GB/s  (%.2f s, 8 MiB blocks + fsync; buffered %.2f GB/s, O_DIRECT %.2f GB/s)\n",
                (double)bytes / 1e9 / dmin(rw->write_s[0], rw->write_s[1]), dmin(rw->write_s[0], rw->write_s[1]),
                (double)bytes / 1e9 / rw->write_s[0], (double)bytes / 1e9 / rw->write_s[1]);
        fprintf(txt, "  raw read     %6.2f GB/s  (%.2f s, cold, 8 MiB blocks; buffered %.2f GB/s, O_DIRECT %.2f GB/s, "
                     "x%d %.2f GB/s)\n",
                (double)bytes / 1e9 / read_best(rw), read_best(rw), (double)bytes / 1e9 / rw->read_s[0],
                (double)bytes / 1e9 / rw->read_s[1], RAW_QD, (double)bytes / 1e9 / rw->read_s[2]);
        fflush(txt);
        for (int z = 0; z < n_modes && !failed; z++) {
            round_result *r = &res[k][z];
            hc_save_params sp;
            hc_save_params_init(&sp, sizeof sp);
            sp.n_threads = threads;
            sp.compression = z ? HC_COMPRESS_ZSTD : HC_COMPRESS_NONE;
            sp.zstd_level = level;
            t0 = now_s(), c0 = cpu_s();
            if ((st = hc_ctx_save(c, path, &sp))) die("save", st, c);
            r->save_s = now_s() - t0, r->save_cpu_s = cpu_s() - c0;
            r->file_bytes = file_size(path);
            timed_load(d, path, NULL, &r->load_s, &r->load_cpu_s);
            snprintf(r->name, sizeof r->name, z ? "zstd-%d" : "none", level);
            /* against this round's disk: the fastest raw transfer of each direction */
            fprintf(txt, "  save %-7s %6.2f GB/s  (%.2f s, %.2f s CPU; file %.3f GB, %.3fx; %.0f%% of raw write)\n",
                    r->name, (double)bytes / 1e9 / r->save_s, r->save_s, r->save_cpu_s, (double)r->file_bytes / 1e9,
                    (double)bytes / (double)r->file_bytes, 100.0 * dmin(rw->write_s[0], rw->write_s[1]) / r->save_s);
            fprintf(txt, "  load %-7s %6.2f GB/s  (%.2f s, %.2f s CPU, cold; %.0f%% of raw read)", r->name,
                    (double)bytes / 1e9 / r->load_s, r->load_s, r->load_cpu_s,
                    100.0 * read_best(rw) / r->load_s);
            r->same = -1;
            if (check) {
                r->same = digest(d, &buf, &cap) == want && hc_ctx_n_tokens(d) == tokens;
                fprintf(txt, ", round trip %s", r->same ? "identical" : "DIFFERENT");
                failed = !r->same;
            }
            fprintf(txt, "\n");
            if (trace) print_trace(txt, trace, r->name);
            for (int v = 0; v < n_var && !z && !failed; v++) { /* the same file, other stream knobs */
                round_result *q = &vres[k][v];
                timed_load(d, path, variants[v], &q->load_s, &q->load_cpu_s);
                snprintf(q->name, sizeof q->name, "[%d]", v + 1);
                fprintf(txt, "  load %-7s %6.2f GB/s  (%.2f s, %.2f s CPU, cold; %.0f%% of raw read; %s)", q->name,
                        (double)bytes / 1e9 / q->load_s, q->load_s, q->load_cpu_s, 100.0 * read_best(rw) / q->load_s,
                        variants[v]);
                q->same = -1;
                if (check) {
                    q->same = digest(d, &buf, &cap) == want && hc_ctx_n_tokens(d) == tokens;
                    fprintf(txt, ", round trip %s", q->same ? "identical" : "DIFFERENT");
                    failed = !q->same;
                }
                fprintf(txt, "\n");
                if (trace) print_trace(txt, trace, q->name);
            }
            if (keep && !z && !failed && k + 1 == rounds) {
                snprintf(kept, sizeof kept, "%s/session-bench.hcs", dir);
                if (rename(path, kept) == 0) fprintf(txt, "  kept         %s\n", kept);
                else kept[0] = 0;
            }
            unlink(path);
            fflush(txt);
        }
    }
    /* medians over the rounds; the disk's speed is the faster way of each round */
    double v[MAX_ROUNDS], w_s, r_s, raw_w[2], raw_r[3];
    for (int m = 0; m < 3; m++) {
        if (m < 2) {
            for (int k = 0; k < done; k++) v[k] = raws[k].write_s[m];
            raw_w[m] = median(v, done);
        }
        for (int k = 0; k < done; k++) v[k] = raws[k].read_s[m];
        raw_r[m] = median(v, done);
    }
    for (int k = 0; k < done; k++) v[k] = dmin(raws[k].write_s[0], raws[k].write_s[1]);
    w_s = median(v, done);
    for (int k = 0; k < done; k++) v[k] = read_best(&raws[k]);
    r_s = median(v, done);
    round_result med[2];
    int ran = 0; /* compression modes reported */
    if (failed) { /* a failed round check ends the rounds: report that round as it went */
        for (int z = 0; z < n_modes && (!z || res[done - 1][z - 1].same); z++) med[z] = res[done - 1][z], ran = z + 1;
    } else {
        for (int z = 0; z < n_modes; z++, ran++) {
            med[z] = res[0][z];
            for (int k = 0; k < done; k++) v[k] = res[k][z].save_s;
            med[z].save_s = median(v, done);
            for (int k = 0; k < done; k++) v[k] = res[k][z].save_cpu_s;
            med[z].save_cpu_s = median(v, done);
            for (int k = 0; k < done; k++) v[k] = res[k][z].load_s;
            med[z].load_s = median(v, done);
            for (int k = 0; k < done; k++) v[k] = res[k][z].load_cpu_s;
            med[z].load_cpu_s = median(v, done);
            uint64_t fb = 0; /* zstd sizes vary a little with the data's order of chunks: the largest */
            for (int k = 0; k < done; k++) fb = res[k][z].file_bytes > fb ? res[k][z].file_bytes : fb;
            med[z].file_bytes = fb;
        }
    }
    if (rounds > 1 && !failed) {
        fprintf(txt, "  median of %d rounds\n", rounds);
        fprintf(txt, "  raw write    %6.2f GB/s  (%.2f s; buffered %.2f GB/s, O_DIRECT %.2f GB/s)\n", (double)bytes / 1e9 / w_s,
                w_s, (double)bytes / 1e9 / raw_w[0], (double)bytes / 1e9 / raw_w[1]);
        fprintf(txt, "  raw read     %6.2f GB/s  (%.2f s; buffered %.2f GB/s, O_DIRECT %.2f GB/s, x%d %.2f GB/s)\n",
                (double)bytes / 1e9 / r_s, r_s, (double)bytes / 1e9 / raw_r[0], (double)bytes / 1e9 / raw_r[1], RAW_QD,
                (double)bytes / 1e9 / raw_r[2]);
        for (int z = 0; z < ran; z++) {
            fprintf(txt, "  save %-7s %6.2f GB/s  (%.2f s, %.2f s CPU; %.0f%% of raw write)\n", med[z].name,
                    (double)bytes / 1e9 / med[z].save_s, med[z].save_s, med[z].save_cpu_s, 100.0 * w_s / med[z].save_s);
            fprintf(txt, "  load %-7s %6.2f GB/s  (%.2f s, %.2f s CPU; %.0f%% of raw read)\n", med[z].name,
                    (double)bytes / 1e9 / med[z].load_s, med[z].load_s, med[z].load_cpu_s, 100.0 * r_s / med[z].load_s);
        }
    }
    double vmed[MAX_VARIANTS][2];
    for (int q = 0; q < n_var && !failed; q++) {
        for (int k = 0; k < done; k++) v[k] = vres[k][q].load_s;
        vmed[q][0] = median(v, done);
        for (int k = 0; k < done; k++) v[k] = vres[k][q].load_cpu_s;
        vmed[q][1] = median(v, done);
        if (rounds > 1)
            fprintf(txt, "  load [%d]     %6.2f GB/s  (%.2f s, %.2f s CPU; %.0f%% of raw read; %s)\n", q + 1,
                    (double)bytes / 1e9 / vmed[q][0], vmed[q][0], vmed[q][1], 100.0 * r_s / vmed[q][0], variants[q]);
    }
    if (json) {
        printf("{\n  \"bench\": \"session-bench\",\n  \"version\": \"%s\",\n  \"model\": \"%s\",\n  \"tokens\": %lld,\n"
               "  \"cache\": \"%s\",\n  \"backend\": \"%s\",\n  \"threads\": %d,\n  \"cores_online\": %ld,\n"
               "  \"load_average\": ", hc_version_string(), model, (long long)tokens, cache, backend, threads, cores);
        cli_json_number(stdout, la[0]);
        printf(",\n  \"dir\": ");
        cli_json_string(stdout, dir);
        printf(",\n  \"session_bytes\": %llu,\n  \"cache_bytes\": %llu,\n  \"fill_s\": ", (unsigned long long)bytes,
               (unsigned long long)cache_bytes);
        cli_json_number(stdout, t_fill);
        printf(",\n  \"fill_cpu_s\": ");
        cli_json_number(stdout, c_fill);
        printf(",\n  \"raw_write_s\": ");
        cli_json_number(stdout, w_s);
        printf(",\n  \"raw_read_s\": ");
        cli_json_number(stdout, r_s);
        static const char *const raw_keys[5] = {"raw_write_buffered_s", "raw_write_direct_s", "raw_read_buffered_s",
                                                "raw_read_direct_s", "raw_read_direct_qd4_s"};
        for (int i = 0; i < 5; i++) {
            printf(",\n  \"%s\": ", raw_keys[i]);
            cli_json_number(stdout, i < 2 ? raw_w[i] : raw_r[i - 2]);
        }
        printf(",\n  \"rounds\": %d,\n  \"runs\": [", done);
        for (int z = 0; z < ran; z++) { /* medians over the rounds */
            const round_result *r = &med[z];
            printf("%s\n    {\"compression\": \"%s\", \"save_s\": ", z ? "," : "", r->name);
            cli_json_number(stdout, r->save_s);
            printf(", \"save_cpu_s\": ");
            cli_json_number(stdout, r->save_cpu_s);
            printf(", \"file_bytes\": %llu, \"load_s\": ", (unsigned long long)r->file_bytes);
            cli_json_number(stdout, r->load_s);
            printf(", \"load_cpu_s\": ");
            cli_json_number(stdout, r->load_cpu_s);
            printf(", \"round_trip\": %s}", r->same < 0 ? "null" : r->same ? "\"identical\"" : "\"different\"");
        }
        printf("\n  ],\n  \"variants\": [");
        for (int q = 0; q < n_var && !failed; q++) { /* medians over the rounds */
            printf("%s\n    {\"knobs\": ", q ? "," : "");
            cli_json_string(stdout, variants[q]);
            printf(", \"load_s\": ");
            cli_json_number(stdout, vmed[q][0]);
            printf(", \"load_cpu_s\": ");
            cli_json_number(stdout, vmed[q][1]);
            printf("}");
        }
        printf("\n  ],\n  \"trace\": ");
        if (trace) cli_json_string(stdout, trace);
        else printf("null");
        printf(",\n  \"kept\": ");
        if (kept[0]) cli_json_string(stdout, kept);
        else printf("null");
        printf("\n}\n");
    }
    free(buf);
    hc_ctx_free(c), hc_ctx_free(d);
    hc_model_free(m);
    return failed ? 1 : 0;
}
