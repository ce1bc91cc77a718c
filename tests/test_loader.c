/* test_loader.c - hc_model_load() and the safetensors reader.
 *
 * - the golden checkpoint (one file, config in __metadata__) against values read with python3;
 * - round trips of seeded random models through a sharded directory with an index, a directory
 *   without one and a single file, in mixed dtypes, compared bit for bit and by fingerprint;
 * - FP8 wo_a dequantization;
 * - every way a checkpoint or a safetensors file can be wrong, each with its exact status and a
 *   message that names the file or tensor at fault; mutated files never crash the reader;
 * - HC_MODEL_GEOMETRY_ONLY reads the configuration only. */
#if !defined(_GNU_SOURCE) && !defined(_XOPEN_SOURCE)
#define _XOPEN_SOURCE 700 /* truncate, strdup */
#endif
#include <check.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "hybridctx.h"
#include "model/loader.h"
#include "model/model.h"
#include "model/safetensors.h"
#include "st_writer.h"
#include "testutil.h"
#include "util/bf16.h"
#include "util/numerics.h"
#include "runner.h"

/* A small geometry with every layer kind, for the many error cases (a "tiny" checkpoint is
 * 10 MB, this one about 1 MB). */
static const char small_config[] =
    "{\"hidden_size\": 128, \"num_hidden_layers\": 3, \"num_attention_heads\": 2, \"head_dim\": 128,"
    " \"qk_rope_head_dim\": 64, \"q_lora_rank\": 128, \"o_groups\": 1, \"o_lora_rank\": 128,"
    " \"index_n_heads\": 2, \"index_head_dim\": 128, \"index_topk\": 8, \"compress_ratios\": [0, 4, 128],"
    " \"max_position_embeddings\": 4096}";

static char *tmp;          /* per-test directory */
static char errbuf[1024];  /* message of the last load */

static void tmp_setup(void)
{
    tmp = tu_tempdir();
    ck_assert_ptr_nonnull(tmp);
}

static void tmp_teardown(void)
{
    tu_rmtree(tmp);
    free(tmp);
    tmp = NULL;
}

/* A path in the test's directory, in one of a few rotating static buffers. */
static const char *tpath(const char *fmt, ...)
{
    static char bufs[4][1024];
    static int k;
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    char *b = bufs[k++ & 3];
    snprintf(b, sizeof bufs[0], "%s/%s", tmp, name);
    return b;
}

static hc_status load(const char *path, int flags, hc_model **m)
{
    hc_model_params p;
    hc_model_params_init(&p, sizeof p);
    p.flags = flags;
    p.errbuf = errbuf;
    p.errbuf_size = sizeof errbuf;
    errbuf[0] = 0;
    return hc_model_load(path, &p, m);
}

static hc_model *random_model(const char *config, uint64_t seed)
{
    hc_model *m = NULL;
    ck_assert_int_eq(hc_model_create_random(config, seed, NULL, &m), HC_OK);
    return m;
}

#define assert_names(needle) \
    ck_assert_msg(strstr(errbuf, (needle)) != NULL, "message \"%s\" does not name \"%s\"", errbuf, (needle))

/* Load must fail with want, and the message must contain both needles (NULL = skip). */
static void expect_load_fail(const char *path, hc_status want, const char *needle1, const char *needle2)
{
    hc_model *m = (hc_model *)&m; /* must come back NULL */
    hc_status st = load(path, 0, &m);
    ck_assert_msg(st == want, "%s: got %s, want %s (%s)", path, hc_status_name(st), hc_status_name(want), errbuf);
    ck_assert_ptr_null(m);
    if (needle1) assert_names(needle1);
    if (needle2) assert_names(needle2);
}

/* ---- checkpoints built in memory: a list of tensors, edited by tests, then written ---- */

typedef struct tt {
    char name[96], dtype[16];
    int ndim;
    int64_t shape[2];
    unsigned char *data;
    size_t nbytes;
} tt;

typedef struct ttl {
    tt *v;
    size_t n, cap;
    int k, variant; /* dtype alternation: tensor k takes the second choice when (k + variant) is odd */
} ttl;

static tt *ttl_find(ttl *l, const char *name)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i].name, name) == 0) return &l->v[i];
    return NULL;
}

/* Add name, or replace it in place; the data is copied (NULL leaves it zeroed). */
static tt *ttl_put(ttl *l, const char *name, const char *dtype, int ndim, int64_t d0, int64_t d1, const void *data,
                   size_t nbytes)
{
    tt *t = ttl_find(l, name);
    if (!t) {
        if (l->n == l->cap) {
            l->cap = l->cap ? 2 * l->cap : 64;
            l->v = realloc(l->v, l->cap * sizeof *l->v);
            ck_assert_ptr_nonnull(l->v);
        }
        t = &l->v[l->n++];
        memset(t, 0, sizeof *t);
        snprintf(t->name, sizeof t->name, "%s", name);
    }
    free(t->data);
    snprintf(t->dtype, sizeof t->dtype, "%s", dtype);
    t->ndim = ndim, t->shape[0] = d0, t->shape[1] = d1;
    t->data = calloc(nbytes ? nbytes : 1, 1);
    ck_assert_ptr_nonnull(t->data);
    if (data) memcpy(t->data, data, nbytes);
    t->nbytes = nbytes;
    return t;
}

static void ttl_drop(ttl *l, const char *name)
{
    tt *t = ttl_find(l, name);
    ck_assert_msg(t != NULL, "no tensor %s to drop", name);
    free(t->data);
    *t = l->v[--l->n];
}

static void ttl_free(ttl *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->v[i].data);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static int alt(ttl *l) { return (l->k++ + l->variant) & 1; }

/* The E8M0 byte of a power-of-two scale. */
static uint8_t e8m0_of(float s)
{
    int e;
    ck_assert_float_eq(frexpf(s, &e), 0.5f);
    return (uint8_t)(e - 1 + 127);
}

static void put_fp8(ttl *l, const char *base, const hci_fp8_mat *m)
{
    char name[128];
    int64_t sr = (m->rows + 127) / 128, sc = (m->cols + 127) / 128;
    snprintf(name, sizeof name, "%s.weight", base);
    ttl_put(l, name, "F8_E4M3", 2, m->rows, m->cols, m->w, (size_t)m->rows * (size_t)m->cols);
    snprintf(name, sizeof name, "%s.scale", base);
    if (alt(l)) {
        ttl_put(l, name, "F32", 2, sr, sc, m->scale, (size_t)(sr * sc) * 4);
        return;
    }
    tt *t = ttl_put(l, name, "F8_E8M0", 2, sr, sc, NULL, (size_t)(sr * sc));
    for (int64_t i = 0; i < sr * sc; i++) t->data[i] = e8m0_of(m->scale[i]);
}

static void put_bf16(ttl *l, const char *name, const hci_bf16_mat *m)
{
    size_t n = (size_t)m->rows * (size_t)m->cols;
    if (!alt(l)) {
        ttl_put(l, name, "BF16", 2, m->rows, m->cols, m->w, n * 2);
        return;
    }
    tt *t = ttl_put(l, name, "F32", 2, m->rows, m->cols, NULL, n * 4);
    for (size_t i = 0; i < n; i++) {
        float f = hci_f32_from_bf16(m->w[i]);
        memcpy(t->data + 4 * i, &f, 4);
    }
}

/* Random fp32 vectors hold bf16 values, so BF16 storage is exact. */
static void put_f32(ttl *l, const char *name, int ndim, int64_t d0, int64_t d1, const float *v)
{
    size_t n = (size_t)(ndim == 1 ? d0 : d0 * d1);
    if (!alt(l)) {
        ttl_put(l, name, "F32", ndim, d0, d1, v, n * 4);
        return;
    }
    tt *t = ttl_put(l, name, "BF16", ndim, d0, d1, NULL, n * 2);
    for (size_t i = 0; i < n; i++) {
        uint16_t h = hci_bf16_from_f32(v[i]);
        ck_assert_float_eq(hci_f32_from_bf16(h), v[i]);
        memcpy(t->data + 2 * i, &h, 2);
    }
}

static void put_comp(ttl *l, const char *pfx, const hci_compressor_w *c)
{
    char name[128];
    snprintf(name, sizeof name, "%scompressor.ape", pfx);
    put_f32(l, name, 2, c->ratio, c->coff * c->dc, c->ape);
    snprintf(name, sizeof name, "%scompressor.wkv.weight", pfx);
    put_bf16(l, name, &c->wkv);
    snprintf(name, sizeof name, "%scompressor.wgate.weight", pfx);
    put_bf16(l, name, &c->wgate);
    snprintf(name, sizeof name, "%scompressor.norm.weight", pfx);
    put_f32(l, name, 1, c->dc, 0, c->norm);
}

