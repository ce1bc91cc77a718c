/* gemm_fp8.cu - block-scaled FP8 projections of many tokens (n > 16) on the tensor cores, with
 * the CPU backend's arithmetic (cpu_linear.c) as far as tensor cores allow:
 *
 *   y[t][r] = bf16( sum over kb in increasing order of fl32( P[t][r][kb] * fl32(xs[kb][t] * ws) ) ),
 *   fp32 accumulation, separate multiply and add (no FMA), as hci_cpu_linear_fp8 and gemv.cu.
 *
 * P, the dot of the 128 e4m3 codes of one k-block, comes from mma.sync m16n8k16 with fp32
 * accumulation started from zero for every block. The codes enter the tensor cores as f16 (every
 * e4m3 value is exact in f16, and so is every product), scaled by 2^-8 each by the cheap integer
 * conversion of config.h; the 2^16 is given back in the scale (exact: a power of two).
 * f16 rather than bf16 only because that conversion is a few integer ops; the products are exact
 * either way. The CPU rounds the exact block dot once; here the tensor core's fp32 accumulation
 * of the 128 products may differ from that in the last bits. No FP8 mma (its accumulation keeps
 * fewer bits), no cuBLASLt.
 *
 * Two kernels:
 *  - big tiles (the normal case): 128 weight rows (= one weight-scale row) x 128 tokens per CTA,
 *    8 warps of 64 x 32. Codes are loaded to registers one k-block ahead (one full block of
 *    mma time to arrive), converted once per CTA and stored as f16 into a swizzled smem stage
 *    (double buffered, one barrier per k-block), read by ldmatrix. Each warp keeps the block sum
 *    P and the running sum in registers (2 x 64 floats).
 *  - sliced K (grids that would leave most SMs idle: few rows, few tokens): a CTA tile of 64 x 32
 *    or 32 x 32 is one warp tile; the 8 warps take 8 consecutive k-blocks at a time, build the
 *    fragments straight from global memory (no smem operands), and put their scaled block sums
 *    into smem, where they are added to the running sums in k order.
 *
 * Expected speed on H200 (not measured yet): per k-block a big CTA moves ~256 KiB through smem
 * (64 KiB of f16 stores, 192 KiB of ldmatrix for 64 x 32 warp tiles) for 1024 HMMA, so smem
 * bandwidth caps it near 500 TFLOP/s; issue (~5.5 instructions per HMMA, the conversion
 * included) is close behind. Expect roughly 250-450 TFLOP/s on the large prefill shapes. The
 * sliced kernel trades L2 traffic and per-warp conversion for parallelism on small grids. */
#include "../common.cuh"
#include "config.h"
#include "gemm.h"
#include "tile.cuh"

