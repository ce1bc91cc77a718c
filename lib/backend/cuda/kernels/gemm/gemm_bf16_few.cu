/* gemm_bf16_few.cu - the bf16 GEMM of gemm_bf16.cu (option comp_fast: the compressors' wkv/wgate
 * and the indexer's weights_proj) for up to GP_MAX_N tokens, i.e. decode. The formula is
 * gemm_bf16.cu's: per 128-k block the chain of its eight mma.m16n8k16 steps (the first from zero,
 * every k at its natural fragment position), the block sums added in k order from zero. The CTA
 * and the k-order sum are the sliced-K kernel's (gbs_kernel with one m-tile: warp w computes
 * the blocks w, w + 8, ..., gs_add_round adds each round's blocks in k order), so the bits are
 * that kernel's; what changes is how the weights arrive. The sliced kernel reads its fragments
 * with 4-byte loads, 32 of them per block and lane, and a warp has one block in flight; here each
 * warp streams its 16 x 128 weight tiles with 16-byte cp.async into a ring of GP_STAGES stages of
 * its own (config.h), GP_STAGES blocks ahead, and takes the A fragments with ldmatrix (the same
 * values at the same positions). A decode step's projection (16 MB for V4-Flash's CSA
 * compressor) then has every block in flight at once instead of a block per warp. */
#include "../common.cuh"
#include "config.h"
#include "gemm.h"
#include "tile.cuh"

