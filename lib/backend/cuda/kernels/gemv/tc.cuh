/* gemv/tc.cuh - what the fast tensor-core GEMVs (gemv_fp8_tc.cu, gemv_bf16_tc.cu, and the previous
 * kernels kept in gemv_tc_ref.cu) share: the streaming 16-byte weight load, the two registers of
 * one mma step from a lane's 16 bytes (config.h's span maps), the two mma forms, and the sum of a
 * row group's 8 residue classes in class order (config.h). */
#ifndef HCI_KERNELS_GEMV_TC_CUH
#define HCI_KERNELS_GEMV_TC_CUH
#include "../common.cuh"
#include "config.h"
#include <type_traits>

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

__device__ __forceinline__ void gt_mma_e4m3(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                            uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void gt_mma_bf16(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                            uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* Lane l's four accumulators of m-tile mi (tokens mi*16 + l/4 and + 8, rows r0 + 2 (l%4) and + 1)
 * rounded to bf16 into out[token][row], tokens past n not written. */
__device__ __forceinline__ void gt_store4(const float4 &v, int mi, int l, int r0, int n, uint16_t *out, int ldo)
{
    const int m0 = mi * GT_TOK + (l >> 2), m1 = m0 + 8, r = r0 + 2 * (l & 3);
    if (m0 < n) out[(size_t)m0 * ldo + r] = hci_bf16_from_f32(v.x), out[(size_t)m0 * ldo + r + 1] = hci_bf16_from_f32(v.y);
    if (m1 < n) out[(size_t)m1 * ldo + r] = hci_bf16_from_f32(v.z), out[(size_t)m1 * ldo + r + 1] = hci_bf16_from_f32(v.w);
}

/* The shared memory of a CTA's teams (S > 1): every class's accumulators, [team][class][mi][lane]. */
template <int MT, int S>
struct gt_team_smem {
    float4 v[GT_WARPS / S][GT_CLASSES][MT][32];
};
template <int MT>
struct gt_team_smem<MT, 1> { /* S = 1 adds in registers */
    float4 v[1];
};

/* The end of a row group: acc[ci] holds class j + S ci of member j (warp `warp` of the CTA). The 8
 * classes are added in class order, v = acc_0, v += acc_1, ..., v += acc_7 (fp32 adds, every
 * class even when it had no k-unit: +0 then), the order of the previous kernel's fixed warp
 * order; then rounded to bf16. S = 1: in the lane's registers. Else through shared memory, after
 * a barrier of the team's warps only (named barrier 1 + team: teams finish independently). */
template <int MT, int S>
__device__ __forceinline__ void gt_team_store(gt_team_smem<MT, S> *sm, const float (&acc)[GT_CLASSES / S][MT][4],
                                              int warp, int r0, int n, uint16_t *out, int ldo)
{
    const int lane = threadIdx.x & 31;
    if constexpr (S == 1) {
#pragma unroll
        for (int mi = 0; mi < MT; mi++) {
            float4 v = make_float4(acc[0][mi][0], acc[0][mi][1], acc[0][mi][2], acc[0][mi][3]);
#pragma unroll
            for (int c = 1; c < GT_CLASSES; c++)
                v.x += acc[c][mi][0], v.y += acc[c][mi][1], v.z += acc[c][mi][2], v.w += acc[c][mi][3];
            gt_store4(v, mi, lane, r0, n, out, ldo);
        }
        (void)sm, (void)warp;
    } else {
        const int team = warp / S, j = warp % S;
#pragma unroll
        for (int ci = 0; ci < GT_CLASSES / S; ci++)
#pragma unroll
            for (int mi = 0; mi < MT; mi++)
                sm->v[team][j + S * ci][mi][lane] = make_float4(acc[ci][mi][0], acc[ci][mi][1], acc[ci][mi][2], acc[ci][mi][3]);
        asm volatile("bar.sync %0, %1;\n" ::"r"(1 + team), "r"(S * 32) : "memory");
        for (int e = j * 32 + lane; e < MT * 32; e += S * 32) {
            const int mi = e >> 5, l = e & 31;
            float4 v = sm->v[team][0][mi][l];
#pragma unroll
            for (int c = 1; c < GT_CLASSES; c++) {
                const float4 o = sm->v[team][c][mi][l];
                v.x += o.x, v.y += o.y, v.z += o.z, v.w += o.w;
            }
            gt_store4(v, mi, l, r0, n, out, ldo);
        }
    }
}

/* f(MT, S) as integral constants for the kernel templates that exist: m-tiles 1..4 and a team
 * size S of at least gt_pick_split's minimum (accumulators within 8 float4). Then the launch
 * status; HC_ERR_INVALID_ARG for another pair. */
template <int V>
using gt_ic = std::integral_constant<int, V>;
template <class F>
int gt_dispatch(int mt, int s, F &&f)
{
    switch (mt * 16 + s) {
    case 16 + 1: f(gt_ic<1>{}, gt_ic<1>{}); break;
    case 16 + 2: f(gt_ic<1>{}, gt_ic<2>{}); break;
    case 16 + 4: f(gt_ic<1>{}, gt_ic<4>{}); break;
    case 16 + 8: f(gt_ic<1>{}, gt_ic<8>{}); break;
    case 32 + 2: f(gt_ic<2>{}, gt_ic<2>{}); break;
    case 32 + 4: f(gt_ic<2>{}, gt_ic<4>{}); break;
    case 32 + 8: f(gt_ic<2>{}, gt_ic<8>{}); break;
    case 48 + 4: f(gt_ic<3>{}, gt_ic<4>{}); break;
    case 48 + 8: f(gt_ic<3>{}, gt_ic<8>{}); break;
    case 64 + 4: f(gt_ic<4>{}, gt_ic<4>{}); break;
    case 64 + 8: f(gt_ic<4>{}, gt_ic<8>{}); break;
    default: return HC_ERR_INVALID_ARG;
    }
    return HCI_CU_CHECK_LAUNCH();
}

#endif
