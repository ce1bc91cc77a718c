/* io.cu - input and output conversion, the finiteness check, packing rows into cache entries
 * (window ring writes), and gathering rows of several contexts (batches) and pages (session saves). */
#include "../common.cuh"
#include "config.h"
#include "io.h"

static unsigned blocks_for(int64_t n, int per) { return (unsigned)((n + per - 1) / per); }

__global__ void check_finite_kernel(const void *x, int bf16, int64_t count, int *flag)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count) return;
    int bad = bf16 ? ((((const uint16_t *)x)[i] & 0x7f80) == 0x7f80)
                   : ((((const uint32_t *)x)[i] & 0x7f800000u) == 0x7f800000u);
    if (bad) *flag = 1;
}

int hci_cu_check_finite(cudaStream_t s, const void *x, int bf16, int64_t count, int *flag_dev)
{
    if (count <= 0) return HC_OK;
    check_finite_kernel<<<blocks_for(count, IO_THREADS), IO_THREADS, 0, s>>>(x, bf16, count, flag_dev);
    return HCI_CU_CHECK_LAUNCH();
}

__global__ void to_bf16_kernel(const void *x, int bf16, int64_t count, uint16_t *out)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count) return;
    out[i] = bf16 ? ((const uint16_t *)x)[i] : hci_bf16_from_f32(((const float *)x)[i]);
}

int hci_cu_to_bf16(cudaStream_t s, const void *x, int bf16, int64_t count, uint16_t *out)
{
    if (count <= 0) return HC_OK;
    to_bf16_kernel<<<blocks_for(count, IO_THREADS), IO_THREADS, 0, s>>>(x, bf16, count, out);
    return HCI_CU_CHECK_LAUNCH();
}

__global__ void from_bf16_kernel(const uint16_t *x, int bf16, int64_t count, void *out)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count) return;
    if (bf16) ((uint16_t *)out)[i] = x[i];
    else ((float *)out)[i] = hci_f32_from_bf16(x[i]);
}

int hci_cu_from_bf16(cudaStream_t s, const uint16_t *x, int bf16, int64_t count, void *out)
{
    if (count <= 0) return HC_OK;
    from_bf16_kernel<<<blocks_for(count, IO_THREADS), IO_THREADS, 0, s>>>(x, bf16, count, out);
    return HCI_CU_CHECK_LAUNCH();
}

__global__ void bf16_to_f64_kernel(const uint16_t *x, int64_t count, double *out)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) out[i] = (double)hci_f32_from_bf16(x[i]);
}

int hci_cu_bf16_to_f64(cudaStream_t s, const uint16_t *x, int64_t count, double *out)
{
    if (count <= 0) return HC_OK;
    bf16_to_f64_kernel<<<blocks_for(count, IO_THREADS), IO_THREADS, 0, s>>>(x, count, out);
    return HCI_CU_CHECK_LAUNCH();
}

/* One CTA per row: x + y kept in x (f32) or recomputed (bf16), then scaled. */
__global__ void __launch_bounds__(IO_ROW_THREADS) residual_norm_kernel(void *x, const void *y, int bf16, int dim,
                                                                        float eps)
{
    __shared__ float part[IO_ROW_THREADS / 32];
    const size_t r0 = (size_t)blockIdx.x * dim;
    auto sum = [&](int i) -> float {
        if (bf16)
            return hci_f32_from_bf16(((const uint16_t *)x)[r0 + i]) + hci_f32_from_bf16(((const uint16_t *)y)[r0 + i]);
        float *xf = (float *)x + r0 + i;
        return *xf += ((const float *)y)[r0 + i];
    };
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += IO_ROW_THREADS) {
        float v = sum(i);
        ss = fmaf(v, v, ss);
    }
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = ss;
    __syncthreads();
    float s = 0.0f;
    for (int w = 0; w < IO_ROW_THREADS / 32; w++) s += part[w];
    const float rs = rsqrtf(s / (float)dim + eps);
    for (int i = threadIdx.x; i < dim; i += IO_ROW_THREADS) {
        if (bf16) ((uint16_t *)x)[r0 + i] = hci_bf16_from_f32(sum(i) * rs);
        else ((float *)x)[r0 + i] *= rs;
    }
}

