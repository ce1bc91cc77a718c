/* xfer.cu - the bulk transfers of session saves and loads (backend.h): page-locked host buffers,
 * each with an event recorded after the last copy queued from or into it, so that the session
 * code reuses a buffer exactly when its copies are done: the DMA engines run beside the disk and
 * the host's hashing, with no stream synchronisation per piece. A load reads the file (O_DIRECT)
 * into these buffers and copies each checked chunk's pages into the list's block (pages.cu) in
 * one cudaMemcpyAsync; a save gathers a chunk's pages into device staging (one kernel,
 * kernels/io) and copies them into a buffer in one DMA. The buffers are anonymous mappings
 * registered with cudaHostRegister rather than cudaHostAlloc's: O_DIRECT needs ordinary user pages
 * (get_user_pages), which the driver's own mappings are not guaranteed to be. They exist only
 * during a save or load, made as the stream first needs them: their number and size are the
 * session code's (a few dozen of a few MiB). */
#include <stdint.h>
#include <sys/mman.h>
#include "device.h"
#include "hybridctx.h"

using DeviceGuard = hci_cu_device_guard;

static const size_t HOST_ALIGN = 4096; /* a page: mappings are aligned and sized in pages */

/* The event of the host_alloc buffer that holds [p, p + n) (n 0: the byte at p), or null. p one
 * past a buffer's end is not in it: mappings are often adjacent, and that is the next buffer's
 * first byte (host_wait of the next buffer must not wait for this one's event instead). */
static cudaEvent_t event_of(hci_cuda *cu, const void *p, size_t n)
{
    uintptr_t a = (uintptr_t)p;
    size_t m = n ? n : 1;
    std::lock_guard<std::mutex> g(cu->xfer.lock);
    for (const hci_cu_hostbuf &b : cu->xfer.bufs) {
        uintptr_t lo = (uintptr_t)b.p;
        if (a >= lo && a - lo < b.bytes && m <= b.bytes - (a - lo)) return b.done;
    }
    return nullptr;
}

int hci_cu_host_alloc(hci_backend *be, size_t bytes, void **out)
{
    hci_cuda *cu = hci_cu(be);
    *out = nullptr;
    if (bytes > SIZE_MAX - HOST_ALIGN)
        return hci_errf(be->err, be->errsz, HC_ERR_OUT_OF_MEMORY, "a host buffer of %zu bytes", bytes);
    DeviceGuard g(cu->device);
    hci_cu_hostbuf b = {nullptr, (bytes + HOST_ALIGN - 1) / HOST_ALIGN * HOST_ALIGN, nullptr};
    if (!b.bytes) b.bytes = HOST_ALIGN;
    void *m = mmap(nullptr, b.bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return hci_errf(be->err, be->errsz, HC_ERR_OUT_OF_MEMORY, "out of host memory for a session buffer of %zu bytes",
                        b.bytes);
    b.p = (uint8_t *)m;
    const char *what = "cudaHostRegister (session buffers)";
    cudaError_t e = cudaHostRegister(b.p, b.bytes, cudaHostRegisterPortable);
    if (e == cudaSuccess) {
        /* blocking: a waiting worker sleeps rather than spin beside the hashing threads */
        e = cudaEventCreateWithFlags(&b.done, cudaEventDisableTiming | cudaEventBlockingSync);
        if (e != cudaSuccess) cudaHostUnregister(b.p), what = "cudaEventCreateWithFlags (session buffers)";
    }
    if (e != cudaSuccess) {
        munmap(b.p, b.bytes);
        return hci_cu_fail(be, e, what);
    }
    try {
        std::lock_guard<std::mutex> lk(cu->xfer.lock);
        cu->xfer.bufs.push_back(b);
    } catch (...) {
        cudaEventDestroy(b.done);
        cudaHostUnregister(b.p);
        munmap(b.p, b.bytes);
        return hci_errf(be->err, be->errsz, HC_ERR_OUT_OF_MEMORY, "out of memory for the session buffer list");
    }
    *out = b.p;
    return HC_OK;
}

/* Wait for a buffer's copies, free it; the device staging goes with the last buffer (the end of
 * the save or load). */
static void free_buf(hci_cuda *cu, const hci_cu_hostbuf &b, int last)
{
    cudaEventSynchronize(b.done);
    cudaEventDestroy(b.done);
    cudaHostUnregister(b.p);
    munmap(b.p, b.bytes);
    if (last && cu->xfer.dev) {
        cudaFreeAsync(cu->xfer.dev, cu->stream);
        cu->xfer.dev = nullptr;
        cu->xfer.dev_bytes = 0;
    }
}

void hci_cu_host_free(hci_backend *be, void *p)
{
    hci_cuda *cu = hci_cu(be);
    hci_cu_hostbuf b = {};
    int found = 0, last = 0;
    {
        std::lock_guard<std::mutex> g(cu->xfer.lock);
        std::vector<hci_cu_hostbuf> &v = cu->xfer.bufs;
        for (size_t i = 0; i < v.size() && !found; i++)
            if (v[i].p == p) {
                b = v[i], found = 1;
                v.erase(v.begin() + (ptrdiff_t)i);
            }
        last = v.empty();
    }
    if (!found) return;
    DeviceGuard g(cu->device);
    free_buf(cu, b, last);
}

/* Runs on the session's worker and I/O threads too: the list is read under its lock (a load
 * adds buffers to it while its stream runs, as they are first needed; event_of copies the event
 * out, and a buffer is freed only after the threads that wait for it are gone). */
int hci_cu_host_wait(hci_backend *be, const void *p, char *err, size_t errsz)
{
    hci_cuda *cu = hci_cu(be);
    cudaEvent_t ev = event_of(cu, p, 0);
    if (!ev) return HC_OK;
    DeviceGuard g(cu->device);
    cudaError_t e = cudaEventSynchronize(ev);
    return e == cudaSuccess ? HC_OK : hci_cu_fail_msg(err, errsz, e, "waiting for a session transfer");
}

int hci_cu_upload_async(hci_backend *be, void *dst, const void *host_src, size_t bytes)
{
    hci_cuda *cu = hci_cu(be);
    if (!bytes) return HC_OK;
    DeviceGuard g(cu->device);
    cudaEvent_t ev = event_of(cu, host_src, bytes);
    HCI_CU_TRY(be, cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, cu->stream));
    if (ev) HCI_CU_TRY(be, cudaEventRecord(ev, cu->stream));
    else HCI_CU_TRY(be, cudaStreamSynchronize(cu->stream)); /* pageable memory: done when it returns */
    return HC_OK;
}

