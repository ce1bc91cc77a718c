/* test_session_io.c - crash safety of sessions: every file operation of a save and of a load
 * failing at every step (ENOSPC, EIO, EINTR, short transfers, fsync/close/rename/directory-sync
 * failures) through the injectable I/O layer, and SIGKILL of a process in the middle of saving,
 * over and over. Afterwards the target is always the old or the new complete file, no
 * temporary is left (a killed saver's is swept by the next save), a failed call changed no
 * context, and a failed fsync is never retried. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "hybridctx.h"
#include "hybridctx_experimental.h"
#include "session/io.h"
#include "session/session.h"
#include "test_session_util.h"
#include "testutil.h"
#include "runner.h"

enum { OP_OPEN, OP_CLOSE, OP_PREAD, OP_PWRITE, OP_FSYNC, OP_FSTAT, OP_LSTAT, OP_RENAME, OP_UNLINK, N_OPS };
static const char *const op_names[N_OPS] = {"open", "close", "pread", "pwrite", "fsync", "fstat", "lstat", "rename", "unlink"};
enum { FAIL, SHORT, EINTR_ONCE, EOF_READ, NO_DIRECT };

static struct {
    int op, mode, err;
    long at;         /* the call (0-based) of op that misbehaves; -1: none */
    int every;       /* SHORT / EINTR_ONCE: every call of op */
    long count[N_OPS];
    int hit;
} F;

static void arm(int op, long at, int mode, int err)
{
    memset(&F, 0, sizeof F);
    F.op = op, F.at = at, F.mode = mode, F.err = err;
}

/* Loads read on several I/O threads: the calls are counted under a lock (which call is the
 * k-th one is then a matter of timing; every one of them must fail cleanly). */
static pthread_mutex_t F_lock = PTHREAD_MUTEX_INITIALIZER;

static int trigger_locked(int op)
{
    long k = F.count[op]++;
    if (op == F.op && F.mode == NO_DIRECT) return 0; /* decided by the caller, per descriptor */
    if (op != F.op || (!F.every && k != F.at)) return 0;
    if (F.every && F.mode == EINTR_ONCE && (k & 1)) return 0; /* every other call, so that it progresses */
    F.hit = 1;
    return 1;
}

static int trigger(int op)
{
    pthread_mutex_lock(&F_lock);
    int t = trigger_locked(op);
    pthread_mutex_unlock(&F_lock);
    return t;
}

static int f_open(const char *p, int fl, mode_t m)
{
    if (trigger(OP_OPEN)) return errno = F.err, -1;
    return hci_io_posix.open(p, fl, m);
}
static int f_close(int fd)
{
    if (trigger(OP_CLOSE)) {
        hci_io_posix.close(fd); /* the descriptor is gone either way (Linux) */
        return errno = F.err, -1;
    }
    return hci_io_posix.close(fd);
}
/* NO_DIRECT: a file system that refuses O_DIRECT transfers (EINVAL), as some do */
static int refuse_direct(int op, int fd)
{
    if (F.op != op || F.mode != NO_DIRECT || !(fcntl(fd, F_GETFL) & O_DIRECT)) return 0;
    pthread_mutex_lock(&F_lock);
    F.hit = 1;
    pthread_mutex_unlock(&F_lock);
    return 1;
}

