/* pages.cu - the CUDA backend's cache pages: single pages from the stream-ordered pool and the
 * device mirror of a page table that the kernels read (lib/cache keeps the lists and reference
 * counts). A context at 1M tokens holds ~170,000 pages, so a page is queued on the context's
 * stream (from the device object's pool + cudaMemsetAsync) without a synchronisation of its own; pages_sync
 * completes a list's pending allocations with one stream synchronisation. */
#include <limits.h>
#include "device.h"
#include "hybridctx.h"

using PageDevice = hci_cu_device_guard;

int hci_cu_page_alloc(hci_backend *be, size_t bytes, void **out)
{
    hci_cuda *cu = hci_cu(be);
    PageDevice g(cu->device);
    *out = nullptr;
    cudaError_t e = cudaMallocFromPoolAsync(out, bytes ? bytes : 1, cu->dev->pool, cu->stream);
    if (e == cudaSuccess) e = cudaMemsetAsync(*out, 0, bytes, cu->stream);
    if (e != cudaSuccess) {
        if (*out) cudaFreeAsync(*out, cu->stream);
        *out = nullptr;
        return hci_cu_fail(be, e, "allocating a cache page");
    }
    return HC_OK;
}

void hci_cu_page_free(hci_backend *be, void *p)
{
    hci_cuda *cu = hci_cu(be);
    PageDevice g(cu->device);
    cudaFreeAsync(p, cu->stream); /* after the queued work that reads it */
}

/* A table of at least n entries (doubling), holding the first `keep` entries of the old one. On
 * failure the old table stays. */
static int grow_table(hci_backend *be, hci_page_list *l, int n, int keep)
{
    hci_cuda *cu = hci_cu(be);
    int64_t cap = l->dev_cap ? l->dev_cap : 16;
    while (cap < n) cap *= 2;
    if (cap > INT_MAX) cap = INT_MAX;
    void *t = nullptr;
    HCI_CU_TRY(be, cudaMalloc(&t, (size_t)cap * sizeof(void *)));
    cudaError_t e = cudaSuccess;
    if (keep > 0) e = cudaMemcpyAsync(t, l->dev_table, (size_t)keep * sizeof(void *), cudaMemcpyDeviceToDevice, cu->stream);
    /* queued kernels may still read the old table */
    if (e == cudaSuccess) e = cudaStreamSynchronize(cu->stream);
    if (e != cudaSuccess) {
        cudaFree(t);
        return hci_cu_fail(be, e, "growing a page table");
    }
    cudaFree(l->dev_table);
    l->dev_table = t;
    l->dev_cap = (int)cap;
    return HC_OK;
}

int hci_cu_pages_sync(hci_backend *be, hci_page_list *l, int first)
{
    hci_cuda *cu = hci_cu(be);
    PageDevice g(cu->device);
    if (!l->dev_table) first = 0;
    if (first > l->dev_cap) first = l->dev_cap;
    if (l->n_pages > l->dev_cap) {
        int st = grow_table(be, l, l->n_pages, first);
        if (st) return st;
    }
    if (first < l->n_pages)
        HCI_CU_TRY(be, cudaMemcpyAsync((void **)l->dev_table + first, l->pages + first,
                                       (size_t)(l->n_pages - first) * sizeof(void *), cudaMemcpyHostToDevice,
                                       cu->stream));
    /* completes the queued page allocations too */
    HCI_CU_TRY(be, cudaStreamSynchronize(cu->stream));
    return HC_OK;
}
