/* format.c - host pack/unpack of cache entries (layouts in format.h). */
#include "format.h"
#include <math.h>
#include <string.h>
#include "../util/numerics.h"

static float amax_of(const float *v, int n)
{
    float m = 0.0f;
    for (int i = 0; i < n; i++)
        if (fabsf(v[i]) > m) m = fabsf(v[i]);
    return m;
}

void hci_entry_pack(const hci_entry_layout *l, void *page, int slot, const float *v)
{
    uint8_t *d = hci_entry_data(l, page, slot);
    if (l->fmt == HCI_FMT_BF16) {
        for (int i = 0; i < l->dim; i++) {
            uint16_t h = hci_bf16_from_f32(v[i]);
            memcpy(d + 2 * (size_t)i, &h, 2);
        }
        return;
    }
    uint8_t *sc = hci_entry_scales(l, page, slot);
    memset(sc, 0, (size_t)l->scale_bytes);
    int nb = l->quant_dim / l->qblock;
    for (int b = 0; b < nb; b++) {
        const float *x = v + (size_t)b * l->qblock;
        int e;
        if (l->fp4) e = hci_pow2_ceil_exp(fmaxf(amax_of(x, l->qblock), 6.0f * 0x1p-126f), 1.0f / 6.0f);
        else e = hci_pow2_ceil_exp(fmaxf(amax_of(x, l->qblock), 1e-4f), 1.0f / 448.0f);
        float s = hci_pow2(e);
        sc[b] = (uint8_t)(e + 127);
        for (int i = 0; i < l->qblock; i++) {
            int k = b * l->qblock + i;
            if (l->fp4) {
                uint8_t c = hci_e2m1_encode(x[i] / s);
                if (k & 1) d[k / 2] = (uint8_t)((d[k / 2] & 0x0f) | (c << 4));
                else d[k / 2] = c;
            } else {
                d[k] = hci_e4m3_encode(x[i] / s);
            }
        }
    }
    for (int i = l->quant_dim; i < l->dim; i++) { /* rope dims stay bf16 (main entries only) */
        uint16_t h = hci_bf16_from_f32(v[i]);
        memcpy(d + l->quant_dim + 2 * (size_t)(i - l->quant_dim), &h, 2);
    }
}

void hci_entry_unpack(const hci_entry_layout *l, const void *page, int slot, float *v)
{
    const uint8_t *d = hci_entry_data(l, (void *)page, slot);
    if (l->fmt == HCI_FMT_BF16) {
        for (int i = 0; i < l->dim; i++) {
            uint16_t h;
            memcpy(&h, d + 2 * (size_t)i, 2);
            v[i] = hci_f32_from_bf16(h);
        }
        return;
    }
    const uint8_t *sc = hci_entry_scales(l, (void *)page, slot);
    for (int k = 0; k < l->quant_dim; k++) {
        float s = hci_pow2((int)sc[k / l->qblock] - 127);
        float c = l->fp4 ? hci_e2m1_decode((uint8_t)(k & 1 ? d[k / 2] >> 4 : d[k / 2] & 15))
                         : hci_e4m3_decode(d[k]);
        v[k] = c * s;
    }
    for (int i = l->quant_dim; i < l->dim; i++) {
        uint16_t h;
        memcpy(&h, d + l->quant_dim + 2 * (size_t)(i - l->quant_dim), 2);
        v[i] = hci_f32_from_bf16(h);
    }
}

void hci_entry_unpack_bf16(const hci_entry_layout *l, const void *page, int slot, uint16_t *out)
{
    if (l->fmt == HCI_FMT_BF16) {
        memcpy(out, hci_entry_data(l, (void *)page, slot), (size_t)l->dim * 2);
        return;
    }
    float v[1024]; /* dim <= 1024: head_dim and index_head_dim are validated against it */
    hci_entry_unpack(l, page, slot, v);
    /* NOLINTNEXTLINE(clang-analyzer-core.CallAndMessage): hci_entry_unpack() writes v[0..dim) */
    for (int i = 0; i < l->dim; i++) out[i] = hci_bf16_from_f32(v[i]);
}
