/* pages.cu - the CUDA backend's cache pages: single pages from the stream-ordered pool and the
 * device mirror of a page table that the kernels read (lib/cache keeps the lists and reference
 * counts). A context at 1M tokens holds ~170,000 pages, so a page is queued on the context's
 * stream (from the device object's pool + cudaMemsetAsync) without a synchronisation of its own; pages_sync
 * completes a list's pending allocations with one stream synchronisation.
 *
 * A session load takes a whole list's pages as one block (pages_alloc_block): one allocation
 * instead of thousands, and a chunk's pages are one range of it, so one DMA fills them. Pages are
 * still freed one by one (lists hold pages by reference), so blocks sit in an address-sorted
 * registry that page_free searches; a block goes back to the pool with its last page (device
 * memory is not handed back in parts: a truncation's dropped pages stay until then). */
#include <limits.h>
#include <stdint.h>
#include <algorithm>
#include "device.h"
#include "hybridctx.h"

using PageDevice = hci_cu_device_guard;

namespace {
struct PageBlock {
    uintptr_t lo, hi;    /* the block's bytes [lo, hi) */
    void *base;
    int live;            /* pages not yet freed */
    cudaStream_t stream; /* of the first free */
    int mixed;           /* pages were freed from several streams */
};
std::mutex blocks_lock;  /* process-wide: a page may be freed by another context of its device */
std::vector<PageBlock> blocks; /* sorted by lo */
} // namespace

/* What page_free (on stream s) must give back to the pool for page p: p itself (not in a block),
 * its block (p was the block's last live page), or nothing. *mixed: the block's pages were
 * freed from several streams (forks sharing it), so the block's free must follow their work. */
static void *block_release(void *p, cudaStream_t s, int *mixed)
{
    uintptr_t a = (uintptr_t)p;
    *mixed = 0;
    std::lock_guard<std::mutex> g(blocks_lock);
    auto it = std::upper_bound(blocks.begin(), blocks.end(), a, [](uintptr_t v, const PageBlock &b) { return v < b.lo; });
    if (it == blocks.begin() || a >= (it - 1)->hi) return p;
    --it;
    if (!it->stream) it->stream = s;
    else if (it->stream != s) it->mixed = 1;
    if (--it->live > 0) return nullptr;
    void *base = it->base;
    *mixed = it->mixed;
    blocks.erase(it);
    return base;
}

int hci_cu_pages_alloc_block(hci_backend *be, size_t bytes, int n, void **out)
{
    hci_cuda *cu = hci_cu(be);
    if (n <= 0 || !bytes || (size_t)n > SIZE_MAX / bytes)
        return hci_errf(be->err, be->errsz, HC_ERR_OUT_OF_MEMORY, "a block of %d pages of %zu bytes", n, bytes);
    PageDevice g(cu->device);
    size_t total = (size_t)n * bytes;
    void *base = nullptr;
    cudaError_t e = cudaMallocFromPoolAsync(&base, total, cu->dev->pool, cu->stream);
    if (e == cudaSuccess) e = cudaMemsetAsync(base, 0, total, cu->stream);
    if (e != cudaSuccess) {
        if (base) cudaFreeAsync(base, cu->stream);
        return hci_cu_fail(be, e, "allocating a block of cache pages");
    }
    PageBlock b = {(uintptr_t)base, (uintptr_t)base + total, base, n, nullptr, 0};
    try {
        std::lock_guard<std::mutex> lk(blocks_lock);
        blocks.insert(std::upper_bound(blocks.begin(), blocks.end(), b.lo,
                                       [](uintptr_t v, const PageBlock &x) { return v < x.lo; }),
                      b);
    } catch (...) {
        cudaFreeAsync(base, cu->stream);
        return hci_errf(be->err, be->errsz, HC_ERR_OUT_OF_MEMORY, "out of memory for the page block registry");
    }
    for (int i = 0; i < n; i++) out[i] = (uint8_t *)base + (size_t)i * bytes;
    return HC_OK;
}

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
    int mixed;
    void *whole = block_release(p, cu->stream, &mixed);
    /* a block whose pages other streams freed may still be read by their queued work: rare
     * (forks of a loaded context), so the whole device is waited for then */
    if (whole && mixed) cudaDeviceSynchronize();
    if (whole) cudaFreeAsync(whole, cu->stream); /* after the queued work that reads it */
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
