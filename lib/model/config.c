/* config.c - presets and HF config.json parsing (jansson) with range checks. */
#include "config.h"
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "hybridctx.h"
#include "../util/error.h"

void hci_config_preset_flash(hci_config *c)
{
    memset(c, 0, sizeof *c);
    c->dim = 4096;
    c->n_layers = 43;
    c->n_heads = 64;
    c->head_dim = 512;
    c->rope_dim = 64;
    c->q_lora_rank = 1024;
    c->o_groups = 8;
    c->o_lora_rank = 1024;
    c->window = 128;
    c->index_n_heads = 64;
    c->index_head_dim = 128;
    c->index_topk = 512;
    c->rope_theta = 10000.0;
    c->compress_rope_theta = 160000.0;
    c->yarn_factor = 16.0;
    c->yarn_original_len = 65536;
    c->yarn_beta_fast = 32.0;
    c->yarn_beta_slow = 1.0;
    c->norm_eps = 1e-6;
    c->max_positions = 1048576;
    /* [0, 0, 4, 128, 4, 128, ..., 4]: layers 0-1 window only, then CSA (even) / HCA (odd) */
    for (int i = 0; i < c->n_layers; i++) c->ratios[i] = i < 2 ? 0 : (i % 2 == 0 ? 4 : 128);
}

static void preset_pro(hci_config *c)
{
    hci_config_preset_flash(c);
    c->dim = 7168;
    c->n_layers = 61;
    c->n_heads = 128;
    c->q_lora_rank = 1536;
    c->o_groups = 16;
    c->index_topk = 1024;
    /* [128, 128, 4, 128, 4, ..., 4]: layers 0-1 HCA, then CSA (even) / HCA (odd) */
    for (int i = 0; i < c->n_layers; i++) c->ratios[i] = i < 2 ? 128 : (i % 2 == 0 ? 4 : 128);
}

/* Every layer kind in a small geometry (the golden set's "tiny-a" shape). */
static void preset_tiny(hci_config *c)
{
    hci_config_preset_flash(c);
    c->dim = 512;
    c->n_layers = 4;
    c->n_heads = 8;
    c->head_dim = 128;
    c->q_lora_rank = 256;
    c->o_groups = 2;
    c->o_lora_rank = 256;
    c->index_n_heads = 8;
    c->index_topk = 16;
    static const int r[4] = {0, 4, 128, 4};
    for (int i = 0; i < 4; i++) c->ratios[i] = r[i];
}

static int get_int(json_t *o, const char *key, int *dst, char *err, size_t errsz)
{
    json_t *v = json_object_get(o, key);
    if (!v) return HC_OK;
    double d;
    if (json_is_integer(v)) d = (double)json_integer_value(v);
    else if (json_is_real(v)) d = json_real_value(v);
    else return hci_errf(err, errsz, HC_ERR_BAD_CONFIG, "config: \"%s\" is not a number", key);
    if (d != floor(d) || d < -2147483647.0 || d > 2147483647.0)
        return hci_errf(err, errsz, HC_ERR_BAD_CONFIG, "config: \"%s\" is not an integer", key);
    *dst = (int)d;
    return HC_OK;
}

static int get_i64(json_t *o, const char *key, int64_t *dst, char *err, size_t errsz)
{
    json_t *v = json_object_get(o, key);
    if (!v) return HC_OK;
    if (json_is_integer(v)) { *dst = json_integer_value(v); return HC_OK; }
    if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
        fabs(json_real_value(v)) < 9e15) {
        *dst = (int64_t)json_real_value(v);
        return HC_OK;
    }
    return hci_errf(err, errsz, HC_ERR_BAD_CONFIG, "config: \"%s\" is not an integer", key);
}

static int get_num(json_t *o, const char *key, double *dst, char *err, size_t errsz)
{
    json_t *v = json_object_get(o, key);
    if (!v) return HC_OK;
    if (!json_is_number(v))
        return hci_errf(err, errsz, HC_ERR_BAD_CONFIG, "config: \"%s\" is not a number", key);
    *dst = json_number_value(v);
    return HC_OK;
}

