/* qkv.cu - the element-wise parts of the query, window-KV, indexer-query and output paths.
 * Each kernel reproduces the CPU backend's arithmetic exactly (same roundings, same order where
 * order matters, no fused multiply-adds except where the reference has them). */
#include "../common.cuh"
#include "config.h"
#include "qkv.h"

namespace {
/* Token t's position (qkv.h): pos0 + t for the piece of one context; at[t] for the rows of several
 * contexts in one launch. Kernel parameters (__grid_constant__: read in place, not copied). */
struct PosRun {
    int64_t pos0;
    __device__ __forceinline__ int64_t operator()(int64_t t) const { return pos0 + t; }
};
struct PosRows {
    int64_t at[HCI_CU_ROWS_MAX];
    __device__ __forceinline__ int64_t operator()(int64_t t) const { return at[t]; }
};

/* The positions of a launch of n tokens, or false when pos holds more than the table takes. */
bool pos_rows(PosRows &p, const int64_t *pos, int n)
{
    if (n > HCI_CU_ROWS_MAX) return false;
    for (int t = 0; t < n; t++) p.at[t] = pos[t];
    return true;
}
} // namespace

/* The weighted RMSNorm of a row: its scale (the whole CTA of QKV_THREADS calls it; red:
 * QKV_THREADS doubles), then element i as bf16. Shared by the separate and the fused kernels. */
__device__ __forceinline__ float rms_scale(const uint16_t *r, int dim, float eps, double *red)
{
    double ss = 0.0;
    for (int i = threadIdx.x; i < dim; i += QKV_THREADS) {
        float a = hci_f32_from_bf16(r[i]);
        ss += (double)__fmul_rn(a, a);
    }
    ss = hci_dev_block_sum(ss, red);
    float var = __fdiv_rn((float)ss, (float)dim);
    return __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(var, eps)));
}

__device__ __forceinline__ uint16_t rms_apply(const uint16_t *r, const float *w, int i, float rs)
{
    return hci_bf16_from_f32(__fmul_rn(w[i], __fmul_rn(hci_f32_from_bf16(r[i]), rs)));
}

__global__ void rmsnorm_rows_kernel(uint16_t *v, int dim, const float *w, float eps)
{
    __shared__ double red[QKV_THREADS];
    uint16_t *r = v + (size_t)blockIdx.x * dim;
    const float rs = rms_scale(r, dim, eps, red);
    for (int i = threadIdx.x; i < dim; i += QKV_THREADS) r[i] = rms_apply(r, w, i, rs);
}

int hci_cu_rmsnorm_rows(cudaStream_t s, uint16_t *v, int n, int dim, const float *w, float eps)
{
    if (n <= 0) return HC_OK;
    rmsnorm_rows_kernel<<<n, QKV_THREADS, 0, s>>>(v, dim, w, eps);
    return HCI_CU_CHECK_LAUNCH();
}

/* The reference's in-place bf16 q *= rsqrt(mean(q^2) + eps) per (token, head), then RoPE.
 * One warp per (token, head) row of d = 2 * 32 * QH_PAIRS values (RMSNorm, then RoPE on the last
 * 64 = one pair per lane): lane l holds the pairs l + 32k, so loads are coalesced 4-byte words
 * and the RoPE tail, pairs d/2 - 32 .. d/2 - 1, is one pair per lane in the last k. The sum of
 * squares is exact in double, so the warp's order gives the CPU's value (hci_dev_block_sum). */
