/* qkv/qkv.h - the element-wise family of the query, window-KV, indexer-query and output paths:
 * RMSNorms, RoPE, the FP8/FP4 simulations and the Hadamard, with the CPU backend's arithmetic
 * (qkv.cu). */
#ifndef HCI_KERNELS_QKV_H
#define HCI_KERNELS_QKV_H
#include <cuda_runtime.h>
#include <stdint.h>
#include "config.h"

/* Positions: token t of a launch sits at pos0 + t, or, when pos is not NULL, at pos[t] (a host
 * array of n <= HCI_CU_ROWS_MAX positions, ../common.cuh, passed with the launch by value): the
 * rows of several contexts in one launch (a batch's shared projections). Either way a row's
 * arithmetic is the same; HC_ERR_INVALID_ARG for more rows. */

/* Weighted RMSNorm of n bf16 rows of `dim` in place (fp32 inside, the sum of squares in double). */
int hci_cu_rmsnorm_rows(cudaStream_t s, uint16_t *v, int n, int dim, const float *w, float eps);
/* Per head: the weightless bf16 RMS norm, then RoPE on the last rope_dim dims at token t's position. */
int hci_cu_q_heads(cudaStream_t s, uint16_t *q, int n, int H, int d, int rope_dim, const float *freq,
                   int64_t pos0, const int64_t *pos, float eps);
/* RoPE on the last rope_dim dims, then the FP8 simulation (64-blocks) of the others. */
int hci_cu_kv_rows(cudaStream_t s, uint16_t *kv, int n, int d, int rope_dim, const float *freq, int64_t pos0,
                   const int64_t *pos);
/* Indexer queries in place: RoPE, Hadamard, FP4 simulation; head weights: bf16((float)wd) * wscale. */
int hci_cu_index_q_heads(cudaStream_t s, uint16_t *qi, int n, int IH, int ID, int rope_dim, const float *freq,
                         int64_t pos0, const int64_t *pos, const double *wd, float wscale, uint16_t *w);
/* Fused launches (option decode_fused), the bits of the separate kernels:
 * hci_cu_ckv_rows = hci_cu_rmsnorm_rows(c, n, C, cw), then hci_cu_act_quant of c into cq [np][C]
 * and cs [C/128][np] (../quant/quant.h; rows n..np-1 zero codes, scale 1), and
 * hci_cu_rmsnorm_rows(kv, n, d, kw), then hci_cu_kv_rows: one launch. C a multiple of 128, cq
 * 16-byte aligned. */
int hci_cu_ckv_rows(cudaStream_t s, uint16_t *c, int n, int C, const float *cw, uint8_t *cq, float *cs, int np,
                    uint16_t *kv, int d, int rope_dim, const float *kw, const float *freq, int64_t pos0,
                    const int64_t *pos, float eps);
/* hci_cu_q_heads(q, n, H, d) and hci_cu_index_q_heads(qi, n, IH, ID, wd, wscale, w), one launch. */
int hci_cu_q_index_heads(cudaStream_t s, uint16_t *q, int n, int H, int d, int rope_dim, const float *freq,
                         int64_t pos0, const int64_t *pos, float eps, uint16_t *qi, int IH, int ID, const double *wd,
                         float wscale, uint16_t *w);
/* Inverse RoPE of every head's last rope_dim dims at the query position. */
int hci_cu_inverse_rope(cudaStream_t s, uint16_t *o, int n, int H, int d, int rope_dim, const float *freq,
                        int64_t pos0, const int64_t *pos);

#endif
