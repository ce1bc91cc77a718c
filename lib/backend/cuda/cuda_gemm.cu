/* cuda_gemm.cu - the projections: FP8 block-scaled GEMMs with the DeepSeek recipe (1x128
 * activation scales, 128x128 weight scales) on kernels/gemv.cu and kernels/gemm_fp8.cu, with the
 * CPU backend's arithmetic, or on cuBLASLt for comparison (verified layouts in
 * /shared/spec/cuda-facts.md), grouped bf16 GEMMs (fp32 accumulation), and double GEMMs for the
 * projections whose fp32 result must match the CPU backend bit for bit. */
#include <cuda_fp8.h>
#include <stdlib.h>
#include <string.h>
#include "cuda_internal.h"
#include "hybridctx.h"
#include "util/quant.h"

static size_t align256(size_t b) { return (b + 255) & ~(size_t)255; }
static int round16(int n) { return (n + 15) & ~15; }

size_t hci_cu_fp8_scratch_bytes(int n, int cols)
{
    int np = round16(n);
    return align256((size_t)np * cols) + align256((size_t)np * (cols / 128) * sizeof(float));
}

/* One warp per (token, 128-block), four values per lane: amax (warp max), power-of-two scale,
 * e4m3 codes; padding rows get zero codes and scale 1. Scales are written K-block major
 * ([K/128][np], tokens contiguous). */
__global__ void act_quant_kernel(const uint16_t *x, int ldx, int n, int np, int cols, uint8_t *q, float *s)
{
    int nkb = cols / 128, lane = threadIdx.x % 32;
    int64_t w = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    if (w >= (int64_t)np * nkb) return;
    int t = (int)(w / nkb), kb = (int)(w % nkb);
    uint32_t *qo = (uint32_t *)(q + (size_t)t * cols + (size_t)kb * 128) + lane;
    if (t >= n) {
        *qo = 0;
        if (lane == 0) s[(size_t)kb * np + t] = 1.0f;
        return;
    }
    const uint16_t *xr = x + (size_t)t * ldx + (size_t)kb * 128 + lane * 4;
    float v[4], amax = 0.0f;
    for (int i = 0; i < 4; i++) v[i] = hci_f32_from_bf16(xr[i]), amax = fmaxf(amax, fabsf(v[i]));
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    float sc = hci_pow2(hci_pow2_ceil_exp(fmaxf(amax, 1e-4f), 1.0f / HCI_E4M3_MAX));
    uint32_t packed = 0;
    for (int i = 0; i < 4; i++) {
        float u = fminf(fmaxf(v[i] / sc, -HCI_E4M3_MAX), HCI_E4M3_MAX);
        packed |= (uint32_t)hci_e4m3_encode(hci_e4m3_round(u)) << (8 * i);
    }
    *qo = packed;
    if (lane == 0) s[(size_t)kb * np + t] = sc;
}

namespace {
struct LtDesc {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulPreference_t pref = nullptr;
    ~LtDesc()
    {
        if (pref) cublasLtMatmulPreferenceDestroy(pref);
        if (c) cublasLtMatrixLayoutDestroy(c);
        if (b) cublasLtMatrixLayoutDestroy(b);
        if (a) cublasLtMatrixLayoutDestroy(a);
        if (op) cublasLtMatmulDescDestroy(op);
    }
};
}

#define LT_TRY(be, call)                                                 \
    do {                                                                 \
        cublasStatus_t s_ = (call);                                      \
        if (s_ != CUBLAS_STATUS_SUCCESS) return hci_cu_blas_fail((be), s_, #call); \
    } while (0)

/* Run the matmul of d with the first heuristic algorithm; y = W^T-op x as column-major. */
static int lt_run(hci_backend *be, LtDesc &d, const void *alpha, const void *A, const void *B, const void *beta,
                  void *D)
{
    hci_cuda *cu = hci_cu(be);
    LT_TRY(be, cublasLtMatmulPreferenceCreate(&d.pref));
    LT_TRY(be, cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                    &cu->lt_ws_bytes, sizeof cu->lt_ws_bytes));
    cublasLtMatmulHeuristicResult_t h;
    int got = 0;
    LT_TRY(be, cublasLtMatmulAlgoGetHeuristic(cu->lt, d.op, d.a, d.b, d.c, d.c, d.pref, 1, &h, &got));
    if (!got) return hci_cu_blas_fail(be, CUBLAS_STATUS_NOT_SUPPORTED, "no cuBLASLt algorithm for this shape");
    LT_TRY(be, cublasLtMatmul(cu->lt, d.op, alpha, A, d.a, B, d.b, beta, D, d.c, D, d.c, &h.algo, cu->lt_ws,
                              cu->lt_ws_bytes, cu->stream));
    return HC_OK;
}

/* HC_CUBLASLT_FP8=1 keeps the FP8 projections of more than 16 tokens on cuBLASLt (its FP8
 * tensor-core accumulation, not the CPU's arithmetic), to compare speed and results. Read once. */
static bool fp8_use_cublaslt()
{
    static const bool on = [] {
        const char *e = getenv("HC_CUBLASLT_FP8");
        return e && !strcmp(e, "1");
    }();
    return on;
}

