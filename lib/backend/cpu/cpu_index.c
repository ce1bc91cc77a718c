/* cpu_index.c - the lightning indexer's scores and top-k on the CPU. Score of query t and key j:
 * bf16(sum_h bf16(relu(bf16(q_th . k_j)) * w_th)); query t sees keys j < (t+1)/4; the top-k is
 * returned in descending score order, ties broken by the lower entry number. */
#include <stdlib.h>
#include <string.h>
#include "cpu.h"
#include "hybridctx.h"
#include "../../util/numerics.h"

#define KEY_CHUNK 2048
#define SCORE_BUDGET (16 << 20) /* floats of scores held at once */

typedef struct idx_run {
    const struct hc_model *m;
    const hci_comp_cache *idx;
    int64_t pos0;       /* position of query row 0 */
    int rows;           /* queries in this group */
    int64_t ne;         /* keys (entries) available */
    int64_t chunks;     /* key chunks per query row (>= 1) */
    const uint16_t *qi, *w;
    int32_t *sel;
    float *keys;        /* decoded keys [ne][ID] */
    float *scores;      /* [rows][ne] */
    uint64_t *picks;    /* [rows][ne] scratch for selection */
} idx_run;

/* A larger key is a better pick: order-preserving score bits, then the inverted entry number. */
static uint64_t pick_key(float score, int64_t j)
{
    uint32_t u = hci_bits_from_f32(score);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return ((uint64_t)u << 32) | (uint32_t)(0xffffffffu - (uint32_t)j);
}

static int cmp_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : (x > y ? -1 : 0);
}

/* Move the k largest of v[0..n) to the front (Hoare quickselect, deterministic pivots). */
static void select_top(uint64_t *v, int64_t n, int64_t k)
{
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        uint64_t pivot = v[lo + (hi - lo) / 2];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (v[i] > pivot) i++;
            while (v[j] < pivot) j--;
            if (i <= j) {
                uint64_t t = v[i];
                v[i] = v[j], v[j] = t;
                i++, j--;
            }
        }
        if (k - 1 <= j) hi = j;
        else if (k - 1 >= i) lo = i;
        else break;
    }
}

static void decode_keys(void *arg, int64_t lo, int64_t hi, int tid)
{
    (void)tid;
    idx_run *r = arg;
    int ID = r->m->cfg.index_head_dim;
    for (int64_t j = lo; j < hi; j++)
        hci_entry_unpack(&r->idx->layout, hci_pages_page(&r->idx->entries, j), (int)(j % HCI_PAGE_ENTRIES),
                         r->keys + (size_t)j * ID);
}

/* q . k for FP4-simulated vectors (e2m1 codes times a power of two per 32 values): within a
 * 32-block every product is a multiple of 2^-2 * 2^(eq+ek) below 1152 * 2^(eq+ek), so the fp32
 * block sum is exact in any order (eight vectorisable lanes); the blocks are combined in
 * double, exactly. The result is the exact dot rounded once to fp32 -- the same bits as
 * hci_dot_exact_f32, several times faster. Other vectors (ID % 32 != 0) take the general path. */
static inline float fp4_dot(const float *q, const float *k, int n)
{
    if (n % 32) return (float)hci_dot_exact_f32(q, k, n);
    double total = 0.0;
    for (int b = 0; b < n; b += 32) {
        float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int i = 0; i < 32; i += 8)
            for (int l = 0; l < 8; l++) lane[l] += q[b + i + l] * k[b + i + l];
        total += (double)(((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7])));
    }
    return (float)total;
}

