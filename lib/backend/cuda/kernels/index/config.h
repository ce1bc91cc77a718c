/* index/config.h - tuning constants and pure helpers of the lightning indexer (index.cu), host
 * and device, plain C: a host test (tests/test_kernel_config.c) checks them without a GPU. */
#ifndef HCI_KERNELS_INDEX_CONFIG_H
#define HCI_KERNELS_INDEX_CONFIG_H
#include <stdbool.h>
#include <stdint.h>
#include "util/bf16.h"

#define IX_TILE 64                         /* keys per score tile: one cache page */
#define IX_THREADS 256                     /* score kernel block */
#define IX_SEL_THREADS 256                 /* select kernels block (find_bucket needs exactly 256) */
#define IX_SEG (IX_SEL_THREADS * 8)        /* keys per select segment: 8 per thread */
#define IX_MAX_GROUP 1024                  /* query rows scored before their top-k runs */
#define IX_SCORE_BUDGET ((int64_t)1 << 25) /* 16-bit score keys held at once (64 MiB) */
#define IX_QPREP_MAX 20480                 /* prepared query bytes per row: IH*ID <= 16384, IH <= 512 */
#define IX_MAX_K 4096                      /* sort buffer of the last kernel: 32 KiB */
#define IX_TS 72                           /* row stride of the head-term tile (64 keys + pad) */
#define IX_MAX_SMEM (200 * 1024)           /* dynamic shared memory of a score CTA at most */
#define IX_MAX_HEADS 512                   /* IH: prepared summaries of a row fit IX_QPREP_MAX ... */
#define IX_MAX_ROW_ELEMS 16384             /* ... and IH * ID: its int8 mantissas too */
#define IX_PREP_THREADS 256                /* query preparation: one CTA per query row ... */
#define IX_PREP_MAX_BLOCKS 512             /* ... with a status word per (head, 32-block) in smem */
#define IX_QTILE_ROWS 256                  /* (query, head) rows of a score CTA: QT = IX_QTILE_ROWS / IH ... */
#define IX_QTILE_BYTES 65536               /* ... fewer while their int8 rows (QT * IH * (ID + 16)) pass this */
#define IX_SORT_MAX_THREADS 1024           /* last kernel: bitonic sort of K <= IX_MAX_K candidates */

/* The IMMA accumulators start at the bits of 1.5 * 2^23, so the int32 result read as a float is
 * 1.5 * 2^23 + N exactly (|N| < 2^22): the conversion is one exact subtraction. */
#define IX_BIAS_BITS 0x4B400000
#define IX_BIAS_VAL 12582912.0f

/* A 32-value block of FP4-grid values as m_i * 2^u, |m_i| <= 15 (q side) or <= 12 (fp8 keys).
 * Block status: zero (all m = 0), ok, or bad (not representable: the slow exact path runs). */
#define IX_ZERO 0
#define IX_OK 1
#define IX_BAD 2

/* Per-row (query head) or per-key summary: the range of block exponents u over nonzero blocks
 * and whether any block is bad. */
HCI_HD uint32_t ix_meta(int bad, int umin, int umax)
{
    return (uint32_t)(umin + 512) | ((uint32_t)(umax + 512) << 10) | ((uint32_t)(bad != 0) << 20);
}

/* Can the dot of query row meta mq and key meta mk be taken from the fp32 block combine?
 * With E_b = uq_b + uk_b, every block sum N_b is an integer with |N_b| <= 32*15*15 < 2^13, so
 * each partial sum of N_b * 2^E_b is a multiple of 2^Emin below nb * 2^(13+Emax): exact in fp32
 * when Emin >= -149, 13 + lg + (Emax - Emin) <= 24 and 13 + lg + Emax <= 127 (lg = ceil(log2 nb)).
 * The exact value is then also what the reference's exact double sum rounds to. */
HCI_HD bool ix_pair_fast(uint32_t mq, uint32_t mk, int lg)
{
    if ((mq | mk) & (1u << 20)) return false;
    int emin = (int)(mq & 1023u) + (int)(mk & 1023u) - 1024;
    int emax = (int)((mq >> 10) & 1023u) + (int)((mk >> 10) & 1023u) - 1024;
    return emin >= -149 && emax - emin <= 11 - lg && emax <= 114 - lg;
}

/* 2^u as a float for u in [-149, 127] (subnormal below -126). */
HCI_HD float ix_pow2(int u)
{
    return u >= -126 ? hci_f32_from_bits((uint32_t)(u + 127) << 23) : hci_f32_from_bits(1u << (u + 149));
}

