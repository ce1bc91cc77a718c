/* index.cu - the lightning indexer on the GPU: scores of every visible key for each query and the
 * top-k, equal bit for bit to cpu_index.c.
 *
 * Exactness. q and the keys hold FP4-grid values (e2m1 x 2^s per 32 elements), so per 32-block
 * q_i = mq_i * 2^uq and k_i = mk_i * 2^uk with small integers (|mq| <= 15, |mk| <= 12 or 15).
 * A block's dot is then an exact int32 N_b (tensor-core IMMA m16n8k32, k = one block), and
 * q.k = sum_b N_b * 2^(uq_b + uk_b). When the exponent spread of the pair is small (the normal
 * case after the Hadamard; ix_pair_fast) every partial sum is exact in fp32, so the fp32 combine
 * gives the exact dot, which is what the CPU's exact double sum rounds to. Any other pair (a
 * block that is not representable, extreme scales, ID % 32 != 0, the launcher's exact_only) runs the
 * CPU's own computation (fp32 products, double accumulation in its lane order), so the result is
 * exact in every case. relu, the weight product and the head sum (double, h = 0..IH-1 in order)
 * are done as on the CPU.
 *
 * Pipeline per group of query rows (the scores of a group fit IX_SCORE_BUDGET):
 *   1. ix_prep:    q -> int8 mantissas + block scales + per-head exponent summary (scratch).
 *   2. ix_score:   CTA = (query tile, strided key tiles of 64 = one page). The page is decoded
 *                  into shared memory as int8 (FP4 via two byte permutes, bf16 via ix_derive32);
 *                  warps run IMMA over (query x head) rows x 32 keys; the head terms go to shared
 *                  memory; one thread per (query, key) sums them in head order, writes the 16-bit
 *                  order-preserving score key and counts its high byte in a per-row histogram.
 *   3. ix_lohist:  radix select, level 2: histogram of the low byte inside the threshold bucket.
 *   4. ix_count:   exact threshold key T; per segment the count of keys > T and == T.
 *   5. ix_compact: keys > T and the first r keys == T (j order) go to the candidate list at
 *                  offsets from the segment counts: deterministic, no atomics on positions.
 *   6. ix_sort:    bitonic sort of the <= K candidates by (key desc, j asc); sel with -1 padding.
 * Segments (2048 keys) spread steps 3-5 over the GPU even for one row (decode).
 *
 * Expected time on an H200, decode (n = 1), 1M context (262,144 FP4 keys, IH = 64, ID = 128):
 * the score kernel reads 17.8 MB (floor ~4 us) and issues 2.1 G int8 MACs on tensor cores (~2-4
 * us); its epilogue (~4 fp32 ops per head, key and block, plus the ordered double head sum) is
 * ~10-15 us of CUDA-core work over 132 SMs, so ~15-20 us; the select kernels read the 512 KB
 * score row 3 times over 128 CTAs plus a sort of K keys: ~10 us including launches. Total
 * expected ~25-35 us (target < 100 us). Prefill is tensor-core + epilogue bound, ~0.1 ns per
 * (query, key) pair with IH = 64. */
#include <stdint.h>
#include "../common.cuh"
#include "config.h"
#include "index.h"
#include "index_fast.h"