namespace {

/* Two bf16 at element k of a row (k even): the low half is element k, as ldmatrix gives it. */
__device__ __forceinline__ uint32_t ld2(const uint16_t *row, int k) { return __ldg((const unsigned int *)(row + k)); }

/* CTA (bx, blockIdx.y): 16 weight rows (m0 = 16 bx ..) x NT*8 tokens (n0..); rows past M and
 * tokens past n are zero. The whole kernel, shared by the one-weight and the grouped launch. */
template <int NT>
__device__ __forceinline__ void gbp_cta(int bx, const uint16_t *W, int M, int K, const uint16_t *x, int ldx, int n,
                                        double *y, int ldy)
{
    constexpr int F4 = NT * 32, J = (F4 + GS_THREADS - 1) / GS_THREADS;
    extern __shared__ __align__(128) float4 smf[];
    float4 *red = smf; /* [GS_WARPS][F4], layout gs_elem */
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, g = lane >> 2, t = lane & 3;
    const int m0 = bx * 16, n0 = blockIdx.y * NT * 8, nkb = K / GF_BK;
    const uint32_t ring = (uint32_t)__cvta_generic_to_shared(smf + GS_WARPS * F4) + w * GP_STAGES * GP_STAGE_BYTES;

    /* block kb into a stage by the lane's 8 copies (config.h), one commit group either way */
    const int cc = gp_copy_chunk(lane);
    auto load = [&](int kb, int stage) {
        if (kb < nkb) {
#pragma unroll
            for (int i = 0; i < 8; i++) {
                const int r = gp_copy_row(lane, i);
                const bool ok = m0 + r < M;
                const uint16_t *src = ok ? W + (size_t)(m0 + r) * K + (size_t)kb * GF_BK + cc * 8 : W;
                gm_cp16(ring + stage * GP_STAGE_BYTES + gp_stage_off(r, cc), src, ok);
            }
        }
        gm_cp_commit();
    };
    const int lrow = gp_ldsm_row(lane); /* ldmatrix.x4's row address (config.h) */
    const uint16_t *xr[NT];
#pragma unroll
    for (int ni = 0; ni < NT; ni++) {
        const int tok = n0 + ni * 8 + g;
        xr[ni] = tok < n ? x + (size_t)tok * ldx + 2 * t : nullptr;
    }

    float acc[J][4];
#pragma unroll
    for (int j = 0; j < J; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;

    /* warp w's blocks kb = w + 8 r (round r) sit in stage r % GP_STAGES */
#pragma unroll
    for (int p = 0; p < GP_STAGES; p++) load(w + GS_WARPS * p, p);
    const int rounds = (nkb + GS_WARPS - 1) / GS_WARPS;
    for (int r = 0; r < rounds; r++) {
        const int kb = r * GS_WARPS + w;
        if (kb < nkb) { /* warp-uniform; a warp past K here is past it in every later round */
            gm_cp_wait<GP_STAGES - 1>(); /* this lane's copies of round r ... */
            __syncwarp();                /* ... and every lane's */
            const int stage = r % GP_STAGES;
            const uint32_t sb = ring + stage * GP_STAGE_BYTES;
            float P[NT][4];
#pragma unroll
            for (int s = 0; s < GF_BK / 16; s++) {
                const int k = kb * GF_BK + 16 * s;
                uint32_t af[4], bf[NT][2];
                hci_dev_ldsm_x4(af, sb + gp_stage_off(lrow, gp_ldsm_chunk(lane, s)));
#pragma unroll
                for (int ni = 0; ni < NT; ni++) {
                    bf[ni][0] = xr[ni] ? ld2(xr[ni], k) : 0u;
                    bf[ni][1] = xr[ni] ? ld2(xr[ni], k + 8) : 0u;
                }
#pragma unroll
                for (int ni = 0; ni < NT; ni++) {
                    if (s == 0) gm_mma_first<GM_BF16>(P[ni], af, bf[ni][0], bf[ni][1]);
                    else gm_mma_acc<GM_BF16>(P[ni], af, bf[ni][0], bf[ni][1]);
                }
            }
            __syncwarp(); /* every lane has read the stage before it is refilled */
            load(kb + GS_WARPS * GP_STAGES, stage);
#pragma unroll
            for (int ni = 0; ni < NT; ni++) red[w * F4 + ni * 32 + lane] = make_float4(P[ni][0], P[ni][1], P[ni][2], P[ni][3]);
        }
        gs_add_round<F4>(acc, red, tid, nkb, r); /* the round's blocks, in k order */
    }
    gm_cp_wait<0>(); /* no copy outlives the CTA (the refills past K are empty groups) */

    gs_store_tile<NT, F4>(acc, tid, [&](int row, int tok, float v) {
        if (m0 + row < M && n0 + tok < n) y[(size_t)(n0 + tok) * ldy + m0 + row] = (double)v;
    });
}

template <int NT>
__global__ void __launch_bounds__(GS_THREADS, 1) gbp_kernel(const uint16_t *W, int M, int K, const uint16_t *x,
                                                            int ldx, int n, double *y, int ldy)
{
    gbp_cta<NT>(blockIdx.x, W, M, K, x, ldx, n, y, ldy);
}

/* Several weights over the same x (option decode_fused): each CTA the rows of its segment. */
template <int NT>
__global__ void __launch_bounds__(GS_THREADS, 1) gbp_grouped_kernel(const __grid_constant__ hci_cu_seg_grid g, int K,
                                                                    const uint16_t *x, int ldx, int n)
{
    int bx;
    const hci_cu_seg &sg = g.s[hci_dev_seg_of(g, blockIdx.x, bx)];
    gbp_cta<NT>(bx, (const uint16_t *)sg.W, sg.M, K, x, ldx, n, (double *)sg.y, sg.ldy);
}

template <int NT>
int gbp_launch(cudaStream_t s, const uint16_t *W, int M, int K, const uint16_t *x, int ldx, int n, double *y, int ldy)
{
    constexpr int smem = GP_SMEM_BYTES(NT);
    if (cudaFuncSetAttribute(gbp_kernel<NT>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) != cudaSuccess)
        return HC_ERR_CUDA;
    const dim3 grid((unsigned)((M + 15) / 16), (unsigned)((n + NT * 8 - 1) / (NT * 8)));
    gbp_kernel<NT><<<grid, GS_THREADS, smem, s>>>(W, M, K, x, ldx, n, y, ldy);
    return HCI_CU_CHECK_LAUNCH();
}

template <int NT>
int gbp_grouped_launch(cudaStream_t s, const hci_cu_seg_grid &g, int K, const uint16_t *x, int ldx, int n)
{
    constexpr int smem = GP_SMEM_BYTES(NT);
    if (cudaFuncSetAttribute(gbp_grouped_kernel<NT>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) != cudaSuccess)
        return HC_ERR_CUDA;
    const dim3 grid((unsigned)g.cta0[g.n], (unsigned)((n + NT * 8 - 1) / (NT * 8)));
    gbp_grouped_kernel<NT><<<grid, GS_THREADS, smem, s>>>(g, K, x, ldx, n);
    return HCI_CU_CHECK_LAUNCH();
}

} // namespace

int hci_cu_gemm_bf16_few(cudaStream_t s, const uint16_t *W, int M, int K, const uint16_t *x, int ldx, int n,
                         double *y, int ldy)
{
    if (n <= 0) return HC_OK;
    if (n > GP_MAX_N || M <= 0 || K <= 0 || K % GF_BK || ldx < K || ldx % 2 || ldy < M || !hci_aligned16(W) ||
        (uintptr_t)x % 4)
        return HC_ERR_INVALID_ARG;
    if (n <= 8) return gbp_launch<1>(s, W, M, K, x, ldx, n, y, ldy);
    if (n <= 16) return gbp_launch<2>(s, W, M, K, x, ldx, n, y, ldy);
    if (n <= 32) return gbp_launch<4>(s, W, M, K, x, ldx, n, y, ldy);
    return gbp_launch<8>(s, W, M, K, x, ldx, n, y, ldy);
}

int hci_cu_gemm_bf16_few_grouped(cudaStream_t s, const hci_cu_seg *seg, int nseg, int K, const uint16_t *x, int ldx,
                                 int n)
{
    if (n <= 0) return HC_OK;
    if (n > GP_MAX_N || K <= 0 || K % GF_BK || ldx < K || ldx % 2 || (uintptr_t)x % 4) return HC_ERR_INVALID_ARG;
    for (int i = 0; i < nseg; i++)
        if (seg[i].M <= 0 || seg[i].ldy < seg[i].M || !hci_aligned16(seg[i].W)) return HC_ERR_INVALID_ARG;
    hci_cu_seg_grid g;
    if (!hci_cu_seg_grid_make(g, seg, nseg, [](int M) { return (M + 15) / 16; })) return HC_ERR_INVALID_ARG;
    if (n <= 8) return gbp_grouped_launch<1>(s, g, K, x, ldx, n);
    if (n <= 16) return gbp_grouped_launch<2>(s, g, K, x, ldx, n);
    if (n <= 32) return gbp_grouped_launch<4>(s, g, K, x, ldx, n);
    return gbp_grouped_launch<8>(s, g, K, x, ldx, n);
}
