/* attend_wgmma.cu - the fast attention (option attend_fast, set by HC_NUMERICS_FAST) for
 * head_dim 512 and groups of 64 heads on Hopper's wgmma: all 64 heads of a query in one CTA,
 * sharing each dequantised block of entries (the structure of FlashMLA's sparse kernels).
 *
 * CTA = (query, 64-head group, split of the row), three warpgroups:
 *   - a producer warpgroup fills one of two 64 KB stages with a block of 64 entries of the
 *     index row as bf16, 128-byte swizzled (rows = entries, eight 64-dim column tiles): for
 *     CSA (ratio 4, each query its own picks) it resolves, loads and dequantises them itself
 *     (e4m3 x ue8m0, rope copied; attend_rows.cuh); for SWA and HCA, whose queries all read the
 *     same entries, atw_dequant has made them bf16 rows once per piece and it copies them with
 *     cp.async;
 *   - two consumer warpgroups own the same 64 rows (heads) and one half of the 512 output
 *     columns each (64 x 256 fp32 accumulators). Per block, each computes S over its half of
 *     the dims (wgmma m64n64k16, Q and the block both K-major in shared memory), the two halves
 *     are swapped through shared memory and added (a + b == b + a: both hold the same S), both
 *     run the same online softmax (log2 domain, masked entries -inf), and each adds P.V for its
 *     columns (wgmma m64n256k16, P from registers, the block read MN-major as V).
 * Stage hand-off by named barriers (FULL: producer arrives, consumers wait; EMPTY: the reverse).
 *
 * Numerics (fast mode): fp32 tensor-core sums, p = exp2 of the scaled logit (ex2.approx),
 * rounded to bf16 for P.V, l from the unrounded p, the sink in the final denominator as in
 * attend.cu. Deterministic, and a query's output depends only on its own row and split. */
#include "attend_wgmma.cuh"

