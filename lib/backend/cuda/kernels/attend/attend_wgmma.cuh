/* attend/attend_wgmma.cuh - what the two wgmma attention kernels share (attend_wgmma.cu, option
 * attend_fast; attend_pingpong.cu, option attend_pingpong): the shapes they take (head_dim 512,
 * 64-head groups, fp8 entries of 448 e4m3 codes + 64 bf16 rope values), the 128-byte-swizzled
 * tiles of 64 rows x 64 bf16 and their wgmma descriptors, the Q.K^T and P.V MMAs, the exact
 * e4m3 x ue8m0 dequantisation, cp.async, and the pre-pass rows (SWA and HCA rows, and the
 * window of every kind, dequantised once per piece: at_fast_prepass in attend_wgmma.cu). */
#ifndef HCI_KERNELS_ATTEND_WGMMA_CUH
#define HCI_KERNELS_ATTEND_WGMMA_CUH
#include <math.h>
#include <stdint.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include "../common.cuh"
#include "../wgmma.cuh"
#include "attend.h"
#include "attend_rows.cuh"

namespace hci_at {

/* Rows dequantised ahead of the attention: the ring's positions wbase .. pos0 - 1 and (ratio 128)
 * compressed entries 0 .. ncomp - 1 as bf16 rows of 512 values, so that a producer only copies
 * them (cp.async, no registers held). */
struct at_pre {
    const uint16_t *win;  /* row p - wbase: position p < pos0 */
    const uint16_t *comp; /* row j: compressed entry j (ratio 128); NULL where not made */
    int64_t wbase;
};

/* The pre-pass (attend_wgmma.cu): dequantises the ring rows of the piece's windows (positions
 * max(0, pos0 - window) .. pos0 - 1) and, for ratio 128, every compressed entry the piece sees,
 * into pre (window + compressed rows of 512 bf16: the 256-byte-aligned scratch behind the split
 * partials, hci_cu_attend_scratch_bytes), and says where they are in pr. HC_OK, HC_ERR_CUDA, or
 * HC_ERR_NULL_ARG without pre. */
int at_fast_prepass(cudaStream_t s, const hci_cu_attn_args &a, void *pre, at_pre *pr);

namespace {

constexpr int D = 512;             /* head_dim taken */
constexpr int HG = 64;             /* heads per CTA */
constexpr int QD = 448;            /* e4m3 part of an fp8 entry; then 64 bf16 rope values */
constexpr int TILE = AT_BLK * 128; /* one 64-dim column tile of a block (or of Q): 8 KB */
constexpr float LOG2E = 1.4426950408889634f;

/* Byte offset of 16-byte piece c (of 64) of row r in a tile set (the 128-byte swizzle of wgmma:
 * piece index XOR row mod 8 within each 64-dim column tile). */
__device__ __forceinline__ uint32_t sw_off(int r, int c) { return (uint32_t)((c >> 3) * TILE + r * 128 + (((c & 7) ^ (r & 7)) << 4)); }

/* Shared-memory matrix descriptors (wgmma.cuh): K-major (Q, a block as the keys, P) and
 * MN-major (a block as V, 64-dim tiles TILE apart). */
__device__ __forceinline__ uint64_t desc_k(uint32_t a) { return hci_wg_desc_k(a); }
__device__ __forceinline__ uint64_t desc_mn(uint32_t a) { return hci_wg_desc(a, TILE); }

__device__ __forceinline__ float ex2(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi)
{
    __nv_bfloat162_raw b = __floats2bfloat162_rn(lo, hi);
    return (uint32_t)b.x | ((uint32_t)b.y << 16);
}

/* A block's probabilities p = ex2(s - base) of this thread's 2 rows x 16 entries (sc[4j + 2r + k]:
 * row g + 8r, entry 8j + 2t + k), rounded to bf16 into P.V's A fragments (the accumulator of n8
 * blocks 2kk, 2kk + 1 is the A fragment of k16 step kk), and their unrounded row sums added to ps. */
__device__ __forceinline__ void block_probs(const float (&sc)[32], const float (&base)[2], float (&ps)[2],
                                            uint32_t (&pf)[4][4])
{
#pragma unroll
    for (int j = 0; j < 8; j++) {
        float p[4];
#pragma unroll
        for (int k = 0; k < 4; k++) {
            p[k] = ex2(sc[4 * j + k] - base[k >> 1]);
            ps[k >> 1] += p[k];
        }
        pf[j >> 1][2 * (j & 1)] = pack_bf16(p[0], p[1]);
        pf[j >> 1][2 * (j & 1) + 1] = pack_bf16(p[2], p[3]);
    }
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define AT_F8(b) "+f"(d[b]), "+f"(d[b + 1]), "+f"(d[b + 2]), "+f"(d[b + 3]), "+f"(d[b + 4]), "+f"(d[b + 5]), "+f"(d[b + 6]), "+f"(d[b + 7])
#define AT_D128 \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, "          \
    "%21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, "           \
    "%40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, "           \
    "%59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, "           \
    "%78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, "           \
    "%97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, "             \
    "%113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}"
#define AT_O128                                                                                                \
    AT_F8(0), AT_F8(8), AT_F8(16), AT_F8(24), AT_F8(32), AT_F8(40), AT_F8(48), AT_F8(56), AT_F8(64), AT_F8(72), \
        AT_F8(80), AT_F8(88), AT_F8(96), AT_F8(104), AT_F8(112), AT_F8(120)

/* d (+)= Q.K^T for 64 rows x 64 entries x 16 dims, both operands K-major in shared memory. */
__device__ __forceinline__ void mma_qk(float (&d)[32], uint64_t da, uint64_t db, int acc)
{
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, "
                 "%21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
                 : AT_F8(0), AT_F8(8), AT_F8(16), AT_F8(24)
                 : "l"(da), "l"(db), "r"(acc));
}

/* d += P.V for 64 rows x 256 columns x 16 entries: P from registers (the A fragment), V the
 * block read MN-major (columns contiguous). */
__device__ __forceinline__ void mma_pv(float (&d)[128], const uint32_t (&p)[4], uint64_t db)
{
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %133, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 " AT_D128 ", "
                 "{%128, %129, %130, %131}, %132, p, 1, 1, 1;\n}\n"
                 : AT_O128
                 : "r"(p[0]), "r"(p[1]), "r"(p[2]), "r"(p[3]), "l"(db), "r"(1));
}

/* d += P.V as mma_pv, P from shared memory (K-major: 64 rows x 16 entries, 128-byte swizzle). */
__device__ __forceinline__ void mma_pv_ss(float (&d)[128], uint64_t da, uint64_t db)
{
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 " AT_D128 ", "
                 "%128, %129, p, 1, 1, 0, 1;\n}\n"
                 : AT_O128
                 : "l"(da), "l"(db), "r"(1));
}
#undef AT_O128
#undef AT_D128
#undef AT_F8
#else /* the compute_90 PTX of the build: never run (the launchers check the device) */
__device__ __forceinline__ void mma_qk(float (&)[32], uint64_t, uint64_t, int) { __trap(); }
__device__ __forceinline__ void mma_pv(float (&)[128], const uint32_t (&)[4], uint64_t) { __trap(); }
__device__ __forceinline__ void mma_pv_ss(float (&)[128], uint64_t, uint64_t) { __trap(); }
#endif