/* Item = (query row, chunk of keys): the scores of the visible keys in the chunk. */
static void score_items(void *arg, int64_t lo, int64_t hi, int tid)
{
    (void)tid;
    idx_run *r = arg;
    const hci_config *c = &r->m->cfg;
    int IH = c->index_n_heads, ID = c->index_head_dim;
    int64_t chunks = r->chunks;
    float q[16384];
    int64_t qrow = -1;
    for (int64_t it = lo; it < hi; it++) {
        int64_t i = it / chunks, j0 = (it % chunks) * KEY_CHUNK;
        int64_t nv = (r->pos0 + i + 1) / 4, j1 = j0 + KEY_CHUNK < nv ? j0 + KEY_CHUNK : nv;
        if (j0 >= j1) continue;
        if (it == lo || qrow != i) { /* (it == lo: lets the analyser see q is set before use) */
            hci_bf16_decode_n(r->qi + (size_t)i * IH * ID, IH * ID, q);
            qrow = i;
        }
        const uint16_t *w = r->w + (size_t)i * IH;
        float *out = r->scores + (size_t)i * r->ne;
        for (int64_t j = j0; j < j1; j++) {
            const float *kj = r->keys + (size_t)j * ID;
            double sum = 0.0;
            for (int h = 0; h < IH; h++) {
                float d = hci_round_bf16(fp4_dot(q + (size_t)h * ID, kj, ID));
                if (d < 0.0f) d = 0.0f;
                sum += (double)hci_round_bf16(d * hci_f32_from_bf16(w[h]));
            }
            out[j] = hci_round_bf16((float)sum);
        }
    }
}

static void select_rows(void *arg, int64_t lo, int64_t hi, int tid)
{
    (void)tid;
    idx_run *r = arg;
    int K = r->m->cfg.index_topk;
    for (int64_t i = lo; i < hi; i++) {
        int32_t *out = r->sel + (size_t)i * K;
        int64_t nv = (r->pos0 + i + 1) / 4, k = nv < K ? nv : K;
        uint64_t *keys = r->picks + (size_t)i * r->ne;
        const float *sc = r->scores + (size_t)i * r->ne;
        for (int64_t j = 0; j < nv; j++) keys[j] = pick_key(sc[j], j);
        select_top(keys, nv, k);
        qsort(keys, (size_t)k, sizeof(uint64_t), cmp_desc);
        for (int64_t s = 0; s < k; s++) out[s] = (int32_t)(0xffffffffu - (uint32_t)keys[s]);
        for (int64_t s = k; s < K; s++) out[s] = -1;
    }
}

int hci_cpu_index_topk(hci_backend *be, int layer, const hci_comp_cache *idx, int n, int64_t pos0,
                       const uint16_t *qi, const uint16_t *w, int32_t *sel)
{
    (void)layer;
    const struct hc_model *m = be->model;
    const hci_config *c = &m->cfg;
    hci_pool *pool = hci_cpu_pool(be);
    if (c->index_n_heads * c->index_head_dim > 16384) return HC_ERR_UNSUPPORTED;
    int64_t ne = (pos0 + n) / 4, nes = ne > 0 ? ne : 1;
    int group = (int)(SCORE_BUDGET / nes);
    if (group < 1) group = 1;
    if (group > n) group = n;
    idx_run r = {m, idx, pos0, 0, ne, (nes + KEY_CHUNK - 1) / KEY_CHUNK, qi, w, sel, NULL, NULL, NULL};
    r.keys = malloc((size_t)nes * c->index_head_dim * sizeof(float));
    r.scores = malloc((size_t)group * nes * sizeof(float));
    r.picks = malloc((size_t)group * nes * sizeof(uint64_t));
    int st = (r.keys && r.scores && r.picks) ? HC_OK : HC_ERR_OUT_OF_MEMORY;
    if (!st) {
        hci_pool_for(pool, ne, 256, decode_keys, &r);
        int64_t chunks = r.chunks;
        for (int g0 = 0; g0 < n; g0 += group) {
            r.rows = n - g0 < group ? n - g0 : group;
            r.pos0 = pos0 + g0;
            r.qi = qi + (size_t)g0 * c->index_n_heads * c->index_head_dim;
            r.w = w + (size_t)g0 * c->index_n_heads;
            r.sel = sel + (size_t)g0 * c->index_topk;
            hci_pool_for(pool, (int64_t)r.rows * chunks, 1, score_items, &r);
            hci_pool_for(pool, r.rows, 1, select_rows, &r);
        }
    }
    free(r.keys), free(r.scores), free(r.picks);
    return st;
}
