/* compress/config.h - launch shapes of the compressors (compress.cu). */
#ifndef HCI_KERNELS_COMPRESS_CONFIG_H
#define HCI_KERNELS_COMPRESS_CONFIG_H

#define CP_THREADS 256           /* element-wise kernels (projections in, state out) */
#define CP_EMIT_MIN_THREADS 64   /* emit: one CTA per entry, one thread per channel, rounded up to a */
#define CP_EMIT_MAX_THREADS 1024 /* power of two in this range (hci_dev_block_sum; its smem is this big) */

#endif
