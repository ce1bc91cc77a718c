/* device.h - one object per (model, GPU): what every context of that model on that GPU shares.
 * The weights are uploaded once, by the first context; the cuBLASLt handle, the memory pool of
 * the cache pages, the streams of contexts that bring none and the cuBLASLt workspaces live here
 * too (streams and workspaces are lent to one context at a time and come back when it is freed,
 * so the next context reuses them). A device object is kept until hc_model_free() and until the
 * last context that holds a reference to it is freed, whichever comes last. (C++, nvcc only.) */
#ifndef HCI_CUDA_DEVICE_H
#define HCI_CUDA_DEVICE_H
#include <atomic>
#include <mutex>
#include <vector>
#include "cuda_internal.h"

struct hci_cu_device {
    const struct hc_model *model;
    int ordinal;
    std::atomic<int> refs;          /* the registry's (until hc_model_free) + one per context */
    hci_cu_weights w;               /* w.layers NULL for a geometry-only model */
    std::vector<void *> weight_allocs;
    cublasLtHandle_t lt;            /* thread-safe: it holds no stream */
    /* cuBLASLt algorithms pinned per projection shape (cuda_gemm.cu), the same for every
     * context of the model on this GPU */
    std::mutex algo_lock;
    std::vector<hci_cu_lt_algo> algos;
    cudaMemPool_t pool;             /* cache pages (cudaMallocFromPoolAsync) */
    std::mutex lock;                /* guards the two lists below */
    std::vector<cudaStream_t> idle_streams;
    std::vector<void *> idle_workspaces;
    size_t workspace_bytes;         /* of each cuBLASLt workspace */
    /* host threads for the conversions of host-memory x and y (host_io.cu): made on first use,
     * used by one context at a time (io_lock); a context that finds it busy converts alone */
    std::mutex io_lock;
    struct hci_pool *io_pool;
    int io_pool_tried;              /* creation attempted (under io_lock) */
};

/* The device object of (m, ordinal), made on first use, with one reference for the caller.
 * Errors (HC_ERR_CUDA, HC_ERR_CUBLAS, HC_ERR_OUT_OF_MEMORY) are formatted into err. */
int hci_cu_device_get(const struct hc_model *m, int ordinal, char *err, size_t errsz, hci_cu_device **out);
/* Drop one reference; the last one frees everything on the GPU. */
void hci_cu_device_put(hci_cu_device *d);
/* hc_model_free(m): the registry drops its references to m's device objects. */
void hci_cu_devices_release_model(const struct hc_model *m);

/* A stream for a context that brings none (non-blocking), and back when the context is freed
 * (after its work is done). */
int hci_cu_device_take_stream(hci_cu_device *d, cudaStream_t *out);
void hci_cu_device_give_stream(hci_cu_device *d, cudaStream_t s);
/* A cuBLASLt workspace of d->workspace_bytes for one context, and back. */
int hci_cu_device_take_workspace(hci_cu_device *d, void **out);
void hci_cu_device_give_workspace(hci_cu_device *d, void *ws);

/* The device object's host thread pool for host I/O conversions, held by the caller until
 * hci_cu_device_give_io_pool(); NULL (nothing held) when another context holds it or it could
 * not be made: convert on the calling thread then. Never blocks. */
struct hci_pool *hci_cu_device_take_io_pool(hci_cu_device *d);
void hci_cu_device_give_io_pool(hci_cu_device *d);

/* Runs the scope on one device and gives the caller's current device back. */
struct hci_cu_device_guard {
    int prev = -1;
    explicit hci_cu_device_guard(int dev)
    {
        if (cudaGetDevice(&prev) != cudaSuccess) prev = -1;
        if (prev != dev) cudaSetDevice(dev);
    }
    ~hci_cu_device_guard()
    {
        int cur;
        if (prev >= 0 && cudaGetDevice(&cur) == cudaSuccess && cur != prev) cudaSetDevice(prev);
    }
};

#endif
