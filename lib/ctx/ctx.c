/* ctx.c - a context's workspace in backend memory (its caches are lib/cache's). */
#include "ctx.h"
#include <string.h>

typedef struct ws_buf {
    void **p;
    size_t bytes;
} ws_buf;

/* The workspace's buffers for `tokens` tokens; returns their count. */
static size_t ws_bufs(const hci_config *g, hci_workspace *w, int tokens, ws_buf bufs[9])
{
    size_t T = (size_t)tokens;
    ws_buf b[] = {
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
    memcpy(bufs, b, sizeof b);
    return sizeof b / sizeof b[0];
}

int hci_ctx_alloc_workspace(hc_ctx *c, int tokens)
{
    hci_backend *be = c->be;
    hci_workspace *w = &c->ws;
    ws_buf bufs[9];
    size_t nb = ws_bufs(&c->model->cfg, w, tokens, bufs);
    for (size_t i = 0; i < nb; i++) {
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

uint64_t hci_ctx_workspace_bytes(const hc_ctx *c)
{
    hci_workspace w;
    ws_buf bufs[9];
    size_t nb = ws_bufs(&c->model->cfg, &w, c->ws.tokens, bufs);
    uint64_t b = 0;
    for (size_t i = 0; i < nb; i++) b += bufs[i].bytes;
    return b;
}
