/* quant.h - the FP8 e4m3 / FP4 e2m1 grids and power-of-two (ue8m0) scales, as inline functions
 * shared by the C code and the CUDA kernels, so that both round exactly alike. */
#ifndef HCI_QUANT_H
#define HCI_QUANT_H
#include <math.h>
#include <stdint.h>
#include "bf16.h"

#define HCI_E4M3_MAX 448.0f
#define HCI_E2M1_MAX 6.0f

HCI_HD float hci_pow2(int e) { return hci_f32_from_bits((uint32_t)(e + 127) << 23); } /* -126..127 */

/* 2^ceil(log2(fl32(amax * inv_qmax))) from the fp32 bits, as the reference: the exponent. */
HCI_HD int hci_pow2_ceil_exp(float amax, float inv_qmax)
{
    uint32_t b = hci_bits_from_f32(amax * inv_qmax);
    return (int)((b >> 23) & 0xff) - 127 + ((b & 0x7fffffu) != 0);
}

/* Round to a binary grid with mbits mantissa bits and minimum normal exponent emin, nearest
 * even, saturating at maxv. Scaling by powers of two is exact, so rintf sees the exact quotient. */
HCI_HD float hci_round_grid(float x, int mbits, int emin, float maxv)
{
    float a = fabsf(x);
    if (a >= maxv) return copysignf(maxv, x);
    if (a == 0.0f) return x;
    int e;
    frexpf(a, &e);
    e -= 1;
    if (e < emin) e = emin;
    float ulp = ldexpf(1.0f, e - mbits);
    float r = rintf(a / ulp) * ulp;
    if (r > maxv) r = maxv;
    return copysignf(r, x);
}

HCI_HD float hci_e4m3_round(float x) { return hci_round_grid(x, 3, -6, HCI_E4M3_MAX); }
HCI_HD float hci_e2m1_round(float x) { return hci_round_grid(x, 1, 0, HCI_E2M1_MAX); }

/* Code of a value already on the e4m3 grid. */
HCI_HD uint8_t hci_e4m3_encode(float x)
{
    uint8_t s = signbit(x) ? 0x80 : 0;
    float a = fabsf(x);
    if (a < 0x1p-6f) return (uint8_t)(s | (uint8_t)(a * 512.0f)); /* subnormal: a / 2^-9 */
    int e;
    float f = frexpf(a, &e); /* a = 2f * 2^(e-1), 2f in [1, 2) */
    int m = (int)((2.0f * f - 1.0f) * 8.0f);
    return (uint8_t)(s | (uint8_t)((e - 1 + 7) << 3) | (uint8_t)m);
}

HCI_HD float hci_e4m3_value(uint8_t c)
{
    int e = (c >> 3) & 15, m = c & 7;
    float v = e ? ldexpf(1.0f + (float)m * 0.125f, e - 7) : ldexpf((float)m, -9);
    if (e == 15 && m == 7) v = NAN;
    return (c & 0x80) ? -v : v;
}

/* Code of a value already on the e2m1 grid {0, 0.5, 1, 1.5, 2, 3, 4, 6}. */
HCI_HD uint8_t hci_e2m1_encode(float x)
{
    uint8_t s = signbit(x) ? 8 : 0;
    float a = fabsf(x);
    uint8_t c = a < 2.0f ? (uint8_t)(a * 2.0f) : (a < 4.0f ? (uint8_t)(a + 2.0f) : (uint8_t)(a * 0.5f + 4.0f));
    return (uint8_t)(s | c);
}

HCI_HD float hci_e2m1_value(uint8_t c)
{
    int m = c & 7;
    float v = m < 4 ? (float)m * 0.5f : (m < 6 ? (float)(m - 2) : (float)((m - 4) * 2));
    return (c & 8) ? -v : v;
}

#endif
