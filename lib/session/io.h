/* io.h - the file operations of sessions behind one replaceable table, so that tests can inject
 * ENOSPC, EIO, EINTR, short transfers and sync failures at any step (tests/test_session_io.c);
 * plus the atomic replace-by-rename protocol of docs/session-format.md §7. */
#ifndef HCS_IO_H
#define HCS_IO_H
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

typedef struct hci_io_ops {
    int (*open)(const char *path, int flags, mode_t mode);
    int (*close)(int fd);
    ssize_t (*pread)(int fd, void *buf, size_t n, off_t off);
    ssize_t (*pwrite)(int fd, const void *buf, size_t n, off_t off);
    int (*fsync)(int fd);
    int (*fstat)(int fd, struct stat *st);
    int (*lstat)(const char *path, struct stat *st);
    int (*rename)(const char *from, const char *to);
    int (*unlink)(const char *path);
} hci_io_ops;

extern const hci_io_ops hci_io_posix;
/* The table in use. hci_io_set(NULL) restores the POSIX one. Tests only; not thread-safe. */
const hci_io_ops *hci_io(void);
void hci_io_set(const hci_io_ops *ops);

/* Whole transfers: short counts and EINTR are continued; anything else is HC_ERR_IO with the
 * errno text (what names the file). A read that meets the end of the file is HC_ERR_IO. */
int hcs_pwrite_all(int fd, const void *p, size_t n, uint64_t off, const char *what, char *err, size_t errsz);
int hcs_pread_all(int fd, void *p, size_t n, uint64_t off, const char *what, char *err, size_t errsz);

/* A temporary next to the target: created (after checks and a sweep of stale temporaries),
 * then committed (fsync, close, rename, directory fsync) or aborted (closed and unlinked). */
typedef struct hcs_tmp {
    char *target, *dir, *path;
    int fd;
} hcs_tmp;
int hcs_tmp_create(hcs_tmp *t, const char *target, char *err, size_t errsz);
int hcs_tmp_commit(hcs_tmp *t, char *err, size_t errsz);
void hcs_tmp_abort(hcs_tmp *t);

/* Random bytes (getrandom, falling back to a time/pid mix). */
void hcs_random(void *out, size_t n);

#endif
