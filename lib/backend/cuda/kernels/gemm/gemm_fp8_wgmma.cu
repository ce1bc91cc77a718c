/* gemm_fp8_wgmma.cu - the FP8 projections of prefill pieces (option gemm_wgmma, sm_90 only) on
 * Hopper's wgmma, with the arithmetic of gemm_fp8.cu:
 *
 *   y[t][r] = bf16( sum over kb in increasing order of fl32( P[t][r][kb] * fl32(fl32(xs*ws) * 2^16) ) )
 *
 * P, the dot of one 128-k block, from wgmma m64nNk16 on the e4m3 codes as f16 (times 2^-8 each,
 * exact: config.h's gf_e4m3x4_to_f16x2, here in its LOP3 form gw_e4m3x4_to_f16x2) with fp32
 * accumulation, the first of its eight k16 steps from zero (scale-d 0); then promoted into a
 * second set of fp32 registers with a separate multiply and add (no FMA), block by block in k
 * order. The codes go into the f16 tiles with the big mma.sync kernel's permutation
 * (gf_st_chunk), so that each k16 step sums the same 16 products in the same order as that
 * kernel's mma step kk: whether the two tensor-core paths then give the same bits is the
 * hardware's business (tools/gemm-check counts the outputs that differ).
 *
 * CTA: 128 weight rows (one weight-scale row) x BN tokens per tile, BN in {128, 64, 32, 16} (the
 * launcher picks by the grid), persistent over tiles (grid = min(tiles, SMs), one CTA per SM),
 * three warpgroups:
 *   - producer (warpgroup 2): loads a k-block's codes of both operands (16 bytes per load, a warp
 *     reads 4 whole 128-byte rows) one to three blocks ahead into registers,
 *     converts them to f16 and stores them into one of GW_STAGES stages, 128B-swizzled as wgmma
 *     reads them (config.h: gw_sw_off), with the block's token scales fl32(fl32(xs*ws)*2^16);
 *   - consumers (warpgroups 0 and 1): 64 weight rows x BN tokens each, weights as A and tokens
 *     as B, both K-major from shared memory; per block eight wgmma into P (BN/2 registers), wait,
 *     promote into the running sums (BN/2 registers); at the end of a tile the bf16 results go
 *     through shared memory (gw_epi_off) to 16-byte stores of whole rows of y.
 * Hand-offs by named barriers: FULL per stage and consumer (the producer arrives, that consumer
 * waits), EMPTY per stage (the consumers arrive, the producer waits), and an issue order between
 * the consumers (ORDER: consumer 0 issues block g, then consumer 1, then consumer 0 block g+1,
 * ...), so that one promotes while the tensor cores run the other's block.
 *
 * The tiles change neither P nor the order of the sums: a token's result does not depend on n,
 * on BN or on the other tokens, provided that the tensor cores' dot of a row and a column does
 * not depend on the instruction's N (tools/gemm-check compares every BN). Deterministic.
 *
 * Speed: per k-block a 128 x 128 tile stores 64 KiB of f16 and wgmma reads 96 KiB, 160 KiB of
 * shared-memory traffic against 1024 cycles of dense f16 tensor work; per block and SM
 * sub-partition the producer warp issues ~620 instructions (~31 per 16 codes converted and
 * stored, ~100 for the loads) and each consumer warp ~260 (eight wgmma, the 2 x 64 FMUL/FADD of
 * the promotion, the scales). Measured on an H100 (tools/gemm-check, 2026-12-07): 336-355
 * TFLOP/s at 2048 tokens, 1.3-1.5x the mma.sync kernel, below the ~80% of the f16 rate that
 * shared memory would allow: the producer's conversion is the next limit. Small grids (few rows
 * and tokens) are bound by the load latency of the k-blocks instead, and slower than the
 * mma.sync kernel's sliced K. */
#include "../common.cuh"
#include "../wgmma.cuh"
#include "config.h"
#include "gemm.h"
#include "tile.cuh"

