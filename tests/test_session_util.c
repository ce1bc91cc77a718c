/* test_session_util.c - see test_session_util.h. Offsets follow docs/session-format.md §2. */
#include "test_session_util.h"
#include <check.h>
#include <stdlib.h>
#include <string.h>

const char tsu_micro_json[] =
    "{\"hidden_size\": 128, \"num_hidden_layers\": 3, \"num_attention_heads\": 2, \"head_dim\": 128,"
    " \"qk_rope_head_dim\": 64, \"q_lora_rank\": 128, \"o_groups\": 1, \"o_lora_rank\": 128,"
    " \"index_n_heads\": 2, \"index_head_dim\": 128, \"index_topk\": 16, \"sliding_window\": 128,"
    " \"compress_ratios\": [0, 4, 128]}";

const char tsu_golden_json[] =
    "{\"hidden_size\": 512, \"num_hidden_layers\": 4, \"num_attention_heads\": 8, \"head_dim\": 128,"
    " \"qk_rope_head_dim\": 64, \"q_lora_rank\": 256, \"o_groups\": 2, \"o_lora_rank\": 256,"
    " \"index_n_heads\": 8, \"index_head_dim\": 128, \"index_topk\": 16, \"sliding_window\": 128,"
    " \"rope_theta\": 10000, \"compress_rope_theta\": 160000, \"rms_norm_eps\": 1e-6,"
    " \"max_position_embeddings\": 1048576,"
    " \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 16, \"original_max_position_embeddings\": 65536,"
    " \"beta_fast\": 32, \"beta_slow\": 1},"
    " \"compress_ratios\": [0, 4, 128, 4]}";

hc_model *tsu_model(const char *json, uint64_t seed, int geometry_only)
{
    hc_model_params p;
    hc_model_params_init(&p, sizeof p);
    p.flags = geometry_only ? HC_MODEL_GEOMETRY_ONLY : 0;
    p.n_threads = 2;
    hc_model *m = NULL;
    ck_assert_int_eq(hc_model_create_random(json, seed, &p, &m), HC_OK);
    return m;
}

hc_ctx *tsu_ctx(hc_model *m, int cache_format, int64_t max_tokens)
{
    hc_ctx_params p;
    hc_ctx_params_init(&p, sizeof p);
    p.backend = HC_BACKEND_CPU;
    p.n_threads = 2;
    p.cache_format = cache_format;
    p.max_tokens = max_tokens;
    hc_ctx *c = NULL;
    ck_assert_int_eq(hc_ctx_create(m, &p, &c), HC_OK);
    return c;
}

void tsu_save_file(hc_ctx *c, const char *path, int compression)
{
    hc_save_params sp;
    hc_save_params_init(&sp, sizeof sp);
    sp.compression = compression;
    ck_assert_msg(hc_ctx_save(c, path, &sp) == HC_OK, "save: %s", hc_ctx_last_error(c));
}

uint8_t *tsu_save(hc_ctx *c, int compression, uint64_t *len)
{
    hc_save_params p;
    hc_save_params_init(&p, sizeof p);
    p.compression = compression;
    uint64_t cap = 0;
    ck_assert_int_eq(hc_ctx_save_size(c, &p, &cap), HC_OK);
    uint8_t *buf = malloc(cap);
    ck_assert_ptr_nonnull(buf);
    ck_assert_msg(hc_ctx_save_buffer(c, buf, cap, &p, len) == HC_OK, "save: %s", hc_ctx_last_error(c));
    return buf;
}

/* record fields (file offsets within a superblock or footer) that differ between saves */
static int varying(uint64_t off)
{
    return (off >= 72 && off < 96) ||   /* uuid, generation */
           (off >= 108 && off < 116) || /* the writer context's cache format and backend */
           (off >= 152 && off < 160) || /* created */
           (off >= 168 && off < 200);   /* writer */
}

int tsu_same_session(const uint8_t *a, uint64_t na, const uint8_t *b, uint64_t nb, uint64_t *where)
{
    *where = 0;
    if (na != nb || na < 8192) return 0;
    uint64_t foot = na - 4096;
    for (uint64_t i = 0; i < na; i++) {
        if (a[i] == b[i]) continue;
        uint64_t in_sb = i < 4096 ? i : UINT64_MAX, in_ft = i >= foot ? i - foot : UINT64_MAX;
        if (in_sb != UINT64_MAX && (varying(in_sb) || in_sb >= 4088)) continue;
        if (in_ft != UINT64_MAX && (varying(in_ft) || (in_ft >= 4080 && in_ft < 4088))) continue;
        *where = i;
        return 0;
    }
    return 1;
}

uint64_t tsu_digest(hc_ctx *c)
{
    uint64_t n;
    uint8_t *b = tsu_save(c, HC_COMPRESS_NONE, &n);
    uint64_t h = 1469598103934665603ull;
    uint64_t foot = n - 4096;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t o = i < 4096 ? i : i >= foot ? i - foot : UINT64_MAX;
        if (o != UINT64_MAX && (varying(o) || o >= 4080)) continue;
        h = (h ^ b[i]) * 1099511628211ull;
    }
    free(b);
    return h;
}
