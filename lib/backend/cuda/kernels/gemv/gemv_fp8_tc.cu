/* gemv_fp8_tc.cu - the fast FP8 projection of a few tokens (decode, batched decode): e4m3 codes
 * straight into the tensor cores (mma.m16n8k32, fp32 accumulation), each 128-k block's sum
 * promoted to the fp32 result with its two scales, as the official kernels do. Not the CPU's
 * bits (the exact GEMV in gemv.cu is); deterministic and batch-invariant: a token's output comes
 * from the same operations whatever the other tokens and their number (config.h).
 *
 * Memory-bound for decode, so the work is cut for bandwidth: a team of S warps per row group of
 * 8 rows (config.h, gt_pick_split: S = 1 for tall weights, up to 8 for short ones), each warp
 * loading GT_BATCH_FP8 k-blocks (8 KiB per warp) with 16-byte streaming loads before using any,
 * and no CTA-wide barrier: one warp owning all 8 residue classes adds them in its registers.
 * The previous kernel (one row group per CTA, S = 8 always: 8 KiB per CTA for K = 1024, then a
 * CTA-wide reduction) reached about half the bandwidth; it is kept in gemv_tc_ref.cu, and every
 * mma here has its operands, and every fp32 operation its inputs and order (config.h), so the
 * bits are the same (tools/gemv-check). */
#include "gemv.h"
#include "tc.cuh"

