/* attend_pingpong.cu - the fast attention's ping-pong kernel (option attend_pingpong, with
 * attend_fast): the shapes and the numerics of attend_wgmma.cu (head_dim 512, 64-head groups,
 * Hopper), with the tensor cores kept busy while a warpgroup runs its softmax.
 *
 * CTA = (query, 64-head group, split of the row), three warpgroups, as attend_wgmma.cu; the
 * blocks of 64 entries of the split go in pairs (2k, 2k + 1) to two 64 KB buffers (block 2k in
 * buffer 0, 2k + 1 in buffer 1), each filled and released by halves (tiles 0-3 = dims 0-255, L;
 * tiles 4-7, R) through mbarriers, so that a half is refilled as soon as its last reader is done:
 *   - consumer warpgroup w owns output columns 256 w .. 256 w + 255 (64 x 256 fp32 registers)
 *     and the block of buffer w: it computes S = Q.K^T over all 512 dims for that block
 *     (m64n64k16, 32 steps, Q and the block K-major in shared memory: no exchange of halves),
 *     runs the softmax of that block and publishes its P (bf16, 128-byte swizzled, 8 KB) and the
 *     running max after the block in shared memory;
 *   - P.V: each warpgroup adds, for its 256 columns, its own block's P (from registers,
 *     m64n256k16 RS) and the other block's P (from shared memory, m64n256k16 SS);
 *   - per pair the tensor cores see S(2k) (warpgroup 0), S(2k + 1) (warpgroup 1) while
 *     warpgroup 0 runs its softmax, P(2k).V left while warpgroup 1 runs its softmax, then
 *     P(2k).V right, P(2k + 1).V left and right, and warpgroup 0 issues S(2k + 2) right behind
 *     its last P.V of the pair. A warpgroup never touches registers while its own MMAs are in
 *     flight (ptxas would serialise every wgmma of the kernel); the overlap is between the two.
 *   - the producer warpgroup fills the halves in the order they are freed (buffer 0 L, R,
 *     buffer 1 L, R): SWA and HCA rows and every kind's window rows come from the pre-pass
 *     (at_fast_prepass: bf16 rows made once per piece) by cp.async, signalled on the mbarrier
 *     when they land (cp.async.mbarrier.arrive), so the producer never waits for its copies; CSA's
 *     picked fp8 entries are gathered by cp.async into a shared staging area before the producer
 *     waits for the half to be free (no registers held in flight), then dequantised into it; the
 *     next block's picks are read one block ahead and prefetched into L2 half a block ahead.
 * Handshakes between the consumers (named barriers, 256 threads): M0 (warpgroup 0 has published
 * P(2k) and m after 2k), M1 (warpgroup 1 has published P(2k + 1) and m after 2k + 1), P0FREE and
 * P1FREE (the other warpgroup's P.V has finished reading a published P: it may be overwritten).
 *
 * Numerics (fast mode, docs/numerics.md): per block of 64 entries exactly attend_wgmma.cu's
 * online softmax, in the same block order: s = fl32(q.k) * scale * log2(e), masked entries -inf,
 * m' = max(m, block max), p = ex2(s - m'), alpha = ex2(m - m'), acc <- acc * alpha + bf16(p).V,
 * l <- fma(l, alpha, sum p); only two sums are taken in another order: q.k is one fp32 tensor-core
 * chain over the 512 dims (attend_wgmma.cu adds two chains of 256), and l is kept as two partial
 * sums (the even blocks' p in warpgroup 0, the odd blocks' in warpgroup 1, each rescaled by every
 * alpha) added at the end. Deterministic; a query's output depends only on its own row and split
 * (the same splits as attend_wgmma.cu), so decode stays batch-invariant. */
#include "attend_wgmma.cuh"