/* 16 e4m3 codes times 2^(byte - 127) -> 16 bf16 (exact: e4m3 values times a power of two). */
__device__ __forceinline__ void dequant16(const uint4 &c, int byte, uint4 &lo, uint4 &hi)
{
    const float s = hci_pow2(byte - 127);
    const uint32_t w[4] = {c.x, c.y, c.z, c.w};
    uint32_t out[8];
#pragma unroll
    for (int z = 0; z < 8; z++) {
        __half2_raw hr = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(w[z >> 1] >> (16 * (z & 1))), __NV_E4M3);
        float2 f = __half22float2(__half2(hr));
        out[z] = pack_bf16(f.x * s, f.y * s);
    }
    lo = make_uint4(out[0], out[1], out[2], out[3]);
    hi = make_uint4(out[4], out[5], out[6], out[7]);
}

__device__ __forceinline__ void cp_async16(uint32_t dst, const void *src)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src) : "memory");
}
/* 16 bytes from src, or 16 zero bytes when bytes is 0 (src is then not read) */
__device__ __forceinline__ void cp_async16_zfill(uint32_t dst, const void *src, int bytes)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes) : "memory");
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

/* The window slot u < window of query t's row as a bf16 row in global memory, or NULL (padding):
 * the piece's own kv rows, or the pre-pass's ring rows. */
__device__ __forceinline__ const uint16_t *pre_window_row(const hci_cu_attn_args &a, const at_pre &pr, int64_t t, int64_t u)
{
    const int64_t p = at_window_pos(a, t, u);
    if (p < 0) return nullptr;
    return p >= a.pos0 ? a.kv + (size_t)(p - a.pos0) * D : pr.win + (size_t)(p - pr.wbase) * D;
}

/* Entry u of query t's row as a bf16 row in global memory, or NULL (padding): ratio 0 and 128,
 * whose compressed rows the pre-pass made. */
__device__ __forceinline__ const uint16_t *pre_row(const hci_cu_attn_args &a, const at_pre &pr, int64_t t, int64_t u,
                                                   int64_t ncomp)
{
    if (u < a.window) return pre_window_row(a, pr, t, u);
    int64_t c = u - a.window;
    return c < ncomp ? pr.comp + (size_t)c * D : nullptr;
}

} // namespace
} // namespace hci_at

#endif
