/* test_batch.c - hc_decode_batch / hc_append_batch, progress and abort of layer calls, and
 * hc_ctx_set_stream, on the backend named by HC_TEST_BACKEND (cpu, the default, or cuda):
 *  - a batch gives bitwise the outputs and the states of separate calls on the same backend
 *    (contexts at different lengths, ragged appends over several pieces, any order, one context);
 *  - every refusal leaves every context as it was (a digest of its canonical state, its length
 *    and next layer, and the outputs of a following call) and gives every context the detail;
 *  - a failure in the middle of a batch (out of memory in a later context, injected into its
 *    backend ops) rolls every context back; a device fault (an op failing on a backend whose
 *    ops may not fail) poisons every context of the batch;
 *  - progress reports per piece, monotone and ending at the total; a stop at any report (the
 *    last one too) gives HC_ERR_ABORTED with the context, or every context of a batch, as it was;
 *  - streams: the CPU refuses a stream, a CUDA context moves between streams and back; on CUDA a
 *    batch of device-memory x and y over contexts on several streams is ordered on the first one.
 * The contexts start from sessions saved once (so that each test starts at several lengths
 * without recomputing them). Internal headers: the cache digest and the injected failures. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ctx/ctx.h"
#include "hybridctx_experimental.h"
#include "testutil.h"
#include "runner.h"

#define K 4       /* contexts per batch */
#define NT 400    /* tokens of each context's input sequence */
#define PIECE 32  /* max_chunk of the contexts: appends of more tokens run in pieces */
#define MAXB 48   /* most contexts of a batch in these tests */
static const int64_t g_len[K] = {0, 37, 130, 260}; /* lengths the tests start from */

static hc_model *g_model, *g_other; /* g_other: the same configuration and seed, another model */
static int g_L, g_D, g_backend;
static float *g_seq[K];             /* [layer][NT][dim] per context */
static uint8_t *g_sess[K];
static uint64_t g_sess_len[K];

static const float *xin(int i, int l, int64_t t) { return g_seq[i] + ((size_t)l * NT + (size_t)t) * g_D; }

static hc_ctx *make_ctx_num(hc_model *m, int fmt, int io_dtype, int numerics)
{
    hc_ctx_params p;
    hc_ctx_params_init(&p, sizeof p);
    p.backend = g_backend;
    p.numerics = numerics;
    p.n_threads = 2;
    p.cache_format = fmt;
    p.io_dtype = io_dtype;
    p.max_chunk = PIECE;
    hc_ctx *c = NULL;
    ck_assert_int_eq(hc_ctx_create(m, &p, &c), HC_OK);
    return c;
}

static hc_ctx *make_ctx_of(hc_model *m, int fmt, int io_dtype) { return make_ctx_num(m, fmt, io_dtype, 0); }
static hc_ctx *make_ctx(void) { return make_ctx_of(g_model, HC_CACHE_FP8, HC_DTYPE_F32); }

/* Context i at its starting length g_len[i]. */
static hc_ctx *fresh(int i)
{
    hc_ctx *c = make_ctx();
    ck_assert_msg(hc_ctx_load_buffer(c, g_sess[i], g_sess_len[i]) == HC_OK, "%s", hc_ctx_last_error(c));
    return c;
}

static void setup(void)
{
    const char *b = getenv("HC_TEST_BACKEND");
    g_backend = b && !strcmp(b, "cuda") ? HC_BACKEND_CUDA : HC_BACKEND_CPU;
    ck_assert_int_eq(hc_model_create_random("tiny", 5, NULL, &g_model), HC_OK);
    ck_assert_int_eq(hc_model_create_random("tiny", 6, NULL, &g_other), HC_OK);
    g_L = hc_model_n_layers(g_model);
    g_D = hc_model_dim(g_model);
    for (int i = 0; i < K; i++) {
        g_seq[i] = malloc(sizeof(float) * (size_t)g_L * NT * g_D);
        tu_fill_normal(g_seq[i], (size_t)g_L * NT * g_D, 100 + (uint64_t)i, 1.0f);
        hc_ctx *c = make_ctx();
        float *y = malloc(sizeof(float) * (size_t)NT * g_D);
        for (int l = 0; g_len[i] && l < g_L; l++)
            ck_assert_int_eq(hc_append(c, l, xin(i, l, 0), g_len[i], y), HC_OK);
        free(y);
        ck_assert_int_eq(hc_ctx_save_buffer(c, NULL, 0, NULL, &g_sess_len[i]), HC_ERR_BUFFER_TOO_SMALL);
        g_sess[i] = malloc(g_sess_len[i]);
        ck_assert_int_eq(hc_ctx_save_buffer(c, g_sess[i], g_sess_len[i], NULL, &g_sess_len[i]), HC_OK);
        hc_ctx_free(c);
    }
}

static void teardown(void)
{
    for (int i = 0; i < K; i++) free(g_seq[i]), free(g_sess[i]);
    hc_model_free(g_model);
    hc_model_free(g_other);
}

/* ---- the canonical state of a context: length, chunk in progress, rings, compressor states
 * and the values of every entry (bytes of a page beyond its entries do not count) ---- */

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t fnv_dev(uint64_t h, hc_ctx *c, const void *src, size_t n)
{
    void *t = malloc(n);
    ck_assert_int_eq(c->be->ops->download(c->be, t, src, n), HC_OK);
    h = fnv(h, t, n);
    free(t);
    return h;
}

static uint64_t digest(hc_ctx *c)
{
    uint64_t h = 0xcbf29ce484222325ull;
    h = fnv(h, &c->n_tokens, sizeof c->n_tokens);
    h = fnv(h, &c->next_layer, sizeof c->next_layer);
    h = fnv(h, &c->chunk_n, sizeof c->chunk_n);
    for (int l = 0; l < g_L; l++) {
        hci_layer_cache *lc = &c->layers[l];
        for (int p = 0; p < lc->ring.n_pages; p++) h = fnv_dev(h, c, lc->ring.pages[p], lc->ring.page_bytes);
        for (int k = 0; k < HCI_CACHE_COMPS; k++) {
            hci_comp_cache *cc = hci_cache_comp(lc, k);
            if (!cc) continue;
            h = fnv(h, &cc->n_entries, sizeof cc->n_entries);
            h = fnv_dev(h, c, cc->state_kv, hci_comp_state_floats(cc) * sizeof(float));
            h = fnv_dev(h, c, cc->state_score, hci_comp_state_floats(cc) * sizeof(float));
            uint8_t *page = malloc(cc->entries.page_bytes);
            float *v = malloc(sizeof(float) * (size_t)cc->layout.dim);
            for (int64_t j = 0; j < cc->n_entries; j++) {
                if (j % HCI_PAGE_ENTRIES == 0)
                    ck_assert_int_eq(c->be->ops->download(c->be, page, cc->entries.pages[j / HCI_PAGE_ENTRIES],
                                                          cc->entries.page_bytes),
                                     HC_OK);
                hci_entry_unpack(&cc->layout, page, (int)(j % HCI_PAGE_ENTRIES), v);
                h = fnv(h, v, sizeof(float) * (size_t)cc->layout.dim);
            }
            free(page), free(v);
        }
    }
    return h;
}

/* ---- running a step: batched, and separately ---- */

/* The rows of one step: context i (input sequence seq[i]) takes ns[i] tokens from its length. */
typedef struct step {
    int n;
    hc_ctx *c[MAXB];
    int seq[MAXB];
    int64_t ns[MAXB];
    int64_t t0[MAXB];
    int64_t rows;
} step;

static step make_step(int n, hc_ctx *const *cs, const int *seq, const int64_t *ns)
{
    step s = {.n = n};
    for (int i = 0; i < n; i++) {
        s.c[i] = cs[i], s.seq[i] = seq[i], s.ns[i] = ns[i], s.t0[i] = hc_ctx_n_tokens(cs[i]);
        s.rows += ns[i];
    }
    return s;
}

static float *alloc_rows(const step *s) { return calloc((size_t)s->rows * g_D, sizeof(float)); }

/* x of layer l: the contexts' rows one after another. */
static void pack(const step *s, int l, float *x)
{
    size_t r = 0;
    for (int i = 0; i < s->n; i++) {
        memcpy(x + r * g_D, xin(s->seq[i], l, s->t0[i]), sizeof(float) * (size_t)s->ns[i] * g_D);
        r += (size_t)s->ns[i];
    }
}

