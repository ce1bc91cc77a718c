/* gemm/tile.cuh - the device pieces that the FP8 GEMM (gemm_fp8.cu) and the bf16 GEMM
 * (gemm_bf16.cu) share: the mma.m16n8k16 step (f16 or bf16 operands, fp32 accumulation); in the
 * big kernels the warp's pass over one k-block of a swizzled smem stage (ldmatrix + mma, config.h's
 * maps) and the walk of its 64 x 32 accumulators; in the sliced-K kernels the k-order sum of a
 * round's block sums and the walk of the CTA tile. What differs stays in the kernels: how a stage
 * is filled (e4m3 codes converted from registers, or bf16 copied by cp.async), the scales, and the
 * output format. */
#ifndef HCI_KERNELS_GEMM_TILE_CUH
#define HCI_KERNELS_GEMM_TILE_CUH
#include "../common.cuh"
#include "config.h"

/* operand type of the mma: f16 (gemm_fp8.cu: the e4m3 codes as f16) or bf16 (gemm_bf16.cu) */
enum gm_ab { GM_F16, GM_BF16 };

/* d += a.b (fp32 accumulation). Fragments as in attend/attend.cu's mma_bf16. T: the PTX operand
 * type, "f16" or "bf16". */
#define GM_MMA_ACC(T)                                                                                          \
    asm("mma.sync.aligned.m16n8k16.row.col.f32." T "." T ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "         \
        "{%0,%1,%2,%3};\n"                                                                                     \
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])                                                       \
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1))
/* d = a.b: the first step of a k-block starts from zero. */
#define GM_MMA_FIRST(T)                                                                                        \
    asm("mma.sync.aligned.m16n8k16.row.col.f32." T "." T ".f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "         \
        "{%10,%10,%10,%10};\n"                                                                                 \
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])                                                       \
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "f"(0.0f))

template <gm_ab AB>
__device__ __forceinline__ void gm_mma_acc(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1)
{
    if constexpr (AB == GM_F16) GM_MMA_ACC("f16");
    else GM_MMA_ACC("bf16");
}

template <gm_ab AB>
__device__ __forceinline__ void gm_mma_first(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1)
{
    if constexpr (AB == GM_F16) GM_MMA_FIRST("f16");
    else GM_MMA_FIRST("bf16");
}
#undef GM_MMA_ACC
#undef GM_MMA_FIRST

/* 16 bytes global -> shared by cp.async (L2 only), zero-filled when !valid (src is then not read) */
__device__ __forceinline__ void gm_cp16(uint32_t dst, const void *src, bool valid)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0)
                 : "memory");
}
__device__ __forceinline__ void gm_cp_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void gm_cp_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/* The scale of a block dot of the FP8 GEMMs (gemm_fp8.cu, gemm_fp8_wgmma.cu): fl32(xs * ws), times
 * 2^16 to undo the 2^-8 of both f16 operands (exact). */
__device__ __forceinline__ float gf_scale(float xs, float ws) { return __fmul_rn(__fmul_rn(xs, ws), 65536.0f); }

/* ---------------------------------------------------------------- big tiles (GF_BM x GF_BN) */

/* The warp's 64 x 32 accumulators, acc[mi][ni][c] (layout: gf_out). */
typedef float gf_warp_acc[4][4][4];

__device__ __forceinline__ void gf_zero(gf_warp_acc &acc)
{
#pragma unroll
    for (int mi = 0; mi < 4; mi++)
#pragma unroll
        for (int ni = 0; ni < 4; ni++)
#pragma unroll
            for (int c = 0; c < 4; c++) acc[mi][ni][c] = 0.0f;
}

/* P = the warp's sums of one k-block: its eight mma steps kk (k = 16 kk .. 16 kk + 15), the first
 * from zero, over the stage whose weight rows of this lane start at abase and token rows at bbase
 * (shared addresses: stage + gf_lda_rowoff / GF_TILE_BYTES + gf_ldb_rowoff). The swizzle term of
 * rows r0 + 8i is lane & 7 for every tile of the warp, so the chunk of step kk is (2 kk) ^ y with
 * y = gf_lda_y / gf_ldb_y (see gf_lda_off / gf_ldb_off). after(kk) runs after step kk's mma (the
 * FP8 kernel spreads the next block's conversion there). */
