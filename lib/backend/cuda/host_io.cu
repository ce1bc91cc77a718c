/* host_io.cu - x and y in host memory (HC_MEM_HOST): the values cross PCIe as bf16, through the
 * context's pinned staging pieces (cuda_internal.h: HCI_CU_STAGE_N pieces of at most
 * HCI_CU_STAGE_BYTES), so that the DMA engines copy at full speed (a copy from pageable memory is
 * staged by the driver and synchronous). The host converts one piece (f32 -> bf16 for x, with the
 * finiteness check in the same pass; bf16 -> f32 for y) while the other piece's DMA runs; an event
 * per piece, recorded after its DMA, tells the host when it may touch the piece again. The
 * conversions run on the device object's host threads when no other context holds them
 * (device.h), else on the calling thread. docs/cuda.md ("Memory", "Host I/O") gives the costs. */
#include <string.h>
#include <atomic>
#include <optional>
#include "device.h"
#include "host_conv.h"
#include "hybridctx.h"
extern "C" {
#include "../../util/threadpool.h"
}

using DeviceGuard = hci_cu_device_guard;

/* values per host range: 256 KiB of f32, a small multiple of the threads per piece */
static const int64_t GRAIN = (int64_t)1 << 16;

int hci_cu_host_reserve(hci_backend *be, int64_t count)
{
    hci_cuda *cu = hci_cu(be);
    hci_cu_staging &s = cu->stage;
    size_t want = count > 0 ? (size_t)count * 2 : 1;
    want = (want + HCI_CU_STAGE_MIN - 1) / HCI_CU_STAGE_MIN * HCI_CU_STAGE_MIN;
    if (want > HCI_CU_STAGE_BYTES) want = HCI_CU_STAGE_BYTES;
    if (s.piece_bytes >= want) return HC_OK;
    DeviceGuard g(cu->device);
    /* the new pieces (and, the first time, the events) before anything of the old is let go */
    void *buf[HCI_CU_STAGE_N] = {};
    cudaEvent_t done[HCI_CU_STAGE_N] = {};
    cudaError_t e = cudaSuccess;
    const char *what = "cudaHostAlloc (host I/O staging)";
    for (int i = 0; i < HCI_CU_STAGE_N && e == cudaSuccess; i++) {
        e = cudaHostAlloc(&buf[i], want, cudaHostAllocPortable);
        if (e != cudaSuccess) buf[i] = nullptr;
    }
    for (int i = 0; i < HCI_CU_STAGE_N && e == cudaSuccess && !s.done[0]; i++) {
        e = cudaEventCreateWithFlags(&done[i], cudaEventDisableTiming);
        if (e != cudaSuccess) done[i] = nullptr, what = "cudaEventCreateWithFlags (host I/O staging)";
    }
    /* the old pieces' DMAs are done before they are freed */
    for (int i = 0; i < HCI_CU_STAGE_N && e == cudaSuccess && s.buf[i]; i++)
        if ((e = cudaEventSynchronize(s.done[i])) != cudaSuccess) what = "cudaEventSynchronize (host I/O staging)";
    if (e != cudaSuccess) {
        for (int i = 0; i < HCI_CU_STAGE_N; i++) {
            if (buf[i]) cudaFreeHost(buf[i]);
            if (done[i]) cudaEventDestroy(done[i]);
        }
        return hci_cu_fail(be, e, what);
    }
    for (int i = 0; i < HCI_CU_STAGE_N; i++) {
        if (s.buf[i]) cudaFreeHost(s.buf[i]);
        s.buf[i] = buf[i];
        if (done[i]) s.done[i] = done[i];
    }
    s.piece_bytes = want;
    return HC_OK;
}

void hci_cu_host_release(hci_cuda *cu)
{
    hci_cu_staging &s = cu->stage;
    DeviceGuard g(cu->device);
    for (int i = 0; i < HCI_CU_STAGE_N; i++) {
        if (s.buf[i]) {
            if (s.done[i]) cudaEventSynchronize(s.done[i]);
            cudaFreeHost(s.buf[i]);
        }
        if (s.done[i]) cudaEventDestroy(s.done[i]);
        s.buf[i] = nullptr;
        s.done[i] = nullptr;
    }
    s.piece_bytes = 0;
}

/* ---------------------------------------------------------------------------------------------
 * the host passes, split over the device object's threads when they are free
 * ------------------------------------------------------------------------------------------- */
namespace {
enum Pass { TO_BF16, FROM_BF16, CHECK };
struct Job {
    Pass pass;
    int bf16;              /* the io dtype is bf16 (else f32) */
    const void *src;
    void *dst;
    std::atomic<uint32_t> bad{0};
};
} // namespace

static void run_range(void *arg, int64_t lo, int64_t hi, int tid)
{
    (void)tid;
    Job *j = (Job *)arg;
    size_t esz = j->bf16 ? 2 : 4;
    uint32_t bad = 0;
    switch (j->pass) {
    case TO_BF16: /* caller's x -> bf16 staging, checked */
        if (j->bf16) bad = hci_host_copy_bf16((const uint16_t *)j->src + lo, (uint16_t *)j->dst + lo, hi - lo);
        else bad = hci_host_f32_to_bf16((const float *)j->src + lo, (uint16_t *)j->dst + lo, hi - lo);
        break;
    case FROM_BF16: /* bf16 staging -> caller's y */
        if (j->bf16) memcpy((uint16_t *)j->dst + lo, (const uint16_t *)j->src + lo, (size_t)(hi - lo) * 2);
        else hci_host_bf16_to_f32((const uint16_t *)j->src + lo, (float *)j->dst + lo, hi - lo);
        break;
    case CHECK:
        bad = hci_host_nonfinite((const char *)j->src + (size_t)lo * esz, j->bf16, hi - lo);
        break;
    }
    if (bad) j->bad.store(1, std::memory_order_relaxed);
}