/* Every layer as one batch; y receives [layer][rows][dim]. */
static void run_batched(const step *s, int decode, float *y)
{
    float *x = alloc_rows(s);
    for (int l = 0; l < g_L; l++) {
        pack(s, l, x);
        float *yl = y + (size_t)l * s->rows * g_D;
        hc_status st = decode ? hc_decode_batch(s->c, s->n, l, x, yl) : hc_append_batch(s->c, s->n, l, x, s->ns, yl);
        ck_assert_msg(st == HC_OK, "batch at layer %d: %s (%s)", l, hc_status_name(st), hc_ctx_last_error(s->c[0]));
    }
    free(x);
}

/* The same rows through separate calls, context by context. */
static void run_separate(const step *s, float *y)
{
    for (int l = 0; l < g_L; l++) {
        size_t r = 0;
        for (int i = 0; i < s->n; i++) {
            float *yi = y + ((size_t)l * s->rows + r) * g_D;
            hc_status st = s->ns[i] == 1 ? hc_decode(s->c[i], l, xin(s->seq[i], l, s->t0[i]), yi)
                                         : hc_append(s->c[i], l, xin(s->seq[i], l, s->t0[i]), s->ns[i], yi);
            ck_assert_msg(st == HC_OK, "layer %d context %d: %s", l, i, hc_ctx_last_error(s->c[i]));
            r += (size_t)s->ns[i];
        }
    }
}

static void assert_same(const float *a, const float *b, size_t n, const char *what)
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0)
            ck_abort_msg("%s: first difference at value %zu: %.9g vs %.9g", what, i, a[i], b[i]);
}

/* Batched on `a`, separately on `b` (twins), outputs and states compared. */
static void compare_step(hc_ctx **a, hc_ctx **b, int n, const int *seq, const int64_t *ns, int decode)
{
    step sa = make_step(n, a, seq, ns), sb = make_step(n, b, seq, ns);
    float *ya = calloc((size_t)g_L * sa.rows * g_D, sizeof(float)), *yb = calloc((size_t)g_L * sb.rows * g_D, sizeof(float));
    run_batched(&sa, decode, ya);
    run_separate(&sb, yb);
    assert_same(ya, yb, (size_t)g_L * sa.rows * g_D, decode ? "decode batch vs separate" : "append batch vs separate");
    for (int i = 0; i < n; i++) {
        ck_assert_int_eq(hc_ctx_n_tokens(a[i]), sa.t0[i] + ns[i]);
        ck_assert_msg(digest(a[i]) == digest(b[i]), "context %d: states differ", i);
    }
    free(ya), free(yb);
}

static const int seq_id[K] = {0, 1, 2, 3};

/* hc_ctx_params.numerics: checked, resolved per backend (DEFAULT: FAST on CUDA, EXACT on the
 * CPU), inherited by forks; contexts of either mode decode in batches bitwise as separately (the
 * other tests run the default mode; this one both) */
START_TEST(numerics_modes)
{
    char msg[256];
    hc_ctx_params p;
    hc_ctx *c = NULL;
    for (int bad = 0; bad < 3; bad++) {
        hc_ctx_params_init(&p, sizeof p);
        p.backend = g_backend;
        p.errbuf = msg, p.errbuf_size = sizeof msg;
        if (bad == 0) p.numerics = 3;
        if (bad == 1) p.numerics = -1;
        if (bad == 2) p.reserved = 1;
        ck_assert_int_eq(hc_ctx_create(g_model, &p, &c), HC_ERR_INVALID_ARG);
        ck_assert_ptr_null(c);
    }
    ck_assert_int_eq(hc_ctx_numerics(NULL), HC_ERR_NULL_ARG);
    int want_fast = g_backend == HC_BACKEND_CUDA ? HC_NUMERICS_FAST : HC_NUMERICS_EXACT;
    static const int modes[3] = {HC_NUMERICS_DEFAULT, HC_NUMERICS_FAST, HC_NUMERICS_EXACT};
    for (int i = 0; i < 3; i++) {
        c = make_ctx_num(g_model, HC_CACHE_FP8, HC_DTYPE_F32, modes[i]);
        int want = modes[i] == HC_NUMERICS_EXACT ? HC_NUMERICS_EXACT : want_fast; /* DEFAULT: FAST on CUDA */
        ck_assert_int_eq(hc_ctx_numerics(c), want);
        hc_ctx *f = NULL, *f2 = NULL, *f3 = NULL;
        ck_assert_int_eq(hc_ctx_fork(c, NULL, &f), HC_OK);
        ck_assert_int_eq(hc_ctx_numerics(f), want);
        /* with params: DEFAULT keeps src's mode, EXACT switches */
        hc_ctx_params_init(&p, sizeof p);
        p.max_rollback = 4;
        ck_assert_int_eq(hc_ctx_fork(c, &p, &f2), HC_OK);
        ck_assert_int_eq(hc_ctx_numerics(f2), want);
        p.numerics = HC_NUMERICS_EXACT;
        ck_assert_int_eq(hc_ctx_fork(c, &p, &f3), HC_OK);
        ck_assert_int_eq(hc_ctx_numerics(f3), HC_NUMERICS_EXACT);
        hc_ctx_free(f3), hc_ctx_free(f2), hc_ctx_free(f), hc_ctx_free(c);
    }
    /* decode batches and ragged appends in each mode: bitwise as the same contexts one at a time
     * (a session loads into either mode and leaves the loading context's mode as it was) */
    for (int mi = 1; mi < 3; mi++) {
        hc_ctx *a[K], *b[K];
        int want = modes[mi] == HC_NUMERICS_EXACT ? HC_NUMERICS_EXACT : want_fast;
        for (int i = 0; i < K; i++) {
            a[i] = make_ctx_num(g_model, HC_CACHE_FP8, HC_DTYPE_F32, modes[mi]);
            b[i] = make_ctx_num(g_model, HC_CACHE_FP8, HC_DTYPE_F32, modes[mi]);
            ck_assert_int_eq(hc_ctx_load_buffer(a[i], g_sess[i], g_sess_len[i]), HC_OK);
            ck_assert_int_eq(hc_ctx_load_buffer(b[i], g_sess[i], g_sess_len[i]), HC_OK);
            ck_assert_int_eq(hc_ctx_numerics(a[i]), want);
        }
        static const int64_t ones[K] = {1, 1, 1, 1}, ns[K] = {3, 40, 1, 70};
        for (int step_i = 0; step_i < 2; step_i++) compare_step(a, b, K, seq_id, ones, 1);
        compare_step(a, b, K, seq_id, ns, 0);
        for (int i = 0; i < K; i++) hc_ctx_free(a[i]), hc_ctx_free(b[i]);
    }
}
END_TEST

START_TEST(decode_batch_bitwise)
{
    hc_ctx *a[K], *b[K];
    for (int i = 0; i < K; i++) a[i] = fresh(i), b[i] = fresh(i);
    static const int64_t ones[K] = {1, 1, 1, 1};
    for (int step_i = 0; step_i < 3; step_i++) compare_step(a, b, K, seq_id, ones, 1);
    for (int i = 0; i < K; i++) hc_ctx_free(a[i]), hc_ctx_free(b[i]);
}
END_TEST

START_TEST(append_batch_ragged)
{
    hc_ctx *a[K], *b[K];
    for (int i = 0; i < K; i++) a[i] = fresh(i), b[i] = fresh(i);
    /* 70 and 33 tokens run in pieces of 32; 130+70 crosses the ring and a ratio-128 entry */
    static const int64_t ns[K] = {5, 1, 70, 33};
    compare_step(a, b, K, seq_id, ns, 0);
    static const int64_t ns2[K] = {64, 3, 1, 2};
    compare_step(a, b, K, seq_id, ns2, 0);
    static const int64_t ones[K] = {1, 1, 1, 1};
    compare_step(a, b, K, seq_id, ones, 1);
    for (int i = 0; i < K; i++) hc_ctx_free(a[i]), hc_ctx_free(b[i]);
}
END_TEST

