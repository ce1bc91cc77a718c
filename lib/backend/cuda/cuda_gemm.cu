/* cuda_gemm.cu - the projections (host side): FP8 block-scaled GEMMs with the DeepSeek recipe
 * (1x128 activation scales, 128x128 weight scales) as act_quant (kernels/quant) then the GEMV
 * (kernels/gemv) or GEMM (kernels/gemm) family, with the CPU backend's arithmetic, or (option
 * fp8_gemm_cublaslt) cuBLASLt's block-scaled FP8 GEMM for larger pieces (verified layouts in
 * /shared/spec/cuda-facts.md); grouped bf16 GEMMs (fp32 accumulation), double GEMMs for the
 * projections whose fp32 result must match the CPU backend bit for bit, and (option comp_fast)
 * the same projections on the own batch-invariant bf16 GEMM.
 *
 * cuBLASLt's heuristic picks an algorithm (tiles, split-K, stages) by the shape, the token count
 * included, and with it the order of the sums: a token's result would depend on the size of the
 * piece it came in. So the FP8 and grouped bf16 GEMMs run with an algorithm pinned per weight
 * shape, chosen once per device object for a fixed token count (LT_PIN_N) with split-K off:
 * every piece size then takes the same kernel and the same per-element summation order. */
#include "cuda_internal.h"
#include "device.h"
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

/* d's operation: D = A^T-op B (A, B column-major as cuBLASLt sees our row-major W and x). */
static int lt_op_tn(hci_backend *be, LtDesc &d, cublasComputeType_t compute, cudaDataType_t scale)
{
    LT_TRY(be, cublasLtMatmulDescCreate(&d.op, compute, scale));
    cublasOperation_t T = CUBLAS_OP_T, N = CUBLAS_OP_N;
    LT_TRY(be, cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSA, &T, sizeof T));
    LT_TRY(be, cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_TRANSB, &N, sizeof N));
    return HC_OK;
}

static int lt_workspace_pref(hci_backend *be, LtDesc &d)
{
    hci_cuda *cu = hci_cu(be);
    LT_TRY(be, cublasLtMatmulPreferenceCreate(&d.pref));
    LT_TRY(be, cublasLtMatmulPreferenceSetAttribute(d.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                    &cu->lt_ws_bytes, sizeof cu->lt_ws_bytes));
    return HC_OK;
}

/* D = op(A) op(B) with algo, or with the heuristic's first algorithm when algo is NULL. */
static int lt_run(hci_backend *be, LtDesc &d, const cublasLtMatmulAlgo_t *algo, const void *alpha, const void *A,
                  const void *B, const void *beta, void *D)
{
    hci_cuda *cu = hci_cu(be);
    cublasLtMatmulHeuristicResult_t h;
    if (!algo) {
        int st = lt_workspace_pref(be, d);
        if (st) return st;
        int got = 0;
        LT_TRY(be, cublasLtMatmulAlgoGetHeuristic(cu->lt, d.op, d.a, d.b, d.c, d.c, d.pref, 1, &h, &got));
        if (!got) return hci_cu_blas_fail(be, CUBLAS_STATUS_NOT_SUPPORTED, "no cuBLASLt algorithm for this shape");
        algo = &h.algo;
    }
    LT_TRY(be, cublasLtMatmul(cu->lt, d.op, alpha, A, d.a, B, d.b, beta, D, d.c, D, d.c, algo, cu->lt_ws,
                              cu->lt_ws_bytes, cu->stream));
    return HC_OK;
}

enum { LT_FP8 = 1, LT_BF16_GROUPED = 2 };
/* The token count an algorithm is chosen for: the default prefill chunk. */
#define LT_PIN_N 2048
#define LT_PIN_CANDIDATES 8

/* The algorithm pinned for (kind, M, K, groups) on this device object: on first use, the first
 * of the heuristic's answers for LT_PIN_N tokens (make(d, LT_PIN_N) builds the descriptors)
 * that runs with split-K off and within the workspace. */