namespace {

/* The rows of CTA `cta` of a launch over one weight (the CTA's teams' row groups): the whole
 * kernel, shared by the one-weight launch and the grouped one (a CTA of a segment computes what
 * the segment's own launch would). cta is unsigned as blockIdx.x: the same index arithmetic,
 * the same code for the one-weight kernel as before it was shared. */
template <int MT, int S>
__device__ __forceinline__ void fp8_tc_cta(gt_team_smem<MT, S> *smp, unsigned cta, const uint8_t *W, const float *Ws,
                                           int sld, int M, int K, const uint8_t *xq, const float *xs, int np, int n,
                                           uint16_t *y, int ldy)
{
    constexpr int C = GT_CLASSES / S, B = MT == 1 ? GT_BATCH_FP8 : GT_BATCH_FP8 / 2;
    static_assert(B % C == 0, "a batch holds whole turns of the warp's classes");
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3, j = warp % S;
    const int r0 = (cta * (GT_WARPS / S) + warp / S) * GT_ROWS, nb = K / GV_SCALE_BLOCK;
    if (r0 >= M) return; /* the whole team */
    const uint8_t *wrow = W + (size_t)(r0 + g) * K + 16 * t;
    const float *wsr = Ws + (size_t)(r0 / GV_SCALE_BLOCK) * sld;
    const uint4 zero = make_uint4(0, 0, 0, 0);
    float acc[C][MT][4];
#pragma unroll
    for (int c = 0; c < C; c++)
#pragma unroll
        for (int mi = 0; mi < MT; mi++) acc[c][mi][0] = acc[c][mi][1] = acc[c][mi][2] = acc[c][mi][3] = 0.0f;

    /* one k-block: its block sum from zero, promoted into ac (its class's accumulators); `on`
     * false (past K): no load, ac unchanged */
    auto kblock = [&](const uint4 (&w)[2], int kb, bool on, float (&ac)[MT][4]) {
        const float sw = on ? wsr[kb] : 0.0f;
#pragma unroll
        for (int mi = 0; mi < MT; mi++) {
            const int m0 = mi * GT_TOK + g, m1 = m0 + 8;
            const bool in0 = on && m0 < n, in1 = on && m1 < n;
            const uint8_t *x0 = xq + (size_t)m0 * K + (size_t)kb * GV_SCALE_BLOCK + 16 * t;
            const uint8_t *x1 = xq + (size_t)m1 * K + (size_t)kb * GV_SCALE_BLOCK + 16 * t;
            uint4 a[2][2]; /* [token m0 / m1][span] */
#pragma unroll
            for (int s = 0; s < 2; s++) {
                a[0][s] = in0 ? __ldg((const uint4 *)(x0 + 64 * s)) : zero;
                a[1][s] = in1 ? __ldg((const uint4 *)(x1 + 64 * s)) : zero;
            }
            float d[4] = {0.0f, 0.0f, 0.0f, 0.0f}; /* this block's sum, from zero */
#pragma unroll
            for (int s = 0; s < 2; s++)
#pragma unroll
                for (int step = 0; step < 2; step++)
                    gt_mma_e4m3(d, gt_lo(a[0][s], step), gt_lo(a[1][s], step), gt_hi(a[0][s], step),
                                gt_hi(a[1][s], step), gt_lo(w[s], step), gt_hi(w[s], step));
            /* promotion: d[0..1] are token m0's, d[2..3] token m1's, weight rows 2t, 2t + 1 */
            const float s0 = in0 ? __fmul_rn(xs[(size_t)kb * np + m0], sw) : 0.0f;
            const float s1 = in1 ? __fmul_rn(xs[(size_t)kb * np + m1], sw) : 0.0f;
            ac[mi][0] = on ? fmaf(d[0], s0, ac[mi][0]) : ac[mi][0];
            ac[mi][1] = on ? fmaf(d[1], s0, ac[mi][1]) : ac[mi][1];
            ac[mi][2] = on ? fmaf(d[2], s1, ac[mi][2]) : ac[mi][2];
            ac[mi][3] = on ? fmaf(d[3], s1, ac[mi][3]) : ac[mi][3];
        }
    };

    /* member j's k-blocks kb = j + S i, i = 0, 1, ... in order; kb's class (j + S i) % 8 is
     * j + S (i % C), kept in acc[i % C] (i0 is a multiple of C). One token tile: the batch's
     * blocks past K are predicated off, without branches, so that the compiler may issue every
     * load of the batch first; more tiles: a warp-uniform exit (fewer registers live). */
    for (int i0 = 0; j + S * i0 < nb; i0 += B) {
        uint4 wv[B][2];
#pragma unroll
        for (int u = 0; u < B; u++) {
            const int kb = j + S * (i0 + u);
            const bool on = kb < nb;
            wv[u][0] = on ? gt_ld_stream(wrow + (size_t)kb * GV_SCALE_BLOCK) : zero;
            wv[u][1] = on ? gt_ld_stream(wrow + (size_t)kb * GV_SCALE_BLOCK + 64) : zero;
        }
#pragma unroll
        for (int u = 0; u < B; u++) {
            const int kb = j + S * (i0 + u);
            if (MT > 1 && kb >= nb) break; /* the same for the whole warp; the later u too */
            kblock(wv[u], kb, kb < nb, acc[u % C]);
        }
    }
    gt_team_store<MT, S>(smp, acc, warp, r0, n, y, ldy);
}

template <int MT, int S>
__global__ void __launch_bounds__(GT_WARPS * 32, 2) gemv_fp8_tc_kernel(const uint8_t *W, const float *Ws, int sld, int M,
                                                                   int K, const uint8_t *xq, const float *xs, int np,
                                                                   int n, uint16_t *y, int ldy)
{
    __shared__ gt_team_smem<MT, S> sm;
    fp8_tc_cta<MT, S>(&sm, blockIdx.x, W, Ws, sld, M, K, xq, xs, np, n, y, ldy);
}

/* Several weights over the same xq (option decode_fused): each CTA the rows of its segment. */
template <int MT, int S>
__global__ void __launch_bounds__(GT_WARPS * 32, 2) gemv_fp8_tc_grouped_kernel(const __grid_constant__ hci_cu_seg_grid g,
                                                                           int K, const uint8_t *xq, const float *xs,
                                                                           int np, int n)
{
    __shared__ gt_team_smem<MT, S> sm;
    int cta;
    const hci_cu_seg &sg = g.s[hci_dev_seg_of(g, blockIdx.x, cta)];
    fp8_tc_cta<MT, S>(&sm, (unsigned)cta, (const uint8_t *)sg.W, sg.Ws, sg.sld, sg.M, K, xq, xs, np, n, (uint16_t *)sg.y, sg.ldy);
}

} // namespace