/* Order in the array does not matter; a batch of one is hc_append(). */
START_TEST(batch_order_and_one)
{
    hc_ctx *a[K], *b[K];
    for (int i = 0; i < K; i++) a[i] = fresh(i), b[i] = fresh(i);
    hc_ctx *ra[K] = {a[3], a[0], a[2], a[1]}, *rb[K] = {b[3], b[0], b[2], b[1]};
    static const int rs[K] = {3, 0, 2, 1};
    static const int64_t ns[K] = {2, 40, 1, 7};
    compare_step(ra, rb, K, rs, ns, 0);
    static const int64_t one[1] = {17};
    compare_step(&a[2], &b[2], 1, &rs[2], one, 0);
    static const int64_t d[1] = {1};
    compare_step(&a[1], &b[1], 1, &rs[3], d, 1);
    for (int i = 0; i < K; i++) hc_ctx_free(a[i]), hc_ctx_free(b[i]);
}
END_TEST

/* ---- refusals ---- */

typedef struct snap {
    uint64_t d[MAXB];
    int64_t n[MAXB];
    int next[MAXB];
} snap;

static snap take(hc_ctx **cs, int n)
{
    snap s;
    for (int i = 0; i < n; i++)
        if (cs[i]) s.d[i] = digest(cs[i]), s.n[i] = hc_ctx_n_tokens(cs[i]), s.next[i] = hc_ctx_next_layer(cs[i]);
    return s;
}

static void assert_unchanged(hc_ctx **cs, int n, const snap *s, const char *what)
{
    for (int i = 0; i < n; i++) {
        if (!cs[i]) continue;
        ck_assert_msg(hc_ctx_n_tokens(cs[i]) == s->n[i] && hc_ctx_next_layer(cs[i]) == s->next[i],
                      "%s: context %d moved", what, i);
        ck_assert_msg(digest(cs[i]) == s->d[i], "%s: context %d's state changed", what, i);
    }
}

/* Each context of a refused batch names the context at fault. */
static void assert_detail(hc_ctx **cs, int n, const char *needle, const char *what)
{
    for (int i = 0; i < n; i++)
        if (cs[i])
            ck_assert_msg(strstr(hc_ctx_last_error(cs[i]), needle), "%s: context %d: last error \"%s\" lacks \"%s\"",
                          what, i, hc_ctx_last_error(cs[i]), needle);
}

