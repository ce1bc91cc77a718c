/* gemm_fp8_native.cu - the FP8 projections of prefill pieces on Hopper's native FP8 tensor cores
 * (option gemm_fp8_native, sm_90 only), with the official kernels' structure (DeepGEMM's):
 *
 *   y[t][r] = bf16( acc ),  acc = 0;  for kb = 0, 1, ... in k order:
 *       acc = fma( P[t][r][kb], fl32(xs[kb][t] * ws[r/128][kb]), acc )
 *
 * where P, the dot of one 128-k block, is what four wgmma m64nNk32 e4m3 x e4m3 with fp32
 * accumulators give, the first from zero (scale-d 0): the tensor cores' own accumulation inside
 * the block (not exact, unlike gemm_fp8.cu's f16 products), promoted to the fp32 result every
 * 128 k with its two scales (1x128 activation, 128x128 weight), as the official kernels do. The
 * same formula for every tile and token count: a token's bits depend neither on n nor on the
 * tile (BN, cluster) the launcher picks, provided that the tensor cores' dot of a row and a
 * column does not depend on the instruction's N (tools/gemm-check --native compares every
 * configuration bit for bit). Deterministic: no atomics, no split of K.
 *
 * Operands: the e4m3 codes as they are in memory, no conversion: W [M][K] (K-major) as A,
 * the activations xq [np][K] (K-major) as B, both by TMA (cuTensorMapEncodeTiled through
 * cudart's driver entry point: the module still links only cudart) into 128-byte-swizzled
 * tiles of 128-byte rows (one k-block of a row is exactly 128 codes), read by wgmma through the
 * same descriptors as gemm_fp8_wgmma.cu (k32 step kk at byte 32 kk of the row); the block's
 * token scales xs [K/128][np] by TMA too, its weight scale by the producer.
 *
 * CTA: 128 weight rows (one weight-scale row) x BN tokens per tile, BN in {128, 64, 32, 16},
 * persistent over tiles (one CTA per SM), three warpgroups (config.h, GN_):
 *   - producer (warpgroup 2, setmaxnreg 40): one thread waits for a free stage (empty
 *     mbarrier), writes the block's weight scale, arms the stage's full mbarrier with the bytes
 *     to come and issues the TMA loads, GN_STAGES(BN) blocks ahead of the consumers;
 *   - consumers (warpgroups 0 and 1, setmaxnreg 232): 64 weight rows x BN tokens each. Two sets
 *     of block registers: block g + 1's four wgmma are issued into one set before block g's
 *     (the other set) is waited for (wgmma.wait_group 1), promoted into the running sums and
 *     its stage released (one empty arrival per warp), so that the promotion of one block
 *     overlaps the next block's tensor work (and the other consumer's); GN_UNROLL blocks per
 *     loop step, which ends with nothing in flight (see gn_consume). At a tile's end the bf16
 *     results go through shared memory (stmatrix .trans into gw_epi_off's token-major tile) to
 *     16-byte stores of whole rows of y.
 *   - GN_CLUSTER 2: the two CTAs of a cluster take tiles of the same 128 weight rows and
 *     neighbouring token tiles; each loads 64 of the weight rows and multicasts them into both,
 *     which saves a quarter of the L2 traffic at BN 128. A stage is then free once the consumers
 *     of both CTAs are done with it (empty barriers count both), and the producer waits for the
 *     last round of releases before its CTA may exit (the peer's arrivals land in its barriers).
 *
 * Speed (estimates, to be measured: tools/gemm-check --native): per k-block a 128 x 128 tile is
 * 512 cycles of FP8 tensor work and 32 KiB of loads (24 KiB with the cluster), i.e. 64 (48)
 * bytes per cycle and SM from L2; wgmma reads 96 bytes per cycle of shared memory. Expected
 * limits are L2 and shared-memory bandwidth, not issue. */
#include <cuda.h> /* CUtensorMap and its enums only; the encoder comes through cudart */
#include <atomic>
#include <type_traits>
#include "../common.cuh"
#include "../wgmma.cuh"
#include "config.h"
#include "gemm.h"

