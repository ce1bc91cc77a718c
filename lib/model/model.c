/* model.c - weight storage of hc_model, seeded random initialisation and the fingerprint. */
#include "model.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include "hybridctx.h"
#include "../util/error.h"
#include "../util/numerics.h"
#include "../util/threadpool.h"

/* The helpers below set the dimensions and count the bytes; only with arrays do they allocate. */
static int alloc_fp8(hci_fp8_mat *m, int rows, int cols, int arrays, uint64_t *bytes)
{
    size_t sr = (size_t)(rows + 127) / 128, sc = (size_t)(cols + 127) / 128;
    m->rows = rows;
    m->cols = cols;
    *bytes += (uint64_t)rows * (uint64_t)cols + sr * sc * sizeof(float);
    if (!arrays) return 1;
    m->w = malloc((size_t)rows * (size_t)cols);
    m->scale = malloc(sr * sc * sizeof(float));
    return m->w && m->scale;
}

static int alloc_bf16(hci_bf16_mat *m, int rows, int cols, int arrays, uint64_t *bytes)
{
    m->rows = rows;
    m->cols = cols;
    *bytes += (uint64_t)rows * (uint64_t)cols * 2;
    if (!arrays) return 1;
    m->w = malloc((size_t)rows * (size_t)cols * 2);
    return m->w != NULL;
}

static int alloc_f32(float **p, size_t n, int arrays, uint64_t *bytes)
{
    *bytes += n * sizeof(float);
    if (!arrays) return 1;
    *p = malloc(n * sizeof(float));
    return *p != NULL;
}

static int alloc_comp(hci_compressor_w *c, int ratio, int dc, int dim, int arrays, uint64_t *bytes)
{
    c->ratio = ratio;
    c->coff = hci_cfg_coff(ratio);
    c->dc = dc;
    int out = c->coff * dc;
    return alloc_f32(&c->ape, (size_t)ratio * out, arrays, bytes) &&
           alloc_bf16(&c->wkv, out, dim, arrays, bytes) && alloc_bf16(&c->wgate, out, dim, arrays, bytes) &&
           alloc_f32(&c->norm, (size_t)dc, arrays, bytes);
}

static int alloc_layers(struct hc_model *m, int arrays, char *err, size_t errsz)
{
    const hci_config *c = &m->cfg;
    if (!m->layers) m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->layers) return hci_errf(err, errsz, HC_ERR_OUT_OF_MEMORY, "out of memory for layer table");
    uint64_t b = 0;
    int d = c->head_dim, H = c->n_heads, G = c->o_groups;
    for (int i = 0; i < c->n_layers; i++) {
        hci_layer_w *L = &m->layers[i];
        L->ratio = c->ratios[i];
        const int a = arrays;
        int ok = alloc_fp8(&L->wq_a, c->q_lora_rank, c->dim, a, &b) &&
                 alloc_f32(&L->q_norm, (size_t)c->q_lora_rank, a, &b) &&
                 alloc_fp8(&L->wq_b, H * d, c->q_lora_rank, a, &b) && alloc_fp8(&L->wkv, d, c->dim, a, &b) &&
                 alloc_f32(&L->kv_norm, (size_t)d, a, &b) &&
                 alloc_bf16(&L->wo_a, G * c->o_lora_rank, H / G * d, a, &b) &&
                 alloc_fp8(&L->wo_b, c->dim, G * c->o_lora_rank, a, &b) &&
                 alloc_f32(&L->attn_sink, (size_t)H, a, &b);
        if (ok && L->ratio) ok = alloc_comp(&L->comp, L->ratio, d, c->dim, a, &b);
        if (ok && L->ratio == 4)
            ok = alloc_fp8(&L->idx_wq_b, c->index_n_heads * c->index_head_dim, c->q_lora_rank, a, &b) &&
                 alloc_bf16(&L->idx_weights_proj, c->index_n_heads, c->dim, a, &b) &&
                 alloc_comp(&L->idx_comp, 4, c->index_head_dim, c->dim, a, &b);
        if (!ok)
            return hci_errf(err, errsz, HC_ERR_OUT_OF_MEMORY,
                            "out of memory for the weights of layer %d (%llu bytes so far)", i,
                            (unsigned long long)b);
    }
    m->weight_bytes = b;
    return HC_OK;
}

