/* cpu_qkv.c - the query path, the window KV path and the indexer queries on the CPU. */
#include <math.h>
#include <stdlib.h>
#include "cpu.h"
#include "hybridctx.h"
#include "../../model/rope.h"
#include "../../util/numerics.h"

#define MAXD 1024

/* Weighted RMSNorm of n bf16 rows in place (fp32 inside, bf16 out). */
static int rmsnorm_rows(uint16_t *v, int rows, int dim, const float *w, float eps)
{
    float *x = malloc((size_t)dim * sizeof(float));
    if (!x) return HC_ERR_OUT_OF_MEMORY;
    for (int t = 0; t < rows; t++) {
        hci_bf16_decode_n(v + (size_t)t * dim, dim, x);
        hci_rmsnorm_bf16(x, w, dim, eps, v + (size_t)t * dim);
    }
    free(x);
    return HC_OK;
}

/* The weightless per-head norm of the query, op by op in bf16 as the reference runs it. */
static void q_head_norm(float *q, int d, float eps)
{
    double sum = 0.0;
    for (int i = 0; i < d; i++) sum += (double)hci_round_bf16(q[i] * q[i]);
    float m = hci_round_bf16((float)sum / (float)d);
    float e = hci_round_bf16(m + eps);
    float r = hci_round_bf16(1.0f / sqrtf(e));
    for (int i = 0; i < d; i++) q[i] = hci_round_bf16(q[i] * r);
}

static void load_row(const uint16_t *h, int n, float *out) { hci_bf16_decode_n(h, n, out); }
static void store_row(const float *v, int n, uint16_t *h)
{
    for (int i = 0; i < n; i++) h[i] = hci_bf16_from_f32(v[i]);
}

typedef struct qjob {
    const struct hc_model *m;
    int layer;
    int64_t pos0;
    uint16_t *q;
} qjob;

static void q_rows(void *arg, int64_t lo, int64_t hi, int tid)
{
    (void)tid;
    qjob *j = arg;
    const hci_config *c = &j->m->cfg;
    const hci_rope *rope = hci_model_rope(j->m, j->layer);
    int d = c->head_dim, rd = c->rope_dim, np = rd / 2;
    float cs[HCI_MAX_ROPE_PAIRS], sn[HCI_MAX_ROPE_PAIRS], v[MAXD];
    for (int64_t t = lo; t < hi; t++) {
        hci_rope_cossin(rope, j->pos0 + t, cs, sn);
        for (int h = 0; h < c->n_heads; h++) {
            uint16_t *row = j->q + ((size_t)t * c->n_heads + h) * d;
            load_row(row, d, v);
            q_head_norm(v, d, (float)c->norm_eps);
            hci_rope_apply(v + d - rd, cs, sn, np, 0);
            store_row(v, d, row);
        }
    }
}

int hci_cpu_q_path(hci_backend *be, int layer, int n, int64_t pos0, const uint16_t *x, uint16_t *c,
                   uint16_t *q)
{
    const struct hc_model *m = be->model;
    const hci_layer_w *L = &m->layers[layer];
    const hci_config *cfg = &m->cfg;
    hci_pool *pool = hci_cpu_pool(be);
    int st = hci_cpu_linear_fp8(pool, &L->wq_a, n, x, cfg->dim, c, cfg->q_lora_rank);
    if (st) return st;
    if ((st = rmsnorm_rows(c, n, cfg->q_lora_rank, L->q_norm, (float)cfg->norm_eps))) return st;
    st = hci_cpu_linear_fp8(pool, &L->wq_b, n, c, cfg->q_lora_rank, q, cfg->n_heads * cfg->head_dim);
    if (st) return st;
    qjob j = {m, layer, pos0, q};
    hci_pool_for(pool, n, 1, q_rows, &j);
    return HC_OK;
}

typedef struct kvjob {
    const struct hc_model *m;
    int layer;
    int64_t pos0;
    uint16_t *kv;
} kvjob;

