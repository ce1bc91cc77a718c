/* entry.c - canonical entries: the check that makes fp8 <-> bf16 round trips exact, and the
 * conversions between session blocks and cache pages. */
#include "entry.h"
#include <string.h>
#include "../util/numerics.h"

/* The exponent hci_entry_pack() would choose for a block whose largest magnitude code is m. */
static int expected_exp(const hci_entry_layout *c, int m, int e)
{
    float amax = (c->fp4 ? hci_e2m1_decode((uint8_t)m) : hci_e4m3_decode((uint8_t)m)) * hci_pow2(e);
    if (c->fp4) return hci_pow2_ceil_exp(amax > 6.0f * 0x1p-126f ? amax : 6.0f * 0x1p-126f, 1.0f / 6.0f);
    return hci_pow2_ceil_exp(amax > 1e-4f ? amax : 1e-4f, 1.0f / 448.0f);
}

/* Largest magnitude code of a block: fixed-size loops that the compiler vectorizes (this check
 * runs on every byte a load reads). */
static int max_e4m3_64(const uint8_t *p)
{
    uint8_t m = 0;
    for (int i = 0; i < 64; i++) {
        uint8_t v = p[i] & 0x7f;
        m = v > m ? v : m;
    }
    return m;
}

static int max_e2m1_32(const uint8_t *p)
{
    uint8_t m = 0;
    for (int i = 0; i < 16; i++) {
        uint8_t lo = p[i] & 7, hi = (p[i] >> 4) & 7;
        m = lo > m ? lo : m;
        m = hi > m ? hi : m;
    }
    return m;
}

int hcs_entry_canonical(const hci_entry_layout *c, const uint8_t *d, const uint8_t *s)
{
    int nb = c->quant_dim / c->qblock;
    for (int b = 0; b < nb; b++) {
        int e = (int)s[b] - 127, m;
        if (e < -126 || e > 127) return 0;
        if (c->fp4) {
            m = max_e2m1_32(d + (size_t)b * 16);
        } else {
            m = max_e4m3_64(d + (size_t)b * 64);
            if (m == 0x7f) return 0; /* e4m3fn NaN */
        }
        if (expected_exp(c, m, e) != e) return 0;
    }
    for (int b = nb; b < c->scale_bytes; b++)
        if (s[b]) return 0;
    const uint8_t *rope = d + c->quant_dim; /* bf16 tail of main entries */
    for (int i = 0; i < c->dim - c->quant_dim; i++)
        if ((rope[2 * (size_t)i + 1] & 0x7f) == 0x7f && (rope[2 * (size_t)i] & 0x80)) return 0; /* exponent all ones */
    return 1;
}

int hcs_block_check(const hci_entry_layout *c, const uint8_t *blk, int k)
{
    for (int r = 0; r < k; r++)
        if (!hcs_entry_canonical(c, hcs_blk_data(c, (uint8_t *)blk, k, r), hcs_blk_scales(c, (uint8_t *)blk, k, r)))
            return r;
    return -1;
}

int hcs_entry_to_canon(const hci_entry_layout *x, const void *page, int slot, const hci_entry_layout *c,
                       uint8_t *blk, int k, int row)
{
    uint8_t *d = hcs_blk_data(c, blk, k, row), *s = hcs_blk_scales(c, blk, k, row);
    if (x->fmt == HCI_FMT_FP8) {
        memcpy(d, hci_entry_data(x, (void *)page, slot), (size_t)c->data_bytes);
        memcpy(s, hci_entry_scales(x, (void *)page, slot), (size_t)c->scale_bytes);
        return 0;
    }
    /* bf16 -> canonical: pack through a one-entry page, then check that it gives the values back */
    uint8_t tmp[HCI_PAGE_ENTRIES * 1200];
    float v[1024];
    uint16_t back[1024];
    const uint8_t *src = hci_entry_data(x, (void *)page, slot);
    for (int i = 0; i < x->dim; i++) {
        uint16_t h;
        memcpy(&h, src + 2 * (size_t)i, 2);
        v[i] = hci_f32_from_bf16(h);
    }
    hci_entry_pack(c, tmp, 0, v);
    hci_entry_unpack_bf16(c, tmp, 0, back);
    if (memcmp(back, src, (size_t)x->dim * 2) != 0) return -1;
    memcpy(d, hci_entry_data(c, tmp, 0), (size_t)c->data_bytes);
    memcpy(s, hci_entry_scales(c, tmp, 0), (size_t)c->scale_bytes);
    return 0;
}

void hcs_entry_from_canon(const hci_entry_layout *c, const uint8_t *blk, int k, int row,
                          const hci_entry_layout *x, void *page, int slot)
{
    const uint8_t *d = hcs_blk_data(c, (uint8_t *)blk, k, row), *s = hcs_blk_scales(c, (uint8_t *)blk, k, row);
    if (x->fmt == HCI_FMT_FP8) {
        memcpy(hci_entry_data(x, page, slot), d, (size_t)c->data_bytes);
        memcpy(hci_entry_scales(x, page, slot), s, (size_t)c->scale_bytes);
        return;
    }
    uint8_t tmp[HCI_PAGE_ENTRIES * 1200];
    memcpy(hci_entry_data(c, tmp, 0), d, (size_t)c->data_bytes);
    memcpy(hci_entry_scales(c, tmp, 0), s, (size_t)c->scale_bytes);
    hci_entry_unpack_bf16(c, tmp, 0, (uint16_t *)(void *)hci_entry_data(x, page, slot));
}

int hcs_block_from_page(const hci_entry_layout *x, const void *page, const hci_entry_layout *c, int k, uint8_t *blk)
{
    if (x->fmt == HCI_FMT_FP8) {
        memcpy(blk, page, (size_t)k * (size_t)c->data_bytes);
        memcpy(blk + (size_t)k * c->data_bytes, hci_entry_scales(x, (void *)page, 0), (size_t)k * (size_t)c->scale_bytes);
        return 0;
    }
    for (int r = 0; r < k; r++)
        if (hcs_entry_to_canon(x, page, r, c, blk, k, r)) return -1;
    return 0;
}

void hcs_page_from_block(const hci_entry_layout *c, const uint8_t *blk, int k, const hci_entry_layout *x, void *page)
{
    memset(page, 0, hci_page_bytes(x));
    if (x->fmt == HCI_FMT_FP8) {
        memcpy(page, blk, (size_t)k * (size_t)c->data_bytes);
        memcpy(hci_entry_scales(x, page, 0), blk + (size_t)k * c->data_bytes, (size_t)k * (size_t)c->scale_bytes);
        return;
    }
    for (int r = 0; r < k; r++) hcs_entry_from_canon(c, blk, k, r, x, page, r);
}
