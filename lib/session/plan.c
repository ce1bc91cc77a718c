/* plan.c - section lists, the configuration record and state rows of a session. */
#include "plan.h"
#include <stdio.h>
#include <string.h>
#include "container.h"
#include "hybridctx.h"
#include "../util/error.h"

uint32_t hcs_plan_count(const hci_config *cfg)
{
    uint32_t n = 2;
    for (int l = 0; l < cfg->n_layers; l++) n += 1 + (cfg->ratios[l] ? 2 : 0) + (cfg->ratios[l] == 4 ? 2 : 0);
    return n;
}

hci_entry_layout hcs_canon_main(const hci_config *cfg)
{
    return hci_layout_main(HCI_FMT_FP8, cfg->head_dim, cfg->rope_dim);
}

hci_entry_layout hcs_canon_index(const hci_config *cfg) { return hci_layout_index(HCI_FMT_FP8, cfg->index_head_dim); }

int hcs_state_rows(int ratio, int64_t n, int *rows)
{
    int k = 0;
    if (ratio == 4) {
        if (n >= 4)
            for (int i = 0; i < 4; i++) rows[k++] = i;
        for (int i = 0; i < (int)(n % 4); i++) rows[k++] = 4 + i;
    } else if (ratio > 0) {
        for (int i = 0; i < (int)(n % ratio); i++) rows[k++] = i;
    }
    return k;
}

uint32_t hcs_state_row_bytes(int ratio, int dc)
{
    uint32_t coff = hci_cfg_coff(ratio);
    return 2u * coff * (uint32_t)dc * 4u;
}

static hcs_plan_sec sec(uint16_t type, uint32_t layer, uint32_t dtype, uint32_t row_bytes, uint64_t n_rows, int ratio)
{
    hcs_plan_sec s = {type, layer, dtype, row_bytes, n_rows, ratio};
    return s;
}

void hcs_plan_build(const hci_config *cfg, int64_t n, uint64_t metadata_len, hcs_plan_sec *out)
{
    uint32_t k = 0;
    uint32_t em = (uint32_t)hcs_canon_main(cfg).entry_bytes, ei = (uint32_t)hcs_canon_index(cfg).entry_bytes;
    out[k++] = sec(HCS_SEC_CONFIG, HCS_NO_LAYER, HCS_DT_BYTES, 1, hcs_config_size(cfg->n_layers), 0);
    out[k++] = sec(HCS_SEC_METADATA, HCS_NO_LAYER, HCS_DT_BYTES, 1, metadata_len, 0);
    int rows[128];
    for (int l = 0; l < cfg->n_layers; l++) {
        int r = cfg->ratios[l];
        uint64_t win = (uint64_t)(n < cfg->window ? n : cfg->window);
        out[k++] = sec(HCS_SEC_WINDOW, (uint32_t)l, HCS_DT_FP8_ENTRY, em, win, r);
        if (!r) continue;
        out[k++] = sec(HCS_SEC_COMP, (uint32_t)l, HCS_DT_FP8_ENTRY, em, (uint64_t)(n / r), r);
        out[k++] = sec(HCS_SEC_COMP_STATE, (uint32_t)l, HCS_DT_F32_STATE, hcs_state_row_bytes(r, cfg->head_dim),
                       (uint64_t)hcs_state_rows(r, n, rows), r);
        if (r != 4) continue;
        out[k++] = sec(HCS_SEC_INDEX, (uint32_t)l, HCS_DT_FP4_ENTRY, ei, (uint64_t)(n / 4), r);
        out[k++] = sec(HCS_SEC_INDEX_STATE, (uint32_t)l, HCS_DT_F32_STATE,
                       hcs_state_row_bytes(4, cfg->index_head_dim), (uint64_t)hcs_state_rows(4, n, rows), r);
    }
}

uint32_t hcs_plan_rows_per_chunk(const hcs_plan_sec *s)
{
    uint32_t r = HCS_TARGET_CHUNK / s->row_bytes;
    if (s->dtype == HCS_DT_FP8_ENTRY || s->dtype == HCS_DT_FP4_ENTRY) r = r / HCI_PAGE_ENTRIES * HCI_PAGE_ENTRIES;
    if (r == 0) r = s->dtype == HCS_DT_FP8_ENTRY || s->dtype == HCS_DT_FP4_ENTRY ? HCI_PAGE_ENTRIES : 1;
    return r;
}

/* ---- configuration record ---- */

#define N_INTS 14
#define N_REALS 6
/* record layout: u32 version, u32 n_layers, then the ints, the reals (their bits) and the ratios */
#define OFF_INTS ((size_t)8)
#define OFF_REALS (OFF_INTS + 8 * (size_t)N_INTS)
#define OFF_RATIOS (OFF_REALS + 8 * (size_t)N_REALS)

static void ints_of(const hci_config *c, int64_t v[N_INTS])
{
    int64_t t[N_INTS] = {c->dim, c->n_layers, c->n_heads, c->head_dim, c->rope_dim, c->q_lora_rank,
                         c->o_groups, c->o_lora_rank, c->window, c->index_n_heads, c->index_head_dim,
                         c->index_topk, c->yarn_original_len, c->max_positions};
    memcpy(v, t, sizeof t);
}

static uint64_t bits64(double v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    return u;
}

static void reals_of(const hci_config *c, double v[N_REALS])
{
    double t[N_REALS] = {c->rope_theta, c->compress_rope_theta, c->yarn_factor, c->yarn_beta_fast,
                         c->yarn_beta_slow, c->norm_eps};
    memcpy(v, t, sizeof t);
}

