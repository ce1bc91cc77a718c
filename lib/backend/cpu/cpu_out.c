/* cpu_out.c - the output path (inverse RoPE, grouped W_oa, FP8 W_ob) and the window ring write. */
#include <stdlib.h>
#include "cpu.h"
#include "hybridctx.h"
#include "../../model/rope.h"
#include "../../util/numerics.h"

typedef struct inv_run {
    const struct hc_model *m;
    int layer;
    int64_t pos0;
    uint16_t *o;
} inv_run;

static void inverse_rope_rows(void *arg, int64_t lo, int64_t hi, int tid)
{
    (void)tid;
    inv_run *r = arg;
    const hci_config *c = &r->m->cfg;
    int d = c->head_dim, rd = c->rope_dim;
    float cs[HCI_MAX_ROPE_PAIRS], sn[HCI_MAX_ROPE_PAIRS], v[HCI_MAX_ROPE_PAIRS * 2];
    for (int64_t t = lo; t < hi; t++) {
        hci_rope_cossin(hci_model_rope(r->m, r->layer), r->pos0 + t, cs, sn);
        for (int h = 0; h < c->n_heads; h++) {
            uint16_t *tail = r->o + ((size_t)t * c->n_heads + h) * d + (d - rd);
            hci_bf16_decode_n(tail, rd, v);
            hci_rope_apply(v, cs, sn, rd / 2, 1);
            for (int i = 0; i < rd; i++) tail[i] = hci_bf16_from_f32(v[i]);
        }
    }
}

int hci_cpu_out_path(hci_backend *be, int layer, int n, int64_t pos0, uint16_t *o, uint16_t *y)
{
    const struct hc_model *m = be->model;
    const hci_config *c = &m->cfg;
    const hci_layer_w *L = &m->layers[layer];
    hci_pool *pool = hci_cpu_pool(be);
    inv_run r = {m, layer, pos0, o};
    hci_pool_for(pool, n, 1, inverse_rope_rows, &r);
    /* z_g = W_oa[g] . o_g for each group g of H/G heads; z is group-major [n][G*o_lora] */
    int G = c->o_groups, R = c->o_lora_rank, gw = c->n_heads / G * c->head_dim;
    uint16_t *z = malloc((size_t)n * G * R * sizeof(uint16_t));
    if (!z) return HC_ERR_OUT_OF_MEMORY;
    int st = HC_OK;
    for (int g = 0; g < G && !st; g++) {
        hci_bf16_mat Wg = {R, gw, L->wo_a.w + (size_t)g * R * gw};
        st = hci_cpu_linear_bf16(pool, &Wg, n, o + (size_t)g * gw, c->n_heads * c->head_dim, NULL,
                                 z + (size_t)g * R, G * R);
    }
    if (!st) st = hci_cpu_linear_fp8(pool, &L->wo_b, n, z, G * R, y, c->dim);
    free(z);
    return st;
}

int hci_cpu_window_write(hci_backend *be, hci_layer_cache *lc, int n, int64_t pos0, const uint16_t *kv)
{
    int d = be->model->cfg.head_dim, W = lc->window;
    float v[1024];
    for (int64_t t = pos0 + n - W > pos0 ? pos0 + n - W : pos0; t < pos0 + n; t++) {
        int64_t slot = t % W;
        hci_bf16_decode_n(kv + (size_t)(t - pos0) * d, d, v);
        hci_entry_pack(&lc->win_layout, lc->ring.pages[slot / HCI_PAGE_ENTRIES], (int)(slot % HCI_PAGE_ENTRIES), v);
    }
    return HC_OK;
}