START_TEST(refusals_change_nothing)
{
    hc_ctx *a[K], *b[K];
    for (int i = 0; i < K; i++) a[i] = fresh(i), b[i] = fresh(i);
    /* start a chunk on every context: layer 0 with 2 tokens each, so that layer 1 is next */
    static const int64_t two[K] = {2, 2, 2, 2};
    {
        step sa = make_step(K, a, seq_id, two);
        float *x = alloc_rows(&sa), *y = alloc_rows(&sa);
        pack(&sa, 0, x);
        ck_assert_int_eq(hc_append_batch(a, K, 0, x, two, y), HC_OK);
        for (int i = 0; i < K; i++) ck_assert_int_eq(hc_append(b[i], 0, xin(i, 0, g_len[i]), 2, y), HC_OK);
        free(x), free(y);
    }
    size_t rows = 2 * K;
    float *x = calloc(rows * (size_t)g_D * 2, sizeof(float)), *y = calloc(rows * (size_t)g_D * 2, sizeof(float));
    tu_fill_normal(x, rows * (size_t)g_D * 2, 9, 1.0f);
    snap s0 = take(a, K);
    int64_t ns[K] = {2, 2, 2, 2};

    /* no contexts at all */
    ck_assert_int_eq(hc_append_batch(NULL, K, 1, x, ns, y), HC_ERR_NULL_ARG);
    ck_assert_int_eq(hc_append_batch(a, 0, 1, x, ns, y), HC_ERR_INVALID_ARG);
    ck_assert_int_eq(hc_decode_batch(a, -3, 1, x, y), HC_ERR_INVALID_ARG);
    assert_unchanged(a, K, &s0, "no contexts");
    /* a NULL context */
    hc_ctx *withnull[K] = {a[0], a[1], NULL, a[3]};
    ck_assert_int_eq(hc_append_batch(withnull, K, 1, x, ns, y), HC_ERR_NULL_ARG);
    assert_detail(withnull, K, "context 2", "NULL context");
    assert_unchanged(a, K, &s0, "NULL context");
    /* NULL buffers */
    ck_assert_int_eq(hc_append_batch(a, K, 1, NULL, ns, y), HC_ERR_NULL_ARG);
    ck_assert_int_eq(hc_append_batch(a, K, 1, x, NULL, y), HC_ERR_NULL_ARG);
    ck_assert_int_eq(hc_decode_batch(a, K, 1, x, NULL), HC_ERR_NULL_ARG);
    assert_detail(a, K, "NULL", "NULL buffers");
    assert_unchanged(a, K, &s0, "NULL buffers");
    /* the same context twice */
    hc_ctx *twice[K] = {a[0], a[1], a[2], a[1]};
    ck_assert_int_eq(hc_append_batch(twice, K, 1, x, ns, y), HC_ERR_INVALID_ARG);
    assert_detail(twice, K, "context 3: the same context as context 1", "twice");
    assert_unchanged(a, K, &s0, "twice");
    /* a context of another model (same configuration, other weights) */
    hc_ctx *o = make_ctx_of(g_other, HC_CACHE_FP8, HC_DTYPE_F32);
    hc_ctx *mixed_model[K] = {a[0], a[1], a[2], o};
    ck_assert_int_eq(hc_decode_batch(mixed_model, K, 0, x, y), HC_ERR_MODEL_MISMATCH);
    assert_detail(mixed_model, K, "context 3", "model");
    assert_unchanged(a, K - 1, &s0, "model");
    ck_assert_int_eq(hc_ctx_n_tokens(o), 0);
    hc_ctx_free(o);
    /* other io_dtype, other cache format (at layer 1, like the others) */
    hc_ctx *bf = make_ctx_of(g_model, HC_CACHE_FP8, HC_DTYPE_BF16), *c16 = make_ctx_of(g_model, HC_CACHE_BF16, HC_DTYPE_F32);
    hc_ctx *m1[K] = {a[0], bf, a[2], a[3]}, *m2[K] = {c16, a[1], a[2], a[3]};
    ck_assert_int_eq(hc_append_batch(m1, K, 1, x, ns, y), HC_ERR_INVALID_ARG);
    assert_detail(m1, K, "context 1: has io_dtype", "io_dtype");
    ck_assert_int_eq(hc_append_batch(m2, K, 1, x, ns, y), HC_ERR_INVALID_ARG);
    assert_detail(m2, K, "context 1: has another cache format", "cache format");
    assert_unchanged(a, K, &s0, "mixed");
    hc_ctx_free(bf), hc_ctx_free(c16);
    /* other numerics: a context in the mode the others (the default: FAST on CUDA) do not compute
     * (only CUDA computes FAST; the CPU resolves every value to EXACT) */
    int mode0 = hc_ctx_numerics(a[0]);
    hc_ctx *odd = make_ctx_num(g_model, HC_CACHE_FP8, HC_DTYPE_F32,
                               mode0 == HC_NUMERICS_FAST ? HC_NUMERICS_EXACT : HC_NUMERICS_FAST);
    if (hc_ctx_numerics(odd) != mode0) {
        hc_ctx *m3[K] = {a[0], a[1], odd, a[3]};
        ck_assert_int_eq(hc_decode_batch(m3, K, 0, x, y), HC_ERR_INVALID_ARG);
        assert_detail(m3, K,
                      mode0 == HC_NUMERICS_FAST ? "context 2: computes with exact numerics, context 0 with fast"
                                                : "context 2: computes with fast numerics, context 0 with exact",
                      "numerics");
        assert_unchanged(a, K, &s0, "numerics");
        ck_assert_int_eq(hc_ctx_n_tokens(odd), 0);
    }
    hc_ctx_free(odd);
    /* another backend (CUDA and CPU, where both exist) */
    int32_t ndev = 0;
    hc_cuda_device_count(&ndev);
    if (ndev > 0) {
        hc_ctx_params p;
        hc_ctx_params_init(&p, sizeof p);
        p.backend = g_backend == HC_BACKEND_CPU ? HC_BACKEND_CUDA : HC_BACKEND_CPU;
        p.max_chunk = PIECE;
        hc_ctx *ob = NULL;
        ck_assert_int_eq(hc_ctx_create(g_model, &p, &ob), HC_OK);
        hc_ctx *m3[2] = {ob, a[0]};
        ck_assert_int_eq(hc_decode_batch(m3, 2, 0, x, y), HC_ERR_INVALID_ARG);
        assert_detail(m3, 2, "context 1: runs on", "backend");
        hc_ctx_free(ob);
    }
    /* layer order: the batch names layer 0 while every context expects 1; one context behind */
    ck_assert_int_eq(hc_append_batch(a, K, 0, x, ns, y), HC_ERR_ORDER);
    assert_detail(a, K, "context 0: layer 0 called, but the chunk in progress needs layer 1", "order");
    hc_ctx *fresh3 = fresh(3);
    hc_ctx *behind[K] = {a[0], a[1], a[2], fresh3};
    ck_assert_int_eq(hc_append_batch(behind, K, 1, x, ns, y), HC_ERR_ORDER);
    assert_detail(behind, K, "context 3", "behind");
    hc_ctx_free(fresh3);
    /* token counts: not the chunk in progress; not positive; decode of a 2-token chunk */
    int64_t bad_n[K] = {2, 2, 3, 2}, zero_n[K] = {2, 0, 2, 2};
    ck_assert_int_eq(hc_append_batch(a, K, 1, x, bad_n, y), HC_ERR_ORDER);
    assert_detail(a, K, "context 2: the chunk in progress has 2 tokens, this call passes 3", "chunk");
    ck_assert_int_eq(hc_append_batch(a, K, 1, x, zero_n, y), HC_ERR_N_TOKENS);
    assert_detail(a, K, "context 1", "n_tokens");
    ck_assert_int_eq(hc_decode_batch(a, K, 1, x, y), HC_ERR_ORDER);
    ck_assert_int_eq(hc_append_batch(a, K, g_L, x, ns, y), HC_ERR_LAYER_RANGE);
    assert_unchanged(a, K, &s0, "order and counts");
    /* NaN in the last row of the last context; infinity in the first row of the first */
    float keep = x[(rows - 1) * (size_t)g_D + 5];
    x[(rows - 1) * (size_t)g_D + 5] = NAN;
    ck_assert_int_eq(hc_append_batch(a, K, 1, x, ns, y), HC_ERR_NONFINITE);
    assert_detail(a, K, "context 3", "NaN");
    x[(rows - 1) * (size_t)g_D + 5] = keep;
    keep = x[0];
    x[0] = INFINITY;
    ck_assert_int_eq(hc_append_batch(a, K, 1, x, ns, y), HC_ERR_NONFINITE);
    assert_detail(a, K, "context 0: layer 1: x holds NaN or infinity", "inf");
    x[0] = keep;
    assert_unchanged(a, K, &s0, "non-finite");
    /* a poisoned context */
    a[2]->poisoned = 1;
    ck_assert_int_eq(hc_append_batch(a, K, 1, x, ns, y), HC_ERR_BAD_STATE);
    assert_detail(a, K, "context 2: context poisoned", "poisoned");
    a[2]->poisoned = 0;
    assert_unchanged(a, K, &s0, "poisoned");
    /* the maximum length (a context capped just below) and a geometry-only model */
    {
        hc_ctx_params p;
        hc_ctx_params_init(&p, sizeof p);
        p.backend = g_backend;
        p.max_tokens = 1;
        hc_ctx *capped = NULL;
        ck_assert_int_eq(hc_ctx_create(g_model, &p, &capped), HC_OK);
        hc_ctx *m4[2] = {fresh(0), capped};
        int64_t n2[2] = {1, 2};
        ck_assert_int_eq(hc_append_batch(m4, 2, 0, x, n2, y), HC_ERR_POSITION);
        assert_detail(m4, 2, "context 1", "position");
        ck_assert_int_eq(hc_ctx_n_tokens(m4[0]), 0);
        hc_ctx_free(m4[0]), hc_ctx_free(capped);
        hc_model_params mp;
        hc_model_params_init(&mp, sizeof mp);
        mp.flags = HC_MODEL_GEOMETRY_ONLY;
        hc_model *geo = NULL;
        ck_assert_int_eq(hc_model_create_random("tiny", 1, &mp, &geo), HC_OK);
        hc_ctx *g1 = make_ctx_of(geo, HC_CACHE_FP8, HC_DTYPE_F32), *g2 = make_ctx_of(geo, HC_CACHE_FP8, HC_DTYPE_F32);
        hc_ctx *m5[2] = {g1, g2};
        ck_assert_int_eq(hc_decode_batch(m5, 2, 0, x, y), HC_ERR_UNSUPPORTED);
        assert_detail(m5, 2, "context 0", "geometry-only");
        hc_ctx_free(g1), hc_ctx_free(g2);
        hc_model_free(geo);
    }
    /* after all that: the chunk completes as on the twins that saw no refusal */
    for (int l = 1; l < g_L; l++) {
        step sa = make_step(K, a, seq_id, two), sb = make_step(K, b, seq_id, two);
        float *xa = alloc_rows(&sa), *ya = alloc_rows(&sa), *yb = alloc_rows(&sb);
        pack(&sa, l, xa);
        ck_assert_int_eq(hc_append_batch(a, K, l, xa, two, ya), HC_OK);
        for (int i = 0; i < K; i++)
            ck_assert_int_eq(hc_append(b[i], l, xin(i, l, g_len[i]), 2, yb + (size_t)i * 2 * g_D), HC_OK);
        assert_same(ya, yb, (size_t)sa.rows * g_D, "after the refusals");
        free(xa), free(ya), free(yb);
    }
    for (int i = 0; i < K; i++) {
        ck_assert_int_eq(hc_ctx_n_tokens(a[i]), g_len[i] + 2);
        ck_assert_msg(digest(a[i]) == digest(b[i]), "context %d", i);
        hc_ctx_free(a[i]), hc_ctx_free(b[i]);
    }
    free(x), free(y);
}
END_TEST

/* ---- failures in the middle of a batch, injected into one context's backend ops ---- */

typedef struct inject {
    hci_backend_ops ops;
    const hci_backend_ops *real;
    int out_path_left; /* fail the out_path call that brings this to 0 */
    int alloc_left;    /* fail the alloc call that brings this to 0 */
    int reserve_left;  /* fail the reserve call (the preflight's last step) that brings this to 0 */
    int status;
} inject;
static inject g_inj[K];

static inject *inj_of(hci_backend *be)
{
    for (int i = 0; i < K; i++)
        if (be->ops == &g_inj[i].ops) return &g_inj[i];
    ck_abort_msg("no injection");
    return NULL;
}

static int inj_out_path(hci_backend *be, int layer, int n, int64_t pos0, uint16_t *o, uint16_t *y)
{
    inject *j = inj_of(be);
    if (j->out_path_left > 0 && --j->out_path_left == 0)
        return hci_errf(be->err, be->errsz, j->status, "injected failure of out_path");
    return j->real->out_path(be, layer, n, pos0, o, y);
}

static int inj_alloc(hci_backend *be, size_t bytes, void **out)
{
    inject *j = inj_of(be);
    if (j->alloc_left > 0 && --j->alloc_left == 0) {
        *out = NULL;
        return hci_errf(be->err, be->errsz, HC_ERR_OUT_OF_MEMORY, "injected failure of alloc");
    }
    return j->real->alloc(be, bytes, out);
}

static int inj_reserve(hci_backend *be, int layer, int n_piece, int64_t end_pos)
{
    inject *j = inj_of(be);
    if (j->reserve_left > 0 && --j->reserve_left == 0)
        return hci_errf(be->err, be->errsz, HC_ERR_OUT_OF_MEMORY, "injected failure of reserve");
    return j->real->reserve ? j->real->reserve(be, layer, n_piece, end_pos) : HC_OK;
}

static void arm(hc_ctx *c, int slot, int out_path_at, int alloc_at, int status)
{
    inject *j = &g_inj[slot];
    j->real = c->be->ops;
    j->ops = *j->real;
    j->ops.out_path = inj_out_path;
    j->ops.alloc = inj_alloc;
    j->ops.reserve = inj_reserve;
    j->out_path_left = out_path_at, j->alloc_left = alloc_at, j->reserve_left = 0, j->status = status;
    c->be->ops = &j->ops;
}

