/* gemv_fp8_tc.cu - the fast FP8 projection of a few tokens (decode, batched decode): e4m3 codes
 * straight into the tensor cores (mma.m16n8k32, fp32 accumulation), each 128-k block's sum
 * promoted to the fp32 result with its two scales, as the official kernels do. Not the CPU's
 * bits (the exact GEMV in gemv.cu is); deterministic and batch-invariant: a token's output comes
 * from the same operations whatever the other tokens and their number (config.h). Memory-bound
 * for decode: every weight byte is read once with 16-byte streaming loads, GT_UNROLL k-blocks
 * in flight per warp. */
#include "gemv.h"
#include "tc.cuh"

namespace {

__device__ __forceinline__ void mma_e4m3(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

template <int MT>
__global__ void __launch_bounds__(GT_WARPS * 32) gemv_fp8_tc_kernel(const uint8_t *W, const float *Ws, int sld, int K,
                                                                   const uint8_t *xq, const float *xs, int np, int n,
                                                                   uint16_t *y, int ldy)
{
    __shared__ float4 red[GT_WARPS][MT][32];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int r0 = blockIdx.x * GT_ROWS, nb = K / GV_SCALE_BLOCK;
    const uint8_t *wrow = W + (size_t)(r0 + g) * K + 16 * t;
    const float *wsr = Ws + (size_t)(r0 / GV_SCALE_BLOCK) * sld;
    const uint4 zero = make_uint4(0, 0, 0, 0);
    float acc[MT][4];
#pragma unroll
    for (int mi = 0; mi < MT; mi++) acc[mi][0] = acc[mi][1] = acc[mi][2] = acc[mi][3] = 0.0f;

    for (int kb0 = warp; kb0 < nb; kb0 += GT_WARPS * GT_UNROLL) {
        uint4 wv[GT_UNROLL][2];
#pragma unroll
        for (int u = 0; u < GT_UNROLL; u++) {
            const int kb = kb0 + u * GT_WARPS;
            const bool on = kb < nb;
            wv[u][0] = on ? gt_ld_stream(wrow + (size_t)kb * GV_SCALE_BLOCK) : zero;
            wv[u][1] = on ? gt_ld_stream(wrow + (size_t)kb * GV_SCALE_BLOCK + 64) : zero;
        }
#pragma unroll
        for (int u = 0; u < GT_UNROLL; u++) {
            const int kb = kb0 + u * GT_WARPS;
            if (kb >= nb) break; /* the same for the whole warp */
            const float sw = wsr[kb];
#pragma unroll
            for (int mi = 0; mi < MT; mi++) {
                const int m0 = mi * GT_TOK + g, m1 = m0 + 8;
                const uint8_t *x0 = xq + (size_t)m0 * K + (size_t)kb * GV_SCALE_BLOCK + 16 * t;
                const uint8_t *x1 = xq + (size_t)m1 * K + (size_t)kb * GV_SCALE_BLOCK + 16 * t;
                uint4 a[2][2]; /* [token m0 / m1][span] */
#pragma unroll
                for (int s = 0; s < 2; s++) {
                    a[0][s] = m0 < n ? *(const uint4 *)(x0 + 64 * s) : zero;
                    a[1][s] = m1 < n ? *(const uint4 *)(x1 + 64 * s) : zero;
                }
                float d[4] = {0.0f, 0.0f, 0.0f, 0.0f}; /* this block's sum, from zero */
#pragma unroll
                for (int s = 0; s < 2; s++)
#pragma unroll
                    for (int step = 0; step < 2; step++)
                        mma_e4m3(d, gt_lo(a[0][s], step), gt_lo(a[1][s], step), gt_hi(a[0][s], step),
                                 gt_hi(a[1][s], step), gt_lo(wv[u][s], step), gt_hi(wv[u][s], step));
                /* promotion: d[0..1] are token m0's, d[2..3] token m1's, weight rows 2t, 2t + 1 */
                const float s0 = m0 < n ? __fmul_rn(xs[(size_t)kb * np + m0], sw) : 0.0f;
                const float s1 = m1 < n ? __fmul_rn(xs[(size_t)kb * np + m1], sw) : 0.0f;
                acc[mi][0] = fmaf(d[0], s0, acc[mi][0]);
                acc[mi][1] = fmaf(d[1], s0, acc[mi][1]);
                acc[mi][2] = fmaf(d[2], s1, acc[mi][2]);
                acc[mi][3] = fmaf(d[3], s1, acc[mi][3]);
            }
        }
    }
    gt_reduce_store<MT>(red, acc, r0, n, y, ldy);
}

template <int MT>
int launch(cudaStream_t s, const uint8_t *W, const float *Ws, int sld, int M, int K, const uint8_t *xq,
           const float *xs, int np, int n, uint16_t *y, int ldy)
{
    gemv_fp8_tc_kernel<MT><<<M / GT_ROWS, GT_WARPS * 32, 0, s>>>(W, Ws, sld, K, xq, xs, np, n, y, ldy);
    return HCI_CU_CHECK_LAUNCH();
}

} // namespace

int hci_cu_gemv_fp8_fast(cudaStream_t s, const uint8_t *W, const float *Ws, int sld, int M, int K, const uint8_t *xq,
                         const float *xs, int np, int n, uint16_t *y, int ldy)
{
    if (n <= 0) return HC_OK;
    if (n > GT_MAX_N || np < n || M % GT_ROWS || K % GV_SCALE_BLOCK || !hci_aligned16(W) || !hci_aligned16(xq))
        return HC_ERR_INVALID_ARG;
    /* the m-tile count only drops all-zero tiles: a token's operations are the same in each */
    switch ((n + GT_TOK - 1) / GT_TOK) {
    case 1: return launch<1>(s, W, Ws, sld, M, K, xq, xs, np, n, y, ldy);
    case 2: return launch<2>(s, W, Ws, sld, M, K, xq, xs, np, n, y, ldy);
    case 3: return launch<3>(s, W, Ws, sld, M, K, xq, xs, np, n, y, ldy);
    default: return launch<4>(s, W, Ws, sld, M, K, xq, xs, np, n, y, ldy);
    }
}