namespace hci_at {
namespace {

constexpr int PP_THREADS = 384;                /* consumer warpgroups 0 and 1, producer warpgroup 2 */
constexpr int BUF = 8 * TILE;                  /* a block: 64 entries x 512 bf16 as eight 64-dim tiles */
constexpr int OFF_Q = 0;                       /* 64 heads x 512 bf16 */
constexpr int OFF_KV = 8 * TILE;               /* buffer 0 (even blocks of the split), buffer 1 (odd) */
constexpr int OFF_P = OFF_KV + 2 * BUF;        /* P of each buffer's block: 64 heads x 64 entries bf16 */
constexpr int OFF_VALID = OFF_P + 2 * TILE;    /* [buffer][entry]: not padding */
constexpr int OFF_MX = OFF_VALID + 2 * AT_BLK; /* [buffer][head]: running max after that buffer's block */
constexpr int OFF_LS = OFF_MX + 2 * HG * 4;    /* [warpgroup][head]: the row sums, at the end */
constexpr int OFF_MBAR = OFF_LS + 2 * HG * 4;  /* ready[buffer][half], free[buffer][half] */
constexpr int OFF_STG = OFF_MBAR + 8 * 8;      /* CSA: the staged codes of a half, 8 slots x 128 threads x 16 bytes */
constexpr unsigned pp_smem(bool csa) { return OFF_STG + (csa ? 8 * 128 * 16 : 0) + 1024; } /* + alignment of the base */
static_assert(OFF_P % 1024 == 0 && OFF_MBAR % 8 == 0 && OFF_STG % 16 == 0, "tiles on 1024 bytes, mbarriers on 8");
static_assert(pp_smem(true) <= 227 * 1024, "one CTA per SM");
/* producer arrivals per half: every thread's cp.async completion (noinc) and its plain arrive */
constexpr unsigned READY_COUNT = 256, FREE_COUNT = 128;
enum { PB_Q = 1, PB_M0 = 2, PB_M1 = 3, PB_P0FREE = 4, PB_P1FREE = 5, PB_END = 6 }; /* 0 is __syncthreads */

/* registers per thread after setmaxnreg: consumers, producer */
constexpr int REGS_C = 216, REGS_P = 72;
static_assert(256 * REGS_C + 128 * REGS_P <= 65536 / PP_THREADS / 8 * 8 * PP_THREADS, "the register file holds both roles");

__device__ __forceinline__ uint32_t mb_ready(uint32_t sbase, int buf, int half) { return sbase + OFF_MBAR + 8 * (2 * buf + half); }
__device__ __forceinline__ uint32_t mb_free(uint32_t sbase, int buf, int half) { return sbase + OFF_MBAR + 32 + 8 * (2 * buf + half); }

/* shared memory by 32-bit shared-state-space addresses (fewer registers than generic pointers) */
__device__ __forceinline__ void sts32(uint32_t a, uint32_t v) { asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(a), "r"(v) : "memory"); }
__device__ __forceinline__ void stsf(uint32_t a, float v) { asm volatile("st.shared.f32 [%0], %1;\n" ::"r"(a), "f"(v) : "memory"); }
__device__ __forceinline__ void sts128(uint32_t a, const uint4 &v)
{
    asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};\n" ::"r"(a), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w) : "memory");
}
__device__ __forceinline__ void sts8(uint32_t a, uint32_t v) { asm volatile("st.shared.u8 [%0], %1;\n" ::"r"(a), "r"(v) : "memory"); }
__device__ __forceinline__ float ldsf(uint32_t a)
{
    float v;
    asm volatile("ld.shared.f32 %0, [%1];\n" : "=f"(v) : "r"(a) : "memory");
    return v;
}
__device__ __forceinline__ uint32_t lds16(uint32_t a)
{
    uint16_t v;
    asm volatile("ld.shared.u16 %0, [%1];\n" : "=h"(v) : "r"(a) : "memory");
    return v;
}
/* blockIdx.{x,y,z} read where it is used (not merged with an earlier read) */
__device__ __forceinline__ uint32_t ctaid(int d)
{
    uint32_t v;
    if (d == 0) asm volatile("mov.u32 %0, %%ctaid.x;\n" : "=r"(v));
    else if (d == 1) asm volatile("mov.u32 %0, %%ctaid.y;\n" : "=r"(v));
    else asm volatile("mov.u32 %0, %%ctaid.z;\n" : "=r"(v));
    return v;
}
/* the dynamic shared memory rounded up to 1024 bytes (the swizzle atoms), computed where used */
__device__ __forceinline__ uint8_t *smem_base(uint8_t *raw)
{
    uintptr_t p = (uintptr_t)raw;
    asm volatile("" : "+l"(p));
    return (uint8_t *)((p + 1023) & ~(uintptr_t)1023);
}
__device__ __forceinline__ void cp_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }
__device__ __forceinline__ void prefetch_l2(const void *p) { asm volatile("prefetch.global.L2 [%0];\n" ::"l"(p)); }

/* ---------------------------------------------------------------- consumers */

/* A descriptor the compiler cannot hoist out of the loop (with its 16 or 32 offsets it would
 * hold them all in registers). */
__device__ __forceinline__ uint64_t opaque(uint64_t d)
{
    asm volatile("" : "+l"(d));
    return d;
}

