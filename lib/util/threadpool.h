/* threadpool.h - a small fork-join pool: the caller and n-1 workers split a range of items.
 * Items must be independent; each is done exactly once, so results do not depend on the
 * number of threads. */
#ifndef HCI_THREADPOOL_H
#define HCI_THREADPOOL_H
#include <stdint.h>

typedef struct hci_pool hci_pool;
/* tid: 0 for the calling thread, 1..size-1 for the workers (index per-thread scratch with it). */
typedef void (*hci_range_fn)(void *arg, int64_t lo, int64_t hi, int tid);

/* n_threads <= 0: all online cores. Returns NULL only when out of memory; a pool whose workers
 * could not all start runs with fewer threads. */
hci_pool *hci_pool_create(int n_threads);
void hci_pool_destroy(hci_pool *p);
int hci_pool_size(const hci_pool *p);
/* Run fn over [0, n) in pieces of at most grain items; returns when all are done. A NULL pool
 * runs everything on the calling thread. Not reentrant: fn must not call hci_pool_for on the
 * same pool. */
void hci_pool_for(hci_pool *p, int64_t n, int64_t grain, hci_range_fn fn, void *arg);
int hci_online_cores(void);

#endif