static ssize_t f_pread(int fd, void *b, size_t n, off_t o)
{
    if (refuse_direct(OP_PREAD, fd)) return errno = EINVAL, -1;
    if (trigger(OP_PREAD)) {
        if (F.mode == FAIL) return errno = F.err, -1;
        if (F.mode == EINTR_ONCE) return errno = EINTR, -1;
        if (F.mode == EOF_READ) return 0;
        return hci_io_posix.pread(fd, b, n > 1 ? n / 2 : n, o);
    }
    return hci_io_posix.pread(fd, b, n, o);
}
static ssize_t f_pwrite(int fd, const void *b, size_t n, off_t o)
{
    if (refuse_direct(OP_PWRITE, fd)) return errno = EINVAL, -1;
    if (trigger(OP_PWRITE)) {
        if (F.mode == FAIL) return errno = F.err, -1;
        if (F.mode == EINTR_ONCE) return errno = EINTR, -1;
        return hci_io_posix.pwrite(fd, b, n > 1 ? n / 2 : n, o);
    }
    return hci_io_posix.pwrite(fd, b, n, o);
}
static int f_fsync(int fd)
{
    if (trigger(OP_FSYNC)) return errno = F.err, -1;
    return hci_io_posix.fsync(fd);
}
static int f_fstat(int fd, struct stat *st)
{
    if (trigger(OP_FSTAT)) return errno = F.err, -1;
    return hci_io_posix.fstat(fd, st);
}
static int f_lstat(const char *p, struct stat *st)
{
    if (trigger(OP_LSTAT)) return errno = F.err, -1;
    return hci_io_posix.lstat(p, st);
}
static int f_rename(const char *a, const char *b)
{
    if (trigger(OP_RENAME)) return errno = F.err, -1;
    return hci_io_posix.rename(a, b);
}
static int f_unlink(const char *p)
{
    if (trigger(OP_UNLINK)) return errno = F.err, -1;
    return hci_io_posix.unlink(p);
}
static const hci_io_ops faulty = {f_open, f_close, f_pread, f_pwrite, f_fsync, f_fstat, f_lstat, f_rename, f_unlink};

static hc_model *g_model;
static char *g_dir, *g_path;
static const char *g_argv0;
static uint8_t *g_old; /* the file at g_path before each save */
static size_t g_oldn;

static void setup(void)
{
    g_model = tsu_model(tsu_golden_json, 1, 1);
    g_dir = tu_tempdir();
    g_path = tu_join(g_dir, "s.hcs");
}

static void teardown(void)
{
    hci_io_set(NULL);
    tu_rmtree(g_dir);
    free(g_dir), free(g_path);
    hc_model_free(g_model);
}

static int count_temps(void)
{
    DIR *d = opendir(g_dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) n++;
    if (d) closedir(d);
    return n;
}

static hc_ctx *filled(int64_t n, uint64_t seed)
{
    hc_ctx *c = tsu_ctx(g_model, HC_CACHE_FP8, 0);
    ck_assert_int_eq(hc_x_ctx_fill_random(c, n, seed), HC_OK);
    return c;
}

static uint64_t file_digest(const char *path)
{
    hc_ctx *c = tsu_ctx(g_model, HC_CACHE_FP8, 0);
    ck_assert_msg(hc_ctx_load(c, path) == HC_OK, "%s", hc_ctx_last_error(c));
    uint64_t d = tsu_digest(c);
    hc_ctx_free(c);
    return d;
}

