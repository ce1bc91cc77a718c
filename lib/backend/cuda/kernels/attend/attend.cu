/* attend.cu - sparse attention with the sink (the semantics of cpu_attend.c): for query t the
 * index row is the W window slots then the compressed part, one online softmax per head over
 * the whole row plus the sink, p rounded to bf16 for P.V, acc <- fl32(acc * alpha) + P.V.
 *
 * Work unit: a CTA of 256 threads = (query, group of 32 heads, split of the row). The row is
 * walked in blocks of 64 entries: the entries are resolved (window kv row / ring slot /
 * compressed entry / padding), gathered with 16-byte loads and dequantised (e4m3 x ue8m0 ->
 * bf16, rope part copied) into shared memory, then
 *   - tensor-core path (default, d in {64,128,256,512}): S = Q.V^T with mma.sync m16n8k16 bf16
 *     (fp32 accumulate; 8 warps = 2 head tiles x 4 entry quarters), a block max and a p sum
 *     across the 4 warps of a head tile via shared memory, P (bf16) to shared memory, then
 *     O += P.V with ldmatrix.trans (each warp 16 heads x d/4 columns kept in registers);
 *   - simple path (any other d, or the launcher's simple_only): the same block steps with fp32 FMA
 *     loops and the accumulator in shared memory (1 to 32 heads per CTA by the memory limit).
 * Logits are fl32(q.v) * scale, accurate expf, l = fma(l, alpha, sum p) with the unrounded p, the
 * sink enters only the final denominator: o = bf16(acc / (l + expf(sink - m))). The GPU sums in
 * another order than the CPU (fp32 tensor-core accumulation), so results agree to ~1e-3 relative.
 *
 * Split-KV (decode and other small launches): when fewer than ~2 CTAs per SM would run, each
 * row is cut into S ranges of >= 2 blocks; CTAs write (m, l, acc) partials to scratch and
 * at_combine merges them with the usual max rescaling (exactly the same softmax in real
 * arithmetic).
 *
 * Expected time on an H200 (performance.md §3): CSA decode, 640 entries, h = 64: 10 CTAs with 2
 * blocks each, ~4-6 us + combine ~2 us (roofline 0.12 us: latency bound at batch 1). HCA decode
 * at 1M, 8320 entries, h = 64: 130 CTAs x 2 blocks, ~5-8 us + combine (roofline 1.4 us: here the
 * dequant and the mma.sync issue are not overlapped with the loads; no double buffering yet).
 * Prefill runs one CTA per (query, head group) without splits; each CTA re-reads its row's
 * entries (no sharing of KV across queries), so HCA prefill is gather/dequant bound. */
#include <math.h>
#include <stdint.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include "../common.cuh"
#include "attend.h"
#include "config.h"
#include "attend_rows.cuh"