/* S (+)= Q.K^T over the dims of tiles 4 half .. 4 half + 3 (16 k16 steps); kk 0 starts the sum. */
__device__ __forceinline__ void qk_tiles(float (&sc)[32], uint32_t q, uint32_t kv, int half)
{
    const uint64_t dq = opaque(desc_k(q)), dk = opaque(desc_k(kv));
#pragma unroll
    for (int x = 0; x < 16; x++) {
        const int kk = 16 * half + x;
        const uint64_t off = (uint64_t)(((kk >> 2) * TILE + (kk & 3) * 32) >> 4);
        mma_qk(sc, dq + off, dk + off, kk);
    }
}

/* O += P.V over a block's 64 entries (4 k16 steps of 16 rows = 2048 bytes of V), V the 256 columns
 * at v (MN-major); P from registers or from its swizzled tile at p. */
__device__ __forceinline__ void pv_regs(float (&o)[128], const uint32_t (&pf)[4][4], uint32_t v)
{
    const uint64_t dv = opaque(desc_mn(v));
#pragma unroll
    for (int kk = 0; kk < 4; kk++) mma_pv(o, pf[kk], dv + (uint64_t)((kk * 2048) >> 4));
}
__device__ __forceinline__ void pv_smem(float (&o)[128], uint32_t p, uint32_t v)
{
    const uint64_t dp = opaque(desc_k(p)), dv = opaque(desc_mn(v));
#pragma unroll
    for (int kk = 0; kk < 4; kk++) mma_pv_ss(o, dp + (uint64_t)((kk * 32) >> 4), dv + (uint64_t)((kk * 2048) >> 4));
}

template <int N> __device__ __forceinline__ void reg_fences(float (&r)[N])
{
#pragma unroll
    for (int x = 0; x < N; x++) hci_reg_fence(r[x]);
}

/* One block's softmax step for this thread's 2 rows x 16 entries (sc[4j + 2r + k]: row g + 8r,
 * entry 8j + 2t + k), as attend_wgmma.cu: logits into the log2 domain, padding -inf, the running
 * max mn = max(mold, block max), base = mn (0 while nothing is visible), p = ex2(s - base) rounded
 * to bf16 into the A fragments (the accumulator of n8 blocks 2kk, 2kk + 1 is the A fragment of
 * k16 step kk), and the unrounded row sums ps. */
__device__ __forceinline__ void softmax_block(float (&sc)[32], uint32_t valid, float c2, int t,
                                              const float (&mold)[2], float (&mn)[2], float (&base)[2], float (&ps)[2],
                                              uint32_t (&pf)[4][4])
{
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int j = 0; j < 8; j++) {
        const uint32_t v = lds16(valid + 8 * j + 2 * t); /* entries 8j + 2t and + 1 */
        const bool v0 = (v & 0xff) != 0, v1 = (v >> 8) != 0;
#pragma unroll
        for (int r = 0; r < 2; r++) {
            sc[4 * j + 2 * r] = v0 ? sc[4 * j + 2 * r] * c2 : -INFINITY;
            sc[4 * j + 2 * r + 1] = v1 ? sc[4 * j + 2 * r + 1] * c2 : -INFINITY;
            mx[r] = fmaxf(mx[r], fmaxf(sc[4 * j + 2 * r], sc[4 * j + 2 * r + 1]));
        }
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        mn[r] = fmaxf(mold[r], mx[r]);
        base[r] = mn[r] == -INFINITY ? 0.0f : mn[r];
        ps[r] = 0.0f;
    }
    block_probs(sc, base, ps, pf);
}

/* P into its tile (64 rows x 64 entries bf16, 128-byte swizzled, K-major: the A operand of the
 * other warpgroup's P.V): pf[kk][q] holds row r0 + 8 (q & 1), entries 16 kk + 8 (q >> 1) + 2t, +1.
 * A store instruction covers 8 rows x one 16-byte piece each: no bank conflicts. */
__device__ __forceinline__ void store_p(uint32_t tile, const uint32_t (&pf)[4][4], int r0, int t)
{
    const uint32_t base = tile + r0 * 128 + 4 * t; /* row r0 + 8 is 1024 bytes on, with the same swizzle */
#pragma unroll
    for (int kk = 0; kk < 4; kk++)
#pragma unroll
        for (int q = 0; q < 4; q++) {
            const int piece = 2 * kk + (q >> 1);
            sts32(base + 1024 * (q & 1) + ((piece ^ (r0 & 7)) << 4), pf[kk][q]);
        }
}