START_TEST(test_save_faults)
{
    hc_ctx *old = filled(700, 1), *c = filled(900, 2);
    uint64_t d_new = tsu_digest(c);
    static const struct { int op, err; } plan[] = {
        {OP_PWRITE, ENOSPC}, {OP_PWRITE, EIO}, {OP_OPEN, EACCES}, {OP_FSYNC, EIO}, {OP_CLOSE, EIO},
        {OP_RENAME, EXDEV}, {OP_LSTAT, EIO},
    };
    hc_save_params sp;
    hc_save_params_init(&sp, sizeof sp);
    for (size_t p = 0; p < sizeof plan / sizeof plan[0]; p++)
        for (int comp = 0; comp < 2; comp++) {
            sp.compression = comp ? HC_COMPRESS_ZSTD : HC_COMPRESS_NONE;
            int failures = 0;
            for (long k = 0;; k++) {
                hci_io_set(NULL);
                ck_assert_int_eq(hc_ctx_save(old, g_path, NULL), HC_OK);
                g_old = tu_read_file(g_path, &g_oldn);
                arm(plan[p].op, k, FAIL, plan[p].err);
                hci_io_set(&faulty);
                hc_status st = hc_ctx_save(c, g_path, &sp);
                hci_io_set(NULL);
                long fsyncs = F.count[OP_FSYNC];
                int hit = F.hit;
                if (st == HC_OK) { /* not reached, or harmless (closing the descriptor that read the old magic) */
                    ck_assert_msg(!hit || (plan[p].op == OP_CLOSE && k != 1), "%s at call %ld: ignored",
                                  op_names[plan[p].op], k);
                    ck_assert_uint_eq(file_digest(g_path), d_new);
                    ck_assert_int_eq(count_temps(), 0);
                    free(g_old);
                    if (!hit) break;
                    continue;
                }
                failures++;
                char what[96];
                snprintf(what, sizeof what, "%s failing (errno %d) at call %ld", op_names[plan[p].op], plan[p].err, k);
                /* the directory sync (its open or its fsync) comes after the rename */
                int dir_sync = (plan[p].op == OP_FSYNC && k == 1) || (plan[p].op == OP_OPEN && k == 2);
                ck_assert_msg(st == HC_ERR_IO, "%s: %s (%s)", what, hc_status_name(st), hc_ctx_last_error(c));
                ck_assert_msg(strstr(hc_ctx_last_error(c), strerror(plan[p].err)), "%s: '%s'", what, hc_ctx_last_error(c));
                ck_assert_msg(count_temps() == 0, "%s: a temporary is left", what);
                if (dir_sync) { /* after the rename: the new file is in place */
                    ck_assert_uint_eq(file_digest(g_path), d_new);
                    ck_assert_ptr_nonnull(strstr(hc_ctx_last_error(c), "new file is in place"));
                } else {
                    size_t n;
                    uint8_t *now = tu_read_file(g_path, &n);
                    ck_assert_msg(now && n == g_oldn && !memcmp(now, g_old, n), "%s: the old file changed", what);
                    free(now);
                }
                if (plan[p].op == OP_FSYNC && k == 0) ck_assert_msg(fsyncs == 1, "a failed fsync was retried");
                ck_assert_uint_eq(tsu_digest(c), d_new); /* the context never changes */
                free(g_old);
            }
            ck_assert_int_gt(failures, 0);
        }
    hc_ctx_free(old), hc_ctx_free(c);
}
END_TEST

/* The file transfers of save and load: units of `unit` bytes (0: the default), O_DIRECT forced
 * (1), never (-1) or by size (0). */
static void io_mode(uint32_t unit, int direct)
{
    hcs_hooks.io_unit = unit, hcs_hooks.direct_io = direct;
}

START_TEST(test_transient_faults)
{
    hc_ctx *c = filled(900, 3);
    uint64_t d = tsu_digest(c);
    hc_save_params sp;
    hc_save_params_init(&sp, sizeof sp);
    /* default units (one or two transfers for this session), and units of 8 KiB (many); with
     * O_DIRECT a halved transfer leaves an unaligned rest, which goes on buffered */
    static const struct { uint32_t unit; int direct; } modes[] = {{0, 0}, {8192, -1}, {8192, 1}, {0, 1}};
    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++)
        for (int mode = SHORT; mode <= EINTR_ONCE; mode++) {
            for (int comp = 0; comp < 2; comp++) {
                io_mode(modes[m].unit, modes[m].direct);
                sp.compression = comp ? HC_COMPRESS_ZSTD : HC_COMPRESS_NONE;
                arm(OP_PWRITE, 0, mode, 0);
                F.every = 1;
                hci_io_set(&faulty);
                hc_status st = hc_ctx_save(c, g_path, &sp);
                hci_io_set(NULL);
                ck_assert_msg(st == HC_OK, "pwrite %s: %s", mode == SHORT ? "short" : "EINTR", hc_ctx_last_error(c));
                ck_assert_int_gt(F.count[OP_PWRITE], modes[m].unit ? 10 : 2);
                ck_assert_uint_eq(file_digest(g_path), d);
                /* and reading back through short reads / EINTR (fp8: straight into the pages) */
                for (int fmt = 0; fmt < 2; fmt++) {
                    hc_ctx *e = tsu_ctx(g_model, fmt ? HC_CACHE_FP8 : HC_CACHE_BF16, 0);
                    arm(OP_PREAD, 0, mode, 0);
                    F.every = 1;
                    hci_io_set(&faulty);
                    st = hc_ctx_load(e, g_path);
                    hci_io_set(NULL);
                    ck_assert_msg(st == HC_OK, "pread %s: %s", mode == SHORT ? "short" : "EINTR", hc_ctx_last_error(e));
                    ck_assert_uint_eq(tsu_digest(e), d);
                    hc_ctx_free(e);
                }
            }
        }
    io_mode(0, 0);
    hc_ctx_free(c);
}
END_TEST