namespace {
using namespace hci_at;

/* ---------------------------------------------------------------- entries */

/* One entry -> d bf16 values in shared memory (row dst), by one warp. Padding gives zeros, so
 * that P = 0 times the row stays 0 in the P.V product. */
__device__ void at_load_entry(const hci_cu_attn_args &a, const at_desc &e, uint16_t *dst, int lane)
{
    int d = a.d;
    if (e.kind == 0) {
        for (int c = lane; c < d / 8; c += 32) ((uint4 *)dst)[c] = make_uint4(0, 0, 0, 0);
        return;
    }
    if (e.kind == 1) {
        if (hci_aligned16(e.data)) {
            for (int c = lane; c < d / 8; c += 32) ((uint4 *)dst)[c] = __ldg((const uint4 *)e.data + c);
        } else {
            for (int x = lane; x < d; x += 32) dst[x] = ((const uint16_t *)e.data)[x];
        }
        return;
    }
    const hci_entry_layout &l = e.kind == 2 ? a.win_l : a.comp_l;
    int qd = l.quant_dim;
    bool al = hci_aligned16(e.data);
    for (int c = lane; c < qd / 16; c += 32) { /* 16 codes; a 64-block never straddles */
        uint32_t w[4];
        if (al) {
            uint4 v = __ldg((const uint4 *)e.data + c);
            w[0] = v.x, w[1] = v.y, w[2] = v.z, w[3] = v.w;
        } else {
#pragma unroll
            for (int z = 0; z < 4; z++) {
                const uint8_t *p = e.data + c * 16 + 4 * z;
                w[z] = p[0] | (p[1] << 8) | (p[2] << 16) | ((uint32_t)p[3] << 24);
            }
        }
        float s = hci_pow2((int)e.scales[c * 16 / l.qblock] - 127);
        uint32_t out[8];
#pragma unroll
        for (int z = 0; z < 8; z++) {
            __half2_raw hr = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(w[z >> 1] >> (16 * (z & 1))), __NV_E4M3);
            float2 f = __half22float2(__half2(hr)); /* exact: e4m3 is a subset of fp16 */
            __nv_bfloat162_raw b = __floats2bfloat162_rn(__fmul_rn(f.x, s), __fmul_rn(f.y, s));
            out[z] = (uint32_t)b.x | ((uint32_t)b.y << 16);
        }
        uint4 *o = (uint4 *)(dst + c * 16);
        o[0] = make_uint4(out[0], out[1], out[2], out[3]);
        o[1] = make_uint4(out[4], out[5], out[6], out[7]);
    }
    const uint16_t *rope = (const uint16_t *)(e.data + qd);
    if (al && qd % 16 == 0) {
        for (int c = lane; c < (d - qd) / 8; c += 32) ((uint4 *)(dst + qd))[c] = __ldg((const uint4 *)rope + c);
    } else {
        for (int x = lane; x < d - qd; x += 32) dst[qd + x] = rope[x];
    }
}

/* Resolve block entries [u0, u0+64) of the row into desc (threads 0..63) and gather them into
 * V rows (warp per entry). Returns the number of non-padding entries (0: skip the block). */
__device__ int at_fetch_block(const hci_cu_attn_args &a, int i, int64_t t, int64_t u0, int64_t len, int64_t ncomp,
                              at_desc *desc, uint16_t *V, int vst)
{
    int tid = threadIdx.x, valid = 0;
    if (tid < AT_BLK) {
        at_desc e = {nullptr, nullptr, 0, 0};
        if (u0 + tid < len) e = at_resolve(a, i, t, u0 + tid, ncomp);
        desc[tid] = e;
        valid = e.kind != 0;
    }
    int nvalid = __syncthreads_count(valid);
    if (nvalid == 0) return 0;
    int warp = tid >> 5, lane = tid & 31;
    for (int e = warp; e < AT_BLK; e += AT_THREADS / 32) at_load_entry(a, desc[e], V + (size_t)e * vst, lane);
    __syncthreads();
    return nvalid;
}

/* ---------------------------------------------------------------- tensor-core path */

__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], const void *p)
{
    uint32_t s = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s)
                 : "memory");
}

/* C += A.B, bf16 in, fp32 accumulate. a0..a3: A[g][2t..], A[g+8][2t..], A[g][2t+8..],
 * A[g+8][2t+8..]; b0 = B[2t..][g], b1 = B[2t+8..][g]; c0,c1 = C[g][2t,2t+1], c2,c3 = C[g+8][..]. */
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

struct at_mma_smem {
    unsigned q, v, p, pmax, psum, alpha, mnew, m, l, desc, total;
};

__host__ __device__ constexpr inline at_mma_smem at_plan_mma(int d)
{
    at_mma_smem s = {};
    unsigned o = 0, st = (unsigned)(d + 8) * 2;
    s.q = o, o = hci_align16(o + AT_HG * st);
    s.v = o, o = hci_align16(o + AT_BLK * st);
    s.p = o, o = hci_align16(o + AT_HG * AT_PS * 2);
    s.pmax = o, o = hci_align16(o + 4 * AT_HG * 4);
    s.psum = o, o = hci_align16(o + 4 * AT_HG * 4);
    s.alpha = o, o = hci_align16(o + AT_HG * 4);
    s.mnew = o, o = hci_align16(o + AT_HG * 4);
    s.m = o, o = hci_align16(o + AT_HG * 4);
    s.l = o, o = hci_align16(o + AT_HG * 4);
    s.desc = o, o = hci_align16(o + AT_BLK * (unsigned)sizeof(at_desc));
    s.total = o;
    return s;
}
static_assert(at_plan_mma(512).total <= AT_MAX_SMEM, "the tensor-core kernel's plan for the largest d fits");

