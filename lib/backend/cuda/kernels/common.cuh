/* common.cuh - what the kernel families share (and nothing else): status of a launch, alignment
 * helpers, bf16, the FP8/FP4 grids (lib/util/quant.h, the same code as the CPU backend), RoPE
 * with CUDA's own sincosf, the quantization simulation, ldmatrix, and cache entry access
 * (layouts in lib/cache/format.h). A family includes this file, its own config.h and launcher
 * header, and format.h; nothing of the backend (cuda_internal.h). */
#ifndef HCI_KERNELS_COMMON_CUH
#define HCI_KERNELS_COMMON_CUH
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>
extern "C" {
#include "cache/format.h"
#include "hybridctx.h"
#include "util/bf16.h"
#include "util/quant.h"
}

/* The most rows of one launch over the rows of several contexts (a batch's shared projections):
 * their positions (qkv.h) and source rows (io.h) travel with the launch as kernel parameters. */
#define HCI_CU_ROWS_MAX 64

/* Grouped launches (option decode_fused): weights that read the same input (e.g. wq_a and wkv
 * over x) in one launch, a segment each; a CTA finds its segment from the first CTA of each
 * (cta0, ascending, cta0[n] = the grid) and then computes its rows exactly as the one-weight
 * launch of that segment would, so the bits do not depend on the grouping. The table travels
 * with the launch (__grid_constant__). */
#define HCI_CU_SEGS_MAX 4
struct hci_cu_seg {
    const void *W;   /* e4m3 codes [M][K] (scales Ws [M/128][sld]) or bf16 [M][K], by the launcher */
    const float *Ws;
    int sld, M;
    void *y;         /* the segment's output (bf16 or double, by the launcher), leading dim ldy */
    int ldy;
};
struct hci_cu_seg_grid {
    int n;
    int cta0[HCI_CU_SEGS_MAX + 1];
    hci_cu_seg s[HCI_CU_SEGS_MAX];
};

/* Host: g from n segments, ctas(M) CTAs for a segment of M rows; false when n is out of range. */
template <class F>
inline bool hci_cu_seg_grid_make(hci_cu_seg_grid &g, const hci_cu_seg *s, int n, F ctas)
{
    if (n < 1 || n > HCI_CU_SEGS_MAX) return false;
    g = hci_cu_seg_grid{};
    g.n = n;
    for (int i = 0; i < n; i++) {
        g.s[i] = s[i];
        g.cta0[i + 1] = g.cta0[i] + (int)ctas(s[i].M);
    }
    return true;
}

/* Device: the segment of CTA b (blockIdx.x) and b's index within it. */
__device__ __forceinline__ int hci_dev_seg_of(const hci_cu_seg_grid &g, int b, int &local)
{
    int i = 0;
#pragma unroll
    for (int k = 1; k < HCI_CU_SEGS_MAX; k++)
        if (k < g.n && b >= g.cta0[k]) i = k;
    local = b - g.cta0[i];
    return i;
}

/* HC_OK, or HC_ERR_CUDA when the last launch (or an earlier sticky fault) failed. */
#define HCI_CU_CHECK_LAUNCH() (cudaGetLastError() == cudaSuccess ? HC_OK : HC_ERR_CUDA)

/* b rounded up to a multiple of 256 bytes: the start of every piece of a scratch buffer. */
__host__ __device__ constexpr inline size_t hci_align256(size_t b) { return (b + 255) & ~(size_t)255; }

/* x rounded up to a multiple of 16 bytes: offsets in a shared-memory plan. */
__host__ __device__ constexpr inline unsigned hci_align16(unsigned x) { return (x + 15u) & ~15u; }

/* p on a 16-byte boundary (uint4 loads and stores). */
__host__ __device__ inline bool hci_aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

/* Streaming multiprocessors of the current device. */
inline cudaError_t hci_cu_sm_count(int *n)
{
    int dev = 0;
    cudaError_t e = cudaGetDevice(&dev);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(n, cudaDevAttrMultiProcessorCount, dev);
    return e;
}

/* The current device is an sm_90 (Hopper) GPU, where the build's sm_90a code (wgmma, setmaxnreg)
 * is what runs; a failed query says no. */
inline bool hci_cu_device_is_sm90(void)
{
    int dev = 0, major = 0, minor = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev)) {
        (void)cudaGetLastError();
        return false;
    }
    return major == 9 && minor == 0;
}

/* ldmatrix.x4 of 16-bit elements: four 8x8 matrices, lane l giving the row address of row l % 8
 * of matrix l / 8; saddr is a shared-state-space address, p a generic pointer into shared memory. */
__device__ __forceinline__ void hci_dev_ldsm_x4(uint32_t (&r)[4], uint32_t saddr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(saddr)
                 : "memory");
}