namespace hci_at {
namespace {

constexpr int THREADS = 384;         /* consumer warpgroups 0 and 1, producer warpgroup 2 */
constexpr int STAGE = 8 * TILE;      /* a block of 64 entries x 512 bf16 */
constexpr int OFF_KV = 8 * TILE;     /* Q first (64 heads x 512 bf16) */
constexpr int OFF_XS = OFF_KV + 2 * STAGE;
constexpr int OFF_VALID = OFF_XS + 2 * 64 * 64 * 4;
constexpr unsigned SMEM = OFF_VALID + 2 * AT_BLK + 1024; /* + alignment of the base to 1024 */
constexpr int REGS_C = 216, REGS_P = 72; /* per thread after setmaxnreg: consumers, producer */
static_assert(256 * REGS_C + 128 * REGS_P <= 65536 / THREADS / 8 * 8 * THREADS, "the register file holds both roles");
enum { BAR_FULL = 1, BAR_EMPTY = 3, BAR_EXCH = 5 }; /* + stage; 0 is __syncthreads */

/* Producer: block b of the split into stage b % 2. Lane (warp w, lane) takes entries
 * e = 8 (w + 4 h) + lane / 4 (h = 0, 1) and, for each 64-dim tile c, dims 64 c + 16 (lane % 4)
 * .. + 15, so that a store instruction covers 8 rows x 4 pieces: no bank conflicts. */
__device__ void produce(const hci_cu_attn_args &a, int i, const at_range &rg, uint8_t *sm, int wt)
{
    const int w = wt >> 5, lane = wt & 31, ps = lane & 3;
    const int nb = (int)(rg.b1 - rg.b0);
    for (int b = 0; b < nb; b++) {
        const int st = b & 1;
        if (b >= 2) hci_bar_sync(BAR_EMPTY + st, THREADS);
        uint8_t *kv = sm + OFF_KV + st * STAGE;
        const int64_t u0 = (rg.b0 + b) * AT_BLK;
#pragma unroll 1
        for (int h = 0; h < 2; h++) {
            const int e = 8 * (w + 4 * h) + (lane >> 2);
            at_desc d = {nullptr, nullptr, 0, 0};
            if (u0 + e < rg.len) d = at_resolve(a, i, rg.t, u0 + e, rg.ncomp);
            if (ps == 0) sm[OFF_VALID + st * AT_BLK + e] = d.kind != 0;
#pragma unroll 1
            for (int c0 = 0; c0 < 8; c0 += 4) { /* two rounds of 4 tiles: the loads of a round in flight together */
                uint4 r[4][2];
                int sb[4];
#pragma unroll
                for (int k = 0; k < 4; k++) {
                    const int c = c0 + k, p = 4 * c + ps; /* dims 16 p .. 16 p + 15 */
                    r[k][0] = r[k][1] = make_uint4(0, 0, 0, 0);
                    sb[k] = 0;
                    if (d.kind == 1) {
                        r[k][0] = __ldg((const uint4 *)(d.data + 32 * p));
                        r[k][1] = __ldg((const uint4 *)(d.data + 32 * p + 16));
                    } else if (d.kind >= 2) {
                        if (c < 7) {
                            r[k][0] = __ldg((const uint4 *)(d.data + 16 * p));
                            sb[k] = d.scales[c];
                        } else {
                            r[k][0] = __ldg((const uint4 *)(d.data + QD + 32 * ps));
                            r[k][1] = __ldg((const uint4 *)(d.data + QD + 32 * ps + 16));
                        }
                    }
                }
#pragma unroll
                for (int k = 0; k < 4; k++) {
                    const int c = c0 + k;
                    uint4 lo = r[k][0], hi = r[k][1];
                    if (d.kind >= 2 && c < 7) dequant16(r[k][0], sb[k], lo, hi);
                    *(uint4 *)(kv + sw_off(e, 8 * c + 2 * ps)) = lo;
                    *(uint4 *)(kv + sw_off(e, 8 * c + 2 * ps + 1)) = hi;
                }
            }
        }
        hci_async_fence(); /* the generic-proxy stores, before the consumers' wgmma reads them */
        hci_bar_arrive(BAR_FULL + st, THREADS);
    }
}

/* Producer over pre-dequantised rows: block b's 64 rows copied into stage b % 2 by cp.async
 * (lane mapping as in produce), signalled one block late, once its copies have landed, so that
 * the next block's copies are in flight meanwhile. Padding rows are zeros. */
__device__ void produce_pre(const hci_cu_attn_args &a, const at_pre &pr, const at_range &rg, uint8_t *sm, int wt)
{
    const int w = wt >> 5, lane = wt & 31, ps = lane & 3;
    const int nb = (int)(rg.b1 - rg.b0);
    const uint32_t sbase = (uint32_t)__cvta_generic_to_shared(sm);
    for (int b = 0; b < nb; b++) {
        const int st = b & 1;
        if (b >= 2) hci_bar_sync(BAR_EMPTY + st, THREADS);
        const int64_t u0 = (rg.b0 + b) * AT_BLK;
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int e = 8 * (w + 4 * h) + (lane >> 2);
            const uint16_t *row = u0 + e < rg.len ? pre_row(a, pr, rg.t, u0 + e, rg.ncomp) : nullptr;
            if (ps == 0) sm[OFF_VALID + st * AT_BLK + e] = row != nullptr;
#pragma unroll
            for (int k = 0; k < 16; k++) { /* tile k / 2, pieces 2 ps and 2 ps + 1 */
                const int piece = 8 * (k >> 1) + 2 * ps + (k & 1);
                const uint32_t off = OFF_KV + st * STAGE + sw_off(e, piece);
                if (row)
                    cp_async16(sbase + off, row + 8 * piece);
                else
                    *(uint4 *)(sm + off) = make_uint4(0, 0, 0, 0);
            }
        }
        cp_commit();
        if (b >= 1) {
            cp_wait<1>(); /* block b - 1's copies (this thread's) have landed */
            hci_async_fence();
            hci_bar_arrive(BAR_FULL + (st ^ 1), THREADS);
        }
    }
    cp_wait<0>();
    hci_async_fence();
    hci_bar_arrive(BAR_FULL + ((nb - 1) & 1), THREADS);
}

/* Rows of the pre-pass: one thread per 16-byte piece of a row, the ring (ring != 0: positions
 * p0 + r, slot p % window) or the compressed entries (entries p0 + r). */
__global__ void __launch_bounds__(256) atw_dequant(hci_cu_attn_args a, int ring, int64_t p0, int64_t rows, uint16_t *out)
{
    const int64_t it = (int64_t)blockIdx.x * 256 + threadIdx.x, r = it / (D / 8);
    const int pc = (int)(it % (D / 8));
    if (r >= rows) return;
    const at_desc e = ring ? at_entry(a.win_l, a.ring, (p0 + r) % a.window, 2) : at_entry(a.comp_l, a.comp, p0 + r, 3);
    uint4 v;
    if (e.kind == 1) {
        v = __ldg((const uint4 *)e.data + pc);
    } else if (pc < QD / 8) {
        const uint2 c = __ldg((const uint2 *)(e.data + 8 * pc));
        uint4 lo, hi;
        dequant16(make_uint4(c.x, c.y, 0, 0), e.scales[pc / 8], lo, hi);
        v = lo;
    } else {
        v = __ldg((const uint4 *)(e.data + QD) + (pc - QD / 8));
    }
    *((uint4 *)(out + (size_t)r * D) + pc) = v;
}

/* Consumer warpgroup w: rows (heads) 16 wi + g and + 8 of its warp, columns 256 w + 8 j + 2 t, +1. */
__device__ void consume(const hci_cu_attn_args &a, const at_out &out, int i, int h0, int s, const at_range &rg,
                        uint8_t *sm, int w, int wt)
{
    const int wi = wt >> 5, lane = wt & 31, g = lane >> 2, t = lane & 3;
    const int nb = (int)(rg.b1 - rg.b0);
    const float c2 = a.scale * LOG2E;
    const uint32_t sbase = (uint32_t)__cvta_generic_to_shared(sm);
    float o[128];
#pragma unroll
    for (int x = 0; x < 128; x++) o[x] = 0.0f;
    float m2[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    float4 *xs_mine = (float4 *)(sm + OFF_XS + w * 16384), *xs_other = (float4 *)(sm + OFF_XS + (1 - w) * 16384);

    for (int b = 0; b < nb; b++) {
        const int st = b & 1;
        hci_bar_sync(BAR_FULL + st, THREADS);
        const uint32_t kvs = sbase + OFF_KV + st * STAGE;
        /* S over this warpgroup's dims 256 w .. 256 w + 255: tiles 4w .. 4w+3, k16 steps of 32 bytes */
        float sc[32];
        {
            const uint64_t dq = desc_k(sbase + 4 * w * TILE), dk = desc_k(kvs + 4 * w * TILE);
#pragma unroll
            for (int x = 0; x < 32; x++) hci_reg_fence(sc[x]);
            hci_wg_fence();
#pragma unroll
            for (int kk = 0; kk < 16; kk++) {
                const uint64_t off = (uint64_t)(((kk >> 2) * TILE + (kk & 3) * 32) >> 4);
                mma_qk(sc, dq + off, dk + off, kk);
            }
            hci_wg_commit();
            hci_wg_wait0();
#pragma unroll
            for (int x = 0; x < 32; x++) hci_reg_fence(sc[x]);
        }
        /* swap halves: fragment x of thread wt at float4 (x / 4) * 128 + wt */
#pragma unroll
        for (int x = 0; x < 8; x++) xs_mine[x * 128 + wt] = make_float4(sc[4 * x], sc[4 * x + 1], sc[4 * x + 2], sc[4 * x + 3]);
        hci_bar_sync(BAR_EXCH, 256);
#pragma unroll
        for (int x = 0; x < 8; x++) {
            const float4 v = xs_other[x * 128 + wt];
            sc[4 * x] += v.x, sc[4 * x + 1] += v.y, sc[4 * x + 2] += v.z, sc[4 * x + 3] += v.w;
        }
        /* online softmax in the log2 domain; sc[4j + 2r + k]: row r (g, g + 8), entry 8 j + 2 t + k */
        const uint8_t *valid = sm + OFF_VALID + st * AT_BLK;
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const bool v0 = valid[8 * j + 2 * t], v1 = valid[8 * j + 2 * t + 1];
#pragma unroll
            for (int r = 0; r < 2; r++) {
                sc[4 * j + 2 * r] = v0 ? sc[4 * j + 2 * r] * c2 : -INFINITY;
                sc[4 * j + 2 * r + 1] = v1 ? sc[4 * j + 2 * r + 1] * c2 : -INFINITY;
                mx[r] = fmaxf(mx[r], fmaxf(sc[4 * j + 2 * r], sc[4 * j + 2 * r + 1]));
            }
        }
        float alpha[2], base[2];
#pragma unroll
        for (int r = 0; r < 2; r++) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
            const float mn = fmaxf(m2[r], mx[r]);
            base[r] = mn == -INFINITY ? 0.0f : mn; /* a row with nothing visible yet: p = 0 */
            alpha[r] = ex2(m2[r] - base[r]);
            m2[r] = mn;
        }
        uint32_t pf[4][4];
        float ps[2] = {0.0f, 0.0f};
        block_probs(sc, base, ps, pf);
#pragma unroll
        for (int r = 0; r < 2; r++) l[r] = fmaf(l[r], alpha[r], ps[r]);
#pragma unroll
        for (int x = 0; x < 128; x++) o[x] *= alpha[(x >> 1) & 1];
        /* O += P.V over the block's 64 entries (4 k16 steps of 16 rows = 2048 bytes) */
        {
            const uint64_t dv = desc_mn(kvs + 4 * w * TILE);
#pragma unroll
            for (int x = 0; x < 128; x++) hci_reg_fence(o[x]);
            hci_wg_fence();
#pragma unroll
            for (int kk = 0; kk < 4; kk++) mma_pv(o, pf[kk], dv + (uint64_t)((kk * 2048) >> 4));
            hci_wg_commit();
            hci_wg_wait0();
#pragma unroll
            for (int x = 0; x < 128; x++) hci_reg_fence(o[x]);
        }
        if (b + 2 < nb) hci_bar_arrive(BAR_EMPTY + st, THREADS);
    }

#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int h = h0 + 16 * wi + g + 8 * r;
        if (out.S == 1) {
            const float inv = 1.0f / (l[r] + ex2(a.sink[h] * LOG2E - m2[r]));
            uint16_t *dst = a.o + ((size_t)i * a.H + h) * D + 256 * w + 2 * t;
#pragma unroll
            for (int j = 0; j < 32; j++) *(uint32_t *)(dst + 8 * j) = pack_bf16(o[4 * j + 2 * r] * inv, o[4 * j + 2 * r + 1] * inv);
        } else {
            const size_t row = ((size_t)s * gridDim.z + i) * a.H + h;
            float *dst = out.pacc + row * D + 256 * w + 2 * t;
#pragma unroll
            for (int j = 0; j < 32; j++) *(float2 *)(dst + 8 * j) = make_float2(o[4 * j + 2 * r], o[4 * j + 2 * r + 1]);
            if (w == 0 && t == 0) out.pm[row] = m2[r] * (1.0f / LOG2E), out.pl[row] = l[r]; /* natural log units */
        }
    }
}