int hci_cu_residual_norm(cudaStream_t s, void *x, const void *y, int bf16, int64_t rows, int dim, float eps)
{
    if (rows <= 0) return HC_OK;
    if (rows > 0x7fffffff || dim <= 0) return HC_ERR_INVALID_ARG;
    residual_norm_kernel<<<(unsigned)rows, IO_ROW_THREADS, 0, s>>>(x, y, bf16, dim, eps);
    return HCI_CU_CHECK_LAUNCH();
}

/* One CTA per row: the values are already on the cache grid; see hci_dev_pack_entry. */
__global__ void pack_rows_kernel(hci_entry_layout l, uint8_t *const *pages, const uint16_t *rows,
                                 int64_t first, int64_t modulo)
{
    extern __shared__ float v[];
    int r = blockIdx.x;
    int64_t e = first + r;
    if (modulo > 0) e %= modulo;
    for (int i = threadIdx.x; i < l.dim; i += blockDim.x) v[i] = hci_f32_from_bf16(rows[(size_t)r * l.dim + i]);
    __syncthreads();
    hci_dev_pack_entry(l, pages[e / HCI_PAGE_ENTRIES], (int)(e % HCI_PAGE_ENTRIES), v);
}

int hci_cu_pack_rows(cudaStream_t s, const hci_entry_layout *l, uint8_t *const *pages, const uint16_t *rows,
                     int n, int64_t first_entry, int64_t modulo)
{
    if (n <= 0) return HC_OK;
    pack_rows_kernel<<<n, IO_PACK_THREADS, (size_t)l->dim * sizeof(float), s>>>(*l, pages, rows, first_entry, modulo);
    return HCI_CU_CHECK_LAUNCH();
}

namespace {
struct RowSrc {
    const uint16_t *p[HCI_CU_ROWS_MAX];
};
} // namespace

/* One CTA per row; 16-byte words when the row and its source allow. */
__global__ void gather_rows_kernel(const __grid_constant__ RowSrc src, int cols, uint16_t *dst)
{
    const uint16_t *in = src.p[blockIdx.x];
    uint16_t *out = dst + (size_t)blockIdx.x * cols;
    if (cols % 8 == 0 && hci_aligned16(in) && hci_aligned16(out)) {
        for (int i = threadIdx.x; i < cols / 8; i += blockDim.x) ((uint4 *)out)[i] = ((const uint4 *)in)[i];
    } else {
        for (int i = threadIdx.x; i < cols; i += blockDim.x) out[i] = in[i];
    }
}

int hci_cu_gather_rows(cudaStream_t s, const uint16_t *const *src, int n, int cols, uint16_t *dst)
{
    if (n <= 0) return HC_OK;
    if (n > HCI_CU_ROWS_MAX) return HC_ERR_INVALID_ARG;
    RowSrc r = {};
    for (int t = 0; t < n; t++) r.p[t] = src[t];
    gather_rows_kernel<<<n, IO_GATHER_THREADS, 0, s>>>(r, cols, dst);
    return HCI_CU_CHECK_LAUNCH();
}

/* One CTA per page, 16-byte words when the page size allows (pages of 64 entries of whole bytes
 * are multiples of 64 bytes, and pages start 16-byte aligned), else bytes. */
__global__ void gather_pages_kernel(const uint8_t *const *pages, int first, size_t page_bytes, uint8_t *dst)
{
    const uint8_t *src = pages[first + blockIdx.x];
    uint8_t *out = dst + (size_t)blockIdx.x * page_bytes;
    if (page_bytes % 16 == 0) {
        for (size_t i = threadIdx.x; i < page_bytes / 16; i += blockDim.x)
            ((uint4 *)out)[i] = ((const uint4 *)src)[i];
    } else {
        for (size_t i = threadIdx.x; i < page_bytes; i += blockDim.x) out[i] = src[i];
    }
}

int hci_cu_gather_pages(cudaStream_t s, const uint8_t *const *pages, int first, int n, size_t page_bytes, uint8_t *dst)
{
    if (n <= 0) return HC_OK;
    gather_pages_kernel<<<n, IO_GATHER_THREADS, 0, s>>>(pages, first, page_bytes, dst);
    return HCI_CU_CHECK_LAUNCH();
}