/* Every attention tensor of m, dtypes alternating by variant, plus two tensors to be ignored. */
static void model_tensors(const hc_model *m, int variant, ttl *l)
{
    const hci_config *c = &m->cfg;
    char p[64], n[128];
    memset(l, 0, sizeof *l);
    l->variant = variant;
    for (int i = 0; i < c->n_layers; i++) {
        const hci_layer_w *L = &m->layers[i];
#define NAME(s) (snprintf(n, sizeof n, "%s%s", p, s), n)
        snprintf(p, sizeof p, "layers.%d.attn.", i);
        put_fp8(l, NAME("wq_a"), &L->wq_a);
        put_f32(l, NAME("q_norm.weight"), 1, c->q_lora_rank, 0, L->q_norm);
        put_fp8(l, NAME("wq_b"), &L->wq_b);
        put_fp8(l, NAME("wkv"), &L->wkv);
        put_f32(l, NAME("kv_norm.weight"), 1, c->head_dim, 0, L->kv_norm);
        put_bf16(l, NAME("wo_a.weight"), &L->wo_a);
        put_fp8(l, NAME("wo_b"), &L->wo_b);
        put_f32(l, NAME("attn_sink"), 1, c->n_heads, 0, L->attn_sink);
        if (L->ratio) put_comp(l, p, &L->comp);
        if (L->ratio == 4) {
            put_fp8(l, NAME("indexer.wq_b"), &L->idx_wq_b);
            put_bf16(l, NAME("indexer.weights_proj.weight"), &L->idx_weights_proj);
            put_comp(l, NAME("indexer."), &L->idx_comp);
        }
#undef NAME
    }
    static const int64_t junk[4] = {1, 2, 3, 4};
    ttl_put(l, "embed.weight", "I64", 1, 4, 0, junk, sizeof junk);
    ttl_put(l, "layers.0.ffn.w1.weight", "I64", 2, 2, 2, junk, sizeof junk);
}

static char *config_json(const hci_config *c)
{
    json_t *ratios = json_array();
    for (int i = 0; i < c->n_layers; i++) json_array_append_new(ratios, json_integer(c->ratios[i]));
    json_t *o = json_pack(
        "{s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:f, s:I, s:o,"
        " s:{s:s, s:f, s:I, s:f, s:f}}",
        "model_type", "deepseek_v4", "hidden_size", c->dim, "num_hidden_layers", c->n_layers,
        "num_attention_heads", c->n_heads, "num_key_value_heads", 1, "head_dim", c->head_dim, "qk_rope_head_dim",
        c->rope_dim, "q_lora_rank", c->q_lora_rank, "o_groups", c->o_groups, "o_lora_rank", c->o_lora_rank,
        "sliding_window", c->window, "index_n_heads", c->index_n_heads, "index_head_dim", c->index_head_dim,
        "index_topk", c->index_topk, "rope_theta", c->rope_theta, "compress_rope_theta", c->compress_rope_theta,
        "rms_norm_eps", c->norm_eps, "max_position_embeddings", (json_int_t)c->max_positions, "compress_ratios",
        ratios, "rope_scaling", "type", "yarn", "factor", c->yarn_factor, "original_max_position_embeddings",
        (json_int_t)c->yarn_original_len, "beta_fast", c->yarn_beta_fast, "beta_slow", c->yarn_beta_slow);
    ck_assert_ptr_nonnull(o);
    char *text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(o);
    ck_assert_ptr_nonnull(text);
    return text;
}

static void write_text(const char *path, const char *text)
{
    ck_assert_int_eq(tu_write_file(path, text, strlen(text)), 0);
}

static void write_config(const char *dir_file, const hci_config *c)
{
    char *text = config_json(c);
    write_text(dir_file, text);
    free(text);
}

static void add_all(stw *w, const tt *t)
{
    ck_assert_int_eq(stw_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, t->nbytes), 0);
}

static const char *shard_name(int s, int n)
{
    static char b[64];
    snprintf(b, sizeof b, "model-%05d-of-%05d.safetensors", s + 1, n);
    return b;
}

/* Tensor i goes to shard i % n_shards (so each layer spans every shard); with an index, also
 * model.safetensors.index.json. */
static void write_shards(const ttl *l, int n_shards, int with_index)
{
    stw *w[8];
    json_t *map = json_object();
    ck_assert_int_le(n_shards, 8);
    for (int s = 0; s < n_shards; s++) ck_assert_ptr_nonnull(w[s] = stw_new());
    for (size_t i = 0; i < l->n; i++) {
        int s = (int)(i % (size_t)n_shards);
        add_all(w[s], &l->v[i]);
        json_object_set_new(map, l->v[i].name, json_string(shard_name(s, n_shards)));
    }
    for (int s = 0; s < n_shards; s++) {
        ck_assert_int_eq(stw_write(w[s], tpath("%s", shard_name(s, n_shards))), 0);
        stw_free(w[s]);
    }
    json_t *index = json_pack("{s:{s:I}, s:o}", "metadata", "total_size", (json_int_t)0, "weight_map", map);
    if (with_index) ck_assert_int_eq(json_dump_file(index, tpath("model.safetensors.index.json"), JSON_INDENT(1)), 0);
    json_decref(index);
}

/* One file with the configuration in __metadata__["config"] (config NULL: none). */
static void write_single(const ttl *l, const char *path, const hci_config *c)
{
    stw *w = stw_new();
    ck_assert_ptr_nonnull(w);
    for (size_t i = 0; i < l->n; i++) add_all(w, &l->v[i]);
    if (c) {
        char *text = config_json(c);
        ck_assert_int_eq(stw_meta(w, "config", text), 0);
        free(text);
    }
    ck_assert_int_eq(stw_meta(w, "format", "pt"), 0);
    ck_assert_int_eq(stw_write(w, path), 0);
    stw_free(w);
}

/* A small random model written as a 2-shard indexed directory, its tensors left in *l for edits. */
static hc_model *small_dir(ttl *l)
{
    hc_model *m = random_model(small_config, 11);
    model_tensors(m, 0, l);
    write_config(tpath("config.json"), &m->cfg);
    return m;
}

/* ---- comparing models ---- */

static void assert_fp8_eq(const hci_fp8_mat *a, const hci_fp8_mat *b, int layer)
{
    size_t ns = (size_t)((a->rows + 127) / 128) * (size_t)((a->cols + 127) / 128);
    ck_assert_int_eq(a->rows, b->rows);
    ck_assert_int_eq(a->cols, b->cols);
    ck_assert_msg(memcmp(a->w, b->w, (size_t)a->rows * (size_t)a->cols) == 0, "layer %d: fp8 codes differ", layer);
    ck_assert_msg(memcmp(a->scale, b->scale, ns * 4) == 0, "layer %d: fp8 scales differ", layer);
}

static void assert_bf16_eq(const hci_bf16_mat *a, const hci_bf16_mat *b, int layer)
{
    ck_assert_int_eq(a->rows, b->rows);
    ck_assert_int_eq(a->cols, b->cols);
    ck_assert_msg(memcmp(a->w, b->w, (size_t)a->rows * (size_t)a->cols * 2) == 0, "layer %d: bf16 differs", layer);
}

static void assert_f32_eq(const float *a, const float *b, size_t n, int layer, const char *what)
{
    ck_assert_msg(memcmp(a, b, n * 4) == 0, "layer %d: %s differs", layer, what);
}

static void assert_comp_eq(const hci_compressor_w *a, const hci_compressor_w *b, int layer)
{
    ck_assert_int_eq(a->ratio, b->ratio);
    ck_assert_int_eq(a->coff, b->coff);
    ck_assert_int_eq(a->dc, b->dc);
    assert_f32_eq(a->ape, b->ape, (size_t)a->ratio * (size_t)(a->coff * a->dc), layer, "ape");
    assert_bf16_eq(&a->wkv, &b->wkv, layer);
    assert_bf16_eq(&a->wgate, &b->wgate, layer);
    assert_f32_eq(a->norm, b->norm, (size_t)a->dc, layer, "compressor norm");
}

