/* gemm/gemm.h - the FP8 GEMM family: block-scaled FP8 projections of many tokens on the tensor
 * cores with the CPU backend's arithmetic (gemm_fp8.cu; tiles and maps in config.h). */
#ifndef HCI_KERNELS_GEMM_H
#define HCI_KERNELS_GEMM_H
#include <cuda_runtime.h>
#include <stdint.h>
#include "config.h"

/* y[t][r] (bf16, leading dim ldy) for t < n only: the block dots of e4m3 codes by f16 mma.sync
 * (fp32 accumulation per 128-block), then fl32(acc + fl32(P * fl32(xs * ws))) in k order as the
 * CPU backend. W [M][K] codes with scales Ws [M/128][sld]; xq [np][K] codes (rows n.. zero) with
 * scales xs [K/128][np]; M % 128 == 0, K % 128 == 0, np % 16 == 0. HC_ERR_INVALID_ARG on a bad
 * shape, HC_ERR_CUDA when the launch fails. */
int hci_cu_gemm_fp8(cudaStream_t s, const uint8_t *W, const float *Ws, int sld, int M, int K, const uint8_t *xq,
                    const float *xs, int np, int n, uint16_t *y, int ldy);

#endif