/* Q rows of the head group into shared memory (bf16, zero rows past H). */
__device__ void at_load_q(const hci_cu_attn_args &a, int i, int h0, int nh, uint16_t *Q, int qst)
{
    int chunks = a.d / 8;
    bool al = hci_aligned16(a.q);
    for (int it = threadIdx.x; it < nh * chunks; it += blockDim.x) {
        int r = it / chunks, c = it % chunks, h = h0 + r;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (h < a.H) {
            const uint16_t *src = a.q + ((size_t)i * a.H + h) * a.d + c * 8;
            if (al) {
                v = *(const uint4 *)src;
            } else {
                uint32_t w[4];
#pragma unroll
                for (int z = 0; z < 4; z++) w[z] = src[2 * z] | ((uint32_t)src[2 * z + 1] << 16);
                v = make_uint4(w[0], w[1], w[2], w[3]);
            }
        }
        *(uint4 *)(Q + (size_t)r * qst + c * 8) = v;
    }
}

/* grid (split, head group, query); NT = d / 32 n-tiles of 8 columns per warp in P.V. */
template <int NT>
__global__ void __launch_bounds__(AT_THREADS, 2) at_mma_kernel(hci_cu_attn_args a, at_out out)
{
    extern __shared__ __align__(16) uint8_t sm[];
    constexpr int D = NT * 32, ST = D + 8;
    const at_mma_smem L = at_plan_mma(D);
    int i = blockIdx.z, h0 = blockIdx.y * AT_HG, s = blockIdx.x;
    at_range rg = at_split_range(a, i, s, out.bps);
    if (rg.b0 >= rg.b1) return; /* empty split: the combine skips it */
    uint16_t *Q = (uint16_t *)(sm + L.q), *V = (uint16_t *)(sm + L.v), *P = (uint16_t *)(sm + L.p);
    float *pmax = (float *)(sm + L.pmax), *psum = (float *)(sm + L.psum), *alpha = (float *)(sm + L.alpha);
    float *mnew = (float *)(sm + L.mnew), *mrun = (float *)(sm + L.m), *lrun = (float *)(sm + L.l);
    at_desc *desc = (at_desc *)(sm + L.desc);
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    int mt = warp >> 2, nq = warp & 3, r0 = mt * 16, ra = r0 + g, rb = ra + 8;

    at_load_q(a, i, h0, AT_HG, Q, ST);
    if (tid < AT_HG) mrun[tid] = -INFINITY, lrun[tid] = 0.0f;
    float o[NT][4];
#pragma unroll
    for (int n = 0; n < NT; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;

    for (int64_t blk = rg.b0; blk < rg.b1; blk++) {
        /* The previous block's readers of desc / V / P are past this function's first barrier. */
        if (at_fetch_block(a, i, rg.t, blk * AT_BLK, rg.len, rg.ncomp, desc, V, ST) == 0) continue;

        /* S = Q.V^T for rows r0..r0+15 and entries n0..n0+15 of this warp. */
        int n0 = nq * 16;
        float sc[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
        for (int k0 = 0; k0 < D; k0 += 16) {
            uint32_t af[4], bf[4];
            hci_dev_ldsm_x4(af, Q + (size_t)(r0 + (lane & 7) + ((lane >> 3) & 1) * 8) * ST + k0 + (lane >> 4) * 8);
            hci_dev_ldsm_x4(bf, V + (size_t)(n0 + (lane & 7) + (lane >> 4) * 8) * ST + k0 + ((lane >> 3) & 1) * 8);
            mma_bf16(sc[0], af, bf[0], bf[1]);
            mma_bf16(sc[1], af, bf[2], bf[3]);
        }
        float lg[2][4], mxa = -INFINITY, mxb = -INFINITY;
#pragma unroll
        for (int n = 0; n < 2; n++)
#pragma unroll
            for (int c = 0; c < 4; c++) {
                int e = n0 + n * 8 + 2 * t + (c & 1);
                lg[n][c] = desc[e].kind ? __fmul_rn(sc[n][c], a.scale) : -INFINITY;
                if (c < 2) mxa = fmaxf(mxa, lg[n][c]);
                else mxb = fmaxf(mxb, lg[n][c]);
            }
        mxa = fmaxf(mxa, __shfl_xor_sync(0xffffffffu, mxa, 1));
        mxa = fmaxf(mxa, __shfl_xor_sync(0xffffffffu, mxa, 2));
        mxb = fmaxf(mxb, __shfl_xor_sync(0xffffffffu, mxb, 1));
        mxb = fmaxf(mxb, __shfl_xor_sync(0xffffffffu, mxb, 2));
        if (t == 0) pmax[nq * AT_HG + ra] = mxa, pmax[nq * AT_HG + rb] = mxb;
        __syncthreads();

        /* New running max (the block has a valid entry, so it is finite), p, P in bf16. */
        float ma = mrun[ra], mb = mrun[rb];
        float na = fmaxf(ma, fmaxf(fmaxf(pmax[ra], pmax[AT_HG + ra]), fmaxf(pmax[2 * AT_HG + ra], pmax[3 * AT_HG + ra])));
        float nb = fmaxf(mb, fmaxf(fmaxf(pmax[rb], pmax[AT_HG + rb]), fmaxf(pmax[2 * AT_HG + rb], pmax[3 * AT_HG + rb])));
        float sa = 0.0f, sb = 0.0f;
#pragma unroll
        for (int n = 0; n < 2; n++) {
            float p0 = expf(lg[n][0] - na), p1 = expf(lg[n][1] - na), p2 = expf(lg[n][2] - nb), p3 = expf(lg[n][3] - nb);
            sa += p0 + p1, sb += p2 + p3;
            int e = n0 + n * 8 + 2 * t;
            __nv_bfloat162 x = __floats2bfloat162_rn(p0, p1), y = __floats2bfloat162_rn(p2, p3);
            *(__nv_bfloat162 *)(P + ra * AT_PS + e) = x;
            *(__nv_bfloat162 *)(P + rb * AT_PS + e) = y;
        }
        sa += __shfl_xor_sync(0xffffffffu, sa, 1);
        sa += __shfl_xor_sync(0xffffffffu, sa, 2);
        sb += __shfl_xor_sync(0xffffffffu, sb, 1);
        sb += __shfl_xor_sync(0xffffffffu, sb, 2);
        if (t == 0) {
            psum[nq * AT_HG + ra] = sa, psum[nq * AT_HG + rb] = sb;
            if (nq == 0) {
                alpha[ra] = expf(ma - na), alpha[rb] = expf(mb - nb);
                mnew[ra] = na, mnew[rb] = nb;
            }
        }
        __syncthreads();

        /* Denominator (one thread per head), then O = fl32(O * alpha) + P.V. */
        if (tid < AT_HG) {
            float ps = ((psum[tid] + psum[AT_HG + tid]) + psum[2 * AT_HG + tid]) + psum[3 * AT_HG + tid];
            lrun[tid] = fmaf(lrun[tid], alpha[tid], ps);
            mrun[tid] = mnew[tid];
        }
        float aa = alpha[ra], ab = alpha[rb];
#pragma unroll
        for (int n = 0; n < NT; n++) {
            o[n][0] = __fmul_rn(o[n][0], aa), o[n][1] = __fmul_rn(o[n][1], aa);
            o[n][2] = __fmul_rn(o[n][2], ab), o[n][3] = __fmul_rn(o[n][3], ab);
        }
        int xb = nq * (D / 4);
#pragma unroll
        for (int e0 = 0; e0 < AT_BLK; e0 += 16) {
            uint32_t pf[4];
            hci_dev_ldsm_x4(pf, P + (size_t)(r0 + (lane & 7) + ((lane >> 3) & 1) * 8) * AT_PS + e0 + (lane >> 4) * 8);
#pragma unroll
            for (int np = 0; np < NT / 2; np++) {
                uint32_t vf[4];
                ldsm_x4_t(vf, V + (size_t)(e0 + (lane & 7) + ((lane >> 3) & 1) * 8) * ST + xb + np * 16 + (lane >> 4) * 8);
                mma_bf16(o[2 * np], pf, vf[0], vf[1]);
                mma_bf16(o[2 * np + 1], pf, vf[2], vf[3]);
            }
        }
    }
    __syncthreads(); /* lrun / mrun of the last block */

    int xb = nq * (D / 4);
#pragma unroll
    for (int half = 0; half < 2; half++) {
        int r = half ? rb : ra, h = h0 + r;
        if (h >= a.H) continue;
        float m = mrun[r], l = lrun[r];
        if (out.S == 1) {
            float lf = l + expf(a.sink[h] - m);
            uint16_t *dst = a.o + ((size_t)i * a.H + h) * D + xb + 2 * t;
#pragma unroll
            for (int n = 0; n < NT; n++) {
                __nv_bfloat162 v = __floats2bfloat162_rn(o[n][2 * half] / lf, o[n][2 * half + 1] / lf);
                *(__nv_bfloat162 *)(dst + n * 8) = v;
            }
        } else {
            size_t row = ((size_t)s * gridDim.z + i) * a.H + h;
            float *dst = out.pacc + row * D + xb + 2 * t;
#pragma unroll
            for (int n = 0; n < NT; n++) *(float2 *)(dst + n * 8) = make_float2(o[n][2 * half], o[n][2 * half + 1]);
            if (nq == 0 && t == 0) out.pm[row] = m, out.pl[row] = l;
        }
    }
}

/* ---------------------------------------------------------------- simple path */

struct at_simple_smem {
    unsigned q, v, lg, p, acc, alpha, m, l, desc, total;
};

__host__ __device__ inline at_simple_smem at_plan_simple(int d, int hg)
{
    at_simple_smem s;
    unsigned o = 0, st = (unsigned)(d + 8) * 2;
    s.q = o, o = hci_align16(o + hg * st);
    s.v = o, o = hci_align16(o + AT_BLK * st);
    s.lg = o, o = hci_align16(o + hg * AT_BLK * 4);
    s.p = o, o = hci_align16(o + hg * AT_BLK * 4);
    s.acc = o, o = hci_align16(o + (unsigned)hg * d * 4);
    s.alpha = o, o = hci_align16(o + hg * 4);
    s.m = o, o = hci_align16(o + hg * 4);
    s.l = o, o = hci_align16(o + hg * 4);
    s.desc = o, o = hci_align16(o + AT_BLK * (unsigned)sizeof(at_desc));
    s.total = o;
    return s;
}

/* grid (split, head group of hg heads, query): fp32 FMA loops, accumulator in shared memory. */
__global__ void __launch_bounds__(AT_THREADS) at_simple_kernel(hci_cu_attn_args a, at_out out, int hg)
{
    extern __shared__ __align__(16) uint8_t sm[];
    const int d = a.d, ST = d + 8;
    const at_simple_smem L = at_plan_simple(d, hg);
    int i = blockIdx.z, h0 = blockIdx.y * hg, s = blockIdx.x;
    at_range rg = at_split_range(a, i, s, out.bps);
    if (rg.b0 >= rg.b1) return;
    uint16_t *Q = (uint16_t *)(sm + L.q), *V = (uint16_t *)(sm + L.v);
    float *lgs = (float *)(sm + L.lg), *P = (float *)(sm + L.p), *acc = (float *)(sm + L.acc);
    float *alpha = (float *)(sm + L.alpha), *mrun = (float *)(sm + L.m), *lrun = (float *)(sm + L.l);
    at_desc *desc = (at_desc *)(sm + L.desc);
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;

    at_load_q(a, i, h0, hg, Q, ST);
    for (int x = tid; x < hg * d; x += blockDim.x) acc[x] = 0.0f;
    if (tid < hg) mrun[tid] = -INFINITY, lrun[tid] = 0.0f;

    for (int64_t blk = rg.b0; blk < rg.b1; blk++) {
        if (at_fetch_block(a, i, rg.t, blk * AT_BLK, rg.len, rg.ncomp, desc, V, ST) == 0) continue;
        /* logits, one (head, entry) per item */
        for (int it = tid; it < hg * AT_BLK; it += blockDim.x) {
            int h = it / AT_BLK, e = it % AT_BLK;
            float l = -INFINITY;
            if (desc[e].kind) {
                const uint16_t *qh = Q + (size_t)h * ST, *ve = V + (size_t)e * ST;
                float dot = 0.0f;
                for (int x = 0; x < d; x++) dot = fmaf(hci_f32_from_bf16(qh[x]), hci_f32_from_bf16(ve[x]), dot);
                l = __fmul_rn(dot, a.scale);
            }
            lgs[it] = l;
        }
        __syncthreads();
        /* softmax step, one warp per head: max, alpha, p (bf16 for P.V), l = fma(l, alpha, sum p) */
        for (int h = warp; h < hg; h += blockDim.x / 32) {
            float l0 = lgs[h * AT_BLK + lane], l1 = lgs[h * AT_BLK + lane + 32];
            float mx = fmaxf(l0, l1);
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
            float mo = mrun[h], mn = fmaxf(mo, mx);
            float p0 = expf(l0 - mn), p1 = expf(l1 - mn), ps = p0 + p1;
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) ps += __shfl_xor_sync(0xffffffffu, ps, off);
            P[h * AT_BLK + lane] = hci_round_bf16(p0);
            P[h * AT_BLK + lane + 32] = hci_round_bf16(p1);
            __syncwarp(); /* every lane has read mrun[h] */
            if (lane == 0) {
                float al = expf(mo - mn);
                alpha[h] = al;
                lrun[h] = fmaf(lrun[h], al, ps);
                mrun[h] = mn;
            }
        }
        __syncthreads();
        for (int it = tid; it < hg * d; it += blockDim.x) {
            int h = it / d, x = it % d;
            float v = __fmul_rn(acc[it], alpha[h]);
            for (int e = 0; e < AT_BLK; e++) v = fmaf(P[h * AT_BLK + e], hci_f32_from_bf16(V[(size_t)e * ST + x]), v);
            acc[it] = v;
        }
        /* The next at_fetch_block's first barrier orders these reads before V / P are rewritten. */
    }
    __syncthreads();
    for (int it = tid; it < hg * d; it += blockDim.x) {
        int r = it / d, x = it % d, h = h0 + r;
        if (h >= a.H) continue;
        if (out.S == 1) {
            float lf = lrun[r] + expf(a.sink[h] - mrun[r]);
            a.o[((size_t)i * a.H + h) * d + x] = hci_bf16_from_f32(acc[it] / lf);
        } else {
            size_t row = ((size_t)s * gridDim.z + i) * a.H + h;
            out.pacc[row * d + x] = acc[it];
            if (x == 0) out.pm[row] = mrun[r], out.pl[row] = lrun[r];
        }
    }
}

/* ---------------------------------------------------------------- combine */

/* One CTA per (query, head): o = sum_s w_s acc_s / (sum_s w_s l_s + expf(sink - M)),
 * w_s = expf(m_s - M), M = max_s m_s over the splits that hold blocks of this row. */
__global__ void __launch_bounds__(AT_COMBINE_THREADS) at_combine(hci_cu_attn_args a, at_out out)
{
    __shared__ float w[AT_MAX_SPLIT];
    __shared__ float den;
    int i = blockIdx.x / a.H, h = blockIdx.x % a.H, n = a.n;
    int64_t t = a.pos0 + i, len = a.window + at_ncomp(a, t), nblk = (len + AT_BLK - 1) / AT_BLK;
    int ns = (int)((nblk + out.bps - 1) / out.bps);
    if (ns > out.S) ns = out.S;
    float M = -INFINITY;
    for (int s = 0; s < ns; s++) M = fmaxf(M, out.pm[((size_t)s * n + i) * a.H + h]);
    for (int s = threadIdx.x; s < ns; s += blockDim.x) {
        float m = out.pm[((size_t)s * n + i) * a.H + h];
        w[s] = M == -INFINITY ? 0.0f : expf(m - M);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        float l = 0.0f;
        for (int s = 0; s < ns; s++) l = fmaf(out.pl[((size_t)s * n + i) * a.H + h], w[s], l);
        den = M == -INFINITY ? INFINITY : l + expf(a.sink[h] - M);
    }
    __syncthreads();
    for (int x = threadIdx.x; x < a.d; x += blockDim.x) {
        float v = 0.0f;
        for (int s = 0; s < ns; s++) v = fmaf(out.pacc[(((size_t)s * n + i) * a.H + h) * a.d + x], w[s], v);
        a.o[((size_t)i * a.H + h) * a.d + x] = hci_bf16_from_f32(v / den);
    }
}

/* ---------------------------------------------------------------- host side */

/* Splits per row: only when (query, 32-head group) CTAs alone would leave SMs idle. */
int at_splits(int n, int H, int64_t max_row)
{
    int64_t units = (int64_t)n * ((H + AT_HG - 1) / AT_HG);
    int64_t nblk = (max_row + AT_BLK - 1) / AT_BLK;
    if (units <= 0 || units >= AT_TARGET_CTAS || nblk < 2 * AT_MIN_BLKS) return 1;
    int64_t s = (nblk + AT_MIN_BLKS - 1) / AT_MIN_BLKS, cap = (AT_TARGET_CTAS + units - 1) / units;
    if (s > cap) s = cap;
    if (s > AT_MAX_SPLIT) s = AT_MAX_SPLIT;
    return s < 1 ? 1 : (int)s;
}

/* Fast path: a fixed number of blocks per split for pieces of up to AT_FAST_SPLIT_N queries
 * (decode and batched decode: at most AT_FAST_MAX_SPLIT splits, of at least AT_MIN_BLKS blocks),
 * none for larger pieces, which fill the GPU with one CTA per (query, head group). */
int at_fast_splits(int n, int64_t max_row)
{
    int64_t nblk = (max_row + AT_BLK - 1) / AT_BLK;
    if (n > AT_FAST_SPLIT_N || nblk < 2 * AT_MIN_BLKS) return 1;
    int64_t bps = (nblk + AT_FAST_MAX_SPLIT - 1) / AT_FAST_MAX_SPLIT;
    if (bps < AT_MIN_BLKS) bps = AT_MIN_BLKS;
    return (int)((nblk + bps - 1) / bps);
}

template <int NT>
int at_launch_mma(cudaStream_t s, const hci_cu_attn_args &a, const at_out &out, dim3 grid)
{
    unsigned smem = at_plan_mma(NT * 32).total;
    if (smem > 48 * 1024 &&
        cudaFuncSetAttribute(at_mma_kernel<NT>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) != cudaSuccess)
        return HC_ERR_CUDA;
    at_mma_kernel<NT><<<grid, AT_THREADS, smem, s>>>(a, out);
    return HCI_CU_CHECK_LAUNCH() != 0 ? HC_ERR_CUDA : HC_OK;
}

} // namespace