__device__ __forceinline__ void hci_dev_ldsm_x4(uint32_t (&r)[4], const void *p)
{
    hci_dev_ldsm_x4(r, (uint32_t)__cvta_generic_to_shared(p));
}

/* Element k of an entry (page table + entry number), as a float. */
__device__ __forceinline__ float hci_dev_entry_value(const hci_entry_layout &l, uint8_t *const *pages,
                                                     int64_t entry, int k)
{
    const uint8_t *page = pages[entry / HCI_PAGE_ENTRIES];
    int slot = (int)(entry % HCI_PAGE_ENTRIES);
    const uint8_t *d = page + (size_t)slot * l.data_bytes;
    if (l.fmt == HCI_FMT_BF16) return hci_f32_from_bf16(((const uint16_t *)d)[k]);
    if (k >= l.quant_dim) return hci_f32_from_bf16(((const uint16_t *)(d + l.quant_dim))[k - l.quant_dim]);
    const uint8_t *sc = page + (size_t)HCI_PAGE_ENTRIES * l.data_bytes + (size_t)slot * l.scale_bytes;
    float s = hci_pow2((int)sc[k / l.qblock] - 127);
    float c = l.fp4 ? hci_e2m1_value((uint8_t)((k & 1) ? d[k / 2] >> 4 : d[k / 2] & 15)) : hci_e4m3_value(d[k]);
    return c * s;
}

/* RoPE rotation of pair (a, b) at angle fl32(pos * f), as the reference: fp32 complex product
 * a' = fma(a, c, -fl32(b*s)), b' = fma(a, s, fl32(b*c)), each rounded to bf16. */
__device__ __forceinline__ void hci_dev_rope_pair(float &a, float &b, int64_t pos, float freq, int inverse)
{
    float theta = __fmul_rn((float)pos, freq);
    float s, c;
    sincosf(theta, &s, &c);
    if (inverse) s = -s;
    float bs = __fmul_rn(b, s), bc = __fmul_rn(b, c);
    float na = fmaf(a, c, -bs), nb = fmaf(a, s, bc);
    a = hci_round_bf16(na);
    b = hci_round_bf16(nb);
}

/* RoPE of the last rope_dim values of v[0..dim) (shared memory), pair p by thread p, at pos. */
__device__ __forceinline__ void hci_dev_rope_tail(float *v, int dim, int rope_dim, const float *freq, int64_t pos,
                                                  int inverse)
{
    for (int p = threadIdx.x; p < rope_dim / 2; p += blockDim.x) {
        float a = v[dim - rope_dim + 2 * p], b = v[dim - rope_dim + 2 * p + 1];
        hci_dev_rope_pair(a, b, pos, freq[p], inverse);
        v[dim - rope_dim + 2 * p] = a;
        v[dim - rope_dim + 2 * p + 1] = b;
    }
}

/* Block-wide sum of a double (every thread gets the result). smem: blockDim.x doubles. The
 * sums these kernels make (squares of bf16 values) are exact in double, so the order of the
 * reduction does not matter. */
__device__ __forceinline__ double hci_dev_block_sum(double v, double *smem)
{
    smem[threadIdx.x] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) smem[threadIdx.x] += smem[threadIdx.x + s];
        __syncthreads();
    }
    double r = smem[0];
    __syncthreads();
    return r;
}

/* Per-block max |v| of v[0..n) in blocks of qb (n/qb <= 32): threads strided over the elements,
 * an atomic max on the float bits (order-free, so deterministic). The whole block calls it. */
__device__ __forceinline__ void hci_dev_block_amax(const float *v, int n, int qb, unsigned *am)
{
    for (int i = threadIdx.x; i < n / qb; i += blockDim.x) am[i] = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) atomicMax(&am[i / qb], __float_as_uint(fabsf(v[i])));
    __syncthreads();
}

__device__ __forceinline__ int hci_dev_block_exp(unsigned amax_bits, int fp4)
{
    float amax = __uint_as_float(amax_bits);
    return fp4 ? hci_pow2_ceil_exp(fmaxf(amax, 6.0f * 0x1p-126f), 1.0f / HCI_E2M1_MAX)
               : hci_pow2_ceil_exp(fmaxf(amax, 1e-4f), 1.0f / HCI_E4M3_MAX);
}

/* FP8 simulation (qblock 64, amax floor 1e-4) or FP4 simulation (qblock 32, floor 6*2^-126) of
 * v[0..n) in place, one thread per element. The whole block calls it. */
