/* ctx.c - creation of a context's caches and workspace in backend memory. */
#include "ctx.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int init_state(hci_backend *be, hci_comp_cache *cc)
{
    size_t nf = hci_comp_state_floats(cc);
    float *host = malloc(nf * sizeof(float));
    if (!host) return HC_ERR_OUT_OF_MEMORY;
    for (size_t i = 0; i < nf; i++) host[i] = -INFINITY;
    int st = be->ops->upload(be, cc->state_score, host, nf * sizeof(float));
    memset(host, 0, nf * sizeof(float));
    if (!st) st = be->ops->upload(be, cc->state_kv, host, nf * sizeof(float));
    free(host);
    return st;
}

static int make_comp(hci_backend *be, hci_comp_cache *cc, int ratio, int dc, int rotate,
                     hci_entry_layout layout)
{
    cc->ratio = ratio;
    cc->coff = hci_cfg_coff(ratio);
    cc->dc = dc;
    cc->rotate = rotate;
    cc->layout = layout;
    cc->entries.page_bytes = hci_page_bytes(&layout);
    size_t bytes = hci_comp_state_floats(cc) * sizeof(float);
    int st = be->ops->alloc(be, bytes, (void **)&cc->state_kv);
    if (!st) st = be->ops->alloc(be, bytes, (void **)&cc->state_score);
    if (!st) st = init_state(be, cc);
    return st;
}

int hci_ctx_init_caches(hc_ctx *c)
{
    const hci_config *cfg = &c->model->cfg;
    hci_backend *be = c->be;
    c->layers = calloc((size_t)cfg->n_layers, sizeof *c->layers);
    if (!c->layers) return HC_ERR_OUT_OF_MEMORY;
    for (int i = 0; i < cfg->n_layers; i++) {
        hci_layer_cache *lc = &c->layers[i];
        lc->layer = i;
        lc->ratio = cfg->ratios[i];
        lc->window = cfg->window;
        lc->win_layout = hci_layout_main(c->cache_fmt, cfg->head_dim, cfg->rope_dim);
        lc->ring.page_bytes = hci_page_bytes(&lc->win_layout);
        int st = be->ops->pages_grow(be, &lc->ring, (cfg->window + HCI_PAGE_ENTRIES - 1) / HCI_PAGE_ENTRIES);
        if (!st && lc->ratio)
            st = make_comp(be, &lc->comp, lc->ratio, cfg->head_dim, 0,
                           hci_layout_main(c->cache_fmt, cfg->head_dim, cfg->rope_dim));
        if (!st && lc->ratio == 4)
            st = make_comp(be, &lc->idx, 4, cfg->index_head_dim, 1,
                           hci_layout_index(c->cache_fmt, cfg->index_head_dim));
        if (st) return st;
    }
    return HC_OK;
}

static void free_comp(hci_backend *be, hci_comp_cache *cc)
{
    be->ops->pages_shrink(be, &cc->entries, 0);
    be->ops->free(be, cc->state_kv);
    be->ops->free(be, cc->state_score);
}

void hci_ctx_free_caches(hc_ctx *c)
{
    if (!c->layers) return;
    for (int i = 0; i < c->model->cfg.n_layers; i++) {
        hci_layer_cache *lc = &c->layers[i];
        c->be->ops->pages_shrink(c->be, &lc->ring, 0);
        if (lc->ratio) free_comp(c->be, &lc->comp);
        if (lc->ratio == 4) free_comp(c->be, &lc->idx);
    }
    free(c->layers);
    c->layers = NULL;
}

int hci_ctx_clear_caches(hc_ctx *c)
{
    for (int i = 0; i < c->model->cfg.n_layers; i++) {
        hci_layer_cache *lc = &c->layers[i];
        hci_comp_cache *ccs[2] = {lc->ratio ? &lc->comp : NULL, lc->ratio == 4 ? &lc->idx : NULL};
        for (int k = 0; k < 2; k++) {
            if (!ccs[k]) continue;
            c->be->ops->pages_shrink(c->be, &ccs[k]->entries, 0);
            ccs[k]->n_entries = 0;
            int st = init_state(c->be, ccs[k]);
            if (st) return st;
        }
    }
    return HC_OK;
}

static uint64_t comp_bytes(const hci_comp_cache *cc)
{
    return (uint64_t)cc->entries.n_pages * cc->entries.page_bytes +
           2 * (uint64_t)hci_comp_state_floats(cc) * sizeof(float);
}

uint64_t hci_ctx_cache_bytes(const hc_ctx *c)
{
    uint64_t b = 0;
    for (int i = 0; i < c->model->cfg.n_layers; i++) {
        const hci_layer_cache *lc = &c->layers[i];
        b += (uint64_t)lc->ring.n_pages * lc->ring.page_bytes;
        if (lc->ratio) b += comp_bytes(&lc->comp);
        if (lc->ratio == 4) b += comp_bytes(&lc->idx);
    }
    return b;
}

int hci_ctx_alloc_workspace(hc_ctx *c, int tokens)
{
    const hci_config *g = &c->model->cfg;
    hci_backend *be = c->be;
    hci_workspace *w = &c->ws;
    size_t T = (size_t)tokens;
    struct { void **p; size_t bytes; } bufs[] = {
        {(void **)&w->x, T * g->dim * 2},
        {(void **)&w->c, T * g->q_lora_rank * 2},
        {(void **)&w->q, T * g->n_heads * g->head_dim * 2},
        {(void **)&w->kv, T * g->head_dim * 2},
        {(void **)&w->qi, T * g->index_n_heads * g->index_head_dim * 2},
        {(void **)&w->w, T * g->index_n_heads * 2},
        {(void **)&w->o, T * g->n_heads * g->head_dim * 2},
        {(void **)&w->y, T * g->dim * 2},
        {(void **)&w->sel, T * g->index_topk * 4},
    };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        int st = be->ops->alloc(be, bufs[i].bytes, bufs[i].p);
        if (st) return st;
    }
    w->tokens = tokens;
    return HC_OK;
}

void hci_ctx_free_workspace(hc_ctx *c)
{
    hci_workspace *w = &c->ws;
    void *ps[] = {w->x, w->c, w->q, w->kv, w->qi, w->w, w->o, w->y, w->sel};
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++)
        if (ps[i]) c->be->ops->free(c->be, ps[i]);
    memset(w, 0, sizeof *w);
}
