/* io.c - POSIX file operations for sessions, the injection point for tests, and the atomic
 * save protocol: temporary in the target directory, fsync, rename, directory fsync. */
#include "io.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include "container.h"
#include "hybridctx.h"
#include "../util/error.h"

static int p_open(const char *path, int flags, mode_t mode) { return open(path, flags, mode); }
static ssize_t p_pread(int fd, void *b, size_t n, off_t o) { return pread(fd, b, n, o); }
static ssize_t p_pwrite(int fd, const void *b, size_t n, off_t o) { return pwrite(fd, b, n, o); }

const hci_io_ops hci_io_posix = {p_open, close, p_pread, p_pwrite, fsync, fstat, lstat, rename, unlink};
static const hci_io_ops *cur_ops = &hci_io_posix;

const hci_io_ops *hci_io(void) { return cur_ops; }
void hci_io_set(const hci_io_ops *ops) { cur_ops = ops ? ops : &hci_io_posix; }

int hcs_pwrite_all(int fd, const void *p, size_t n, uint64_t off, const char *what, char *err, size_t errsz)
{
    const uint8_t *b = p;
    while (n) {
        size_t step = n < (1u << 30) ? n : (1u << 30);
        ssize_t w = hci_io()->pwrite(fd, b, step, (off_t)off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            int e = w < 0 ? errno : EIO;
            return hci_errf(err, errsz, HC_ERR_IO, "writing %s at offset %" PRIu64 ": %s", what, off, strerror(e));
        }
        b += w, n -= (size_t)w, off += (uint64_t)w;
    }
    return HC_OK;
}

int hcs_pread_all(int fd, void *p, size_t n, uint64_t off, const char *what, char *err, size_t errsz)
{
    uint8_t *b = p;
    while (n) {
        size_t step = n < (1u << 30) ? n : (1u << 30);
        ssize_t r = hci_io()->pread(fd, b, step, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return hci_errf(err, errsz, HC_ERR_IO, "reading %s at offset %" PRIu64 ": %s", what, off, strerror(errno));
        if (r == 0) return hci_errf(err, errsz, HC_ERR_IO, "reading %s: unexpected end of file at offset %" PRIu64, what, off);
        b += r, n -= (size_t)r, off += (uint64_t)r;
    }
    return HC_OK;
}

void hcs_random(void *out, size_t n)
{
    uint8_t *o = out;
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(o + got, n - got, GRND_NONBLOCK);
        if (r <= 0) break;
        got += (size_t)r;
    }
    if (got == n) return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t s = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ ((uint64_t)getpid() << 40) ^ (uintptr_t)out;
    for (; got < n; got++) {
        s += 0x9e3779b97f4a7c15ull;
        uint64_t z = (s ^ (s >> 30)) * 0xbf58476d1ce4e5b9ull;
        o[got] ^= (uint8_t)((z ^ (z >> 27)) * 0x94d049bb133111ebull >> 56);
    }
}

/* ---- the atomic replace ---- */

static int split_path(const char *target, char **dir, const char **base)
{
    const char *slash = strrchr(target, '/');
    *base = slash ? slash + 1 : target;
    size_t dl = slash ? (size_t)(slash - target) : 1;
    if (slash && dl == 0) dl = 1; /* "/name" */
    *dir = malloc(dl + 1);
    if (!*dir) return HC_ERR_OUT_OF_MEMORY;
    memcpy(*dir, slash ? target : ".", dl);
    (*dir)[dl] = 0;
    return HC_OK;
}

/* Remove "<base>.tmp.<pid>.<hex>" files whose process is gone (a previous save was killed). */
static void sweep(const char *dir, const char *base)
{
    DIR *d = opendir(dir);
    if (!d) return;
    size_t bl = strlen(base);
    pid_t self = getpid();
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *n = e->d_name;
        if (strncmp(n, base, bl) != 0 || strncmp(n + bl, ".tmp.", 5) != 0) continue;
        char *end;
        errno = 0;
        long pid = strtol(n + bl + 5, &end, 10);
        if (errno || pid <= 0 || *end != '.' || strlen(end + 1) != 16 || strspn(end + 1, "0123456789abcdef") != 16)
            continue;
        if ((pid_t)pid == self || kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        size_t pl = strlen(dir) + strlen(n) + 2;
        char *p = malloc(pl);
        if (!p) break;
        snprintf(p, pl, "%s/%s", dir, n);
        hci_io()->unlink(p);
        free(p);
    }
    closedir(d);
}

