/* session-bench - save and load speed of a large session next to the raw speed of the disk.
 * Builds a context of the v4-flash geometry (geometry-only model) filled with random valid state
 * by hc_x_ctx_fill_random(), then times, in one directory:
 *   raw write   the session's byte count written in 8 MiB blocks, then fsync (like dd conv=fsync)
 *   raw read    the same file read back after its pages were dropped from the page cache
 *   save        hc_ctx_save() (temporary, fsync, rename, directory fsync), without and with zstd
 *   load        hc_ctx_load() of that file after its pages were dropped, into a second context
 * GB/s are 10^9 bytes of session (uncompressed size) per second. Files are removed at the end.
 *   session-bench [--model v4-flash|v4-pro|tiny] [--tokens N] [--dir DIR] [--threads N]
 *                 [--cache fp8|bf16] [--zstd-level L] [--no-check] [--keep]
 * --no-check skips the round-trip comparison (it holds a third copy of the session in memory);
 * --keep leaves the uncompressed session file in DIR (for `hybridctx verify`). */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
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

/* dd-like: write n bytes in 8 MiB blocks and fsync; then read them back cold. */
static void raw_io(const char *path, uint64_t n, double *w_s, double *r_s)
{
    size_t bs = 8u << 20;
    uint8_t *buf = malloc(bs);
    if (!buf) exit(1);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < bs; i += 8) { /* incompressible, like the codes of a cache */
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        memcpy(buf + i, &x, 8);
    }
    double t0 = now_s();
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { perror(path); exit(1); }
    for (uint64_t off = 0; off < n;) {
        size_t k = n - off < bs ? (size_t)(n - off) : bs;
        ssize_t w = pwrite(fd, buf, k, (off_t)off);
        if (w <= 0) { perror("write"); exit(1); }
        off += (uint64_t)w;
    }
    if (fsync(fd) || close(fd)) { perror("fsync"); exit(1); }
    *w_s = now_s() - t0;
    drop_cache(path);
    t0 = now_s();
    fd = open(path, O_RDONLY);
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    for (uint64_t off = 0; off < n;) {
        ssize_t r = pread(fd, buf, bs, (off_t)off);
        if (r <= 0) { perror("read"); exit(1); }
        off += (uint64_t)r;
    }
    close(fd);
    *r_s = now_s() - t0;
    free(buf);
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

