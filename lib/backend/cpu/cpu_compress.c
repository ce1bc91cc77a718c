/* cpu_compress.c - the learned compressors (ratio 4 with overlap, ratio 128) on the CPU:
 * fp32 projections, the state machine of docs/numerics.md, per-channel softmax pooling, norm,
 * RoPE at position m*j and quantization, written straight into the cache pages. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "cpu.h"
#include "hybridctx.h"
#include "../../model/rope.h"
#include "../../util/cudamath.h"
#include "../../util/numerics.h"

typedef struct comp_run {
    const struct hc_model *m;
    const hci_compressor_w *cw;
    hci_comp_cache *cc;
    const hci_rope *rope;
    int64_t P;          /* position of the piece's first token */
    int n;
    const float *A, *Z; /* the piece's projections [n][coff*dc], ape already added to Z */
    int64_t j0;
} comp_run;

/* The (kv, score) row of token t, from the piece or from the state as it was before the piece.
 * Returns 0 for t < 0 (the reference's zero / -inf padding). */
static int get_row(const comp_run *r, int64_t t, const float **kv, const float **sc)
{
    if (t < 0) return 0;
    const hci_comp_cache *cc = r->cc;
    size_t w2 = (size_t)cc->coff * cc->dc;
    if (t >= r->P) {
        *kv = r->A + (size_t)(t - r->P) * w2;
        *sc = r->Z + (size_t)(t - r->P) * w2;
        return 1;
    }
    int m = cc->ratio;
    int64_t cur = r->P / m * m; /* first position of the state's current (partial) block */
    int64_t row = cc->coff == 2 ? (t >= cur ? m + (t - cur) : t - (cur - m)) : t - cur;
    *kv = cc->state_kv + (size_t)row * w2;
    *sc = cc->state_score + (size_t)row * w2;
    return 1;
}

static void emit_entries(void *arg, int64_t lo, int64_t hi, int tid)
{
    (void)tid;
    comp_run *r = arg;
    const hci_comp_cache *cc = r->cc;
    const hci_config *cfg = &r->m->cfg;
    int m = cc->ratio, dc = cc->dc, rd = cfg->rope_dim, R = cc->coff * m;
    const float *kvr[256], *scr[256];
    int chan_off[256];
    float v[1024], e[256];
    float cs[HCI_MAX_ROPE_PAIRS], sn[HCI_MAX_ROPE_PAIRS];
    for (int64_t j = r->j0 + lo; j < r->j0 + hi; j++) {
        /* candidate rows: overlap takes the previous block's "a" half then the own block's "b" half */
        int nr = 0;
        for (int i = 0; i < R; i++) {
            int64_t t = cc->coff == 2 ? (i < m ? m * j - m + i : m * j + (i - m)) : m * j + i;
            if (get_row(r, t, &kvr[nr], &scr[nr])) {
                chan_off[nr] = (cc->coff == 2 && i >= m) ? dc : 0;
                nr++;
            }
        }
        for (int c = 0; c < dc; c++) {
            float mx = -INFINITY;
            for (int i = 0; i < nr; i++) mx = fmaxf(mx, scr[i][chan_off[i] + c]);
            float sum = 0.0f;
            for (int i = 0; i < nr; i++) {
                e[i] = hci_cuda_expf(scr[i][chan_off[i] + c] - mx);
                sum += e[i];
            }
            float acc = 0.0f;
            for (int i = 0; i < nr; i++) acc += kvr[i][chan_off[i] + c] * (e[i] / sum);
            v[c] = hci_round_bf16(acc);
        }
        uint16_t nb[1024];
        hci_rmsnorm_bf16(v, r->cw->norm, dc, (float)cfg->norm_eps, nb);
        hci_bf16_decode_n(nb, dc, v);
        hci_rope_cossin(r->rope, m * j, cs, sn);
        hci_rope_apply(v + dc - rd, cs, sn, rd / 2, 0);
        if (cc->rotate) {
            hci_hadamard_bf16(v, dc);
            hci_fp4_sim_blocks(v, dc, 32, NULL);
        } else {
            hci_fp8_sim_blocks(v, dc - rd, 64, NULL);
        }
        hci_entry_pack(&cc->layout, hci_pages_page(&cc->entries, j), (int)(j % HCI_PAGE_ENTRIES), v);
    }
}

