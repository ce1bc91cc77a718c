/* gemv_bf16_tc.cu - the fast bf16 projection of a few tokens, per group (the grouped output
 * projection wo_a): mma.m16n8k16 bf16 with fp32 accumulation, the layout and fixed k-split of the
 * fast FP8 GEMV (gemv_fp8_tc.cu, config.h) with elements of 2 bytes: a 16-byte load holds 8
 * elements, feeding two k-16 steps (gt_span_elem). Deterministic and batch-invariant; within the
 * faithful tolerance of the exact GEMV (gemv.cu), not its bits. */
#include "gemv.h"
#include "tc.cuh"

namespace {

__device__ __forceinline__ void mma_bf16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* CTA: GT_ROWS rows of one group; warp w takes the 32-element spans w, w + 8, ... of K. */
template <int MT>
__global__ void __launch_bounds__(GT_WARPS * 32) gemv_bf16_tc_kernel(const uint16_t *W, int K, int Mg,
                                                                    const uint16_t *x, int ldx, int n, uint16_t *out,
                                                                    int ldo)
{
    __shared__ float4 red[GT_WARPS][MT][32];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int r0 = blockIdx.x * GT_ROWS, grp = r0 / Mg, ns = K / GT_BF16_SPAN;
    const uint16_t *wrow = W + (size_t)(r0 + g) * K + 8 * t;
    const uint16_t *xg = x + (size_t)grp * K + 8 * t;
    const uint4 zero = make_uint4(0, 0, 0, 0);
    float acc[MT][4];
#pragma unroll
    for (int mi = 0; mi < MT; mi++) acc[mi][0] = acc[mi][1] = acc[mi][2] = acc[mi][3] = 0.0f;
    for (int s0 = warp; s0 < ns; s0 += GT_WARPS * GT_UNROLL) {
        uint4 wv[GT_UNROLL];
#pragma unroll
        for (int u = 0; u < GT_UNROLL; u++) {
            const int s = s0 + u * GT_WARPS;
            wv[u] = s < ns ? gt_ld_stream(wrow + (size_t)s * GT_BF16_SPAN) : zero;
        }
#pragma unroll
        for (int u = 0; u < GT_UNROLL; u++) {
            const int s = s0 + u * GT_WARPS;
            if (s >= ns) break;
#pragma unroll
            for (int mi = 0; mi < MT; mi++) {
                const int m0 = mi * GT_TOK + g, m1 = m0 + 8;
                const uint4 a0 = m0 < n ? *(const uint4 *)(xg + (size_t)m0 * ldx + (size_t)s * GT_BF16_SPAN) : zero;
                const uint4 a1 = m1 < n ? *(const uint4 *)(xg + (size_t)m1 * ldx + (size_t)s * GT_BF16_SPAN) : zero;
#pragma unroll
                for (int step = 0; step < 2; step++)
                    mma_bf16(acc[mi], gt_lo(a0, step), gt_lo(a1, step), gt_hi(a0, step), gt_hi(a1, step),
                             gt_lo(wv[u], step), gt_hi(wv[u], step));
            }
        }
    }
    gt_reduce_store<MT>(red, acc, r0, n, out, ldo);
}

template <int MT>
int launch(cudaStream_t s, const uint16_t *W, int M, int K, int Mg, const uint16_t *x, int ldx, int n, uint16_t *out,
           int ldo)
{
    gemv_bf16_tc_kernel<MT><<<M / GT_ROWS, GT_WARPS * 32, 0, s>>>(W, K, Mg, x, ldx, n, out, ldo);
    return HCI_CU_CHECK_LAUNCH();
}

} // namespace

int hci_cu_gemv_bf16_fast(cudaStream_t s, const uint16_t *W, int M, int K, int groups, const uint16_t *x, int ldx,
                          int n, uint16_t *out, int ldo)
{
    if (n <= 0) return HC_OK;
    if (groups <= 0 || M % groups) return HC_ERR_INVALID_ARG;
    const int Mg = M / groups;
    if (n > GT_MAX_N || Mg % GT_ROWS || K % GT_BF16_SPAN || ldx % 8 || !hci_aligned16(W) || !hci_aligned16(x))
        return HC_ERR_INVALID_ARG;
    switch ((n + GT_TOK - 1) / GT_TOK) {
    case 1: return launch<1>(s, W, M, K, Mg, x, ldx, n, out, ldo);
    case 2: return launch<2>(s, W, M, K, Mg, x, ldx, n, out, ldo);
    case 3: return launch<3>(s, W, M, K, Mg, x, ldx, n, out, ldo);
    default: return launch<4>(s, W, M, K, Mg, x, ldx, n, out, ldo);
    }
}