/* Save and load through units of every size against chunks of every size (a unit holds whole
 * chunks and may be larger than asked for, chunks do not start on a 4 KiB boundary, nor do
 * sections end on one), with and without O_DIRECT, and on a file system that refuses O_DIRECT:
 * the same file and the same state each time. */
static void units_and_direct(int64_t n_tokens, int all)
{
    hc_ctx *c = filled(n_tokens, 6);
    uint64_t d = tsu_digest(c);
    uint64_t refn;
    uint8_t *ref = tsu_save(c, HC_COMPRESS_NONE, &refn);
    static const uint32_t units[] = {4096, 12288, 65536, 1u << 20, 0};
    static const uint32_t rpc[] = {64, 192, 0};
    for (size_t r = all ? 0 : 2; r < sizeof rpc / sizeof rpc[0]; r++)
        for (size_t u = all ? 0 : 2; u < sizeof units / sizeof units[0]; u++)
            for (int direct = -1; direct <= 1; direct += 2)
                for (int refuse = 0; refuse < 2; refuse++) {
                    hcs_hooks.entry_rows_per_chunk = rpc[r];
                    io_mode(units[u], direct);
                    arm(OP_PWRITE, -1, refuse ? NO_DIRECT : FAIL, 0);
                    hci_io_set(&faulty);
                    hc_status st = hc_ctx_save(c, g_path, NULL);
                    int hit = F.hit;
                    hci_io_set(NULL);
                    ck_assert_msg(st == HC_OK, "save, unit %u direct %d: %s", units[u], direct, hc_ctx_last_error(c));
                    ck_assert_int_eq(hit, refuse && direct > 0);
                    size_t n;
                    uint8_t *got = tu_read_file(g_path, &n);
                    uint64_t where = 0;
                    if (!rpc[r]) /* the writer's own chunk size: the bytes of a buffer save */
                        ck_assert_msg(tsu_same_session(ref, refn, got, n, &where), "unit %u direct %d: differs at %llu",
                                      units[u], direct, (unsigned long long)where);
                    free(got);
                    for (int fmt = 0; fmt < 2; fmt++) {
                        hc_ctx *e = tsu_ctx(g_model, fmt ? HC_CACHE_BF16 : HC_CACHE_FP8, 0);
                        arm(OP_PREAD, -1, refuse ? NO_DIRECT : FAIL, 0);
                        hci_io_set(&faulty);
                        st = hc_ctx_load(e, g_path);
                        hit = F.hit;
                        hci_io_set(NULL);
                        ck_assert_msg(st == HC_OK, "load, unit %u direct %d: %s", units[u], direct, hc_ctx_last_error(e));
                        ck_assert_int_eq(hit, refuse && direct > 0);
                        hcs_hooks.entry_rows_per_chunk = 0; /* the digest is a session of the default layout */
                        ck_assert_uint_eq(tsu_digest(e), d);
                        hcs_hooks.entry_rows_per_chunk = rpc[r];
                        hc_ctx_free(e);
                    }
                }
    hcs_hooks.entry_rows_per_chunk = 0;
    io_mode(0, 0);
    free(ref);
    hc_ctx_free(c);
}