int hci_cu_linear_fp8(hci_backend *be, const hci_cu_fp8 *W, int n, const uint16_t *x, int ldx, uint16_t *y,
                      int ldy, void *scratch)
{
    hci_cuda *cu = hci_cu(be);
    int np = round16(n), K = W->cols, M = W->rows;
    uint8_t *q = (uint8_t *)scratch;
    float *qs = (float *)((char *)scratch + align256((size_t)np * K));
    int64_t items = (int64_t)np * (K / 128);
    act_quant_kernel<<<(unsigned)((items * 32 + 255) / 256), 256, 0, cu->stream>>>(x, ldx, n, np, K, q, qs);
    HCI_CU_TRY(be, cudaGetLastError());
    if (n <= HCI_CU_GEMV_MAX_N) {
        int st = hci_cu_gemv_fp8(cu->stream, W->w, W->scale, W->sld, M, K, q, qs, np, n, y, ldy);
        if (st == HC_ERR_CUDA) return hci_cu_fail(be, cudaGetLastError(), "gemv_fp8");
        if (st) return hci_errf(be->err, be->errsz, st, "gemv_fp8: unsupported %dx%d weight layout", M, K);
        return HC_OK;
    }
    if (!fp8_use_cublaslt()) {
        int st = hci_cu_gemm_fp8(cu->stream, W->w, W->scale, W->sld, M, K, q, qs, np, n, y, ldy);
        if (st == HC_ERR_CUDA) return hci_cu_fail(be, cudaGetLastError(), "gemm_fp8");
        if (st) return hci_errf(be->err, be->errsz, st, "gemm_fp8: unsupported %dx%d weight for %d tokens", M, K, n);
        return HC_OK;
    }
    LtDesc d;
    LT_TRY(be, cublasLtMatmulDescCreate(&d.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t T = CUBLAS_OP_T, N = CUBLAS_OP_N;
    LT_TRY(be, cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &T, sizeof T));
    LT_TRY(be, cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &N, sizeof N));
    int32_t am = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F, bm = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
    LT_TRY(be, cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &am, sizeof am));
    LT_TRY(be, cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &bm, sizeof bm));
    const float *as = W->scale;
    LT_TRY(be, cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &as, sizeof as));
    LT_TRY(be, cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &qs, sizeof qs));
    LT_TRY(be, cublasLtMatrixLayoutCreate(&d.a, CUDA_R_8F_E4M3, K, M, K));
    LT_TRY(be, cublasLtMatrixLayoutCreate(&d.b, CUDA_R_8F_E4M3, K, np, K));
    LT_TRY(be, cublasLtMatrixLayoutCreate(&d.c, CUDA_R_16BF, M, np, ldy));
    float alpha = 1.0f, beta = 0.0f;
    return lt_run(be, d, &alpha, W->w, q, &beta, y);
}

int hci_cu_linear_bf16_grouped(hci_backend *be, const hci_cu_bf16 *W, int groups, int n, const uint16_t *x,
                               int ldx, uint16_t *z, int ldz)
{
    int M = W->rows / groups, K = W->cols;
    if (n <= HCI_CU_GEMV_MAX_N) {
        if (hci_cu_gemv_bf16(hci_cu(be)->stream, W->w, W->rows, K, groups, x, ldx, n, nullptr, z, ldz))
            return hci_cu_fail(be, cudaGetLastError(), "gemv_bf16");
        return HC_OK;
    }
    LtDesc d;
    LT_TRY(be, cublasLtMatmulDescCreate(&d.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t T = CUBLAS_OP_T, N = CUBLAS_OP_N;
    LT_TRY(be, cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &T, sizeof T));
    LT_TRY(be, cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &N, sizeof N));
    LT_TRY(be, cublasLtMatrixLayoutCreate(&d.a, CUDA_R_16BF, K, M, K));
    LT_TRY(be, cublasLtMatrixLayoutCreate(&d.b, CUDA_R_16BF, K, n, ldx));
    LT_TRY(be, cublasLtMatrixLayoutCreate(&d.c, CUDA_R_16BF, M, n, ldz));
    int32_t bc = groups;
    int64_t sa = (int64_t)M * K, sb = K, sc = M;
    LT_TRY(be, cublasLtMatrixLayoutSetAttribute(d.a, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof bc));
    LT_TRY(be, cublasLtMatrixLayoutSetAttribute(d.a, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &sa, sizeof sa));
    LT_TRY(be, cublasLtMatrixLayoutSetAttribute(d.b, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof bc));
    LT_TRY(be, cublasLtMatrixLayoutSetAttribute(d.b, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &sb, sizeof sb));
    LT_TRY(be, cublasLtMatrixLayoutSetAttribute(d.c, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof bc));
    LT_TRY(be, cublasLtMatrixLayoutSetAttribute(d.c, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &sc, sizeof sc));
    float alpha = 1.0f, beta = 0.0f;
    return lt_run(be, d, &alpha, W->w, x, &beta, z);
}

int hci_cu_linear_f64(hci_backend *be, const hci_cu_f64 *W, int n, const double *xd, double *out)
{
    int M = W->rows, K = W->cols;
    LtDesc d;
    LT_TRY(be, cublasLtMatmulDescCreate(&d.op, CUBLAS_COMPUTE_64F, CUDA_R_64F));
    cublasOperation_t T = CUBLAS_OP_T, N = CUBLAS_OP_N;
    LT_TRY(be, cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &T, sizeof T));
    LT_TRY(be, cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &N, sizeof N));
    LT_TRY(be, cublasLtMatrixLayoutCreate(&d.a, CUDA_R_64F, K, M, K));
    LT_TRY(be, cublasLtMatrixLayoutCreate(&d.b, CUDA_R_64F, K, n, K));
    LT_TRY(be, cublasLtMatrixLayoutCreate(&d.c, CUDA_R_64F, M, n, M));
    double alpha = 1.0, beta = 0.0;
    return lt_run(be, d, &alpha, W->w, xd, &beta, out);
}
