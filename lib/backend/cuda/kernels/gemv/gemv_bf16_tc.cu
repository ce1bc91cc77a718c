/* gemv_bf16_tc.cu - the fast bf16 projection of a few tokens, per group (the grouped output
 * projection wo_a): mma.m16n8k16 bf16 with fp32 accumulation, the layout of the fast FP8 GEMV
 * (gemv_fp8_tc.cu, config.h) with elements of 2 bytes: a 16-byte load holds 8 elements, feeding
 * two k-16 steps (gt_span_elem). The k-units are 32-element spans; the spans of residue class c
 * (s % 8 = c) are chained in one mma accumulator in k order and the 8 classes added in order, by
 * a team of S warps per row group as in the FP8 kernel, GT_BATCH_BF16 spans (8 KiB) loaded per
 * warp before any is used. The bits of the previous kernel (gemv_tc_ref.cu: S = 8 always);
 * deterministic and batch-invariant; within the faithful tolerance of the exact GEMV (gemv.cu),
 * not its bits. */
#include "gemv.h"
#include "tc.cuh"

namespace {

template <int MT, int S>
__global__ void __launch_bounds__(GT_WARPS * 32, 2) gemv_bf16_tc_kernel(const uint16_t *W, int M, int K, int Mg,
                                                                    const uint16_t *x, int ldx, int n, uint16_t *out,
                                                                    int ldo)
{
    constexpr int C = GT_CLASSES / S, B = MT == 1 ? GT_BATCH_BF16 : GT_BATCH_BF16 / 2;
    static_assert(B % C == 0, "a batch holds whole turns of the warp's classes");
    __shared__ gt_team_smem<MT, S> sm;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3, j = warp % S;
    const int r0 = (blockIdx.x * (GT_WARPS / S) + warp / S) * GT_ROWS, ns = K / GT_BF16_SPAN;
    if (r0 >= M) return; /* the whole team */
    const uint16_t *wrow = W + (size_t)(r0 + g) * K + 8 * t;
    const uint16_t *xg = x + (size_t)(r0 / Mg) * K + 8 * t;
    const uint4 zero = make_uint4(0, 0, 0, 0);
    float acc[C][MT][4];
#pragma unroll
    for (int c = 0; c < C; c++)
#pragma unroll
        for (int mi = 0; mi < MT; mi++) acc[c][mi][0] = acc[c][mi][1] = acc[c][mi][2] = acc[c][mi][3] = 0.0f;

    /* one span: its two k-16 steps chained into ac (its class's accumulators); `on` false (past
     * K): no load, ac unchanged (an mma on zeros could turn a -0 accumulator into +0) */
    auto span = [&](const uint4 &w, int s, bool on, float (&ac)[MT][4]) {
#pragma unroll
        for (int mi = 0; mi < MT; mi++) {
            const int m0 = mi * GT_TOK + g, m1 = m0 + 8;
            const uint16_t *x0 = xg + (size_t)m0 * ldx + (size_t)s * GT_BF16_SPAN;
            const uint16_t *x1 = xg + (size_t)m1 * ldx + (size_t)s * GT_BF16_SPAN;
            const uint4 a0 = on && m0 < n ? __ldg((const uint4 *)x0) : zero;
            const uint4 a1 = on && m1 < n ? __ldg((const uint4 *)x1) : zero;
            float d[4] = {ac[mi][0], ac[mi][1], ac[mi][2], ac[mi][3]};
#pragma unroll
            for (int step = 0; step < 2; step++)
                gt_mma_bf16(d, gt_lo(a0, step), gt_lo(a1, step), gt_hi(a0, step), gt_hi(a1, step), gt_lo(w, step),
                            gt_hi(w, step));
#pragma unroll
            for (int e = 0; e < 4; e++) ac[mi][e] = on ? d[e] : ac[mi][e];
        }
    };

    /* member j's spans s = j + S i in order, class j + S (i % C) in acc[i % C]; spans past K
     * predicated off for one token tile, a warp-uniform exit for more (gemv_fp8_tc.cu) */
    for (int i0 = 0; j + S * i0 < ns; i0 += B) {
        uint4 wv[B];
#pragma unroll
        for (int u = 0; u < B; u++) {
            const int s = j + S * (i0 + u);
            wv[u] = s < ns ? gt_ld_stream(wrow + (size_t)s * GT_BF16_SPAN) : zero;
        }
#pragma unroll
        for (int u = 0; u < B; u++) {
            const int s = j + S * (i0 + u);
            if (MT > 1 && s >= ns) break; /* the same for the whole warp; the later u too */
            span(wv[u], s, s < ns, acc[u % C]);
        }
    }
    gt_team_store<MT, S>(&sm, acc, warp, r0, n, out, ldo);
}

} // namespace

int hci_cu_gemv_bf16_fast_split(cudaStream_t s, const uint16_t *W, int M, int K, int groups, const uint16_t *x,
                                int ldx, int n, uint16_t *out, int ldo, int split)
{
    if (n <= 0) return HC_OK;
    if (groups <= 0 || M % groups) return HC_ERR_INVALID_ARG;
    const int Mg = M / groups;
    if (n > GT_MAX_N || Mg % GT_ROWS || K % GT_BF16_SPAN || ldx % 8 || !hci_aligned16(W) || !hci_aligned16(x))
        return HC_ERR_INVALID_ARG;
    const int mt = (n + GT_TOK - 1) / GT_TOK, rgroups = M / GT_ROWS;
    if (!split) {
        int sms = 0;
        if (hci_cu_sm_count(&sms) != cudaSuccess) return HC_ERR_CUDA;
        split = gt_pick_split(rgroups, mt, sms);
    }
    if (split <= 0 || split > GT_CLASSES) return HC_ERR_INVALID_ARG;
    const unsigned grid = (unsigned)((rgroups + GT_WARPS / split - 1) / (GT_WARPS / split));
    return gt_dispatch(mt, split, [&](auto MT, auto S) {
        gemv_bf16_tc_kernel<MT.value, S.value><<<grid, GT_WARPS * 32, 0, s>>>(W, M, K, Mg, x, ldx, n, out, ldo);
    });
}

int hci_cu_gemv_bf16_fast(cudaStream_t s, const uint16_t *W, int M, int K, int groups, const uint16_t *x, int ldx,
                          int n, uint16_t *out, int ldo)
{
    return hci_cu_gemv_bf16_fast_split(s, W, M, K, groups, x, ldx, n, out, ldo, 0);
}