static int parse_json(const char *text, hci_config *c, char *err, size_t errsz)
{
    json_error_t je;
    json_t *root = json_loadb(text, strlen(text), JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return hci_errf(err, errsz, HC_ERR_FORMAT, "config JSON: %s (line %d, column %d)", je.text,
                        je.line, je.column);
    int st = HC_OK;
    if (!json_is_object(root)) {
        st = hci_errf(err, errsz, HC_ERR_BAD_CONFIG, "config JSON is not an object");
        goto out;
    }
    hci_config_preset_flash(c);
    int kv_heads = 1;
    struct { const char *key; int *dst; } ints[] = {
        {"hidden_size", &c->dim}, {"num_hidden_layers", &c->n_layers},
        {"num_attention_heads", &c->n_heads}, {"head_dim", &c->head_dim},
        {"qk_rope_head_dim", &c->rope_dim}, {"q_lora_rank", &c->q_lora_rank},
        {"o_groups", &c->o_groups}, {"o_lora_rank", &c->o_lora_rank},
        {"sliding_window", &c->window}, {"index_n_heads", &c->index_n_heads},
        {"index_head_dim", &c->index_head_dim}, {"index_topk", &c->index_topk},
        {"num_key_value_heads", &kv_heads},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if ((st = get_int(root, ints[i].key, ints[i].dst, err, errsz))) goto out;
    if ((st = get_num(root, "rope_theta", &c->rope_theta, err, errsz)) ||
        (st = get_num(root, "compress_rope_theta", &c->compress_rope_theta, err, errsz)) ||
        (st = get_num(root, "rms_norm_eps", &c->norm_eps, err, errsz)) ||
        (st = get_i64(root, "max_position_embeddings", &c->max_positions, err, errsz)))
        goto out;
    if (kv_heads != 1) {
        st = hci_errf(err, errsz, HC_ERR_BAD_CONFIG,
                      "config: num_key_value_heads must be 1 (one shared KV head), got %d", kv_heads);
        goto out;
    }
    json_t *rs = json_object_get(root, "rope_scaling");
    if (rs && !json_is_null(rs)) {
        if (!json_is_object(rs)) {
            st = hci_errf(err, errsz, HC_ERR_BAD_CONFIG, "config: rope_scaling is not an object");
            goto out;
        }
        json_t *type = json_object_get(rs, "type");
        if (!type) type = json_object_get(rs, "rope_type");
        if (type && (!json_is_string(type) || strcmp(json_string_value(type), "yarn") != 0)) {
            st = hci_errf(err, errsz, HC_ERR_BAD_CONFIG, "config: rope_scaling type must be \"yarn\"");
            goto out;
        }
        if ((st = get_num(rs, "factor", &c->yarn_factor, err, errsz)) ||
            (st = get_i64(rs, "original_max_position_embeddings", &c->yarn_original_len, err, errsz)) ||
            (st = get_num(rs, "beta_fast", &c->yarn_beta_fast, err, errsz)) ||
            (st = get_num(rs, "beta_slow", &c->yarn_beta_slow, err, errsz)))
            goto out;
    } else if (rs) {
        c->yarn_original_len = 0; /* "rope_scaling": null switches YaRN off */
    }
    json_t *cr = json_object_get(root, "compress_ratios");
    if (cr) {
        if (!json_is_array(cr)) {
            st = hci_errf(err, errsz, HC_ERR_BAD_CONFIG, "config: compress_ratios is not an array");
            goto out;
        }
        if (c->n_layers < 1 || c->n_layers > HCI_MAX_LAYERS) {
            st = hci_errf(err, errsz, HC_ERR_BAD_CONFIG, "config: num_hidden_layers %d outside 1..%d",
                          c->n_layers, HCI_MAX_LAYERS);
            goto out;
        }
        if ((int)json_array_size(cr) < c->n_layers) {
            st = hci_errf(err, errsz, HC_ERR_BAD_CONFIG,
                          "config: compress_ratios has %zu entries, num_hidden_layers is %d",
                          json_array_size(cr), c->n_layers);
            goto out;
        }
        for (int i = 0; i < c->n_layers; i++) {
            json_t *v = json_array_get(cr, (size_t)i);
            if (!json_is_integer(v)) {
                st = hci_errf(err, errsz, HC_ERR_BAD_CONFIG, "config: compress_ratios[%d] is not an integer", i);
                goto out;
            }
            json_int_t r = json_integer_value(v);
            c->ratios[i] = (r == 0 || r == 4 || r == 128) ? (int)r : -1;
            if (c->ratios[i] < 0) {
                st = hci_errf(err, errsz, HC_ERR_BAD_CONFIG,
                              "config: compress_ratios[%d] = %lld; supported ratios are 0, 4 and 128", i,
                              (long long)r);
                goto out;
            }
        }
    } else if (json_object_get(root, "num_hidden_layers")) {
        /* layer count given without ratios: follow the v4-flash pattern */
        for (int i = 0; i < c->n_layers && i < HCI_MAX_LAYERS; i++)
            c->ratios[i] = i < 2 ? 0 : (i % 2 == 0 ? 4 : 128);
    }
out:
    json_decref(root);
    return st;
}

int hci_config_from_text(const char *text, hci_config *c, char *err, size_t errsz)
{
    if (strcmp(text, "v4-flash") == 0) hci_config_preset_flash(c);
    else if (strcmp(text, "v4-pro") == 0) preset_pro(c);
    else if (strcmp(text, "tiny") == 0) preset_tiny(c);
    else {
        const char *p = text;
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++;
        if (*p != '{')
            return hci_errf(err, errsz, HC_ERR_UNKNOWN_PRESET,
                            "unknown preset \"%.64s\" (known: v4-flash, v4-pro, tiny; or config.json text)",
                            text);
        if (strlen(text) > HCI_MAX_CONFIG_TEXT)
            return hci_errf(err, errsz, HC_ERR_LIMIT, "config text longer than %u bytes",
                            HCI_MAX_CONFIG_TEXT);
        int st = parse_json(text, c, err, errsz);
        if (st) return st;
    }
    return hci_config_validate(c, err, errsz);
}

static int is_pow2(int v) { return v > 0 && (v & (v - 1)) == 0; }

int hci_config_validate(const hci_config *c, char *err, size_t errsz)
{
#define REQUIRE(cond, ...) \
    do { if (!(cond)) return hci_errf(err, errsz, HC_ERR_BAD_CONFIG, "config: " __VA_ARGS__); } while (0)
    REQUIRE(c->n_layers >= 1 && c->n_layers <= HCI_MAX_LAYERS, "num_hidden_layers %d outside 1..%d",
            c->n_layers, HCI_MAX_LAYERS);
    REQUIRE(c->dim >= 128 && c->dim <= 65536 && c->dim % 128 == 0,
            "hidden_size %d must be a multiple of 128 in 128..65536", c->dim);
    REQUIRE(c->rope_dim >= 2 && c->rope_dim <= 2 * 64 && c->rope_dim % 2 == 0,
            "qk_rope_head_dim %d must be even, 2..128", c->rope_dim);
    REQUIRE(c->head_dim > c->rope_dim && c->head_dim <= 1024 && (c->head_dim - c->rope_dim) % 64 == 0,
            "head_dim %d: head_dim - qk_rope_head_dim must be a positive multiple of 64, head_dim <= 1024",
            c->head_dim);
    REQUIRE(c->n_heads >= 1 && c->n_heads <= 1024, "num_attention_heads %d outside 1..1024", c->n_heads);
    REQUIRE(c->q_lora_rank >= 128 && c->q_lora_rank <= 65536 && c->q_lora_rank % 128 == 0,
            "q_lora_rank %d must be a multiple of 128 in 128..65536", c->q_lora_rank);
    REQUIRE(c->o_groups >= 1 && c->n_heads % c->o_groups == 0,
            "o_groups %d must divide num_attention_heads %d", c->o_groups, c->n_heads);
    REQUIRE(c->o_lora_rank >= 1 && c->o_lora_rank <= 65536 && (c->o_groups * c->o_lora_rank) % 128 == 0,
            "o_groups * o_lora_rank must be a multiple of 128 (o_lora_rank %d)", c->o_lora_rank);
    REQUIRE(c->window >= 1 && c->window <= 4096, "sliding_window %d outside 1..4096", c->window);
    REQUIRE(c->max_positions >= 1 && c->max_positions <= ((int64_t)1 << 24),
            "max_position_embeddings %lld outside 1..2^24", (long long)c->max_positions);
    REQUIRE(c->norm_eps > 0 && c->norm_eps < 1, "rms_norm_eps %g outside (0, 1)", c->norm_eps);
    REQUIRE(c->rope_theta > 1 && c->rope_theta < 1e12, "rope_theta %g out of range", c->rope_theta);
    REQUIRE(c->compress_rope_theta > 1 && c->compress_rope_theta < 1e12,
            "compress_rope_theta %g out of range", c->compress_rope_theta);
    if (c->yarn_original_len > 0) {
        REQUIRE(c->yarn_factor >= 1 && c->yarn_factor <= 1e6, "rope_scaling.factor %g out of range",
                c->yarn_factor);
        REQUIRE(c->yarn_beta_fast > 0 && c->yarn_beta_slow > 0 && c->yarn_beta_fast < 1e6 &&
                    c->yarn_beta_slow < 1e6, "rope_scaling beta_fast/beta_slow must be positive");
        REQUIRE(c->yarn_original_len <= ((int64_t)1 << 30), "rope_scaling original length too large");
    }
    int has_csa = 0;
    for (int i = 0; i < c->n_layers; i++) {
        REQUIRE(c->ratios[i] == 0 || c->ratios[i] == 4 || c->ratios[i] == 128,
                "compress_ratios[%d] = %d; supported ratios are 0, 4 and 128", i, c->ratios[i]);
        has_csa |= c->ratios[i] == 4;
    }
    if (has_csa) {
        REQUIRE(c->index_n_heads >= 1 && c->index_n_heads <= 1024, "index_n_heads %d outside 1..1024",
                c->index_n_heads);
        REQUIRE(is_pow2(c->index_head_dim) && c->index_head_dim >= 32 && c->index_head_dim <= 1024 &&
                    c->index_head_dim > c->rope_dim,
                "index_head_dim %d must be a power of two in 32..1024, larger than qk_rope_head_dim",
                c->index_head_dim);
        REQUIRE(c->index_topk >= 1 && c->index_topk <= 65536, "index_topk %d outside 1..65536",
                c->index_topk);
    }
    return HC_OK;
#undef REQUIRE
}