/* The split count falls as n grows, so the bytes are the maximum over every piece size n' <= n
 * (the engine's last piece of a call can be smaller than the size it reserved for). */
size_t hci_cu_attend_scratch_bytes(int n, int H, int d, int64_t max_row, int path)
{
    size_t need = 256;
    const bool fast = path == HCI_AT_FAST || path == HCI_AT_PINGPONG; /* the same splits */
    for (int m = 1; m <= n; m++) {
        int S = fast ? at_fast_splits(m, max_row) : at_splits(m, H, max_row);
        if (fast ? m > AT_FAST_SPLIT_N : (int64_t)m * ((H + AT_HG - 1) / AT_HG) >= AT_TARGET_CTAS) break;
        if (S <= 1) continue;
        size_t b = at_part_bytes(S, m, H, d);
        if (b > need) need = b;
    }
    /* the fast paths' pre-pass rows behind the partials (FAST: ratio 0 and 128; PINGPONG: the
     * window of every ratio too; at most max_row rows); they fall back to the others where they
     * do not apply */
    if (fast) {
        need += hci_align256((size_t)max_row * d * 2);
        size_t other = hci_cu_attend_scratch_bytes(n, H, d, max_row, HCI_AT_MMA);
        if (other > need) need = other;
    }
    return need;
}