/* o *= f of its row; skipped where every factor of the warp is 1 (the same bits) */
__device__ __forceinline__ void rescale(float (&o)[128], const float (&f)[2])
{
    if (__all_sync(0xffffffffu, f[0] == 1.0f && f[1] == 1.0f)) return;
#pragma unroll
    for (int x = 0; x < 128; x++) o[x] *= f[(x >> 1) & 1];
}

/* Consumer warpgroup w: rows (heads) r0 = 16 wi + g and r0 + 8 of its warp, columns
 * 256 w + 8 j + 2 t, +1; the blocks of buffer w. */
__device__ void consume(const hci_cu_attn_args &a, const at_out &out, int i, int h0, int s, const at_range &rg,
                        uint8_t *sm, int w, int wt)
{
    const int wi = wt >> 5, lane = wt & 31, g = lane >> 2, t = lane & 3, r0 = 16 * wi + g;
    const int nb = (int)(rg.b1 - rg.b0), np = (nb + 1) >> 1;
    const float c2 = a.scale * LOG2E;
    const uint32_t sbase = (uint32_t)__cvta_generic_to_shared(sm);
    const uint32_t q_s = sbase + OFF_Q, kv0 = sbase + OFF_KV, kv1 = kv0 + BUF, p0s = sbase + OFF_P, p1s = p0s + TILE;
    const uint32_t mxs = sbase + OFF_MX, valid0 = sbase + OFF_VALID; /* mxs: [buffer][head] floats */

    /* Q (64 heads x 512 bf16) by both consumer warpgroups while the producer fills buffer 0 */
    {
        const uint16_t *q = a.q + ((size_t)i * a.H + h0) * D;
        for (int it = 128 * w + wt; it < HG * (D / 8); it += 256) {
            const int r = it >> 6, c = it & 63;
            cp_async16(q_s + sw_off(r, c), q + (size_t)r * D + 8 * c);
        }
        cp_commit();
        cp_wait<0>();
        hci_async_fence();
        hci_bar_sync(PB_Q, 256);
    }

    float o[128];
#pragma unroll
    for (int x = 0; x < 128; x++) o[x] = 0.0f;
    float M[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};

    /* one loop per warpgroup: ptxas then sees on every path which MMAs may still write o */
    if (w == 0) {
        for (int k = 0; k < np; k++) {
            const uint32_t par = (uint32_t)k & 1;
            const bool has1 = 2 * k + 1 < nb; /* a split with an odd block count ends with block 2k alone */
            float sc[32], m0[2], m1[2], b0[2], al[2], be[2], ps[2];
            uint32_t pf[4][4];
            /* S of block 2k: left tiles, then (once the previous pair's P1.V is done) the right */
            hci_mbar_wait(mb_ready(sbase, 0, 0), par);
            hci_async_fence();
            reg_fences(sc);
            hci_wg_fence();
            qk_tiles(sc, q_s, kv0, 0);
            hci_wg_commit();
            if (k > 0) { /* P(2k - 1).V over the left columns done: buffer 1's left half and P1 are free */
                hci_wg_wait<1>();
                hci_mbar_arrive(mb_free(sbase, 1, 0));
                if (has1) hci_bar_arrive(PB_P1FREE, 256);
            }
            hci_mbar_wait(mb_ready(sbase, 0, 1), par);
            hci_async_fence();
            hci_wg_fence(); /* (ptxas serialises every wgmma of the kernel without this one) */
            qk_tiles(sc, q_s, kv0, 1);
            hci_wg_commit();
            hci_wg_wait0();
            reg_fences(sc);
            softmax_block(sc, valid0, c2, t, M, m0, b0, ps, pf);
#pragma unroll
            for (int r = 0; r < 2; r++) {
                al[r] = ex2(M[r] - b0[r]);
                l[r] = fmaf(l[r], al[r], ps[r]);
            }
            if (k > 0) hci_bar_sync(PB_P0FREE, 256); /* warpgroup 1 has read the previous P0 */
            store_p(p0s, pf, r0, t);
            if (t == 0) stsf(mxs + 4 * r0, m0[0]), stsf(mxs + 4 * (r0 + 8), m0[1]);
            hci_async_fence();
            hci_bar_arrive(PB_M0, 256);
            rescale(o, al);
            reg_fences(o);
            hci_wg_fence();
            pv_regs(o, pf, kv0); /* the left columns of block 2k */
            hci_wg_commit();
            hci_wg_wait0();
            reg_fences(o);
            hci_mbar_arrive(mb_free(sbase, 0, 0)); /* block 2k's left half: its producer refills it first */
            hci_bar_sync(PB_M1, 256);
#pragma unroll
            for (int r = 0; r < 2; r++) {
                m1[r] = ldsf(mxs + 4 * (HG + r0 + 8 * r));
                be[r] = ex2(m0[r] - (m1[r] == -INFINITY ? 0.0f : m1[r]));
            }
            rescale(o, be);
#pragma unroll
            for (int r = 0; r < 2; r++) l[r] *= be[r], M[r] = m1[r];
            if (has1) {
                reg_fences(o);
                hci_wg_fence();
                pv_smem(o, p1s, kv1); /* the left columns of block 2k + 1; waited for next pair or at the end */
                hci_wg_commit();
            }
        }
        hci_wg_wait0();
        reg_fences(o);
    } else {
        for (int k = 0; k < np; k++) {
            const uint32_t par = (uint32_t)k & 1;
            const bool has1 = 2 * k + 1 < nb; /* a split with an odd block count ends with block 2k alone */
            float sc[32], m0[2], m1[2], b0[2], b1[2], al[2], be[2], ps[2];
            uint32_t pf[4][4];
            if (has1) { /* S of block 2k + 1 */
                hci_mbar_wait(mb_ready(sbase, 1, 0), par);
                hci_async_fence();
                reg_fences(sc);
                hci_wg_fence();
                qk_tiles(sc, q_s, kv1, 0);
                hci_mbar_wait(mb_ready(sbase, 1, 1), par);
                hci_async_fence();
                hci_wg_fence();
                qk_tiles(sc, q_s, kv1, 1);
                hci_wg_commit();
            }
            hci_wg_wait0();
            reg_fences(sc);
            hci_bar_sync(PB_M0, 256);
#pragma unroll
            for (int r = 0; r < 2; r++) {
                m0[r] = ldsf(mxs + 4 * (r0 + 8 * r));
                b0[r] = m0[r] == -INFINITY ? 0.0f : m0[r];
                al[r] = ex2(M[r] - b0[r]);
            }
            if (has1) {
                softmax_block(sc, valid0 + AT_BLK, c2, t, m0, m1, b1, ps, pf);
                if (k > 0) hci_bar_sync(PB_P1FREE, 256); /* warpgroup 0 has read the previous P1 */
                store_p(p1s, pf, r0, t);
            } else {
#pragma unroll
                for (int r = 0; r < 2; r++) m1[r] = m0[r], b1[r] = b0[r], ps[r] = 0.0f;
            }
            if (t == 0) stsf(mxs + 4 * (HG + r0), m1[0]), stsf(mxs + 4 * (HG + r0 + 8), m1[1]);
            hci_async_fence();
            hci_bar_arrive(PB_M1, 256);
            /* O = (O alpha0 + P(2k).V) beta + P(2k + 1).V over the right columns: block 2k's
             * step, then block 2k + 1's, as in attend_wgmma.cu */
            rescale(o, al);
            reg_fences(o);
            hci_wg_fence();
            pv_smem(o, p0s, kv0 + 4 * TILE);
            hci_wg_commit();
            hci_wg_wait0();
            reg_fences(o);
            hci_mbar_arrive(mb_free(sbase, 0, 1)); /* block 2k's right half */
            if (k + 1 < np) hci_bar_arrive(PB_P0FREE, 256);
#pragma unroll
            for (int r = 0; r < 2; r++) {
                be[r] = ex2(m0[r] - b1[r]);
                l[r] = has1 ? fmaf(l[r] * al[r], be[r], ps[r]) : l[r] * al[r] * be[r];
                M[r] = m1[r];
            }
            rescale(o, be);
            if (has1) {
                reg_fences(o);
                hci_wg_fence();
                pv_regs(o, pf, kv1 + 4 * TILE); /* the right columns of block 2k + 1 */
                hci_wg_commit();
                hci_wg_wait0();
                reg_fences(o);
                hci_mbar_arrive(mb_free(sbase, 1, 1));
            }
        }
    }

    /* l: the quad's partial sums, then warpgroup 0's (even blocks) plus warpgroup 1's (odd) */
    const uint32_t ls = sbase + OFF_LS; /* [warpgroup][head] floats */
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    }
    if (t == 0) stsf(ls + 4 * (HG * w + r0), l[0]), stsf(ls + 4 * (HG * w + r0 + 8), l[1]);
    hci_bar_sync(PB_END, 256);
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int h = h0 + r0 + 8 * r;
        const float lt = ldsf(ls + 4 * (r0 + 8 * r)) + ldsf(ls + 4 * (HG + r0 + 8 * r));
        if (out.S == 1) {
            const float inv = 1.0f / (lt + ex2(a.sink[h] * LOG2E - M[r]));
            uint16_t *dst = a.o + ((size_t)i * a.H + h) * D + 256 * w + 2 * t;
#pragma unroll
            for (int j = 0; j < 32; j++) *(uint32_t *)(dst + 8 * j) = pack_bf16(o[4 * j + 2 * r] * inv, o[4 * j + 2 * r + 1] * inv);
        } else {
            const size_t row = ((size_t)s * gridDim.z + i) * a.H + h;
            float *dst = out.pacc + row * D + 256 * w + 2 * t;
#pragma unroll
            for (int j = 0; j < 32; j++) *(float2 *)(dst + 8 * j) = make_float2(o[4 * j + 2 * r], o[4 * j + 2 * r + 1]);
            if (w == 0 && t == 0) out.pm[row] = M[r] * (1.0f / LOG2E), out.pl[row] = lt; /* natural log units */
        }
    }
}

