/* gemv/config.h - launch shape of the GEMVs (gemv.cu): one warp per output row. */
#ifndef HCI_KERNELS_GEMV_CONFIG_H
#define HCI_KERNELS_GEMV_CONFIG_H

#define GV_WARPS 8               /* rows (warps) per CTA */
#define GV_MAX_N 16              /* tokens per call: one accumulator per token in registers */
#define GV_SCALE_BLOCK 128       /* FP8: one scale per 128x128 weights and per 128 k of a token */
#define GV_LANES_PER_BLOCK 8     /* FP8: eight lanes of 16 codes (one 16-byte load) share a block ... */
#define GV_BLOCKS_PER_STEP (32 / GV_LANES_PER_BLOCK) /* ... so a warp takes four blocks per step */

#endif