/* bf16 bits -> 16-bit key whose unsigned order is the score order (the top half of the CPU's
 * 32-bit pick key, whose lower score bits are zero for a bf16 score). */
HCI_HD uint32_t ix_key16(uint16_t b)
{
    return (b & 0x8000u) ? (uint32_t)(uint16_t)~b : (uint32_t)(b | 0x8000u);
}

/* Split 32 bf16 values (FP4-grid) into int8 m_i and one exponent u with v_i = m_i * 2^u, taking
 * u = E - 3 for the block's largest exponent E: a value of the grid c * 2^s (c in e2m1) is a
 * multiple of 2^(s-1) and E <= s + 2, so m_i is an integer below 16. Anything else (subnormal,
 * inf/nan, finer values) is reported IX_BAD. m receives 8 words of 4 int8 (element order). */
HCI_HD int ix_derive32(const uint16_t *v, uint32_t *m, int *u)
{
    int emax = 0, bad = 0;
    for (int i = 0; i < 32; i++) {
        int e = (v[i] >> 7) & 0xff, mant = v[i] & 0x7f;
        if (e == 0xff || (e == 0 && mant)) bad = 1;
        if (e > emax) emax = e;
    }
    for (int w = 0; w < 8; w++) m[w] = 0;
    *u = 0;
    if (bad) return IX_BAD;
    if (emax == 0) return IX_ZERO;
    for (int i = 0; i < 32; i++) {
        int e = (v[i] >> 7) & 0xff;
        if (e == 0) continue; /* +-0 */
        int sh = emax - e + 4, sig = 0x80 | (v[i] & 0x7f);
        if (sh > 7 || (sig & ((1 << sh) - 1))) return IX_BAD;
        int mi = sig >> sh;
        if (v[i] & 0x8000) mi = -mi;
        m[i >> 2] |= (uint32_t)(uint8_t)(int8_t)mi << (8 * (i & 3));
    }
    *u = emax - 130; /* 2^(E-3) with E = emax - 127 */
    return IX_OK;
}

/* The same split done by 4 lanes that hold 8 values each (x: 4 words of 2 bf16, element order).
 * ix_scan8 gives the part's largest exponent field and whether it holds a subnormal/inf/nan;
 * after max/or over the 4 parts, ix_conv8 makes the part's 2 words of int8 for the block's emax
 * and returns 0 when a value is not a multiple of 2^(E-3). */
HCI_HD void ix_scan8(const uint32_t *x, int *emax, int *bad)
{
    int em = 0, bd = 0;
    for (int i = 0; i < 8; i++) {
        uint32_t v = (x[i >> 1] >> (16 * (i & 1))) & 0xffffu;
        int e = (v >> 7) & 0xff, mant = v & 0x7f;
        if (e == 0xff || (e == 0 && mant)) bd = 1;
        if (e > em) em = e;
    }
    *emax = em, *bad = bd;
}

HCI_HD int ix_conv8(const uint32_t *x, int emax, uint32_t *w0, uint32_t *w1)
{
    uint32_t w[2] = {0, 0};
    int ok = 1;
    for (int i = 0; i < 8; i++) {
        uint32_t v = (x[i >> 1] >> (16 * (i & 1))) & 0xffffu;
        int e = (v >> 7) & 0xff;
        if (e == 0) continue;
        int sh = emax - e + 4, sig = 0x80 | (int)(v & 0x7f);
        if (sh > 7 || (sig & ((1 << sh) - 1))) ok = 0;
        int mi = sh > 7 ? 0 : sig >> sh;
        if (v & 0x8000) mi = -mi;
        w[i >> 2] |= (uint32_t)(uint8_t)(int8_t)mi << (8 * (i & 3));
    }
    *w0 = w[0], *w1 = w[1];
    return ok;
}

/* Byte permute (PTX prmt, default mode): byte i of the result is byte (s >> 4i) & 7 of {y, x}. */
HCI_HD uint32_t ix_prmt(uint32_t x, uint32_t y, uint32_t s)
{
#if defined(__CUDA_ARCH__)
    return __byte_perm(x, y, s);
#else
    uint64_t v = ((uint64_t)y << 32) | x;
    uint32_t r = 0;
    for (int i = 0; i < 4; i++) r |= (uint32_t)((v >> (8 * ((s >> (4 * i)) & 7))) & 0xff) << (8 * i);
    return r;
#endif
}

