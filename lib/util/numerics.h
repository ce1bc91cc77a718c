/* numerics.h - the rounding points of the reference: FP8 e4m3 and FP4 e2m1 grids, power-of-two
 * (ue8m0) block scales, Hadamard-128, weighted RMSNorm. Everything here is exact arithmetic on
 * float values that the spec (docs/numerics.md) defines bit for bit. */
#ifndef HCI_NUMERICS_H
#define HCI_NUMERICS_H
#include <stddef.h>
#include <stdint.h>
#include "bf16.h"
#include "quant.h"

/* Decode tables, filled once (thread-safe, lazy). */
const float *hci_e4m3_table(void); /* [256] */
const float *hci_e2m1_table(void); /* [16]  */

static inline float hci_e4m3_decode(uint8_t c) { return hci_e4m3_table()[c]; }
static inline float hci_e2m1_decode(uint8_t c) { return hci_e2m1_table()[c & 15]; }

/* FP8 simulation in place on n = 64*k bf16-valued floats: per 64-block amax (floor 1e-4),
 * power-of-two scale, e4m3 round; the values stay exact bf16. Returns nothing; exps (may be
 * NULL) receives the block exponents. */
void hci_fp8_sim_blocks(float *v, int n, int block, int8_t *exps);
/* FP4 simulation in place: per 32-block amax (floor 6*2^-126), power-of-two scale, e2m1 round. */
void hci_fp4_sim_blocks(float *v, int n, int block, int8_t *exps);

/* Activation quantization for an FP8 GEMM: bf16 values x[n] (n % 128 == 0) -> e4m3 codes q[n]
 * and one fp32 power-of-two scale per 128 values. */
void hci_act_quant_fp8(const uint16_t *x, int n, uint8_t *q, float *scales);

/* Walsh-Hadamard transform of n (power of two) values in place, fp32 butterflies with strides
 * 1, 2, 4, ..., then times fl32(n^-1/2), then rounded to bf16. */
void hci_hadamard_bf16(float *v, int n);

/* Weighted RMSNorm: out[i] = bf16(w[i] * (x[i] * 1/sqrt(mean(x^2) + eps))), fp32 inside. */
void hci_rmsnorm_bf16(const float *x, const float *w, int n, float eps, uint16_t *out);

/* Dot product of two float vectors whose pairwise products are exact in fp32 (bf16 or e4m3
 * values), accumulated in double in a fixed lane order, so the result does not depend on
 * vectorisation or thread count. For e4m3 values and n <= 128 the sum is exact. */
double hci_dot_exact_f32(const float *a, const float *b, int n);
/* e4m3 codes -> float values. */
void hci_e4m3_decode_n(const uint8_t *c, int n, float *out);
/* bf16 bits -> float values. */
void hci_bf16_decode_n(const uint16_t *h, int n, float *out);

#endif