/* The target may be replaced when absent, empty, or a regular file that starts like a session. */
static int check_target(const char *target, char *err, size_t errsz)
{
    struct stat st;
    if (hci_io()->lstat(target, &st)) {
        if (errno == ENOENT) return HC_OK;
        return hci_errf(err, errsz, HC_ERR_IO, "%s: %s", target, strerror(errno));
    }
    if (S_ISLNK(st.st_mode))
        return hci_errf(err, errsz, HC_ERR_INVALID_ARG, "%s is a symbolic link; refusing to replace it", target);
    if (!S_ISREG(st.st_mode))
        return hci_errf(err, errsz, HC_ERR_INVALID_ARG, "%s is not a regular file; refusing to replace it", target);
    if (st.st_size == 0) return HC_OK;
    int fd = hci_io()->open(target, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0) return hci_errf(err, errsz, HC_ERR_IO, "%s: %s", target, strerror(errno));
    uint8_t m[8] = {0};
    int st2 = st.st_size >= 8 ? hcs_pread_all(fd, m, 8, 0, target, err, errsz) : HC_OK;
    hci_io()->close(fd);
    if (st2) return st2;
    if (memcmp(m, hcs_magic_sb, 8) != 0)
        return hci_errf(err, errsz, HC_ERR_INVALID_ARG, "%s exists and is not a session file; refusing to replace it",
                        target);
    return HC_OK;
}

int hcs_tmp_create(hcs_tmp *t, const char *target, char *err, size_t errsz)
{
    memset(t, 0, sizeof *t);
    t->fd = -1;
    const char *base;
    if (!*target) return hci_errf(err, errsz, HC_ERR_INVALID_ARG, "empty path");
    if (split_path(target, &t->dir, &base)) return hci_errf(err, errsz, HC_ERR_OUT_OF_MEMORY, "out of memory");
    int st = HC_OK;
    if (!*base || !strcmp(base, ".") || !strcmp(base, "..")) {
        st = hci_errf(err, errsz, HC_ERR_INVALID_ARG, "%s does not name a file", target);
        goto fail;
    }
    if ((st = check_target(target, err, errsz))) goto fail;
    sweep(t->dir, base);
    size_t pl = strlen(t->dir) + strlen(base) + 64;
    t->target = strdup(target);
    t->path = malloc(pl);
    if (!t->target || !t->path) {
        st = hci_errf(err, errsz, HC_ERR_OUT_OF_MEMORY, "out of memory");
        goto fail;
    }
    for (int attempt = 0; attempt < 8; attempt++) {
        uint64_t r;
        hcs_random(&r, sizeof r);
        snprintf(t->path, pl, "%s/%s.tmp.%ld.%016" PRIx64, t->dir, base, (long)getpid(), r);
        t->fd = hci_io()->open(t->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (t->fd >= 0 || errno != EEXIST) break;
    }
    if (t->fd < 0) {
        st = hci_errf(err, errsz, HC_ERR_IO, "creating a temporary file in %s: %s", t->dir, strerror(errno));
        goto fail;
    }
    return HC_OK;
fail:
    free(t->dir), free(t->target), free(t->path);
    memset(t, 0, sizeof *t);
    t->fd = -1;
    return st;
}

static void tmp_free(hcs_tmp *t)
{
    free(t->dir), free(t->target), free(t->path);
    memset(t, 0, sizeof *t);
    t->fd = -1;
}

void hcs_tmp_abort(hcs_tmp *t)
{
    if (!t->path) return;
    if (t->fd >= 0) hci_io()->close(t->fd);
    hci_io()->unlink(t->path);
    tmp_free(t);
}

int hcs_tmp_commit(hcs_tmp *t, char *err, size_t errsz)
{
    int st = HC_OK;
    /* a failed fsync is never retried: the kernel may have dropped the dirty pages */
    if (hci_io()->fsync(t->fd)) {
        st = hci_errf(err, errsz, HC_ERR_IO, "syncing %s: %s", t->path, strerror(errno));
        hcs_tmp_abort(t);
        return st;
    }
    int rc = hci_io()->close(t->fd);
    t->fd = -1;
    if (rc) {
        st = hci_errf(err, errsz, HC_ERR_IO, "closing %s: %s", t->path, strerror(errno));
        hcs_tmp_abort(t);
        return st;
    }
    if (hci_io()->rename(t->path, t->target)) {
        st = hci_errf(err, errsz, HC_ERR_IO, "renaming %s to %s: %s", t->path, t->target, strerror(errno));
        hcs_tmp_abort(t);
        return st;
    }
    /* past this point the new file is in place; only its durability can still fail */
    int dfd = hci_io()->open(t->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (dfd < 0) {
        st = hci_errf(err, errsz, HC_ERR_IO, "opening directory %s to sync it: %s (the new file is in place)", t->dir,
                      strerror(errno));
    } else {
        if (hci_io()->fsync(dfd))
            st = hci_errf(err, errsz, HC_ERR_IO, "syncing directory %s: %s (the new file is in place)", t->dir,
                          strerror(errno));
        hci_io()->close(dfd);
    }
    tmp_free(t);
    return st;
}
