/* quant/quant.h - the quantization family: activations to e4m3 codes with power-of-two block
 * scales (act_quant.cu), the operand of the FP8 GEMV / GEMM. The FP8/FP4 simulations that the
 * element-wise kernels run inside their own CTAs are device helpers of ../common.cuh. */
#ifndef HCI_KERNELS_QUANT_H
#define HCI_KERNELS_QUANT_H
#include <cuda_runtime.h>
#include <stdint.h>
#include "config.h"

/* x [n][cols] bf16 (leading dim ldx) -> q [np][cols] e4m3 codes and scales s [cols/128][np]
 * (token-contiguous per k-block), the scale of a block the smallest power of two that brings its
 * amax (floored at 1e-4) inside +-448, as the CPU backend's act_quant. Rows n..np-1 get zero codes
 * and scale 1. cols a multiple of 128, np >= n. HC_ERR_CUDA when the launch fails. */
int hci_cu_act_quant(cudaStream_t s, const uint16_t *x, int ldx, int n, int np, int cols, uint8_t *q, float *scales);

#endif