namespace {

struct gw_args {
    const uint8_t *W;  /* [M][K] e4m3 codes */
    const float *Ws;   /* [M/128][sld] */
    const uint8_t *xq; /* [np][K] e4m3 codes, rows n.. zero */
    const float *xs;   /* [K/128][np] */
    uint16_t *y;       /* [n][ldy] bf16 */
    int sld, K, np, n, ldy;
    int tiles_m, tiles_n, nkb; /* row tiles (M/128), token tiles (np/BN rounded up), k-blocks */
    int vec_out;               /* y and ldy allow 16-byte stores */
};

/* Consumers 0 and 1 wait for their own FULL barriers (a shared one would keep them in step);
 * ORDER0: consumer 0 has issued block g, ORDER1: consumer 1 has issued block g. */
enum {
    BAR_FULL0 = 1,
    BAR_FULL1 = BAR_FULL0 + GW_STAGES,
    BAR_EMPTY = BAR_FULL1 + GW_STAGES,
    BAR_ORDER0 = BAR_EMPTY + GW_STAGES,
    BAR_ORDER1,
    BAR_EPI, /* + consumer: its output staging */
    BAR_END = BAR_EPI + 2
};
static_assert(BAR_END <= 16, "named barriers 1..15");
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
constexpr int CONS_THREADS = 256; /* the two consumer warpgroups */
constexpr bool ORDER = true;      /* alternate the consumers' issue (see above) */

#define GW_F8(b) "+f"(d[b]), "+f"(d[b + 1]), "+f"(d[b + 2]), "+f"(d[b + 3]), "+f"(d[b + 4]), "+f"(d[b + 5]), "+f"(d[b + 6]), "+f"(d[b + 7])

/* d (+)= A.B^T for 64 weight rows x N tokens x 16 k, f16 operands K-major in shared memory (no
 * transpose), fp32 accumulators; acc 0 starts from zero. */
template <int N> __device__ __forceinline__ void gw_mma(float (&d)[N / 2], uint64_t da, uint64_t db, int acc);
template <> __device__ __forceinline__ void gw_mma<16>(float (&d)[8], uint64_t da, uint64_t db, int acc)
{
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %10, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n16k16.f32.f16.f16 {"
                 "%0, %1, %2, %3, %4, %5, %6, %7"
                 "}, %8, %9, p, 1, 1, 0, 0;\n}\n"
                 : GW_F8(0)
                 : "l"(da), "l"(db), "r"(acc));
}
template <> __device__ __forceinline__ void gw_mma<32>(float (&d)[16], uint64_t da, uint64_t db, int acc)
{
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n32k16.f32.f16.f16 {"
                 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15"
                 "}, %16, %17, p, 1, 1, 0, 0;\n}\n"
                 : GW_F8(0), GW_F8(8)
                 : "l"(da), "l"(db), "r"(acc));
}
template <> __device__ __forceinline__ void gw_mma<64>(float (&d)[32], uint64_t da, uint64_t db, int acc)
{
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 {"
                 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
                 "}, %32, %33, p, 1, 1, 0, 0;\n}\n"
                 : GW_F8(0), GW_F8(8), GW_F8(16), GW_F8(24)
                 : "l"(da), "l"(db), "r"(acc));
}
template <> __device__ __forceinline__ void gw_mma<128>(float (&d)[64], uint64_t da, uint64_t db, int acc)
{
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {"
                 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
                 "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
                 "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
                 "}, %64, %65, p, 1, 1, 0, 0;\n}\n"
                 : GW_F8(0), GW_F8(8), GW_F8(16), GW_F8(24), GW_F8(32), GW_F8(40), GW_F8(48), GW_F8(56)
                 : "l"(da), "l"(db), "r"(acc));
}
#undef GW_F8

/* The 16 codes of chunk c8 of row r, as f16, into an operand tile of ROWS rows: logical chunks
 * gf_st_chunk(c8, 0 / 1) (the big kernel's order), 128B-swizzled. */
template <int ROWS> __device__ __forceinline__ void gw_store16(uint8_t *tile, int r, int c8, const uint4 &v)
{
    uint4 h0, h1;
    gw_e4m3x4_to_f16x2(v.x, &h0.x, &h0.y);
    gw_e4m3x4_to_f16x2(v.y, &h0.z, &h0.w);
    gw_e4m3x4_to_f16x2(v.z, &h1.x, &h1.y);
    gw_e4m3x4_to_f16x2(v.w, &h1.z, &h1.w);
    *(uint4 *)(tile + gw_sw_off(ROWS, r, gf_st_chunk(c8, 0))) = h0;
    *(uint4 *)(tile + gw_sw_off(ROWS, r, gf_st_chunk(c8, 1))) = h1;
}

/* The CTA's tile i: (row tile, token tile) by gf_raster over the launch order, so that the CTAs
 * of one round share weight rows and tokens in L2. */
__device__ __forceinline__ void gw_tile(const gw_args &a, int i, int *mt, int *nt)
{
    gf_raster((int)blockIdx.x + i * (int)gridDim.x, a.tiles_m, a.tiles_n, mt, nt);
}

/* Producer thread pt: the CTA's blocks g = 0 .. G-1 (tile g / nkb, k-block g % nkb) into stage
 * g % GW_STAGES. A block's codes are loaded into registers DEPTH blocks ahead (register set
 * g % DEPTH), right after the block before them there is stored: while the producer waits for a
 * free stage (the consumers' pace), they land. DEPTH 1 for BN 128 (a block of tensor work,
 * ~1000+ cycles, covers the load latency; 2 sets of 16 loads would not fit the registers), 2
 * and 3 for the shorter blocks of smaller BN (latency-bound on small grids). */
template <int BN> __device__ __forceinline__ void gw_produce(const gw_args &a, uint8_t *sm, int pt, int ntiles)
{
    constexpr int NL = GW_LOADS(BN), STAGE = GW_STAGE_BYTES(BN), DEPTH = BN == 128 ? 1 : BN == 64 ? 2 : 3;
    const int c8 = gw_ld_c8(pt), G = ntiles * a.nkb;
    const size_t K = (size_t)a.K, rstep = 16 * K;
    float *sS = (float *)(sm + GW_OFF_SCALES(BN));

    /* The next block to load (blocks are loaded in order): tile li, k-block lk, and this thread's
     * rows of that tile: weight rows gw_ld_row(pt, j) at wp + j * rstep, token rows
     * gw_ld_row(pt, j - 8) at xp + (j - 8) * rstep (bit j - 8 of xv_rows: inside np; the others
     * are zero codes, never read), token pt's scales (xs_ok: pt < BN and inside np), the tile's
     * weight scales. Moved to the next tile only there, so a block costs its loads and a few
     * adds. */
    int li = 0, lk = 0;
    const uint8_t *wp = nullptr, *xp = nullptr;
    const float *xsp = nullptr, *wsp = nullptr;
    unsigned xv_rows = 0;
    bool xs_ok = false;
    auto seek = [&](int i) {
        int mt, nt;
        gw_tile(a, i, &mt, &nt);
        const int n0 = nt * BN, tk = n0 + gw_ld_row(pt, 0);
        wp = a.W + (size_t)(mt * GW_BM + gw_ld_row(pt, 0)) * K + c8 * 16;
        xp = a.xq + (size_t)tk * K + c8 * 16;
        xv_rows = 0;
#pragma unroll
        for (int j = 0; j < NL - 8; j++) xv_rows |= (unsigned)(tk + 16 * j < a.np) << j;
        xs_ok = pt < BN && n0 + pt < a.np;
        xsp = a.xs + n0 + pt;
        wsp = a.Ws + (size_t)mt * a.sld;
    };
    auto load = [&](uint4(&r)[NL], float &xv, float &wv) {
        if (li >= ntiles) return; /* past the CTA's last block */
        const size_t ko = (size_t)lk * GF_BK;
#pragma unroll
        for (int j = 0; j < NL; j++) {
            if (j < 8)
                r[j] = __ldg((const uint4 *)(wp + j * rstep + ko));
            else
                r[j] = (xv_rows >> (j - 8) & 1) ? __ldg((const uint4 *)(xp + (j - 8) * rstep + ko)) : make_uint4(0, 0, 0, 0);
        }
        xv = xs_ok ? __ldg(xsp + (size_t)lk * a.np) : 0.0f;
        wv = __ldg(wsp + lk);
        if (++lk == a.nkb) {
            lk = 0;
            if (++li < ntiles) seek(li);
        }
    };
    /* Block g (in r) into stage st once both consumers are done with the block before it there;
     * then the registers take block g + DEPTH. */
    auto step = [&](int g, int st, uint4(&r)[NL], float &xv, float &wv) {
        if (g >= GW_STAGES) hci_bar_sync(BAR_EMPTY + st, GW_THREADS);
        uint8_t *ta = sm + st * STAGE, *tb = ta + 2 * GW_HALF_BYTES(GW_BM);
#pragma unroll
        for (int j = 0; j < NL; j++) {
            if (j < 8)
                gw_store16<GW_BM>(ta, gw_ld_row(pt, j), c8, r[j]);
            else
                gw_store16<BN>(tb, gw_ld_row(pt, j - 8), c8, r[j]);
        }
        if (pt < BN) sS[st * BN + pt] = gf_scale(xv, wv);
        hci_async_fence(); /* the generic-proxy stores, before the consumers' wgmma reads them */
        hci_bar_arrive(BAR_FULL0 + st, GW_PROD_THREADS + 128);
        hci_bar_arrive(BAR_FULL1 + st, GW_PROD_THREADS + 128);
        load(r, xv, wv); /* block g + DEPTH */
    };

    uint4 r[DEPTH][NL];
    float xv[DEPTH], wv[DEPTH];
    seek(0);
#pragma unroll
    for (int d = 0; d < DEPTH; d++) {
        xv[d] = wv[d] = 0.0f;
        load(r[d], xv[d], wv[d]);
    }
    int st = 0;
    for (int g = 0; g < G; g += DEPTH)
#pragma unroll
        for (int d = 0; d < DEPTH; d++)
            if (g + d < G) {
                step(g + d, st, r[d], xv[d], wv[d]);
                st = st + 1 == GW_STAGES ? 0 : st + 1;
            }
}

/* Consumer w (rows 64 w .. 64 w + 63 of each tile), thread wt of its warpgroup. P and acc in the
 * wgmma D layout (config.h: gw_out): P[4j + 2h + c] = row 16 (wt / 32) + (wt % 32) / 4 + 8h,
 * token 8j + 2 (wt % 4) + c. */
template <int BN> __device__ __forceinline__ void gw_consume(const gw_args &a, uint8_t *sm, int w, int wt, int ntiles)
{
    constexpr int NA = BN / 2, STAGE = GW_STAGE_BYTES(BN);
    const int wi = wt >> 5, lane = wt & 31, G = ntiles * a.nkb;
    const uint32_t s0 = (uint32_t)__cvta_generic_to_shared(sm);
    /* A: this consumer's 64 weight rows of k-half 0 of stage 0; B: the token tile's k-half 0 */
    const uint64_t da0 = hci_wg_desc_k(s0 + w * 64 * 128), db0 = hci_wg_desc_k(s0 + 2 * GW_HALF_BYTES(GW_BM));
    const float *sS = (const float *)(sm + GW_OFF_SCALES(BN)) + 2 * (lane & 3);
    uint8_t *epi = sm + GW_OFF_EPI(BN) + w * GW_EPI_BYTES(BN);
    const int bar_full = w ? BAR_FULL1 : BAR_FULL0;

    float P[NA], acc[NA];
#pragma unroll
    for (int x = 0; x < NA; x++) P[x] = 0.0f;
    int g = 0, st = 0;
    for (int i = 0; i < ntiles; i++) {
#pragma unroll
        for (int x = 0; x < NA; x++) acc[x] = 0.0f;
        for (int kb = 0; kb < a.nkb; kb++, g++) {
            if (ORDER && w == 0 && g > 0) hci_bar_sync(BAR_ORDER1, CONS_THREADS); /* consumer 1 has issued g-1 */
            hci_bar_sync(bar_full + st, GW_PROD_THREADS + 128);
            if (ORDER && w == 1) hci_bar_sync(BAR_ORDER0, CONS_THREADS); /* consumer 0 has issued g */
            /* P = the block's dot: k16 step kk at byte (kk % 4) * 32 of k-half kk / 4 */
            const uint32_t so = (uint32_t)(st * STAGE);
#pragma unroll
            for (int x = 0; x < NA; x++) hci_reg_fence(P[x]);
            hci_wg_fence();
#pragma unroll
            for (int kk = 0; kk < GF_BK / 16; kk++) {
                const uint32_t ao = so + (kk >> 2) * GW_HALF_BYTES(GW_BM) + (kk & 3) * 32;
                const uint32_t bo = so + (kk >> 2) * GW_HALF_BYTES(BN) + (kk & 3) * 32;
                gw_mma<BN>(P, hci_wg_desc_add(da0, ao), hci_wg_desc_add(db0, bo), kk);
            }
            hci_wg_commit();
            if (ORDER) {
                if (w == 0)
                    hci_bar_arrive(BAR_ORDER0, CONS_THREADS);
                else if (g + 1 < G)
                    hci_bar_arrive(BAR_ORDER1, CONS_THREADS);
            }
            hci_wg_wait0();
#pragma unroll
            for (int x = 0; x < NA; x++) hci_reg_fence(P[x]);
            /* acc = fl32(acc + fl32(P * s)), as gemm_fp8.cu and the CPU */
            const float *sc = sS + st * BN;
#pragma unroll
            for (int j = 0; j < BN / 8; j++) {
                const float2 s2 = *(const float2 *)(sc + 8 * j);
                acc[4 * j + 0] = __fadd_rn(acc[4 * j + 0], __fmul_rn(P[4 * j + 0], s2.x));
                acc[4 * j + 1] = __fadd_rn(acc[4 * j + 1], __fmul_rn(P[4 * j + 1], s2.y));
                acc[4 * j + 2] = __fadd_rn(acc[4 * j + 2], __fmul_rn(P[4 * j + 2], s2.x));
                acc[4 * j + 3] = __fadd_rn(acc[4 * j + 3], __fmul_rn(P[4 * j + 3], s2.y));
            }
            if (g + GW_STAGES < G) hci_bar_arrive(BAR_EMPTY + st, GW_THREADS); /* the producer waits for it */
            st = st + 1 == GW_STAGES ? 0 : st + 1;
        }

        /* bf16 into the staging tile, then whole 16-byte pieces of rows of y (t < n only) */
        int mt, nt;
        gw_tile(a, i, &mt, &nt);
        hci_bar_sync(BAR_EPI + w, 128); /* the previous tile's pieces are read */
#pragma unroll
        for (int x = 0; x < NA; x++) {
            int row, tok;
            gw_out(wi, lane, x, &row, &tok);
            *(uint16_t *)(epi + gw_epi_off(tok, row)) = hci_bf16_from_f32(acc[x]);
        }
        hci_bar_sync(BAR_EPI + w, 128);
        const int n0 = nt * BN, r0 = mt * GW_BM + 64 * w;
#pragma unroll
        for (int p = 0; p < BN / 16; p++) {
            const int it = wt + 128 * p, tok = it >> 3, q = it & 7;
            if (n0 + tok >= a.n) continue;
            const uint4 v = *(const uint4 *)(epi + gw_epi_off(tok, 8 * q));
            uint16_t *dst = a.y + (size_t)(n0 + tok) * a.ldy + r0 + 8 * q;
            if (a.vec_out) {
                *(uint4 *)dst = v;
            } else {
                const uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
                for (int e = 0; e < 8; e++) dst[e] = (uint16_t)(u[e >> 1] >> (16 * (e & 1)));
            }
        }
    }
}
#endif /* __CUDA_ARCH_FEAT_SM90_ALL */

template <int BN> __global__ void __launch_bounds__(GW_THREADS, 1) gw_kernel(const gw_args a)
{
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    extern __shared__ __align__(16) uint8_t sm_raw[];
    /* the first 1024-byte boundary (the 128B swizzle works on shared addresses) */
    uint8_t *sm = sm_raw + ((0u - (uint32_t)__cvta_generic_to_shared(sm_raw)) & 1023u);
    const int tid = threadIdx.x, wg = hci_wg_index(), tiles = a.tiles_m * a.tiles_n;
    const int ntiles = (tiles - (int)blockIdx.x + (int)gridDim.x - 1) / (int)gridDim.x; /* >= 1: grid <= tiles */
    if (wg == 2)
        gw_produce<BN>(a, sm, tid - CONS_THREADS, ntiles);
    else
        gw_consume<BN>(a, sm, wg, tid & 127, ntiles);
#else /* the compute_90 PTX of the build: never run (the launcher checks for an sm_90 device) */
    (void)a;
    __trap();
#endif
}

template <int BN> int gw_launch(cudaStream_t s, gw_args a, int sms)
{
    constexpr int smem = GW_SMEM_BYTES(BN);
    static_assert(smem <= 227 * 1024, "one CTA per SM");
    a.tiles_n = (a.np + BN - 1) / BN;
    const int64_t tiles = (int64_t)a.tiles_m * a.tiles_n;
    if (tiles > INT32_MAX / 2) return HC_ERR_INVALID_ARG;
    if (cudaFuncSetAttribute(gw_kernel<BN>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) != cudaSuccess)
        return HC_ERR_CUDA;
    gw_kernel<BN><<<(unsigned)(tiles < sms ? tiles : sms), GW_THREADS, smem, s>>>(a);
    return HCI_CU_CHECK_LAUNCH();
}

/* BN for a grid: the fewest estimated cycles, rounds of tiles x cycles per tile and k-block
 * (shared-memory traffic at 128 bytes per cycle for 128 and 64 tokens; the load latency of a
 * block for 32 and 16); the larger BN on a tie. */
int gw_pick_bn(int tiles_m, int np, int sms)
{
    static const int bns[4] = {128, 64, 32, 16}, cycles[4] = {1280, 896, 704, 700};
    int best = 128;
    int64_t best_cost = INT64_MAX;
    for (int i = 0; i < 4; i++) {
        const int64_t tiles = (int64_t)tiles_m * ((np + bns[i] - 1) / bns[i]);
        const int64_t cost = (tiles + sms - 1) / sms * cycles[i];
        if (cost < best_cost) best = bns[i], best_cost = cost;
    }
    return best;
}

} // namespace

