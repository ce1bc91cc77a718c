/* gemv.cu - projections of a few tokens (decode): one warp per output row, weights read once,
 * arithmetic exact as on the CPU backend. FP8: each 128-block dot of e4m3 products is summed in
 * double (exact), rounded to fp32, scaled by fl32(s_act * s_w) and accumulated in fp32 block by
 * block, then rounded to bf16 -- the same operations in the same order as cpu_linear.c, so
 * decode projections are bitwise equal to the CPU's. bf16 weights: products exact, sums in
 * double. More tokens go to the GEMM family (FP8) or cuBLASLt (bf16, double): cuda_gemm.cu. */
#include <cuda_fp8.h>
#include "../common.cuh"
#include "config.h"
#include "gemv.h"

__device__ __forceinline__ void e4m3x4(uint32_t u, float f[4])
{
#pragma unroll
    for (int i = 0; i < 4; i++) {
        __nv_fp8_e4m3 v;
        v.__x = (uint8_t)(u >> (8 * i));
        f[i] = (float)v;
    }
}

__device__ __forceinline__ double warp_sum(double v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Sixteen e4m3 codes (one 16-byte load) as floats. */
__device__ __forceinline__ void e4m3x16(uint4 v, float f[16])
{
    e4m3x4(v.x, f), e4m3x4(v.y, f + 4), e4m3x4(v.z, f + 8), e4m3x4(v.w, f + 12);
}

/* y[t][r] for t < n: W codes [M][K], scales [M/128][sld]; x codes [np][K], scales [K/128][np].
 * One warp per row, four 128-blocks per step: eight lanes share a block, each with 16 codes
 * (16-byte loads). A block's dot is exact in double whatever the order (products of e4m3 are
 * multiples of 2^-18 below 2^18, 128 of them need 43 bits), so the eight-lane sum equals the
 * CPU's; the scaled block results are then added in block order on every lane, as the CPU does. */
__device__ __forceinline__ void gemv_fp8_cta(int cta, const uint8_t *W, const float *Ws, int sld, int M, int K,
                                             const uint8_t *xq, const float *xs, int np, int n, uint16_t *y, int ldy)
{
    int r = cta * GV_WARPS + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (r >= M) return;
    float acc[GV_MAX_N];
#pragma unroll
    for (int t = 0; t < GV_MAX_N; t++) acc[t] = 0.0f;
    const uint8_t *wr = W + (size_t)r * K;
    const float *ws = Ws + (size_t)(r / GV_SCALE_BLOCK) * sld;
    const int nb = K / GV_SCALE_BLOCK, sub = lane / GV_LANES_PER_BLOCK, off = (lane % GV_LANES_PER_BLOCK) * 16;
    for (int kb0 = 0; kb0 < nb; kb0 += GV_BLOCKS_PER_STEP) {
        const int kb = kb0 + sub;
        const bool on = kb < nb;
        const uint4 zero = make_uint4(0, 0, 0, 0);
        float w[16];
        e4m3x16(on ? *(const uint4 *)(wr + (size_t)kb * GV_SCALE_BLOCK + off) : zero, w);
        const float sw = on ? ws[kb] : 0.0f;
#pragma unroll
        for (int t = 0; t < GV_MAX_N; t++) {
            if (t >= n) break;
            float a[16];
            e4m3x16(on ? *(const uint4 *)(xq + (size_t)t * K + (size_t)kb * GV_SCALE_BLOCK + off) : zero, a);
            double d = 0.0;
#pragma unroll
            for (int i = 0; i < 16; i++) d += (double)__fmul_rn(w[i], a[i]);
#pragma unroll
            for (int o = GV_LANES_PER_BLOCK / 2; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
            const float term = on ? __fmul_rn((float)d, __fmul_rn(xs[(size_t)kb * np + t], sw)) : 0.0f;
#pragma unroll
            for (int j = 0; j < GV_BLOCKS_PER_STEP; j++) {
                const float tj = __shfl_sync(0xffffffffu, term, j * GV_LANES_PER_BLOCK);
                if (kb0 + j < nb) acc[t] = __fadd_rn(acc[t], tj);
            }
        }
    }
    if (lane == 0)
        for (int t = 0; t < n; t++) y[(size_t)t * ldy + r] = hci_bf16_from_f32(acc[t]);
}

__global__ void gemv_fp8_kernel(const uint8_t *W, const float *Ws, int sld, int M, int K, const uint8_t *xq,
                                const float *xs, int np, int n, uint16_t *y, int ldy)
{
    gemv_fp8_cta(blockIdx.x, W, Ws, sld, M, K, xq, xs, np, n, y, ldy);
}

/* Several weights over the same xq (option decode_fused): each CTA the rows of its segment. */
__global__ void gemv_fp8_grouped_kernel(const __grid_constant__ hci_cu_seg_grid g, int K, const uint8_t *xq,
                                        const float *xs, int np, int n)
{
    int cta;
    const hci_cu_seg &sg = g.s[hci_dev_seg_of(g, blockIdx.x, cta)];
    gemv_fp8_cta(cta, (const uint8_t *)sg.W, sg.Ws, sg.sld, sg.M, K, xq, xs, np, n, (uint16_t *)sg.y, sg.ldy);
}

int hci_cu_gemv_fp8(cudaStream_t s, const uint8_t *W, const float *Ws, int sld, int M, int K, const uint8_t *xq,
                    const float *xs, int np, int n, uint16_t *y, int ldy)
{
    if (n <= 0) return HC_OK;
    if (n > GV_MAX_N || K % GV_SCALE_BLOCK || !hci_aligned16(W) || !hci_aligned16(xq)) return HC_ERR_INVALID_ARG;
    gemv_fp8_kernel<<<(M + GV_WARPS - 1) / GV_WARPS, GV_WARPS * 32, 0, s>>>(W, Ws, sld, M, K, xq, xs, np, n, y, ldy);
    return HCI_CU_CHECK_LAUNCH();
}

int hci_cu_gemv_fp8_grouped(cudaStream_t s, const hci_cu_seg *seg, int nseg, int K, const uint8_t *xq,
                            const float *xs, int np, int n)
{
    if (n <= 0) return HC_OK;
    if (n > GV_MAX_N || K % GV_SCALE_BLOCK || !hci_aligned16(xq)) return HC_ERR_INVALID_ARG;
    for (int i = 0; i < nseg; i++)
        if (seg[i].M <= 0 || !hci_aligned16(seg[i].W)) return HC_ERR_INVALID_ARG;
    hci_cu_seg_grid g;
    if (!hci_cu_seg_grid_make(g, seg, nseg, [](int M) { return (M + GV_WARPS - 1) / GV_WARPS; }))
        return HC_ERR_INVALID_ARG;
    gemv_fp8_grouped_kernel<<<(unsigned)g.cta0[nseg], GV_WARPS * 32, 0, s>>>(g, K, xq, xs, np, n);
    return HCI_CU_CHECK_LAUNCH();
}

/* out[t][g*Mg + r] = sum_k x[t][g*xoff + k] * W[g*Mg + r][k] in double, for `groups` groups of Mg
 * rows; written as double (outd, leading dim ldo) or rounded fl32 -> bf16 (outb). Products are
 * exact in fp32; each lane sums its share in double, then the warp. With 16-byte aligned rows
 * (K, ldx, xoff multiples of 8) a lane reads 8 values per load and each weight load serves every
 * token; otherwise one value at a time. */
__device__ __forceinline__ void gemv_bf16_cta(int cta, const uint16_t *W, int M, int K, int Mg, int64_t xoff,
                                              const uint16_t *x, int ldx, int n, bool vec, double *outd,
                                              uint16_t *outb, int ldo)
{
    int r = cta * GV_WARPS + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (r >= M) return;
    int g = r / Mg;
    const uint16_t *wr = W + (size_t)r * K, *xg = x + (size_t)g * xoff;
    double d[GV_MAX_N];
#pragma unroll
    for (int t = 0; t < GV_MAX_N; t++) d[t] = 0.0;
    if (vec) {
        for (int k = lane * 8; k < K; k += 256) {
            const uint4 wv = *(const uint4 *)(wr + k);
            const uint32_t wu[4] = {wv.x, wv.y, wv.z, wv.w};
#pragma unroll
            for (int t = 0; t < GV_MAX_N; t++) {
                if (t >= n) break;
                const uint4 xv = *(const uint4 *)(xg + (size_t)t * ldx + k);
                const uint32_t xu[4] = {xv.x, xv.y, xv.z, xv.w};
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    d[t] += (double)__fmul_rn(__uint_as_float(wu[i] << 16), __uint_as_float(xu[i] << 16));
                    d[t] += (double)__fmul_rn(__uint_as_float(wu[i] & 0xffff0000u), __uint_as_float(xu[i] & 0xffff0000u));
                }
            }
        }
    } else {
        for (int k = lane; k < K; k += 32)
            for (int t = 0; t < n && t < GV_MAX_N; t++)
                d[t] += (double)__fmul_rn(hci_f32_from_bf16(wr[k]), hci_f32_from_bf16(xg[(size_t)t * ldx + k]));
    }
#pragma unroll
    for (int t = 0; t < GV_MAX_N; t++) {
        if (t >= n) break;
        const double v = warp_sum(d[t]);
        if (lane == 0) {
            if (outd) outd[(size_t)t * ldo + r] = v;
            else outb[(size_t)t * ldo + r] = hci_bf16_from_f32((float)v);
        }
    }
}

/* The 16-byte path's condition (the order of a row's sums follows it): the launcher's and the
 * grouped kernel's, per weight. */
__host__ __device__ __forceinline__ bool gemv_bf16_vec(const void *W, int K, const uint16_t *x, int ldx)
{
    return K % 8 == 0 && ldx % 8 == 0 && hci_aligned16(W) && hci_aligned16(x);
}

__global__ void gemv_bf16_kernel(const uint16_t *W, int M, int K, int Mg, int64_t xoff, const uint16_t *x, int ldx,
                                 int n, bool vec, double *outd, uint16_t *outb, int ldo)
{
    gemv_bf16_cta(blockIdx.x, W, M, K, Mg, xoff, x, ldx, n, vec, outd, outb, ldo);
}

/* Several weights over the same x, one group each, double out (option decode_fused). */
__global__ void gemv_bf16_grouped_kernel(const __grid_constant__ hci_cu_seg_grid g, int K, const uint16_t *x, int ldx,
                                         int n)
{
    int cta;
    const hci_cu_seg &sg = g.s[hci_dev_seg_of(g, blockIdx.x, cta)];
    const uint16_t *W = (const uint16_t *)sg.W;
    gemv_bf16_cta(cta, W, sg.M, K, sg.M, K, x, ldx, n, gemv_bf16_vec(W, K, x, ldx), (double *)sg.y, nullptr, sg.ldy);
}

int hci_cu_gemv_bf16(cudaStream_t s, const uint16_t *W, int M, int K, int groups, const uint16_t *x, int ldx, int n,
                     double *outd, uint16_t *outb, int ldo)
{
    if (n <= 0) return HC_OK;
    if (n > GV_MAX_N) return HC_ERR_INVALID_ARG;
    int Mg = M / groups;
    const bool vec = gemv_bf16_vec(W, K, x, ldx);
    gemv_bf16_kernel<<<(M + GV_WARPS - 1) / GV_WARPS, GV_WARPS * 32, 0, s>>>(W, M, K, Mg, K, x, ldx, n, vec, outd,
                                                                             outb, ldo);
    return HCI_CU_CHECK_LAUNCH();
}

int hci_cu_gemv_bf16_grouped(cudaStream_t s, const hci_cu_seg *seg, int nseg, int K, const uint16_t *x, int ldx,
                             int n)
{
    if (n <= 0) return HC_OK;
    if (n > GV_MAX_N) return HC_ERR_INVALID_ARG;
    for (int i = 0; i < nseg; i++)
        if (seg[i].M <= 0) return HC_ERR_INVALID_ARG;
    hci_cu_seg_grid g;
    if (!hci_cu_seg_grid_make(g, seg, nseg, [](int M) { return (M + GV_WARPS - 1) / GV_WARPS; }))
        return HC_ERR_INVALID_ARG;
    gemv_bf16_grouped_kernel<<<(unsigned)g.cta0[nseg], GV_WARPS * 32, 0, s>>>(g, K, x, ldx, n);
    return HCI_CU_CHECK_LAUNCH();
}