int main(int argc, char **argv)
{
    const char *model = "v4-flash", *dir = ".", *cache = "fp8", *backend = "cpu";
    int64_t tokens = 1 << 20;
    int threads = 0, level = 1, check = 1, keep = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--no-check")) { check = 0; continue; }
        if (!strcmp(a, "--keep")) { keep = 1; continue; }
        if (!v) goto usage;
        if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--tokens")) tokens = atoll(v);
        else if (!strcmp(a, "--dir")) dir = v;
        else if (!strcmp(a, "--threads")) threads = atoi(v);
        else if (!strcmp(a, "--cache")) cache = v;
        else if (!strcmp(a, "--backend")) backend = v;
        else if (!strcmp(a, "--zstd-level")) level = atoi(v);
        else goto usage;
        i++;
    }
    if (tokens < 0) goto usage;

    hc_model_params mp;
    hc_model_params_init(&mp, sizeof mp);
    mp.flags = HC_MODEL_GEOMETRY_ONLY;
    hc_model *m = NULL;
    hc_status st = hc_model_create_random(model, 1, &mp, &m);
    if (st) die("model", st, NULL);
    hc_ctx_params cp;
    hc_ctx_params_init(&cp, sizeof cp);
    cp.backend = !strcmp(backend, "cuda") ? HC_BACKEND_CUDA : HC_BACKEND_CPU;
    cp.n_threads = threads;
    cp.cache_format = !strcmp(cache, "bf16") ? HC_CACHE_BF16 : HC_CACHE_FP8;
    cp.max_tokens = tokens > 0 ? tokens : 1;
    hc_ctx *c = NULL, *d = NULL;
    if ((st = hc_ctx_create(m, &cp, &c)) || (st = hc_ctx_create(m, &cp, &d))) die("context", st, NULL);

    double t0 = now_s(), c0 = cpu_s();
    if ((st = hc_x_ctx_fill_random(c, tokens, 42))) die("fill", st, c);
    double t_fill = now_s() - t0, c_fill = cpu_s() - c0;
    uint32_t *ids = malloc(sizeof(uint32_t) * (size_t)(tokens ? tokens : 1)); /* token ids as metadata */
    for (int64_t i = 0; i < tokens; i++) ids[i] = (uint32_t)(i * 2654435761u % 129280u);
    if ((st = hc_ctx_set_metadata(c, ids, sizeof(uint32_t) * (uint64_t)tokens))) die("metadata", st, c);
    free(ids);
    uint64_t bytes = 0;
    if ((st = hc_ctx_save_size(c, NULL, &bytes))) die("save size", st, c);

    char raw[4096], path[4096];
    snprintf(raw, sizeof raw, "%s/session-bench-raw.%ld", dir, (long)getpid());
    snprintf(path, sizeof path, "%s/session-bench.%ld.hcs", dir, (long)getpid());
    double la[3] = {0, 0, 0};
    getloadavg(la, 3);
    printf("session-bench: %s geometry, %lld tokens, %s cache, %s backend, %d threads (%ld cores online, load "
           "average %.1f), %s\n", model, (long long)tokens, cache, backend, threads, sysconf(_SC_NPROCESSORS_ONLN),
           la[0], dir);
    printf("  session      %.3f GB (%llu bytes: cache %.3f GB, token ids %.3f GB), filled in %.2f s (%.2f s CPU)\n",
           (double)bytes / 1e9, (unsigned long long)bytes, (double)hc_ctx_memory_bytes(c) / 1e9,
           4.0 * (double)tokens / 1e9, t_fill, c_fill);

    double w_s, r_s;
    raw_io(raw, bytes, &w_s, &r_s);
    unlink(raw);
    printf("  raw write    %6.2f GB/s  (%.2f s, 8 MiB blocks + fsync)\n", (double)bytes / 1e9 / w_s, w_s);
    printf("  raw read     %6.2f GB/s  (%.2f s, cold)\n", (double)bytes / 1e9 / r_s, r_s);

    uint8_t *buf = NULL;
    uint64_t cap = 0, want = check ? digest(c, &buf, &cap) : 0;
    for (int z = 0; z < 2; z++) {
        hc_save_params sp;
        hc_save_params_init(&sp, sizeof sp);
        sp.n_threads = threads;
        sp.compression = z ? HC_COMPRESS_ZSTD : HC_COMPRESS_NONE;
        sp.zstd_level = level;
        t0 = now_s(), c0 = cpu_s();
        if ((st = hc_ctx_save(c, path, &sp))) die("save", st, c);
        double ts = now_s() - t0, cs = cpu_s() - c0;
        uint64_t fsz = file_size(path);
        drop_cache(path);
        if ((st = hc_ctx_reset(d))) die("reset", st, d);
        t0 = now_s(), c0 = cpu_s();
        if ((st = hc_ctx_load(d, path))) die("load", st, d);
        double tl = now_s() - t0, cl = cpu_s() - c0;
        char name[32];
        snprintf(name, sizeof name, z ? "zstd-%d" : "none", level);
        printf("  save %-7s %6.2f GB/s  (%.2f s, %.2f s CPU; file %.3f GB, %.3fx)\n", name, (double)bytes / 1e9 / ts, ts,
               cs, (double)fsz / 1e9, (double)bytes / (double)fsz);
        printf("  load %-7s %6.2f GB/s  (%.2f s, %.2f s CPU, cold)", name, (double)bytes / 1e9 / tl, tl, cl);
        if (check) {
            int same = digest(d, &buf, &cap) == want && hc_ctx_n_tokens(d) == tokens;
            printf(", round trip %s", same ? "identical" : "DIFFERENT");
            if (!same) {
                printf("\n");
                unlink(path);
                return 1;
            }
        }
        printf("\n");
        if (keep && !z) {
            char kept[4200];
            snprintf(kept, sizeof kept, "%s/session-bench.hcs", dir);
            if (rename(path, kept) == 0) printf("  kept         %s\n", kept);
        }
        unlink(path);
    }
    free(buf);
    hc_ctx_free(c), hc_ctx_free(d);
    hc_model_free(m);
    return 0;
usage:
    fprintf(stderr, "usage: session-bench [--model v4-flash|v4-pro|tiny] [--tokens N] [--dir DIR] [--threads N] [--backend cpu|cuda]\n"
                    "                     [--cache fp8|bf16] [--zstd-level L] [--no-check] [--keep]\n");
    return 2;
}