__device__ __forceinline__ void hci_dev_quant_sim(float *v, int n, int fp4)
{
    __shared__ unsigned am[32];
    int qb = fp4 ? 32 : 64;
    hci_dev_block_amax(v, n, qb, am);
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float s = hci_pow2(hci_dev_block_exp(am[i / qb], fp4));
        float q = v[i] / s;
        if (fp4) q = fminf(fmaxf(q, -HCI_E2M1_MAX), HCI_E2M1_MAX);
        else q = fminf(fmaxf(q, -HCI_E4M3_MAX), HCI_E4M3_MAX);
        v[i] = hci_round_bf16(__fmul_rn(fp4 ? hci_e2m1_round(q) : hci_e4m3_round(q), s));
    }
    __syncthreads();
}

/* act_quant of one 128-block of a token, four values per lane (lane l: values 4 l .. 4 l + 3): the
 * warp's amax, the smallest power-of-two scale that brings it (floored at 1e-4) inside +-448,
 * the e4m3 codes packed little-endian; the CPU backend's act_quant (cpu_linear.c). The whole warp
 * calls it (kernels/quant/act_quant.cu, and the fused rmsnorm + act_quant of kernels/qkv). */
__device__ __forceinline__ uint32_t hci_dev_act_quant4(const float (&v)[4], float *scale)
{
    float amax = 0.0f;
    for (int i = 0; i < 4; i++) amax = fmaxf(amax, fabsf(v[i]));
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    int e = hci_pow2_ceil_exp(fmaxf(amax, 1e-4f), 1.0f / HCI_E4M3_MAX);
    /* v / sc as v * 2^-e: the same correctly rounded value, without a division */
    float inv = hci_pow2(-e);
    uint32_t packed = 0;
    for (int i = 0; i < 4; i++) {
        float u = fminf(fmaxf(__fmul_rn(v[i], inv), -HCI_E4M3_MAX), HCI_E4M3_MAX);
        packed |= (uint32_t)hci_e4m3_encode(hci_e4m3_round(u)) << (8 * i);
    }
    *scale = hci_pow2(e);
    return packed;
}

/* Walsh-Hadamard transform of n (power of two) floats in place: fp32 butterflies with strides
 * 1, 2, 4, ... (each a single add or subtract, so the order within a stage is irrelevant), then
 * times scale, rounded to bf16. The whole block must call it. */
__device__ __forceinline__ void hci_dev_hadamard(float *v, int n, float scale)
{
    for (int h = 1; h < n; h <<= 1) {
        for (int p = threadIdx.x; p < n / 2; p += blockDim.x) {
            int i = (p / h) * 2 * h + (p % h);
            float a = v[i], b = v[i + h];
            v[i] = __fadd_rn(a, b);
            v[i + h] = __fsub_rn(a, b);
        }
        __syncthreads();
    }
    for (int i = threadIdx.x; i < n; i += blockDim.x) v[i] = hci_round_bf16(__fmul_rn(v[i], scale));
    __syncthreads();
}

/* Write entry `slot` of a page from values on the cache grid (format.h). The whole block calls it;
 * each quantization block picks its exponent with the simulation's rule (lossless). */
__device__ __forceinline__ void hci_dev_pack_entry(const hci_entry_layout &l, uint8_t *page, int slot,
                                                   const float *v)
{
    __shared__ unsigned am[32];
    uint8_t *d = page + (size_t)slot * l.data_bytes;
    if (l.fmt == HCI_FMT_BF16) {
        for (int i = threadIdx.x; i < l.dim; i += blockDim.x) ((uint16_t *)d)[i] = hci_bf16_from_f32(v[i]);
        return;
    }
    uint8_t *sc = page + (size_t)HCI_PAGE_ENTRIES * l.data_bytes + (size_t)slot * l.scale_bytes;
    int nb = l.quant_dim / l.qblock;
    hci_dev_block_amax(v, l.quant_dim, l.qblock, am);
    for (int i = l.quant_dim + threadIdx.x; i < l.dim; i += blockDim.x)
        ((uint16_t *)(d + l.quant_dim))[i - l.quant_dim] = hci_bf16_from_f32(v[i]);
    for (int b = threadIdx.x; b < l.scale_bytes; b += blockDim.x)
        sc[b] = b < nb ? (uint8_t)(hci_dev_block_exp(am[b], l.fp4) + 127) : 0;
    if (l.fp4) {
        for (int k = 2 * threadIdx.x; k < l.quant_dim; k += 2 * blockDim.x) {
            float s = hci_pow2(hci_dev_block_exp(am[k / l.qblock], 1));
            d[k / 2] = (uint8_t)(hci_e2m1_encode(v[k] / s) | (hci_e2m1_encode(v[k + 1] / s) << 4));
        }
    } else {
        for (int k = threadIdx.x; k < l.quant_dim; k += blockDim.x) {
            float s = hci_pow2(hci_dev_block_exp(am[k / l.qblock], 0));
            d[k] = hci_e4m3_encode(v[k] / s);
        }
    }
    __syncthreads();
}

#endif
