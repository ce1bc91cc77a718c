/* dio.h - the file side of the session streams: large transfers ("units" of a few MiB, with
 * 4096-aligned buffers, offsets and lengths) done by background threads, so that the disk works
 * while the calling thread and the workers copy, hash and check. Units go through O_DIRECT where
 * the file system takes it: no page-cache copy and no page-cache pages to fill, which on a
 * virtual disk is most of the CPU a buffered transfer costs. A direct transfer that the kernel
 * refuses (EINVAL: a file system without O_DIRECT, or a short transfer that left an unaligned
 * rest) switches the descriptor to buffered I/O for good and is redone. */
#ifndef HCS_DIO_H
#define HCS_DIO_H
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define HCS_DIO_ALIGN 4096u

typedef struct hcs_unit {
    uint8_t *buf;       /* cap bytes, HCS_DIO_ALIGN-aligned (NULL when the dio has no buffers) */
    uint8_t *dst;       /* reads: != NULL to read into this (HCS_DIO_ALIGN-aligned) instead of buf */
    uint64_t tag;       /* the caller's (a reader: which of its units this is) */
    uint64_t off;       /* file offset of buf[0] */
    size_t len;         /* bytes to transfer */
    int status;         /* of the last transfer (HC_OK, HC_ERR_IO, or HC_ERR_ABORTED when cancelled) */
    uint64_t t_start, t_end; /* with a trace (hcs_dio_set_trace): when the transfer started and ended */
    char err[256];
} hcs_unit;

typedef struct hcs_dio hcs_dio;
struct hci_trace;
/* Runs before a unit is read (reads only; hcs_dio_set_prep): a reader makes the unit's fresh
 * destination pages resident there. */
typedef void (*hcs_dio_prep_fn)(void *arg, const hcs_unit *u);

/* Where a stream's large host buffers come from, for a consumer that copies out of them
 * asynchronously (CUDA: DMA from page-locked memory, lib/session/load.c). alloc returns
 * HCS_DIO_ALIGN-aligned memory or NULL; wait returns once the copies queued so far from the
 * buffer holding p have finished, so that it may be written again (any thread); free waits too.
 * A NULL hcs_bufs: posix_memalign and free, nothing to wait for. */
typedef struct hcs_bufs {
    void *(*alloc)(void *arg, size_t bytes);
    void (*free)(void *arg, void *p);
    int (*wait)(void *arg, const void *p, char *err, size_t errsz);
    void *arg;
} hcs_bufs;

/* n_units units for fd (write: 1 = pwrite, 0 = pread), each with a buffer of cap bytes (cap 0:
 * none, every read names its dst), transferred by n_threads threads (>= 1; a write dio uses one,
 * so that units reach the file in order); direct asks for O_DIRECT (silently buffered when the
 * descriptor does not take it). NULL when out of memory. The descriptor's O_DIRECT flag is
 * cleared again by hcs_dio_destroy. bufs (reads; may be NULL): a read into a buffer of theirs
 * first waits for the copies out of it (bufs->wait); a failed wait is the unit's status. */
hcs_dio *hcs_dio_create(int fd, const char *name, int write, int direct, int n_units, size_t cap, int n_threads,
                        const hcs_bufs *bufs);
/* Reads: prep(arg, unit) runs before each transfer (set before the first hcs_dio_submit): on
 * n_threads threads of its own from the moment the unit is queued, the transfer waiting for it
 * (n_threads 0: on the I/O thread, right before the transfer). HC_OK or HC_ERR_OUT_OF_MEMORY
 * (then prep is not set up). */
int hcs_dio_set_prep(hcs_dio *d, hcs_dio_prep_fn prep, void *arg, int n_threads);
hcs_unit *hcs_dio_unit(hcs_dio *d, int i);
/* Time the transfers into t (lib/util/trace.h; NULL: none), set before the first hcs_dio_submit. */
void hcs_dio_set_trace(hcs_dio *d, struct hci_trace *t);
/* Queue the transfer of unit i (off, len set by the caller); units start in the order they are
 * queued (with several threads, several run at once). The unit belongs to the I/O threads
 * until hcs_dio_wait(d, i). */
void hcs_dio_submit(hcs_dio *d, int i);
/* Whether unit i's transfer has ended (or none is queued): hcs_dio_wait would not block. */
int hcs_dio_ready(hcs_dio *d, int i);
/* Wait for unit i's transfer (no-op when none is queued); its status, with its message in err. */
int hcs_dio_wait(hcs_dio *d, int i, char *err, size_t errsz);
/* Queued transfers that have not started yet are skipped from now on (HC_ERR_ABORTED): a
 * stream that failed does not wait for the rest of its reads. */
void hcs_dio_cancel(hcs_dio *d);
/* Make the whole 4096-byte pages inside [p, p + n) resident and writable in one call (advisory):
 * fresh memory that a read or a copy is about to fill, faulted in without a fault per page.
 * no_huge is shared by the calls of one stream. Returns 1 when this call set it: the range, large
 * enough to tell, faulted in slower than small pages do, which with transparent huge pages (the
 * CPU backend's slabs ask for them) means a host that backs fresh huge pages only when they are
 * first touched (free-page reporting of a virtual machine) or direct compaction; the caller then
 * declines huge pages for the memory it has yet to populate (hcs_decline_huge). */
int hcs_populate(void *p, size_t n, atomic_int *no_huge);
/* No transparent huge pages for the whole 4096-byte pages inside [p, p + n) (advisory). */
void hcs_decline_huge(void *p, size_t n);
/* Wait for every queued transfer (cancelled ones end at once), restore the descriptor's flags,
 * free. NULL is a no-op. */
void hcs_dio_destroy(hcs_dio *d);

#endif
