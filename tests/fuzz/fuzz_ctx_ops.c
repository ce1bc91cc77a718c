/* fuzz_ctx_ops.c - libFuzzer target: sequences of calls on up to four contexts that fork from each
 * other (hybridctx.h "Serving"): appends and decode steps of token ids, truncations (also below
 * the limit, past the length, mid-chunk), forks (with other max_rollback and pieces, mid-chunk),
 * frees in any order, save/load round trips. A tiny model with weights (window 16, a ratio-4 and
 * a ratio-128 layer, head_dim 66) and at most 48 operations on 160 tokens keep each input fast.
 *
 * Invariants (abort on failure): every status is the one the API documents for the case; the
 * truncate limit follows the documented rule (modelled here); a refused call leaves the
 * context's state bytes as they were; and at the end of the input every live context's state
 * equals that of a context that computed its token sequence itself.
 *
 * Input: a byte stream of operations, each an opcode byte and one argument byte (see run_op).
 * Build and run: tools/check-fuzz.sh SECONDS ctx_ops; tests/fuzz/corpus/ctx_ops/ holds the seeds,
 * replayed in every build by the fuzz-replay-ctx_ops test. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#include "hybridctx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char config[] =
    "{\"hidden_size\": 128, \"num_hidden_layers\": 2, \"num_attention_heads\": 1, \"head_dim\": 66,"
    " \"qk_rope_head_dim\": 2, \"q_lora_rank\": 128, \"o_groups\": 1, \"o_lora_rank\": 128,"
    " \"index_n_heads\": 1, \"index_head_dim\": 32, \"index_topk\": 4, \"sliding_window\": 16,"
    " \"max_position_embeddings\": 4096, \"compress_ratios\": [4, 128]}";

#define MAX_CTX 4
#define MAX_LEN 160 /* max_tokens of every context: past one ratio-128 block */
#define N_IDS 64    /* token ids: one input row per (layer, id) */

static hc_model *model;
static int n_layers, dim;
static float *table; /* [layer][N_IDS][dim] */
static float *xbuf, *ybuf;
static uint8_t *scratch;
static size_t scratch_cap;

typedef struct slot {
    hc_ctx *c;
    int64_t R, hist_from; /* the documented limit rule: max(hist_from, n - R) */
    uint8_t ids[MAX_LEN];
    int64_t n;
} slot;
static slot S[MAX_CTX];

static void check(int ok)
{
    if (!ok) abort();
}

static void init(void)
{
    if (model) return;
    hc_model_params mp;
    hc_model_params_init(&mp, sizeof mp);
    mp.n_threads = 1;
    check(hc_model_create_random(config, 3, &mp, &model) == HC_OK);
    n_layers = hc_model_n_layers(model);
    dim = hc_model_dim(model);
    table = malloc(sizeof(float) * (size_t)n_layers * N_IDS * dim);
    xbuf = malloc(sizeof(float) * MAX_LEN * (size_t)dim);
    ybuf = malloc(sizeof(float) * MAX_LEN * (size_t)dim);
    check(table && xbuf && ybuf);
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < (size_t)n_layers * N_IDS * dim; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        table[i] = (float)((int64_t)(s >> 40) - (1 << 23)) / (float)(1 << 23);
    }
}

static hc_ctx *new_ctx(int64_t R, int max_chunk)
{
    hc_ctx_params p;
    hc_ctx_params_init(&p, sizeof p);
    p.backend = HC_BACKEND_CPU;
    p.n_threads = 1;
    p.max_tokens = MAX_LEN;
    p.max_rollback = R;
    p.max_chunk = max_chunk;
    hc_ctx *c = NULL;
    check(hc_ctx_create(model, &p, &c) == HC_OK);
    return c;
}

/* The state bytes of a context: its session between superblock and footer. */
static uint64_t digest(hc_ctx *c)
{
    uint64_t n = 0;
    check(hc_ctx_save_size(c, NULL, &n) == HC_OK);
    if (n > scratch_cap) {
        free(scratch);
        scratch = malloc(n);
        scratch_cap = n;
        check(scratch != NULL);
    }
    check(hc_ctx_save_buffer(c, scratch, scratch_cap, NULL, &n) == HC_OK);
    return XXH3_64bits(scratch + 4096, n - 8192);
}

static int64_t limit(const slot *s) { return s->n - s->R > s->hist_from ? s->n - s->R : s->hist_from; }

/* Feed ids [from, from + k) of s's sequence through one layer. */
static hc_status feed(slot *s, int layer, int64_t from, int64_t k)
{
    for (int64_t t = 0; t < k; t++)
        memcpy(xbuf + t * dim, table + ((size_t)layer * N_IDS + s->ids[from + t]) * dim, sizeof(float) * (size_t)dim);
    return hc_append(s->c, layer, xbuf, k, ybuf);
}

/* k new tokens (ids from the seed byte), through every layer. */
static void append(slot *s, int64_t k, uint8_t seed)
{
    if (k > MAX_LEN - s->n) {
        if (s->n < MAX_LEN) check(hc_append(s->c, 0, table, MAX_LEN - s->n + 1, ybuf) == HC_ERR_POSITION);
        return;
    }
    for (int64_t t = 0; t < k; t++) s->ids[s->n + t] = (uint8_t)((seed * 31u + (unsigned)t * 7u) % N_IDS);
    for (int l = 0; l < n_layers; l++) check(feed(s, l, s->n, k) == HC_OK);
    s->n += k;
    check(hc_ctx_n_tokens(s->c) == s->n);
}