static void assert_same_model(const hc_model *a, const hc_model *b)
{
    const hci_config *c = &a->cfg;
    ck_assert_int_eq(a->has_weights, 1);
    ck_assert_int_eq(b->has_weights, 1);
    ck_assert_int_eq(b->cfg.n_layers, c->n_layers);
    ck_assert_uint_eq(a->weight_bytes, b->weight_bytes);
    for (int i = 0; i < c->n_layers; i++) {
        const hci_layer_w *x = &a->layers[i], *y = &b->layers[i];
        ck_assert_int_eq(x->ratio, y->ratio);
        assert_fp8_eq(&x->wq_a, &y->wq_a, i);
        assert_f32_eq(x->q_norm, y->q_norm, (size_t)c->q_lora_rank, i, "q_norm");
        assert_fp8_eq(&x->wq_b, &y->wq_b, i);
        assert_fp8_eq(&x->wkv, &y->wkv, i);
        assert_f32_eq(x->kv_norm, y->kv_norm, (size_t)c->head_dim, i, "kv_norm");
        assert_bf16_eq(&x->wo_a, &y->wo_a, i);
        assert_fp8_eq(&x->wo_b, &y->wo_b, i);
        assert_f32_eq(x->attn_sink, y->attn_sink, (size_t)c->n_heads, i, "attn_sink");
        if (x->ratio) assert_comp_eq(&x->comp, &y->comp, i);
        if (x->ratio == 4) {
            assert_fp8_eq(&x->idx_wq_b, &y->idx_wq_b, i);
            assert_bf16_eq(&x->idx_weights_proj, &y->idx_weights_proj, i);
            assert_comp_eq(&x->idx_comp, &y->idx_comp, i);
        }
    }
    ck_assert_msg(memcmp(a->fingerprint, b->fingerprint, sizeof a->fingerprint) == 0, "fingerprints differ");
}

/* ---- (1) the golden checkpoint ---- */

static float f32_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

START_TEST(golden_public_load)
{
    hc_model *m = NULL;
    hc_status st = load(tu_data_path("tiny-a.safetensors"), 0, &m);
    ck_assert_msg(st == HC_OK, "%s (%s)", hc_status_name(st), errbuf);
    ck_assert_int_eq(hc_model_n_layers(m), 4);
    ck_assert_int_eq(hc_model_dim(m), 512);
    static const int ratios[4] = {0, 4, 128, 4};
    for (int i = 0; i < 4; i++) ck_assert_int_eq(hc_model_layer_ratio(m, i), ratios[i]);
    hc_model_info info = {.struct_size = sizeof info};
    ck_assert_int_eq(hc_model_info_get(m, &info), HC_OK);
    ck_assert_int_eq(info.n_heads, 8);
    ck_assert_int_eq(info.head_dim, 128);
    ck_assert_int_eq(info.q_lora_rank, 256);
    ck_assert_int_eq(info.index_topk, 16);
    ck_assert_int_eq(info.max_positions, 2048);
    ck_assert_int_eq(info.has_weights, 1);

    /* Expected values read from the file with python3 (struct + json). */
    const hci_layer_w *L = m->layers;
    static const uint8_t wq_a_head[8] = {0x5f, 0xd9, 0x64, 0x70, 0xd2, 0xe5, 0x4e, 0xf4};
    ck_assert_mem_eq(L[1].wq_a.w, wq_a_head, 8);
    ck_assert_uint_eq(L[1].wq_a.w[256 * 512 - 1], 0xe9);
    ck_assert_float_eq(L[1].wq_a.scale[0], 0x1p-10f);  /* E8M0 byte 117 */
    ck_assert_float_eq(L[1].wq_a.scale[1], 0x1p-11f);  /* byte 116 */
    ck_assert_float_eq(L[3].idx_wq_b.scale[11], 0x1p-9f); /* byte 118 */
    ck_assert_float_eq(L[0].kv_norm[0], 1.953125f);    /* BF16 0x3ffa widened */
    ck_assert_float_eq(L[0].kv_norm[1], 2.078125f);
    ck_assert_float_eq(L[2].attn_sink[0], f32_bits(0x4014631eu));
    ck_assert_float_eq(L[2].attn_sink[2], f32_bits(0xc0383e30u));
    ck_assert_float_eq(L[1].comp.ape[1], f32_bits(0xbc06090du));
    static const uint16_t wo_a_head[4] = {0x3c20, 0x3c30, 0x3b80, 0xbc00};
    ck_assert_mem_eq(L[3].wo_a.w, wo_a_head, sizeof wo_a_head);
    ck_assert_uint_eq(L[1].idx_weights_proj.w[0], 0x3dab);
    hc_model_free(m);
}
END_TEST

START_TEST(golden_safetensors_api)
{
    char err[512];
    hci_st_file *f = NULL;
    ck_assert_int_eq(hci_st_open(tu_data_path("tiny-a.safetensors"), &f, err, sizeof err), HC_OK);
    ck_assert_uint_eq(hci_st_count(f), 209);
    ck_assert_str_eq(hci_st_metadata(f, "preset"), "tiny-a");
    ck_assert_ptr_null(hci_st_metadata(f, "no such key"));
    ck_assert_ptr_null(hci_st_find(f, "layers.0.attn.nothing"));
    for (size_t i = 1; i < hci_st_count(f); i++)
        ck_assert_int_lt(strcmp(hci_st_at(f, i - 1)->name, hci_st_at(f, i)->name), 0);
    const hci_st_tensor *t = hci_st_find(f, "golden.x");
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(t->dtype, HCI_ST_BF16);
    ck_assert_int_eq(t->ndim, 3);
    ck_assert_int_eq(t->shape[1], 770);
    ck_assert_uint_eq(t->nbytes, 770 * 512 * 2);
    t = hci_st_find(f, "layers.2.attn.attn_sink");
    ck_assert_ptr_nonnull(t);
    float sink[8];
    ck_assert_int_eq(hci_st_read(f, t, sink, sizeof sink, err, sizeof err), HC_OK);
    ck_assert_float_eq(sink[1], f32_bits(0x3fe3eeb0u));
    ck_assert_int_eq(hci_st_read(f, t, sink, 4, err, sizeof err), HC_ERR_INTERNAL); /* size must match */
    ck_assert_int_eq(hci_st_read_at(f, t, 28, sink, 8, err, sizeof err), HC_ERR_INTERNAL); /* past the end */
    ck_assert_int_eq(hci_st_read_at(f, t, 28, sink, 4, err, sizeof err), HC_OK);
    ck_assert_float_eq(sink[0], f32_bits(0x3fa85cfbu));
    hci_st_close(f);
}
END_TEST

/* ---- (2), (3) round trips ---- */

static void roundtrip_dir(int n_shards, int with_index, int variant, uint64_t seed)
{
    hc_model *ref = random_model("tiny", seed);
    ttl l;
    model_tensors(ref, variant, &l);
    write_shards(&l, n_shards, with_index);
    write_config(tpath("config.json"), &ref->cfg);
    write_text(tpath("README.md"), "not a tensor file\n");
    ttl_free(&l);

    hc_model *m = NULL;
    hc_status st = load(tmp, 0, &m);
    ck_assert_msg(st == HC_OK, "%s (%s)", hc_status_name(st), errbuf);
    assert_same_model(ref, m);
    hc_model_free(m);
    hc_model_free(ref);
}

START_TEST(sharded_with_index)
{
    roundtrip_dir(3, 1, 0, 7);
}
END_TEST

START_TEST(sharded_with_index_other_dtypes)
{
    roundtrip_dir(2, 1, 1, 8);
}
END_TEST

START_TEST(directory_without_index)
{
    roundtrip_dir(3, 0, 1, 9);
}
END_TEST

START_TEST(single_file_roundtrip)
{
    hc_model *ref = random_model("tiny", 10);
    ttl l;
    model_tensors(ref, 0, &l);
    write_single(&l, tpath("model.safetensors"), &ref->cfg);
    ttl_free(&l);
    hc_model *m = NULL;
    hc_status st = load(tpath("model.safetensors"), 0, &m);
    ck_assert_msg(st == HC_OK, "%s (%s)", hc_status_name(st), errbuf);
    assert_same_model(ref, m);
    hc_model_free(m);
    hc_model_free(ref);
}
END_TEST

/* The model differs, so does the fingerprint (and the loaded weights). */
START_TEST(fingerprint_tracks_weights)
{
    hc_model *ref = random_model(small_config, 1), *other = random_model(small_config, 2);
    ttl l;
    model_tensors(other, 0, &l);
    write_single(&l, tpath("m.safetensors"), &ref->cfg);
    ttl_free(&l);
    hc_model *m = NULL;
    ck_assert_int_eq(load(tpath("m.safetensors"), 0, &m), HC_OK);
    ck_assert(memcmp(m->fingerprint, ref->fingerprint, 16) == 0);  /* same configuration */
    ck_assert(memcmp(m->fingerprint + 16, ref->fingerprint + 16, 16) != 0);
    ck_assert(memcmp(m->fingerprint, other->fingerprint, 32) == 0);
    hc_model_free(m);
    hc_model_free(ref);
    hc_model_free(other);
}
END_TEST