template <bool PRE>
__global__ void __launch_bounds__(THREADS, 1) atw_kernel(hci_cu_attn_args a, at_out out, at_pre pr)
{
    extern __shared__ __align__(16) uint8_t sm_raw[];
    uint8_t *sm = (uint8_t *)(((uintptr_t)sm_raw + 1023) & ~(uintptr_t)1023);
    const int tid = threadIdx.x, i = blockIdx.z, h0 = blockIdx.y * HG, s = blockIdx.x;
    const at_range rg = at_split_range(a, i, s, out.bps);
    if (rg.b0 >= rg.b1) return; /* uniform over the CTA */
    const uint16_t *q = a.q + ((size_t)i * a.H + h0) * D;
    for (int it = tid; it < HG * (D / 8); it += THREADS) {
        const int r = it / (D / 8), c = it % (D / 8);
        *(uint4 *)(sm + sw_off(r, c)) = __ldg((const uint4 *)(q + (size_t)r * D) + c);
    }
    hci_async_fence();
    __syncthreads();
    /* 384 x 168 registers, moved to the consumers: 256 x REGS_C + 128 x REGS_P must not exceed
     * that, or the consumers' setmaxnreg.inc waits forever */
    if (tid >= 256) {
        hci_wg_regs_free<REGS_P>();
        if (PRE)
            produce_pre(a, pr, rg, sm, tid - 256);
        else
            produce(a, i, rg, sm, tid - 256);
    } else {
        hci_wg_regs_alloc<REGS_C>();
        consume(a, out, i, h0, s, rg, sm, tid >> 7, tid & 127);
    }
}

} // namespace