namespace {

/* ---------------------------------------------------------------- small device helpers */

__device__ __forceinline__ uint32_t ld_s32(const uint8_t *p) { return *(const uint32_t *)p; }

/* D = A x B + C, int8 inputs, int32 accumulate (exact). Fragments (g = lane/4, t = lane%4):
 * a0 = A[g][4t..], a1 = A[g+8][4t..], a2 = A[g][16+4t..], a3 = A[g+8][16+4t..];
 * b0 = B[4t..][g], b1 = B[16+4t..][g]; c0,c1 = C[g][2t,2t+1], c2,c3 = C[g+8][2t,2t+1]. */
__device__ __forceinline__ void mma_s8(int (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                       uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* The CPU's q_h . k_j: fp32 products, double sums in lanes i % 8, the same final tree. */
__device__ __noinline__ float ix_dot_cpu(const uint16_t *q, const hci_entry_layout &l, uint8_t *const *pages, int64_t j,
                            int ID)
{
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int i = 0;
    for (; i + 8 <= ID; i += 8) {
#pragma unroll
        for (int z = 0; z < 8; z++) {
            float p = __fmul_rn(hci_f32_from_bf16(q[i + z]), hci_dev_entry_value(l, pages, j, i + z));
            acc[z] = __dadd_rn(acc[z], (double)p);
        }
    }
#pragma unroll
    for (int z = 0; z < 8; z++) {
        if (i + z < ID) {
            float p = __fmul_rn(hci_f32_from_bf16(q[i + z]), hci_dev_entry_value(l, pages, j, i + z));
            acc[z] = __dadd_rn(acc[z], (double)p);
        }
    }
    double s = __dadd_rn(__dadd_rn(__dadd_rn(acc[0], acc[4]), __dadd_rn(acc[1], acc[5])),
                         __dadd_rn(__dadd_rn(acc[2], acc[6]), __dadd_rn(acc[3], acc[7])));
    return __double2float_rn(s);
}

/* One head's term: bf16(relu(bf16(d)) * w), as bf16 bits. */
__device__ __forceinline__ uint32_t ix_term(float d, float w)
{
    float x = hci_round_bf16(d);
    if (x < 0.0f) x = 0.0f;
    return hci_bf16_from_f32(__fmul_rn(x, w));
}

/* ---------------------------------------------------------------- shared-memory plan */

struct ix_smem {
    int RP, KS;                 /* padded rows (multiple of 16), int8 row stride */
    unsigned q, qsc, qmeta, w;  /* [RP][KS] int8, [nb][RP] f32, [RP] u32, [RP] f32 */
    unsigned k, ksc, kst, kmeta; /* [64][KS] int8, [nb][64] f32, [64][nb] i32, [64] u32 */
    unsigned terms, hist, total; /* [RP][IX_TS] u16, [QT][256] u32 */
};

__host__ __device__ inline ix_smem ix_plan_smem(int QT, int IH, int ID)
{
    ix_smem s;
    int nb = ID / 32;
    s.RP = (QT * IH + 15) / 16 * 16;
    s.KS = ID + 16;
    unsigned o = 0;
    s.q = o, o = hci_align16(o + (unsigned)s.RP * s.KS);
    s.qsc = o, o = hci_align16(o + (unsigned)nb * s.RP * 4);
    s.qmeta = o, o = hci_align16(o + (unsigned)s.RP * 4);
    s.w = o, o = hci_align16(o + (unsigned)s.RP * 4);
    s.k = o, o = hci_align16(o + (unsigned)IX_TILE * s.KS);
    s.ksc = o, o = hci_align16(o + (unsigned)nb * IX_TILE * 4);
    s.kst = o, o = hci_align16(o + (unsigned)nb * IX_TILE * 4);
    s.kmeta = o, o = hci_align16(o + (unsigned)IX_TILE * 4);
    s.terms = o, o = hci_align16(o + (unsigned)s.RP * IX_TS * 2);
    s.hist = o, o = hci_align16(o + (unsigned)QT * 256 * 4);
    s.total = o;
    return s;
}

/* ---------------------------------------------------------------- 1. query preparation */

/* Prepared row layout (qstride bytes per query): int8 [IH][ID], f32 scales [IH][nb], u32 meta [IH]. */
__global__ void __launch_bounds__(IX_PREP_THREADS) ix_prep(const uint16_t *qi, int IH, int ID, size_t qstride,
                                                           uint8_t *prep)
{
    __shared__ int st[IX_PREP_MAX_BLOCKS]; /* (status << 16) | (u + 512) per (head, block); IH * ID / 32 <= 512 */
    int nb = ID / 32, items = IH * nb;
    const uint16_t *q = qi + (size_t)blockIdx.x * IH * ID;
    uint8_t *base = prep + (size_t)blockIdx.x * qstride;
    float *qsc = (float *)(base + (size_t)IH * ID);
    uint32_t *meta = (uint32_t *)(base + (size_t)IH * ID + (size_t)IH * nb * 4);
    for (int it = threadIdx.x; it < items; it += blockDim.x) {
        int h = it / nb, b = it % nb;
        uint16_t v[32];
#pragma unroll
        for (int i = 0; i < 32; i++) v[i] = q[(size_t)h * ID + b * 32 + i];
        uint32_t m[8];
        int u;
        int status = ix_derive32(v, m, &u);
        uint32_t *dst = (uint32_t *)(base + (size_t)h * ID + b * 32);
#pragma unroll
        for (int w = 0; w < 8; w++) dst[w] = m[w];
        qsc[it] = status == IX_OK ? ix_pow2(u) : 1.0f;
        st[it] = (status << 16) | (u + 512);
    }
    __syncthreads();
    for (int h = threadIdx.x; h < IH; h += blockDim.x) {
        int bad = 0, umin = 1000, umax = -1000;
        for (int b = 0; b < nb; b++) {
            int s = st[h * nb + b], u = (s & 0xffff) - 512;
            if ((s >> 16) == IX_BAD) bad = 1;
            if ((s >> 16) == IX_OK) umin = min(umin, u), umax = max(umax, u);
        }
        if (umin > umax) umin = umax = 0;
        meta[h] = ix_meta(bad, umin, umax);
    }
}

/* ---------------------------------------------------------------- 2. scores */

struct ix_score_args {
    hci_entry_layout l;
    uint8_t *const *pages;
    const uint8_t *prep;   /* group row 0 */
    size_t qstride;
    const uint16_t *qi, *w; /* group row 0 */
    int IH, ID, lg, QT, rows, simple;
    int64_t pos0;          /* position of group row 0 */
    int64_t stride;        /* score row stride (entries) */
    uint16_t *scores;      /* [rows][stride] */
    uint32_t *hist;        /* [rows][256] high-byte counts, zeroed before */
    ix_smem L;             /* shared-memory plan (kept in the parameter space, not registers) */
};

/* Decode FP8-format (FP4) page keys [0, nk) into int8 + block scales; keys beyond nk are zero. */
__device__ void ix_load_fp4_tile(const ix_score_args &a, const ix_smem &L, uint8_t *sm, const uint8_t *page,
                                 int nk)
{
    int nb = a.ID / 32;
    bool vec = ((uintptr_t)page & 15) == 0;
    const uint8_t *scales = page + (size_t)IX_TILE * a.l.data_bytes;
    for (int it = threadIdx.x; it < IX_TILE * nb; it += blockDim.x) {
        int e = it / nb, b = it % nb;
        uint32_t w[4] = {0, 0, 0, 0};
        int byte = 0;
        if (e < nk) {
            const uint8_t *src = page + (size_t)e * a.l.data_bytes + b * 16;
            if (vec) {
                uint4 x = __ldg((const uint4 *)src);
                w[0] = x.x, w[1] = x.y, w[2] = x.z, w[3] = x.w;
            } else {
#pragma unroll
                for (int i = 0; i < 16; i++) w[i >> 2] |= (uint32_t)src[i] << (8 * (i & 3));
            }
            byte = scales[(size_t)e * a.l.scale_bytes + b];
        }
        uint32_t m[8];
        int u, status = ix_fp4_block(w, byte, m, &u);
        uint4 lo = make_uint4(m[0], m[1], m[2], m[3]), hi = make_uint4(m[4], m[5], m[6], m[7]);
        uint4 *dst = (uint4 *)(sm + L.k + (size_t)e * L.KS + b * 32);
        dst[0] = lo, dst[1] = hi;
        ((float *)(sm + L.ksc))[b * IX_TILE + e] = status == IX_OK ? ix_pow2(u) : 1.0f;
        ((int *)(sm + L.kst))[e * nb + b] = (status << 16) | (u + 512);
    }
}

/* Decode BF16-format page keys [0, nk) as ix_derive32 does, 4 lanes per (key, block) with 8
 * values each (registers stay few). The loop count is uniform: 64 * nb * 4 is a multiple of 256. */
__device__ void ix_load_bf16_tile(const ix_score_args &a, const ix_smem &L, uint8_t *sm, const uint8_t *page,
                                  int nk)
{
    int nb = a.ID / 32;
    bool vec = ((uintptr_t)page & 15) == 0;
    for (int it = threadIdx.x; it < IX_TILE * nb * 4; it += blockDim.x) {
        int part = it & 3, e = (it >> 2) / nb, b = (it >> 2) % nb;
        uint32_t x[4] = {0, 0, 0, 0};
        if (e < nk) {
            const uint8_t *src = page + (size_t)e * a.l.data_bytes + b * 64 + part * 16;
            if (vec) {
                uint4 v = __ldg((const uint4 *)src);
                x[0] = v.x, x[1] = v.y, x[2] = v.z, x[3] = v.w;
            } else {
#pragma unroll
                for (int i = 0; i < 16; i++) x[i >> 2] |= (uint32_t)src[i] << (8 * (i & 3));
            }
        }
        int emax, bad;
        ix_scan8(x, &emax, &bad);
        emax = max(emax, __shfl_xor_sync(0xffffffffu, emax, 1));
        emax = max(emax, __shfl_xor_sync(0xffffffffu, emax, 2));
        uint32_t w0, w1;
        int ok = ix_conv8(x, emax, &w0, &w1);
        bad |= !ok;
        bad |= __shfl_xor_sync(0xffffffffu, bad, 1);
        bad |= __shfl_xor_sync(0xffffffffu, bad, 2);
        int status = bad ? IX_BAD : (emax == 0 ? IX_ZERO : IX_OK), u = status == IX_OK ? emax - 130 : 0;
        *(uint2 *)(sm + L.k + (size_t)e * L.KS + b * 32 + part * 8) = make_uint2(w0, w1);
        if (part == 0) {
            ((float *)(sm + L.ksc))[b * IX_TILE + e] = status == IX_OK ? ix_pow2(u) : 1.0f;
            ((int *)(sm + L.kst))[e * nb + b] = (status << 16) | (u + 512);
        }
    }
}

/* Per key: exponent range over its nonzero blocks and the bad flag. */
__device__ void ix_key_meta(const ix_score_args &a, const ix_smem &L, uint8_t *sm, int nk)
{
    int nb = a.ID / 32;
    int e = threadIdx.x;
    if (e >= IX_TILE) return;
    int bad = 0, umin = 1000, umax = -1000;
    if (e < nk) {
        for (int b = 0; b < nb; b++) {
            int s = ((const int *)(sm + L.kst))[e * nb + b], u = (s & 0xffff) - 512;
            if ((s >> 16) == IX_BAD) bad = 1;
            if ((s >> 16) == IX_OK) umin = min(umin, u), umax = max(umax, u);
        }
    }
    if (umin > umax) umin = umax = 0;
    ((uint32_t *)(sm + L.kmeta))[e] = ix_meta(bad, umin, umax);
}

/* The head term of row r (query q0 + r / IH, head r % IH) and key j by the CPU's exact
 * computation: for the pairs ix_pair_fast rejects, and for every pair in simple mode. Scalar
 * arguments only, so that the caller's parameter block is not copied to local memory. */
__device__ __noinline__ uint32_t ix_slow_term(hci_entry_layout l, uint8_t *const *pages, const uint16_t *qrow,
                                              int ID, int64_t j, float w)
{
    return ix_term(ix_dot_cpu(qrow, l, pages, j, ID), w);
}

__device__ __forceinline__ uint32_t ix_slow_pair(const ix_score_args &a, const float *wrow, int q0, int r, int key,
                                                 int64_t j0)
{
    int qq = r / a.IH, h = r % a.IH;
    return ix_slow_term(a.l, a.pages, a.qi + ((size_t)(q0 + qq) * a.IH + h) * a.ID, a.ID, j0 + key, wrow[r]);
}

/* Warp item: rows [r0, r0+16) x keys [kb0, kb0+32) of the tile: IMMA per 32-block, exact fp32
 * combine of the block sums, then the head terms into shared memory. */
__device__ void ix_mma_item(const ix_score_args &a, const ix_smem &L, uint8_t *sm, int q0, int R, int r0, int kb0,
                            int64_t j0)
{
    int nb = a.ID / 32, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    int ra = r0 + g, rb = r0 + g + 8;
    const uint8_t *qs = sm + L.q, *ks = sm + L.k;
    const float *qsc = (const float *)(sm + L.qsc), *ksc = (const float *)(sm + L.ksc);
    float acc[4][4];
#pragma unroll
    for (int nt = 0; nt < 4; nt++)
#pragma unroll
        for (int c = 0; c < 4; c++) acc[nt][c] = 0.0f;
    for (int b = 0; b < nb; b++) {
        const uint8_t *qa = qs + (size_t)ra * L.KS + b * 32 + 4 * t;
        uint32_t a0 = ld_s32(qa), a1 = ld_s32(qa + 8 * L.KS), a2 = ld_s32(qa + 16), a3 = ld_s32(qa + 8 * L.KS + 16);
        float sqa = qsc[b * L.RP + ra], sqb = qsc[b * L.RP + rb];
#pragma unroll
        for (int nt = 0; nt < 4; nt++) {
            int kb = kb0 + nt * 8;
            const uint8_t *kp = ks + (size_t)(kb + g) * L.KS + b * 32 + 4 * t;
            int c[4] = {IX_BIAS_BITS, IX_BIAS_BITS, IX_BIAS_BITS, IX_BIAS_BITS};
            mma_s8(c, a0, a1, a2, a3, ld_s32(kp), ld_s32(kp + 16));
            float sk0 = ksc[b * IX_TILE + kb + 2 * t], sk1 = ksc[b * IX_TILE + kb + 2 * t + 1];
            acc[nt][0] = __fmaf_rn(__fsub_rn(__int_as_float(c[0]), IX_BIAS_VAL), __fmul_rn(sqa, sk0), acc[nt][0]);
            acc[nt][1] = __fmaf_rn(__fsub_rn(__int_as_float(c[1]), IX_BIAS_VAL), __fmul_rn(sqa, sk1), acc[nt][1]);
            acc[nt][2] = __fmaf_rn(__fsub_rn(__int_as_float(c[2]), IX_BIAS_VAL), __fmul_rn(sqb, sk0), acc[nt][2]);
            acc[nt][3] = __fmaf_rn(__fsub_rn(__int_as_float(c[3]), IX_BIAS_VAL), __fmul_rn(sqb, sk1), acc[nt][3]);
        }
    }
    /* Epilogue: visibility per row (query), exactness check per pair, terms to shared memory.
     * Padding rows (>= R) are neither computed nor stored. Pairs that fail the exactness test
     * (rare) are redone afterwards by the exact slow path, outside the unrolled code. */
    uint16_t *terms = (uint16_t *)(sm + L.terms);
    const uint32_t *qmeta = (const uint32_t *)(sm + L.qmeta), *kmeta = (const uint32_t *)(sm + L.kmeta);
    const float *wrow = (const float *)(sm + L.w);
    uint32_t slow = 0; /* bit (half * 4 + nt) * 2 + c */
#pragma unroll
    for (int half = 0; half < 2; half++) {
        int r = half ? rb : ra;
        if (r >= R) continue;
        int64_t nv = (a.pos0 + q0 + r / a.IH + 1) / 4;
        uint32_t mq = qmeta[r];
        float w = wrow[r];
#pragma unroll
        for (int nt = 0; nt < 4; nt++) {
            int key = kb0 + nt * 8 + 2 * t;
            uint32_t t0 = ix_term(acc[nt][2 * half], w), t1 = ix_term(acc[nt][2 * half + 1], w);
            *(uint32_t *)(terms + (size_t)r * IX_TS + key) = t0 | (t1 << 16);
            int bit = (half * 4 + nt) * 2;
            if (j0 + key < nv && !ix_pair_fast(mq, kmeta[key], a.lg)) slow |= 1u << bit;
            if (j0 + key + 1 < nv && !ix_pair_fast(mq, kmeta[key + 1], a.lg)) slow |= 2u << bit;
        }
    }
    while (slow) {
        int bit = __ffs(slow) - 1;
        slow &= slow - 1;
        int r = (bit >> 3) ? rb : ra, key = kb0 + ((bit >> 1) & 3) * 8 + 2 * t + (bit & 1);
        terms[(size_t)r * IX_TS + key] = (uint16_t)ix_slow_pair(a, wrow, q0, r, key, j0);
    }
}

__global__ void __launch_bounds__(IX_THREADS) ix_score(ix_score_args a)
{
    extern __shared__ __align__(16) uint8_t sm[];
    const ix_smem &L = a.L;
    int q0 = blockIdx.y * a.QT, QTe = min(a.QT, a.rows - q0), R = QTe * a.IH;
    int64_t nv_last = (a.pos0 + q0 + QTe) / 4; /* keys visible to the tile's last query */
    int64_t ntiles = (nv_last + IX_TILE - 1) / IX_TILE;
    if ((int64_t)blockIdx.x >= ntiles) return; /* uniform over the CTA */
    int nb = a.ID / 32, tid = threadIdx.x, nwarps = blockDim.x >> 5, warp = tid >> 5;

    /* Query rows (query, head) of the tile, padded to 16 with zero rows. */
    if (!a.simple) {
        int chunks = a.ID / 16;
        for (int it = tid; it < L.RP * chunks; it += blockDim.x) {
            int r = it / chunks, c = it % chunks;
            uint4 v = make_uint4(0, 0, 0, 0);
            if (r < R) {
                int qq = r / a.IH, h = r % a.IH;
                v = *(const uint4 *)(a.prep + (size_t)(q0 + qq) * a.qstride + (size_t)h * a.ID + c * 16);
            }
            *(uint4 *)(sm + L.q + (size_t)r * L.KS + c * 16) = v;
        }
        for (int it = tid; it < L.RP * nb; it += blockDim.x) {
            int r = it / nb, b = it % nb;
            float s = 1.0f;
            if (r < R) {
                int qq = r / a.IH, h = r % a.IH;
                s = ((const float *)(a.prep + (size_t)(q0 + qq) * a.qstride + (size_t)a.IH * a.ID))[h * nb + b];
            }
            ((float *)(sm + L.qsc))[b * L.RP + r] = s;
        }
    }
    for (int r = tid; r < L.RP; r += blockDim.x) {
        uint32_t m = ix_meta(0, 0, 0);
        float wv = 0.0f;
        if (r < R) {
            int qq = r / a.IH, h = r % a.IH;
            if (!a.simple)
                m = ((const uint32_t *)(a.prep + (size_t)(q0 + qq) * a.qstride + (size_t)a.IH * a.ID +
                                        (size_t)a.IH * nb * 4))[h];
            wv = hci_f32_from_bf16(a.w[(size_t)(q0 + qq) * a.IH + h]);
        }
        ((uint32_t *)(sm + L.qmeta))[r] = m;
        ((float *)(sm + L.w))[r] = wv;
    }
    uint32_t *hist = (uint32_t *)(sm + L.hist);
    for (int i = tid; i < QTe * 256; i += blockDim.x) hist[i] = 0;
    uint16_t *terms = (uint16_t *)(sm + L.terms);

    for (int64_t tile = blockIdx.x; tile < ntiles; tile += gridDim.x) {
        int64_t j0 = tile * IX_TILE;
        int nk = (int)min((int64_t)IX_TILE, nv_last - j0);
        __syncthreads(); /* the previous tile's readers of k, terms are done; q is loaded */
        if (!a.simple) {
            const uint8_t *page = a.pages[tile];
            if (a.l.fmt == HCI_FMT_BF16) ix_load_bf16_tile(a, L, sm, page, nk);
            else ix_load_fp4_tile(a, L, sm, page, nk);
            __syncthreads();
            ix_key_meta(a, L, sm, nk);
            __syncthreads();
            int items = ((R + 15) / 16) * 2; /* m-tiles holding real rows x two 32-key halves */
            for (int it = warp; it < items; it += nwarps) {
                int kb0 = (it & 1) * 32;
                if (kb0 < nk) ix_mma_item(a, L, sm, q0, R, (it >> 1) * 16, kb0, j0);
            }
        } else {
            for (int it = tid; it < R * IX_TILE; it += blockDim.x) {
                int r = it / IX_TILE, key = it % IX_TILE;
                int64_t nv = (a.pos0 + q0 + r / a.IH + 1) / 4;
                if (j0 + key < nv)
                    terms[(size_t)r * IX_TS + key] = (uint16_t)ix_slow_pair(a, (const float *)(sm + L.w), q0, r, key, j0);
            }
        }
        __syncthreads();
        /* Head sum per (query, key), heads in order, in double: the CPU's sum. */
        for (int it = tid; it < QTe * IX_TILE; it += blockDim.x) {
            int qq = it / IX_TILE, key = it % IX_TILE;
            int64_t j = j0 + key;
            if (j >= (a.pos0 + q0 + qq + 1) / 4) continue;
            const uint16_t *tp = terms + (size_t)qq * a.IH * IX_TS + key;
            double s = 0.0;
            for (int h = 0; h < a.IH; h++) s = __dadd_rn(s, (double)hci_f32_from_bf16(tp[(size_t)h * IX_TS]));
            uint32_t k16 = ix_key16(hci_bf16_from_f32(__double2float_rn(s)));
            a.scores[(size_t)(q0 + qq) * a.stride + j] = (uint16_t)k16;
            atomicAdd(&hist[qq * 256 + (k16 >> 8)], 1u);
        }
    }
    __syncthreads();
    for (int i = tid; i < QTe * 256; i += blockDim.x)
        if (hist[i]) atomicAdd(&a.hist[(size_t)(q0 + i / 256) * 256 + (i % 256)], hist[i]);
}

/* ---------------------------------------------------------------- 3-6. selection */

struct ix_sel_args {
    const uint16_t *scores;
    int64_t stride;
    int64_t pos0;
    int K, nseg_stride;
    const uint32_t *hist_hi;
    uint32_t *hist_lo;
    uint32_t *seg_cnt; /* [rows][nseg_stride]: (eq << 16) | gt per segment */
    uint64_t *cand;    /* [rows][K] */
    int32_t *sel;      /* [rows][K] */
};

__device__ __forceinline__ uint32_t ix_row_k(const ix_sel_args &a, int row, int64_t *nv)
{
    *nv = (a.pos0 + row + 1) / 4;
    return (uint32_t)min((int64_t)a.K, *nv);
}

/* The largest bucket b of a 256-bin histogram with sum(bins >= b) >= need (1 <= need <= total);
 * *above = sum(bins > b). Block of exactly 256 threads; all threads get the result. */
__device__ void ix_find_bucket(const uint32_t *h, uint32_t need, int *bucket, uint32_t *above)
{
    __shared__ uint32_t warp_sum[8];
    __shared__ int res_b;
    __shared__ uint32_t res_above;
    int tid = threadIdx.x, lane = tid & 31, wid = tid >> 5;
    uint32_t x = h[255 - tid], v = x;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        uint32_t y = __shfl_up_sync(0xffffffffu, v, o);
        if (lane >= o) v += y;
    }
    if (lane == 31) warp_sum[wid] = v;
    __syncthreads();
    uint32_t pre = 0;
    for (int w = 0; w < wid; w++) pre += warp_sum[w];
    uint32_t incl = v + pre, excl = incl - x;
    if (excl < need && need <= incl) res_b = 255 - tid, res_above = excl;
    __syncthreads();
    *bucket = res_b;
    *above = res_above;
    __syncthreads(); /* the shared results may be overwritten by the next call */
}

/* The threshold key T of the row, the number of keys above it and how many == T to take. */
__device__ void ix_threshold(const ix_sel_args &a, int row, uint32_t k, uint32_t *T, uint32_t *gt, uint32_t *r)
{
    int bh, bl;
    uint32_t ah, al;
    ix_find_bucket(a.hist_hi + (size_t)row * 256, k, &bh, &ah);
    ix_find_bucket(a.hist_lo + (size_t)row * 256, k - ah, &bl, &al);
    *T = ((uint32_t)bh << 8) | (uint32_t)bl;
    *gt = ah + al;
    *r = k - ah - al;
}

/* This thread's (up to) 8 keys of the segment: j = j0 + 8 * tid + i, valid while j < nv. */
__device__ __forceinline__ int ix_load8(const ix_sel_args &a, int row, int64_t j0, int64_t nv, uint32_t (&k)[8])
{
    int64_t jb = j0 + 8 * threadIdx.x;
    const uint16_t *p = a.scores + (size_t)row * a.stride + jb;
    int cnt = (int)max((int64_t)0, min((int64_t)8, nv - jb));
    if (cnt == 8) {
        uint4 v = *(const uint4 *)p; /* stride and j0 are multiples of 64 keys */
        uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; i++) k[2 * i] = w[i] & 0xffff, k[2 * i + 1] = w[i] >> 16;
    } else {
#pragma unroll
        for (int i = 0; i < 8; i++) k[i] = i < cnt ? p[i] : 0;
    }
    return cnt;
}

/* Block-wide sum of a u32 (256 threads); all threads get it. */
__device__ uint32_t ix_block_sum(uint32_t v)
{
    __shared__ uint32_t ws[8];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if ((threadIdx.x & 31) == 0) ws[threadIdx.x >> 5] = v;
    __syncthreads();
    uint32_t s = 0;
    for (int w = 0; w < 8; w++) s += ws[w];
    __syncthreads();
    return s;
}

/* Level 2 of the radix select: low-byte histogram of the keys in the threshold bucket. */
__global__ void __launch_bounds__(IX_SEL_THREADS) ix_lohist(ix_sel_args a)
{
    __shared__ uint32_t lh[256];
    int row = blockIdx.y;
    int64_t nv, j0 = (int64_t)blockIdx.x * IX_SEG;
    uint32_t k = ix_row_k(a, row, &nv);
    if (k == 0 || j0 >= nv) return;
    int bh;
    uint32_t ah;
    ix_find_bucket(a.hist_hi + (size_t)row * 256, k, &bh, &ah);
    lh[threadIdx.x] = 0;
    __syncthreads();
    uint32_t key[8];
    int cnt = ix_load8(a, row, j0, nv, key);
    /* Runs of equal low bytes are counted first: ties are common, same-address atomics slow. */
    int cur = -1;
    uint32_t run = 0;
#pragma unroll
    for (int i = 0; i < 8; i++) {
        if (i < cnt && (int)(key[i] >> 8) == bh) {
            int lo = key[i] & 0xff;
            if (lo != cur) {
                if (run) atomicAdd(&lh[cur], run);
                cur = lo, run = 0;
            }
            run++;
        }
    }
    if (run) atomicAdd(&lh[cur], run);
    __syncthreads();
    if (lh[threadIdx.x]) atomicAdd(&a.hist_lo[(size_t)row * 256 + threadIdx.x], lh[threadIdx.x]);
}

/* Per segment: keys > T and keys == T. */
__global__ void __launch_bounds__(IX_SEL_THREADS) ix_count(ix_sel_args a)
{
    int row = blockIdx.y;
    int64_t nv, j0 = (int64_t)blockIdx.x * IX_SEG;
    uint32_t k = ix_row_k(a, row, &nv);
    if (k == 0 || j0 >= nv) return;
    uint32_t T, gt, r;
    ix_threshold(a, row, k, &T, &gt, &r);
    uint32_t key[8];
    int cnt = ix_load8(a, row, j0, nv, key);
    uint32_t c = 0;
#pragma unroll
    for (int i = 0; i < 8; i++)
        if (i < cnt) c += key[i] > T ? 1u : (key[i] == T ? 0x10000u : 0u);
    c = ix_block_sum(c);
    if (threadIdx.x == 0) a.seg_cnt[(size_t)row * a.nseg_stride + blockIdx.x] = c;
}

/* Candidates: keys > T at [0, gt), the first r keys == T (in j order) at [gt, k). */
__global__ void __launch_bounds__(IX_SEL_THREADS) ix_compact(ix_sel_args a)
{
    __shared__ uint32_t ws[8];
    int row = blockIdx.y, tid = threadIdx.x, lane = tid & 31, wid = tid >> 5;
    int64_t nv, j0 = (int64_t)blockIdx.x * IX_SEG;
    uint32_t k = ix_row_k(a, row, &nv);
    if (k == 0 || j0 >= nv) return;
    uint32_t T, gt, r;
    ix_threshold(a, row, k, &T, &gt, &r);
    const uint32_t *sc = a.seg_cnt + (size_t)row * a.nseg_stride;
    uint32_t off_gt = 0, off_eq = 0;
    for (int s = tid; s < (int)blockIdx.x; s += blockDim.x) off_gt += sc[s] & 0xffff, off_eq += sc[s] >> 16;
    off_gt = ix_block_sum(off_gt);
    off_eq = ix_block_sum(off_eq);
    uint32_t mine = sc[blockIdx.x];
    if ((mine & 0xffff) == 0 && ((mine >> 16) == 0 || off_eq >= r)) return; /* uniform */
    uint32_t key[8];
    int cnt = ix_load8(a, row, j0, nv, key);
    uint32_t c = 0;
#pragma unroll
    for (int i = 0; i < 8; i++)
        if (i < cnt) c += key[i] > T ? 1u : (key[i] == T ? 0x10000u : 0u);
    /* Exclusive scan over threads (thread order is j order); gt and eq packed in 16-bit halves. */
    uint32_t v = c;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        uint32_t y = __shfl_up_sync(0xffffffffu, v, o);
        if (lane >= o) v += y;
    }
    if (lane == 31) ws[wid] = v;
    __syncthreads();
    uint32_t pre = 0;
    for (int w = 0; w < wid; w++) pre += ws[w];
    uint32_t ex = pre + v - c;
    uint32_t pg = off_gt + (ex & 0xffff), pe = off_eq + (ex >> 16);
    uint64_t *out = a.cand + (size_t)row * a.K;
    int64_t jb = j0 + 8 * tid;
#pragma unroll
    for (int i = 0; i < 8; i++) {
        if (i >= cnt) break;
        uint64_t pk = ((uint64_t)key[i] << 32) | (uint32_t)(0xffffffffu - (uint32_t)(jb + i));
        if (key[i] > T) {
            out[pg++] = pk;
        } else if (key[i] == T) {
            if (pe < r) out[gt + pe] = pk;
            pe++;
        }
    }
}