/* Rebuild the state for the positions after the piece: the previous complete block (overlap)
 * and the current partial block; unused rows are (0, -inf). */
static void update_state(const comp_run *r, float *nkv, float *nsc)
{
    hci_comp_cache *cc = r->cc;
    int m = cc->ratio, rows = cc->coff * m;
    size_t w2 = (size_t)cc->coff * cc->dc;
    for (size_t i = 0; i < (size_t)rows * w2; i++) nkv[i] = 0.0f, nsc[i] = -INFINITY;
    int64_t end = r->P + r->n;
    int64_t cur = end / m * m;
    for (int i = 0; i < rows; i++) {
        int64_t t = cc->coff == 2 ? (i < m ? cur - m + i : cur + (i - m)) : cur + i;
        const float *kv, *sc;
        if (t >= end || !get_row(r, t, &kv, &sc)) continue;
        memcpy(nkv + (size_t)i * w2, kv, w2 * sizeof(float));
        memcpy(nsc + (size_t)i * w2, sc, w2 * sizeof(float));
    }
    memcpy(cc->state_kv, nkv, (size_t)rows * w2 * sizeof(float));
    memcpy(cc->state_score, nsc, (size_t)rows * w2 * sizeof(float));
}

/* The rollback history (lib/cache/history.c): the rows of the piece's positions >= log.from, as
 * the state keeps them, into the row log at slot t % cap. */
static void log_rows(hci_comp_cache *cc, int64_t pos0, int n, const float *A, const float *Z, int w2)
{
    int64_t t0 = pos0 + n - cc->log.cap;
    if (t0 < pos0) t0 = pos0;
    if (t0 < cc->log.from) t0 = cc->log.from;
    for (int64_t t = t0; t < pos0 + n; t++) {
        size_t slot = (size_t)(t % cc->log.cap) * (size_t)w2, row = (size_t)(t - pos0) * (size_t)w2;
        memcpy(cc->log.kv + slot, A + row, (size_t)w2 * sizeof(float));
        memcpy(cc->log.score + slot, Z + row, (size_t)w2 * sizeof(float));
    }
}

int hci_cpu_compress(hci_backend *be, int layer, int which, hci_comp_cache *cc, int n, int64_t pos0,
                     const uint16_t *x)
{
    const struct hc_model *m = be->model;
    const hci_layer_w *L = &m->layers[layer];
    const hci_compressor_w *cw = which ? &L->idx_comp : &L->comp;
    hci_pool *pool = hci_cpu_pool(be);
    int w2 = cw->coff * cw->dc, ratio = cw->ratio;
    float *A = malloc((size_t)n * w2 * sizeof(float));
    float *Z = malloc((size_t)n * w2 * sizeof(float));
    float *nkv = malloc(hci_comp_state_floats(cc) * sizeof(float));
    float *nsc = malloc(hci_comp_state_floats(cc) * sizeof(float));
    int st = (A && Z && nkv && nsc) ? HC_OK : HC_ERR_OUT_OF_MEMORY;
    if (!st) st = hci_cpu_linear_bf16(pool, &cw->wkv, n, x, m->cfg.dim, A, NULL, w2);
    if (!st) st = hci_cpu_linear_bf16(pool, &cw->wgate, n, x, m->cfg.dim, Z, NULL, w2);
    if (!st) {
        for (int t = 0; t < n; t++) {
            const float *ape = cw->ape + (size_t)((pos0 + t) % ratio) * w2;
            for (int c = 0; c < w2; c++) Z[(size_t)t * w2 + c] += ape[c];
        }
        if (cc->log.cap) log_rows(cc, pos0, n, A, Z, w2);
        comp_run r = {m, cw, cc, hci_model_rope(m, layer), pos0, n, A, Z, pos0 / ratio};
        int64_t j1 = (pos0 + n) / ratio;
        hci_pool_for(pool, j1 - r.j0, 1, emit_entries, &r);
        update_state(&r, nkv, nsc);
        cc->n_entries = j1;
    }
    free(A), free(Z), free(nkv), free(nsc);
    return st;
}