static void kv_rows(void *arg, int64_t lo, int64_t hi, int tid)
{
    (void)tid;
    kvjob *j = arg;
    const hci_config *c = &j->m->cfg;
    const hci_rope *rope = hci_model_rope(j->m, j->layer);
    int d = c->head_dim, rd = c->rope_dim;
    float cs[HCI_MAX_ROPE_PAIRS], sn[HCI_MAX_ROPE_PAIRS], v[MAXD];
    for (int64_t t = lo; t < hi; t++) {
        uint16_t *row = j->kv + (size_t)t * d;
        hci_rope_cossin(rope, j->pos0 + t, cs, sn);
        load_row(row, d, v);
        hci_rope_apply(v + d - rd, cs, sn, rd / 2, 0);
        hci_fp8_sim_blocks(v, d - rd, 64, NULL);
        store_row(v, d, row);
    }
}

int hci_cpu_kv_path(hci_backend *be, int layer, int n, int64_t pos0, const uint16_t *x, uint16_t *kv)
{
    const struct hc_model *m = be->model;
    const hci_layer_w *L = &m->layers[layer];
    const hci_config *cfg = &m->cfg;
    hci_pool *pool = hci_cpu_pool(be);
    int st = hci_cpu_linear_fp8(pool, &L->wkv, n, x, cfg->dim, kv, cfg->head_dim);
    if (st) return st;
    if ((st = rmsnorm_rows(kv, n, cfg->head_dim, L->kv_norm, (float)cfg->norm_eps))) return st;
    kvjob j = {m, layer, pos0, kv};
    hci_pool_for(pool, n, 1, kv_rows, &j);
    return HC_OK;
}

typedef struct iqjob {
    const struct hc_model *m;
    int layer;
    int64_t pos0;
    uint16_t *qi, *w;
} iqjob;

static void iq_rows(void *arg, int64_t lo, int64_t hi, int tid)
{
    (void)tid;
    iqjob *j = arg;
    const hci_config *c = &j->m->cfg;
    const hci_rope *rope = hci_model_rope(j->m, j->layer);
    int id = c->index_head_dim, rd = c->rope_dim;
    /* the reference's constant: softmax_scale * n_heads^-0.5 in double, applied in fp32 */
    float wscale = (float)(pow((double)id, -0.5) * pow((double)c->index_n_heads, -0.5));
    float cs[HCI_MAX_ROPE_PAIRS], sn[HCI_MAX_ROPE_PAIRS], v[MAXD];
    for (int64_t t = lo; t < hi; t++) {
        hci_rope_cossin(rope, j->pos0 + t, cs, sn);
        for (int h = 0; h < c->index_n_heads; h++) {
            uint16_t *row = j->qi + ((size_t)t * c->index_n_heads + h) * id;
            load_row(row, id, v);
            hci_rope_apply(v + id - rd, cs, sn, rd / 2, 0);
            hci_hadamard_bf16(v, id);
            hci_fp4_sim_blocks(v, id, 32, NULL);
            store_row(v, id, row);
        }
        uint16_t *w = j->w + (size_t)t * c->index_n_heads;
        for (int h = 0; h < c->index_n_heads; h++)
            w[h] = hci_bf16_from_f32(hci_f32_from_bf16(w[h]) * wscale);
    }
}

int hci_cpu_index_q(hci_backend *be, int layer, int n, int64_t pos0, const uint16_t *x,
                    const uint16_t *c, uint16_t *qi, uint16_t *w)
{
    const struct hc_model *m = be->model;
    const hci_layer_w *L = &m->layers[layer];
    const hci_config *cfg = &m->cfg;
    hci_pool *pool = hci_cpu_pool(be);
    int st = hci_cpu_linear_fp8(pool, &L->idx_wq_b, n, c, cfg->q_lora_rank, qi,
                                cfg->index_n_heads * cfg->index_head_dim);
    if (st) return st;
    st = hci_cpu_linear_bf16(pool, &L->idx_weights_proj, n, x, cfg->dim, NULL, w, cfg->index_n_heads);
    if (st) return st;
    iqjob j = {m, layer, pos0, qi, w};
    hci_pool_for(pool, n, 1, iq_rows, &j);
    return HC_OK;
}