static void disarm(hc_ctx *c, int slot) { c->be->ops = g_inj[slot].real; }

/* Out of memory in a later context of a batch (in its preflight, or in an op after the earlier
 * contexts have run): every context rolls back, and the batch then runs as separate calls do.
 * On a backend whose ops may not fail (CUDA) an op failure is a device fault instead. */
START_TEST(mid_batch_failure_rolls_back)
{
    hc_ctx *a[K], *b[K];
    for (int i = 0; i < K; i++) a[i] = fresh(i), b[i] = fresh(i);
    int may_fail = a[0]->be->ops_may_fail;
    static const int64_t ns[K] = {3, 1, 40, 9};
    step sa = make_step(K, a, seq_id, ns);
    float *x = alloc_rows(&sa), *y = alloc_rows(&sa);
    snap s0 = take(a, K);
    pack(&sa, 0, x);
    if (may_fail) {
        /* preflight: context 3's first allocation (the storage of its rollback snapshot) fails
         * after contexts 0..2 have grown their pages */
        arm(a[3], 3, 0, 1, HC_ERR_OUT_OF_MEMORY);
        ck_assert_int_eq(hc_append_batch(a, K, 0, x, ns, y), HC_ERR_OUT_OF_MEMORY);
        disarm(a[3], 3);
        assert_detail(a, K, "context 3: layer 0: out of memory for the rollback snapshot", "snapshot");
        assert_unchanged(a, K, &s0, "snapshot failure");
    }
    /* preflight: context 3's scratch cannot grow */
    arm(a[3], 3, 0, 0, HC_ERR_OUT_OF_MEMORY);
    g_inj[3].reserve_left = 1;
    ck_assert_int_eq(hc_append_batch(a, K, 0, x, ns, y), HC_ERR_OUT_OF_MEMORY);
    disarm(a[3], 3);
    assert_detail(a, K, "context 3: injected failure of reserve", "preflight");
    assert_unchanged(a, K, &s0, "preflight failure");
    if (may_fail) {
        /* an op of context 2 fails after contexts 0 and 1 have run; then in its second piece */
        for (int at = 1; at <= 2; at++) {
            arm(a[2], 2, at, 0, HC_ERR_OUT_OF_MEMORY);
            ck_assert_int_eq(hc_append_batch(a, K, 0, x, ns, y), HC_ERR_OUT_OF_MEMORY);
            disarm(a[2], 2);
            assert_detail(a, K, "context 2: injected failure of out_path", "op");
            assert_unchanged(a, K, &s0, "op failure");
        }
        /* at a later layer of the chunk too */
        step sb = make_step(K, b, seq_id, ns);
        float *yb = calloc((size_t)g_L * sb.rows * g_D, sizeof(float)), *ya = calloc((size_t)g_L * sa.rows * g_D, sizeof(float));
        run_separate(&sb, yb);
        for (int l = 0; l < g_L; l++) {
            pack(&sa, l, x);
            if (l == 2) {
                snap s2 = take(a, K);
                arm(a[1], 1, 1, 0, HC_ERR_OUT_OF_MEMORY);
                ck_assert_int_eq(hc_append_batch(a, K, l, x, ns, ya + (size_t)l * sa.rows * g_D), HC_ERR_OUT_OF_MEMORY);
                disarm(a[1], 1);
                assert_unchanged(a, K, &s2, "op failure at layer 2");
            }
            ck_assert_int_eq(hc_append_batch(a, K, l, x, ns, ya + (size_t)l * sa.rows * g_D), HC_OK);
        }
        assert_same(ya, yb, (size_t)g_L * sa.rows * g_D, "after the rolled back failures");
        for (int i = 0; i < K; i++) ck_assert_msg(digest(a[i]) == digest(b[i]), "context %d", i);
        free(ya), free(yb);
    }
    free(x), free(y);
    for (int i = 0; i < K; i++) hc_ctx_free(a[i]), hc_ctx_free(b[i]);
}
END_TEST

/* A device fault (an op failing after the preflight on a backend whose ops may not fail: CUDA,
 * or the CPU backend told so) poisons every context of the batch. */
START_TEST(device_fault_poisons_the_batch)
{
    hc_ctx *a[K];
    for (int i = 0; i < K; i++) {
        a[i] = fresh(i);
        a[i]->be->ops_may_fail = 0;
    }
    static const int64_t ones[K] = {1, 1, 1, 1};
    step s = make_step(K, a, seq_id, ones);
    float *x = alloc_rows(&s), *y = alloc_rows(&s);
    pack(&s, 0, x);
    arm(a[2], 2, 1, 0, HC_ERR_CUDA);
    ck_assert_int_eq(hc_decode_batch(a, K, 0, x, y), HC_ERR_CUDA);
    disarm(a[2], 2);
    assert_detail(a, K, "context 2: injected failure of out_path", "fault");
    for (int i = 0; i < K; i++) {
        ck_assert_int_eq(hc_decode(a[i], 0, x, y), HC_ERR_BAD_STATE);
        ck_assert_int_eq(hc_decode_batch(&a[i], 1, 0, x, y), HC_ERR_BAD_STATE);
    }
    free(x), free(y);
    for (int i = 0; i < K; i++) hc_ctx_free(a[i]);
}
END_TEST

/* ---- progress and abort ---- */

typedef struct watch {
    int calls, stop_at; /* stop (return 1) at report number stop_at (1-based; 0 = never) */
    uint64_t last, total;
    int monotone;
} watch;

static int on_progress(void *user, uint64_t done, uint64_t total)
{
    watch *w = user;
    w->calls++;
    if (done < w->last || done > total || (w->total && total != w->total)) w->monotone = 0;
    w->last = done, w->total = total;
    return w->calls == w->stop_at;
}

/* An append of 100 tokens runs in 4 pieces (32, 32, 32, 4): one report each; a stop at any of
 * them, at any layer, leaves the context as it was. */
START_TEST(append_progress_and_abort)
{
    hc_ctx *a = fresh(2), *b = fresh(2);
    int64_t n = 100, t0 = g_len[2];
    float *ya = calloc((size_t)n * g_D, sizeof(float)), *yb = calloc((size_t)n * g_D, sizeof(float));
    for (int l = 0; l < g_L; l++) {
        for (int stop = 1; stop <= 4; stop++) {
            snap s = take(&a, 1);
            watch w = {.stop_at = stop, .monotone = 1};
            ck_assert_int_eq(hc_ctx_set_progress(a, on_progress, &w), HC_OK);
            ck_assert_int_eq(hc_append(a, l, xin(2, l, t0), n, ya), HC_ERR_ABORTED);
            ck_assert_int_eq(w.calls, stop);
            ck_assert_msg(strstr(hc_ctx_last_error(a), "stopped by the progress callback"), "%s", hc_ctx_last_error(a));
            assert_unchanged(&a, 1, &s, "stopped append");
        }
        watch w = {.monotone = 1};
        ck_assert_int_eq(hc_ctx_set_progress(a, on_progress, &w), HC_OK);
        ck_assert_int_eq(hc_append(a, l, xin(2, l, t0), n, ya), HC_OK);
        ck_assert_int_eq(w.calls, 4);
        ck_assert(w.monotone);
        ck_assert_uint_eq(w.last, (uint64_t)n);
        ck_assert_uint_eq(w.total, (uint64_t)n);
        ck_assert_int_eq(hc_append(b, l, xin(2, l, t0), n, yb), HC_OK);
        assert_same(ya, yb, (size_t)n * g_D, "append after stops");
    }
    ck_assert_msg(digest(a) == digest(b), "states differ");
    /* cleared: no more reports */
    watch w = {.stop_at = 1, .monotone = 1};
    ck_assert_int_eq(hc_ctx_set_progress(a, on_progress, &w), HC_OK);
    ck_assert_int_eq(hc_ctx_set_progress(a, NULL, &w), HC_OK);
    ck_assert_int_eq(hc_decode(a, 0, xin(2, 0, t0 + n), ya), HC_OK);
    ck_assert_int_eq(w.calls, 0);
    ck_assert_int_eq(hc_ctx_set_progress(NULL, on_progress, &w), HC_ERR_NULL_ARG);
    free(ya), free(yb);
    hc_ctx_free(a), hc_ctx_free(b);
}
END_TEST

