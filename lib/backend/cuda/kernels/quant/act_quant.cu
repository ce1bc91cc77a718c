/* act_quant.cu - activations to FP8 for the block-scaled projections (the DeepSeek recipe: 1x128
 * activation scales, powers of two): the CPU backend's act_quant (cpu_linear.c) on the GPU, code
 * for code. */
#include "../common.cuh"
#include "config.h"
#include "quant.h"

/* One warp per (token, 128-block), four values per lane: amax (warp max), power-of-two scale,
 * e4m3 codes; padding rows get zero codes and scale 1. Scales are written K-block major
 * ([K/128][np], tokens contiguous). */
static_assert(AQ_PER_LANE == 4 && AQ_BLOCK == 128, "hci_dev_act_quant4 takes a 128-block as 4 values per lane");

__global__ void act_quant_kernel(const uint16_t *x, int ldx, int n, int np, int cols, uint8_t *q, float *s)
{
    int nkb = cols / AQ_BLOCK, lane = threadIdx.x % 32;
    int64_t w = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    if (w >= (int64_t)np * nkb) return;
    int t = (int)(w / nkb), kb = (int)(w % nkb);
    uint32_t *qo = (uint32_t *)(q + (size_t)t * cols + (size_t)kb * AQ_BLOCK) + lane;
    if (t >= n) {
        *qo = 0;
        if (lane == 0) s[(size_t)kb * np + t] = 1.0f;
        return;
    }
    const uint16_t *xr = x + (size_t)t * ldx + (size_t)kb * AQ_BLOCK + lane * AQ_PER_LANE;
    float v[AQ_PER_LANE];
    /* one 8-byte load when the row allows it (ldx even and x 8-byte aligned: the usual case) */
    if (((uintptr_t)xr & 7) == 0) {
        uint2 w = *(const uint2 *)xr;
        v[0] = hci_f32_from_bf16((uint16_t)w.x), v[1] = hci_f32_from_bf16((uint16_t)(w.x >> 16));
        v[2] = hci_f32_from_bf16((uint16_t)w.y), v[3] = hci_f32_from_bf16((uint16_t)(w.y >> 16));
    } else {
        for (int i = 0; i < AQ_PER_LANE; i++) v[i] = hci_f32_from_bf16(xr[i]);
    }
    float sc;
    const uint32_t packed = hci_dev_act_quant4(v, &sc);
    *qo = packed;
    if (lane == 0) s[(size_t)kb * np + t] = sc;
}

int hci_cu_act_quant(cudaStream_t s, const uint16_t *x, int ldx, int n, int np, int cols, uint8_t *q, float *scales)
{
    int64_t items = (int64_t)np * (cols / AQ_BLOCK);
    act_quant_kernel<<<(unsigned)((items * 32 + AQ_THREADS - 1) / AQ_THREADS), AQ_THREADS, 0, s>>>(x, ldx, n, np,
                                                                                                  cols, q, scales);
    return HCI_CU_CHECK_LAUNCH();
}
