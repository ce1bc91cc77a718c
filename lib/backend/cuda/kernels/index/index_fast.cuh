/* index/index_fast.cuh - what the fast score kernels share (index_fast.cu: mma.sync, any head
 * count; index_wgmma.cu: wgmma, 64 heads): their arguments, a key tile's FP4 codes fetched
 * into registers and turned into exact e4m3 bytes with the key's power-of-two scale, and the
 * staging of the CTA's query rows, head scales and weights and histograms in shared memory (the
 * head terms and their sum: index/config.h, ix_fast_terms2 and ix_fast_add2). */
#ifndef HCI_KERNELS_INDEX_FAST_CUH
#define HCI_KERNELS_INDEX_FAST_CUH
#include <stdint.h>
#include "../common.cuh"
#include "config.h"
#include "index_fast.h" /* HCI_IX_SUM_* */

namespace ixf {

constexpr int DIM = 128; /* index_head_dim taken */

/* true (the default): the prep folds s_qh into the bf16 weight and the score kernels multiply
 * each head sum by s_j once (ix_fast_terms2_folded): the same bits as scaling every dot back,
 * (D_h * s_qh) * s_j, before the reference's roundings (index/config.h: ix_fast_terms2) whenever
 * every value stays a normal float, which the host test index_fast_terms checks; one
 * multiplication per score instead of two per head and key (measured on an H100: the 128K chunk's
 * scores and top-k 2.78 ms folded, 3.37 ms not). false (-DHCI_IXF_FOLD_SCALES=0, e.g. meson's
 * -Dcuda_args): the literal form, kept to cross-check the fold on a GPU. */
#ifndef HCI_IXF_FOLD_SCALES
#define HCI_IXF_FOLD_SCALES 1
#endif
constexpr bool IXF_FOLD_SCALES = HCI_IXF_FOLD_SCALES != 0;

struct ixf_args {
    uint8_t *const *pages;
    int data_bytes, scale_bytes;
    const uint8_t *prep;
    size_t qstride;
    int IH, rows;
    int64_t pos0, stride;
    uint16_t *scores;
    uint32_t *hist;
};

/* Four e2m1 codes (16 bits, element 0 in the low nibble) -> four e4m3 bytes of value * 2^-sh
 * for 0 <= sh <= 5 (dsub = 8 * sh in every byte): the e4m3 codes of the 8 magnitudes by one
 * byte permute, the exponent lowered by a subtraction that cannot borrow (the smallest nonzero
 * magnitude, 0.5, has exponent field 6 > 5), the sign moved to bit 7. */
__device__ __forceinline__ uint32_t ixf_e2m1x4_e4m3(uint32_t h, uint32_t dsub)
{
    uint32_t mag = __byte_perm(0x3C383000u, 0x4C484440u, h & 0x7777u); /* 0 .5 1 1.5 | 2 3 4 6 */
    uint32_t nz = __vcmpne4(mag, 0u);
    return (mag - (dsub & nz)) | (ix_sign_bytes(h) & nz & 0x80808080u);
}

/* The same for any shift (a block far below the key's largest): through float, rounding. */
__device__ __forceinline__ uint32_t ixf_e2m1x4_e4m3_slow(uint32_t h, int sh)
{
    uint32_t r = 0;
    for (int i = 0; i < 4; i++) {
        float v = ldexpf(hci_e2m1_value((uint8_t)((h >> (4 * i)) & 15)), -sh);
        r |= (uint32_t)hci_e4m3_encode(hci_e4m3_round(v)) << (8 * i);
    }
    return r;
}

/* One part of a key tile: item = 4 * key + 32-block (its 16 code bytes and
 * scale byte), fetched into registers one tile ahead so that the loads overlap the MMAs. */
struct ixf_part {
    uint4 c;
    int byte;
};

__device__ __forceinline__ ixf_part ixf_fetch(const ixf_args &a, const uint8_t *page, int nk, int item)
{
    int e = item >> 2, b = item & 3;
    ixf_part p = {make_uint4(0, 0, 0, 0), 0};
    if (e < nk) {
        p.c = __ldg((const uint4 *)(page + (size_t)e * a.data_bytes + b * 16));
        p.byte = page[(size_t)IX_TILE * a.data_bytes + (size_t)e * a.scale_bytes + b];
        if (p.byte == 255) p.byte = 0; /* not finite in the CPU's decode: the block scores as zero */
    }
    return p;
}

/* A fetched part as 32 e4m3 bytes (out) and the key's scale (2^(largest block exponent));
 * keys past nk are zero. Lanes 4e..4e+3 of a warp hold one key's 4 parts, so its largest block
 * exponent is a two-step shuffle (all lanes call this). */
__device__ __forceinline__ float ixf_convert(const ixf_part &p, uint32_t (&out)[8])
{
    int byte = p.byte;
    int bmax = max(byte, __shfl_xor_sync(0xffffffffu, byte, 1));
    bmax = max(bmax, __shfl_xor_sync(0xffffffffu, bmax, 2));
    uint32_t in[4] = {p.c.x, p.c.y, p.c.z, p.c.w};
    int sh = bmax - byte;
    if (byte == 0) {
#pragma unroll
        for (int i = 0; i < 8; i++) out[i] = 0; /* scale byte 0: zeros, as the CPU decodes it */
    } else if (sh <= 5) {
        uint32_t dsub = (uint32_t)(8 * sh) * 0x01010101u;
#pragma unroll
        for (int i = 0; i < 4; i++)
            out[2 * i] = ixf_e2m1x4_e4m3(in[i] & 0xffffu, dsub), out[2 * i + 1] = ixf_e2m1x4_e4m3(in[i] >> 16, dsub);
    } else {
#pragma unroll
        for (int i = 0; i < 4; i++)
            out[2 * i] = ixf_e2m1x4_e4m3_slow(in[i] & 0xffffu, sh), out[2 * i + 1] = ixf_e2m1x4_e4m3_slow(in[i] >> 16, sh);
    }
    return bmax ? ix_pow2(bmax - 127) : 0.0f;
}

/* A prepared query row (ixf_prep; hci_cu_index_fast_qstride bytes apart): IH x DIM e4m3 bytes
 * (head h's row q_h / s_qh at h * DIM), then per pair of heads h, h + 1 (h even) a float4
 * {s_qh, s_q(h+1), w_h, w_(h+1)}: the scales and the bf16 head weights as floats (with
 * IXF_FOLD_SCALES, w_h * s_qh). */
__host__ __device__ constexpr inline size_t ixf_prep_hw(int IH) { return (size_t)IH * DIM; }
__host__ __device__ constexpr inline size_t ixf_prep_bytes(int IH) { return (size_t)IH * DIM + (size_t)IH * 8; }

/* The CTA's queries q0 .. q0 + NQ - 1 (the first QTe of them exist) into shared memory, by the NT
 * threads of the CTA (thread tid; no barrier): row r = qq * IH + h of query qq's e4m3 rows, its
 * 16-byte chunk c at qs + row_off(r, c) (the kernel's layout: padded rows or 128-byte swizzle);
 * the {scales, weights} float4 of heads h, h + 1 at hw[qq * IH / 2 + h / 2]; NQ zeroed 256-bin
 * histograms at hist. Rows, scales and weights of missing queries are zero. */
template <int NQ, int NT, class RowOff>
__device__ __forceinline__ void ixf_stage_queries(const ixf_args &a, int IH, int q0, int QTe, int tid, uint8_t *qs,
                                                  float4 *hw, uint32_t *hist, RowOff &&row_off)
{
    for (int it = tid; it < NQ * IH * (DIM / 16); it += NT) {
        int r = it / (DIM / 16), c = it % (DIM / 16), qq = r / IH;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (qq < QTe) v = *(const uint4 *)(a.prep + (size_t)(q0 + qq) * a.qstride + (size_t)(r % IH) * DIM + c * 16);
        *(uint4 *)(qs + row_off(r, c)) = v;
    }
    for (int it = tid; it < NQ * IH / 2; it += NT) {
        int qq = it / (IH / 2);
        float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (qq < QTe) v = ((const float4 *)(a.prep + (size_t)(q0 + qq) * a.qstride + ixf_prep_hw(IH)))[it % (IH / 2)];
        hw[it] = v;
    }
    for (int i = tid; i < NQ * 256; i += NT) hist[i] = 0;
}

/* The wgmma score kernel (index_wgmma.cu) for IH == 64, the head sum as sum says
 * (index_fast.h; the tensor-core sums need the folded scales): HC_OK or HC_ERR_CUDA. */
int wgmma_scores(cudaStream_t s, const ixf_args &a, int sms, int sum);

} // namespace ixf

#endif