/* wo_a stored as FP8 + block scales: code value times its block's scale, rounded once to bf16. */
START_TEST(wo_a_fp8_dequant)
{
    hc_model *ref = random_model(small_config, 3);
    ttl l;
    model_tensors(ref, 0, &l);
    int R = ref->layers[0].wo_a.rows, C = ref->layers[0].wo_a.cols, sr = (R + 127) / 128, sc = (C + 127) / 128;
    uint8_t *codes = malloc((size_t)R * C);
    uint8_t *sbytes = malloc((size_t)sr * sc);
    float *sf32 = malloc((size_t)sr * sc * 4);
    ck_assert(codes && sbytes && sf32);
    for (int i = 0; i < R * C; i++) {
        codes[i] = (uint8_t)(i * 37 + 11);
        if ((codes[i] & 0x7f) == 0x7f) codes[i] = 0x7e;
    }
    codes[0] = 0x38; /* 1.0 */
    codes[1] = 0x3f; /* 1.875 */
    for (int i = 0; i < sr * sc; i++) {
        sbytes[i] = (uint8_t)(120 + i % 5);
        sf32[i] = 0.75f + 0.01f * (float)i;
    }
    sbytes[0] = 130; /* 2^3 */
    sf32[0] = 1.01f;
    /* layer 0: E8M0 scales; layer 1: F32 scales (not powers of two: the product is rounded) */
    ttl_put(&l, "layers.0.attn.wo_a.weight", "F8_E4M3", 2, R, C, codes, (size_t)R * C);
    ttl_put(&l, "layers.0.attn.wo_a.scale", "F8_E8M0", 2, sr, sc, sbytes, (size_t)sr * sc);
    ttl_put(&l, "layers.1.attn.wo_a.weight", "F8_E4M3", 2, R, C, codes, (size_t)R * C);
    ttl_put(&l, "layers.1.attn.wo_a.scale", "F32", 2, sr, sc, sf32, (size_t)sr * sc * 4);
    write_single(&l, tpath("m.safetensors"), &ref->cfg);
    ttl_free(&l);

    hc_model *m = NULL;
    hc_status st = load(tpath("m.safetensors"), 0, &m);
    ck_assert_msg(st == HC_OK, "%s (%s)", hc_status_name(st), errbuf);
    ck_assert_uint_eq(m->layers[0].wo_a.w[0], 0x4100); /* 1.0 * 8 */
    ck_assert_uint_eq(m->layers[1].wo_a.w[1], 0x3ff2); /* bf16(1.875 * fl32(1.01)) = 1.890625 */
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < R * C; i++) {
            int b = i / C / 128 * sc + i % C / 128;
            float s = k == 0 ? ldexpf(1.0f, sbytes[b] - 127) : sf32[b];
            uint16_t want = hci_bf16_from_f32(hci_e4m3_decode(codes[i]) * s);
            ck_assert_msg(m->layers[k].wo_a.w[i] == want, "layer %d element %d: %04x != %04x", k, i,
                          m->layers[k].wo_a.w[i], want);
        }
    assert_bf16_eq(&m->layers[2].wo_a, &ref->layers[2].wo_a, 2);
    hc_model_free(m);
    hc_model_free(ref);
    free(codes);
    free(sbytes);
    free(sf32);
}
END_TEST

/* F32 matrices are rounded to bf16 to nearest even; F32 vectors are kept exactly. */
START_TEST(f32_rounding)
{
    hc_model *ref = random_model(small_config, 12);
    ttl l;
    model_tensors(ref, 0, &l);
    const hci_bf16_mat *g = &ref->layers[2].comp.wgate;
    size_t n = (size_t)g->rows * (size_t)g->cols;
    tt *t = ttl_put(&l, "layers.2.attn.compressor.wgate.weight", "F32", 2, g->rows, g->cols, NULL, n * 4);
    for (size_t i = 0; i < n; i++) {
        float f = hci_f32_from_bf16(g->w[i]);
        memcpy(t->data + 4 * i, &f, 4);
    }
    const float in[4] = {1.0f + 0x1p-8f, 1.0f + 0x3p-8f, 1.0f + 0x1p-8f + 0x1p-20f, -(1.0f + 0x1p-8f)};
    const uint16_t want[4] = {0x3f80, 0x3f82, 0x3f81, 0xbf80}; /* ties to even, above the tie up */
    memcpy(t->data, in, sizeof in);
    float sink[2] = {1.0f + 0x1p-20f, -3.0f};
    ttl_put(&l, "layers.2.attn.attn_sink", "F32", 1, 2, 0, sink, sizeof sink);
    write_single(&l, tpath("m.safetensors"), &ref->cfg);
    ttl_free(&l);
    hc_model *m = NULL;
    ck_assert_int_eq(load(tpath("m.safetensors"), 0, &m), HC_OK);
    ck_assert_mem_eq(m->layers[2].comp.wgate.w, want, sizeof want);
    ck_assert_mem_eq(m->layers[2].comp.wgate.w + 4, g->w + 4, (n - 4) * 2);
    ck_assert_mem_eq(m->layers[2].attn_sink, sink, sizeof sink);
    hc_model_free(m);
    hc_model_free(ref);
}
END_TEST

/* ---- (4) checkpoint errors ---- */

/* Write l as an indexed 2-shard directory, expect the load to fail. */
static void expect_dir_fail(ttl *l, hc_status want, const char *needle1, const char *needle2)
{
    write_shards(l, 2, 1);
    expect_load_fail(tmp, want, needle1, needle2);
}

START_TEST(missing_tensor)
{
    ttl l;
    hc_model *m = small_dir(&l);
    ttl_drop(&l, "layers.2.attn.compressor.wgate.weight");
    expect_dir_fail(&l, HC_ERR_MISSING_TENSOR, "layers.2.attn.compressor.wgate.weight: missing", "index.json");
    ttl_free(&l);
    hc_model_free(m);
}
END_TEST

START_TEST(missing_tensor_unindexed)
{
    ttl l;
    hc_model *m = small_dir(&l);
    ttl_drop(&l, "layers.1.attn.indexer.compressor.norm.weight");
    write_shards(&l, 2, 0);
    expect_load_fail(tmp, HC_ERR_MISSING_TENSOR, "layers.1.attn.indexer.compressor.norm.weight: missing", tmp);
    ttl_free(&l);
    hc_model_free(m);
}
END_TEST

START_TEST(missing_scale)
{
    ttl l;
    hc_model *m = small_dir(&l);
    ttl_drop(&l, "layers.1.attn.wq_b.scale");
    expect_dir_fail(&l, HC_ERR_MISSING_TENSOR, "layers.1.attn.wq_b.scale: missing", NULL);
    ttl_free(&l);
    hc_model_free(m);
}
END_TEST

START_TEST(wrong_shape)
{
    ttl l;
    hc_model *m = small_dir(&l);
    ttl_put(&l, "layers.1.attn.wq_a.weight", "F8_E4M3", 2, 128, 129, NULL, 128 * 129);
    expect_dir_fail(&l, HC_ERR_TENSOR, "layers.1.attn.wq_a.weight",
                    "F8_E4M3 [128, 129], expected F8_E4M3 [128, 128]");
    ttl_free(&l);
    hc_model_free(m);
}
END_TEST

START_TEST(wrong_rank)
{
    ttl l;
    hc_model *m = small_dir(&l);
    ttl_put(&l, "layers.0.attn.kv_norm.weight", "F32", 2, 1, 128, NULL, 128 * 4);
    expect_dir_fail(&l, HC_ERR_TENSOR, "layers.0.attn.kv_norm.weight", "[1, 128], expected BF16 or F32 [128]");
    ttl_free(&l);
    hc_model_free(m);
}
END_TEST

START_TEST(wrong_dtype)
{
    ttl l;
    hc_model *m = small_dir(&l);
    ttl_put(&l, "layers.0.attn.attn_sink", "I32", 1, 2, 0, NULL, 8);
    expect_dir_fail(&l, HC_ERR_TENSOR, "layers.0.attn.attn_sink", "I32 [2], expected BF16 or F32 [2]");
    ttl_free(&l);
    hc_model_free(m);
}
END_TEST

