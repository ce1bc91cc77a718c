/* gemv/gemv.h - the GEMV family: projections of a few tokens (decode), weights read once, the
 * arithmetic exact as on the CPU backend (gemv.cu). */
#ifndef HCI_KERNELS_GEMV_H
#define HCI_KERNELS_GEMV_H
#include <cuda_runtime.h>
#include <stdint.h>
#include "../common.cuh" /* hci_cu_seg */
#include "config.h"

/* The most tokens a GEMV call takes; more go to the GEMM paths. */
#define HCI_CU_GEMV_MAX_N GV_MAX_N
/* The most tokens the fast GEMVs take (option gemv_fast). */
#define HCI_CU_GEMV_FAST_MAX_N GT_MAX_N

/* y[t][r] (bf16, leading dim ldy) for t < n <= 16: W codes [M][K] with scales [M/128][sld], x codes
 * [np][K] with scales [K/128][np]; the CPU's block-by-block fp32 promotion of exact block dots.
 * K a multiple of 128, W and xq 16-byte aligned (else HC_ERR_INVALID_ARG). */
int hci_cu_gemv_fp8(cudaStream_t s, const uint8_t *W, const float *Ws, int sld, int M, int K, const uint8_t *xq,
                    const float *xs, int np, int n, uint16_t *y, int ldy);
/* The fast variant for n <= GT_MAX_N (64) tokens, same arguments (M a multiple of 8): FP8 tensor
 * cores with fp32 promotion per 128-k block (gemv_fp8_tc.cu). Deterministic and batch-invariant,
 * within the faithful tolerance of the exact result, not bitwise equal to it. */
int hci_cu_gemv_fp8_fast(cudaStream_t s, const uint8_t *W, const float *Ws, int sld, int M, int K, const uint8_t *xq,
                         const float *xs, int np, int n, uint16_t *y, int ldy);
/* The fast variant of the grouped bf16 GEMV for n <= GT_MAX_N tokens, bf16 out only: mma.m16n8k16
 * with fp32 accumulation (gemv_bf16_tc.cu), deterministic and batch-invariant. Rows per group a
 * multiple of 8, K of 32, ldx of 8. */
int hci_cu_gemv_bf16_fast(cudaStream_t s, const uint16_t *W, int M, int K, int groups, const uint16_t *x, int ldx,
                          int n, uint16_t *out, int ldo);
/* The two with the team size forced (split 1, 2, 4 or 8 warps per row group, at least
 * 2, 4, 4 for 17-32, 33-48, 49-64 tokens; 0: the launcher's choice, config.h's gt_pick_split),
 * for tools/gemv-check: every split must give the same bits. */
int hci_cu_gemv_fp8_fast_split(cudaStream_t s, const uint8_t *W, const float *Ws, int sld, int M, int K,
                               const uint8_t *xq, const float *xs, int np, int n, uint16_t *y, int ldy, int split);
int hci_cu_gemv_bf16_fast_split(cudaStream_t s, const uint16_t *W, int M, int K, int groups, const uint16_t *x,
                                int ldx, int n, uint16_t *out, int ldo, int split);
/* The previous fast kernels (gemv_tc_ref.cu), the bitwise reference of the two above
 * (tools/gemv-check) and the module's kernels while the option gemv_teams is off. */
int hci_cu_gemv_fp8_fast_ref(cudaStream_t s, const uint8_t *W, const float *Ws, int sld, int M, int K,
                             const uint8_t *xq, const float *xs, int np, int n, uint16_t *y, int ldy);
int hci_cu_gemv_bf16_fast_ref(cudaStream_t s, const uint16_t *W, int M, int K, int groups, const uint16_t *x,
                              int ldx, int n, uint16_t *out, int ldo);
/* Grouped launches (option decode_fused): the weights seg[0 .. nseg) (nseg <= HCI_CU_SEGS_MAX; W,
 * Ws, sld, M; y bf16 with leading dim ldy) over the same input in one launch, every output the
 * bits of the one-weight launcher's (hci_cu_gemv_fp8_fast_split with any split, hci_cu_gemv_fp8,
 * hci_cu_gemv_bf16 with outd). The same conditions per segment as those; split as there (0: the
 * launcher's choice, gt_pick_split over all the segments' row groups). */
int hci_cu_gemv_fp8_fast_grouped(cudaStream_t s, const hci_cu_seg *seg, int nseg, int K, const uint8_t *xq,
                                 const float *xs, int np, int n, int split);
int hci_cu_gemv_fp8_grouped(cudaStream_t s, const hci_cu_seg *seg, int nseg, int K, const uint8_t *xq,
                            const float *xs, int np, int n);
/* bf16 weights (Ws, sld unused), one group each, y double [n][ldy]: exact products summed in double. */
int hci_cu_gemv_bf16_grouped(cudaStream_t s, const hci_cu_seg *seg, int nseg, int K, const uint16_t *x, int ldx,
                             int n);
/* For g < groups: out[t][g*Mg + r] = sum_k x[t][g*K + k] * W[g*Mg + r][k] (Mg = M / groups), exact
 * products summed in double; written as double (outd) or bf16 (outb), leading dim ldo. n <= 16. */
int hci_cu_gemv_bf16(cudaStream_t s, const uint16_t *W, int M, int K, int groups, const uint16_t *x, int ldx, int n,
                     double *outd, uint16_t *outb, int ldo);

#endif