namespace {

struct gf_args {
    const uint8_t *W;   /* [M][K] e4m3 codes */
    const float *Ws;    /* [M/128][sld] */
    const uint8_t *xq;  /* [np][K] e4m3 codes, rows n.. zero */
    const float *xs;    /* [K/128][np] */
    uint16_t *y;        /* [n][ldy] bf16 */
    int sld, M, K, np, n, ldy;
};

__device__ __forceinline__ uint32_t u4w(const uint4 &v, int i)
{
    return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

/* The 16 codes of chunk c8 of a row, as 32 bytes of f16 in the swizzled tile. */
__device__ __forceinline__ void gf_store16(uint8_t *tile, int row, int c8, const uint4 &v)
{
    uint4 h0, h1;
    gf_e4m3x4_to_f16x2(v.x, &h0.x, &h0.y);
    gf_e4m3x4_to_f16x2(v.y, &h0.z, &h0.w);
    gf_e4m3x4_to_f16x2(v.z, &h1.x, &h1.y);
    gf_e4m3x4_to_f16x2(v.w, &h1.z, &h1.w);
    *(uint4 *)(tile + gf_tile_off(row, gf_st_chunk(c8, 0))) = h0;
    *(uint4 *)(tile + gf_tile_off(row, gf_st_chunk(c8, 1))) = h1;
}

/* ---------------------------------------------------------------- big tiles */

__global__ void __launch_bounds__(GF_THREADS, 1) gf_big_kernel(const gf_args a)
{
    extern __shared__ __align__(128) uint8_t sm[];
    float *sS = (float *)(sm + 2 * GF_STAGE_BYTES); /* [2][GF_BN]: the block's token scales */
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp / GF_WN, wn = warp % GF_WN;
    int mt, nt;
    gf_raster(blockIdx.x, a.M / GF_BM, (a.np + GF_BN - 1) / GF_BN, &mt, &nt);
    const int m0 = mt * GF_BM, n0 = nt * GF_BN, K = a.K, nkb = K / GF_BK;

    /* This thread's share of a tile: 16 codes of rows gf_ld_row(tid, j) of both operands, and
     * (tid < GF_BN) one token scale. Token rows past np are not read: zero codes, scale 0. */
    const int c8 = gf_ld_c8(tid);
    const size_t rstep = (size_t)32 * K;
    const uint8_t *wp = a.W + (size_t)(m0 + gf_ld_row(tid, 0)) * K + c8 * 16;
    const uint8_t *xp = a.xq + (size_t)(n0 + gf_ld_row(tid, 0)) * K + c8 * 16;
    unsigned bvalid = 0;
#pragma unroll
    for (int j = 0; j < 4; j++) bvalid |= (unsigned)(n0 + gf_ld_row(tid, j) < a.np) << j;
    const bool svalid = tid < GF_BN && n0 + tid < a.np;
    const float *xsp = a.xs + n0 + tid, *wsp = a.Ws + (size_t)(m0 / 128) * a.sld;

    uint4 ra[4], rb[4];
    float rx = 0.0f, rw = 0.0f;
    auto load = [&](int kb, int j) {
        ra[j] = __ldg((const uint4 *)(wp + j * rstep + (size_t)kb * GF_BK));
        rb[j] = (bvalid >> j & 1) ? __ldg((const uint4 *)(xp + j * rstep + (size_t)kb * GF_BK)) : make_uint4(0, 0, 0, 0);
        if (j == 0) {
            rx = svalid ? __ldg(xsp + (size_t)kb * a.np) : 0.0f;
            rw = __ldg(wsp + kb);
        }
    };
    auto store = [&](int stage, int j) {
        uint8_t *ta = sm + stage * GF_STAGE_BYTES;
        gf_store16(ta, gf_ld_row(tid, j), c8, ra[j]);
        gf_store16(ta + GF_TILE_BYTES, gf_ld_row(tid, j), c8, rb[j]);
        if (j == 0 && tid < GF_BN) sS[stage * GF_BN + tid] = gf_scale(rx, rw);
    };

    gf_warp_acc acc, P;
    gf_zero(acc);

#pragma unroll
    for (int j = 0; j < 4; j++) load(0, j);
#pragma unroll
    for (int j = 0; j < 4; j++) store(0, j);
#pragma unroll
    for (int j = 0; j < 4; j++) load(min(1, nkb - 1), j);
    __syncthreads();

    /* ldmatrix addresses (gf_block_mma) */
    const uint32_t s0 = (uint32_t)__cvta_generic_to_shared(sm);
    const uint32_t aoff = gf_lda_rowoff(wm, lane), boff = GF_TILE_BYTES + gf_ldb_rowoff(wn, lane);
    const uint32_t ya = gf_lda_y(lane), yb = gf_ldb_y(lane);

    for (int kb = 0; kb < nkb; kb++) {
        const int st = kb & 1, knext = min(kb + 2, nkb - 1);
        const uint32_t abase = s0 + st * GF_STAGE_BYTES + aoff, bbase = s0 + st * GF_STAGE_BYTES + boff;
        /* Spread the next block's conversion over the mma stream: after step kk (even), store
         * part kk / 2 of block kb+1 (loaded one block ago) into the other stage, then refill its
         * registers with block kb+2. At the end the clamped block is stored again into a stage no
         * one reads. */
        gf_block_mma<GM_F16>(P, abase, bbase, ya, yb, [&](int kk) {
            if (kk % 2 == 0) {
                store(st ^ 1, kk / 2);
                load(knext, kk / 2);
            }
        });
        /* acc = fl32(acc + fl32(P * s)), block by block in k order, as the CPU. */
        const float *sc = sS + st * GF_BN + wn * 32 + 2 * (lane & 3);
#pragma unroll
        for (int ni = 0; ni < 4; ni++) {
            float2 s2 = *(const float2 *)(sc + ni * 8);
#pragma unroll
            for (int mi = 0; mi < 4; mi++) {
                acc[mi][ni][0] = __fadd_rn(acc[mi][ni][0], __fmul_rn(P[mi][ni][0], s2.x));
                acc[mi][ni][1] = __fadd_rn(acc[mi][ni][1], __fmul_rn(P[mi][ni][1], s2.y));
                acc[mi][ni][2] = __fadd_rn(acc[mi][ni][2], __fmul_rn(P[mi][ni][2], s2.x));
                acc[mi][ni][3] = __fadd_rn(acc[mi][ni][3], __fmul_rn(P[mi][ni][3], s2.y));
            }
        }
        __syncthreads(); /* stage st and its scales are free; stage st^1 is complete */
    }

    gf_store_tile(acc, wm, wn, lane, [&](int row, int tok, float v) {
        if (n0 + tok < a.n) a.y[(size_t)(n0 + tok) * a.ldy + m0 + row] = hci_bf16_from_f32(v);
    });
}

/* ---------------------------------------------------------------- sliced K */

/* CTA tile MT*16 rows x NT*8 tokens = one warp tile; warp w computes k-blocks w, w+8, ... Lane
 * (g, t) loads 16 codes at 16 t of the k-block's 64-code half h, for rows g and g+8 of every
 * m-tile and token g of every n-tile; word s of them feeds mma step (h, s) of both operands
 * alike: logical k 2t,2t+1 <- codes 4s+0,4s+2 and 2t+8,2t+9 <- 4s+1,4s+3 (see
 * gf_e4m3x4_to_f16x2), so each product pairs the same code positions of weight and token. */
template <int MT, int NT>
__global__ void __launch_bounds__(GS_THREADS, 1) gs_kernel(const gf_args a)
{
    constexpr int BM = MT * 16, BN = NT * 8, F4 = MT * NT * 32, J = (F4 + GS_THREADS - 1) / GS_THREADS;
    static_assert(GF_SCALE_BLOCK % BM == 0, "a CTA tile must lie in one weight-scale block");
    extern __shared__ __align__(16) float4 red[]; /* [GS_WARPS][F4], layout: gs_elem */
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, g = lane >> 2, t = lane & 3;
    const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN, K = a.K, nkb = K / 128;

    const uint8_t *wb = a.W + (size_t)(m0 + g) * K + 16 * t;
    const uint8_t *xb = a.xq + (size_t)(n0 + g) * K + 16 * t;
    const float *wsp = a.Ws + (size_t)(m0 / 128) * a.sld;
    unsigned nvalid = 0; /* n-tiles inside np (np % 16 == 0: a tile is all in or all out) */
#pragma unroll
    for (int ni = 0; ni < NT; ni++) nvalid |= (unsigned)(n0 + ni * 8 < a.np) << ni;

    uint4 ra[2][MT][2], rb[2][NT];
    auto load = [&](int kb, int h) {
        const size_t ko = (size_t)kb * 128 + h * 64;
#pragma unroll
        for (int mi = 0; mi < MT; mi++)
#pragma unroll
            for (int rr = 0; rr < 2; rr++) ra[h][mi][rr] = __ldg((const uint4 *)(wb + (size_t)(mi * 16 + rr * 8) * K + ko));
#pragma unroll
        for (int ni = 0; ni < NT; ni++)
            rb[h][ni] = (nvalid >> ni & 1) ? __ldg((const uint4 *)(xb + (size_t)ni * 8 * K + ko)) : make_uint4(0, 0, 0, 0);
    };

    float acc[J][4];
#pragma unroll
    for (int j = 0; j < J; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;

    const int rounds = (nkb + GS_WARPS - 1) / GS_WARPS;
    if (w < nkb) load(w, 0), load(w, 1);
    for (int r = 0; r < rounds; r++) {
        const int kb = r * GS_WARPS + w;
        if (kb < nkb) { /* warp-uniform */
            const float sw = __ldg(wsp + kb);
            float2 sx[NT];
#pragma unroll
            for (int ni = 0; ni < NT; ni++)
                sx[ni] = (nvalid >> ni & 1) ? __ldg((const float2 *)(a.xs + (size_t)kb * a.np + n0 + ni * 8 + 2 * t))
                                            : make_float2(0.0f, 0.0f);
            float P[MT][NT][4];
#pragma unroll
            for (int h = 0; h < 2; h++) {
#pragma unroll
                for (int s = 0; s < 4; s++) {
                    uint32_t af[MT][4], bf[NT][2];
#pragma unroll
                    for (int mi = 0; mi < MT; mi++) {
                        gf_e4m3x4_to_f16x2(u4w(ra[h][mi][0], s), &af[mi][0], &af[mi][2]);
                        gf_e4m3x4_to_f16x2(u4w(ra[h][mi][1], s), &af[mi][1], &af[mi][3]);
                    }
#pragma unroll
                    for (int ni = 0; ni < NT; ni++) gf_e4m3x4_to_f16x2(u4w(rb[h][ni], s), &bf[ni][0], &bf[ni][1]);
#pragma unroll
                    for (int mi = 0; mi < MT; mi++)
#pragma unroll
                        for (int ni = 0; ni < NT; ni++) {
                            if (h == 0 && s == 0) gm_mma_first<GM_F16>(P[mi][ni], af[mi], bf[ni][0], bf[ni][1]);
                            else gm_mma_acc<GM_F16>(P[mi][ni], af[mi], bf[ni][0], bf[ni][1]);
                        }
                }
                if (kb + GS_WARPS < nkb) load(kb + GS_WARPS, h); /* half h is consumed: prefetch */
            }
#pragma unroll
            for (int ni = 0; ni < NT; ni++) {
                const float s0 = gf_scale(sx[ni].x, sw), s1 = gf_scale(sx[ni].y, sw);
#pragma unroll
                for (int mi = 0; mi < MT; mi++)
                    red[w * F4 + (mi * NT + ni) * 32 + lane] =
                        make_float4(__fmul_rn(P[mi][ni][0], s0), __fmul_rn(P[mi][ni][1], s1),
                                    __fmul_rn(P[mi][ni][2], s0), __fmul_rn(P[mi][ni][3], s1));
            }
        }
        gs_add_round<F4>(acc, red, tid, nkb, r); /* the round's blocks, in k order */
    }

    gs_store_tile<NT, F4>(acc, tid, [&](int row, int tok, float v) {
        if (n0 + tok < a.n) a.y[(size_t)(n0 + tok) * a.ldy + m0 + row] = hci_bf16_from_f32(v);
    });
}

template <int MT, int NT>
int gs_launch(cudaStream_t s, const gf_args &a)
{
    constexpr int smem = GS_SMEM_BYTES(MT, NT);
    static_assert(smem == GS_WARPS * MT * NT * 32 * (int)sizeof(float4), "one float4 per lane and fragment");
    if (smem > 48 * 1024 &&
        cudaFuncSetAttribute(gs_kernel<MT, NT>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) != cudaSuccess)
        return HC_ERR_CUDA;
    dim3 grid((unsigned)(a.M / (MT * 16)), (unsigned)((a.np + NT * 8 - 1) / (NT * 8)));
    gs_kernel<MT, NT><<<grid, GS_THREADS, smem, s>>>(a);
    return HCI_CU_CHECK_LAUNCH();
}

} // namespace

int hci_cu_gemm_fp8(cudaStream_t s, const uint8_t *W, const float *Ws, int sld, int M, int K, const uint8_t *xq,
                    const float *xs, int np, int n, uint16_t *y, int ldy)
{
    if (n <= 0) return HC_OK;
    if (M <= 0 || M % GF_SCALE_BLOCK || K <= 0 || K % GF_SCALE_BLOCK || np < n || np % GF_NP_MULT || ldy < M ||
        sld < K / GF_SCALE_BLOCK || ((uintptr_t)W | (uintptr_t)xq) % 16 || (uintptr_t)xs % 8)
        return HC_ERR_INVALID_ARG;
    const gf_args a = {W, Ws, xq, xs, y, sld, M, K, np, n, ldy};
    int sms = 0;
    if (hci_cu_sm_count(&sms) != cudaSuccess) return HC_ERR_CUDA;
    /* Big tiles when they fill at least half the SMs; otherwise more, smaller CTAs (sliced K). */
    const int64_t big = (int64_t)(M / GF_BM) * ((np + GF_BN - 1) / GF_BN);
    if (2 * big >= sms) {
        if (cudaFuncSetAttribute(gf_big_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, GF_SMEM_BYTES) != cudaSuccess)
            return HC_ERR_CUDA;
        gf_big_kernel<<<(unsigned)big, GF_THREADS, GF_SMEM_BYTES, s>>>(a);
        return HCI_CU_CHECK_LAUNCH();
    }
    if ((int64_t)(M / (GS_MT_WIDE * 16)) * ((np + GS_NT * 8 - 1) / (GS_NT * 8)) >= sms)
        return gs_launch<GS_MT_WIDE, GS_NT>(s, a);
    return gs_launch<GS_MT_NARROW, GS_NT>(s, a);
}