int hci_cu_gemv_fp8_fast_split(cudaStream_t s, const uint8_t *W, const float *Ws, int sld, int M, int K,
                               const uint8_t *xq, const float *xs, int np, int n, uint16_t *y, int ldy, int split)
{
    if (n <= 0) return HC_OK;
    if (n > GT_MAX_N || np < n || M % GT_ROWS || K % GV_SCALE_BLOCK || !hci_aligned16(W) || !hci_aligned16(xq))
        return HC_ERR_INVALID_ARG;
    /* the m-tile count only drops all-zero tiles: a token's operations are the same in each */
    const int mt = (n + GT_TOK - 1) / GT_TOK, groups = M / GT_ROWS;
    if (!split) {
        int sms = 0;
        if (hci_cu_sm_count(&sms) != cudaSuccess) return HC_ERR_CUDA;
        split = gt_pick_split(groups, mt, sms);
    }
    if (split <= 0 || split > GT_CLASSES) return HC_ERR_INVALID_ARG;
    const unsigned grid = (unsigned)((groups + GT_WARPS / split - 1) / (GT_WARPS / split));
    return gt_dispatch(mt, split, [&](auto MT, auto S) {
        gemv_fp8_tc_kernel<MT.value, S.value><<<grid, GT_WARPS * 32, 0, s>>>(W, Ws, sld, M, K, xq, xs, np, n, y, ldy);
    });
}

int hci_cu_gemv_fp8_fast(cudaStream_t s, const uint8_t *W, const float *Ws, int sld, int M, int K, const uint8_t *xq,
                         const float *xs, int np, int n, uint16_t *y, int ldy)
{
    return hci_cu_gemv_fp8_fast_split(s, W, Ws, sld, M, K, xq, xs, np, n, y, ldy, 0);
}

int hci_cu_gemv_fp8_fast_grouped(cudaStream_t s, const hci_cu_seg *seg, int nseg, int K, const uint8_t *xq,
                                 const float *xs, int np, int n, int split)
{
    if (n <= 0) return HC_OK;
    if (n > GT_MAX_N || np < n || K % GV_SCALE_BLOCK || !hci_aligned16(xq)) return HC_ERR_INVALID_ARG;
    int groups = 0;
    for (int i = 0; i < nseg; i++) {
        if (seg[i].M <= 0 || seg[i].M % GT_ROWS || !hci_aligned16(seg[i].W)) return HC_ERR_INVALID_ARG;
        groups += seg[i].M / GT_ROWS;
    }
    /* one team size for the launch, picked for all its row groups: every size gives each row the
     * bits of every other (config.h), so those of the segment's own launch */
    const int mt = (n + GT_TOK - 1) / GT_TOK;
    if (!split) {
        int sms = 0;
        if (hci_cu_sm_count(&sms) != cudaSuccess) return HC_ERR_CUDA;
        split = gt_pick_split(groups, mt, sms);
    }
    if (split <= 0 || split > GT_CLASSES) return HC_ERR_INVALID_ARG;
    const int per = GT_WARPS / split; /* row groups per CTA */
    hci_cu_seg_grid g;
    if (!hci_cu_seg_grid_make(g, seg, nseg, [per](int M) { return (M / GT_ROWS + per - 1) / per; }))
        return HC_ERR_INVALID_ARG;
    return gt_dispatch(mt, split, [&](auto MT, auto S) {
        gemv_fp8_tc_grouped_kernel<MT.value, S.value><<<(unsigned)g.cta0[nseg], GT_WARPS * 32, 0, s>>>(g, K, xq, xs,
                                                                                                     np, n);
    });
}
