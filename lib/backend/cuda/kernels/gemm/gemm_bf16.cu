/* gemm_bf16.cu - the fast bf16 projection of any number of tokens (CUDA option comp_fast: the
 * compressors' stacked wkv/wgate and the indexer's weights_proj), on mma.sync m16n8k16 bf16 with
 * fp32 accumulation. Every kernel here computes, for every output element, the same fp32 value
 *
 *   y[t][r] = acc after acc = fl32(acc + P[kb]) for the k-blocks kb = 0, 1, ..., K/128 - 1 in order,
 *   P[kb]   = the chain of the block's eight mma steps s = 0..7 (k = 128 kb + 16 s .. + 15, every
 *             k at its natural fragment position), the first one started from zero,
 *
 * so a token's bits depend neither on the number of tokens of the call nor on the kernel the
 * shapes select: an mma's result element depends only on its row of A, its column of B and its
 * accumulator, and the tiles only decide which warp computes it. This is the batch invariance
 * that HC_NUMERICS_FAST promises, over every n from 1 up (the backend calls this for every n, so
 * there is no GEMV/GEMM threshold either). The block structure is the FP8 GEMM's (gemm_fp8.cu);
 * it is what lets the sliced-K kernel split K over warps (whole blocks, added in k order) while
 * keeping the big kernel's bits.
 *
 * Why not cuBLASLt: its algorithm depends on the problem shape, n included, and a pinned
 * configuration (split-K 1, fixed tile) still leaves the kernel's k order to an opaque algorithm
 * (stream-K and persistent schedulers, library versions); here the order is in the code.
 *
 *  - big tiles (M % 128 == 0 and enough tiles for the SMs): 128 weight rows x 128 tokens per CTA,
 *    8 warps of 64 x 32, the swizzled tiles, ldmatrix maps and warp step of gemm_fp8.cu's big
 *    kernel (config.h, tile.cuh), the operands copied as they are by cp.async, GB_STAGES stages.
 *  - sliced K (few tokens, few rows, or any M): a CTA tile of MT*16 rows x NT*8 tokens is one
 *    warp tile; warp w computes the blocks w, w + 8, ... with fragments loaded straight from
 *    global memory (32-bit loads at the natural positions), and the block sums are added to the
 *    running sums in k order in shared memory (gemm_fp8.cu's gs_kernel without the scales; the
 *    reduction in tile.cuh).
 *  - few tokens (up to GP_MAX_N, decode; gemm_bf16_few.cu): the sliced kernel with one m-tile,
 *    its weights streamed into shared memory by cp.async several blocks ahead and read with
 *    ldmatrix.
 *
 * The result is written as double (the fp32 value exactly): the compressor and the indexer-weight
 * kernels read the exact path's double projections and round them to fp32 first. */
#include "../common.cuh"
#include "config.h"
#include "gemm.h"
#include "tile.cuh"