template <class Make>
static int lt_pinned(hci_backend *be, int kind, int M, int K, int groups, Make make, cublasLtMatmulAlgo_t *out)
{
    hci_cuda *cu = hci_cu(be);
    hci_cu_device *dv = cu->dev;
    std::lock_guard<std::mutex> hold(dv->algo_lock);
    for (const hci_cu_lt_algo &a : dv->algos)
        if (a.kind == kind && a.M == M && a.K == K && a.groups == groups) {
            *out = a.algo;
            return HC_OK;
        }
    LtDesc d;
    int st = make(d, LT_PIN_N);
    if (!st) st = lt_workspace_pref(be, d);
    if (st) return st;
    cublasLtMatmulHeuristicResult_t h[LT_PIN_CANDIDATES];
    int got = 0;
    LT_TRY(be, cublasLtMatmulAlgoGetHeuristic(cu->lt, d.op, d.a, d.b, d.c, d.c, d.pref, LT_PIN_CANDIDATES, h, &got));
    for (int i = 0; i < got; i++) {
        cublasLtMatmulAlgo_t algo = h[i].algo;
        uint32_t one = 1, none = CUBLASLT_REDUCTION_SCHEME_NONE;
        cublasLtMatmulHeuristicResult_t chk;
        if (cublasLtMatmulAlgoConfigSetAttribute(&algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &one, sizeof one) ||
            cublasLtMatmulAlgoConfigSetAttribute(&algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &none, sizeof none) ||
            cublasLtMatmulAlgoCheck(cu->lt, d.op, d.a, d.b, d.c, d.c, &algo, &chk) ||
            chk.workspaceSize > cu->lt_ws_bytes)
            continue;
        try {
            dv->algos.push_back({kind, M, K, groups, algo});
        } catch (...) {
            return hci_errf(be->err, be->errsz, HC_ERR_OUT_OF_MEMORY, "out of memory");
        }
        *out = algo;
        return HC_OK;
    }
    return hci_errf(be->err, be->errsz, HC_ERR_CUBLAS,
                    "cuBLASLt has no algorithm without split-K for a %dx%d weight (%d groups)", M, K, groups);
}

/* Descriptors of y (bf16 [np][ldy]) = W (e4m3 [M][K], 128x128 scales) . q (e4m3 [np][K], 1x128
 * scales qs [K/128][np]). */
static int lt_fp8_desc(hci_backend *be, LtDesc &d, const hci_cu_fp8 *W, int np, int ldy, const float *qs)
{
    int K = W->cols, M = W->rows;
    int st = lt_op_tn(be, d, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    if (st) return st;
    int32_t am = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F, bm = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
    LT_TRY(be, cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &am, sizeof am));
    LT_TRY(be, cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &bm, sizeof bm));
    const float *as = W->scale;
    LT_TRY(be, cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &as, sizeof as));
    LT_TRY(be, cublasLtMatmulDescSetAttribute(d.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &qs, sizeof qs));
    LT_TRY(be, cublasLtMatrixLayoutCreate(&d.a, CUDA_R_8F_E4M3, K, M, K));
    LT_TRY(be, cublasLtMatrixLayoutCreate(&d.b, CUDA_R_8F_E4M3, K, np, K));
    LT_TRY(be, cublasLtMatrixLayoutCreate(&d.c, CUDA_R_16BF, M, np, ldy));
    return HC_OK;
}

/* Descriptors of z (bf16, [n][ldz]) = per group g: W_g (bf16 [M][K]) . x_g (bf16, [n][ldx], group g
 * at column g * K), z_g at column g * M. */