int hci_model_shape(struct hc_model *m, char *err, size_t errsz) { return alloc_layers(m, 0, err, errsz); }
int hci_model_alloc(struct hc_model *m, char *err, size_t errsz) { return alloc_layers(m, 1, err, errsz); }

static void free_comp(hci_compressor_w *c)
{
    free(c->ape);
    free(c->wkv.w);
    free(c->wgate.w);
    free(c->norm);
}

void hci_model_destroy(struct hc_model *m)
{
    if (m->layers) {
        for (int i = 0; i < m->cfg.n_layers; i++) {
            hci_layer_w *L = &m->layers[i];
            free(L->wq_a.w), free(L->wq_a.scale), free(L->q_norm);
            free(L->wq_b.w), free(L->wq_b.scale);
            free(L->wkv.w), free(L->wkv.scale), free(L->kv_norm);
            free(L->wo_a.w), free(L->wo_b.w), free(L->wo_b.scale), free(L->attn_sink);
            free_comp(&L->comp);
            free(L->idx_wq_b.w), free(L->idx_wq_b.scale), free(L->idx_weights_proj.w);
            free_comp(&L->idx_comp);
        }
        free(m->layers);
    }
}

/* ---- seeded random weights: integer-only generator, identical on every machine ---- */

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Approximately standard normal (Irwin-Hall of four 16-bit uniforms), from a counter. */
static float rnd_normal(uint64_t key, uint64_t i)
{
    uint64_t r = splitmix64(key ^ splitmix64(i));
    int64_t s = (int64_t)(r & 0xffff) + (int64_t)((r >> 16) & 0xffff) + (int64_t)((r >> 32) & 0xffff) +
                (int64_t)(r >> 48);
    return (float)((double)(s - 131070) / 37837.1); /* 65535 * sqrt(4/12) */
}

typedef struct rnd_job {
    uint64_t key;
    int kind;        /* 0 fp8 codes, 1 bf16, 2 f32 */
    void *dst;
    float mean, std;
} rnd_job;

static void rnd_fill_range(void *arg, int64_t lo, int64_t hi, int tid)
{
    rnd_job *j = arg;
    (void)tid;
    for (int64_t i = lo; i < hi; i++) {
        float v = j->mean + j->std * rnd_normal(j->key, (uint64_t)i);
        if (j->kind == 0) ((uint8_t *)j->dst)[i] = hci_e4m3_encode(hci_e4m3_round(v));
        else if (j->kind == 1) ((uint16_t *)j->dst)[i] = hci_bf16_from_f32(v);
        else ((float *)j->dst)[i] = hci_round_bf16(v);
    }
}

static void rnd_fill(hci_pool *pool, uint64_t key, int kind, void *dst, size_t n, float mean, float std)
{
    rnd_job j = {key, kind, dst, mean, std};
    hci_pool_for(pool, (int64_t)n, 1 << 16, rnd_fill_range, &j);
}

/* FP8 matrix: codes of std 48 (max 448), one power-of-two scale per block so that the weight
 * has a standard deviation near 1/sqrt(cols); each block gets a random extra factor 1 or 2. */
