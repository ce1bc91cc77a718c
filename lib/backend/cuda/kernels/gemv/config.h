/* gemv/config.h - launch shapes of the GEMVs: the exact ones (gemv.cu, one warp per output row)
 * and the fast ones on tensor cores (gemv_fp8_tc.cu, gemv_bf16_tc.cu). Plain C (host and device:
 * HCI_HD), so that tests/test_kernel_config.c checks the fast kernels' maps on the host. */
#ifndef HCI_KERNELS_GEMV_CONFIG_H
#define HCI_KERNELS_GEMV_CONFIG_H
#include "util/bf16.h" /* HCI_HD */

#define GV_WARPS 8               /* rows (warps) per CTA */
#define GV_MAX_N 16              /* tokens per call: one accumulator per token in registers */
#define GV_SCALE_BLOCK 128       /* FP8: one scale per 128x128 weights and per 128 k of a token */
#define GV_LANES_PER_BLOCK 8     /* FP8: eight lanes of 16 codes (one 16-byte load) share a block ... */
#define GV_BLOCKS_PER_STEP (32 / GV_LANES_PER_BLOCK) /* ... so a warp takes four blocks per step */

/* ---- fast FP8 GEMV (gemv_fp8_tc.cu): mma.m16n8k32 e4m3 with fp32 promotion per 128-k block.
 * The tokens are the mma's M side (16 per m-tile, zero rows beyond n), the weight rows its N side
 * (a row group of 8). The k-blocks of a row group fall into 8 residue classes kb % 8, each summed
 * in k order, and the classes are added in order (below): a fixed split, whatever the number of
 * tokens, so that a token's result does not depend on the others in the call (batch
 * invariance). ---- */
#define GT_ROWS 8                /* weight rows of a row group = the mma's n */
#define GT_WARPS 8               /* warps per CTA */
#define GT_TOK 16                /* tokens per m-tile = the mma's m */
#define GT_MAX_MT 4              /* m-tiles per call: 64 tokens */
#define GT_MAX_N (GT_TOK * GT_MAX_MT)
#define GT_UNROLL 4              /* (gemv_tc_ref.cu) k-blocks of a warp loaded before any is used */

/* The k-split is a property of the arithmetic, not of the threads: output (token, row) is
 *   sum_{c = 0..7} in order of acc_c,  acc_c = the k-units kb = c, c + 8, c + 16, ... in order,
 * a k-unit being a 128-k block promoted with fmaf (FP8) or a 32-element span chained in the mma
 * accumulator (bf16). The kernels give the 8 residue classes of a row group to a team of
 * S = 1, 2, 4 or 8 warps: member j keeps the classes j, j + S, ... (GT_CLASSES / S accumulator
 * sets) and the team adds the 8 in class order. Every S computes the same bits; S only trades
 * warps per row group (memory parallelism) for a cross-warp sum through shared memory. */
#define GT_CLASSES 8             /* residue classes of the k-units = the previous kernel's warps */
/* k-units a warp loads before using any (8 KiB; halved for 2+ m-tiles, whose token operands
 * need the registers) */
#define GT_BATCH_FP8 8           /* k-blocks, 2 x 16-byte loads each */
#define GT_BATCH_BF16 16         /* spans, one 16-byte load each */
#define GT_WARPS_PER_SM 16       /* resident warps per SM: 2 CTAs of 8 warps at <= 128 registers */

/* The team size S for `groups` row groups of 8 rows, mt m-tiles of 16 tokens and `sms` SMs: the
 * largest power of two up to GT_CLASSES whose grid (groups x S warps) is resident at once, so
 * that every warp starts loading at the start, with more k-blocks per warp rather than a second
 * wave; at least the S that keeps a warp's accumulators (GT_CLASSES / S * mt float4) within 8. */
HCI_HD int gt_pick_split(int groups, int mt, int sms)
{
    const int lo = mt <= 1 ? 1 : mt == 2 ? 2 : 4;
    int s = GT_CLASSES;
    while (s > lo && (long long)groups * s > (long long)GT_WARPS_PER_SM * sms) s /= 2;
    return s;
}

/* bf16 (gemv_bf16_tc.cu): a span is 32 elements (64 bytes); lane t loads elements [8 t, 8 t + 8)
 * and step s of k = 16 takes [8 t + 4 s, 8 t + 4 s + 4): element gt_span_elem(s, k) for the
 * logical k of mma.m16n8k16 (2 t, 2 t + 1 in the first register, 8 + 2 t, 9 + 2 t in the second). */
#define GT_BF16_SPAN 32
HCI_HD int gt_span_elem(int step, int k)
{
    int t = (k & 7) >> 1, half = k >> 3, i = k & 1;
    return 8 * t + 4 * step + 2 * half + i;
}

/* Byte map. A k-block of 128 codes is two spans of 64; in each span lane (g, t) (g = lane / 4,
 * t = lane % 4) loads the 16 bytes [16 t, 16 t + 16) of its weight row g and of its tokens g and
 * g + 8 with one 16-byte load each, and feeds them to two mma steps of k = 32: step s takes bytes
 * [16 t + 8 s, 16 t + 8 s + 8). mma's operand rule (PTX, m16n8k32 .e4m3) puts k = 4 t + i in the
 * first register and 16 + 4 t + i in the second, for A and B alike; so logical k of step s maps
 * to the span byte gt_span_byte(s, k). The map is the same for weights and tokens, so each step
 * pairs equal bytes, and the two steps together cover the span once. */
HCI_HD int gt_span_byte(int step, int k)
{
    int t = (k & 15) >> 2, half = k >> 4, i = k & 3;
    return 16 * t + 8 * step + 4 * half + i;
}

#endif