int hci_cu_pages_download(hci_backend *be, const hci_page_list *l, int first, int n, void *host_dst)
{
    hci_cuda *cu = hci_cu(be);
    if (n <= 0) return HC_OK;
    if (first < 0 || n > l->n_pages - first || !l->dev_table)
        return hci_errf(be->err, be->errsz, HC_ERR_INTERNAL, "pages %d..%d of a list of %d", first, first + n - 1,
                        l->n_pages);
    DeviceGuard g(cu->device);
    size_t bytes = (size_t)n * l->page_bytes;
    hci_cu_xfer &x = cu->xfer;
    if (x.dev_bytes < bytes) { /* stream-ordered: the copies queued from the old staging finish first */
        if (x.dev) {
            HCI_CU_TRY(be, cudaFreeAsync(x.dev, cu->stream));
            x.dev = nullptr, x.dev_bytes = 0;
        }
        void *d = nullptr;
        HCI_CU_TRY(be, cudaMallocFromPoolAsync(&d, bytes, cu->dev->pool, cu->stream));
        x.dev = d, x.dev_bytes = bytes;
    }
    if (hci_cu_gather_pages(cu->stream, (const uint8_t *const *)l->dev_table, first, n, l->page_bytes, (uint8_t *)x.dev))
        return hci_cu_fail(be, cudaGetLastError(), "gathering cache pages");
    cudaEvent_t ev = event_of(cu, host_dst, bytes);
    HCI_CU_TRY(be, cudaMemcpyAsync(host_dst, x.dev, bytes, cudaMemcpyDeviceToHost, cu->stream));
    if (ev) HCI_CU_TRY(be, cudaEventRecord(ev, cu->stream));
    else HCI_CU_TRY(be, cudaStreamSynchronize(cu->stream));
    return HC_OK;
}

void hci_cu_xfer_release(hci_cuda *cu)
{
    std::vector<hci_cu_hostbuf> v;
    {
        std::lock_guard<std::mutex> g(cu->xfer.lock);
        v.swap(cu->xfer.bufs);
    }
    DeviceGuard g(cu->device);
    for (size_t i = 0; i < v.size(); i++) free_buf(cu, v[i], 0);
    if (cu->xfer.dev) cudaFreeAsync(cu->xfer.dev, cu->stream);
    cu->xfer.dev = nullptr;
    cu->xfer.dev_bytes = 0;
}