/* ---------------------------------------------------------------- producer */

/* Half `half` (tiles 4 half .. + 3) of a buffer from bf16 rows by cp.async, zeros for padding:
 * thread (warp w, lane) takes rows e = 4 (w + 4 m) + lane / 8 (m = 0..3) and piece lane % 8 of
 * each tile, so that a warp's copy covers four whole 128-byte row tiles. row_of(e): the row of
 * entry e of the block, or NULL. flags: also write the block's valid bytes. */
template <class RowOf>
__device__ __forceinline__ void fill_rows(uint32_t kvb, uint32_t valid, bool flags, int half, int wt, const void *any,
                                          RowOf row_of)
{
    const int w = wt >> 5, lane = wt & 31, pc = lane & 7;
#pragma unroll
    for (int m = 0; m < 4; m++) {
        int e = 4 * (w + 4 * m) + (lane >> 3);
        asm volatile("" : "+r"(e)); /* computed here: the compiler would keep the rows' terms of every m across the loop */
        const uint16_t *row = row_of(e);
        if (flags && pc == 0) sts8(valid + e, row != nullptr);
#pragma unroll
        for (int c = 0; c < 4; c++) {
            const int piece = 8 * (4 * half + c) + pc;
            cp_async16_zfill(kvb + sw_off(e, piece), row ? (const void *)(row + 8 * piece) : any, row ? 16 : 0);
        }
    }
}

