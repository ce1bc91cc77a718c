/* cpu_attend.c - sparse attention with the sink on the CPU, as the reference kernel computes it:
 * the index row [window part (width W) | compressed part] is walked in blocks of 64 entries;
 * per block, fp32 logits (exact-ordered dots) times the scale, a running max, expf, the
 * denominator update as one fma, and P.V with p rounded to bf16 added onto fl32(acc * alpha). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "cpu.h"
#include "hybridctx.h"
#include "../../util/cudamath.h"
#include "../../util/numerics.h"

#define BLK 64
#define HEADS_PER_ITEM 8

typedef struct attn_run {
    const struct hc_model *m;
    int layer;
    const hci_layer_cache *lc;
    int64_t pos0;
    const uint16_t *q, *kv;
    const int32_t *sel;
    uint16_t *o;
    int head_items;
    char *scratch;       /* per thread */
    size_t scratch_per_thread;
} attn_run;

/* Index entry u of query t's row: a window position (>= 0), a compressed entry (encoded as
 * -2 - j), or padding (-1). */
static int64_t row_entry(const attn_run *r, int64_t i, int64_t t, int64_t u, int64_t ncomp)
{
    int W = r->lc->window;
    if (u < W) {
        int64_t first = t - W + 1 > 0 ? t - W + 1 : 0;
        int64_t p = first + u;
        return p <= t ? p : -1;
    }
    u -= W;
    if (u >= ncomp) return -1;
    if (r->lc->ratio == 4) {
        int32_t j = r->sel[(size_t)i * r->m->cfg.index_topk + u];
        return j < 0 ? -1 : -2 - (int64_t)j;
    }
    return -2 - u; /* ratio 128: all visible entries in order */
}

static void load_entry(const attn_run *r, int64_t e, float *v)
{
    const hci_layer_cache *lc = r->lc;
    int d = r->m->cfg.head_dim;
    if (e >= 0) {
        if (e >= r->pos0) {
            hci_bf16_decode_n(r->kv + (size_t)(e - r->pos0) * d, d, v);
        } else {
            int64_t slot = e % lc->window;
            hci_entry_unpack(&lc->win_layout, lc->ring.pages[slot / HCI_PAGE_ENTRIES],
                             (int)(slot % HCI_PAGE_ENTRIES), v);
        }
    } else {
        int64_t j = -2 - e;
        hci_entry_unpack(&lc->comp.layout, hci_pages_page(&lc->comp.entries, j),
                         (int)(j % HCI_PAGE_ENTRIES), v);
    }
}

