/* host_conv.c - the host passes of host-memory I/O (host_conv.h). Memory-bound loops: built with
 * GCC's vectorizer on (its -O2 cost model leaves them scalar, ~3x slower), each value converted by
 * the one helper of util/bf16.h. */
#include "host_conv.h"
#include <string.h>
#include "util/bf16.h"

#if defined(__GNUC__) && !defined(__clang__)
#define HCI_VECTORIZE __attribute__((optimize("tree-vectorize", "vect-cost-model=dynamic")))
#else
#define HCI_VECTORIZE
#endif

HCI_VECTORIZE uint32_t hci_host_f32_to_bf16(const float *x, uint16_t *o, int64_t n)
{
    uint32_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        bad |= (hci_bits_from_f32(x[i]) & 0x7f800000u) == 0x7f800000u;
        o[i] = hci_bf16_from_f32(x[i]);
    }
    return bad;
}

HCI_VECTORIZE static uint32_t nonfinite_bf16(const uint16_t *x, int64_t n)
{
    uint32_t bad = 0;
    for (int64_t i = 0; i < n; i++) bad |= (x[i] & 0x7f80u) == 0x7f80u;
    return bad;
}

HCI_VECTORIZE static uint32_t nonfinite_f32(const float *x, int64_t n)
{
    uint32_t bad = 0;
    for (int64_t i = 0; i < n; i++) bad |= (hci_bits_from_f32(x[i]) & 0x7f800000u) == 0x7f800000u;
    return bad;
}

uint32_t hci_host_copy_bf16(const uint16_t *x, uint16_t *o, int64_t n)
{
    uint32_t bad = nonfinite_bf16(x, n); /* a range is small: the copy reads it from the cache */
    if (n > 0) memcpy(o, x, (size_t)n * 2);
    return bad;
}

uint32_t hci_host_nonfinite(const void *x, int bf16, int64_t n)
{
    return bf16 ? nonfinite_bf16((const uint16_t *)x, n) : nonfinite_f32((const float *)x, n);
}

HCI_VECTORIZE void hci_host_bf16_to_f32(const uint16_t *x, float *o, int64_t n)
{
    for (int64_t i = 0; i < n; i++) o[i] = hci_f32_from_bf16(x[i]);
}
