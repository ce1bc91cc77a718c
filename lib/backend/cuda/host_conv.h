/* host_conv.h - the host passes of host-memory I/O (host_io.cu): f32 <-> bf16 with the rounding of
 * util/bf16.h (the bits of hci_cu_to_bf16 and of the CPU backend) and the finiteness check, over
 * one range of values. Plain C (host_conv.c), built with the loops vectorized. */
#ifndef HCI_CUDA_HOST_CONV_H
#define HCI_CUDA_HOST_CONV_H
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

/* o[i] = bf16(x[i]) for i < n; returns nonzero when some x[i] is NaN or infinite (exponent all
 * ones; a finite value that rounds to a bf16 infinity is finite). */
uint32_t hci_host_f32_to_bf16(const float *x, uint16_t *o, int64_t n);
/* o[i] = x[i] (bf16); returns nonzero when some x[i] is NaN or infinite. */
uint32_t hci_host_copy_bf16(const uint16_t *x, uint16_t *o, int64_t n);
/* Nonzero when some x[i] (f32 when !bf16, else bf16) is NaN or infinite. */
uint32_t hci_host_nonfinite(const void *x, int bf16, int64_t n);
/* o[i] = f32(x[i]) for i < n (exact). */
void hci_host_bf16_to_f32(const uint16_t *x, float *o, int64_t n);

#ifdef __cplusplus
}
#endif
#endif