static const char *const int_names[N_INTS] = {
    "hidden_size", "num_hidden_layers", "num_attention_heads", "head_dim", "qk_rope_head_dim", "q_lora_rank",
    "o_groups", "o_lora_rank", "sliding_window", "index_n_heads", "index_head_dim", "index_topk",
    "rope_scaling.original_max_position_embeddings", "max_position_embeddings"};
static const char *const real_names[N_REALS] = {"rope_theta", "compress_rope_theta", "rope_scaling.factor",
                                                "rope_scaling.beta_fast", "rope_scaling.beta_slow", "rms_norm_eps"};

uint32_t hcs_config_size(int n_layers) { return (uint32_t)OFF_RATIOS + 4 * (uint32_t)n_layers; }

void hcs_config_encode(const hci_config *c, uint8_t *o)
{
    int64_t iv[N_INTS];
    double rv[N_REALS];
    ints_of(c, iv), reals_of(c, rv);
    hcs_put32(o, 1), hcs_put32(o + 4, (uint32_t)c->n_layers);
    for (int i = 0; i < N_INTS; i++) hcs_put64(o + OFF_INTS + 8 * (size_t)i, (uint64_t)iv[i]);
    for (int i = 0; i < N_REALS; i++) hcs_put64(o + OFF_REALS + 8 * (size_t)i, bits64(rv[i]));
    for (int l = 0; l < c->n_layers; l++) hcs_put32(o + OFF_RATIOS + 4 * (size_t)l, (uint32_t)c->ratios[l]);
}

static int fits_int(int64_t v) { return v >= -2147483647 && v <= 2147483647; }

int hcs_config_decode(const uint8_t *in, uint64_t len, hci_config *c, char *err, size_t errsz)
{
    if (len < 8 || hcs_get32(in) != 1)
        return hci_errf(err, errsz, HC_ERR_CORRUPT, "CONFIG: record version %u unknown", len < 8 ? 0 : hcs_get32(in));
    uint32_t nl = hcs_get32(in + 4);
    if (nl < 1 || nl > HCI_MAX_LAYERS || len != hcs_config_size((int)nl))
        return hci_errf(err, errsz, HC_ERR_CORRUPT, "CONFIG: %u layers in %llu bytes", nl, (unsigned long long)len);
    memset(c, 0, sizeof *c);
    int64_t iv[N_INTS];
    double rv[N_REALS];
    for (int i = 0; i < N_INTS; i++) iv[i] = (int64_t)hcs_get64(in + OFF_INTS + 8 * (size_t)i);
    for (int i = 0; i < N_REALS; i++) {
        uint64_t u = hcs_get64(in + OFF_REALS + 8 * (size_t)i);
        memcpy(&rv[i], &u, 8);
    }
    for (int i = 0; i < N_INTS - 2; i++)
        if (!fits_int(iv[i])) return hci_errf(err, errsz, HC_ERR_CORRUPT, "CONFIG: %s out of range", int_names[i]);
    if (iv[1] != (int64_t)nl) return hci_errf(err, errsz, HC_ERR_CORRUPT, "CONFIG: layer counts disagree");
    c->dim = (int)iv[0], c->n_layers = (int)iv[1], c->n_heads = (int)iv[2], c->head_dim = (int)iv[3];
    c->rope_dim = (int)iv[4], c->q_lora_rank = (int)iv[5], c->o_groups = (int)iv[6], c->o_lora_rank = (int)iv[7];
    c->window = (int)iv[8], c->index_n_heads = (int)iv[9], c->index_head_dim = (int)iv[10];
    c->index_topk = (int)iv[11], c->yarn_original_len = iv[12], c->max_positions = iv[13];
    c->rope_theta = rv[0], c->compress_rope_theta = rv[1], c->yarn_factor = rv[2];
    c->yarn_beta_fast = rv[3], c->yarn_beta_slow = rv[4], c->norm_eps = rv[5];
    for (uint32_t l = 0; l < nl; l++) {
        int64_t r = (int32_t)hcs_get32(in + OFF_RATIOS + 4 * (size_t)l);
        c->ratios[l] = (int)r;
    }
    char why[HCI_ERRLEN];
    if (hci_config_validate(c, why, sizeof why))
        return hci_errf(err, errsz, HC_ERR_CORRUPT, "CONFIG: stored configuration invalid (%s)", why);
    return HC_OK;
}

int hcs_config_compare(const hci_config *f, const hci_config *m, char *err, size_t errsz)
{
    int64_t a[N_INTS], b[N_INTS];
    double x[N_REALS], y[N_REALS];
    ints_of(f, a), ints_of(m, b), reals_of(f, x), reals_of(m, y);
    for (int i = 0; i < N_INTS; i++)
        if (a[i] != b[i])
            return hci_errf(err, errsz, HC_ERR_MODEL_MISMATCH, "the session is for a model with %s %lld, this model has %lld",
                            int_names[i], (long long)a[i], (long long)b[i]);
    for (int i = 0; i < N_REALS; i++)
        if (bits64(x[i]) != bits64(y[i])) /* bitwise: -0.0 and 0.0 differ */
            return hci_errf(err, errsz, HC_ERR_MODEL_MISMATCH, "the session is for a model with %s %.17g, this model has %.17g",
                            real_names[i], x[i], y[i]);
    for (int l = 0; l < f->n_layers; l++)
        if (f->ratios[l] != m->ratios[l])
            return hci_errf(err, errsz, HC_ERR_MODEL_MISMATCH,
                            "the session is for a model whose layer %d has compress ratio %d, here it is %d", l,
                            f->ratios[l], m->ratios[l]);
    return HC_OK;
}
