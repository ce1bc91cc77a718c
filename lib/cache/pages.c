/* pages.c - page lists with reference counts. A page may sit in the lists of several caches
 * (clones share their entry pages); each list holds one reference and the last one frees the
 * page. A writer never changes a shared page: hci_pages_prepare gives its list a private copy
 * first. Counts are atomic because the caches sharing a page belong to contexts that other
 * threads may use or free at the same time.
 *
 * Pages come from the backend one at a time (page_alloc may complete asynchronously); every
 * change of a list ends with one pages_sync, which updates the backend's mirror of the table and
 * completes the allocations. */
#include <limits.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "cache.h"
#include "hybridctx.h"
#include "../backend/backend.h"
#include "../util/trace.h"

struct hci_page_ref {
    atomic_int n;
};

/* Room for n_pages entries in both host tables (cap is what both hold). */
static int reserve_tables(hci_page_list *l, int n_pages)
{
    if (n_pages <= l->cap) return HC_OK;
    int64_t cap = l->cap ? l->cap : 16;
    while (cap < n_pages) cap *= 2;
    if (cap > INT_MAX) cap = INT_MAX;
    void **p = realloc(l->pages, (size_t)cap * sizeof *p);
    if (!p) return HC_ERR_OUT_OF_MEMORY;
    l->pages = p;
    struct hci_page_ref **r = realloc(l->refs, (size_t)cap * sizeof(struct hci_page_ref *));
    if (!r) return HC_ERR_OUT_OF_MEMORY;
    l->refs = r;
    l->cap = (int)cap;
    return HC_OK;
}

static int page_new(hci_backend *be, size_t bytes, void **page, struct hci_page_ref **ref)
{
    *ref = malloc(sizeof **ref);
    if (!*ref) return HC_ERR_OUT_OF_MEMORY;
    int st = be->ops->page_alloc(be, bytes, page);
    if (st) {
        free(*ref);
        *ref = NULL;
        return st;
    }
    atomic_init(&(*ref)->n, 1);
    return HC_OK;
}

/* Pages [lo, hi) of l (its tables hold them) through the backend's bulk op. */
static int pages_new_bulk(hci_backend *be, hci_page_list *l, int lo, int hi)
{
    int i = lo;
    for (; i < hi; i++)
        if (!(l->refs[i] = malloc(sizeof *l->refs[i]))) break;
    int st = i < hi ? HC_ERR_OUT_OF_MEMORY : be->ops->pages_alloc(be, l->page_bytes, hi - lo, &l->pages[lo]);
    for (int k = lo; k < i; k++) {
        if (st) free(l->refs[k]), l->refs[k] = NULL;
        else atomic_init(&l->refs[k]->n, 1);
    }
    return st;
}

static void page_release(hci_backend *be, void *page, struct hci_page_ref *ref)
{
    /* acq_rel: the last holder frees only after every other holder's release */
    if (atomic_fetch_sub_explicit(&ref->n, 1, memory_order_acq_rel) == 1) {
        be->ops->page_free(be, page);
        free(ref);
    }
}

int hci_page_refcount(const hci_page_list *l, int i)
{
    return atomic_load_explicit(&l->refs[i]->n, memory_order_acquire);
}

static int sync_from(hci_backend *be, hci_page_list *l, int first)
{
    return be->ops->pages_sync && first < l->n_pages ? be->ops->pages_sync(be, l, first) : HC_OK;
}

/* A page being replaced by a private copy: slot i of the list, and the other of the pair. */
typedef struct cow {
    int i;
    void *page;
    struct hci_page_ref *ref;
} cow;

static void swap_cows(hci_page_list *l, cow *v, int n)
{
    for (int j = 0; j < n; j++) {
        void *p = l->pages[v[j].i];
        struct hci_page_ref *r = l->refs[v[j].i];
        l->pages[v[j].i] = v[j].page, l->refs[v[j].i] = v[j].ref;
        v[j].page = p, v[j].ref = r;
    }
}

static void release_cows(hci_backend *be, cow *v, int n)
{
    for (int j = 0; j < n; j++) page_release(be, v[j].page, v[j].ref);
    free(v);
}

/* Private copies of the shared pages of [lo, hi), not yet in the list. */
static int make_cows(hci_backend *be, const hci_page_list *l, int lo, int hi, cow **out, int *n_out)
{
    int n = 0;
    *out = NULL, *n_out = 0;
    for (int i = lo; i < hi; i++) n += hci_page_refcount(l, i) > 1;
    if (!n) return HC_OK;
    cow *v = calloc((size_t)n, sizeof *v);
    if (!v) return HC_ERR_OUT_OF_MEMORY;
    int st = HC_OK, k = 0;
    for (int i = lo; i < hi && !st && k < n; i++) {
        if (hci_page_refcount(l, i) <= 1) continue;
        st = page_new(be, l->page_bytes, &v[k].page, &v[k].ref);
        if (!st) st = be->ops->copy(be, v[k].page, l->pages[i], l->page_bytes);
        if (v[k].ref) v[k++].i = i;
    }
    if (st) {
        release_cows(be, v, k);
        return st;
    }
    if (!k) { /* the sharers let go between the two loops: nothing to copy after all */
        free(v);
        return HC_OK;
    }
    *out = v, *n_out = k;
    return HC_OK;
}