START_TEST(wrong_dtype_fp8_weight)
{
    ttl l;
    hc_model *m = small_dir(&l);
    ttl_put(&l, "layers.2.attn.wo_b.weight", "BF16", 2, 128, 128, NULL, 128 * 128 * 2);
    expect_dir_fail(&l, HC_ERR_TENSOR, "layers.2.attn.wo_b.weight", "expected F8_E4M3");
    ttl_free(&l);
    hc_model_free(m);
}
END_TEST

START_TEST(wrong_scale_shape)
{
    ttl l;
    hc_model *m = small_dir(&l);
    ttl_put(&l, "layers.0.attn.wq_a.scale", "F32", 2, 1, 2, NULL, 8);
    expect_dir_fail(&l, HC_ERR_TENSOR, "layers.0.attn.wq_a.scale", "expected F8_E8M0 or F32 [1, 1]");
    ttl_free(&l);
    hc_model_free(m);
}
END_TEST

START_TEST(nan_in_norm)
{
    ttl l;
    hc_model *m = small_dir(&l);
    float v[128];
    for (int i = 0; i < 128; i++) v[i] = 1.0f;
    v[5] = NAN;
    ttl_put(&l, "layers.1.attn.kv_norm.weight", "F32", 1, 128, 0, v, sizeof v);
    expect_dir_fail(&l, HC_ERR_TENSOR, "layers.1.attn.kv_norm.weight", "non-finite value at element 5");
    ttl_free(&l);
    hc_model_free(m);
}
END_TEST

START_TEST(inf_in_bf16_matrix)
{
    ttl l;
    hc_model *m = small_dir(&l);
    tt *t = ttl_put(&l, "layers.2.attn.compressor.wkv.weight", "BF16", 2, 128, 128, NULL, 128 * 128 * 2);
    t->data[2 * 300] = 0x80, t->data[2 * 300 + 1] = 0xff; /* -inf */
    expect_dir_fail(&l, HC_ERR_TENSOR, "layers.2.attn.compressor.wkv.weight", "element 300");
    ttl_free(&l);
    hc_model_free(m);
}
END_TEST

START_TEST(f32_overflowing_bf16)
{
    ttl l;
    hc_model *m = small_dir(&l);
    tt *t = ttl_put(&l, "layers.0.attn.wo_a.weight", "F32", 2, 128, 256, NULL, 128 * 256 * 4);
    float big = 3.4e38f; /* finite in fp32, rounds to infinity in bf16 */
    memcpy(t->data + 4 * 7, &big, 4);
    expect_dir_fail(&l, HC_ERR_TENSOR, "layers.0.attn.wo_a.weight", "element 7");
    ttl_free(&l);
    hc_model_free(m);
}
END_TEST

START_TEST(nan_scale_e8m0)
{
    ttl l;
    hc_model *m = small_dir(&l);
    uint8_t b = 255;
    ttl_put(&l, "layers.2.attn.wkv.scale", "F8_E8M0", 2, 1, 1, &b, 1);
    expect_dir_fail(&l, HC_ERR_TENSOR, "layers.2.attn.wkv.scale", "NaN scale");
    ttl_free(&l);
    hc_model_free(m);
}
END_TEST

START_TEST(bad_scale_f32)
{
    static const float bad[] = {0.0f, -1.0f, INFINITY, NAN};
    for (int k = 0; k < 4; k++) {
        ttl l;
        hc_model *m = small_dir(&l);
        float s[2] = {1.0f, bad[k]};
        ttl_put(&l, "layers.1.attn.indexer.wq_b.scale", "F32", 2, 2, 1, s, sizeof s);
        expect_dir_fail(&l, HC_ERR_TENSOR, "layers.1.attn.indexer.wq_b.scale",
                        "not finite and positive at element 1");
        ttl_free(&l);
        hc_model_free(m);
    }
}
END_TEST

START_TEST(nan_fp8_code)
{
    ttl l;
    hc_model *m = small_dir(&l);
    tt *t = ttl_find(&l, "layers.0.attn.wq_b.weight");
    t->data[1000] = 0xff;
    expect_dir_fail(&l, HC_ERR_TENSOR, "layers.0.attn.wq_b.weight", "NaN code at element 1000");
    ttl_free(&l);
    hc_model_free(m);
}
END_TEST

START_TEST(duplicate_across_files)
{
    ttl l;
    hc_model *m = small_dir(&l);
    write_shards(&l, 2, 0);
    stw *w = stw_new();
    add_all(w, ttl_find(&l, "layers.0.attn.q_norm.weight"));
    ck_assert_int_eq(stw_write(w, tpath("extra.safetensors")), 0);
    stw_free(w);
    expect_load_fail(tmp, HC_ERR_FORMAT, "\"layers.0.attn.q_norm.weight\" is in both", "extra.safetensors");
    ttl_free(&l);
    hc_model_free(m);
}
END_TEST

START_TEST(index_shard_escapes)
{
    static const char *const bad[] = {"../model-00001-of-00002.safetensors", "sub/x.safetensors", "..", ""};
    ttl l;
    hc_model *m = small_dir(&l);
    write_shards(&l, 2, 1);
    for (int k = 0; k < 4; k++) {
        json_t *index = json_pack("{s:{s:s, s:s}}", "weight_map", "layers.0.attn.wq_a.weight", bad[k],
                                  "layers.0.attn.wq_a.scale", "model-00001-of-00002.safetensors");
        ck_assert_int_eq(json_dump_file(index, tpath("model.safetensors.index.json"), 0), 0);
        json_decref(index);
        expect_load_fail(tmp, HC_ERR_FORMAT, "layers.0.attn.wq_a.weight", "not a plain file name");
        if (*bad[k]) assert_names(bad[k]);
    }
    ttl_free(&l);
    hc_model_free(m);
}
END_TEST

START_TEST(index_errors)
{
    ttl l;
    hc_model *m = small_dir(&l);
    write_shards(&l, 2, 1);
    const char *ip = tpath("model.safetensors.index.json");
    /* the shard the index names does not list the tensor */
    json_t *index = NULL;
    char *text = NULL;
    size_t n = 0;
    ck_assert_ptr_nonnull(text = tu_read_file(ip, &n));
    ck_assert_ptr_nonnull(index = json_loads(text, 0, NULL));
    free(text);
    json_t *map = json_object_get(index, "weight_map");
    const char *first = json_string_value(json_object_get(map, "layers.0.attn.wq_a.weight"));
    const char *other = strcmp(first, shard_name(0, 2)) ? shard_name(0, 2) : shard_name(1, 2);
    json_object_set_new(map, "layers.0.attn.wq_a.weight", json_string(other));
    ck_assert_int_eq(json_dump_file(index, ip, 0), 0);
    expect_load_fail(tmp, HC_ERR_MISSING_TENSOR, "layers.0.attn.wq_a.weight: missing", other);
    /* a shard that does not exist */
    json_object_set_new(map, "layers.0.attn.wq_a.weight", json_string("nope.safetensors"));
    ck_assert_int_eq(json_dump_file(index, ip, 0), 0);
    expect_load_fail(tmp, HC_ERR_IO, "nope.safetensors", "No such file");
    json_decref(index);
    /* not JSON, duplicate keys, no weight_map, a non-string shard */
    write_text(ip, "{\"weight_map\": {");
    expect_load_fail(tmp, HC_ERR_FORMAT, "index.json", NULL);
    write_text(ip, "{\"weight_map\": {\"a\": \"x.safetensors\", \"a\": \"y.safetensors\"}}");
    expect_load_fail(tmp, HC_ERR_FORMAT, "index.json", "duplicate");
    write_text(ip, "{\"metadata\": {}}");
    expect_load_fail(tmp, HC_ERR_FORMAT, "index.json", "weight_map");
    write_text(ip, "{\"weight_map\": {\"layers.0.attn.wq_a.weight\": 3}}");
    expect_load_fail(tmp, HC_ERR_FORMAT, "layers.0.attn.wq_a.weight", "not a string");
    ttl_free(&l);
    hc_model_free(m);
}
END_TEST

