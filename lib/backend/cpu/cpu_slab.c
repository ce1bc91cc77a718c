/* cpu_slab.c - cache pages carved from one anonymous mapping ("slab"), for a load that fills a
 * whole page list at once: the mapping is zero-filled by the kernel (no second clear), its pages
 * are contiguous and 4096-aligned (a session's entry section can be read straight into them with
 * O_DIRECT), and it costs one mmap instead of a malloc per page. Pages are still freed one by
 * one (lists hold pages by reference), so slabs sit in an address-sorted registry that page_free
 * searches. Freed pages are handed back to the kernel in runs (adjacent frees merge, up to
 * SLAB_RUN bytes), the slab itself when its last page goes.
 *
 * Slabs of SLAB_HUGE bytes and more start on a SLAB_HUGE boundary and ask for transparent huge
 * pages (MADV_HUGEPAGE): making a slab resident then costs one fault, one zeroing and one
 * memory-cgroup charge per 2 MiB instead of per 4 KiB (populating 4 KiB pages was 61% of the CPU
 * of a 1M-token load on the development VM), the O_DIRECT reads into it pin a few large
 * folios instead of 512 small pages each, and unmapping it is cheap. The kernel falls back to
 * small pages where no huge page is free; a reader that finds huge pages slow to fault in
 * declines them for the rest of its range (hcs_populate). */
#include "cpu_slab.h"
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include "hybridctx.h"

#define SLAB_ALIGN ((size_t)4096)
#define SLAB_RUN (4u << 20)
#define SLAB_HUGE ((size_t)2 << 20) /* the x86-64 and arm64 (4 KiB granule) PMD size */

typedef struct slab {
    uint8_t *base;
    size_t len;             /* mapped bytes: the pages rounded up, plus SLAB_ALIGN of slack */
    size_t page_bytes;
    int live;               /* pages not yet freed */
    size_t run_lo, run_hi;  /* freed bytes [lo, hi) not yet handed back */
} slab;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
typedef struct slab_ref {
    slab *s;
} slab_ref;                 /* an entry of the registry (a struct, so that its size is not a pointer's) */
static slab_ref *g_slabs;  /* sorted by base */
static int g_n, g_cap;

/* Index of the first slab whose base is above p. */
static int upper(const void *p)
{
    int lo = 0, hi = g_n;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if ((uintptr_t)g_slabs[mid].s->base <= (uintptr_t)p) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* len bytes of zero-filled memory; from SLAB_HUGE on aligned to it (the mapping is made larger
 * and trimmed) and marked for huge pages (advisory: without THP it is a plain mapping). */
static uint8_t *map(size_t len)
{
    int huge = len >= SLAB_HUGE;
    size_t extra = huge ? SLAB_HUGE - SLAB_ALIGN : 0;
    if (len > SIZE_MAX - extra) return NULL;
    void *v = mmap(NULL, len + extra, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (v == MAP_FAILED) return NULL;
    uint8_t *m = v;
    if (huge) {
        size_t head = (SLAB_HUGE - (size_t)((uintptr_t)m % SLAB_HUGE)) % SLAB_HUGE;
        if (head) munmap(m, head);
        if (extra > head) munmap(m + head + len, extra - head);
        m += head;
#ifdef MADV_HUGEPAGE
        madvise(m, len, MADV_HUGEPAGE);
#endif
    }
    return m;
}

int hci_slab_alloc(size_t page_bytes, int n, void **out)
{
    if (n <= 0 || !page_bytes || (size_t)n > (SIZE_MAX - 2 * SLAB_ALIGN) / page_bytes) return HC_ERR_OUT_OF_MEMORY;
    size_t len = ((size_t)n * page_bytes + SLAB_ALIGN - 1) / SLAB_ALIGN * SLAB_ALIGN + SLAB_ALIGN;
    slab *s = calloc(1, sizeof *s);
    uint8_t *m = s ? map(len) : NULL;
    if (!m) {
        free(s);
        return HC_ERR_OUT_OF_MEMORY;
    }
    s->base = m, s->len = len, s->page_bytes = page_bytes, s->live = n;
    pthread_mutex_lock(&g_lock);
    int ok = g_n < g_cap;
    if (!ok) {
        int cap = g_cap ? 2 * g_cap : 64;
        slab_ref *v = realloc(g_slabs, (size_t)cap * sizeof *v);
        if (v) {
            g_slabs = v, g_cap = cap;
            ok = 1;
        }
    }
    if (ok) {
        int i = upper(s->base);
        for (int k = g_n; k > i; k--) g_slabs[k] = g_slabs[k - 1];
        g_slabs[i].s = s, g_n++;
    }
    pthread_mutex_unlock(&g_lock);
    if (!ok) {
        munmap(s->base, len), free(s);
        return HC_ERR_OUT_OF_MEMORY;
    }
    for (int i = 0; i < n; i++) out[i] = s->base + (size_t)i * page_bytes;
    return HC_OK;
}

/* Hand the whole 4096-byte pages of freed bytes [lo, hi) back (advisory). */
static void release_run(slab *s, size_t lo, size_t hi)
{
    lo = (lo + SLAB_ALIGN - 1) / SLAB_ALIGN * SLAB_ALIGN, hi = hi / SLAB_ALIGN * SLAB_ALIGN;
    if (hi > lo) madvise(s->base + lo, hi - lo, MADV_DONTNEED);
}

int hci_slab_free(void *p)
{
    pthread_mutex_lock(&g_lock);
    int i = upper(p) - 1;
    slab *s = i >= 0 ? g_slabs[i].s : NULL;
    if (!s || (uintptr_t)p >= (uintptr_t)s->base + s->len) {
        pthread_mutex_unlock(&g_lock);
        return 0;
    }
    size_t lo = (size_t)((uint8_t *)p - s->base), hi = lo + s->page_bytes;
    if (--s->live == 0) {
        for (int k = i; k + 1 < g_n; k++) g_slabs[k] = g_slabs[k + 1];
        g_n--;
    } else if (s->run_hi > s->run_lo && (lo == s->run_hi || hi == s->run_lo)) {
        s->run_lo = lo < s->run_lo ? lo : s->run_lo, s->run_hi = hi > s->run_hi ? hi : s->run_hi;
    } else {
        release_run(s, s->run_lo, s->run_hi);
        s->run_lo = lo, s->run_hi = hi;
    }
    if (s->live && s->run_hi - s->run_lo >= SLAB_RUN) {
        release_run(s, s->run_lo, s->run_hi);
        s->run_lo = s->run_hi = 0;
    }
    pthread_mutex_unlock(&g_lock);
    if (!s->live) {
        munmap(s->base, s->len);
        free(s);
    }
    return 1;
}