static void rnd_fp8(hci_pool *pool, uint64_t key, hci_fp8_mat *m)
{
    rnd_fill(pool, key, 0, m->w, (size_t)m->rows * m->cols, 0.0f, 48.0f);
    int sr = (m->rows + 127) / 128, sc = (m->cols + 127) / 128;
    int e = 0;
    while ((1 << (e + 1)) * (1 << (e + 1)) <= m->cols) e++; /* 2^e ~ sqrt(cols) */
    for (int i = 0; i < sr * sc; i++) {
        int extra = (int)(splitmix64(key ^ 0xabcdefull ^ (uint64_t)i) & 1);
        m->scale[i] = hci_pow2(-e - 6 + extra - 1); /* 48 * 2^-6 = 0.75; times 2^-e */
    }
}

static uint64_t tensor_key(uint64_t seed, int layer, int id)
{
    return splitmix64(seed ^ splitmix64(((uint64_t)layer << 16) | (uint64_t)id));
}

static void rnd_comp(hci_pool *pool, uint64_t seed, int layer, int base, hci_compressor_w *c, int dim)
{
    size_t out = (size_t)c->coff * c->dc;
    float s = 1.0f / sqrtf((float)dim);
    rnd_fill(pool, tensor_key(seed, layer, base + 0), 2, c->ape, (size_t)c->ratio * out, 0.0f, 0.5f);
    rnd_fill(pool, tensor_key(seed, layer, base + 1), 1, c->wkv.w, out * dim, 0.0f, s);
    rnd_fill(pool, tensor_key(seed, layer, base + 2), 1, c->wgate.w, out * dim, 0.0f, 1.5f * s);
    rnd_fill(pool, tensor_key(seed, layer, base + 3), 2, c->norm, (size_t)c->dc, 1.0f, 0.1f);
}

int hci_model_init_random(struct hc_model *m, uint64_t seed, int n_threads,
                          int (*progress)(void *user, uint64_t done, uint64_t total), void *progress_user)
{
    hci_pool *pool = hci_pool_create(n_threads);
    const hci_config *c = &m->cfg;
    int st = HC_OK;
    for (int i = 0; i < c->n_layers && !st; i++) {
        hci_layer_w *L = &m->layers[i];
        rnd_fp8(pool, tensor_key(seed, i, 1), &L->wq_a);
        rnd_fill(pool, tensor_key(seed, i, 2), 2, L->q_norm, (size_t)c->q_lora_rank, 1.0f, 0.1f);
        rnd_fp8(pool, tensor_key(seed, i, 3), &L->wq_b);
        rnd_fp8(pool, tensor_key(seed, i, 4), &L->wkv);
        rnd_fill(pool, tensor_key(seed, i, 5), 2, L->kv_norm, (size_t)c->head_dim, 2.0f, 0.1f);
        rnd_fill(pool, tensor_key(seed, i, 6), 1, L->wo_a.w, (size_t)L->wo_a.rows * L->wo_a.cols, 0.0f,
                 1.0f / sqrtf((float)L->wo_a.cols));
        rnd_fp8(pool, tensor_key(seed, i, 7), &L->wo_b);
        rnd_fill(pool, tensor_key(seed, i, 8), 2, L->attn_sink, (size_t)c->n_heads, 0.0f, 3.0f);
        if (L->ratio) rnd_comp(pool, seed, i, 16, &L->comp, c->dim);
        if (L->ratio == 4) {
            rnd_fp8(pool, tensor_key(seed, i, 9), &L->idx_wq_b);
            rnd_fill(pool, tensor_key(seed, i, 10), 1, L->idx_weights_proj.w,
                     (size_t)c->index_n_heads * c->dim, 0.0f, 1.0f / sqrtf((float)c->dim));
            rnd_comp(pool, seed, i, 32, &L->idx_comp, c->dim);
        }
        if (progress && progress(progress_user, (uint64_t)i + 1, (uint64_t)c->n_layers)) st = HC_ERR_ABORTED;
    }
    hci_pool_destroy(pool);
    return st;
}

/* ---- fingerprint: XXH3-128 of the configuration, then of every weight array in order ---- */

static void hash_bytes(XXH3_state_t *st, const void *p, size_t n)
{
    if (p && n) XXH3_128bits_update(st, p, n);
}