template <int QH_PAIRS, class P>
__device__ __forceinline__ void q_heads_warp_row(uint16_t *q, int64_t r, int H, const float *freq, const P &pos,
                                                 float eps)
{
    const int lane = threadIdx.x & 31;
    uint32_t *row = (uint32_t *)(q + (size_t)r * (2 * 32 * QH_PAIRS));
    float a[QH_PAIRS], b[QH_PAIRS];
    double sum = 0.0;
#pragma unroll
    for (int k = 0; k < QH_PAIRS; k++) {
        uint32_t w = row[lane + 32 * k];
        a[k] = hci_f32_from_bf16((uint16_t)w), b[k] = hci_f32_from_bf16((uint16_t)(w >> 16));
        sum += (double)hci_round_bf16(__fmul_rn(a[k], a[k]));
        sum += (double)hci_round_bf16(__fmul_rn(b[k], b[k]));
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    const float d = 2.0f * 32 * QH_PAIRS;
    float m = hci_round_bf16(__fdiv_rn((float)sum, d));
    float e = hci_round_bf16(__fadd_rn(m, eps));
    float rs = hci_round_bf16(__fdiv_rn(1.0f, __fsqrt_rn(e)));
#pragma unroll
    for (int k = 0; k < QH_PAIRS; k++) {
        a[k] = hci_round_bf16(__fmul_rn(a[k], rs)), b[k] = hci_round_bf16(__fmul_rn(b[k], rs));
        if (k == QH_PAIRS - 1) hci_dev_rope_pair(a[k], b[k], pos(r / H), freq[lane], 0);
        row[lane + 32 * k] = (uint32_t)hci_bf16_from_f32(a[k]) | (uint32_t)hci_bf16_from_f32(b[k]) << 16;
    }
}

template <int QH_PAIRS, class P>
__global__ void q_heads_kernel(uint16_t *q, int rows, int H, const float *freq, const __grid_constant__ P pos, float eps)
{
    const int64_t r = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (r >= rows) return;
    q_heads_warp_row<QH_PAIRS>(q, r, H, freq, pos, eps);
}

/* The general form: one CTA per (token, head) row, any d and rope_dim (v: d floats, red:
 * QKV_THREADS doubles of shared memory). */
template <class P>
__device__ __forceinline__ void q_heads_any_row(uint16_t *q, int b, int H, int d, int rope_dim, const float *freq,
                                                const P &pos, float eps, float *v, double *red)
{
    int t = b / H;
    uint16_t *row = q + (size_t)b * d;
    double sum = 0.0;
    for (int i = threadIdx.x; i < d; i += QKV_THREADS) {
        v[i] = hci_f32_from_bf16(row[i]);
        sum += (double)hci_round_bf16(__fmul_rn(v[i], v[i]));
    }
    sum = hci_dev_block_sum(sum, red);
    float m = hci_round_bf16(__fdiv_rn((float)sum, (float)d));
    float e = hci_round_bf16(__fadd_rn(m, eps));
    float r = hci_round_bf16(__fdiv_rn(1.0f, __fsqrt_rn(e)));
    for (int i = threadIdx.x; i < d; i += QKV_THREADS) v[i] = hci_round_bf16(__fmul_rn(v[i], r));
    __syncthreads();
    hci_dev_rope_tail(v, d, rope_dim, freq, pos(t), 0);
    __syncthreads();
    for (int i = threadIdx.x; i < d; i += QKV_THREADS) row[i] = hci_bf16_from_f32(v[i]);
}

template <class P>
__global__ void q_heads_any_kernel(uint16_t *q, int H, int d, int rope_dim, const float *freq,
                                   const __grid_constant__ P pos, float eps)
{
    extern __shared__ float v[];
    __shared__ double red[QKV_THREADS];
    q_heads_any_row(q, blockIdx.x, H, d, rope_dim, freq, pos, eps, v, red);
}

template <class P>
static int q_heads(cudaStream_t s, uint16_t *q, int n, int H, int d, int rope_dim, const float *freq, const P &pos,
                   float eps)
{
    if (d == 512 && rope_dim == 64) { /* V4's heads: a warp per row */
        int rows = n * H, per = QKV_THREADS / 32;
        q_heads_kernel<8, P><<<(rows + per - 1) / per, QKV_THREADS, 0, s>>>(q, rows, H, freq, pos, eps);
    } else {
        q_heads_any_kernel<P><<<n * H, QKV_THREADS, (size_t)d * sizeof(float), s>>>(q, H, d, rope_dim, freq, pos, eps);
    }
    return HCI_CU_CHECK_LAUNCH();
}

int hci_cu_q_heads(cudaStream_t s, uint16_t *q, int n, int H, int d, int rope_dim, const float *freq,
                   int64_t pos0, const int64_t *pos, float eps)
{
    if (n <= 0) return HC_OK;
    if (!pos) return q_heads(s, q, n, H, d, rope_dim, freq, PosRun{pos0}, eps);
    PosRows p = {};
    if (!pos_rows(p, pos, n)) return HC_ERR_INVALID_ARG;
    return q_heads(s, q, n, H, d, rope_dim, freq, p, eps);
}

/* The window-KV row from its values v (d floats in shared memory, after a barrier): RoPE, then
 * the FP8 simulation of the nope dims, into row. */
__device__ __forceinline__ void kv_row_finish(float *v, uint16_t *row, int d, int rope_dim, const float *freq,
                                              int64_t p)
{
    hci_dev_rope_tail(v, d, rope_dim, freq, p, 0);
    __syncthreads();
    hci_dev_quant_sim(v, d - rope_dim, 0);
    __syncthreads();
    for (int i = threadIdx.x; i < d; i += QKV_THREADS) row[i] = hci_bf16_from_f32(v[i]);
}

/* One CTA per token: RoPE, then the FP8 simulation of the nope dims. */
template <class P>
__global__ void kv_rows_kernel(uint16_t *kv, int d, int rope_dim, const float *freq, const __grid_constant__ P pos)
{
    extern __shared__ float v[];
    uint16_t *row = kv + (size_t)blockIdx.x * d;
    for (int i = threadIdx.x; i < d; i += QKV_THREADS) v[i] = hci_f32_from_bf16(row[i]);
    __syncthreads();
    kv_row_finish(v, row, d, rope_dim, freq, pos(blockIdx.x));
}

int hci_cu_kv_rows(cudaStream_t s, uint16_t *kv, int n, int d, int rope_dim, const float *freq, int64_t pos0,
                   const int64_t *pos)
{
    if (n <= 0) return HC_OK;
    if (!pos) {
        kv_rows_kernel<PosRun><<<n, QKV_THREADS, (size_t)d * sizeof(float), s>>>(kv, d, rope_dim, freq, PosRun{pos0});
    } else {
        PosRows p = {};
        if (!pos_rows(p, pos, n)) return HC_ERR_INVALID_ARG;
        kv_rows_kernel<PosRows><<<n, QKV_THREADS, (size_t)d * sizeof(float), s>>>(kv, d, rope_dim, freq, p);
    }
    return HCI_CU_CHECK_LAUNCH();
}

/* One CTA per (token, indexer head) b: RoPE, Hadamard, FP4; head 0's CTA also rounds the token's
 * head weights: w = bf16(bf16(W_w . x) * 2^-6.5-ish constant), as two bf16 ops. v: ID floats. */
template <class P>
__device__ __forceinline__ void index_q_row(uint16_t *qi, int b, int IH, int ID, int rope_dim, const float *freq,
                                            const P &pos, float hscale, const double *wd, float wscale, uint16_t *w,
                                            float *v)
{
    int t = b / IH, h = b % IH;
    uint16_t *row = qi + (size_t)b * ID;
    for (int i = threadIdx.x; i < ID; i += QKV_THREADS) v[i] = hci_f32_from_bf16(row[i]);
    __syncthreads();
    hci_dev_rope_tail(v, ID, rope_dim, freq, pos(t), 0);
    __syncthreads();
    hci_dev_hadamard(v, ID, hscale);
    hci_dev_quant_sim(v, ID, 1);
    __syncthreads();
    for (int i = threadIdx.x; i < ID; i += QKV_THREADS) row[i] = hci_bf16_from_f32(v[i]);
    if (h == 0)
        for (int k = threadIdx.x; k < IH; k += QKV_THREADS) {
            float wb = hci_round_bf16((float)wd[(size_t)t * IH + k]);
            w[(size_t)t * IH + k] = hci_bf16_from_f32(__fmul_rn(wb, wscale));
        }
}

template <class P>
__global__ void index_q_kernel(uint16_t *qi, int IH, int ID, int rope_dim, const float *freq,
                               const __grid_constant__ P pos, float hscale, const double *wd, float wscale, uint16_t *w)
{
    extern __shared__ float v[];
    index_q_row(qi, blockIdx.x, IH, ID, rope_dim, freq, pos, hscale, wd, wscale, w, v);
}

/* The indexer queries' Hadamard scale, fl32(1/sqrt(ID)) (spec 4, step 3). */
static float index_hscale(int ID) { return (float)(1.0 / sqrt((double)ID)); }

int hci_cu_index_q_heads(cudaStream_t s, uint16_t *qi, int n, int IH, int ID, int rope_dim, const float *freq,
                         int64_t pos0, const int64_t *pos, const double *wd, float wscale, uint16_t *w)
{
    if (n <= 0) return HC_OK;
    float hscale = index_hscale(ID);
    size_t sm = (size_t)ID * sizeof(float);
    if (!pos) {
        index_q_kernel<PosRun><<<n * IH, QKV_THREADS, sm, s>>>(qi, IH, ID, rope_dim, freq, PosRun{pos0}, hscale, wd,
                                                               wscale, w);
    } else {
        PosRows p = {};
        if (!pos_rows(p, pos, n)) return HC_ERR_INVALID_ARG;
        index_q_kernel<PosRows><<<n * IH, QKV_THREADS, sm, s>>>(qi, IH, ID, rope_dim, freq, p, hscale, wd, wscale, w);
    }
    return HCI_CU_CHECK_LAUNCH();
}

template <class P>
__global__ void inverse_rope_kernel(uint16_t *o, int H, int d, int rope_dim, const float *freq,
                                    const __grid_constant__ P pos)
{
    int t = blockIdx.x / H;
    uint16_t *tail = o + (size_t)blockIdx.x * d + (d - rope_dim);
    for (int p = threadIdx.x; p < rope_dim / 2; p += blockDim.x) {
        float a = hci_f32_from_bf16(tail[2 * p]), b = hci_f32_from_bf16(tail[2 * p + 1]);
        hci_dev_rope_pair(a, b, pos(t), freq[p], 1);
        tail[2 * p] = hci_bf16_from_f32(a);
        tail[2 * p + 1] = hci_bf16_from_f32(b);
    }
}

int hci_cu_inverse_rope(cudaStream_t s, uint16_t *o, int n, int H, int d, int rope_dim, const float *freq,
                        int64_t pos0, const int64_t *pos)
{
    if (n <= 0) return HC_OK;
    if (!pos) {
        inverse_rope_kernel<PosRun><<<n * H, QKV_ROPE_THREADS, 0, s>>>(o, H, d, rope_dim, freq, PosRun{pos0});
    } else {
        PosRows p = {};
        if (!pos_rows(p, pos, n)) return HC_ERR_INVALID_ARG;
        inverse_rope_kernel<PosRows><<<n * H, QKV_ROPE_THREADS, 0, s>>>(o, H, d, rope_dim, freq, p);
    }
    return HCI_CU_CHECK_LAUNCH();
}

/* ---- fused launches (option decode_fused): kernels that run back to back on the same rows as
 * one launch. Every value goes through the same device functions as in the separate kernels,
 * in the same order, so the bits are theirs; only the launches and the bf16 round trip through
 * global memory between them go (a row written as bf16 and read back gives the same float as
 * rounding it in registers). ---- */

/* CTA b < n: c row b, RMSNorm (rms_scale, rms_apply), then act_quant of the normed bf16 values
 * (hci_dev_act_quant4: warp w the 128-blocks w, w + 4, ...); n <= b < np: a padding row of the
 * FP8 operand as act_quant writes it (zero codes, scale 1); b >= np: kv row b - np, RMSNorm,
 * then kv_row_finish (RoPE, FP8 simulation). */
template <class P>
__global__ void ckv_rows_kernel(uint16_t *c, int n, int C, const float *cw, uint8_t *cq, float *cs, int np,
                                uint16_t *kv, int d, int rope_dim, const float *kw, const float *freq,
                                const __grid_constant__ P pos, float eps)
{
    extern __shared__ float v[];
    __shared__ double red[QKV_THREADS];
    const int b = blockIdx.x, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (b < n) {
        uint16_t *r = c + (size_t)b * C;
        const float rs = rms_scale(r, C, eps, red);
        for (int kb = warp; kb < C / 128; kb += QKV_THREADS / 32) {
            const int k0 = kb * 128 + 4 * lane;
            float f[4];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const uint16_t h = rms_apply(r, cw, k0 + i, rs);
                r[k0 + i] = h;
                f[i] = hci_f32_from_bf16(h);
            }
            float sc;
            const uint32_t packed = hci_dev_act_quant4(f, &sc);
            *(uint32_t *)(cq + (size_t)b * C + k0) = packed;
            if (lane == 0) cs[(size_t)kb * np + b] = sc;
        }
    } else if (b < np) {
        uint32_t *qo = (uint32_t *)(cq + (size_t)b * C);
        for (int i = threadIdx.x; i < C / 4; i += QKV_THREADS) qo[i] = 0;
        for (int kb = threadIdx.x; kb < C / 128; kb += QKV_THREADS) cs[(size_t)kb * np + b] = 1.0f;
    } else {
        const int t = b - np;
        uint16_t *row = kv + (size_t)t * d;
        const float rs = rms_scale(row, d, eps, red);
        for (int i = threadIdx.x; i < d; i += QKV_THREADS) v[i] = hci_f32_from_bf16(rms_apply(row, kw, i, rs));
        __syncthreads();
        kv_row_finish(v, row, d, rope_dim, freq, pos(t));
    }
}