/* A stop by one context's callback stops the batch: every context as it was. */
START_TEST(batch_abort)
{
    hc_ctx *a[K], *b[K];
    for (int i = 0; i < K; i++) a[i] = fresh(i), b[i] = fresh(i);
    static const int64_t ns[K] = {3, 70, 1, 40};
    step sa = make_step(K, a, seq_id, ns);
    float *x = alloc_rows(&sa), *y = alloc_rows(&sa);
    watch w1 = {.monotone = 1}, w3 = {.monotone = 1};
    hc_ctx_set_progress(a[1], on_progress, &w1);
    hc_ctx_set_progress(a[3], on_progress, &w3);
    for (int l = 0; l < g_L; l++) {
        pack(&sa, l, x);
        snap s = take(a, K);
        /* context 3 (40 tokens: pieces of 32 and 8) stops at its last report, context 1 (70:
         * 32, 32, 6) at its second */
        w3 = (watch){.stop_at = 2, .monotone = 1};
        ck_assert_int_eq(hc_append_batch(a, K, l, x, ns, y), HC_ERR_ABORTED);
        assert_detail(a, K, "context 3: layer", "stop");
        assert_unchanged(a, K, &s, "stopped batch");
        w3 = (watch){.monotone = 1};
        w1 = (watch){.stop_at = 2, .monotone = 1};
        ck_assert_int_eq(hc_append_batch(a, K, l, x, ns, y), HC_ERR_ABORTED);
        assert_detail(a, K, "context 1: layer", "stop");
        assert_unchanged(a, K, &s, "stopped batch");
        w1 = (watch){.monotone = 1};
        ck_assert_int_eq(hc_append_batch(a, K, l, x, ns, y), HC_OK);
        ck_assert(w1.monotone && w3.monotone);
        ck_assert_int_eq(w1.calls, 3);
        ck_assert_int_eq(w3.calls, 2);
        ck_assert_uint_eq(w1.last, 70);
        ck_assert_uint_eq(w3.last, 40);
    }
    step sb = make_step(K, b, seq_id, ns);
    float *yb = calloc((size_t)g_L * sb.rows * g_D, sizeof(float));
    run_separate(&sb, yb);
    for (int i = 0; i < K; i++) ck_assert_msg(digest(a[i]) == digest(b[i]), "context %d", i);
    free(x), free(y), free(yb);
    for (int i = 0; i < K; i++) hc_ctx_free(a[i]), hc_ctx_free(b[i]);
}
END_TEST

/* ---- streams ---- */

START_TEST(set_stream)
{
    hc_ctx *a = fresh(1), *b = fresh(1), *o = fresh(0);
    int64_t t0 = g_len[1];
    float *ya = calloc((size_t)8 * g_D, sizeof(float)), *yb = calloc((size_t)8 * g_D, sizeof(float));
    ck_assert_int_eq(hc_ctx_set_stream(NULL, NULL), HC_ERR_NULL_ARG);
    ck_assert_int_eq(hc_ctx_set_stream(a, NULL), HC_OK);
    if (g_backend == HC_BACKEND_CPU) {
        int dummy;
        ck_assert_int_eq(hc_ctx_set_stream(a, &dummy), HC_ERR_UNSUPPORTED);
        ck_assert_msg(strstr(hc_ctx_last_error(a), "runs on no stream"), "%s", hc_ctx_last_error(a));
    } else {
        /* onto another context's stream, through a chunk, and back to one of its own */
        void *own = a->be->ops->stream(a->be), *other = o->be->ops->stream(o->be);
        ck_assert_ptr_ne(own, other);
        ck_assert_int_eq(hc_ctx_set_stream(a, other), HC_OK);
        ck_assert_ptr_eq(a->be->ops->stream(a->be), other);
        ck_assert_int_eq(hc_ctx_set_stream(a, other), HC_OK); /* again: nothing */
    }
    for (int l = 0; l < g_L; l++) {
        if (l == 2) ck_assert_int_eq(hc_ctx_set_stream(a, NULL), HC_OK);
        ck_assert_int_eq(hc_append(a, l, xin(1, l, t0), 8, ya), HC_OK);
        ck_assert_int_eq(hc_append(b, l, xin(1, l, t0), 8, yb), HC_OK);
        assert_same(ya, yb, (size_t)8 * g_D, "after a stream switch");
    }
    if (g_backend != HC_BACKEND_CPU) {
        ck_assert_ptr_ne(a->be->ops->stream(a->be), o->be->ops->stream(o->be));
        /* a batch of contexts on two streams, one of them moved onto the other's */
        hc_ctx *pair[2] = {a, o}, *twin[2] = {b, fresh(0)};
        static const int pseq[2] = {1, 0};
        static const int64_t pn[2] = {5, 2};
        compare_step(pair, twin, 2, pseq, pn, 0);
        ck_assert_int_eq(hc_ctx_set_stream(o, a->be->ops->stream(a->be)), HC_OK);
        compare_step(pair, twin, 2, pseq, pn, 0);
        hc_ctx_free(twin[1]);
    }
    a->poisoned = 1;
    ck_assert_int_eq(hc_ctx_set_stream(a, NULL), HC_ERR_BAD_STATE);
    a->poisoned = 0;
    free(ya), free(yb);
    hc_ctx_free(a), hc_ctx_free(b), hc_ctx_free(o);
}
END_TEST

/* CUDA: device-memory x and y (HC_MEM_DEVICE), contexts on three streams, one of them the
 * caller's: the batch is ordered on the first context's stream and gives the host-memory
 * separate calls' bits. */
START_TEST(device_memory_batch)
{
    if (g_backend == HC_BACKEND_CPU) return;
    hc_ctx *a[K], *b[K];
    for (int i = 0; i < K; i++) {
        hc_ctx_params p;
        hc_ctx_params_init(&p, sizeof p);
        p.backend = g_backend;
        p.max_chunk = PIECE;
        p.io_memory = HC_MEM_DEVICE;
        ck_assert_int_eq(hc_ctx_create(g_model, &p, &a[i]), HC_OK);
        ck_assert_int_eq(hc_ctx_load_buffer(a[i], g_sess[i], g_sess_len[i]), HC_OK);
        b[i] = fresh(i);
    }
    ck_assert_int_eq(hc_ctx_set_stream(a[3], a[1]->be->ops->stream(a[1]->be)), HC_OK);
    static const int64_t ns[K] = {4, 33, 1, 2};
    step sa = make_step(K, a, seq_id, ns), sb = make_step(K, b, seq_id, ns);
    size_t bytes = sizeof(float) * (size_t)sa.rows * g_D;
    float *x = alloc_rows(&sa), *ya = alloc_rows(&sa), *yb = calloc((size_t)g_L * sb.rows * g_D, sizeof(float));
    void *dx = NULL, *dy = NULL;
    hci_backend *be0 = a[0]->be;
    ck_assert_int_eq(be0->ops->alloc(be0, bytes, &dx), HC_OK);
    ck_assert_int_eq(be0->ops->alloc(be0, bytes, &dy), HC_OK);
    run_separate(&sb, yb);
    for (int l = 0; l < g_L; l++) {
        pack(&sa, l, x);
        ck_assert_int_eq(be0->ops->upload(be0, dx, x, bytes), HC_OK); /* on the first context's stream */
        ck_assert_msg(hc_append_batch(a, K, l, dx, ns, dy) == HC_OK, "%s", hc_ctx_last_error(a[0]));
        ck_assert_int_eq(be0->ops->download(be0, ya, dy, bytes), HC_OK); /* ready on that stream */
        assert_same(ya, yb + (size_t)l * sb.rows * g_D, (size_t)sa.rows * g_D, "device-memory batch");
    }
    be0->ops->free(be0, dx), be0->ops->free(be0, dy);
    free(x), free(ya), free(yb);
    for (int i = 0; i < K; i++) hc_ctx_free(a[i]), hc_ctx_free(b[i]);
}
END_TEST

