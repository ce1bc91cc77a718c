/* gemv_tc_ref.cu - the previous fast GEMVs (one row group of 8 rows per CTA, its 8 warps taking
 * the k-units kb = warp, warp + 8, ..., added in warp order through shared memory), kept
 * unchanged as the bitwise reference of gemv_fp8_tc.cu and gemv_bf16_tc.cu: built into
 * tools/gemv-check only, not into the CUDA module. */
#include "gemv.h"
#include "tc.cuh"

namespace {

/* The CTA's result: each warp's accumulators (acc[mi][0..1]: token mi*16 + g, rows 2t, 2t+1;
 * acc[mi][2..3]: token + 8) added in warp order, rounded to bf16 into out[token][r0 + row]. */
template <int MT>
__device__ __forceinline__ void gt_reduce_store(float4 (*red)[MT][32], const float (&acc)[MT][4], int r0, int n,
                                                uint16_t *out, int ldo)
{
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
    for (int mi = 0; mi < MT; mi++) red[warp][mi][lane] = make_float4(acc[mi][0], acc[mi][1], acc[mi][2], acc[mi][3]);
    __syncthreads();
    for (int e = threadIdx.x; e < MT * 32; e += GT_WARPS * 32) {
        const int mi = e / 32, l = e % 32;
        float4 v = red[0][mi][l];
#pragma unroll
        for (int w = 1; w < GT_WARPS; w++) {
            const float4 o = red[w][mi][l];
            v.x += o.x, v.y += o.y, v.z += o.z, v.w += o.w;
        }
        const int m0 = mi * GT_TOK + (l >> 2), m1 = m0 + 8, r = r0 + 2 * (l & 3);
        if (m0 < n) out[(size_t)m0 * ldo + r] = hci_bf16_from_f32(v.x), out[(size_t)m0 * ldo + r + 1] = hci_bf16_from_f32(v.y);
        if (m1 < n) out[(size_t)m1 * ldo + r] = hci_bf16_from_f32(v.z), out[(size_t)m1 * ldo + r + 1] = hci_bf16_from_f32(v.w);
    }
}

template <int MT>
__global__ void __launch_bounds__(GT_WARPS * 32) ref_fp8_kernel(const uint8_t *W, const float *Ws, int sld, int K,
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
                        gt_mma_e4m3(d, gt_lo(a[0][s], step), gt_lo(a[1][s], step), gt_hi(a[0][s], step),
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

/* CTA: GT_ROWS rows of one group; warp w takes the 32-element spans w, w + 8, ... of K. */
template <int MT>
__global__ void __launch_bounds__(GT_WARPS * 32) ref_bf16_kernel(const uint16_t *W, int K, int Mg, const uint16_t *x,
                                                                int ldx, int n, uint16_t *out, int ldo)
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
                    gt_mma_bf16(acc[mi], gt_lo(a0, step), gt_lo(a1, step), gt_hi(a0, step), gt_hi(a1, step),
                                gt_lo(wv[u], step), gt_hi(wv[u], step));
            }
        }
    }
    gt_reduce_store<MT>(red, acc, r0, n, out, ldo);
}

} // namespace

int hci_cu_gemv_fp8_fast_ref(cudaStream_t s, const uint8_t *W, const float *Ws, int sld, int M, int K,
                             const uint8_t *xq, const float *xs, int np, int n, uint16_t *y, int ldy)
{
    if (n <= 0) return HC_OK;
    if (n > GT_MAX_N || np < n || M % GT_ROWS || K % GV_SCALE_BLOCK || !hci_aligned16(W) || !hci_aligned16(xq))
        return HC_ERR_INVALID_ARG;
    const unsigned grid = M / GT_ROWS, block = GT_WARPS * 32;
    switch ((n + GT_TOK - 1) / GT_TOK) {
    case 1: ref_fp8_kernel<1><<<grid, block, 0, s>>>(W, Ws, sld, K, xq, xs, np, n, y, ldy); break;
    case 2: ref_fp8_kernel<2><<<grid, block, 0, s>>>(W, Ws, sld, K, xq, xs, np, n, y, ldy); break;
    case 3: ref_fp8_kernel<3><<<grid, block, 0, s>>>(W, Ws, sld, K, xq, xs, np, n, y, ldy); break;
    default: ref_fp8_kernel<4><<<grid, block, 0, s>>>(W, Ws, sld, K, xq, xs, np, n, y, ldy); break;
    }
    return HCI_CU_CHECK_LAUNCH();
}

int hci_cu_gemv_bf16_fast_ref(cudaStream_t s, const uint16_t *W, int M, int K, int groups, const uint16_t *x,
                              int ldx, int n, uint16_t *out, int ldo)
{
    if (n <= 0) return HC_OK;
    if (groups <= 0 || M % groups) return HC_ERR_INVALID_ARG;
    const int Mg = M / groups;
    if (n > GT_MAX_N || Mg % GT_ROWS || K % GT_BF16_SPAN || ldx % 8 || !hci_aligned16(W) || !hci_aligned16(x))
        return HC_ERR_INVALID_ARG;
    const unsigned grid = M / GT_ROWS, block = GT_WARPS * 32;
    switch ((n + GT_TOK - 1) / GT_TOK) {
    case 1: ref_bf16_kernel<1><<<grid, block, 0, s>>>(W, K, Mg, x, ldx, n, out, ldo); break;
    case 2: ref_bf16_kernel<2><<<grid, block, 0, s>>>(W, K, Mg, x, ldx, n, out, ldo); break;
    case 3: ref_bf16_kernel<3><<<grid, block, 0, s>>>(W, K, Mg, x, ldx, n, out, ldo); break;
    default: ref_bf16_kernel<4><<<grid, block, 0, s>>>(W, K, Mg, x, ldx, n, out, ldo); break;
    }
    return HCI_CU_CHECK_LAUNCH();
}
