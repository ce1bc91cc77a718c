/* quant/config.h - launch shape of the activation quantization (act_quant.cu). */
#ifndef HCI_KERNELS_QUANT_CONFIG_H
#define HCI_KERNELS_QUANT_CONFIG_H

#define AQ_BLOCK 128                  /* values per activation scale (1x128, the FP8 recipe) */
#define AQ_PER_LANE 4                 /* values per lane: one warp per (token, block) ... */
#define AQ_THREADS 256                /* ... eight warps per CTA */
#define AQ_ROW_MULT 16                /* callers pad the token rows to a multiple of this (the GEMMs' N) */

#endif