template <class P>
static int ckv_rows(cudaStream_t s, uint16_t *c, int n, int C, const float *cw, uint8_t *cq, float *cs, int np,
                    uint16_t *kv, int d, int rope_dim, const float *kw, const float *freq, const P &pos, float eps)
{
    ckv_rows_kernel<P><<<np + n, QKV_THREADS, (size_t)d * sizeof(float), s>>>(c, n, C, cw, cq, cs, np, kv, d, rope_dim,
                                                                           kw, freq, pos, eps);
    return HCI_CU_CHECK_LAUNCH();
}

int hci_cu_ckv_rows(cudaStream_t s, uint16_t *c, int n, int C, const float *cw, uint8_t *cq, float *cs, int np,
                    uint16_t *kv, int d, int rope_dim, const float *kw, const float *freq, int64_t pos0,
                    const int64_t *pos, float eps)
{
    if (n <= 0) return HC_OK;
    if (C % 128 || np < n || !hci_aligned16(cq)) return HC_ERR_INVALID_ARG;
    if (!pos) return ckv_rows(s, c, n, C, cw, cq, cs, np, kv, d, rope_dim, kw, freq, PosRun{pos0}, eps);
    PosRows p = {};
    if (!pos_rows(p, pos, n)) return HC_ERR_INVALID_ARG;
    return ckv_rows(s, c, n, C, cw, cq, cs, np, kv, d, rope_dim, kw, freq, p, eps);
}