/* Sort the k candidates (bitonic, descending pick key = score desc, j asc) and write sel. */
__global__ void __launch_bounds__(IX_SORT_MAX_THREADS) ix_sort(ix_sel_args a, int row0)
{
    extern __shared__ __align__(16) uint8_t smraw[];
    uint64_t *s = (uint64_t *)smraw;
    int row = blockIdx.x;
    int64_t nv;
    uint32_t k = ix_row_k(a, row, &nv);
    int P = 1;
    while (P < (int)k) P <<= 1;
    const uint64_t *cand = a.cand + (size_t)row * a.K;
    for (int i = threadIdx.x; i < P; i += blockDim.x) s[i] = i < (int)k ? cand[i] : 0;
    __syncthreads();
    for (int size = 2; size <= P; size <<= 1) {
        for (int st = size >> 1; st > 0; st >>= 1) {
            for (int i = threadIdx.x; i < P / 2; i += blockDim.x) {
                int lo = 2 * st * (i / st) + (i % st), hi = lo + st;
                uint64_t x = s[lo], y = s[hi];
                bool up = (lo & size) != 0;
                if (up ? x > y : x < y) s[lo] = y, s[hi] = x;
            }
            __syncthreads();
        }
    }
    int32_t *out = a.sel + (size_t)(row0 + row) * a.K;
    for (int i = threadIdx.x; i < a.K; i += blockDim.x)
        out[i] = i < (int)k ? (int32_t)(0xffffffffu - (uint32_t)s[i]) : -1;
}