int hci_pages_prepare(hci_backend *be, hci_page_list *l, int n_pages, int first_write)
{
    int have = l->n_pages, lo = first_write < 0 ? 0 : first_write;
    int hi = n_pages < have ? n_pages : have; /* pages past `have` are new, hence private */
    cow *v;
    int n_cow;
    int st = make_cows(be, l, lo, hi, &v, &n_cow);
    if (st) return st;
    if (n_pages <= have && !n_cow) return HC_OK;
    /* new pages, then the copies in place of the shared pages, then one sync of the mirror */
    int i = have;
    if (n_pages > have) {
        st = reserve_tables(l, n_pages);
        if (!st && be->ops->pages_alloc && n_pages - have > 1) {
            if (!(st = pages_new_bulk(be, l, have, n_pages))) i = n_pages;
        }
        for (; !st && i < n_pages; i++) st = page_new(be, l->page_bytes, &l->pages[i], &l->refs[i]);
    }
    int first = n_cow ? v[0].i : have;
    if (!st) {
        swap_cows(l, v, n_cow);
        l->n_pages = n_pages > have ? n_pages : have;
        st = sync_from(be, l, first);
        if (st) { /* back to the old pages, and the mirror to them where copies replaced them */
            swap_cows(l, v, n_cow);
            l->n_pages = have;
            if (n_cow) sync_from(be, l, first);
        }
    }
    for (int k = have; st && k < i && k < n_pages; k++)
        if (l->refs[k]) page_release(be, l->pages[k], l->refs[k]);
    release_cows(be, v, n_cow); /* success: the shared originals; failure: the copies */
    return st;
}

typedef int (*block_alloc_fn)(hci_backend *be, size_t bytes, int n, void **out);

/* Grow l to n_pages with new pages that alloc makes in one block. */
static int grow_block(hci_backend *be, hci_page_list *l, int n_pages, block_alloc_fn alloc, uint8_t **base)
{
    int have = l->n_pages;
    *base = NULL;
    if (!alloc || n_pages <= have) return HC_ERR_INTERNAL;
    int st = reserve_tables(l, n_pages), i = have;
    for (; !st && i < n_pages; i++)
        if (!(l->refs[i] = malloc(sizeof *l->refs[i]))) st = HC_ERR_OUT_OF_MEMORY;
    hci_trace *t = hci_trace_tls; /* a session load's (lib/util/trace.h) */
    uint64_t t0 = t ? hci_now_ns() : 0;
    if (!st) st = alloc(be, l->page_bytes, n_pages - have, &l->pages[have]);
    uint64_t t1 = t ? hci_now_ns() : 0;
    if (t) hci_trace_add(t, HCI_T_BLOCK_ALLOC, t1 - t0, (uint64_t)(n_pages - have) * l->page_bytes);
    if (!st) {
        for (int k = have; k < n_pages; k++) atomic_init(&l->refs[k]->n, 1);
        l->n_pages = n_pages;
        st = sync_from(be, l, have);
        if (t) hci_trace_add(t, HCI_T_PAGE_SYNC, hci_now_ns() - t1, 0);
        if (st) l->n_pages = have;
        else *base = l->pages[have];
        if (st) for (int k = have; k < n_pages; k++) page_release(be, l->pages[k], l->refs[k]);
        return st;
    }
    while (i-- > have) free(l->refs[i]);
    return st;
}

int hci_pages_grow_host(hci_backend *be, hci_page_list *l, int n_pages, uint8_t **base)
{
    return grow_block(be, l, n_pages, be->ops->pages_alloc_host, base);
}

int hci_pages_grow_block(hci_backend *be, hci_page_list *l, int n_pages, uint8_t **base)
{
    return grow_block(be, l, n_pages, be->ops->pages_alloc_block, base);
}

void hci_pages_drop(hci_backend *be, hci_page_list *l, int n_pages)
{
    if (n_pages < 0) n_pages = 0;
    /* the mirror first: its release (CUDA: after a stream sync) ends this list's queued reads
     * before another holder may free a page */
    if (n_pages == 0 && l->dev_table) be->ops->free(be, l->dev_table);
    for (int i = n_pages; i < l->n_pages; i++) page_release(be, l->pages[i], l->refs[i]);
    if (n_pages < l->n_pages) l->n_pages = n_pages;
    if (n_pages == 0) {
        free(l->pages), free(l->refs);
        l->pages = NULL, l->refs = NULL, l->dev_table = NULL;
        l->cap = l->dev_cap = 0;
    }
}

int hci_pages_share(hci_backend *be, const hci_page_list *src, hci_page_list *dst)
{
    memset(dst, 0, sizeof *dst);
    dst->page_bytes = src->page_bytes;
    if (!src->n_pages) return HC_OK;
    int st = reserve_tables(dst, src->n_pages);
    if (!st) {
        memcpy(dst->pages, src->pages, (size_t)src->n_pages * sizeof *dst->pages);
        memcpy(dst->refs, src->refs, (size_t)src->n_pages * sizeof(struct hci_page_ref *));
        for (int i = 0; i < src->n_pages; i++) atomic_fetch_add_explicit(&dst->refs[i]->n, 1, memory_order_relaxed);
        dst->n_pages = src->n_pages;
        st = sync_from(be, dst, 0);
    }
    if (st) hci_pages_drop(be, dst, 0);
    return st;
}