/* 0xff in byte i where the e2m1 code in nibble i of h (16 bits) is negative. */
HCI_HD uint32_t ix_sign_bytes(uint32_t h)
{
    uint32_t x = (h >> 3) & 0x1111u;
    x = (x & 1u) | ((x & 0x10u) << 4) | ((x & 0x100u) << 8) | ((x & 0x1000u) << 12);
    return x * 0xffu;
}

/* Four e2m1 codes (16 bits, element 0 in the low nibble) -> four int8 of 2 * value. */
HCI_HD uint32_t ix_fp4x4_to_s8(uint32_t h)
{
    uint32_t s = h & 0x7777u;
    uint32_t pos = ix_prmt(0x03020100u, 0x0C080604u, s);  /* 0 1 2 3 4 6 8 12 */
    uint32_t neg = ix_prmt(0xFDFEFF00u, 0xF4F8FAFCu, s);  /* their negatives */
    uint32_t m = ix_sign_bytes(h);
    return (pos & ~m) | (neg & m);
}

/* One 32-value block of an FP8-format (FP4) index key: 16 code bytes w[4] and its ue8m0 byte
 * -> 8 words of int8 m = 2 * e2m1 value, status and u with value = m * 2^u. The CPU decodes
 * c * 2^(byte-127): byte 0 gives zeros, byte 255 inf/nan (bad: the slow path reproduces it). */
HCI_HD int ix_fp4_block(const uint32_t *w, int byte, uint32_t *m, int *u)
{
    int nz = ((w[0] | w[1] | w[2] | w[3]) & 0x77777777u) != 0;
    int status = byte == 255 ? IX_BAD : (byte == 0 || !nz ? IX_ZERO : IX_OK);
    *u = byte - 128;
    for (int i = 0; i < 4; i++) {
        m[2 * i] = status == IX_ZERO ? 0u : ix_fp4x4_to_s8(w[i] & 0xffffu);
        m[2 * i + 1] = status == IX_ZERO ? 0u : ix_fp4x4_to_s8(w[i] >> 16);
    }
    return status;
}

/* ---- the fast scores (index_fast.cu, index_wgmma.cu; option index_fast) */

/* Query head scale of the fast scores: s_q = 2^(e - 129) with e = ix_fast_qexp(amax), amax the
 * head's largest |q|: for amax in [2^E, 2^(E+1)) s_q = 2^(E-2), so q / s_q has its largest value
 * in [4, 8) and an FP4-grid head is an exact e4m3 row (unless some 32-block lies 2^8 or more
 * below the largest). e is clamped so that s_q and 1 / s_q are normal floats; zero, an amax
 * below 2^-107 or NaN give s_q = 1. */
HCI_HD int ix_fast_qexp(float amax)
{
    int e = (int)((hci_bits_from_f32(amax) >> 23) & 0xffu);
    return amax > 0.0f && e >= 20 ? (e < 254 ? e : 254) : 129;
}

/* Two head terms of one (query, key), t0 and t1 as floats (bf16 values). */
typedef struct ix_terms2 {
    float t0, t1;
} ix_terms2;

/* x rounded to bf16 (nearest, ties to even) on the fp32 adder instead of the conversion unit:
 * (x + c) - c with c = sign(x) 2^(e + 16) for x's exponent e. c's ulp is x's bf16 ulp, so the
 * addition rounds x to 8 significant bits (the sum stays in [|c|, 2|c|)) and the subtraction is
 * exact. The same value as hci_round_bf16 for normal x below 2^111 and for +0 (c = 0); the
 * indexer's tensor-core dots are multiples of 2^-18 or 0 (the host test index_fast_terms checks
 * the rule on random and tie values). */
HCI_HD float ix_bf16_round_fadd(float x)
{
#if defined(__CUDA_ARCH__)
    const float c = __fmul_rn(__uint_as_float(__float_as_uint(x) & 0xFF800000u), 65536.0f);
    return __fsub_rn(__fadd_rn(x, c), c);
#else
    const float c = hci_f32_from_bits(hci_bits_from_f32(x) & 0xFF800000u) * 65536.0f;
    return (x + c) - c;
#endif
}