START_TEST(bad_config)
{
    ttl l;
    hc_model *m = small_dir(&l);
    write_shards(&l, 2, 1);
    const char *cp = tpath("config.json");
    write_text(cp, "{\"hidden_size\": 100, \"num_hidden_layers\": 3}");
    expect_load_fail(tmp, HC_ERR_BAD_CONFIG, "config.json", "hidden_size 100");
    write_text(cp, "{\"hidden_size\": 128, \"compress_ratios\": [0, 4, 64], \"num_hidden_layers\": 3}");
    expect_load_fail(tmp, HC_ERR_BAD_CONFIG, "config.json", "compress_ratios[2]");
    write_text(cp, "{\"hidden_size\": \"wide\"}");
    expect_load_fail(tmp, HC_ERR_BAD_CONFIG, "config.json", "hidden_size");
    write_text(cp, "{\"hidden_size\": 128,");
    expect_load_fail(tmp, HC_ERR_FORMAT, "config.json", NULL);
    write_text(cp, "tiny"); /* a preset name is not a config.json */
    expect_load_fail(tmp, HC_ERR_FORMAT, "config.json", "not a JSON object");
    write_text(cp, "[1, 2]");
    expect_load_fail(tmp, HC_ERR_FORMAT, "config.json", "not a JSON object");
    ck_assert_int_eq(tu_write_file(cp, "{\"a\": 1}\0{", 10), 0);
    expect_load_fail(tmp, HC_ERR_FORMAT, "config.json", "NUL");
    ck_assert_int_eq(truncate(cp, (off_t)HCI_MAX_CONFIG_TEXT + 1), 0);
    expect_load_fail(tmp, HC_ERR_LIMIT, "config.json", NULL);
    ck_assert_int_eq(unlink(cp), 0);
    expect_load_fail(tmp, HC_ERR_IO, "config.json", "No such file");
    ttl_free(&l);
    hc_model_free(m);
}
END_TEST

START_TEST(bad_paths)
{
    expect_load_fail("/nonexistent/hybridctx/model", HC_ERR_IO, "/nonexistent/hybridctx/model", "No such file");
    expect_load_fail("/dev/null", HC_ERR_IO, "/dev/null", NULL);
    /* a directory with a config but no tensors */
    hc_model *m = random_model(small_config, 1);
    write_config(tpath("config.json"), &m->cfg);
    expect_load_fail(tmp, HC_ERR_MISSING_TENSOR, tmp, "no model.safetensors.index.json");
    hc_model_free(m);
    ck_assert_int_eq(hc_model_load(NULL, NULL, &m), HC_ERR_NULL_ARG);
}
END_TEST

START_TEST(single_file_without_config)
{
    hc_model *ref = random_model(small_config, 5);
    ttl l;
    model_tensors(ref, 0, &l);
    write_single(&l, tpath("m.safetensors"), NULL);
    expect_load_fail(tpath("m.safetensors"), HC_ERR_FORMAT, "m.safetensors", "config");
    /* a config entry that is not valid */
    stw *w = stw_new();
    ck_assert_int_eq(stw_meta(w, "config", "{\"num_hidden_layers\": 0}"), 0);
    ck_assert_int_eq(stw_write(w, tpath("c.safetensors")), 0);
    stw_free(w);
    expect_load_fail(tpath("c.safetensors"), HC_ERR_BAD_CONFIG, "c.safetensors: __metadata__.config",
                     "num_hidden_layers");
    ttl_free(&l);
    hc_model_free(ref);
}
END_TEST

/* A valid single-file model cut at many lengths: every prefix is refused as malformed. */
START_TEST(truncated_files)
{
    hc_model *ref = random_model(small_config, 6);
    ttl l;
    model_tensors(ref, 0, &l);
    write_single(&l, tpath("full.safetensors"), &ref->cfg);
    ttl_free(&l);
    size_t size = 0;
    unsigned char *bytes = tu_read_file(tpath("full.safetensors"), &size);
    ck_assert_ptr_nonnull(bytes);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | bytes[i];
    const size_t cuts[] = {0, 1, 7, 8, 9, 8 + hlen / 2, 8 + hlen - 1, 8 + hlen, 8 + hlen + 1, 8 + hlen + 4096,
                           size / 2, size - 1};
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
        const char *p = tpath("cut-%zu.safetensors", cuts[k]);
        ck_assert_int_eq(tu_write_file(p, bytes, cuts[k]), 0);
        expect_load_fail(p, HC_ERR_FORMAT, p, NULL);
        unlink(p);
    }
    hc_model *m = NULL;
    ck_assert_int_eq(load(tpath("full.safetensors"), 0, &m), HC_OK);
    hc_model_free(m);
    free(bytes);
    hc_model_free(ref);
}
END_TEST

/* ---- safetensors format errors, through hci_st_open ---- */

static hc_status st_open_raw(uint64_t len_field, const char *header, size_t data_len, hci_st_file **f)
{
    unsigned char *data = calloc(data_len ? data_len : 1, 1);
    ck_assert_ptr_nonnull(data);
    const char *p = tpath("raw.safetensors");
    ck_assert_int_eq(stw_write_raw(p, len_field, header, strlen(header), data, data_len), 0);
    free(data);
    return hci_st_open(p, f, errbuf, sizeof errbuf);
}

/* One tensor entry of a header, as JSON text. */
#define T1(name, dtype, shape, offs) \
    "\"" name "\": {\"dtype\": \"" dtype "\", \"shape\": " shape ", \"data_offsets\": " offs "}"

static const struct bad_header {
    const char *header;
    size_t data_len;
    hc_status want;
    const char *needle;
} bad_headers[] = {
    {"{" T1("a", "F32", "[2]", "[0, 8]"), 8, HC_ERR_FORMAT, "header JSON"},                   /* no closing brace */
    {"{" T1("a", "F32", "[2]", "[0, 8]") ", " T1("a", "F32", "[2]", "[0, 8]") "}", 8, HC_ERR_FORMAT, "duplicate"},
    {"{" T1("a", "F32", "[2]", "[0, 8]") ", " T1("b", "F32", "[2]", "[4, 12]") "}", 12, HC_ERR_FORMAT, "overlap"},
    {"{" T1("a", "F32", "[4]", "[0, 16]") ", " T1("z", "F32", "[0]", "[4, 4]") ", "
         T1("b", "U8", "[1]", "[15, 16]") "}",
     16, HC_ERR_FORMAT, "\"a\" and \"b\" overlap"},
    {"{" T1("a", "F32", "[4]", "[0, 16]") "}", 8, HC_ERR_FORMAT, "\"a\": data_offsets [0, 16] pass the end"},
    {"{" T1("a", "F7", "[2]", "[0, 8]") "}", 8, HC_ERR_FORMAT, "\"a\": unknown dtype \"F7\""},
    {"{" T1("a", "f32", "[2]", "[0, 8]") "}", 8, HC_ERR_FORMAT, "unknown dtype"},
    {"{" T1("a", "F32", "[3]", "[0, 8]") "}", 8, HC_ERR_FORMAT, "needs 12"},
    {"{" T1("a", "F32", "[-1]", "[0, 8]") "}", 8, HC_ERR_FORMAT, "shape[0]"},
    {"{" T1("a", "F32", "[2.0]", "[0, 8]") "}", 8, HC_ERR_FORMAT, "shape[0]"},
    {"{" T1("a", "F32", "[\"2\"]", "[0, 8]") "}", 8, HC_ERR_FORMAT, "shape[0]"},
    {"{" T1("a", "F32", "2", "[0, 8]") "}", 8, HC_ERR_FORMAT, "shape is not an array"},
    {"{" T1("a", "U8", "[1, 1, 1, 1, 1, 1, 1, 1, 1]", "[0, 1]") "}", 8, HC_ERR_LIMIT, "dimensions"},
    {"{" T1("a", "U8", "[4294967296, 4294967296, 4294967296]", "[0, 8]") "}", 8, HC_ERR_FORMAT, "overflows"},
    {"{" T1("a", "F64", "[4294967296, 1073741824]", "[0, 8]") "}", 8, HC_ERR_FORMAT, "overflows"},
    {"{" T1("a", "F32", "[2]", "[8, 0]") "}", 8, HC_ERR_FORMAT, "data_offsets"},
    {"{" T1("a", "F32", "[2]", "[0, 8, 8]") "}", 8, HC_ERR_FORMAT, "data_offsets"},
    {"{" T1("a", "F32", "[2]", "[-8, 0]") "}", 8, HC_ERR_FORMAT, "data_offsets"},
    {"{" T1("a", "F32", "[2]", "[0, 99999999999999999999]") "}", 8, HC_ERR_FORMAT, "header JSON"},
    {"{\"a\": {\"shape\": [2], \"data_offsets\": [0, 8]}}", 8, HC_ERR_FORMAT, "no \"dtype\""},
    {"{\"a\": {\"dtype\": \"F32\", \"data_offsets\": [0, 8]}}", 8, HC_ERR_FORMAT, "no \"shape\""},
    {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2]}}", 8, HC_ERR_FORMAT, "no \"data_offsets\""},
    {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8], \"x\": 1}}", 8, HC_ERR_FORMAT,
     "unknown field \"x\""},
    {"{\"a\": 5}", 8, HC_ERR_FORMAT, "entry is not an object"},
    {"{\"a\": {\"dtype\": 5, \"shape\": [2], \"data_offsets\": [0, 8]}}", 8, HC_ERR_FORMAT, "dtype is not a string"},
    {"[]", 8, HC_ERR_FORMAT, "not a JSON object"},
    {"", 8, HC_ERR_FORMAT, "header JSON"},
    {"{} x", 8, HC_ERR_FORMAT, "header JSON"},
    {"{\"__metadata__\": {\"k\": 1}}", 0, HC_ERR_FORMAT, "__metadata__ \"k\" is not a string"},
    {"{\"__metadata__\": [\"k\"]}", 0, HC_ERR_FORMAT, "__metadata__ is not an object"},
    {"{" T1("a", "F4", "[3]", "[0, 2]") "}", 8, HC_ERR_FORMAT, "whole bytes"},
    {"{\"a\\u0000b\": {}}", 8, HC_ERR_FORMAT, "header JSON"},
    {"{\"\xff\": {}}", 8, HC_ERR_FORMAT, "header JSON"}, /* not UTF-8 */
};