/* ---------------------------------------------------------------- host side */

struct ix_plan {
    int64_t ne, stride;
    int gcap, G, nseg_stride;
    size_t scores, hist, seg, cand, prep, total;
};

/* Scratch pieces; each grows monotonically with ne, so a caller sizing with n_entries >= the
 * launcher's (pos0+n)/4 always has room. */
ix_plan ix_make_plan(int n, int64_t ne, int K)
{
    ix_plan p;
    p.ne = ne > 0 ? ne : 0;
    p.stride = ((p.ne > 0 ? p.ne : 1) + IX_TILE - 1) / IX_TILE * IX_TILE;
    p.gcap = n < IX_MAX_GROUP ? n : IX_MAX_GROUP;
    if (p.gcap < 1) p.gcap = 1;
    int64_t g = IX_SCORE_BUDGET / p.stride;
    p.G = (int)(g < 1 ? 1 : (g < p.gcap ? g : p.gcap));
    p.nseg_stride = (int)(p.stride / IX_SEG + 1);
    int64_t sc = (int64_t)p.gcap * p.stride, cap = IX_SCORE_BUDGET > p.stride ? IX_SCORE_BUDGET : p.stride;
    size_t o = 0;
    p.scores = o, o += hci_align256((size_t)(sc < cap ? sc : cap) * 2);
    p.hist = o, o += hci_align256((size_t)p.gcap * 512 * 4);
    p.seg = o, o += hci_align256((size_t)p.gcap * p.nseg_stride * 4);
    p.cand = o, o += hci_align256((size_t)p.gcap * (K > 0 ? K : 1) * 8);
    p.prep = o, o += hci_align256((size_t)p.gcap * IX_QPREP_MAX);
    p.total = o;
    return p;
}