namespace {

struct gn_args {
    const float *Ws; /* [M/128][sld] */
    uint16_t *y;     /* [n][ldy] bf16 */
    int sld, n, ldy;
    int tiles_m, tiles_n, nkb; /* row tiles (M/128), token tiles (np/BN rounded up), k-blocks */
    int vec_out;               /* y and ldy allow 16-byte stores */
};

/* Named barriers of the consumers' output staging (1 + consumer; 0 is __syncthreads). */
enum { BAR_EPI = 1 };

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
constexpr int NREG_PRODUCER = 40, NREG_CONSUMER = 232; /* 128 x 40 + 256 x 232 <= 64 Ki registers */
constexpr int GN_UNROLL = 4;                           /* k-blocks per consumer loop step (even) */

#define GN_F8(b) "+f"(d[b]), "+f"(d[b + 1]), "+f"(d[b + 2]), "+f"(d[b + 3]), "+f"(d[b + 4]), "+f"(d[b + 5]), "+f"(d[b + 6]), "+f"(d[b + 7])

/* d (+)= A.B^T for 64 weight rows x N tokens x 32 k, e4m3 operands K-major in shared memory,
 * fp32 accumulators; acc 0 starts from zero. */
template <int N> __device__ __forceinline__ void gn_mma(float (&d)[N / 2], uint64_t da, uint64_t db, int acc);
template <> __device__ __forceinline__ void gn_mma<16>(float (&d)[8], uint64_t da, uint64_t db, int acc)
{
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %10, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n16k32.f32.e4m3.e4m3 {"
                 "%0, %1, %2, %3, %4, %5, %6, %7"
                 "}, %8, %9, p, 1, 1;\n}\n"
                 : GN_F8(0)
                 : "l"(da), "l"(db), "r"(acc));
}
template <> __device__ __forceinline__ void gn_mma<32>(float (&d)[16], uint64_t da, uint64_t db, int acc)
{
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n32k32.f32.e4m3.e4m3 {"
                 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15"
                 "}, %16, %17, p, 1, 1;\n}\n"
                 : GN_F8(0), GN_F8(8)
                 : "l"(da), "l"(db), "r"(acc));
}
template <> __device__ __forceinline__ void gn_mma<64>(float (&d)[32], uint64_t da, uint64_t db, int acc)
{
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e4m3 {"
                 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
                 "}, %32, %33, p, 1, 1;\n}\n"
                 : GN_F8(0), GN_F8(8), GN_F8(16), GN_F8(24)
                 : "l"(da), "l"(db), "r"(acc));
}
template <> __device__ __forceinline__ void gn_mma<128>(float (&d)[64], uint64_t da, uint64_t db, int acc)
{
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 {"
                 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
                 "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
                 "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
                 "}, %64, %65, p, 1, 1;\n}\n"
                 : GN_F8(0), GN_F8(8), GN_F8(16), GN_F8(24), GN_F8(32), GN_F8(40), GN_F8(48), GN_F8(56)
                 : "l"(da), "l"(db), "r"(acc));
}
#undef GN_F8

/* Work unit u of cluster (or CTA) cid -> this CTA's tile (mt, nt), by gf_raster over the units in
 * launch order so that the CTAs of one round share weight rows and tokens in L2. With clusters a
 * unit is a pair of token tiles, rank r taking 2 pn + r; nt may then be tiles_n (odd tiles_n):
 * that CTA loads the last tile again (its peer needs its half of the weights) and stores
 * nothing. */
template <int CL> __device__ __forceinline__ void gn_tile(const gn_args &a, int unit, int rank, int *mt, int *nt)
{
    if (CL == 1) {
        gf_raster(unit, a.tiles_m, a.tiles_n, mt, nt);
    } else {
        int pn;
        gf_raster(unit, a.tiles_m, (a.tiles_n + CL - 1) / CL, mt, &pn);
        *nt = CL * pn + rank;
    }
}

/* The producer thread: blocks g = 0 .. units * nkb - 1 (unit g / nkb, k-block g % nkb) into stage
 * g % S once its previous block there is released (parity of the empty barrier's phase g / S - 1). */
template <int BN, int CL>
__device__ __forceinline__ void gn_produce(const CUtensorMap *tmw, const CUtensorMap *tmx, const CUtensorMap *tms,
                                           const gn_args &a, uint8_t *sm, int units, int cid, int ncl, int rank)
{
    constexpr int S = GN_STAGES(BN);
    constexpr uint32_t TX = GN_A_BYTES + GN_B_BYTES(BN) + BN * 4; /* every box whole (zeros outside) */
    const uint32_t s0 = hci_smem_addr(sm), full0 = s0 + GN_OFF_BAR(BN), empty0 = full0 + 8 * S;
    float *ws_sm = (float *)(sm + GN_OFF_WS(BN));
    int st = 0, g = 0;
    uint32_t ph = 0; /* (g / S) & 1 */
    int u = 0, kb = 0, mt, nt;
    gn_tile<CL>(a, cid, rank, &mt, &nt);
    /* the weight scale of the next block, loaded one block ahead: its latency hides in the wait
     * for a free stage rather than in the producer's critical path */
    float wv = __ldg(a.Ws + (size_t)mt * a.sld);
    for (const int G = units * a.nkb; g < G; g++) {
        if (g >= S) hci_mbar_wait(empty0 + 8 * st, ph ^ 1);
        ws_sm[st] = wv; /* before the arrival below (release): the consumers see it */
        const uint32_t full = full0 + 8 * st;
        const int tn = min(nt, a.tiles_n - 1);
        hci_mbar_arrive_tx(full, TX);
        if (CL == 1)
            hci_tma_load_2d(s0 + st * GN_A_BYTES, tmw, kb * GN_BK, mt * GN_BM, full);
        else
            hci_tma_load_2d_mc(s0 + st * GN_A_BYTES + rank * (GN_A_BYTES / CL), tmw, kb * GN_BK,
                               mt * GN_BM + rank * (GN_BM / CL), full, (uint16_t)((1u << CL) - 1));
        hci_tma_load_2d(s0 + GN_OFF_B(BN) + st * GN_B_BYTES(BN), tmx, kb * GN_BK, tn * BN, full);
        hci_tma_load_2d(s0 + GN_OFF_XS(BN) + st * GN_XS_BYTES(BN), tms, tn * BN, kb, full);
        if (++st == S) st = 0, ph ^= 1;
        if (++kb == a.nkb) {
            kb = 0;
            if (++u < units) gn_tile<CL>(a, cid + u * ncl, rank, &mt, &nt);
        }
        if (g + 1 < G) wv = __ldg(a.Ws + (size_t)mt * a.sld + kb);
    }
    /* clusters: the peer's consumers arrive on this CTA's empty barriers until its last block;
     * wait for those arrivals (one more round) before the CTA may exit */
    if (CL > 1)
        for (int i = 0; i < S; i++, g++) {
            if (g >= S) hci_mbar_wait(empty0 + 8 * st, ph ^ 1);
            if (++st == S) st = 0, ph ^= 1;
        }
}

/* stmatrix .x4 .trans: four 8x8 b16 matrices, register m of a lane holding (row lane / 4,
 * columns 2 (lane % 4), +1) of matrix m, stored transposed: lanes 8m .. 8m + 7 give the addresses
 * of the 16-byte rows (the columns) of matrix m. */
__device__ __forceinline__ void gn_stsm_x4_trans(uint32_t addr, uint32_t r0, uint32_t r1, uint32_t r2, uint32_t r3)
{
    asm volatile("stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(addr), "r"(r0),
                 "r"(r1), "r"(r2), "r"(r3)
                 : "memory");
}

/* bf16 of lo (low half) and hi, rounded to nearest even: hci_bf16_from_f32's bits for every
 * value but NaN (the canonical NaN here; finite inputs never make one), in one instruction */
__device__ __forceinline__ uint32_t gn_pack_bf16(float lo, float hi)
{
    uint32_t r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

/* Consumer w (rows 64 w .. 64 w + 63 of each tile), thread wt of its warpgroup. P and acc in the
 * wgmma D layout (config.h: gw_out): x = 4j + 2h + c is row 16 (wt / 32) + (wt % 32) / 4 + 8h,
 * token 8j + 2 (wt % 4) + c. */
template <int BN, int CL>
__device__ __forceinline__ void gn_consume(const gn_args &a, uint8_t *sm, int w, int wt, int units, int cid, int ncl,
                                           int rank)
{
    constexpr int S = GN_STAGES(BN), NA = BN / 2;
    const int wi = wt >> 5, lane = wt & 31;
    const uint32_t s0 = hci_smem_addr(sm), full0 = s0 + GN_OFF_BAR(BN), empty0 = full0 + 8 * S;
    /* A: this consumer's 64 weight rows of stage 0; B: the token tile of stage 0 */
    const uint64_t da0 = hci_wg_desc_k(s0 + w * (GN_A_BYTES / 2)), db0 = hci_wg_desc_k(s0 + GN_OFF_B(BN));
    const float *xs_sm = (const float *)(sm + GN_OFF_XS(BN)) + 2 * (lane & 3);
    const float *ws_sm = (const float *)(sm + GN_OFF_WS(BN));
    uint8_t *epi = sm + GN_OFF_EPI(BN) + w * GN_EPI_BYTES(BN);
    /* this lane's stmatrix row: token 8 (2p + m / 2) + lane % 8, rows 8 (2 wi + m % 2) .. + 7 of
     * the consumer's 64, m = lane / 8: gw_epi_off, whose swizzle term does not change with p */
    const uint32_t stsm0 = hci_smem_addr(epi) + (uint32_t)gw_epi_off(8 * (lane >> 4) + (lane & 7), 8 * (2 * wi + ((lane >> 3) & 1)));

    float P[2][NA], acc[NA];
#pragma unroll
    for (int x = 0; x < NA; x++) P[0][x] = P[1][x] = 0.0f;
    int ist = 0, lst = 0, st = 0; /* the next block to issue: stage ist; the last issued: lst; to promote: st */
    uint32_t iph = 0;             /* parity of ist's full phase */

    /* Four k32 steps into register set C: of the next block (real: once its stage is full), or,
     * past the tile's last block, again of the last one (its stage stays full until its
     * promotion, after this group's wait; the result is never read). wgmma is thus issued
     * unconditionally and the block registers have one definition per loop step: ptxas would
     * serialise every wgmma around copies of registers that an MMA in flight writes. */
    auto issue = [&](auto c, bool real) {
        constexpr int C = decltype(c)::value;
        if (real) {
            hci_mbar_wait(full0 + 8 * ist, iph);
            lst = ist;
            if (++ist == S) ist = 0, iph ^= 1;
        }
#pragma unroll
        for (int x = 0; x < NA; x++) hci_reg_fence(P[C][x]);
        hci_wg_fence();
#pragma unroll
        for (int kk = 0; kk < GN_BK / 32; kk++)
            gn_mma<BN>(P[C], hci_wg_desc_add(da0, (uint32_t)(lst * GN_A_BYTES + kk * 32)),
                       hci_wg_desc_add(db0, (uint32_t)(lst * GN_B_BYTES(BN) + kk * 32)), kk);
        hci_wg_commit(); /* P[C] is not touched until the wait that covers this group */
    };

    /* The block in register set C, complete: acc = fma(P, fl32(xs * ws), acc) (the official
     * kernels' promotion), then its stage released (one arrival per warp; with clusters lane r
     * arrives on CTA r's barrier). */
    auto promote = [&](auto c) {
        constexpr int C = decltype(c)::value;
#pragma unroll
        for (int x = 0; x < NA; x++) hci_reg_fence(P[C][x]);
        const float ws = ws_sm[st];
        const float *xsp = xs_sm + st * (GN_XS_BYTES(BN) / 4);
#pragma unroll
        for (int j = 0; j < BN / 8; j++) {
            const float2 x2 = *(const float2 *)(xsp + 8 * j);
            const float sa = __fmul_rn(x2.x, ws), sb = __fmul_rn(x2.y, ws);
            acc[4 * j + 0] = __fmaf_rn(P[C][4 * j + 0], sa, acc[4 * j + 0]);
            acc[4 * j + 1] = __fmaf_rn(P[C][4 * j + 1], sb, acc[4 * j + 1]);
            acc[4 * j + 2] = __fmaf_rn(P[C][4 * j + 2], sa, acc[4 * j + 2]);
            acc[4 * j + 3] = __fmaf_rn(P[C][4 * j + 3], sb, acc[4 * j + 3]);
        }
        __syncwarp(); /* the warp's reads of the stage are done (wgmma's too: waited for) */
        if (CL == 1) {
            if (lane == 0) hci_mbar_arrive(empty0 + 8 * st);
        } else if (lane < CL) {
            hci_mbar_arrive_cluster(empty0 + 8 * st, (uint32_t)lane);
        }
        if (++st == S) st = 0;
    };

    const std::integral_constant<int, 0> set0;
    const std::integral_constant<int, 1> set1;
    for (int u = 0; u < units; u++) {
#pragma unroll
        for (int x = 0; x < NA; x++) acc[x] = 0.0f;
        /* GN_UNROLL blocks per loop step, alternating between the two register sets: block
         * kb + i is issued before block kb + i - 1 is waited for (wait_group 1: the newest group
         * may still run) and promoted, so that the promotion of one block runs while the tensor
         * cores work on the next; the step ends with nothing in flight (wait_group 0), because
         * ptxas serialises every wgmma when an MMA's registers stay in flight across a loop's back
         * edge (C7514). Blocks past nkb: see issue. */
        for (int kb = 0; kb < a.nkb; kb += GN_UNROLL) {
            issue(set0, true);
#pragma unroll
            for (int i = 1; i < GN_UNROLL; i++) {
                if (i & 1)
                    issue(set1, kb + i < a.nkb);
                else
                    issue(set0, kb + i < a.nkb);
                hci_wg_wait<1>();
                if (kb + i - 1 < a.nkb) {
                    if (i & 1)
                        promote(set0);
                    else
                        promote(set1);
                }
            }
            hci_wg_wait<0>();
            if (kb + GN_UNROLL - 1 < a.nkb) promote(set1);
        }

        /* bf16 of the tile's sums into the staging tile (token-major, stmatrix .trans: matrix m
         * of step p is tokens 8 (2p + m / 2) .., rows 8 (2 wi + m % 2) ..), then whole 16-byte
         * pieces of rows of y */
        int mt, nt;
        gn_tile<CL>(a, cid + u * ncl, rank, &mt, &nt);
        hci_bar_sync(BAR_EPI + w, 128); /* the previous tile's pieces are read */
#pragma unroll
        for (int p = 0; p < BN / 16; p++) {
            const int j0 = 8 * p, j1 = 8 * p + 4; /* acc index of tokens 16p.. and 16p + 8.. */
            gn_stsm_x4_trans(stsm0 + p * 16 * 128, gn_pack_bf16(acc[j0 + 0], acc[j0 + 1]),
                             gn_pack_bf16(acc[j0 + 2], acc[j0 + 3]), gn_pack_bf16(acc[j1 + 0], acc[j1 + 1]),
                             gn_pack_bf16(acc[j1 + 2], acc[j1 + 3]));
        }
        hci_bar_sync(BAR_EPI + w, 128);
        if (nt >= a.tiles_n) continue; /* a cluster's tile past the end (whole warpgroup) */
        const int n0 = nt * BN, r0 = mt * GN_BM + 64 * w;
#pragma unroll
        for (int p = 0; p < BN / 16; p++) {
            const int it = wt + 128 * p, tok = it >> 3, q = it & 7;
            if (n0 + tok >= a.n) continue;
            const uint4 v = *(const uint4 *)(epi + gw_epi_off(tok, 8 * q));
            uint16_t *dst = a.y + (size_t)(n0 + tok) * a.ldy + r0 + 8 * q;
            if (a.vec_out) {
                *(uint4 *)dst = v;
            } else {
                const uint32_t e4[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
                for (int e = 0; e < 8; e++) dst[e] = (uint16_t)(e4[e >> 1] >> (16 * (e & 1)));
            }
        }
    }
}
#endif /* __CUDA_ARCH_FEAT_SM90_ALL */

template <int BN, int CL>
__global__ void __launch_bounds__(GN_THREADS, 1)
    gn_kernel(const __grid_constant__ CUtensorMap tmw, const __grid_constant__ CUtensorMap tmx,
              const __grid_constant__ CUtensorMap tms, const gn_args a)
{
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    extern __shared__ __align__(1024) uint8_t sm_raw[];
    /* the first 1024-byte boundary (the 128B swizzle works on shared addresses); the same offset
     * in every CTA, as the multicast needs */
    uint8_t *sm = sm_raw + ((0u - hci_smem_addr(sm_raw)) & 1023u);
    const int tid = threadIdx.x, wg = hci_wg_index();
    const int rank = CL > 1 ? (int)hci_cluster_rank() : 0;
    const int cid = (int)blockIdx.x / CL, ncl = (int)gridDim.x / CL;
    const int all = a.tiles_m * ((a.tiles_n + CL - 1) / CL);
    const int units = (all - cid + ncl - 1) / ncl; /* >= 1: the grid has at most `all` units */
    if (tid == GN_CONS_THREADS) {
        const uint32_t bar = hci_smem_addr(sm) + GN_OFF_BAR(BN);
#pragma unroll
        for (int s = 0; s < GN_STAGES(BN); s++) {
            hci_mbar_init(bar + 8 * s, 1);                                          /* full */
            hci_mbar_init(bar + 8 * (GN_STAGES(BN) + s), CL * GN_CONS_THREADS / 32); /* empty: per warp */
        }
        hci_mbar_init_fence();
        hci_tma_prefetch(&tmw);
        hci_tma_prefetch(&tmx);
        hci_tma_prefetch(&tms);
    }
    if (CL > 1)
        hci_cluster_sync(); /* the peer's barriers are initialised before anything arrives there */
    else
        __syncthreads();
    if (wg == 2) {
        hci_wg_regs_free<NREG_PRODUCER>();
        if (tid == GN_CONS_THREADS) gn_produce<BN, CL>(&tmw, &tmx, &tms, a, sm, units, cid, ncl, rank);
    } else {
        hci_wg_regs_alloc<NREG_CONSUMER>();
        gn_consume<BN, CL>(a, sm, wg, tid & 127, units, cid, ncl, rank);
    }
#else /* the compute_90 PTX of the build: never run (the launcher checks for an sm_90 device) */
    (void)tmw, (void)tmx, (void)tms, (void)a;
    __trap();
#endif
}

/* ---------------------------------------------------------------- host side */

/* cuTensorMapEncodeTiled from the driver, through cudart (the module does not link libcuda);
 * null when the driver does not have it. */
typedef CUresult (*gn_encode_fn)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *, const cuuint64_t *,
                                 const cuuint64_t *, const cuuint32_t *, const cuuint32_t *, CUtensorMapInterleave,
                                 CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

gn_encode_fn gn_encoder()
{
    static const gn_encode_fn fn = [] {
        void *p = nullptr;
        cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
#if CUDART_VERSION >= 12050
        const cudaError_t e = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q);
#else
        const cudaError_t e = cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &p, cudaEnableDefault, &q);
#endif
        if (e != cudaSuccess || q != cudaDriverEntryPointSuccess) {
            (void)cudaGetLastError();
            p = nullptr;
        }
        return (gn_encode_fn)p;
    }();
    return fn;
}

/* A 2-D tensor map: d0 x d1 elements (d0 contiguous, rows stride1 bytes apart), boxes of b0 x b1,
 * zeros outside. */
bool gn_map(CUtensorMap *m, CUtensorMapDataType type, const void *base, uint64_t d0, uint64_t d1, uint64_t stride1,
            uint32_t b0, uint32_t b1, CUtensorMapSwizzle sw)
{
    const gn_encode_fn enc = gn_encoder();
    if (!enc) return false;
    const cuuint64_t dims[2] = {d0, d1}, strides[1] = {stride1};
    const cuuint32_t box[2] = {b0, b1}, estr[2] = {1, 1};
    return enc(m, type, 2, const_cast<void *>(base), dims, strides, box, estr, CU_TENSOR_MAP_INTERLEAVE_NONE, sw,
               CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

/* Clusters of CL CTAs of gn_kernel<BN, CL> resident at once on the current device (cached per
 * device; sms / CL when the query fails). */
template <int BN, int CL> int gn_cluster_slots(cudaLaunchConfig_t cfg, int sms)
{
    static std::atomic<int> cache[64];
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) dev = -1;
    const bool cacheable = dev >= 0 && dev < 64;
    if (cacheable && cache[dev].load(std::memory_order_relaxed) > 0) return cache[dev].load(std::memory_order_relaxed);
    int n = 0;
    cfg.gridDim = dim3((unsigned)(sms / CL * CL));
    if (cudaOccupancyMaxActiveClusters(&n, gn_kernel<BN, CL>, &cfg) != cudaSuccess || n <= 0) {
        (void)cudaGetLastError();
        return sms / CL;
    }
    if (cacheable) cache[dev].store(n, std::memory_order_relaxed);
    return n;
}

template <int BN, int CL>
int gn_launch(cudaStream_t s, gn_args a, const CUtensorMap &tmw, const CUtensorMap &tmx, const CUtensorMap &tms,
              int sms)
{
    constexpr int smem = GN_SMEM_BYTES(BN);
    static_assert(smem <= 227 * 1024, "one CTA per SM");
    const int64_t units = (int64_t)a.tiles_m * ((a.tiles_n + CL - 1) / CL);
    if (units > INT32_MAX / 4) return HC_ERR_INVALID_ARG;
    if (cudaFuncSetAttribute(gn_kernel<BN, CL>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem) != cudaSuccess)
        return HC_ERR_CUDA;
    cudaLaunchConfig_t cfg = {};
    cudaLaunchAttribute attr[1] = {};
    cfg.blockDim = dim3(GN_THREADS);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = s;
    int slots = sms;
    if (CL > 1) {
        attr[0].id = cudaLaunchAttributeClusterDimension;
        attr[0].val.clusterDim.x = CL;
        attr[0].val.clusterDim.y = 1;
        attr[0].val.clusterDim.z = 1;
        cfg.attrs = attr;
        cfg.numAttrs = 1;
        slots = gn_cluster_slots<BN, CL>(cfg, sms);
    }
    cfg.gridDim = dim3((unsigned)((units < slots ? units : slots) * CL));
    return cudaLaunchKernelEx(&cfg, gn_kernel<BN, CL>, tmw, tmx, tms, a) == cudaSuccess ? HC_OK : HC_ERR_CUDA;
}

/* The launcher's choice for a grid: the fewest estimated cycles, rounds of units (one tile, or a
 * cluster's pair) x cycles per k-block of a unit, the larger of the tensor work (4 BN cycles: 128
 * x BN x 128 at 8192 FP8 flops per cycle) and the loads at GN_L2_BYTES_PER_CYCLE per SM, plus
 * the hand-offs. Estimates, to be tuned with gemm-check --native (it times every configuration).
 * The choice changes the speed only: every configuration computes the same bits. */
#ifndef HCI_GN_CLUSTER_MAX
#define HCI_GN_CLUSTER_MAX 2 /* -DHCI_GN_CLUSTER_MAX=1: never the multicast pairs */
#endif
constexpr int GN_L2_BYTES_PER_CYCLE = 32, GN_BLOCK_OVERHEAD = 64;

int gn_block_cycles(int bn, int cl)
{
    const int tensor = 4 * bn, mem = (GN_A_BYTES / cl + GN_B_BYTES(bn) + 4 * bn) / GN_L2_BYTES_PER_CYCLE;
    return (tensor > mem ? tensor : mem) + GN_BLOCK_OVERHEAD;
}

void gn_pick(int tiles_m, int np, int sms, int *bn_out, int *cl_out)
{
    static const int bns[4] = {128, 64, 32, 16};
    int64_t best_cost = INT64_MAX;
    *bn_out = 128, *cl_out = 1;
    for (int i = 0; i < 4; i++)
        for (int cl = 1; cl <= HCI_GN_CLUSTER_MAX; cl++) {
            const int64_t tiles_n = (np + bns[i] - 1) / bns[i];
            if (cl > 1 && tiles_n < cl) continue;
            const int64_t units = (int64_t)tiles_m * ((tiles_n + cl - 1) / cl), slots = sms / cl > 0 ? sms / cl : 1;
            const int64_t cost = (units + slots - 1) / slots * gn_block_cycles(bns[i], cl);
            if (cost < best_cost) best_cost = cost, *bn_out = bns[i], *cl_out = cl;
        }
}

template <int BN>
int gn_launch_bn(cudaStream_t s, const gn_args &a, const CUtensorMap &tmw, const CUtensorMap &tmx,
                 const CUtensorMap &tms, int sms, int cl)
{
    return cl == 2 ? gn_launch<BN, 2>(s, a, tmw, tmx, tms, sms) : gn_launch<BN, 1>(s, a, tmw, tmx, tms, sms);
}

} // namespace

int hci_cu_gemm_fp8_native_cfg(cudaStream_t s, const uint8_t *W, const float *Ws, int sld, int M, int K,
                               const uint8_t *xq, const float *xs, int np, int n, uint16_t *y, int ldy, int bn,
                               int cluster)
{
    if (n <= 0) return HC_OK;
    if (M <= 0 || M % GN_BM || K <= 0 || K % GF_SCALE_BLOCK || np < n || np % GF_NP_MULT || ldy < M ||
        sld < K / GF_SCALE_BLOCK || ((uintptr_t)W | (uintptr_t)xq | (uintptr_t)xs) % 16 ||
        (bn != 0 && bn != 128 && bn != 64 && bn != 32 && bn != 16) || cluster < 0 || cluster > 2 ||
        !hci_cu_device_is_sm90())
        return HC_ERR_INVALID_ARG;
    int sms = 0;
    if (hci_cu_sm_count(&sms) != cudaSuccess || sms <= 0) return HC_ERR_CUDA;
    int pbn = 0, pcl = 0;
    gn_pick(M / GN_BM, np, sms, &pbn, &pcl);
    if (!bn) bn = pbn;
    if (!cluster) cluster = bn == pbn ? pcl : 1;
    const gn_args a = {Ws, y, sld, n, ldy, M / GN_BM, (np + bn - 1) / bn, K / GF_SCALE_BLOCK,
                       (uintptr_t)y % 16 == 0 && ldy % 8 == 0};
    CUtensorMap tmw, tmx, tms;
    if (!gn_map(&tmw, CU_TENSOR_MAP_DATA_TYPE_UINT8, W, (uint64_t)K, (uint64_t)M, (uint64_t)K, GN_BK,
                (uint32_t)(GN_BM / cluster), CU_TENSOR_MAP_SWIZZLE_128B) ||
        !gn_map(&tmx, CU_TENSOR_MAP_DATA_TYPE_UINT8, xq, (uint64_t)K, (uint64_t)np, (uint64_t)K, GN_BK, (uint32_t)bn,
                CU_TENSOR_MAP_SWIZZLE_128B) ||
        !gn_map(&tms, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, xs, (uint64_t)np, (uint64_t)(K / GF_SCALE_BLOCK),
                (uint64_t)np * 4, (uint32_t)bn, 1, CU_TENSOR_MAP_SWIZZLE_NONE))
        return HC_ERR_INVALID_ARG; /* no encoder in this driver, or a layout it refuses: the caller falls back */
    switch (bn) {
    case 128: return gn_launch_bn<128>(s, a, tmw, tmx, tms, sms, cluster);
    case 64: return gn_launch_bn<64>(s, a, tmw, tmx, tms, sms, cluster);
    case 32: return gn_launch_bn<32>(s, a, tmw, tmx, tms, sms, cluster);
    default: return gn_launch_bn<16>(s, a, tmw, tmx, tms, sms, cluster);
    }
}

int hci_cu_gemm_fp8_native(cudaStream_t s, const uint8_t *W, const float *Ws, int sld, int M, int K, const uint8_t *xq,
                           const float *xs, int np, int n, uint16_t *y, int ldy)
{
    return hci_cu_gemm_fp8_native_cfg(s, W, Ws, sld, M, K, xq, xs, np, n, y, ldy, 0, 0);
}

int hci_cu_gemm_fp8_native_pick(int M, int np, int *bn, int *cluster)
{
    int sms = 0;
    *bn = *cluster = 0;
    if (M <= 0 || M % GN_BM || np <= 0 || hci_cu_sm_count(&sms) != cudaSuccess || sms <= 0) return 0;
    gn_pick(M / GN_BM, np, sms, bn, cluster);
    return 1;
}