START_TEST(safetensors_bad_headers)
{
    const struct bad_header *b = &bad_headers[_i];
    hci_st_file *f = (hci_st_file *)&f;
    hc_status st = st_open_raw(strlen(b->header), b->header, b->data_len, &f);
    ck_assert_msg(st == b->want, "header %d: got %s, want %s (%s)", _i, hc_status_name(st), hc_status_name(b->want),
                  errbuf);
    ck_assert_ptr_null(f);
    assert_names(b->needle);
    assert_names("raw.safetensors");
}
END_TEST

START_TEST(safetensors_bad_lengths)
{
    hci_st_file *f = NULL;
    const char *h = "{" T1("a", "F32", "[2]", "[0, 8]") "}";
    ck_assert_int_eq(st_open_raw(strlen(h) + 100, h, 8, &f), HC_ERR_FORMAT); /* past the end of the file */
    assert_names("exceeds");
    ck_assert_int_eq(st_open_raw(1ull << 63, h, 8, &f), HC_ERR_FORMAT);
    assert_names("header length 9223372036854775808");
    ck_assert_int_eq(st_open_raw(UINT64_MAX, h, 8, &f), HC_ERR_FORMAT);
    ck_assert_int_eq(st_open_raw(0, "", 0, &f), HC_ERR_FORMAT);
    /* shorter than the length field */
    ck_assert_int_eq(tu_write_file(tpath("raw.safetensors"), "\x02\0\0", 3), 0);
    ck_assert_int_eq(hci_st_open(tpath("raw.safetensors"), &f, errbuf, sizeof errbuf), HC_ERR_FORMAT);
    assert_names("too short");
    /* a header over the 100,000,000-byte limit, in a sparse file that really is that long */
    const char *p = tpath("big.safetensors");
    ck_assert_int_eq(stw_write_raw(p, HCI_ST_MAX_HEADER + 1ull, "{}", 2, NULL, 0), 0);
    ck_assert_int_eq(truncate(p, (off_t)(8 + HCI_ST_MAX_HEADER + 1ull)), 0);
    ck_assert_int_eq(hci_st_open(p, &f, errbuf, sizeof errbuf), HC_ERR_LIMIT);
    assert_names("big.safetensors");
    expect_load_fail(p, HC_ERR_LIMIT, "100000000", NULL);
    ck_assert_int_eq(hci_st_open(tmp, &f, errbuf, sizeof errbuf), HC_ERR_IO); /* a directory */
    ck_assert_ptr_null(f);
}
END_TEST

START_TEST(safetensors_valid_edge_cases)
{
    hci_st_file *f = NULL;
    /* padding spaces, tensors out of offset order, an empty tensor sharing an offset, a gap,
     * a scalar, packed F4, every dtype name */
    const char *h = "{\"__metadata__\": {\"k\": \"v\\\"q\"}, " T1("b", "BF16", "[2, 2]", "[16, 24]") ", "
                    T1("a", "F32", "[2]", "[0, 8]") ", " T1("e", "F64", "[0, 7]", "[8, 8]") ", "
                    T1("s", "I64", "[]", "[24, 32]") ", " T1("p", "F4", "[4]", "[32, 34]") ", "
                    T1("c", "C64", "[1]", "[40, 48]") ", " T1("f8", "F8_E5M2FNUZ", "[1]", "[48, 49]") "}        ";
    unsigned char data[49];
    for (int i = 0; i < 49; i++) data[i] = (unsigned char)i;
    const char *p = tpath("ok.safetensors");
    ck_assert_int_eq(stw_write_raw(p, strlen(h), h, strlen(h), data, sizeof data), 0);
    hc_status st = hci_st_open(p, &f, errbuf, sizeof errbuf);
    ck_assert_msg(st == HC_OK, "%s", errbuf);
    ck_assert_str_eq(hci_st_path(f), p);
    ck_assert_uint_eq(hci_st_count(f), 7);
    ck_assert_str_eq(hci_st_metadata(f, "k"), "v\"q");
    const hci_st_tensor *t = hci_st_find(f, "s");
    ck_assert_int_eq(t->ndim, 0);
    ck_assert_uint_eq(t->n_elems, 1);
    t = hci_st_find(f, "e");
    ck_assert_uint_eq(t->n_elems, 0);
    ck_assert_uint_eq(hci_st_find(f, "p")->nbytes, 2);
    ck_assert_int_eq(hci_st_find(f, "c")->dtype, HCI_ST_C64);
    unsigned char out[8];
    t = hci_st_find(f, "b");
    ck_assert_int_eq(hci_st_read(f, t, out, 8, errbuf, sizeof errbuf), HC_OK);
    ck_assert_mem_eq(out, data + 16, 8);
    char sh[32];
    hci_st_shape_str(t, sh, sizeof sh);
    ck_assert_str_eq(sh, "[2, 2]");
    hci_st_close(f);
    /* an empty header object */
    ck_assert_int_eq(st_open_raw(2, "{}", 0, &f), HC_OK);
    ck_assert_uint_eq(hci_st_count(f), 0);
    ck_assert_ptr_null(hci_st_metadata(f, "k"));
    hci_st_close(f);
    hci_st_close(NULL);
    for (int d = 0; d < HCI_ST_N_DTYPES; d++) {
        ck_assert_uint_gt(hci_st_dtype_bits((hci_st_dtype)d), 0);
        ck_assert_str_ne(hci_st_dtype_name((hci_st_dtype)d), "?");
    }
}
END_TEST

/* Unknown dtypes and overlaps reach hc_model_load() as HC_ERR_FORMAT naming file and tensor. */
START_TEST(format_errors_through_load)
{
    hc_model *ref = random_model(small_config, 4);
    char *cfg = config_json(&ref->cfg);
    stw *w = stw_new();
    ck_assert_int_eq(stw_meta(w, "config", cfg), 0);
    int64_t shape[1] = {2};
    ck_assert_int_eq(stw_add(w, "layers.0.attn.attn_sink", "F33", 1, shape, "12345678", 8), 0);
    ck_assert_int_eq(stw_write(w, tpath("dt.safetensors")), 0);
    stw_free(w);
    expect_load_fail(tpath("dt.safetensors"), HC_ERR_FORMAT, "dt.safetensors",
                     "\"layers.0.attn.attn_sink\": unknown dtype \"F33\"");
    /* rewrite the header of a valid file so that two tensors overlap */
    w = stw_new();
    ck_assert_int_eq(stw_meta(w, "config", cfg), 0);
    ck_assert_int_eq(stw_add(w, "x", "F32", 1, shape, "12345678", 8), 0);
    ck_assert_int_eq(stw_add(w, "y", "F32", 1, shape, "12345678", 8), 0);
    size_t hl = 0;
    char *h = stw_header(w, &hl);
    char *y = strstr(h, "[8,16]");
    ck_assert_ptr_nonnull(y);
    memcpy(y, "[4,12]", 6);
    ck_assert_int_eq(stw_write_raw(tpath("ov.safetensors"), hl, h, hl, "1234567812345678", 16), 0);
    expect_load_fail(tpath("ov.safetensors"), HC_ERR_FORMAT, "ov.safetensors", "\"x\" and \"y\" overlap");
    free(h);
    stw_free(w);
    free(cfg);
    hc_model_free(ref);
}
END_TEST

/* ---- mutated files never crash the reader or the loader ---- */