/* CSA's picked fp8 entries, per producer thread: entries e_h = 8 (w + 4 h) + lane / 4 (h = 0, 1)
 * of the block and, in each 64-dim tile, dims 16 (lane % 4) .. + 15 (16 codes -> 32 bytes of
 * bf16: a store instruction covers 8 rows x 4 pieces, no bank conflicts). A half's codes are
 * gathered by cp.async into the staging area (slot 4 h + c of the thread at STG + 2048 slot +
 * 16 thread: each thread reads back only its own) before the producer waits for the half to be
 * free, so that no register holds them in flight; then dequantised into the buffer. The rope
 * values (bf16 already) go to tile 7 by cp.async. */
struct pp_picks {
    const uint8_t *data[2]; /* the entry's codes and rope values, or NULL (padding) */
    uint2 sc[2];            /* its 7 ue8m0 exponents (8 bytes) */
};

__device__ __forceinline__ void picks_resolve(const hci_cu_attn_args &a, pp_picks &pk, const int32_t (&sel)[2])
{
#pragma unroll
    for (int h = 0; h < 2; h++) {
        pk.data[h] = nullptr;
        pk.sc[h] = make_uint2(0, 0);
        if (sel[h] >= 0) {
            const at_desc d = at_entry(a.comp_l, a.comp, sel[h], 3);
            pk.data[h] = d.data;
            pk.sc[h] = __ldg((const uint2 *)d.scales);
        }
    }
}

/* the codes of half `half` (tiles 0-3, or 4-6) into this thread's staging slots */
__device__ __forceinline__ void picks_stage(const pp_picks &pk, uint32_t stg, int half, int ps)
{
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const uint8_t *d = pk.data[h];
        if (!d) continue;
#pragma unroll
        for (int c = 0; c < 4; c++)
            if (4 * half + c < 7) cp_async16(stg + 2048 * (4 * h + c), d + 16 * (4 * (4 * half + c) + ps));
    }
}

__device__ __forceinline__ uint4 lds128(uint32_t a)
{
    uint4 v;
    asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(a) : "memory");
    return v;
}