bool at_fast_ok(const hci_cu_attn_args &a)
{
    if (a.d != D || a.H % HG || !hci_aligned16(a.q) || !hci_aligned16(a.kv) || !hci_aligned16(a.o)) return false;
    const hci_entry_layout *ls[2] = {&a.win_l, &a.comp_l};
    for (int k = 0; k < (a.ratio ? 2 : 1); k++) {
        const hci_entry_layout *l = ls[k];
        bool bf16 = l->fmt == HCI_FMT_BF16 && l->data_bytes == 2 * D;
        bool fp8 = l->fmt == HCI_FMT_FP8 && l->quant_dim == QD && l->qblock == 64 && l->data_bytes == QD + 2 * (D - QD) &&
                   l->scale_bytes >= QD / 64;
        if (!bf16 && !fp8) return false;
    }
    return hci_cu_device_is_sm90();
}

int at_fast_prepass(cudaStream_t s, const hci_cu_attn_args &a, void *pre, at_pre *pr)
{
    if (!pre) return HC_ERR_NULL_ARG;
    pr->wbase = a.pos0 > a.window ? a.pos0 - a.window : 0;
    pr->win = (const uint16_t *)pre;
    pr->comp = a.ratio == 128 ? pr->win + (size_t)a.window * D : nullptr;
    int64_t nwin = a.pos0 - pr->wbase, ncomp = a.ratio == 128 ? (a.pos0 + a.n) / a.ratio : 0;
    if (nwin > 0) {
        atw_dequant<<<(unsigned)((nwin * (D / 8) + 255) / 256), 256, 0, s>>>(a, 1, pr->wbase, nwin, (uint16_t *)pr->win);
        if (HCI_CU_CHECK_LAUNCH() != HC_OK) return HC_ERR_CUDA;
    }
    if (ncomp > 0) {
        atw_dequant<<<(unsigned)((ncomp * (D / 8) + 255) / 256), 256, 0, s>>>(a, 0, 0, ncomp, (uint16_t *)pr->comp);
        if (HCI_CU_CHECK_LAUNCH() != HC_OK) return HC_ERR_CUDA;
    }
    return HC_OK;
}

int at_fast_launch(cudaStream_t s, const hci_cu_attn_args &a, const at_out &out, void *pre)
{
    at_pre pr = {nullptr, nullptr, 0};
    if (a.ratio != 4) { /* every query of the piece reads the same entries: dequantise them once */
        int st = at_fast_prepass(s, a, pre, &pr);
        if (st != HC_OK) return st;
    }
    auto kern = a.ratio != 4 ? atw_kernel<true> : atw_kernel<false>;
    if (cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)SMEM) != cudaSuccess)
        return HC_ERR_CUDA;
    kern<<<dim3(out.S, a.H / HG, a.n), THREADS, SMEM, s>>>(a, out, pr);
    return HCI_CU_CHECK_LAUNCH();
}

} // namespace hci_at