static uint64_t rnd(uint64_t *s)
{
    uint64_t x = (*s += 0x9e3779b97f4a7c15ull);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static void mutate(unsigned char *b, size_t n, size_t span, uint64_t *s)
{
    static const char interesting[] = "{}[]\",:-0129 e.\\";
    int k = 1 + (int)(rnd(s) % 4);
    for (int i = 0; i < k; i++) {
        size_t at = (size_t)(rnd(s) % (span < n ? span : n));
        uint64_t r = rnd(s);
        b[at] = (r & 1) ? (unsigned char)(r >> 8) : (unsigned char)interesting[(r >> 8) % (sizeof interesting - 1)];
    }
}

START_TEST(fuzz_safetensors_reader)
{
    const char *h = "{\"__metadata__\": {\"k\": \"v\"}, " T1("a", "F32", "[2]", "[0, 8]") ", "
                    T1("b", "BF16", "[2, 2]", "[8, 16]") ", " T1("c", "U8", "[3]", "[16, 19]") "}";
    size_t hl = strlen(h), n = 8 + hl + 19;
    unsigned char *base = calloc(n, 1), *b = malloc(n), out[64];
    ck_assert(base && b);
    for (int i = 0; i < 8; i++) base[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(base + 8, h, hl);
    uint64_t s = 12345;
    int ok = 0;
    for (int it = 0; it < 2000; it++) {
        memcpy(b, base, n);
        mutate(b, n, n, &s);
        const char *p = tpath("fz.safetensors");
        ck_assert_int_eq(tu_write_file(p, b, n - (size_t)(rnd(&s) % 3 == 0 ? rnd(&s) % 8 : 0)), 0);
        hci_st_file *f = NULL;
        hc_status st = hci_st_open(p, &f, errbuf, sizeof errbuf);
        ck_assert_msg(st == HC_OK || st == HC_ERR_FORMAT || st == HC_ERR_LIMIT, "iteration %d: %s", it, errbuf);
        if (st) {
            ck_assert_msg(strstr(errbuf, p) != NULL, "iteration %d: %s", it, errbuf);
            continue;
        }
        ok++;
        for (size_t i = 0; i < hci_st_count(f); i++) {
            const hci_st_tensor *t = hci_st_at(f, i);
            if (t->nbytes <= sizeof out)
                ck_assert_int_eq(hci_st_read(f, t, out, t->nbytes, errbuf, sizeof errbuf), HC_OK);
        }
        hci_st_close(f);
    }
    ck_assert_int_gt(ok, 0); /* some mutations (in data, or benign) keep the file valid */
    free(base);
    free(b);
}
END_TEST

START_TEST(fuzz_loader_header)
{
    hc_model *ref = random_model(small_config, 13);
    ttl l;
    model_tensors(ref, 1, &l);
    write_single(&l, tpath("full.safetensors"), &ref->cfg);
    ttl_free(&l);
    size_t n = 0;
    unsigned char *base = tu_read_file(tpath("full.safetensors"), &n), *b = malloc(n);
    ck_assert(base && b);
    uint64_t hlen = 0, s = 99;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | base[i];
    for (int it = 0; it < 120; it++) {
        memcpy(b, base, n);
        mutate(b, n, 8 + hlen, &s);
        const char *p = tpath("fz.safetensors");
        ck_assert_int_eq(tu_write_file(p, b, n), 0);
        hc_model *m = NULL;
        hc_status st = load(p, 0, &m);
        ck_assert_msg(st <= 0 && st != HC_ERR_INTERNAL && st != HC_ERR_NULL_ARG, "iteration %d: %s", it, errbuf);
        ck_assert_msg(st == HC_OK || errbuf[0], "iteration %d: no message for %s", it, hc_status_name(st));
        hc_model_free(m);
    }
    free(base);
    free(b);
    hc_model_free(ref);
}
END_TEST

/* ---- (5) geometry only ---- */

START_TEST(geometry_only)
{
    hc_model *ref = random_model(small_config, 2);
    write_config(tpath("config.json"), &ref->cfg);
    write_text(tpath("model.safetensors"), "not a safetensors file"); /* never opened */
    hc_model *m = NULL;
    hc_status st = load(tmp, HC_MODEL_GEOMETRY_ONLY, &m);
    ck_assert_msg(st == HC_OK, "%s", errbuf);
    hc_model_info info = {.struct_size = sizeof info};
    ck_assert_int_eq(hc_model_info_get(m, &info), HC_OK);
    ck_assert_int_eq(info.has_weights, 0);
    ck_assert_uint_eq(info.weight_bytes, 0);
    ck_assert_ptr_null(m->layers);
    ck_assert_int_eq(info.n_layers, 3);
    ck_assert_int_eq(info.dim, 128);
    ck_assert_int_eq(hc_model_layer_ratio(m, 2), 128);
    ck_assert(memcmp(m->fingerprint, ref->fingerprint, 16) == 0); /* the configuration part */
    hc_model_free(m);
    expect_load_fail(tmp, HC_ERR_FORMAT, "model.safetensors", NULL); /* with weights it is read */

    /* the golden single file: only its header is parsed */
    st = load(tu_data_path("tiny-a.safetensors"), HC_MODEL_GEOMETRY_ONLY, &m);
    ck_assert_msg(st == HC_OK, "%s", errbuf);
    ck_assert_int_eq(hc_model_n_layers(m), 4);
    ck_assert_int_eq(m->has_weights, 0);
    hc_model_free(m);

    /* the internal entry point, without weights */
    struct hc_model raw;
    memset(&raw, 0, sizeof raw);
    ck_assert_int_eq(hci_model_load_path(tmp, 0, &raw, errbuf, sizeof errbuf), HC_OK);
    ck_assert_int_eq(raw.cfg.n_layers, 3);
    ck_assert_int_eq(raw.has_weights, 0);
    ck_assert_ptr_null(raw.layers);
    hc_model_free(ref);
}
END_TEST

static TCase *tcase(Suite *s, const char *name, int with_tmp)
{
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, 600);
    if (with_tmp) tcase_add_checked_fixture(tc, tmp_setup, tmp_teardown);
    suite_add_tcase(s, tc);
    return tc;
}

Suite *tu_suite(int argc, char **argv)
{
    (void)argc, (void)argv;
    Suite *s = suite_create("loader");
    TCase *tc = tcase(s, "golden", 1);
    tcase_add_test(tc, golden_public_load);
    tcase_add_test(tc, golden_safetensors_api);
    tc = tcase(s, "roundtrip", 1);
    tcase_add_test(tc, sharded_with_index);
    tcase_add_test(tc, sharded_with_index_other_dtypes);
    tcase_add_test(tc, directory_without_index);
    tcase_add_test(tc, single_file_roundtrip);
    tcase_add_test(tc, fingerprint_tracks_weights);
    tcase_add_test(tc, wo_a_fp8_dequant);
    tcase_add_test(tc, f32_rounding);
    tc = tcase(s, "checkpoint_errors", 1);
    tcase_add_test(tc, missing_tensor);
    tcase_add_test(tc, missing_tensor_unindexed);
    tcase_add_test(tc, missing_scale);
    tcase_add_test(tc, wrong_shape);
    tcase_add_test(tc, wrong_rank);
    tcase_add_test(tc, wrong_dtype);
    tcase_add_test(tc, wrong_dtype_fp8_weight);
    tcase_add_test(tc, wrong_scale_shape);
    tcase_add_test(tc, nan_in_norm);
    tcase_add_test(tc, inf_in_bf16_matrix);
    tcase_add_test(tc, f32_overflowing_bf16);
    tcase_add_test(tc, nan_scale_e8m0);
    tcase_add_test(tc, bad_scale_f32);
    tcase_add_test(tc, nan_fp8_code);
    tcase_add_test(tc, duplicate_across_files);
    tcase_add_test(tc, index_shard_escapes);
    tcase_add_test(tc, index_errors);
    tcase_add_test(tc, bad_config);
    tcase_add_test(tc, bad_paths);
    tcase_add_test(tc, single_file_without_config);
    tcase_add_test(tc, truncated_files);
    tc = tcase(s, "safetensors", 1);
    tcase_add_loop_test(tc, safetensors_bad_headers, 0, (int)(sizeof bad_headers / sizeof bad_headers[0]));
    tcase_add_test(tc, safetensors_bad_lengths);
    tcase_add_test(tc, safetensors_valid_edge_cases);
    tcase_add_test(tc, format_errors_through_load);
    tcase_add_test(tc, fuzz_safetensors_reader);
    tcase_add_test(tc, fuzz_loader_header);
    tc = tcase(s, "geometry_only", 1);
    tcase_add_test(tc, geometry_only);
    return s;
}