/* half `half` of the buffer from the staged codes (the staging copies have landed), the rope
 * tile by cp.async, zeros for padding */
__device__ __forceinline__ void picks_store(const pp_picks &pk, uint32_t kvb, uint32_t stg, uint32_t valid, bool flags,
                                            int half, int w, int lane, const void *any)
{
    const int ps = lane & 3;
#pragma unroll 1 /* one entry at a time: the dequantisation's temporaries of one */
    for (int h = 0; h < 2; h++) {
        const int e = 8 * (w + 4 * h) + (lane >> 2);
        const uint8_t *d = h ? pk.data[1] : pk.data[0]; /* (selects: no local array) */
        const uint2 sc = h ? pk.sc[1] : pk.sc[0];
        if (flags && ps == 0) sts8(valid + e, d != nullptr);
#pragma unroll
        for (int c = 0; c < 4; c++) {
            const int tile = 4 * half + c;
            if (tile == 7) { /* the rope values: 32 bytes of bf16 at QD + 32 ps */
                cp_async16_zfill(kvb + sw_off(e, 56 + 2 * ps), d ? (const void *)(d + QD + 32 * ps) : any, d ? 16 : 0);
                cp_async16_zfill(kvb + sw_off(e, 57 + 2 * ps), d ? (const void *)(d + QD + 32 * ps + 16) : any, d ? 16 : 0);
                continue;
            }
            uint4 lo = make_uint4(0, 0, 0, 0), hi = lo;
            if (d) {
                const uint32_t word = tile < 4 ? sc.x : sc.y;
                dequant16(lds128(stg + 2048 * (4 * h + c)), (int)((word >> (8 * (tile & 3))) & 255u), lo, hi);
            }
            sts128(kvb + sw_off(e, 8 * tile + 2 * ps), lo);
            sts128(kvb + sw_off(e, 8 * tile + 2 * ps + 1), hi);
        }
    }
}

/* Producer: block b of the split into buffer b % 2, half by half (L, R), each once its readers
 * have released it (free, phase of the pair before), then signalled on ready. */
template <bool CSA>
__device__ void produce(const hci_cu_attn_args &a, const at_pre &pr, int i, const at_range &rg, uint8_t *sm, int wt)
{
    const int w = wt >> 5, lane = wt & 31, ps = lane & 3;
    const int nb = (int)(rg.b1 - rg.b0);
    const int64_t nwb = a.window / AT_BLK; /* the window's blocks (at_pp_ok: window % AT_BLK == 0) */
    const uint32_t sbase = (uint32_t)__cvta_generic_to_shared(sm);
    const bool dq_picks = CSA && a.comp_l.fmt == HCI_FMT_FP8;
    const uint32_t stg = sbase + OFF_STG + 16 * wt; /* this thread's staging slots */
    pp_picks pk;
    int32_t nsel[2] = {-1, -1}; /* the next block's picks, read one block ahead */
    bool have_next = false;
    auto sel_of = [&](int64_t blk, int h) -> int32_t {
        const int64_t c = blk * AT_BLK + 8 * (w + 4 * h) + (lane >> 2) - a.window;
        return c >= 0 && c < rg.ncomp ? __ldg(a.sel + (size_t)i * a.K + c) : -1;
    };
    for (int b = 0; b < nb; b++) {
        const int buf = b & 1;
        const uint32_t par = ((uint32_t)(b >> 1) & 1) ^ 1;
        const int64_t blk = rg.b0 + b, u0 = blk * AT_BLK;
        const uint32_t kvb = sbase + OFF_KV + buf * BUF;
        const uint32_t valid = sbase + OFF_VALID + buf * AT_BLK;
        const bool dq = dq_picks && blk >= nwb;
        if (dq) {
            int32_t cur[2];
#pragma unroll
            for (int h = 0; h < 2; h++) cur[h] = have_next ? nsel[h] : sel_of(blk, h);
            picks_resolve(a, pk, cur);
        }
        have_next = false;
#pragma unroll 1
        for (int half = 0; half < 2; half++) {
            const bool flags = half == buf; /* buffer 0's valid bytes with its L half, buffer 1's with its R half */
            if (dq) { /* in flight while the half is still being read */
                picks_stage(pk, stg, half, ps);
                cp_commit();
            }
            if (dq_picks && b + 1 < nb && blk + 1 >= nwb) {
                if (half == 0) {
#pragma unroll
                    for (int h = 0; h < 2; h++) nsel[h] = sel_of(blk + 1, h);
                    have_next = true;
                } else { /* the next block's entries into L2: lines 128 ps of each, and its tail and scales */
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        if (nsel[h] < 0) continue;
                        const at_desc d = at_entry(a.comp_l, a.comp, nsel[h], 3);
                        prefetch_l2(d.data + 128 * ps);
                        if (ps == 0) prefetch_l2(d.data + 512), prefetch_l2(d.scales);
                    }
                }
            }
            hci_mbar_wait(mb_free(sbase, buf, half), par);
            if (dq) {
                cp_wait<0>();
                picks_store(pk, kvb, stg, valid, flags, half, w, lane, a.q);
                hci_async_fence(); /* the generic-proxy stores, before the consumers' wgmma reads them */
            } else {
                fill_rows(kvb, valid, flags, half, wt, a.q, [&](int e) -> const uint16_t * {
                    const int64_t u = u0 + e;
                    if (u >= rg.len) return nullptr;
                    if (!CSA) return pre_row(a, pr, rg.t, u, rg.ncomp);
                    if (u < a.window) return pre_window_row(a, pr, rg.t, u);
                    const int32_t j = a.sel[(size_t)i * a.K + (u - a.window)]; /* bf16-format picks: copied as they are */
                    return j < 0 ? nullptr : (const uint16_t *)at_entry(a.comp_l, a.comp, j, 3).data;
                });
            }
            hci_cp_async_mbar_arrive(mb_ready(sbase, buf, half)); /* once this thread's copies have landed */
            hci_mbar_arrive(mb_ready(sbase, buf, half));          /* its stores (valid bytes, dequantised values) */
        }
    }
    cp_wait_all(); /* no copy outlives the thread */
}