#if defined(__CUDA_ARCH__)
/* bf16(r * w) from the bf16 r in the high half of rr and the bf16 value w held by a float (low 16
 * bits zero), returned as that float: fma.rn.bf16x2 rounds the exact product once (the fp32
 * product of two bf16 values is exact, so this is bf16(fl32(r * w))), and the low half, the other
 * half of rr times the zero half of w plus +0, is +0 (for a finite rr). */
__device__ __forceinline__ float ix_bf16_mul_hi(uint32_t rr, float w)
{
    uint32_t m;
    asm("fma.rn.bf16x2 %0, %1, %2, %3;\n" : "=r"(m) : "r"(rr), "r"(__float_as_uint(w)), "r"(0u));
    return __uint_as_float(m);
}

/* The low half of r copied into both halves (ptxas folds it into the next HFMA2's .H0_H0). */
__device__ __forceinline__ uint32_t ix_bf16x2_lo_lo(uint32_t r)
{
    uint32_t rr;
    asm("{\n.reg .b16 l, h;\nmov.b32 {l, h}, %1;\nmov.b32 %0, {l, l};\n}\n" : "=r"(rr) : "r"(r));
    return rr;
}
#endif

/* Two head terms of one (query, key) of the fast scores, at the reference's rounding points
 * (cpu_index.c): for head i of the pair, dot_i = (d_i * sq_i) * sk, the fp32 tensor-core dot of
 * the e4m3 copies scaled back by the query head's and the key's powers of two (exact whenever
 * d_i * sq_i is a normal float: the fp32 dot of the original values), then
 * t_i = bf16(relu(bf16(dot_i)) * w_i), w_i the head weight (a bf16 value held by a float). On
 * the device: one cvt.rn.relu.bf16x2 for both dots (round, then relu) and one fma.rn.bf16x2 per
 * term whose result is the term as an fp32 (ix_bf16_mul_hi). */
HCI_HD ix_terms2 ix_fast_terms2(float d0, float d1, float sq0, float sq1, float sk, float w0, float w1)
{
    ix_terms2 t;
#if defined(__CUDA_ARCH__)
    float x0 = __fmul_rn(__fmul_rn(d0, sq0), sk), x1 = __fmul_rn(__fmul_rn(d1, sq1), sk);
    uint32_t r;
    asm("cvt.rn.relu.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(x1), "f"(x0)); /* x1 high, x0 low */
    t.t0 = ix_bf16_mul_hi(ix_bf16x2_lo_lo(r), w0);
    t.t1 = ix_bf16_mul_hi(r, w1);
#else
    float r0 = hci_round_bf16((d0 * sq0) * sk), r1 = hci_round_bf16((d1 * sq1) * sk);
    t.t0 = hci_round_bf16((r0 < 0.0f ? 0.0f : r0) * w0);
    t.t1 = hci_round_bf16((r1 < 0.0f ? 0.0f : r1) * w1);
#endif
    return t;
}

/* The same two terms divided by sk, from the unscaled dots d_i and the weights pre-multiplied by
 * the query heads' scales (wq_i = w_i * sq_i, a bf16 value, exact): bf16(relu(bf16(d_i)) * wq_i).
 * Multiplying by a power of two commutes with rounding to bf16 or fp32 while every value involved
 * is a normal float (or zero), so then ix_fast_terms2 = this * sk term by term, and an fp32 sum
 * of these terms times sk is the same sum of ix_fast_terms2's: one multiplication per score
 * instead of two per head (the kernels' IXF_FOLD_SCALES, index_fast.cuh). They can differ only
 * where a dot, weight, term or partial sum leaves the normal range (below 2^-126 or overflowing),
 * far from the indexer's values. */
HCI_HD ix_terms2 ix_fast_terms2_folded(float d0, float d1, float wq0, float wq1)
{
#if defined(__CUDA_ARCH__)
    ix_terms2 t;
    uint32_t r;
    asm("cvt.rn.relu.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(d1), "f"(d0));
    t.t0 = ix_bf16_mul_hi(ix_bf16x2_lo_lo(r), wq0);
    t.t1 = ix_bf16_mul_hi(r, wq1);
    return t;
#else
    return ix_fast_terms2(d0, d1, 1.0f, 1.0f, 1.0f, wq0, wq1);
#endif
}

/* (acc + t0) + t1 in fp32. */
HCI_HD float ix_fast_add2(float acc, ix_terms2 t)
{
#if defined(__CUDA_ARCH__)
    return __fadd_rn(__fadd_rn(acc, t.t0), t.t1);
#else
    acc += t.t0;
    return acc + t.t1;
#endif
}

#endif
