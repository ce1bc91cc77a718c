/* cuda_gemm.cu - the projections (host side): FP8 block-scaled GEMMs with the DeepSeek recipe
 * (1x128 activation scales, 128x128 weight scales) as act_quant (kernels/quant) then the GEMV
 * (kernels/gemv) or GEMM (kernels/gemm) family, with the CPU backend's arithmetic, or, with the
 * option fp8_gemm_cublaslt, cuBLASLt's FP8 GEMM for comparison (verified layouts in
 * /shared/spec/cuda-facts.md); grouped bf16 GEMMs (fp32 accumulation), double GEMMs for the
 * projections whose fp32 result must match the CPU backend bit for bit, and (option comp_fast)
 * the same projections on the own batch-invariant bf16 GEMM. */
#include "cuda_internal.h"
#include "hybridctx.h"

/* Token rows of the quantized activations: the GEMM's and cuBLASLt's N must be a multiple of 16. */
static int round16(int n) { return (n + 15) & ~15; }
static_assert(AQ_ROW_MULT == 16 && GF_NP_MULT == 16, "round16 pads for the GEMM family");

size_t hci_cu_fp8_scratch_bytes(int n, int cols)
{
    int np = round16(n);
    return hci_align256((size_t)np * cols) + hci_align256((size_t)np * (cols / AQ_BLOCK) * sizeof(float));
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

int hci_cu_linear_fp8(hci_backend *be, const hci_cu_fp8 *W, int n, const uint16_t *x, int ldx, uint16_t *y,
                      int ldy, void *scratch)
{
    hci_cuda *cu = hci_cu(be);
    int np = round16(n), K = W->cols, M = W->rows;
    uint8_t *q = (uint8_t *)scratch;
    float *qs = (float *)((char *)scratch + hci_align256((size_t)np * K));
    if (hci_cu_act_quant(cu->stream, x, ldx, n, np, K, q, qs)) return hci_cu_fail(be, cudaGetLastError(), "act_quant");
    if (cu->opt.gemv_fast && n <= HCI_CU_GEMV_FAST_MAX_N && M % GT_ROWS == 0) {
        int st = hci_cu_gemv_fp8_fast(cu->stream, W->w, W->scale, W->sld, M, K, q, qs, np, n, y, ldy);
        if (st == HC_ERR_CUDA) return hci_cu_fail(be, cudaGetLastError(), "gemv_fp8_fast");
        if (st) return hci_errf(be->err, be->errsz, st, "gemv_fp8_fast: unsupported %dx%d weight layout", M, K);
        return HC_OK;
    }
    if (n <= HCI_CU_GEMV_MAX_N) {
        int st = hci_cu_gemv_fp8(cu->stream, W->w, W->scale, W->sld, M, K, q, qs, np, n, y, ldy);
        if (st == HC_ERR_CUDA) return hci_cu_fail(be, cudaGetLastError(), "gemv_fp8");
        if (st) return hci_errf(be->err, be->errsz, st, "gemv_fp8: unsupported %dx%d weight layout", M, K);
        return HC_OK;
    }
    /* the own GEMM, unless the option asks for cuBLASLt's FP8 GEMM (its FP8 tensor-core
     * accumulation, not the CPU's arithmetic) to compare speed and results */
    if (!cu->opt.fp8_gemm_cublaslt) {
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
    if (hci_cu(be)->opt.gemv_fast && n <= HCI_CU_GEMV_FAST_MAX_N) {
        int st = hci_cu_gemv_bf16_fast(hci_cu(be)->stream, W->w, W->rows, K, groups, x, ldx, n, z, ldz);
        if (st == HC_ERR_CUDA) return hci_cu_fail(be, cudaGetLastError(), "gemv_bf16_fast");
        if (!st) return HC_OK; /* else a shape it does not take: the exact paths below */
    }
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

int hci_cu_linear_bf16_fast(hci_backend *be, const hci_cu_bf16 *W, int n, const uint16_t *x, int ldx, double *out,
                            int ldo)
{
    int st = hci_cu_gemm_bf16(hci_cu(be)->stream, W->w, W->rows, W->cols, x, ldx, n, out, ldo);
    if (st == HC_ERR_CUDA) return hci_cu_fail(be, cudaGetLastError(), "gemm_bf16");
    if (st) return hci_errf(be->err, be->errsz, st, "gemm_bf16: unsupported %dx%d weight for %d tokens", W->rows, W->cols, n);
    return HC_OK;
}