template <bool CSA>
__global__ void __launch_bounds__(PP_THREADS, 1) atp_kernel(hci_cu_attn_args a, at_out out, at_pre pr)
{
    extern __shared__ __align__(16) uint8_t sm_raw[];
    {
        const at_range rg = at_split_range(a, (int)blockIdx.z, (int)blockIdx.x, out.bps);
        if (rg.b0 >= rg.b1) return; /* uniform over the CTA */
    }
    const int tid = threadIdx.x;
    if (tid == 0) {
        const uint32_t sbase = (uint32_t)__cvta_generic_to_shared(sm_raw + ((1024 - ((uintptr_t)sm_raw & 1023)) & 1023));
        for (int x = 0; x < 2; x++)
            for (int y = 0; y < 2; y++) {
                hci_mbar_init(mb_ready(sbase, x, y), READY_COUNT);
                hci_mbar_init(mb_free(sbase, x, y), FREE_COUNT);
            }
        hci_mbar_init_fence();
    }
    __syncthreads();
    /* 384 x 168 registers, moved to the consumers: 256 x C + 128 x P must not exceed that, or the
     * consumers' setmaxnreg.inc waits forever. Each role computes its indices itself (ctaid read
     * anew): a value computed before the split and live into both would have to sit below the
     * producer's register limit, which costs the producer registers (spills). */
    if (tid >= 256) {
        hci_wg_regs_free<REGS_P>();
        const int i = (int)ctaid(2), s = (int)ctaid(0);
        produce<CSA>(a, pr, i, at_split_range(a, i, s, out.bps), smem_base(sm_raw), tid - 256);
    } else {
        hci_wg_regs_alloc<REGS_C>();
        const int i = (int)ctaid(2), s = (int)ctaid(0), h0 = (int)ctaid(1) * HG;
        consume(a, out, i, h0, s, at_split_range(a, i, s, out.bps), smem_base(sm_raw), tid >> 7, tid & 127);
    }
}

} // namespace

bool at_pp_ok(const hci_cu_attn_args &a) { return a.window % AT_BLK == 0 && at_fast_ok(a); }

int at_pp_launch(cudaStream_t s, const hci_cu_attn_args &a, const at_out &out, void *pre)
{
    at_pre pr = {nullptr, nullptr, 0};
    int st = at_fast_prepass(s, a, pre, &pr); /* the window's ring rows (every ratio), HCA's entries */
    if (st != HC_OK) return st;
    auto kern = a.ratio == 4 ? atp_kernel<true> : atp_kernel<false>;
    const unsigned smem = pp_smem(a.ratio == 4);
    if (cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) != cudaSuccess)
        return HC_ERR_CUDA;
    kern<<<dim3(out.S, a.H / HG, a.n), PP_THREADS, smem, s>>>(a, out, pr);
    return HCI_CU_CHECK_LAUNCH();
}

} // namespace hci_at
