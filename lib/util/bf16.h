/* bf16.h - bfloat16 <-> float conversions (round to nearest even), shared by C and CUDA code. */
#ifndef HCI_BF16_H
#define HCI_BF16_H
#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__)
#define HCI_HD __host__ __device__ __forceinline__
#else
#define HCI_HD static inline
#endif

HCI_HD float hci_f32_from_bits(uint32_t u)
{
#if defined(__CUDA_ARCH__)
    return __uint_as_float(u);
#else
    float f;
    memcpy(&f, &u, 4);
    return f;
#endif
}

HCI_HD uint32_t hci_bits_from_f32(float f)
{
#if defined(__CUDA_ARCH__)
    return __float_as_uint(f);
#else
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
#endif
}

/* float -> bf16 bits, round to nearest even; NaN stays a (quiet) NaN. */
HCI_HD uint16_t hci_bf16_from_f32(float f)
{
    uint32_t u = hci_bits_from_f32(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

HCI_HD float hci_f32_from_bf16(uint16_t h) { return hci_f32_from_bits((uint32_t)h << 16); }

/* Round a float to the nearest bf16 value, kept as float. */
HCI_HD float hci_round_bf16(float f) { return hci_f32_from_bf16(hci_bf16_from_f32(f)); }

#endif