START_TEST(test_units_and_direct)
{
    units_and_direct(2000, 1);
    units_and_direct(40000, 0); /* several MiB: worker threads check chunks while units are read */
}
END_TEST

START_TEST(test_load_faults)
{
    hc_ctx *c = filled(900, 4), *t = filled(300, 5);
    ck_assert_int_eq(hc_ctx_save(c, g_path, NULL), HC_OK);
    uint64_t d_t = tsu_digest(t), d_c = tsu_digest(c);
    static const struct { int op, mode, err; } plan[] = {
        {OP_PREAD, FAIL, EIO}, {OP_PREAD, EOF_READ, 0}, {OP_OPEN, FAIL, ENOENT}, {OP_FSTAT, FAIL, EIO},
    };
    for (size_t q = 0; q < 2 * sizeof plan / sizeof plan[0]; q++) {
        size_t p = q / 2;
        io_mode(q % 2 ? 8192 : 0, q % 2 ? 1 : 0); /* default units; 8 KiB units through O_DIRECT */
        int failures = 0;
        for (long k = 0;; k++) {
            arm(plan[p].op, k, plan[p].mode, plan[p].err);
            hci_io_set(&faulty);
            hc_status st = hc_ctx_load(t, g_path);
            hci_io_set(NULL);
            if (!F.hit) {
                ck_assert_int_eq(st, HC_OK);
                ck_assert_uint_eq(tsu_digest(t), d_c);
                hc_ctx_free(t);
                t = filled(300, 5); /* back to the state under test */
                break;
            }
            failures++;
            ck_assert_msg(st == HC_ERR_IO, "%s at call %ld: %s (%s)", op_names[plan[p].op], k, hc_status_name(st),
                          hc_ctx_last_error(t));
            ck_assert_int_eq(hc_ctx_n_tokens(t), 300);
            ck_assert_uint_eq(tsu_digest(t), d_t);
        }
        ck_assert_int_gt(failures, 0);
    }
    io_mode(0, 0);
    hc_ctx_free(c), hc_ctx_free(t);
}
END_TEST

/* A session of several MiB: its units are read on several I/O threads, many at once, and its
 * chunks checked by workers; a read failing anywhere (the first, a middle, the last one) or
 * ending early fails the load, with the reads still queued cancelled, and changes nothing. */
START_TEST(test_load_faults_parallel)
{
    hc_ctx *c = filled(40000, 7), *t = filled(300, 5);
    ck_assert_int_eq(hc_ctx_save(c, g_path, NULL), HC_OK);
    uint64_t d_t = tsu_digest(t), d_c = tsu_digest(c);
    for (int direct = -1; direct <= 1; direct += 2) {
        io_mode(65536, direct);
        arm(OP_PREAD, -1, FAIL, 0);
        hci_io_set(&faulty);
        hc_ctx *e = tsu_ctx(g_model, HC_CACHE_FP8, 0);
        ck_assert_int_eq(hc_ctx_load(e, g_path), HC_OK);
        hci_io_set(NULL);
        long n = F.count[OP_PREAD];
        ck_assert_int_gt(n, 20);
        ck_assert_uint_eq(tsu_digest(e), d_c);
        hc_ctx_free(e);
        const long at[] = {0, 1, 2, n / 3, n / 2, n - 2, n - 1};
        for (size_t i = 0; i < sizeof at / sizeof at[0]; i++)
            for (int mode = 0; mode < 2; mode++) {
                arm(OP_PREAD, at[i], mode ? EOF_READ : FAIL, EIO);
                hci_io_set(&faulty);
                hc_status st = hc_ctx_load(t, g_path);
                hci_io_set(NULL);
                ck_assert_int_eq(F.hit, 1);
                ck_assert_msg(st == HC_ERR_IO, "pread %ld of %ld (%s): %s (%s)", at[i], n, mode ? "EOF" : "EIO",
                              hc_status_name(st), hc_ctx_last_error(t));
                ck_assert_int_eq(hc_ctx_n_tokens(t), 300);
                ck_assert_uint_eq(tsu_digest(t), d_t);
            }
    }
    io_mode(0, 0);
    hc_ctx_free(c), hc_ctx_free(t);
}
END_TEST