int hci_cu_gemm_fp8_wgmma_bn(cudaStream_t s, const uint8_t *W, const float *Ws, int sld, int M, int K,
                             const uint8_t *xq, const float *xs, int np, int n, uint16_t *y, int ldy, int bn)
{
    if (n <= 0) return HC_OK;
    if (M <= 0 || M % GW_BM || K <= 0 || K % GF_SCALE_BLOCK || np < n || np % GF_NP_MULT || ldy < M ||
        sld < K / GF_SCALE_BLOCK || ((uintptr_t)W | (uintptr_t)xq) % 16 || (uintptr_t)xs % 8 ||
        (bn != 0 && bn != 128 && bn != 64 && bn != 32 && bn != 16) || !hci_cu_device_is_sm90())
        return HC_ERR_INVALID_ARG;
    int sms = 0;
    if (hci_cu_sm_count(&sms) != cudaSuccess || sms <= 0) return HC_ERR_CUDA;
    gw_args a = {W, Ws, xq, xs, y, sld, K, np, n, ldy, M / GW_BM, 0, K / GF_SCALE_BLOCK,
                 (uintptr_t)y % 16 == 0 && ldy % 8 == 0};
    if (!bn) bn = gw_pick_bn(a.tiles_m, np, sms);
    switch (bn) {
    case 128: return gw_launch<128>(s, a, sms);
    case 64: return gw_launch<64>(s, a, sms);
    case 32: return gw_launch<32>(s, a, sms);
    default: return gw_launch<16>(s, a, sms);
    }
}

int hci_cu_gemm_fp8_wgmma_tile(int M, int np)
{
    int sms = 0;
    if (hci_cu_sm_count(&sms) != cudaSuccess || sms <= 0) return 0;
    return gw_pick_bn(M / GW_BM, np, sms);
}

int hci_cu_gemm_fp8_wgmma(cudaStream_t s, const uint8_t *W, const float *Ws, int sld, int M, int K, const uint8_t *xq,
                          const float *xs, int np, int n, uint16_t *y, int ldy)
{
    return hci_cu_gemm_fp8_wgmma_bn(s, W, Ws, sld, M, K, xq, xs, np, n, y, ldy, 0);
}