/* ---- shared launches: on CUDA the projections of a batch's small pieces run as one launch over
 * the rows of all its contexts (engine.c, the backend ops share_*): up to 64 rows in FAST, 16 in
 * EXACT, each context's piece at most that large and one piece (PIECE). The results must stay
 * bitwise those of separate calls. On the CPU, whose backend has no share_* ops, the engine's
 * part (groups, rows of the shared workspace, reports, stops, faults) runs on emulated ops: the
 * CPU's own ops row by row at each row's position (every CPU op is split-invariant), on a
 * workspace in host memory filled with NaN so that a row read before it is written shows. ---- */

static const hci_backend_ops *g_emu_real; /* the CPU ops under the emulation */
static hci_backend_ops g_emu_ops;
static int g_emu_cap = 64;                 /* the rows of a shared launch the emulation admits */
static int g_emu_in_calls, g_emu_rows_max;
typedef struct emu_ws {
    hci_backend *be;
    int rows;
    uint16_t *buf[8];
} emu_ws;
static emu_ws g_emu_ws[2 * MAXB];
static int g_emu_n;

static int emu_share_rows(hci_backend *be, int layer, int n, uint64_t *key)
{
    (void)be, (void)layer;
    *key = 7;
    return n >= 1 && n <= g_emu_cap ? g_emu_cap : 0;
}

static int emu_share_reserve(hci_backend *be, int rows, hci_share_ws *ws)
{
    const hci_config *g = &be->model->cfg;
    size_t R = (size_t)rows, hd = (size_t)g->n_heads * g->head_dim, ih = (size_t)g->index_n_heads;
    size_t n[8] = {R * g->dim, R * g->q_lora_rank, R * hd, R * g->head_dim, R * ih * g->index_head_dim, R * ih, R * hd,
                   R * g->dim};
    emu_ws *e = NULL;
    for (int i = 0; i < g_emu_n; i++)
        if (g_emu_ws[i].be == be) e = &g_emu_ws[i];
    if (!e) {
        ck_assert_int_lt(g_emu_n, 2 * MAXB);
        e = &g_emu_ws[g_emu_n++];
        memset(e, 0, sizeof *e);
        e->be = be;
    }
    if (e->rows < rows) {
        for (int i = 0; i < 8; i++) {
            if (e->buf[i]) g_emu_real->free(be, e->buf[i]);
            e->buf[i] = NULL;
            int st = g_emu_real->alloc(be, n[i] * 2, (void **)&e->buf[i]);
            if (st) return st;
        }
        e->rows = rows;
    }
    for (int i = 0; i < 8; i++) memset(e->buf[i], 0xff, n[i] * 2); /* bf16 NaN */
    ws->rows = rows;
    ws->x = e->buf[0], ws->c = e->buf[1], ws->q = e->buf[2], ws->kv = e->buf[3];
    ws->qi = e->buf[4], ws->w = e->buf[5], ws->o = e->buf[6], ws->y = e->buf[7];
    ws->aux = NULL;
    return HC_OK;
}

static void emu_release(void)
{
    for (int i = 0; i < g_emu_n; i++)
        for (int k = 0; k < 8; k++)
            if (g_emu_ws[i].buf[k]) g_emu_real->free(g_emu_ws[i].be, g_emu_ws[i].buf[k]);
    g_emu_n = 0;
}

static int emu_share_in(hci_backend *be, int layer, int n, const int64_t *pos, const uint16_t *const *xrow,
                        const hci_share_ws *ws)
{
    const hci_config *g = &be->model->cfg;
    size_t D = (size_t)g->dim, hd = (size_t)g->n_heads * g->head_dim, ih = (size_t)g->index_n_heads;
    ck_assert_int_le(n, g_emu_cap);
    ck_assert_int_le(n, ws->rows);
    g_emu_in_calls++;
    if (n > g_emu_rows_max) g_emu_rows_max = n;
    for (int r = 0; r < n; r++) memcpy(ws->x + r * D, xrow[r], D * 2);
    for (int r = 0; r < n; r++) {
        const uint16_t *x = ws->x + r * D, *c = ws->c + r * (size_t)g->q_lora_rank;
        int st = g_emu_real->q_path(be, layer, 1, pos[r], x, ws->c + r * (size_t)g->q_lora_rank, ws->q + r * hd);
        if (!st) st = g_emu_real->kv_path(be, layer, 1, pos[r], x, ws->kv + r * (size_t)g->head_dim);
        if (!st && g->ratios[layer] == 4)
            st = g_emu_real->index_q(be, layer, 1, pos[r], x, c, ws->qi + r * ih * g->index_head_dim, ws->w + r * ih);
        if (st) return st;
    }
    return HC_OK;
}

static int emu_compress_rows(hci_backend *be, int layer, int which, hci_comp_cache *cc, int n, int64_t pos0,
                             const hci_share_ws *ws, int row)
{
    return g_emu_real->compress(be, layer, which, cc, n, pos0, ws->x + (size_t)row * be->model->cfg.dim);
}

static int emu_share_out(hci_backend *be, int layer, int n, const int64_t *pos, const hci_share_ws *ws)
{
    const hci_config *g = &be->model->cfg;
    size_t hd = (size_t)g->n_heads * g->head_dim;
    for (int r = 0; r < n; r++) {
        int st = g_emu_real->out_path(be, layer, 1, pos[r], ws->o + r * hd, ws->y + r * (size_t)g->dim);
        if (st) return st;
    }
    return HC_OK;
}

/* The context shares as the backend does: CUDA's own ops (the option batch_shared on); the
 * emulation on the CPU. */
static void share_ops(hc_ctx *c)
{
    if (g_backend != HC_BACKEND_CPU) {
        ck_assert_int_eq(hc_x_ctx_set_option(c, "batch_shared", 1), HC_OK);
        return;
    }
    if (!g_emu_real) {
        g_emu_real = c->be->ops;
        g_emu_ops = *g_emu_real;
        g_emu_ops.share_rows = emu_share_rows;
        g_emu_ops.share_reserve = emu_share_reserve;
        g_emu_ops.share_in = emu_share_in;
        g_emu_ops.compress_rows = emu_compress_rows;
        g_emu_ops.share_out = emu_share_out;
    }
    ck_assert_ptr_eq(c->be->ops, g_emu_real);
    c->be->ops = &g_emu_ops;
}

/* The rows of a shared launch in a context's numerics: the backend's rule (cuda_backend.cu, for
 * the tiny geometry), or the emulation's. */
static int share_cap(int numerics) { return numerics == HC_NUMERICS_FAST ? 64 : 16; }

/* Which jobs run shared, as engine.c plans them: a job whose call is one piece of at most cap
 * tokens leads the next such jobs that fit, a group of one runs alone. */
static void expect_shared(int n, const int64_t *ns, int cap, int *shared)
{
    int lead[MAXB];
    for (int i = 0; i < n; i++) lead[i] = -1, shared[i] = 0;
    for (int i = 0; i < n; i++) {
        if (ns[i] > cap || ns[i] > PIECE || lead[i] >= 0) continue;
        int64_t rows = ns[i];
        int members = 1;
        lead[i] = i;
        for (int k = i + 1; k < n; k++)
            if (lead[k] < 0 && ns[k] <= cap && ns[k] <= PIECE && rows + ns[k] <= cap) lead[k] = i, rows += ns[k], members++;
        if (members == 1) lead[i] = -1;
        for (int k = i; k < n && members > 1; k++)
            if (lead[k] == i) shared[k] = 1;
    }
}

/* compare_step, and each context's pieces in shared launches as planned (every layer one). */
static void compare_shared(hc_ctx **a, hc_ctx **b, int n, const int *seq, const int64_t *ns, int decode, int cap)
{
    uint64_t before[MAXB];
    int shared[MAXB];
    for (int i = 0; i < n; i++) before[i] = a[i]->shared_pieces;
    expect_shared(n, ns, cap, shared);
    int calls = g_emu_in_calls;
    compare_step(a, b, n, seq, ns, decode);
    int groups = 0;
    for (int i = 0; i < n; i++) {
        ck_assert_msg(a[i]->shared_pieces - before[i] == (uint64_t)(shared[i] * g_L),
                      "context %d of %d (%lld tokens, cap %d): %llu shared pieces, %d expected", i, n, (long long)ns[i],
                      cap, (unsigned long long)(a[i]->shared_pieces - before[i]), shared[i] * g_L);
        groups += shared[i];
    }
    if (g_backend == HC_BACKEND_CPU && !groups) ck_assert_int_eq(g_emu_in_calls, calls);
    if (g_backend == HC_BACKEND_CPU && groups) ck_assert_int_gt(g_emu_in_calls, calls);
}