int hci_cu_attend(cudaStream_t s, const hci_cu_attn_args *a, void *scratch, int path)
{
    if (!a) return HC_ERR_NULL_ARG;
    if (a->n <= 0) return HC_OK;
    if (!a->q || !a->kv || !a->sink || !a->o) return HC_ERR_NULL_ARG;
    if (a->H < 1 || a->d < 8 || a->d % 8 || a->d > 1024 || a->window < 1 || a->pos0 < 0 ||
        (a->ratio != 0 && a->ratio != 4 && a->ratio != 128) || (a->ratio == 4 && (a->K < 1 || !a->sel)))
        return HC_ERR_INVALID_ARG;
    if (a->pos0 > 0 && !a->ring) return HC_ERR_NULL_ARG;
    int64_t ncomp_max = a->ratio == 4 ? a->K : (a->ratio ? (a->pos0 + a->n) / a->ratio : 0);
    /* no compressed entry exists before the first block closes: the table may be empty then */
    if (a->ratio && (a->pos0 + a->n) / a->ratio > 0 && !a->comp) return HC_ERR_NULL_ARG;
    int64_t max_row = a->window + ncomp_max;
    const bool fast = (path == HCI_AT_FAST || path == HCI_AT_PINGPONG) && at_fast_ok(*a);
    const bool pp = fast && path == HCI_AT_PINGPONG && scratch && at_pp_ok(*a);
    int S = fast ? at_fast_splits(a->n, max_row) : at_splits(a->n, a->H, max_row);
    if (S > 1 && !scratch) return HC_ERR_NULL_ARG;
    int64_t nblk = (max_row + AT_BLK - 1) / AT_BLK;
    at_out out;
    out.bps = (int)((nblk + S - 1) / S);
    out.S = (int)((nblk + out.bps - 1) / out.bps); /* splits that own at least one block */
    out.pm = out.pl = out.pacc = nullptr;
    if (out.S > 1) { /* out.S <= S: fits the scratch sized for S */
        size_t rows = (size_t)out.S * a->n * a->H;
        out.pm = (float *)scratch;
        out.pl = (float *)((uint8_t *)scratch + hci_align256(rows * 4));
        out.pacc = (float *)((uint8_t *)scratch + 2 * hci_align256(rows * 4));
    }
    int d = a->d, st = HC_OK;
    int mma_ok = path != HCI_AT_SIMPLE && (d == 64 || d == 128 || d == 256 || d == 512);
    if (fast) {
        size_t part = out.S > 1 ? at_part_bytes(out.S, a->n, a->H, a->d) : 0; /* the pre-pass rows behind */
        void *pre = scratch ? (uint8_t *)scratch + part : nullptr;
        st = pp ? at_pp_launch(s, *a, out, pre) : at_fast_launch(s, *a, out, pre);
    } else if (mma_ok) {
        dim3 grid(out.S, (a->H + AT_HG - 1) / AT_HG, a->n);
        switch (d) {
        case 64: st = at_launch_mma<2>(s, *a, out, grid); break;
        case 128: st = at_launch_mma<4>(s, *a, out, grid); break;
        case 256: st = at_launch_mma<8>(s, *a, out, grid); break;
        default: st = at_launch_mma<16>(s, *a, out, grid); break;
        }
    } else {
        int hg = AT_HG;
        while (hg > 1 && at_plan_simple(d, hg).total > AT_MAX_SMEM) hg >>= 1;
        unsigned smem = at_plan_simple(d, hg).total;
        if (smem > AT_MAX_SMEM) return HC_ERR_UNSUPPORTED;
        if (smem > 48 * 1024 &&
            cudaFuncSetAttribute(at_simple_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) != cudaSuccess)
            return HC_ERR_CUDA;
        dim3 grid(out.S, (a->H + hg - 1) / hg, a->n);
        at_simple_kernel<<<grid, AT_THREADS, smem, s>>>(*a, out, hg);
        st = HCI_CU_CHECK_LAUNCH() != 0 ? HC_ERR_CUDA : HC_OK;
    }
    if (st != HC_OK || out.S == 1) return st;
    at_combine<<<a->n * a->H, AT_COMBINE_THREADS, 0, s>>>(*a, out);
    return HCI_CU_CHECK_LAUNCH() != 0 ? HC_ERR_CUDA : HC_OK;
}