static int live(void)
{
    int n = 0;
    for (int i = 0; i < MAX_CTX; i++) n += S[i].c != NULL;
    return n;
}

static int free_slot(void)
{
    for (int i = 0; i < MAX_CTX; i++)
        if (!S[i].c) return i;
    return -1;
}

static void run_op(int *cur, uint8_t op, uint8_t arg)
{
    slot *s = &S[*cur];
    switch (op % 9) {
    case 0: append(s, 1 + arg % 20, arg); break;
    case 1: append(s, 1, arg); break;
    case 2: { /* a truncation, possibly refused */
        int64_t to = s->n - arg % (s->R + 4);
        if (arg & 0x80) to = s->n + 1 + arg % 3; /* past the length */
        int64_t lim = limit(s);
        hc_status want = to < 0 || to > s->n ? HC_ERR_INVALID_ARG : to < lim ? HC_ERR_LIMIT : HC_OK;
        uint64_t d = want ? digest(s->c) : 0;
        check(hc_ctx_truncate(s->c, to) == want);
        if (want) {
            check(digest(s->c) == d && hc_ctx_n_tokens(s->c) == s->n);
        } else if (to < s->n) {
            s->hist_from = lim;
            s->n = to;
        }
        break;
    }
    case 3: { /* a fork, with its own R and pieces */
        int j = free_slot();
        if (j < 0) break;
        hc_ctx_params p;
        hc_ctx_params_init(&p, sizeof p);
        p.n_threads = 1;
        p.max_rollback = arg % 5 == 0 ? 0 : arg % 40;
        p.max_chunk = arg & 1 ? 5 : 0;
        p.max_tokens = MAX_LEN;
        check(hc_ctx_fork(s->c, &p, &S[j].c) == HC_OK);
        slot *f = &S[j];
        memcpy(f->ids, s->ids, sizeof s->ids);
        f->n = s->n;
        f->R = p.max_rollback;
        f->hist_from = limit(s);
        check(hc_ctx_truncate_limit(f->c) == limit(f));
        break;
    }
    case 4: /* free one (not the last) */
        if (live() > 1) {
            hc_ctx_free(s->c);
            s->c = NULL;
            for (int i = 0; i < MAX_CTX; i++)
                if (S[i].c) *cur = i;
        }
        break;
    case 5: { /* switch to another live context */
        int k = arg % MAX_CTX;
        if (S[k].c) *cur = k;
        break;
    }
    case 6: { /* save, and load into itself (history restarts) or into a new context */
        uint64_t n = 0;
        check(hc_ctx_save_size(s->c, NULL, &n) == HC_OK);
        uint8_t *b = malloc(n);
        check(b && hc_ctx_save_buffer(s->c, b, n, NULL, &n) == HC_OK);
        int j = arg & 1 ? free_slot() : *cur;
        if (j >= 0) {
            if (j != *cur) {
                S[j].c = new_ctx(arg % 20, 0);
                S[j].R = arg % 20;
                memcpy(S[j].ids, s->ids, sizeof s->ids);
                S[j].n = s->n;
            }
            check(hc_ctx_load_buffer(S[j].c, b, n) == HC_OK);
            S[j].hist_from = S[j].n;
            check(hc_ctx_truncate_limit(S[j].c) == S[j].n);
        }
        free(b);
        break;
    }
    case 7: { /* a chunk in progress refuses forks and truncations, then completes */
        int64_t k = 1 + arg % 9;
        if (k > MAX_LEN - s->n) break;
        for (int64_t t = 0; t < k; t++) s->ids[s->n + t] = (uint8_t)((arg + t) % N_IDS);
        check(feed(s, 0, s->n, k) == HC_OK);
        hc_ctx *f = (hc_ctx *)s;
        check(hc_ctx_fork(s->c, NULL, &f) == HC_ERR_ORDER && f == NULL);
        check(hc_ctx_truncate(s->c, s->n) == HC_ERR_ORDER);
        check(hc_ctx_truncate_limit(s->c) == limit(s));
        for (int l = 1; l < n_layers; l++) check(feed(s, l, s->n, k) == HC_OK);
        s->n += k;
        break;
    }
    case 8: /* a reset */
        if (arg % 8 == 0) {
            check(hc_ctx_reset(s->c) == HC_OK);
            s->n = 0, s->hist_from = 0;
        }
        break;
    }
    slot *t = &S[*cur];
    check(hc_ctx_n_tokens(t->c) == t->n && hc_ctx_next_layer(t->c) == 0);
    check(hc_ctx_truncate_limit(t->c) == limit(t));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    init();
    memset(S, 0, sizeof S);
    S[0].c = new_ctx(size ? data[0] % 48 : 8, 0);
    S[0].R = size ? data[0] % 48 : 8;
    int cur = 0;
    /* at most 48 operations: each input stays fast */
    for (size_t i = 1; i + 1 < size && i < 97; i += 2) run_op(&cur, data[i], data[i + 1]);
    /* every context equals one that computed its sequence itself */
    for (int i = 0; i < MAX_CTX; i++) {
        if (!S[i].c) continue;
        slot r = S[i];
        r.c = new_ctx(0, 0);
        for (int l = 0; l < n_layers && r.n; l++) check(feed(&r, l, 0, r.n) == HC_OK);
        check(digest(S[i].c) == digest(r.c));
        hc_ctx_free(r.c);
        hc_ctx_free(S[i].c);
        S[i].c = NULL;
    }
    return 0;
}