int ix_sm_count(void)
{
    int n = 0;
    if (hci_cu_sm_count(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 132;
    }
    return n > 0 ? n : 132;
}

/* The exact score kernel's launch plan: queries per CTA, shared-memory plan, CTAs per SM. */
struct ix_exact_plan {
    int QT, per_sm;
    ix_smem L;
};

/* The exact path's plan for groups of at most G queries: the most queries per CTA whose int8 rows
 * and shared memory fit, the kernel's dynamic shared-memory limit raised when it needs more than
 * 48 KiB, and its occupancy (2 CTAs per SM when the query fails). HC_OK, HC_ERR_UNSUPPORTED (not
 * even one query fits) or HC_ERR_CUDA. The fast scores (index_fast.cu) plan their own. */
int ix_plan_exact(int G, int IH, int ID, ix_exact_plan *e)
{
    int QT = IX_QTILE_ROWS / IH;
    if (QT < 1) QT = 1;
    while (QT > 1 && (int64_t)QT * IH * (ID + 16) > IX_QTILE_BYTES) QT--;
    if (QT > G) QT = G;
    while (QT > 1 && ix_plan_smem(QT, IH, ID).total > IX_MAX_SMEM) QT--;
    ix_smem L = ix_plan_smem(QT, IH, ID);
    if (L.total > IX_MAX_SMEM) return HC_ERR_UNSUPPORTED;
    if (L.total > 48 * 1024 &&
        cudaFuncSetAttribute(ix_score, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)L.total) != cudaSuccess)
        return HC_ERR_CUDA;
    int per_sm = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, ix_score, IX_THREADS, L.total) != cudaSuccess ||
        per_sm < 1) {
        (void)cudaGetLastError(); /* a failed query is not a launch failure */
        per_sm = 2;
    }
    e->QT = QT, e->per_sm = per_sm, e->L = L;
    return HC_OK;
}

} // namespace