static void attend_items(void *arg, int64_t lo, int64_t hi, int tid)
{
    attn_run *r = arg;
    const hci_config *c = &r->m->cfg;
    int d = c->head_dim, H = c->n_heads, W = r->lc->window;
    float scale = (float)(1.0 / sqrt((double)d));
    const float *sink = r->m->layers[r->layer].attn_sink;
    char *s = r->scratch + (size_t)tid * r->scratch_per_thread;
    /* the thread's scratch (malloc'd, 64-byte multiples) carved into typed arrays */
    // cppcheck-suppress invalidPointerCast
    float *vb = (float *)s;                               /* [BLK][d] */
    float *qf = vb + (size_t)BLK * d;                     /* [HEADS_PER_ITEM][d] */
    float *acc = qf + (size_t)HEADS_PER_ITEM * d;         /* [HEADS_PER_ITEM][d] */
    // cppcheck-suppress invalidPointerCast
    double *pv = (double *)(acc + (size_t)HEADS_PER_ITEM * d); /* [d] */
    int64_t ents[BLK];
    float lg[BLK], p[BLK];
    for (int64_t it = lo; it < hi; it++) {
        int64_t i = it / r->head_items;
        int h0 = (int)(it % r->head_items) * HEADS_PER_ITEM;
        int nh = H - h0 < HEADS_PER_ITEM ? H - h0 : HEADS_PER_ITEM;
        int64_t t = r->pos0 + i;
        int64_t ncomp = r->lc->ratio == 4 ? c->index_topk : (r->lc->ratio ? (t + 1) / r->lc->ratio : 0);
        int64_t len = W + ncomp;
        float mrun[HEADS_PER_ITEM], lrun[HEADS_PER_ITEM];
        for (int h = 0; h < nh; h++) {
            hci_bf16_decode_n(r->q + ((size_t)i * H + h0 + h) * d, d, qf + (size_t)h * d);
            mrun[h] = -INFINITY;
            lrun[h] = 0.0f;
            memset(acc + (size_t)h * d, 0, (size_t)d * sizeof(float));
        }
        for (int64_t b0 = 0; b0 < len; b0 += BLK) {
            int nb = 0;
            for (int64_t u = b0; u < b0 + BLK && u < len; u++) {
                int64_t e = row_entry(r, i, t, u, ncomp);
                if (e != -1) ents[nb++] = e;
            }
            if (nb == 0) continue; /* an all-padding block changes nothing */
            for (int k = 0; k < nb; k++) load_entry(r, ents[k], vb + (size_t)k * d);
            for (int h = 0; h < nh; h++) {
                const float *qh = qf + (size_t)h * d;
                float bmax = -INFINITY;
                for (int k = 0; k < nb; k++) {
                    lg[k] = (float)hci_dot_exact_f32(qh, vb + (size_t)k * d, d) * scale;
                    bmax = fmaxf(bmax, lg[k]);
                }
                float mnew = fmaxf(mrun[h], bmax);
                float alpha = hci_cuda_expf(mrun[h] - mnew);
                float psum = 0.0f;
                for (int k = 0; k < nb; k++) {
                    p[k] = hci_cuda_expf(lg[k] - mnew);
                    psum += p[k];
                }
                lrun[h] = fmaf(lrun[h], alpha, psum);
                mrun[h] = mnew;
                float *ah = acc + (size_t)h * d;
                for (int x = 0; x < d; x++) pv[x] = (double)(ah[x] * alpha);
                for (int k = 0; k < nb; k++) {
                    float pb = hci_round_bf16(p[k]);
                    const float *v = vb + (size_t)k * d;
                    for (int x = 0; x < d; x++) pv[x] += (double)(pb * v[x]);
                }
                for (int x = 0; x < d; x++) ah[x] = (float)pv[x];
            }
        }
        for (int h = 0; h < nh; h++) {
            float l = lrun[h] + hci_cuda_expf(sink[h0 + h] - mrun[h]);
            uint16_t *oh = r->o + ((size_t)i * H + h0 + h) * d;
            const float *ah = acc + (size_t)h * d;
            for (int x = 0; x < d; x++) oh[x] = hci_bf16_from_f32(ah[x] / l);
        }
    }
}

int hci_cpu_attend(hci_backend *be, int layer, const hci_layer_cache *lc, int n, int64_t pos0,
                   const uint16_t *q, const uint16_t *kv, const int32_t *sel, uint16_t *o)
{
    const struct hc_model *m = be->model;
    int d = m->cfg.head_dim, H = m->cfg.n_heads;
    hci_pool *pool = hci_cpu_pool(be);
    size_t per = ((size_t)BLK * d + 2 * (size_t)HEADS_PER_ITEM * d) * sizeof(float) + (size_t)d * sizeof(double);
    per = (per + 63) / 64 * 64;
    attn_run r = {m, layer, lc, pos0, q, kv, sel, o, (H + HEADS_PER_ITEM - 1) / HEADS_PER_ITEM, NULL, per};
    r.scratch = malloc(per * (size_t)hci_pool_size(pool));
    if (!r.scratch) return HC_ERR_OUT_OF_MEMORY;
    hci_pool_for(pool, (int64_t)n * r.head_items, 1, attend_items, &r);
    free(r.scratch);
    return HC_OK;
}