/* CTAs b < qb: the query heads, as hci_cu_q_heads (QH 8: the warp-per-row form, 4 rows per CTA;
 * QH 0: the general form, a row per CTA); b >= qb: indexer head b - qb, as hci_cu_index_q_heads. */
template <int QH, class P>
__global__ void q_index_heads_kernel(uint16_t *q, int rows, int H, int d, int qb, uint16_t *qi, int IH, int ID,
                                     int rope_dim, const float *freq, const __grid_constant__ P pos, float eps,
                                     float hscale, const double *wd, float wscale, uint16_t *w)
{
    extern __shared__ float v[];
    __shared__ double red[QKV_THREADS];
    const int b = blockIdx.x;
    if (b >= qb) {
        index_q_row(qi, b - qb, IH, ID, rope_dim, freq, pos, hscale, wd, wscale, w, v);
    } else if constexpr (QH > 0) {
        const int64_t r = (int64_t)b * (QKV_THREADS / 32) + threadIdx.x / 32;
        if (r < rows) q_heads_warp_row<QH>(q, r, H, freq, pos, eps);
    } else {
        q_heads_any_row(q, b, H, d, rope_dim, freq, pos, eps, v, red);
    }
}

template <class P>
static int q_index_heads(cudaStream_t s, uint16_t *q, int n, int H, int d, int rope_dim, const float *freq, const P &pos,
                         float eps, uint16_t *qi, int IH, int ID, const double *wd, float wscale, uint16_t *w)
{
    const float hscale = index_hscale(ID);
    const int rows = n * H, per = QKV_THREADS / 32;
    if (d == 512 && rope_dim == 64) { /* V4's heads: a warp per row, as q_heads */
        const int qb = (rows + per - 1) / per;
        q_index_heads_kernel<8, P><<<qb + n * IH, QKV_THREADS, (size_t)ID * sizeof(float), s>>>(
            q, rows, H, d, qb, qi, IH, ID, rope_dim, freq, pos, eps, hscale, wd, wscale, w);
    } else {
        const size_t sm = (size_t)(d > ID ? d : ID) * sizeof(float);
        q_index_heads_kernel<0, P><<<rows + n * IH, QKV_THREADS, sm, s>>>(q, rows, H, d, rows, qi, IH, ID, rope_dim,
                                                                        freq, pos, eps, hscale, wd, wscale, w);
    }
    return HCI_CU_CHECK_LAUNCH();
}

int hci_cu_q_index_heads(cudaStream_t s, uint16_t *q, int n, int H, int d, int rope_dim, const float *freq,
                         int64_t pos0, const int64_t *pos, float eps, uint16_t *qi, int IH, int ID, const double *wd,
                         float wscale, uint16_t *w)
{
    if (n <= 0) return HC_OK;
    if (!pos) return q_index_heads(s, q, n, H, d, rope_dim, freq, PosRun{pos0}, eps, qi, IH, ID, wd, wscale, w);
    PosRows p = {};
    if (!pos_rows(p, pos, n)) return HC_ERR_INVALID_ARG;
    return q_index_heads(s, q, n, H, d, rope_dim, freq, p, eps, qi, IH, ID, wd, wscale, w);
}