size_t hci_cu_index_scratch_bytes(int n, int64_t n_entries, int K)
{
    return ix_make_plan(n, n_entries, K).total;
}

/* The fast score kernel's head sum (index_fast.h, HCI_IX_SUM_*) for the mode's flags (index.h):
 * F32SUM first, then the tensor-core sum pipelined, with the keys in registers and/or the mixed
 * conversions, or plain. */
static int fast_sum(int mode)
{
    if (mode & HCI_IX_F32SUM) return HCI_IX_SUM_F32;
    if (!(mode & HCI_IX_TCSUM)) return HCI_IX_SUM_CORES;
    if (mode & HCI_IX_TCPIPE) return HCI_IX_SUM_TC_PIPE;
    if (mode & HCI_IX_REGA) return mode & HCI_IX_TCMIX ? HCI_IX_SUM_TC_REGA_MIX : HCI_IX_SUM_TC_REGA;
    return mode & HCI_IX_TCMIX ? HCI_IX_SUM_TC_MIX : HCI_IX_SUM_TC;
}

int hci_cu_index_topk(cudaStream_t s, const hci_entry_layout *l, uint8_t *const *pages, int n, int64_t pos0,
                      int IH, int ID, int K, const uint16_t *qi, const uint16_t *w, int32_t *sel, void *scratch,
                      int mode)
{
    if (n <= 0) return HC_OK;
    if (!l || !qi || !w || !sel || !scratch) return HC_ERR_NULL_ARG;
    if (K < 1 || K > IX_MAX_K || IH < 1 || ID < 1 || IH > IX_MAX_HEADS || (int64_t)IH * ID > IX_MAX_ROW_ELEMS ||
        pos0 < 0 || l->dim != ID)
        return HC_ERR_INVALID_ARG;
    int64_t ne = (pos0 + n) / 4;
    if (ne > 0 && !pages) return HC_ERR_NULL_ARG;
    ix_plan p = ix_make_plan(n, ne, K);
    uint8_t *base = (uint8_t *)scratch;
    int fp4_ok = l->fmt == HCI_FMT_FP8 && l->fp4 && l->qblock == 32 && l->data_bytes == ID / 2 &&
                 l->scale_bytes == ID / 32;
    int bf16_ok = l->fmt == HCI_FMT_BF16 && l->data_bytes == ID * 2;
    int fast = (mode & 3) == HCI_IX_FAST && hci_cu_index_fast_ok(l, IH, ID);
    int simple = mode == HCI_IX_EXACT_ONLY || ID % 32 != 0 || !(fp4_ok || bf16_ok);
    int nb = ID / 32, lg = 0;
    while ((1 << lg) < nb) lg++;
    size_t qstride = hci_align256((size_t)IH * ID + (size_t)IH * nb * 4 + (size_t)IH * 4);
    int sms = ix_sm_count();
    ix_exact_plan ex = {}; /* the exact score kernel's shared memory and occupancy: its path only */
    if (!fast) {
        int st = ix_plan_exact(p.G, IH, ID, &ex);
        if (st) return st;
    }

    for (int g0 = 0; g0 < n; g0 += p.G) {
        int rows = n - g0 < p.G ? n - g0 : p.G;
        int64_t gpos = pos0 + g0, gne = (gpos + rows) / 4;
        uint32_t *hist_hi = (uint32_t *)(base + p.hist), *hist_lo = hist_hi + (size_t)rows * 256;
        ix_sel_args sa;
        sa.scores = (const uint16_t *)(base + p.scores);
        sa.stride = p.stride;
        sa.pos0 = gpos;
        sa.K = K;
        sa.nseg_stride = p.nseg_stride;
        sa.hist_hi = hist_hi;
        sa.hist_lo = hist_lo;
        sa.seg_cnt = (uint32_t *)(base + p.seg);
        sa.cand = (uint64_t *)(base + p.cand);
        sa.sel = sel;
        if (gne > 0) {
            if (cudaMemsetAsync(hist_hi, 0, (size_t)rows * 512 * 4, s) != cudaSuccess) return HC_ERR_CUDA;
            if (fast) {
                int st = hci_cu_index_fast_scores(s, l, pages, rows, gpos, IH, qi + (size_t)g0 * IH * ID,
                                                  w + (size_t)g0 * IH, base + p.prep, (uint16_t *)(base + p.scores),
                                                  p.stride, hist_hi, sms, fast_sum(mode));
                if (st) return st;
            } else {
                if (!simple) {
                    ix_prep<<<rows, IX_PREP_THREADS, 0, s>>>(qi + (size_t)g0 * IH * ID, IH, ID, qstride, base + p.prep);
                    if (HCI_CU_CHECK_LAUNCH() != 0) return HC_ERR_CUDA;
                }
                ix_score_args a;
                a.l = *l;
                a.pages = pages;
                a.prep = base + p.prep;
                a.qstride = qstride;
                a.qi = qi + (size_t)g0 * IH * ID;
                a.w = w + (size_t)g0 * IH;
                a.IH = IH, a.ID = ID, a.lg = lg, a.QT = ex.QT, a.rows = rows, a.simple = simple;
                a.pos0 = gpos;
                a.stride = p.stride;
                a.scores = (uint16_t *)(base + p.scores);
                a.hist = hist_hi;
                a.L = ex.L;
                int gy = (rows + ex.QT - 1) / ex.QT;
                int64_t ntiles = (gne + IX_TILE - 1) / IX_TILE, want = (int64_t)sms * ex.per_sm / gy; /* one wave */
                int gx = (int)(ntiles < want ? ntiles : (want < 1 ? 1 : want));
                ix_score<<<dim3(gx, gy), IX_THREADS, ex.L.total, s>>>(a);
                if (HCI_CU_CHECK_LAUNCH() != 0) return HC_ERR_CUDA;
            }
            dim3 sg((unsigned)((gne + IX_SEG - 1) / IX_SEG), rows);
            ix_lohist<<<sg, IX_SEL_THREADS, 0, s>>>(sa);
            if (HCI_CU_CHECK_LAUNCH() != 0) return HC_ERR_CUDA;
            ix_count<<<sg, IX_SEL_THREADS, 0, s>>>(sa);
            if (HCI_CU_CHECK_LAUNCH() != 0) return HC_ERR_CUDA;
            ix_compact<<<sg, IX_SEL_THREADS, 0, s>>>(sa);
            if (HCI_CU_CHECK_LAUNCH() != 0) return HC_ERR_CUDA;
        }
        int P = 1;
        while (P < K) P <<= 1;
        int threads = P / 2 < 32 ? 32 : (P / 2 > IX_SORT_MAX_THREADS ? IX_SORT_MAX_THREADS : P / 2);
        ix_sort<<<rows, threads, (size_t)P * 8, s>>>(sa, g0);
        if (HCI_CU_CHECK_LAUNCH() != 0) return HC_ERR_CUDA;
    }
    return HC_OK;
}
