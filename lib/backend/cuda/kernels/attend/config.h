/* attend/config.h - work decomposition and limits of the sparse attention (attend.cu). */
#ifndef HCI_KERNELS_ATTEND_CONFIG_H
#define HCI_KERNELS_ATTEND_CONFIG_H

#define AT_THREADS 256        /* 8 warps: 2 head tiles of 16 x 4 entry quarters of 16 (tensor-core path) */
#define AT_BLK 64             /* entries per block */
#define AT_HG 32              /* heads per CTA, tensor-core path */
#define AT_PS 72              /* row stride of P (bf16): 64 entries + 8 pad */
#define AT_TARGET_CTAS 264    /* below this many (query, head group) CTAs the rows are split */
#define AT_MIN_BLKS 2         /* blocks per split at least */
#define AT_MAX_SPLIT 256
#define AT_FAST_SPLIT_N 4     /* fast path: pieces of up to this many queries split their rows */
#define AT_FAST_MAX_SPLIT 64  /* into at most this many splits (decode at 1M: 64 CTAs of 2 blocks) */
#define AT_MAX_SMEM (220 * 1024)
#define AT_COMBINE_THREADS 128 /* merge of the splits: one CTA per (query, head) */

#endif