template <gm_ab AB, class After>
__device__ __forceinline__ void gf_block_mma(gf_warp_acc &P, uint32_t abase, uint32_t bbase, uint32_t ya, uint32_t yb,
                                             After &&after)
{
#pragma unroll
    for (int kk = 0; kk < GF_BK / 16; kk++) {
        uint32_t af[4][4], bq[2][4];
#pragma unroll
        for (int mi = 0; mi < 4; mi++) hci_dev_ldsm_x4(af[mi], abase + mi * 16 * 256 + (((2u * kk) ^ ya) << 4));
#pragma unroll
        for (int p = 0; p < 2; p++) hci_dev_ldsm_x4(bq[p], bbase + p * 16 * 256 + (((2u * kk) ^ yb) << 4));
#pragma unroll
        for (int mi = 0; mi < 4; mi++)
#pragma unroll
            for (int ni = 0; ni < 4; ni++) {
                const uint32_t b0 = bq[ni >> 1][(ni & 1) * 2], b1 = bq[ni >> 1][(ni & 1) * 2 + 1];
                if (kk == 0) gm_mma_first<AB>(P[mi][ni], af[mi], b0, b1);
                else gm_mma_acc<AB>(P[mi][ni], af[mi], b0, b1);
            }
        after(kk);
    }
}

/* store(row, tok, v) for every accumulator of warp (wm, wn), rows and tokens of the CTA tile. */
template <class Store>
__device__ __forceinline__ void gf_store_tile(const gf_warp_acc &acc, int wm, int wn, int lane, Store &&store)
{
#pragma unroll
    for (int mi = 0; mi < 4; mi++)
#pragma unroll
        for (int ni = 0; ni < 4; ni++)
#pragma unroll
            for (int c = 0; c < 4; c++) {
                int row, tok;
                gf_out(wm, wn, mi, ni, lane, c, &row, &tok);
                store(row, tok, acc[mi][ni][c]);
            }
}

/* ---------------------------------------------------------------- sliced K (GS_ shapes) */

/* The end of round r: once every warp has put its block sum into red (slot w = block
 * r * GS_WARPS + w, layout gs_elem), thread tid adds its float4s f = tid + j * GS_THREADS < F4
 * of the round's blocks to acc[j] in k order; red is free again after the second barrier. */
template <int F4, int J>
__device__ __forceinline__ void gs_add_round(float (&acc)[J][4], const float4 *red, int tid, int nkb, int r)
{
    __syncthreads();
    const int nw = min(GS_WARPS, nkb - r * GS_WARPS);
#pragma unroll
    for (int j = 0; j < J; j++) {
        const int f = tid + j * GS_THREADS;
        if (f < F4)
            for (int w2 = 0; w2 < nw; w2++) {
                const float4 v = red[w2 * F4 + f];
                acc[j][0] = __fadd_rn(acc[j][0], v.x);
                acc[j][1] = __fadd_rn(acc[j][1], v.y);
                acc[j][2] = __fadd_rn(acc[j][2], v.z);
                acc[j][3] = __fadd_rn(acc[j][3], v.w);
            }
    }
    __syncthreads();
}

/* store(row, tok, v) for every element of thread tid's float4s (gs_elem), rows and tokens of the
 * CTA tile. */
template <int NT, int F4, int J, class Store>
__device__ __forceinline__ void gs_store_tile(const float (&acc)[J][4], int tid, Store &&store)
{
#pragma unroll
    for (int j = 0; j < J; j++) {
        const int f = tid + j * GS_THREADS;
        if (f >= F4) continue;
#pragma unroll
        for (int c = 0; c < 4; c++) {
            int row, tok;
            gs_elem(NT, f, c, &row, &tok);
            store(row, tok, acc[j][c]);
        }
    }
}

#endif