static int lt_bf16_grouped_desc(hci_backend *be, LtDesc &d, int M, int K, int groups, int n, int ldx, int ldz)
{
    int st = lt_op_tn(be, d, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    if (st) return st;
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
    return HC_OK;
}

int hci_cu_linear_fp8(hci_backend *be, const hci_cu_fp8 *W, int n, const uint16_t *x, int ldx, uint16_t *y,
                      int ldy, void *scratch, int block_out)
{
    hci_cuda *cu = hci_cu(be);
    int np = round16(n), K = W->cols, M = W->rows;
    uint8_t *q = (uint8_t *)scratch;
    float *qs = (float *)((char *)scratch + hci_align256((size_t)np * K));
    if (hci_cu_act_quant(cu->stream, x, ldx, n, np, K, q, qs)) return hci_cu_fail(be, cudaGetLastError(), "act_quant");
    if (cu->opt.gemv_fast && n <= HCI_CU_GEMV_FAST_MAX_N && M % GT_ROWS == 0) {
        int st = (cu->opt.gemv_teams ? hci_cu_gemv_fp8_fast : hci_cu_gemv_fp8_fast_ref)(cu->stream, W->w, W->scale,
                                                                                    W->sld, M, K, q, qs, np, n, y, ldy);
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
        /* option gemm_fp8_native: the official kernels' structure on native FP8 tensor cores
         * (not the CPU's bits); a shape, GPU or driver it does not take (HC_ERR_INVALID_ARG)
         * goes on to the kernels below. gemm_fp8_native_out: wo_b only, the one projection
         * whose one-ulp differences no later FP8 quantization of the block amplifies */
        if (cu->opt.gemm_fp8_native || (block_out && cu->opt.gemm_fp8_native_out)) {
            int st = hci_cu_gemm_fp8_native(cu->stream, W->w, W->scale, W->sld, M, K, q, qs, np, n, y, ldy);
            if (st == HC_ERR_CUDA) return hci_cu_fail(be, cudaGetLastError(), "gemm_fp8_native");
            if (st == HC_OK) return HC_OK;
        }
        /* option gemm_wgmma: the same formula on Hopper's wgmma; a shape or GPU it does not take
         * (HC_ERR_INVALID_ARG, it checks for sm_90 itself) goes to the mma.sync kernel */
        if (cu->opt.gemm_wgmma) {
            int st = hci_cu_gemm_fp8_wgmma(cu->stream, W->w, W->scale, W->sld, M, K, q, qs, np, n, y, ldy);
            if (st == HC_ERR_CUDA) return hci_cu_fail(be, cudaGetLastError(), "gemm_fp8_wgmma");
            if (st == HC_OK) return HC_OK;
        }
        int st = hci_cu_gemm_fp8(cu->stream, W->w, W->scale, W->sld, M, K, q, qs, np, n, y, ldy);
        if (st == HC_ERR_CUDA) return hci_cu_fail(be, cudaGetLastError(), "gemm_fp8");
        if (st) return hci_errf(be->err, be->errsz, st, "gemm_fp8: unsupported %dx%d weight for %d tokens", M, K, n);
        return HC_OK;
    }
    cublasLtMatmulAlgo_t algo;
    int st = lt_pinned(
        be, LT_FP8, M, K, 1, [&](LtDesc &p, int pn) { return lt_fp8_desc(be, p, W, pn, M, qs); }, &algo);
    LtDesc d;
    if (!st) st = lt_fp8_desc(be, d, W, np, ldy, qs);
    if (st) return st;
    float alpha = 1.0f, beta = 0.0f;
    return lt_run(be, d, &algo, &alpha, W->w, q, &beta, y);
}

int hci_cu_linear_bf16_grouped(hci_backend *be, const hci_cu_bf16 *W, int groups, int n, const uint16_t *x,
                               int ldx, uint16_t *z, int ldz)
{
    int M = W->rows / groups, K = W->cols;
    if (hci_cu(be)->opt.gemv_fast && n <= HCI_CU_GEMV_FAST_MAX_N) {
        int st = (hci_cu(be)->opt.gemv_teams ? hci_cu_gemv_bf16_fast : hci_cu_gemv_bf16_fast_ref)(
            hci_cu(be)->stream, W->w, W->rows, K, groups, x, ldx, n, z, ldz);
        if (st == HC_ERR_CUDA) return hci_cu_fail(be, cudaGetLastError(), "gemv_bf16_fast");
        if (!st) return HC_OK; /* else a shape it does not take: the exact paths below */
    }
    if (n <= HCI_CU_GEMV_MAX_N) {
        if (hci_cu_gemv_bf16(hci_cu(be)->stream, W->w, W->rows, K, groups, x, ldx, n, nullptr, z, ldz))
            return hci_cu_fail(be, cudaGetLastError(), "gemv_bf16");
        return HC_OK;
    }
    cublasLtMatmulAlgo_t algo;
    int st = lt_pinned(
        be, LT_BF16_GROUPED, M, K, groups,
        [&](LtDesc &p, int pn) { return lt_bf16_grouped_desc(be, p, M, K, groups, pn, ldx, ldz); }, &algo);
    LtDesc d;
    if (!st) st = lt_bf16_grouped_desc(be, d, M, K, groups, n, ldx, ldz);
    if (st) return st;
    float alpha = 1.0f, beta = 0.0f;
    return lt_run(be, d, &algo, &alpha, W->w, x, &beta, z);
}

int hci_cu_linear_f64(hci_backend *be, const hci_cu_f64 *W, int n, const double *xd, double *out)
{
    int M = W->rows, K = W->cols;
    LtDesc d;
    int st = lt_op_tn(be, d, CUBLAS_COMPUTE_64F, CUDA_R_64F);
    if (st) return st;
    LT_TRY(be, cublasLtMatrixLayoutCreate(&d.a, CUDA_R_64F, K, M, K));
    LT_TRY(be, cublasLtMatrixLayoutCreate(&d.b, CUDA_R_64F, K, n, K));
    LT_TRY(be, cublasLtMatrixLayoutCreate(&d.c, CUDA_R_64F, M, n, M));
    double alpha = 1.0, beta = 0.0;
    return lt_run(be, d, nullptr, &alpha, W->w, xd, &beta, out);
}

int hci_cu_linear_bf16_fast(hci_backend *be, const hci_cu_bf16 *W, int n, const uint16_t *x, int ldx, double *out,
                            int ldo)
{
    int st = hci_cu_gemm_bf16_kernel(hci_cu(be)->stream, W->w, W->rows, W->cols, x, ldx, n, out, ldo,
                                     hci_cu(be)->opt.gemv_teams ? 0 : 4);
    if (st == HC_ERR_CUDA) return hci_cu_fail(be, cudaGetLastError(), "gemm_bf16");
    if (st) return hci_errf(be->err, be->errsz, st, "gemm_bf16: unsupported %dx%d weight for %d tokens", W->rows, W->cols, n);
    return HC_OK;
}