static hc_ctx *shared_ctx(int numerics)
{
    hc_ctx_params p;
    hc_ctx_params_init(&p, sizeof p);
    p.backend = g_backend;
    p.numerics = numerics;
    p.n_threads = 1;
    p.cache_format = HC_CACHE_FP8;
    p.io_dtype = HC_DTYPE_F32;
    p.max_chunk = PIECE;
    hc_ctx *c = NULL;
    ck_assert_int_eq(hc_ctx_create(g_model, &p, &c), HC_OK);
    return c;
}

#define NSHARE 40

/* Decode batches of 2, 5 and 40 contexts at different lengths (every layer kind: SWA, CSA, HCA),
 * in FAST and EXACT; a mixed batch with pieces too large to share (more than the mode's rows, or
 * more than one piece) beside shared ones; groups split at the row limit; a stop by a member's
 * progress callback. Bitwise against separate calls, states included. */
START_TEST(shared_batches)
{
    int seq[NSHARE];
    for (int mi = 0; mi < 2; mi++) {
        int numerics = mi == 0 ? HC_NUMERICS_FAST : HC_NUMERICS_EXACT;
        /* the CPU computes EXACT whatever it is asked; its emulation takes the row limit of the mode */
        int cap = share_cap(numerics);
        g_emu_cap = cap;
        hc_ctx *a[NSHARE], *b[NSHARE];
        for (int i = 0; i < NSHARE; i++) {
            int k = i % K;
            seq[i] = k;
            a[i] = shared_ctx(numerics), b[i] = shared_ctx(numerics);
            ck_assert_int_eq(hc_ctx_load_buffer(a[i], g_sess[k], g_sess_len[k]), HC_OK);
            ck_assert_int_eq(hc_ctx_load_buffer(b[i], g_sess[k], g_sess_len[k]), HC_OK);
            share_ops(a[i]);
            /* 0..6 more tokens: forty lengths and positions from four sessions */
            int64_t extra = (i * 5) % 7, t0 = g_len[k];
            float *y = malloc(sizeof(float) * (size_t)(extra + 1) * g_D);
            for (int l = 0; extra && l < g_L; l++) {
                ck_assert_int_eq(hc_append(a[i], l, xin(k, l, t0), extra, y), HC_OK);
                ck_assert_int_eq(hc_append(b[i], l, xin(k, l, t0), extra, y), HC_OK);
            }
            free(y);
        }
        int64_t ones[NSHARE];
        for (int i = 0; i < NSHARE; i++) ones[i] = 1;
        g_emu_rows_max = 0;
        compare_shared(a, b, 2, seq, ones, 1, cap);
        compare_shared(a, b, 5, seq, ones, 1, cap);
        compare_shared(a, b, NSHARE, seq, ones, 1, cap);
        compare_shared(a, b, NSHARE, seq, ones, 1, cap);
        if (g_backend == HC_BACKEND_CPU) ck_assert_int_eq(g_emu_rows_max, cap < NSHARE ? cap : NSHARE);
        /* mixed: 40 tokens run in two pieces, alone; 20 share in FAST only */
        static const int64_t mixed[7] = {1, 20, 1, 3, 40, 2, 1};
        compare_shared(a, b, 7, seq, mixed, 0, cap);
        /* more rows than one launch takes: 5 x 20 (FAST: 60 + 40; EXACT: alone), 5 x 5 (EXACT:
         * 15 + 10; FAST: 25) */
        static const int64_t twenty[5] = {20, 20, 20, 20, 20}, five[5] = {5, 5, 5, 5, 5};
        compare_shared(a, b, 5, seq, twenty, 0, cap);
        compare_shared(a + 5, b + 5, 5, seq + 5, five, 0, cap);
        /* a stop by context 3's callback in a shared decode: every context as it was */
        {
            step s = make_step(5, a, seq, ones);
            float *x = alloc_rows(&s), *y = alloc_rows(&s);
            pack(&s, 0, x);
            snap s0 = take(a, 5);
            watch w = {.stop_at = 1, .monotone = 1};
            ck_assert_int_eq(hc_ctx_set_progress(a[3], on_progress, &w), HC_OK);
            ck_assert_int_eq(hc_decode_batch(a, 5, 0, x, y), HC_ERR_ABORTED);
            ck_assert_int_eq(w.calls, 1);
            assert_detail(a, 5, "context 3: layer 0: stopped by the progress callback", "shared stop");
            assert_unchanged(a, 5, &s0, "shared stop");
            ck_assert_int_eq(hc_ctx_set_progress(a[3], NULL, NULL), HC_OK);
            free(x), free(y);
        }
        compare_shared(a, b, NSHARE, seq, ones, 1, cap);
        emu_release(); /* before the backends go */
        for (int i = 0; i < NSHARE; i++) hc_ctx_free(a[i]), hc_ctx_free(b[i]);
    }
}
END_TEST

static int fault_share_out(hci_backend *be, int layer, int n, const int64_t *pos, const hci_share_ws *ws)
{
    (void)layer, (void)n, (void)pos, (void)ws;
    return hci_errf(be->err, be->errsz, HC_ERR_CUDA, "injected failure of share_out");
}

/* A device fault in a shared launch poisons every context of the batch, the ones running alone
 * too; the lead is named. */
START_TEST(shared_fault_poisons_the_batch)
{
    hc_ctx *a[K];
    static hci_backend_ops faulty;
    for (int i = 0; i < K; i++) {
        a[i] = fresh(i);
        share_ops(a[i]);
        a[i]->be->ops_may_fail = 0;
    }
    faulty = *a[0]->be->ops;
    faulty.share_out = fault_share_out;
    for (int i = 0; i < 3; i++) a[i]->be->ops = &faulty; /* context 3 keeps the other table: alone */
    static const int64_t ones[K] = {1, 1, 1, 1};
    step s = make_step(K, a, seq_id, ones);
    float *x = alloc_rows(&s), *y = alloc_rows(&s);
    pack(&s, 0, x);
    uint64_t shared0 = a[3]->shared_pieces;
    ck_assert_int_eq(hc_decode_batch(a, K, 0, x, y), HC_ERR_CUDA);
    assert_detail(a, K, "context 0: injected failure of share_out", "shared fault");
    ck_assert(a[3]->shared_pieces == shared0);
    for (int i = 0; i < K; i++) ck_assert_int_eq(hc_decode(a[i], 0, x, y), HC_ERR_BAD_STATE);
    free(x), free(y);
    emu_release();
    for (int i = 0; i < K; i++) hc_ctx_free(a[i]);
}
END_TEST

Suite *tu_suite(int argc, char **argv)
{
    (void)argc, (void)argv;
    const char *b = getenv("HC_TEST_BACKEND");
    if (b && !strcmp(b, "cuda")) {
        int32_t n = 0;
        hc_cuda_device_count(&n);
        if (n == 0) {
            printf("batch: no CUDA device, skipped\n");
            return NULL;
        }
    }
    Suite *s = suite_create("batch");
    TCase *tc = tcase_create("batch");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 900);
    tcase_add_test(tc, decode_batch_bitwise);
    tcase_add_test(tc, numerics_modes);
    tcase_add_test(tc, append_batch_ragged);
    tcase_add_test(tc, batch_order_and_one);
    tcase_add_test(tc, refusals_change_nothing);
    tcase_add_test(tc, mid_batch_failure_rolls_back);
    tcase_add_test(tc, device_fault_poisons_the_batch);
    tcase_add_test(tc, append_progress_and_abort);
    tcase_add_test(tc, batch_abort);
    tcase_add_test(tc, set_stream);
    tcase_add_test(tc, device_memory_batch);
    tcase_add_test(tc, shared_batches);
    tcase_add_test(tc, shared_fault_poisons_the_batch);
    suite_add_tcase(s, tc);
    return s;
}
