/* gemv/tc.cuh - what the fast tensor-core GEMVs (gemv_fp8_tc.cu, gemv_bf16_tc.cu) share: the
 * streaming 16-byte weight load, the two registers of one mma step from a lane's 16 bytes
 * (config.h's span maps), and the fixed-order sum of the warps' partial tiles. */
#ifndef HCI_KERNELS_GEMV_TC_CUH
#define HCI_KERNELS_GEMV_TC_CUH
#include "../common.cuh"
#include "config.h"

/* weights are read once: do not keep them in L1 */
__device__ __forceinline__ uint4 gt_ld_stream(const void *p)
{
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

/* mma step `step` (0, 1) takes the first or second 8 bytes of a lane's 16: its two registers */
__device__ __forceinline__ uint32_t gt_lo(const uint4 &v, int step) { return step ? v.z : v.x; }
__device__ __forceinline__ uint32_t gt_hi(const uint4 &v, int step) { return step ? v.w : v.y; }

/* The CTA's result: each warp's accumulators (acc[mi][0..1]: token mi*16 + g, rows 2t, 2t+1;
 * acc[mi][2..3]: token + 8) added in warp order, rounded to bf16 into out[token][r0 + row]. */
template <int MT>
__device__ __forceinline__ void gt_reduce_store(float4 (*red)[MT][32], const float (&acc)[MT][4], int r0, int n,
                                                uint16_t *out, int ldo)
{
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
    for (int mi = 0; mi < MT; mi++) red[warp][mi][lane] = make_float4(acc[mi][0], acc[mi][1], acc[mi][2], acc[mi][3]);
    __syncthreads();
    for (int e = threadIdx.x; e < MT * 32; e += GT_WARPS * 32) {
        const int mi = e / 32, l = e % 32;
        float4 v = red[0][mi][l];
#pragma unroll
        for (int w = 1; w < GT_WARPS; w++) {
            const float4 o = red[w][mi][l];
            v.x += o.x, v.y += o.y, v.z += o.z, v.w += o.w;
        }
        const int m0 = mi * GT_TOK + (l >> 2), m1 = m0 + 8, r = r0 + 2 * (l & 3);
        if (m0 < n) out[(size_t)m0 * ldo + r] = hci_bf16_from_f32(v.x), out[(size_t)m0 * ldo + r + 1] = hci_bf16_from_f32(v.y);
        if (m1 < n) out[(size_t)m1 * ldo + r] = hci_bf16_from_f32(v.z), out[(size_t)m1 * ldo + r + 1] = hci_bf16_from_f32(v.w);
    }
}

#endif