static void hash_fp8(XXH3_state_t *st, const hci_fp8_mat *m)
{
    hash_bytes(st, m->w, (size_t)m->rows * m->cols);
    hash_bytes(st, m->scale, (size_t)((m->rows + 127) / 128) * ((m->cols + 127) / 128) * 4);
}

static void hash_comp(XXH3_state_t *st, const hci_compressor_w *c, int dim)
{
    size_t out = (size_t)c->coff * c->dc;
    hash_bytes(st, c->ape, (size_t)c->ratio * out * 4);
    hash_bytes(st, c->wkv.w, out * dim * 2);
    hash_bytes(st, c->wgate.w, out * dim * 2);
    hash_bytes(st, c->norm, (size_t)c->dc * 4);
}

/* The configuration as a canonical little-endian record (independent of struct padding). */
static void hash_config(XXH3_state_t *st, const hci_config *c)
{
    int64_t v[] = {c->dim, c->n_layers, c->n_heads, c->head_dim, c->rope_dim, c->q_lora_rank,
                   c->o_groups, c->o_lora_rank, c->window, c->index_n_heads, c->index_head_dim,
                   c->index_topk, c->yarn_original_len, c->max_positions};
    hash_bytes(st, v, sizeof v);
    double dv[] = {c->rope_theta, c->compress_rope_theta, c->yarn_factor, c->yarn_beta_fast,
                   c->yarn_beta_slow, c->norm_eps};
    hash_bytes(st, dv, sizeof dv);
    hash_bytes(st, c->ratios, sizeof(int) * (size_t)c->n_layers);
}

int hci_model_finish(struct hc_model *m)
{
    const hci_config *c = &m->cfg;
    hci_rope_init(&m->rope_swa, c->rope_dim, c->rope_theta, 0, 1.0, c->yarn_beta_fast, c->yarn_beta_slow);
    hci_rope_init(&m->rope_comp, c->rope_dim, c->compress_rope_theta, c->yarn_original_len,
                  c->yarn_factor, c->yarn_beta_fast, c->yarn_beta_slow);
    XXH3_state_t *st = XXH3_createState();
    if (!st) return HC_ERR_OUT_OF_MEMORY;
    XXH3_128bits_reset(st);
    hash_config(st, c);
    XXH128_hash_t h_cfg = XXH3_128bits_digest(st);
    XXH3_128bits_reset(st);
    for (int i = 0; m->has_weights && i < c->n_layers; i++) {
        const hci_layer_w *L = &m->layers[i];
        hash_fp8(st, &L->wq_a), hash_bytes(st, L->q_norm, (size_t)c->q_lora_rank * 4);
        hash_fp8(st, &L->wq_b), hash_fp8(st, &L->wkv), hash_bytes(st, L->kv_norm, (size_t)c->head_dim * 4);
        hash_bytes(st, L->wo_a.w, (size_t)L->wo_a.rows * L->wo_a.cols * 2);
        hash_fp8(st, &L->wo_b), hash_bytes(st, L->attn_sink, (size_t)c->n_heads * 4);
        if (L->ratio) hash_comp(st, &L->comp, c->dim);
        if (L->ratio == 4) {
            hash_fp8(st, &L->idx_wq_b);
            hash_bytes(st, L->idx_weights_proj.w, (size_t)c->index_n_heads * c->dim * 2);
            hash_comp(st, &L->idx_comp, c->dim);
        }
    }
    XXH128_hash_t h_w = XXH3_128bits_digest(st);
    XXH3_freeState(st);
    XXH128_canonical_t a, b;
    XXH128_canonicalFromHash(&a, h_cfg);
    XXH128_canonicalFromHash(&b, h_w);
    memcpy(m->fingerprint, a.digest, 16);
    memcpy(m->fingerprint + 16, b.digest, 16);
    return HC_OK;
}