/* One pass over n values; returns nonzero when the pass saw a NaN or infinity. The pool is taken
 * per pass, never across a wait for the GPU, so contexts of the device share it piece by piece. */
static uint32_t host_pass(hci_cuda *cu, Pass pass, int bf16, const void *src, void *dst, int64_t n)
{
    Job j;
    j.pass = pass, j.bf16 = bf16, j.src = src, j.dst = dst;
    hci_pool *pool = n > GRAIN ? hci_cu_device_take_io_pool(cu->dev) : nullptr;
    hci_pool_for(pool, n, GRAIN, run_range, &j);
    if (pool) hci_cu_device_give_io_pool(cu->dev);
    return j.bad.load(std::memory_order_relaxed);
}

/* ---------------------------------------------------------------------------------------------
 * the ops' host paths
 * ------------------------------------------------------------------------------------------- */
namespace {
/* What a load or a store of count > 0 values starts with (start): the pinned pieces for count
 * (hci_cu_host_reserve; start returns its status), then the context's device made current until
 * the call returns (g), the piece size P in values and the size esz of one caller value. */
struct HostCall {
    hci_cuda *cu;
    hci_cu_staging &s;
    std::optional<DeviceGuard> g;
    int64_t P = 0;
    size_t esz = 0;
    explicit HostCall(hci_backend *be) : cu(hci_cu(be)), s(cu->stage) {}
    int start(hci_backend *be, int64_t count, int bf16)
    {
        int st = hci_cu_host_reserve(be, count);
        if (st) return st;
        g.emplace(cu->device);
        P = (int64_t)(s.piece_bytes / 2);
        esz = bf16 ? 2 : 4;
        return HC_OK;
    }
};
} // namespace

int hci_cu_host_check(hci_backend *be, const void *x, int bf16, int64_t count, int *bad)
{
    *bad = count > 0 && host_pass(hci_cu(be), CHECK, bf16, x, nullptr, count) != 0;
    return HC_OK;
}

int hci_cu_host_load(hci_backend *be, const void *x, int bf16, int64_t count, uint16_t *xb, int *bad)
{
    if (bad) *bad = 0;
    if (count <= 0) return HC_OK;
    HostCall c(be);
    int st = c.start(be, count, bf16);
    if (st) return st;
    for (int64_t off = 0, i = 0; off < count; off += c.P, i++) {
        int k = (int)(i % HCI_CU_STAGE_N);
        int64_t m = count - off < c.P ? count - off : c.P;
        /* the last DMA from or into this piece is done (that of piece i - HCI_CU_STAGE_N, or of an
         * earlier call); meanwhile the other piece's DMA runs */
        HCI_CU_TRY(be, cudaEventSynchronize(c.s.done[k]));
        uint32_t b = host_pass(c.cu, TO_BF16, bf16, (const char *)x + (size_t)off * c.esz, c.s.buf[k], m);
        if (b && bad) { /* refused: nothing more is queued */
            *bad = 1;
            return HC_OK;
        }
        HCI_CU_TRY(be, cudaMemcpyAsync(xb + off, c.s.buf[k], (size_t)m * 2, cudaMemcpyHostToDevice, c.cu->stream));
        HCI_CU_TRY(be, cudaEventRecord(c.s.done[k], c.cu->stream));
    }
    return HC_OK;
}

int hci_cu_host_store(hci_backend *be, const uint16_t *yb, int bf16, int64_t count, void *y)
{
    if (count <= 0) return HC_OK;
    HostCall c(be);
    int st = c.start(be, count, bf16);
    if (st) return st;
    const int64_t n_pieces = (count + c.P - 1) / c.P;
    /* Piece i's DMA is queued (behind the work that computes yb) before the host converts piece
     * i - 1. A piece's earlier DMA (an input's) is on the same stream, so no host wait is needed
     * before queueing into it; the host's own use of it ended with the previous conversion. */
    for (int64_t i = 0; i <= n_pieces; i++) {
        if (i < n_pieces) {
            int k = (int)(i % HCI_CU_STAGE_N);
            int64_t off = i * c.P, m = count - off < c.P ? count - off : c.P;
            HCI_CU_TRY(be, cudaMemcpyAsync(c.s.buf[k], yb + off, (size_t)m * 2, cudaMemcpyDeviceToHost, c.cu->stream));
            HCI_CU_TRY(be, cudaEventRecord(c.s.done[k], c.cu->stream));
        }
        if (i > 0) {
            int k = (int)((i - 1) % HCI_CU_STAGE_N);
            int64_t off = (i - 1) * c.P, m = count - off < c.P ? count - off : c.P;
            HCI_CU_TRY(be, cudaEventSynchronize(c.s.done[k]));
            host_pass(c.cu, FROM_BF16, bf16, c.s.buf[k], (char *)y + (size_t)off * c.esz, m);
        }
    }
    return HC_OK;
}
