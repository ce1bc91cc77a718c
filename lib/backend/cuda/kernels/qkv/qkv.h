/* qkv/qkv.h - the element-wise family of the query, window-KV, indexer-query and output paths:
 * RMSNorms, RoPE, the FP8/FP4 simulations and the Hadamard, with the CPU backend's arithmetic
 * (qkv.cu). */
#ifndef HCI_KERNELS_QKV_H
#define HCI_KERNELS_QKV_H
#include <cuda_runtime.h>
#include <stdint.h>
#include "config.h"

/* Weighted RMSNorm of n bf16 rows of `dim` in place (fp32 inside, the sum of squares in double). */
int hci_cu_rmsnorm_rows(cudaStream_t s, uint16_t *v, int n, int dim, const float *w, float eps);
/* Per head: the weightless bf16 RMS norm, then RoPE on the last rope_dim dims at pos0 + t. */
int hci_cu_q_heads(cudaStream_t s, uint16_t *q, int n, int H, int d, int rope_dim, const float *freq,
                   int64_t pos0, float eps);
/* RoPE on the last rope_dim dims, then the FP8 simulation (64-blocks) of the others. */
int hci_cu_kv_rows(cudaStream_t s, uint16_t *kv, int n, int d, int rope_dim, const float *freq, int64_t pos0);
/* Indexer queries in place: RoPE, Hadamard, FP4 simulation; head weights: bf16((float)wd) * wscale. */
int hci_cu_index_q_heads(cudaStream_t s, uint16_t *qi, int n, int IH, int ID, int rope_dim, const float *freq,
                         int64_t pos0, const double *wd, float wscale, uint16_t *w);
/* Inverse RoPE of every head's last rope_dim dims at the query position. */
int hci_cu_inverse_rope(cudaStream_t s, uint16_t *o, int n, int H, int d, int rope_dim, const float *freq,
                        int64_t pos0);

#endif