/* Huge pages declined part way (as when they fault in slowly): from the first populated range
 * on, the rest of every entry section's pages is marked MADV_NOHUGEPAGE while other threads
 * populate and read; raw (read straight into the pages) and zstd (decompressed into them) loads
 * still give the same state. */
START_TEST(test_huge_declined)
{
    hc_ctx *c = filled(40000, 8);
    uint64_t d = tsu_digest(c);
    hc_save_params sp;
    hc_save_params_init(&sp, sizeof sp);
    for (int comp = 0; comp < 2; comp++)
        for (int direct = -1; direct <= 1; direct += 2) {
            sp.compression = comp ? HC_COMPRESS_ZSTD : HC_COMPRESS_NONE;
            io_mode(65536, direct);
            ck_assert_int_eq(hc_ctx_save(c, g_path, &sp), HC_OK);
            hcs_hooks.huge_slow = 1;
            hc_ctx *e = tsu_ctx(g_model, HC_CACHE_FP8, 0);
            hc_status st = hc_ctx_load(e, g_path);
            hcs_hooks.huge_slow = 0;
            ck_assert_msg(st == HC_OK, "%s", hc_ctx_last_error(e));
            ck_assert_uint_eq(tsu_digest(e), d);
            hc_ctx_free(e);
        }
    io_mode(0, 0);
    hc_ctx_free(c);
}
END_TEST

/* ---- SIGKILL while saving ---- */

#define KILL_TOKENS 60000

/* The child: save over and over, with the round number in the metadata; says "ready" on fd 3. */
static int saver_main(const char *path)
{
    hc_model *m = NULL;
    hc_model_params mp;
    hc_model_params_init(&mp, sizeof mp);
    mp.flags = HC_MODEL_GEOMETRY_ONLY;
    if (hc_model_create_random(tsu_golden_json, 1, &mp, &m)) return 2;
    hc_ctx_params p;
    hc_ctx_params_init(&p, sizeof p);
    p.backend = HC_BACKEND_CPU;
    p.n_threads = 2;
    hc_ctx *c = NULL;
    if (hc_ctx_create(m, &p, &c) || hc_x_ctx_fill_random(c, KILL_TOKENS, 77)) return 2;
    if (write(3, "r", 1) != 1) return 2;
    for (unsigned round = 1;; round++) {
        char meta[32];
        snprintf(meta, sizeof meta, "round %u", round);
        hc_ctx_set_metadata(c, meta, strlen(meta));
        if (hc_ctx_save(c, path, NULL)) return 3;
    }
}

