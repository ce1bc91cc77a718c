/* gemm/gemm.h - the GEMM family: block-scaled FP8 projections of many tokens on the tensor cores
 * with the CPU backend's arithmetic (gemm_fp8.cu; on Hopper's wgmma: gemm_fp8_wgmma.cu) or with
 * the official kernels' on Hopper's native FP8 tensor cores (gemm_fp8_native.cu), and the fast
 * bf16 projection of any number of tokens (gemm_bf16.cu; decode: gemm_bf16_few.cu); tiles and
 * maps in config.h. */
#ifndef HCI_KERNELS_GEMM_H
#define HCI_KERNELS_GEMM_H
#include <cuda_runtime.h>
#include <stdint.h>
#include "../common.cuh" /* hci_cu_seg */
#include "config.h"

/* y[t][r] (bf16, leading dim ldy) for t < n only: the block dots of e4m3 codes by f16 mma.sync
 * (fp32 accumulation per 128-block), then fl32(acc + fl32(P * fl32(xs * ws))) in k order as the
 * CPU backend. W [M][K] codes with scales Ws [M/128][sld]; xq [np][K] codes (rows n.. zero) with
 * scales xs [K/128][np]; M % 128 == 0, K % 128 == 0, np % 16 == 0. HC_ERR_INVALID_ARG on a bad
 * shape, HC_ERR_CUDA when the launch fails. */
int hci_cu_gemm_fp8(cudaStream_t s, const uint8_t *W, const float *Ws, int sld, int M, int K, const uint8_t *xq,
                    const float *xs, int np, int n, uint16_t *y, int ldy);

/* The same y from Hopper's wgmma (gemm_fp8_wgmma.cu; CUDA option gemm_wgmma): the same block dots
 * (f16 codes, fp32 accumulation per 128-block, each k16 step over the same 16 products) and the
 * same k-order sum; batch-invariant. Same arguments and shapes as hci_cu_gemm_fp8;
 * HC_ERR_INVALID_ARG also when the device is not an sm_90 (the caller then falls back). */
int hci_cu_gemm_fp8_wgmma(cudaStream_t s, const uint8_t *W, const float *Ws, int sld, int M, int K, const uint8_t *xq,
                          const float *xs, int np, int n, uint16_t *y, int ldy);
/* The same with the token tile forced (bn 128, 64, 32 or 16; 0: the launcher's choice), for
 * tools/gemm-check: every bn must give the same bits. */
int hci_cu_gemm_fp8_wgmma_bn(cudaStream_t s, const uint8_t *W, const float *Ws, int sld, int M, int K,
                             const uint8_t *xq, const float *xs, int np, int n, uint16_t *y, int ldy, int bn);
/* The token tile the launcher takes for M rows and np token rows on the current device (0 when
 * the SM count cannot be read). */
int hci_cu_gemm_fp8_wgmma_tile(int M, int np);

/* y on Hopper's native FP8 tensor cores (gemm_fp8_native.cu; CUDA option gemm_fp8_native), the
 * official kernels' structure: per 128-k block P = four wgmma m64nNk32 e4m3 x e4m3 from zero
 * (the tensor cores' fp32 accumulation), acc = fma(P, fl32(xs * ws), acc) in k order, bf16 at
 * the end. Not the bits of hci_cu_gemm_fp8; batch-invariant (the same formula for every n and
 * tile). Same arguments and shapes as hci_cu_gemm_fp8, xs also 16-byte aligned;
 * HC_ERR_INVALID_ARG also when the device is not an sm_90 or the driver cannot encode the TMA
 * descriptors (the caller then falls back). */
int hci_cu_gemm_fp8_native(cudaStream_t s, const uint8_t *W, const float *Ws, int sld, int M, int K,
                           const uint8_t *xq, const float *xs, int np, int n, uint16_t *y, int ldy);
/* The same with the token tile (bn 128, 64, 32 or 16) and the cluster size (1, or 2: pairs of
 * CTAs sharing the weight tile by TMA multicast) forced; 0: the launcher's choice. For
 * tools/gemm-check: every configuration must give the same bits. */
int hci_cu_gemm_fp8_native_cfg(cudaStream_t s, const uint8_t *W, const float *Ws, int sld, int M, int K,
                               const uint8_t *xq, const float *xs, int np, int n, uint16_t *y, int ldy, int bn,
                               int cluster);
/* The launcher's choice (*bn, *cluster) for M rows and np token rows on the current device; 0
 * when the SM count cannot be read. */
int hci_cu_gemm_fp8_native_pick(int M, int np, int *bn, int *cluster);

/* y[t][r] (double, leading dim ldy) for t < n, any n >= 1: the fp32 sum of W[r][k] * x[t][k] by
 * bf16 mma.sync with fp32 accumulation, per 128-k block from zero, the blocks added in k order
 * (gemm_bf16.cu), widened to double. The same bits for a token whatever n and the other tokens
 * (batch-invariant), not the exact sum. W bf16 [M][K], x bf16 [n][ldx]; K % 128 == 0, ldx even,
 * W and x 4-byte aligned (16 for the big-tile kernel). HC_ERR_INVALID_ARG on a bad shape,
 * HC_ERR_CUDA when the launch fails. */
int hci_cu_gemm_bf16(cudaStream_t s, const uint16_t *W, int M, int K, const uint16_t *x, int ldx, int n, double *y,
                     int ldy);
/* The same y from one kernel (for tools/gemv-check; every kernel gives the same bits): kernel 1
 * the big tiles, 2 the sliced K, 3 the few-token kernel (below), 0 the launcher's choice, 4 the
 * launcher's choice without the few-token kernel (the option gemv_teams off).
 * HC_ERR_INVALID_ARG where the kernel does not take the shape. */
int hci_cu_gemm_bf16_kernel(cudaStream_t s, const uint16_t *W, int M, int K, const uint16_t *x, int ldx, int n,
                            double *y, int ldy, int kernel);
/* The few-token kernel (gemm_bf16_few.cu), which hci_cu_gemm_bf16 takes for n <= GP_MAX_N when
 * the big tiles do not fill the GPU: the same y. W 16-byte aligned. */
int hci_cu_gemm_bf16_few(cudaStream_t s, const uint16_t *W, int M, int K, const uint16_t *x, int ldx, int n,
                         double *y, int ldy);
/* The few-token kernel over several weights that read the same x in one launch (option
 * decode_fused): seg[0 .. nseg) (nseg <= HCI_CU_SEGS_MAX; W bf16 [M][K], y double [n][ldy]), each
 * output the bits of hci_cu_gemm_bf16 (any of its kernels) for that weight alone. */
int hci_cu_gemm_bf16_few_grouped(cudaStream_t s, const hci_cu_seg *seg, int nseg, int K, const uint16_t *x, int ldx,
                                 int n);

#endif
