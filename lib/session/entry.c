/* entry.c - canonical entries: the check that makes fp8 <-> bf16 round trips exact, and the
 * conversions between session blocks and cache pages. */
#include "entry.h"
#include <pthread.h>
#include <string.h>
#include "../util/numerics.h"

/* The exponent hci_entry_pack() would choose for a block whose largest magnitude code is m. */
static int expected_exp(int fp4, int m, int e)
{
    float amax = (fp4 ? hci_e2m1_decode((uint8_t)m) : hci_e4m3_decode((uint8_t)m)) * hci_pow2(e);
    if (fp4) return hci_pow2_ceil_exp(amax > 6.0f * 0x1p-126f ? amax : 6.0f * 0x1p-126f, 1.0f / 6.0f);
    return hci_pow2_ceil_exp(amax > 1e-4f ? amax : 1e-4f, 1.0f / 448.0f);
}

/* ok[m][e + 126] = 1 when exponent e is the one packing chooses for largest code m: the check
 * runs on every block a load reads, so the float work of expected_exp() is done once here
 * (by expected_exp itself, so the table cannot drift from it). e4m3 rows 0..127 (0x7f, NaN,
 * never ok), then e2m1 rows 0..7. */
static uint8_t ok_tab[128 + 8][254];
static pthread_once_t ok_once = PTHREAD_ONCE_INIT;

static void ok_init(void)
{
    for (int m = 0; m < 128 + 8; m++)
        for (int e = -126; e <= 127; e++) {
            int fp4 = m >= 128, code = fp4 ? m - 128 : m;
            ok_tab[m][e + 126] = (uint8_t)(code != 0x7f || fp4 ? expected_exp(fp4, code, e) == e : 0);
        }
}

/* Largest magnitude code of a block: fixed-size loops that the compiler vectorizes. */
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

/* Non-zero when a bf16 value of p[0..n) has an all-ones exponent (Inf or NaN). The exponent
 * field plus one carries into bit 15 exactly when it is all ones, so the test is an add and an
 * or per value with no branch and no compare: it vectorizes (a byte loop with an early exit was
 * a third of a load's check time). */
static uint16_t nonfinite_acc(const uint8_t *p, int n)
{
    uint16_t acc = 0;
    for (int i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * (size_t)i, 2);
        acc |= (uint16_t)((h & 0x7f80u) + 0x0080u);
    }
    return acc;
}

/* blocks of a fixed 16 values (gcc -O2 vectorizes only loops of a known count), then the rest */
static int any_nonfinite_bf16(const uint8_t *p, int n)
{
    uint16_t acc = 0;
    int i = 0;
    for (; i + 16 <= n; i += 16) acc |= nonfinite_acc(p + 2 * (size_t)i, 16);
    acc |= nonfinite_acc(p + 2 * (size_t)i, n - i);
    return (acc & 0x8000u) != 0;
}

static int canonical(const hci_entry_layout *c, const uint8_t *d, const uint8_t *s)
{
    int nb = c->quant_dim / c->qblock;
    unsigned ok = 1;
    for (int b = 0; b < nb; b++) {
        int e = (int)s[b] - 127;
        if (e < -126 || e > 127) return 0;
        int m = c->fp4 ? 128 + max_e2m1_32(d + (size_t)b * 16) : max_e4m3_64(d + (size_t)b * 64);
        ok &= ok_tab[m][e + 126];
    }
    for (int b = nb; b < c->scale_bytes; b++) ok &= s[b] == 0;
    return ok && !any_nonfinite_bf16(d + c->quant_dim, c->dim - c->quant_dim); /* bf16 tail of main entries */
}

int hcs_entry_canonical(const hci_entry_layout *c, const uint8_t *d, const uint8_t *s)
{
    pthread_once(&ok_once, ok_init);
    return canonical(c, d, s);
}

int hcs_block_check(const hci_entry_layout *c, const uint8_t *blk, int k)
{
    pthread_once(&ok_once, ok_init);
    for (int r = 0; r < k; r++)
        if (!canonical(c, hcs_blk_data(c, (uint8_t *)blk, k, r), hcs_blk_scales(c, (uint8_t *)blk, k, r)))
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
