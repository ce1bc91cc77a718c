/* qkv/config.h - launch shapes of the element-wise query / KV / output kernels (qkv.cu). */
#ifndef HCI_KERNELS_QKV_CONFIG_H
#define HCI_KERNELS_QKV_CONFIG_H

#define QKV_THREADS 128      /* one CTA per row or (token, head); a power of two (hci_dev_block_sum) */
#define QKV_ROPE_THREADS 32  /* inverse RoPE: one warp per (token, head), a pair per lane */

#endif