namespace {

struct gb_args {
    const uint16_t *W; /* [M][K] bf16 */
    const uint16_t *x; /* [n][ldx] bf16 */
    double *y;         /* [n][ldy] */
    int M, K, ldx, n, ldy;
};

/* ---------------------------------------------------------------- big tiles */

__global__ void __launch_bounds__(GF_THREADS, 1) gb_big_kernel(const gb_args a)
{
    extern __shared__ __align__(128) uint8_t sm[];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp / GF_WN, wn = warp % GF_WN;
    int mt, nt;
    gf_raster(blockIdx.x, a.M / GF_BM, (a.n + GF_BN - 1) / GF_BN, &mt, &nt);
    const int m0 = mt * GF_BM, n0 = nt * GF_BN, nkb = a.K / GF_BK;
    const uint32_t s0 = (uint32_t)__cvta_generic_to_shared(sm);

    /* This thread's copies: chunk c of rows gb_ld_row(tid, j) of both operands; token rows past n
     * are zero-filled. */
    const int c = gb_ld_chunk(tid);
    const uint16_t *wp = a.W + (size_t)(m0 + gb_ld_row(tid, 0)) * a.K + c * 8;
    const uint16_t *xp[GB_LD_PARTS];
#pragma unroll
    for (int j = 0; j < GB_LD_PARTS; j++) {
        const int tok = n0 + gb_ld_row(tid, j);
        xp[j] = tok < a.n ? a.x + (size_t)tok * a.ldx + c * 8 : nullptr;
    }
    auto load = [&](int kb, int stage) {
        const uint32_t ta = s0 + stage * GF_STAGE_BYTES, tb = ta + GF_TILE_BYTES;
        const size_t ko = (size_t)kb * GF_BK;
#pragma unroll
        for (int j = 0; j < GB_LD_PARTS; j++) {
            const uint32_t off = (uint32_t)gf_tile_off(gb_ld_row(tid, j), c);
            gm_cp16(ta + off, wp + (size_t)j * 16 * a.K + ko, true);
            gm_cp16(tb + off, xp[j] ? xp[j] + ko : a.x, xp[j] != nullptr);
        }
    };

    gf_warp_acc acc, P;
    gf_zero(acc);

#pragma unroll
    for (int st = 0; st < GB_STAGES - 1; st++) {
        if (st < nkb) load(st, st);
        gm_cp_commit();
    }

    /* ldmatrix addresses (gf_block_mma) */
    const uint32_t aoff = gf_lda_rowoff(wm, lane), boff = GF_TILE_BYTES + gf_ldb_rowoff(wn, lane);
    const uint32_t ya = gf_lda_y(lane), yb = gf_ldb_y(lane);

    for (int kb = 0; kb < nkb; kb++) {
        /* block kb has arrived (this thread's copies, then everyone's), and every warp is done
         * with block kb - 1, whose stage the copy of block kb + GB_STAGES - 1 refills */
        gm_cp_wait<GB_STAGES - 2>();
        __syncthreads();
        if (kb + GB_STAGES - 1 < nkb) load(kb + GB_STAGES - 1, (kb + GB_STAGES - 1) % GB_STAGES);
        gm_cp_commit(); /* possibly empty: keeps the group count of the wait above */
        const uint32_t sbase = s0 + (kb % GB_STAGES) * GF_STAGE_BYTES;
        gf_block_mma<GM_BF16>(P, sbase + aoff, sbase + boff, ya, yb, [](int) {});
#pragma unroll
        for (int mi = 0; mi < 4; mi++)
#pragma unroll
            for (int ni = 0; ni < 4; ni++)
#pragma unroll
                for (int e = 0; e < 4; e++) acc[mi][ni][e] = __fadd_rn(acc[mi][ni][e], P[mi][ni][e]);
    }

    gf_store_tile(acc, wm, wn, lane, [&](int row, int tok, float v) {
        if (n0 + tok < a.n) a.y[(size_t)(n0 + tok) * a.ldy + m0 + row] = (double)v;
    });
}

/* ---------------------------------------------------------------- sliced K */

/* Two bf16 at element k of a row (k even): the low half is element k, as ldmatrix gives it. */
__device__ __forceinline__ uint32_t ld2(const uint16_t *row, int k) { return __ldg((const unsigned int *)(row + k)); }

/* CTA tile MT*16 rows x NT*8 tokens = one warp tile; warp w computes blocks w, w+8, ... Lane
 * (g, t) builds the fragments of step s from k = 16 s + 2t (+1) and 16 s + 8 + 2t (+1) of rows g,
 * g + 8 of every m-tile and token g of every n-tile: mma.m16n8k16's natural positions, the same
 * that the big kernel's ldmatrix produces. Rows past M and tokens past n are zero. */
template <int MT, int NT>
__global__ void __launch_bounds__(GS_THREADS) gbs_kernel(const gb_args a)
{
    constexpr int F4 = MT * NT * 32, J = (F4 + GS_THREADS - 1) / GS_THREADS;
    extern __shared__ __align__(16) float4 red[]; /* [GS_WARPS][F4], layout: gs_elem */
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, g = lane >> 2, t = lane & 3;
    const int m0 = blockIdx.x * MT * 16, n0 = blockIdx.y * NT * 8, nkb = a.K / GF_BK;

    const uint16_t *wr[MT][2], *xr[NT];
#pragma unroll
    for (int mi = 0; mi < MT; mi++)
#pragma unroll
        for (int rr = 0; rr < 2; rr++) {
            const int row = m0 + mi * 16 + rr * 8 + g;
            wr[mi][rr] = row < a.M ? a.W + (size_t)row * a.K + 2 * t : nullptr;
        }
#pragma unroll
    for (int ni = 0; ni < NT; ni++) {
        const int tok = n0 + ni * 8 + g;
        xr[ni] = tok < a.n ? a.x + (size_t)tok * a.ldx + 2 * t : nullptr;
    }

    float acc[J][4];
#pragma unroll
    for (int j = 0; j < J; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;

    const int rounds = (nkb + GS_WARPS - 1) / GS_WARPS;
    for (int r = 0; r < rounds; r++) {
        const int kb = r * GS_WARPS + w;
        if (kb < nkb) { /* warp-uniform */
            float P[MT][NT][4];
#pragma unroll
            for (int s = 0; s < GF_BK / 16; s++) {
                const int k = kb * GF_BK + 16 * s;
                uint32_t af[MT][4], bf[NT][2];
#pragma unroll
                for (int mi = 0; mi < MT; mi++)
#pragma unroll
                    for (int rr = 0; rr < 2; rr++) {
                        af[mi][rr] = wr[mi][rr] ? ld2(wr[mi][rr], k) : 0u;
                        af[mi][rr + 2] = wr[mi][rr] ? ld2(wr[mi][rr], k + 8) : 0u;
                    }
#pragma unroll
                for (int ni = 0; ni < NT; ni++) {
                    bf[ni][0] = xr[ni] ? ld2(xr[ni], k) : 0u;
                    bf[ni][1] = xr[ni] ? ld2(xr[ni], k + 8) : 0u;
                }
#pragma unroll
                for (int mi = 0; mi < MT; mi++)
#pragma unroll
                    for (int ni = 0; ni < NT; ni++) {
                        if (s == 0) gm_mma_first<GM_BF16>(P[mi][ni], af[mi], bf[ni][0], bf[ni][1]);
                        else gm_mma_acc<GM_BF16>(P[mi][ni], af[mi], bf[ni][0], bf[ni][1]);
                    }
            }
#pragma unroll
            for (int mi = 0; mi < MT; mi++)
#pragma unroll
                for (int ni = 0; ni < NT; ni++)
                    red[w * F4 + (mi * NT + ni) * 32 + lane] =
                        make_float4(P[mi][ni][0], P[mi][ni][1], P[mi][ni][2], P[mi][ni][3]);
        }
        gs_add_round<F4>(acc, red, tid, nkb, r); /* the round's blocks, in k order */
    }

    gs_store_tile<NT, F4>(acc, tid, [&](int row, int tok, float v) {
        if (m0 + row < a.M && n0 + tok < a.n) a.y[(size_t)(n0 + tok) * a.ldy + m0 + row] = (double)v;
    });
}

template <int MT, int NT>
int gbs_launch(cudaStream_t s, const gb_args &a)
{
    constexpr int smem = GS_SMEM_BYTES(MT, NT);
    if (smem > 48 * 1024 &&
        cudaFuncSetAttribute(gbs_kernel<MT, NT>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) != cudaSuccess)
        return HC_ERR_CUDA;
    dim3 grid((unsigned)((a.M + MT * 16 - 1) / (MT * 16)), (unsigned)((a.n + NT * 8 - 1) / (NT * 8)));
    gbs_kernel<MT, NT><<<grid, GS_THREADS, smem, s>>>(a);
    return HCI_CU_CHECK_LAUNCH();
}

template <int NT>
int gbs_pick(cudaStream_t s, const gb_args &a, int sms)
{
    /* the widest row tile that still gives every SM a CTA, else the narrowest (most CTAs) */
    const int64_t nt = (a.n + NT * 8 - 1) / (NT * 8);
    if ((int64_t)((a.M + 63) / 64) * nt >= sms) return gbs_launch<4, NT>(s, a);
    if ((int64_t)((a.M + 31) / 32) * nt >= sms) return gbs_launch<2, NT>(s, a);
    return gbs_launch<1, NT>(s, a);
}

} // namespace

int hci_cu_gemm_bf16_kernel(cudaStream_t s, const uint16_t *W, int M, int K, const uint16_t *x, int ldx, int n,
                            double *y, int ldy, int kernel)
{
    if (n <= 0) return HC_OK;
    if (M <= 0 || K <= 0 || K % GF_BK || ldx < K || ldx % 2 || ldy < M || ((uintptr_t)W | (uintptr_t)x) % 4)
        return HC_ERR_INVALID_ARG;
    const gb_args a = {W, x, y, M, K, ldx, n, ldy};
    int sms = 0;
    if (hci_cu_sm_count(&sms) != cudaSuccess) return HC_ERR_CUDA;
    /* Big tiles when they fill at least half the SMs and the copies are 16-byte aligned; else the
     * few-token kernel up to GP_MAX_N tokens, the sliced kernel beyond. Each gives the same bits
     * (see the top). */
    const int64_t big = (int64_t)(M / GF_BM) * ((n + GF_BN - 1) / GF_BN);
    const bool big_ok = M % GF_BM == 0 && ldx % 8 == 0 && hci_aligned16(W) && hci_aligned16(x);
    if (kernel == 0 || kernel == 4)
        kernel = big_ok && 2 * big >= sms ? 1 : kernel == 0 && n <= GP_MAX_N && hci_aligned16(W) ? 3 : 2;
    switch (kernel) {
    case 1:
        if (!big_ok) return HC_ERR_INVALID_ARG;
        if (cudaFuncSetAttribute(gb_big_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, GB_SMEM_BYTES) != cudaSuccess)
            return HC_ERR_CUDA;
        gb_big_kernel<<<(unsigned)big, GF_THREADS, GB_SMEM_BYTES, s>>>(a);
        return HCI_CU_CHECK_LAUNCH();
    case 2: return n <= 8 ? gbs_pick<1>(s, a, sms) : gbs_pick<GS_NT>(s, a, sms);
    case 3: return hci_cu_gemm_bf16_few(s, W, M, K, x, ldx, n, y, ldy);
    default: return HC_ERR_INVALID_ARG;
    }
}

int hci_cu_gemm_bf16(cudaStream_t s, const uint16_t *W, int M, int K, const uint16_t *x, int ldx, int n, double *y,
                     int ldy)
{
    return hci_cu_gemm_bf16_kernel(s, W, M, K, x, ldx, n, y, ldy, 0);
}
