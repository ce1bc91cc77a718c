/* gemv.cu - projections of a few tokens (decode): one warp per output row, weights read once,
 * arithmetic exact as on the CPU backend. FP8: each 128-block dot of e4m3 products is summed in
 * double (exact), rounded to fp32, scaled by fl32(s_act * s_w) and accumulated in fp32 block by
 * block, then rounded to bf16 -- the same operations in the same order as cpu_linear.c, so
 * decode projections are bitwise equal to the CPU's. bf16 weights: products exact, sums in
 * double. For more tokens the cuBLASLt paths of cuda_gemm.cu are used. */
#include <cuda_fp8.h>
#include "common.cuh"
#include "backend/cuda/cuda_internal.h"
#include "hybridctx.h"

#define GV_WARPS 8
#define GV_MAX_N 16

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

/* y[t][r] for t < n: W codes [M][K], scales [M/128][sld]; x codes [np][K], scales [K/128][np]. */
__global__ void gemv_fp8_kernel(const uint8_t *W, const float *Ws, int sld, int M, int K, const uint8_t *xq,
                                const float *xs, int np, int n, uint16_t *y, int ldy)
{
    int r = blockIdx.x * GV_WARPS + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (r >= M) return;
    float acc[GV_MAX_N];
#pragma unroll
    for (int t = 0; t < GV_MAX_N; t++) acc[t] = 0.0f;
    const uint8_t *wr = W + (size_t)r * K;
    const float *ws = Ws + (size_t)(r / 128) * sld;
    for (int kb = 0; kb < K / 128; kb++) {
        float w[4];
        e4m3x4(*(const uint32_t *)(wr + kb * 128 + lane * 4), w);
        float sw = ws[kb];
#pragma unroll
        for (int t = 0; t < GV_MAX_N; t++) {
            if (t >= n) break;
            float a[4];
            e4m3x4(*(const uint32_t *)(xq + (size_t)t * K + kb * 128 + lane * 4), a);
            double d = (double)__fmul_rn(w[0], a[0]) + (double)__fmul_rn(w[1], a[1]) +
                       (double)__fmul_rn(w[2], a[2]) + (double)__fmul_rn(w[3], a[3]);
            float partial = (float)warp_sum(d);
            acc[t] = __fadd_rn(acc[t], __fmul_rn(partial, __fmul_rn(xs[(size_t)kb * np + t], sw)));
        }
    }
    if (lane == 0)
        for (int t = 0; t < n; t++) y[(size_t)t * ldy + r] = hci_bf16_from_f32(acc[t]);
}

int hci_cu_gemv_fp8(cudaStream_t s, const uint8_t *W, const float *Ws, int sld, int M, int K, const uint8_t *xq,
                    const float *xs, int np, int n, uint16_t *y, int ldy)
{
    if (n <= 0) return HC_OK;
    if (n > GV_MAX_N) return HC_ERR_INVALID_ARG;
    gemv_fp8_kernel<<<(M + GV_WARPS - 1) / GV_WARPS, GV_WARPS * 32, 0, s>>>(W, Ws, sld, M, K, xq, xs, np, n, y, ldy);
    return cudaGetLastError() == cudaSuccess ? HC_OK : HC_ERR_CUDA;
}

/* out[t][g*Mg + r] = sum_k x[t][g*xoff + k] * W[g*Mg + r][k] in double, for `groups` groups of Mg
 * rows; written as double (outd, leading dim ldo) or rounded fl32 -> bf16 (outb). */
__global__ void gemv_bf16_kernel(const uint16_t *W, int M, int K, int Mg, int64_t xoff, const uint16_t *x, int ldx,
                                 int n, double *outd, uint16_t *outb, int ldo)
{
    int r = blockIdx.x * GV_WARPS + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (r >= M) return;
    int g = r / Mg;
    const uint16_t *wr = W + (size_t)r * K;
    for (int t = 0; t < n; t++) {
        const uint16_t *xr = x + (size_t)t * ldx + (size_t)g * xoff;
        double d = 0.0;
        for (int k = lane; k < K; k += 32)
            d += (double)__fmul_rn(hci_f32_from_bf16(wr[k]), hci_f32_from_bf16(xr[k]));
        d = warp_sum(d);
        if (lane == 0) {
            if (outd) outd[(size_t)t * ldo + r] = d;
            else outb[(size_t)t * ldo + r] = hci_bf16_from_f32((float)d);
        }
    }
}

int hci_cu_gemv_bf16(cudaStream_t s, const uint16_t *W, int M, int K, int groups, const uint16_t *x, int ldx, int n,
                     double *outd, uint16_t *outb, int ldo)
{
    if (n <= 0) return HC_OK;
    int Mg = M / groups;
    gemv_bf16_kernel<<<(M + GV_WARPS - 1) / GV_WARPS, GV_WARPS * 32, 0, s>>>(W, M, K, Mg, K, x, ldx, n, outd, outb,
                                                                             ldo);
    return cudaGetLastError() == cudaSuccess ? HC_OK : HC_ERR_CUDA;
}