START_TEST(test_kill_during_save)
{
    /* this program (argv[0]: under valgrind /proc/self/exe is valgrind itself) */
    char self[4096];
    if (strchr(g_argv0, '/')) {
        snprintf(self, sizeof self, "%s", g_argv0);
    } else {
        ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
        ck_assert_int_gt(sl, 0);
        self[sl] = 0;
    }
    hc_ctx *ref = filled(KILL_TOKENS, 77);
    ck_assert_int_eq(hc_ctx_set_metadata(ref, "round 0", 7), HC_OK);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ck_assert_int_eq(hc_ctx_save(ref, g_path, NULL), HC_OK);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    /* kill within about three saves of the child's first one, wherever the time goes here */
    long save_ns = (long)((t1.tv_sec - t0.tv_sec) * 1000000000 + (t1.tv_nsec - t0.tv_nsec));
    long span = 3 * (save_ns > 2000000 ? save_ns : 2000000);
    hc_ctx *probe = tsu_ctx(g_model, HC_CACHE_FP8, 0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint64_t rs = (uint64_t)t0.tv_nsec;
    int kills = 0, with_temp = 0, newer = 0;
    unsigned last_round = 0;
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double el = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        if (kills >= 20 && el > 6.0) break;
        int fds[2];
        ck_assert_int_eq(pipe(fds), 0);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            dup2(fds[1], 3);
            execl(self, self, "--saver", g_path, (char *)NULL);
            _exit(127);
        }
        close(fds[1]);
        char r;
        ck_assert_int_eq(read(fds[0], &r, 1), 1);
        close(fds[0]);
        rs = rs * 6364136223846793005ull + 1442695040888963407ull;
        long ns = (long)((rs >> 20) % (uint64_t)span);
        struct timespec d = {ns / 1000000000, ns % 1000000000};
        nanosleep(&d, NULL);
        kill(pid, SIGKILL);
        int wst;
        ck_assert_int_eq(waitpid(pid, &wst, 0), pid);
        ck_assert_msg(WIFSIGNALED(wst), "the saver exited by itself (status %d)", WEXITSTATUS(wst));
        kills++;
        with_temp += count_temps() > 0;
        /* the path holds a complete session: the old one or a new one */
        hc_status st = hc_ctx_load(probe, g_path);
        ck_assert_msg(st == HC_OK, "after kill %d: %s", kills, hc_ctx_last_error(probe));
        ck_assert_int_eq(hc_ctx_n_tokens(probe), KILL_TOKENS);
        const void *md;
        uint64_t ml;
        unsigned round;
        ck_assert_int_eq(hc_ctx_get_metadata(probe, &md, &ml), HC_OK);
        char meta[32] = {0};
        memcpy(meta, md, ml < 31 ? ml : 31);
        ck_assert_int_eq(sscanf(meta, "round %u", &round), 1);
        newer += round > 0 && round != last_round;
        last_round = round;
    }
    fprintf(stderr, "kill test: %d kills, %d inside a save (a temporary was left), %d new rounds found\n", kills,
            with_temp, newer);
    /* the next save sweeps what killed savers left */
    ck_assert_int_eq(hc_ctx_save(ref, g_path, NULL), HC_OK);
    ck_assert_int_eq(count_temps(), 0);
    ck_assert_msg(with_temp > 0, "no kill landed inside a save (%d kills)", kills);
    ck_assert_msg(newer > 0, "no save completed before a kill (%d kills)", kills);
    /* a temporary of a live process is not swept */
    char *live = malloc(strlen(g_path) + 64);
    sprintf(live, "%s.tmp.%ld.0123456789abcdef", g_path, (long)getpid());
    ck_assert_int_eq(tu_write_file(live, "x", 1), 0);
    ck_assert_int_eq(hc_ctx_save(ref, g_path, NULL), HC_OK);
    ck_assert_int_eq(access(live, F_OK), 0);
    unlink(live);
    free(live);
    hc_ctx_free(ref), hc_ctx_free(probe);
}
END_TEST

Suite *tu_suite(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--saver")) exit(saver_main(argv[2]));
    g_argv0 = argv[0];
    Suite *s = suite_create("session_io");
    TCase *tc = tcase_create("io");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_save_faults);
    tcase_add_test(tc, test_transient_faults);
    tcase_add_test(tc, test_units_and_direct);
    tcase_add_test(tc, test_load_faults);
    tcase_add_test(tc, test_load_faults_parallel);
    tcase_add_test(tc, test_huge_declined);
    tcase_add_test(tc, test_kill_during_save);
    suite_add_tcase(s, tc);
    return s;
}
