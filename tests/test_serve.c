/* test_serve.c - forks, bounded rollback and the memory report through the public API (issue 12).
 *
 * Every comparison is bitwise, against contexts that computed their sequences themselves: the
 * layer outputs, and the context's whole state as its session bytes (tsu_digest: window,
 * compressed entries, indexer keys, used compressor state rows). The micro model has a window
 * layer, a ratio-4 layer and a ratio-128 layer, window 128. The "cuda" case runs every test on
 * the CUDA backend (references computed on CUDA too) where a device exists, in EXACT numerics:
 * the references take other chunkings, and FAST (the default on CUDA) gives a token's projections
 * other bits in a piece of up to 64 tokens than in a larger one (docs/numerics.md). */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include "hybridctx.h"
#include "runner.h"
#include "test_session_util.h"
#include "testutil.h"

#define NT 1100

static hc_model *g_m;
static int g_backend = HC_BACKEND_CPU;
static int g_layers, g_dim;
static float *g_x, *g_z; /* two sequences [layer][NT][dim] */
static float *g_ref;     /* outputs of x over [0, NT) */

static size_t at(int layer, int64_t t) { return ((size_t)layer * NT + (size_t)t) * (size_t)g_dim; }
static float *new_y(void) { return calloc((size_t)g_layers * NT * g_dim, sizeof(float)); }

static hc_ctx *make(int64_t R, int fmt, int threads, int max_chunk)
{
    hc_ctx_params p;
    hc_ctx_params_init(&p, sizeof p);
    p.backend = g_backend;
    p.n_threads = threads;
    p.cache_format = fmt;
    p.max_chunk = max_chunk;
    p.max_rollback = R;
    p.numerics = HC_NUMERICS_EXACT; /* forks with params keep it (HC_NUMERICS_DEFAULT: as the source) */
    hc_ctx *c = NULL;
    ck_assert_int_eq(hc_ctx_create(g_m, &p, &c), HC_OK);
    return c;
}

/* Tokens [t0, t1) of x through every layer, in chunks of `step` tokens (0: one chunk). */
static void run_steps(hc_ctx *c, const float *x, int64_t t0, int64_t t1, int64_t step, float *y)
{
    ck_assert_int_eq(hc_ctx_n_tokens(c), t0);
    for (int64_t t = t0; t < t1;) {
        int64_t n = step && step < t1 - t ? step : t1 - t;
        for (int l = 0; l < g_layers; l++)
            ck_assert_msg(hc_append(c, l, x + at(l, t), n, y + at(l, t)) == HC_OK, "append at %lld: %s", (long long)t,
                          hc_ctx_last_error(c));
        t += n;
    }
    ck_assert_int_eq(hc_ctx_n_tokens(c), t1);
}
static void run(hc_ctx *c, const float *x, int64_t t0, int64_t t1, float *y) { run_steps(c, x, t0, t1, 0, y); }

static void assert_same_y(const float *a, const float *b, int64_t t0, int64_t t1, const char *what)
{
    for (int l = 0; l < g_layers; l++)
        ck_assert_msg(memcmp(a + at(l, t0), b + at(l, t0), sizeof(float) * (size_t)(t1 - t0) * g_dim) == 0,
                      "%s: layer %d outputs of [%lld, %lld) differ", what, l, (long long)t0, (long long)t1);
}

/* A context that computed x[0, n) (and z[n, n2) when n2 > n) itself. */
static hc_ctx *reference(int64_t n, int64_t n2, int fmt)
{
    hc_ctx *c = make(0, fmt, 2, 0);
    float *y = new_y();
    run(c, g_x, 0, n, y);
    if (n2 > n) run(c, g_z, n, n2, y);
    free(y);
    return c;
}

static void setup_backend(void)
{
    g_m = tsu_model(tsu_micro_json, 5, 0);
    g_layers = hc_model_n_layers(g_m);
    g_dim = hc_model_dim(g_m);
    g_x = malloc(sizeof(float) * (size_t)g_layers * NT * g_dim);
    g_z = malloc(sizeof(float) * (size_t)g_layers * NT * g_dim);
    tu_fill_normal(g_x, (size_t)g_layers * NT * g_dim, 21, 1.0f);
    tu_fill_normal(g_z, (size_t)g_layers * NT * g_dim, 22, 1.0f);
    g_ref = new_y();
    hc_ctx *c = make(0, HC_CACHE_FP8, 2, 0);
    run(c, g_x, 0, NT, g_ref);
    hc_ctx_free(c);
}

static void setup(void)
{
    g_backend = HC_BACKEND_CPU;
    setup_backend();
}

static void setup_cuda(void)
{
    g_backend = HC_BACKEND_CUDA;
    setup_backend();
}

static void teardown(void)
{
    hc_model_free(g_m);
    free(g_x), free(g_z), free(g_ref);
}

static hc_ctx_memory_info mem(const hc_ctx *c)
{
    hc_ctx_memory_info mi;
    memset(&mi, 0xa5, sizeof mi);
    mi.struct_size = sizeof mi;
    ck_assert_int_eq(hc_ctx_memory_info_get(c, &mi), HC_OK);
    ck_assert_uint_eq(mi.own_bytes + mi.shared_bytes, hc_ctx_memory_bytes(c));
    return mi;
}

/* ---- forks ---- */

/* A fork and its source each continue bitwise like contexts that computed everything; the fork
 * may use other threads and pieces. Then the fork goes first, or the source. */
START_TEST(fork_continues_bitwise)
{
    for (int src_first = 0; src_first < 2; src_first++) {
        const int64_t T1 = 301, T2 = 520;
        float *ya = new_y(), *yf = new_y(), *tmp = new_y();
        hc_ctx *a = make(0, HC_CACHE_FP8, 2, 0);
        run(a, g_x, 0, T1, tmp);
        ck_assert_int_eq(hc_ctx_set_metadata(a, "tokens", 6), HC_OK);
        uint64_t d_a = tsu_digest(a);
        hc_ctx_params p;
        hc_ctx_params_init(&p, sizeof p);
        p.n_threads = 1;
        p.max_chunk = 7;
        hc_ctx *f = NULL;
        ck_assert_int_eq(hc_ctx_fork(a, src_first ? NULL : &p, &f), HC_OK);
        ck_assert_ptr_nonnull(f);
        ck_assert_int_eq(hc_ctx_n_tokens(f), T1);
        ck_assert_int_eq(hc_ctx_backend(f), g_backend);
        const void *md;
        uint64_t ml;
        ck_assert_int_eq(hc_ctx_get_metadata(f, &md, &ml), HC_OK);
        ck_assert(ml == 6 && memcmp(md, "tokens", 6) == 0);
        ck_assert_uint_eq(tsu_digest(f), d_a);
        ck_assert_uint_eq(tsu_digest(a), d_a);
        /* the source continues with x, the fork with z; each in its own chunking */
        run_steps(a, g_x, T1, T2, 64, ya);
        run_steps(f, g_z, T1, T1 + 3, 1, yf);
        run(f, g_z, T1 + 3, T2, yf);
        assert_same_y(ya, g_ref, T1, T2, "source");
        hc_ctx *rz = reference(T1, T2, HC_CACHE_BF16);
        ck_assert_int_eq(hc_ctx_set_metadata(rz, "tokens", 6), HC_OK); /* the metadata is part of the session */
        float *yz = new_y();
        hc_ctx *rz2 = make(0, HC_CACHE_FP8, 2, 0);
        run(rz2, g_x, 0, T1, tmp), run(rz2, g_z, T1, T2, yz);
        assert_same_y(yf, yz, T1, T2, "fork");
        ck_assert_uint_eq(tsu_digest(f), tsu_digest(rz));
        hc_ctx *rx = reference(T2, T2, HC_CACHE_FP8);
        ck_assert_int_eq(hc_ctx_set_metadata(rx, "tokens", 6), HC_OK);
        ck_assert_uint_eq(tsu_digest(a), tsu_digest(rx));
        /* one of them goes; the other goes on */
        hc_ctx *keep = src_first ? f : a;
        hc_ctx_free(src_first ? a : f);
        const float *xs = src_first ? g_z : g_x;
        hc_ctx *ref = src_first ? rz : rx;
        float *yk = new_y(), *yr = new_y();
        run(keep, xs, T2, T2 + 140, yk);
        run(ref, xs, T2, T2 + 140, yr);
        assert_same_y(yk, yr, T2, T2 + 140, "after the other was freed");
        ck_assert_uint_eq(tsu_digest(keep), tsu_digest(ref));
        hc_ctx_free(keep), hc_ctx_free(rz), hc_ctx_free(rz2), hc_ctx_free(rx);
        free(ya), free(yf), free(tmp), free(yz), free(yk), free(yr);
    }
}
END_TEST

/* A fork of a fork, several forks of one source, and a fork saved and loaded elsewhere. */
START_TEST(fork_of_fork_and_sessions)
{
    float *y = new_y(), *tmp = new_y();
    hc_ctx *a = make(0, HC_CACHE_FP8, 2, 0);
    run(a, g_x, 0, 200, tmp);
    hc_ctx *f1 = NULL, *f2 = NULL, *f3 = NULL;
    ck_assert_int_eq(hc_ctx_fork(a, NULL, &f1), HC_OK);
    ck_assert_int_eq(hc_ctx_fork(a, NULL, &f3), HC_OK);
    run(f1, g_x, 200, 390, tmp); /* f1 takes x on */
    ck_assert_int_eq(hc_ctx_fork(f1, NULL, &f2), HC_OK);
    hc_ctx_free(f1); /* the middle generation goes first */
    run(f2, g_x, 390, 700, y);
    assert_same_y(y, g_ref, 390, 700, "fork of a fork");
    hc_ctx *r = reference(700, 700, HC_CACHE_FP8);
    ck_assert_uint_eq(tsu_digest(f2), tsu_digest(r));
    hc_ctx_free(r);
    /* the source and its other fork never saw any of that */
    hc_ctx *r200 = reference(200, 200, HC_CACHE_FP8);
    ck_assert_uint_eq(tsu_digest(a), tsu_digest(r200));
    ck_assert_uint_eq(tsu_digest(f3), tsu_digest(r200));
    /* a fork saved and loaded into a context of the other format continues as the reference */
    run(f3, g_z, 200, 333, tmp);
    uint64_t len;
    uint8_t *buf = tsu_save(f3, HC_COMPRESS_NONE, &len);
    hc_ctx *l = make(0, HC_CACHE_BF16, 2, 0);
    ck_assert_int_eq(hc_ctx_load_buffer(l, buf, len), HC_OK);
    hc_ctx *rz = reference(200, 333, HC_CACHE_FP8);
    float *yl = new_y(), *yr = new_y();
    run(l, g_z, 333, 500, yl);
    run(rz, g_z, 333, 500, yr);
    assert_same_y(yl, yr, 333, 500, "fork saved and loaded");
    /* and the source saved after its forks are gone */
    hc_ctx_free(f3), hc_ctx_free(f2);
    ck_assert_uint_eq(tsu_digest(a), tsu_digest(r200));
    hc_ctx_free(a), hc_ctx_free(l), hc_ctx_free(rz), hc_ctx_free(r200);
    free(buf), free(y), free(tmp), free(yl), free(yr);
}
END_TEST

/* Refused forks: src is unchanged, *out NULL, the reason in p->errbuf and the last error. */
START_TEST(fork_refusals)
{
    float *y = new_y();
    hc_ctx *a = make(32, HC_CACHE_FP8, 2, 0);
    run(a, g_x, 0, 150, y);
    uint64_t d = tsu_digest(a);
    ck_assert_int_eq(hc_ctx_truncate_limit(a), 118);
    char msg[256];
    hc_ctx_params p;
    hc_ctx *f = (hc_ctx *)&p;
    ck_assert_int_eq(hc_ctx_fork(NULL, NULL, &f), HC_ERR_NULL_ARG);
    ck_assert_ptr_null(f);
    ck_assert_int_eq(hc_ctx_fork(a, NULL, NULL), HC_ERR_NULL_ARG);
    struct {
        int field;
        hc_status want;
        const char *text;
    } cases[] = {
        {0, HC_ERR_INVALID_ARG, "backend"},   {1, HC_ERR_INVALID_ARG, "cache format"},
        {2, HC_ERR_POSITION, "max_tokens"},   {3, HC_ERR_INVALID_ARG, "out of range"},
        {4, HC_ERR_INVALID_ARG, "out of range"}, {5, HC_ERR_INVALID_ARG, "device-memory"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        hc_ctx_params_init(&p, sizeof p);
        p.errbuf = msg, p.errbuf_size = sizeof msg;
        msg[0] = 0;
        switch (cases[i].field) {
        case 0: p.backend = g_backend == HC_BACKEND_CPU ? HC_BACKEND_CUDA : HC_BACKEND_CPU; break;
        case 1: p.cache_format = HC_CACHE_BF16; break;
        case 2: p.max_tokens = 149; break;
        case 3: p.max_rollback = -1; break;
        case 4: p.flags = 1; break;
        case 5: p.io_memory = HC_MEM_DEVICE; break;
        }
        if (cases[i].field == 5 && g_backend == HC_BACKEND_CUDA) continue; /* device I/O is fine there */
        f = (hc_ctx *)&p;
        ck_assert_int_eq(hc_ctx_fork(a, &p, &f), cases[i].want);
        ck_assert_ptr_null(f);
        ck_assert_msg(strstr(msg, cases[i].text) != NULL, "case %zu: errbuf \"%s\"", i, msg);
        ck_assert_msg(strstr(hc_ctx_last_error(a), cases[i].text) != NULL, "case %zu: last error", i);
    }
    /* a newer caller's struct with a non-zero unknown tail */
    unsigned char big[sizeof(hc_ctx_params) + 8] = {0};
    hc_ctx_params_init((hc_ctx_params *)big, sizeof big);
    big[sizeof(hc_ctx_params) + 1] = 1;
    ck_assert_int_eq(hc_ctx_fork(a, (hc_ctx_params *)big, &f), HC_ERR_UNSUPPORTED);
    big[sizeof(hc_ctx_params) + 1] = 0;
    ck_assert_int_eq(hc_ctx_fork(a, (hc_ctx_params *)big, &f), HC_OK);
    hc_ctx_free(f);
    /* the same backend and format, named: accepted */
    hc_ctx_params_init(&p, sizeof p);
    p.backend = g_backend, p.cache_format = HC_CACHE_FP8, p.max_tokens = 150;
    ck_assert_int_eq(hc_ctx_fork(a, &p, &f), HC_OK);
    ck_assert_int_eq(hc_append(f, 0, g_x, 1, y), HC_ERR_POSITION);
    hc_ctx_free(f);
    /* a chunk in progress */
    ck_assert_int_eq(hc_append(a, 0, g_x + at(0, 150), 20, y + at(0, 150)), HC_OK);
    hc_ctx_params_init(&p, sizeof p);
    p.errbuf = msg, p.errbuf_size = sizeof msg;
    ck_assert_int_eq(hc_ctx_fork(a, &p, &f), HC_ERR_ORDER);
    ck_assert_ptr_null(f);
    ck_assert_ptr_nonnull(strstr(msg, "chunk in progress"));
    ck_assert_int_eq(hc_ctx_fork(a, NULL, &f), HC_ERR_ORDER);
    ck_assert_int_eq(hc_ctx_next_layer(a), 1);
    for (int l = 1; l < g_layers; l++) ck_assert_int_eq(hc_append(a, l, g_x + at(l, 150), 20, y + at(l, 150)), HC_OK);
    assert_same_y(y, g_ref, 0, 170, "after refused forks");
    ck_assert_int_eq(hc_ctx_truncate(a, 150), HC_OK);
    ck_assert_uint_eq(tsu_digest(a), d);
    ck_assert_int_eq(hc_ctx_truncate_limit(a), 138);
    hc_ctx_free(a);
    free(y);
}
END_TEST

/* memory_info: a fork holds its ring and states, everything else shared; appending unshares only
 * what it writes; the history is reported apart, and sized by the formula of the header. */
START_TEST(memory_info_shows_sharing)
{
    float *y = new_y();
    hc_ctx *e = make(0, HC_CACHE_FP8, 2, 0);
    hc_ctx_memory_info me = mem(e);
    ck_assert_uint_eq(me.shared_bytes, 0);
    ck_assert_uint_eq(me.history_bytes, 0);
    ck_assert_uint_gt(me.workspace_bytes, 0);
    uint64_t fixed = me.own_bytes; /* ring and states */
    hc_ctx *a = make(0, HC_CACHE_FP8, 2, 0);
    run(a, g_x, 0, 1000, y);
    hc_ctx_memory_info ma = mem(a);
    ck_assert_uint_eq(ma.shared_bytes, 0);
    /* the CPU's layer calls keep the one-layer snapshot: part of the workspace from then on */
    if (hc_ctx_backend(a) == HC_BACKEND_CPU) ck_assert_uint_gt(ma.workspace_bytes, me.workspace_bytes);
    uint64_t pages = ma.own_bytes - fixed;
    ck_assert_uint_gt(pages, 0);
    hc_ctx *f = NULL;
    ck_assert_int_eq(hc_ctx_fork(a, NULL, &f), HC_OK);
    hc_ctx_memory_info mf = mem(f);
    ma = mem(a);
    ck_assert_uint_eq(mf.shared_bytes, pages);
    ck_assert_uint_eq(ma.shared_bytes, pages);
    ck_assert_uint_eq(mf.own_bytes, fixed);
    ck_assert_uint_eq(ma.own_bytes, fixed);
    ck_assert_uint_eq(mf.workspace_bytes, me.workspace_bytes);
    /* one decode step of the fork copies the partly filled last pages it writes, nothing else */
    run(f, g_z, 1000, 1004, y);
    mf = mem(f);
    ck_assert_uint_gt(mf.own_bytes, fixed);
    ck_assert_uint_lt(mf.own_bytes - fixed, pages / 4);
    ck_assert_uint_gt(mf.shared_bytes, 0);
    hc_ctx_free(a);
    mf = mem(f);
    ck_assert_uint_eq(mf.shared_bytes, 0);
    /* a smaller struct gets its prefix only */
    struct {
        hc_ctx_memory_info mi;
        uint64_t canary;
    } small;
    memset(&small, 0x5a, sizeof small);
    small.mi.struct_size = (uint32_t)offsetof(hc_ctx_memory_info, history_bytes);
    ck_assert_int_eq(hc_ctx_memory_info_get(f, &small.mi), HC_OK);
    ck_assert_uint_eq(small.mi.own_bytes, mf.own_bytes);
    ck_assert_uint_eq(small.mi.history_bytes, 0x5a5a5a5a5a5a5a5aull);
    small.mi.struct_size = 2;
    ck_assert_int_eq(hc_ctx_memory_info_get(f, &small.mi), HC_ERR_INVALID_ARG);
    ck_assert_int_eq(hc_ctx_memory_info_get(NULL, &small.mi), HC_ERR_NULL_ARG);
    ck_assert_int_eq(hc_ctx_memory_info_get(f, NULL), HC_ERR_NULL_ARG);
    /* the history: per layer roundup(R, 64) window entries and R + coff*m - 1 rows a compressor
     * (micro: head_dim = index_head_dim = 128, fp8 window entry 64 + 128 + 8 = 200 bytes) */
    for (int fmt = HC_CACHE_BF16; fmt <= HC_CACHE_FP8; fmt++) {
        hc_ctx *h = make(100, fmt, 1, 0);
        uint64_t E = fmt == HC_CACHE_FP8 ? 200 : 256;
        uint64_t want = 3 * 128 * E + (100 + 7) * 16 * (128 + 128) + (100 + 127) * 8 * 128;
        ck_assert_uint_eq(mem(h).history_bytes, want);
        ck_assert_uint_eq(hc_ctx_memory_bytes(h), fixed + (fmt == HC_CACHE_BF16 ? 3 * 128 * 56 : 0));
        hc_ctx_free(h);
    }
    hc_ctx_free(f), hc_ctx_free(e);
    free(y);
}
END_TEST

/* ---- rollback ---- */

/* Round trips: at lengths around multiples of 4 and 128 and across the window's wrap, k tokens of
 * another sequence go in and are taken back again; right after, the state equals the
 * reference's at that length, and the outputs that follow equal the reference's. */
static void round_trips(int fmt, int max_chunk, int64_t R)
{
    static const int64_t stops[] = {0,   1,   3,   4,   5,   7,   8,   63,  64,  65,  127, 128, 129, 131, 132,
                                    133, 255, 256, 257, 259, 260, 261, 383, 384, 385, 511, 512, 513, 640, 700};
    static const int64_t backs[] = {1, 2, 3, 4, 5, 7, 8, 9, 63, 64, 65, 127, 128, 129, 130, 200};
    const int nstops = sizeof stops / sizeof stops[0], nbacks = sizeof backs / sizeof backs[0];
    hc_ctx *c = make(R, fmt, 2, max_chunk), *r = make(0, fmt, 2, 0);
    float *y = new_y(), *yr = new_y(), *junk = new_y();
    int64_t hist_from = 0; /* the library's rule, modelled */
    for (int i = 0; i < nstops; i++) {
        int64_t L = stops[i], k = backs[(i * 7) % nbacks];
        if (k > R) k = R;
        int64_t cur = hc_ctx_n_tokens(c);
        /* x up to L: decode steps now and then */
        run_steps(c, g_x, cur, L, i % 3 == 0 ? 1 : 0, y);
        run(r, g_x, cur, L, yr);
        /* k tokens of z, then taken back: in one go, or in two steps */
        run_steps(c, g_z, L, L + k, i % 4 == 1 ? 1 : i % 4 == 2 ? 5 : 0, junk);
        int64_t lim = L + k - R > hist_from ? L + k - R : hist_from;
        ck_assert_int_eq(hc_ctx_truncate_limit(c), lim);
        if (k > 2 && i % 2) {
            ck_assert_msg(hc_ctx_truncate(c, L + k / 2) == HC_OK, "%s", hc_ctx_last_error(c));
            ck_assert_int_eq(hc_ctx_truncate_limit(c), lim);
        }
        ck_assert_msg(hc_ctx_truncate(c, L) == HC_OK, "L %lld k %lld: %s", (long long)L, (long long)k,
                      hc_ctx_last_error(c));
        hist_from = lim;
        ck_assert_int_eq(hc_ctx_n_tokens(c), L);
        ck_assert_int_eq(hc_ctx_truncate_limit(c), lim);
        ck_assert_msg(tsu_digest(c) == tsu_digest(r), "fmt %d: state after taking %lld back to %lld", fmt, (long long)k,
                      (long long)L);
    }
    int64_t end = stops[nstops - 1] + 150;
    run_steps(c, g_x, stops[nstops - 1], end, 50, y);
    run(r, g_x, stops[nstops - 1], end, yr);
    assert_same_y(y, g_ref, 0, end, "outputs after round trips");
    assert_same_y(yr, g_ref, 0, end, "reference");
    ck_assert_uint_eq(tsu_digest(c), tsu_digest(r));
    hc_ctx_free(c), hc_ctx_free(r);
    free(y), free(yr), free(junk);
}

START_TEST(truncate_round_trips_fp8) { round_trips(HC_CACHE_FP8, 0, 200); }
END_TEST
START_TEST(truncate_round_trips_bf16_pieces) { round_trips(HC_CACHE_BF16, 7, 130); }
END_TEST

/* The deepest truncation, R tokens, from every phase of the ratio-128 block and the window: a
 * sequence decoded token by token, taken back R at each stop and redone. */
START_TEST(truncate_full_depth)
{
    const int64_t R = 9;
    hc_ctx *c = make(R, HC_CACHE_FP8, 2, 0), *r = make(0, HC_CACHE_FP8, 2, 0);
    float *y = new_y(), *yr = new_y();
    run(c, g_x, 0, 120, y), run(r, g_x, 0, 120, yr);
    for (int64_t L = 120; L < 400; L += 3) {
        run_steps(c, g_x, L, L + 3, 1, y);
        run(r, g_x, L, L + 3, yr);
        if (L < R || (L - 120) % 12) continue;
        int64_t n = L + 3, back = n - R;
        ck_assert_int_eq(hc_ctx_truncate_limit(c), back);
        ck_assert_int_eq(hc_ctx_truncate(c, back - 1), HC_ERR_LIMIT);
        ck_assert_msg(hc_ctx_truncate(c, back) == HC_OK, "%s", hc_ctx_last_error(c));
        run_steps(c, g_x, back, n, 2, y); /* the same tokens again: the same outputs */
        ck_assert_int_eq(hc_ctx_truncate_limit(c), back);
    }
    assert_same_y(y, yr, 0, 402, "redone");
    assert_same_y(y, g_ref, 0, 402, "redone vs reference");
    ck_assert_uint_eq(tsu_digest(c), tsu_digest(r));
    hc_ctx_free(c), hc_ctx_free(r);
    free(y), free(yr);
}
END_TEST

/* Every refusal leaves the context as it was: its state bytes, its limit, its next outputs. */
START_TEST(truncate_refusals)
{
    float *y = new_y();
    hc_ctx *c = make(16, HC_CACHE_FP8, 2, 0);
    run(c, g_x, 0, 100, y);
    uint64_t d = tsu_digest(c);
    ck_assert_int_eq(hc_ctx_truncate_limit(c), 84);
    ck_assert_int_eq(hc_ctx_truncate_limit(NULL), -1);
    ck_assert_int_eq(hc_ctx_truncate(NULL, 90), HC_ERR_NULL_ARG);
    ck_assert_int_eq(hc_ctx_truncate(c, 83), HC_ERR_LIMIT);
    ck_assert_ptr_nonnull(strstr(hc_ctx_last_error(c), "further back"));
    ck_assert_int_eq(hc_ctx_truncate(c, 0), HC_ERR_LIMIT);
    ck_assert_int_eq(hc_ctx_truncate(c, -1), HC_ERR_INVALID_ARG);
    ck_assert_int_eq(hc_ctx_truncate(c, 101), HC_ERR_INVALID_ARG);
    ck_assert_int_eq(hc_ctx_truncate(c, INT64_MAX), HC_ERR_INVALID_ARG);
    ck_assert_uint_eq(tsu_digest(c), d);
    ck_assert_int_eq(hc_ctx_truncate(c, 100), HC_OK); /* the current length: nothing to do */
    ck_assert_str_eq(hc_ctx_last_error(c), "");
    ck_assert_uint_eq(tsu_digest(c), d);
    /* mid-chunk: refused, the limit of the length before the chunk, the chunk goes on */
    ck_assert_int_eq(hc_append(c, 0, g_x + at(0, 100), 30, y + at(0, 100)), HC_OK);
    ck_assert_int_eq(hc_ctx_truncate(c, 90), HC_ERR_ORDER);
    ck_assert_int_eq(hc_ctx_truncate(c, 100), HC_ERR_ORDER);
    ck_assert_int_eq(hc_ctx_truncate_limit(c), 84);
    for (int l = 1; l < g_layers; l++) ck_assert_int_eq(hc_append(c, l, g_x + at(l, 100), 30, y + at(l, 100)), HC_OK);
    assert_same_y(y, g_ref, 0, 130, "after refusals");
    ck_assert_int_eq(hc_ctx_truncate_limit(c), 114);
    /* a truncation keeps the limit until the length passes the old one */
    ck_assert_int_eq(hc_ctx_truncate(c, 120), HC_OK);
    ck_assert_int_eq(hc_ctx_truncate_limit(c), 114);
    ck_assert_int_eq(hc_ctx_truncate(c, 113), HC_ERR_LIMIT);
    run(c, g_x, 120, 128, y);
    ck_assert_int_eq(hc_ctx_truncate_limit(c), 114);
    run(c, g_x, 128, 140, y);
    ck_assert_int_eq(hc_ctx_truncate_limit(c), 124);
    assert_same_y(y, g_ref, 0, 140, "after a truncation");
    /* a reset starts the history again */
    ck_assert_int_eq(hc_ctx_reset(c), HC_OK);
    ck_assert_int_eq(hc_ctx_truncate_limit(c), 0);
    run(c, g_x, 0, 10, y);
    ck_assert_int_eq(hc_ctx_truncate_limit(c), 0);
    ck_assert_int_eq(hc_ctx_truncate(c, 0), HC_OK);
    hc_ctx *e = make(0, HC_CACHE_FP8, 1, 0);
    ck_assert_uint_eq(tsu_digest(c), tsu_digest(e));
    hc_ctx_free(e), hc_ctx_free(c);

    /* max_rollback 0: every truncation refused, the current length accepted */
    c = make(0, HC_CACHE_FP8, 2, 0);
    run(c, g_x, 0, 50, y);
    d = tsu_digest(c);
    ck_assert_int_eq(hc_ctx_truncate_limit(c), 50);
    ck_assert_int_eq(hc_ctx_truncate(c, 49), HC_ERR_LIMIT);
    ck_assert_ptr_nonnull(strstr(hc_ctx_last_error(c), "max_rollback"));
    ck_assert_int_eq(hc_ctx_truncate(c, 0), HC_ERR_LIMIT);
    ck_assert_int_eq(hc_ctx_truncate(c, 50), HC_OK);
    ck_assert_uint_eq(tsu_digest(c), d);
    ck_assert_uint_eq(mem(c).history_bytes, 0);
    hc_ctx_free(c);

    /* the range of max_rollback */
    hc_ctx_params p;
    hc_ctx_params_init(&p, sizeof p);
    p.backend = HC_BACKEND_CPU;
    p.max_rollback = 65537;
    ck_assert_int_eq(hc_ctx_create(g_m, &p, &c), HC_ERR_INVALID_ARG);
    p.max_rollback = -3;
    ck_assert_int_eq(hc_ctx_create(g_m, &p, &c), HC_ERR_INVALID_ARG);
    free(y);
}
END_TEST

/* Sessions hold no history: a loaded context's limit is its length, and a truncation reaches
 * back to the loaded length, no further. A context filled before a truncation saves the same
 * session as one that never took the discarded tokens. */
START_TEST(truncate_after_load)
{
    float *y = new_y(), *yr = new_y();
    hc_ctx *a = make(32, HC_CACHE_FP8, 2, 0);
    run(a, g_x, 0, 260, y);
    run(a, g_z, 260, 270, y);
    ck_assert_int_eq(hc_ctx_truncate(a, 260), HC_OK);
    uint64_t len;
    uint8_t *buf = tsu_save(a, HC_COMPRESS_NONE, &len);
    hc_ctx *r = reference(260, 260, HC_CACHE_FP8);
    uint64_t rlen;
    uint8_t *rbuf = tsu_save(r, HC_COMPRESS_NONE, &rlen);
    uint64_t where;
    ck_assert_msg(tsu_same_session(buf, len, rbuf, rlen, &where), "sessions differ at %llu", (unsigned long long)where);
    hc_ctx *l = make(32, HC_CACHE_BF16, 2, 0);
    run(l, g_z, 0, 40, y); /* something to replace */
    ck_assert_int_eq(hc_ctx_load_buffer(l, buf, len), HC_OK);
    ck_assert_int_eq(hc_ctx_n_tokens(l), 260);
    ck_assert_int_eq(hc_ctx_truncate_limit(l), 260);
    ck_assert_int_eq(hc_ctx_truncate(l, 259), HC_ERR_LIMIT);
    ck_assert_ptr_nonnull(strstr(hc_ctx_last_error(l), "history started later"));
    run(l, g_z, 260, 275, y);
    ck_assert_int_eq(hc_ctx_truncate_limit(l), 260);
    ck_assert_int_eq(hc_ctx_truncate(l, 260), HC_OK);
    ck_assert_uint_eq(tsu_digest(l), tsu_digest(r));
    run(l, g_x, 260, 400, y);
    ck_assert_int_eq(hc_ctx_truncate_limit(l), 368);
    run(r, g_x, 260, 400, yr);
    assert_same_y(y, yr, 260, 400, "loaded, truncated");
    assert_same_y(y, g_ref, 260, 400, "loaded, truncated vs reference");
    ck_assert_int_eq(hc_ctx_truncate(l, 368), HC_OK);
    hc_ctx_free(a), hc_ctx_free(l), hc_ctx_free(r);
    free(buf), free(rbuf), free(y), free(yr);
}
END_TEST

/* Forks carry the history: a fork truncates back past the fork point, with its source's limit
 * (same R), its own R (smaller), or its source's reach (larger R); the source is untouched. */
START_TEST(fork_and_truncate)
{
    float *y = new_y(), *yf = new_y();
    hc_ctx *a = make(40, HC_CACHE_FP8, 2, 0);
    run(a, g_x, 0, 250, y);
    run(a, g_z, 250, 262, y); /* 12 tokens to take back */
    uint64_t da = tsu_digest(a);
    hc_ctx *r = reference(250, 250, HC_CACHE_FP8);
    int64_t Rs[] = {40, 5, 100, 0};
    int64_t want_lim[] = {222, 257, 222, 262};
    for (int i = 0; i < 4; i++) {
        hc_ctx_params p;
        hc_ctx_params_init(&p, sizeof p);
        p.max_rollback = Rs[i];
        hc_ctx *f = NULL;
        ck_assert_int_eq(hc_ctx_fork(a, &p, &f), HC_OK);
        ck_assert_int_eq(hc_ctx_truncate_limit(f), want_lim[i]);
        hc_ctx_memory_info mi = mem(f);
        ck_assert_int_eq(mi.history_bytes != 0, Rs[i] != 0);
        if (want_lim[i] <= 250) {
            ck_assert_msg(hc_ctx_truncate(f, 250) == HC_OK, "%s", hc_ctx_last_error(f));
            ck_assert_uint_eq(tsu_digest(f), tsu_digest(r));
            run(f, g_x, 250, 380, yf);
            assert_same_y(yf, g_ref, 250, 380, "fork truncated past the fork point");
            /* and back again within the fork's own history */
            int64_t lim = hc_ctx_truncate_limit(f);
            ck_assert_int_eq(lim, 380 - Rs[i] > want_lim[i] ? 380 - Rs[i] : want_lim[i]);
            ck_assert_int_eq(hc_ctx_truncate(f, lim), HC_OK);
            run(f, g_x, lim, 400, yf);
            assert_same_y(yf, g_ref, lim, 400, "fork truncated again");
        } else {
            ck_assert_int_eq(hc_ctx_truncate(f, 250), HC_ERR_LIMIT);
            ck_assert_int_eq(hc_ctx_truncate(f, want_lim[i]), HC_OK);
        }
        hc_ctx_free(f);
        ck_assert_uint_eq(tsu_digest(a), da);
    }
    /* the source itself, after its forks are gone */
    ck_assert_int_eq(hc_ctx_truncate(a, 250), HC_OK);
    ck_assert_uint_eq(tsu_digest(a), tsu_digest(r));
    hc_ctx_free(a), hc_ctx_free(r);
    free(y), free(yf);
}
END_TEST

/* Stops a call after its last piece, when it has written everything. */
static int stop_at_last(void *user, uint64_t done, uint64_t total)
{
    ++*(int *)user;
    return done >= total;
}

/* c (at L, no chunk in progress) holds the rollback history of x: a fork taken back to the limit
 * is a context that computed x[0, limit) itself. */
static void assert_history_intact(hc_ctx *c, int fmt, const char *what)
{
    hc_ctx *f = NULL;
    ck_assert_msg(hc_ctx_fork(c, NULL, &f) == HC_OK, "%s", hc_ctx_last_error(c));
    int64_t lim = hc_ctx_truncate_limit(f);
    ck_assert_msg(hc_ctx_truncate(f, lim) == HC_OK, "%s", hc_ctx_last_error(f));
    hc_ctx *r = reference(lim, 0, fmt);
    ck_assert_msg(tsu_digest(f) == tsu_digest(r), "%s: state after taking the fork back to %lld", what, (long long)lim);
    hc_ctx_free(f), hc_ctx_free(r);
}

/* Stopped single calls and a batch stopped in a later member (the earlier one already ran) roll
 * the rollback history back with the rest of the layer: a truncation to the limit afterwards
 * still gives a context that computed the shorter sequence itself. */
START_TEST(stops_and_batches_keep_history)
{
    const int64_t R = 64, L = 300, n = 20;
    const int fmt = HC_CACHE_FP8;
    hc_ctx *c = make(R, fmt, 2, 7), *d = make(R, fmt, 2, 7);
    float *y = new_y(), *junk = new_y();
    size_t row = (size_t)g_dim;
    float *bx = calloc(2 * (size_t)n * row, sizeof(float)), *by = calloc(2 * (size_t)n * row, sizeof(float));
    run(c, g_x, 0, L, y);
    /* layer 0 stopped after its last piece */
    int calls = 0;
    ck_assert_int_eq(hc_ctx_set_progress(c, stop_at_last, &calls), HC_OK);
    ck_assert_int_eq(hc_append(c, 0, g_z + at(0, L), n, junk + at(0, L)), HC_ERR_ABORTED);
    ck_assert_int_eq(calls, 3);
    ck_assert_int_eq(hc_ctx_set_progress(c, NULL, NULL), HC_OK);
    ck_assert_int_eq(hc_ctx_truncate_limit(c), L - R);
    assert_history_intact(c, fmt, "stopped call");
    /* layer 0 as a batch {c, d}: d stops after c has run */
    memcpy(bx, g_z + at(0, L), (size_t)n * row * sizeof(float));
    memcpy(bx + (size_t)n * row, g_x + at(0, 0), (size_t)n * row * sizeof(float));
    hc_ctx *pair[2] = {c, d};
    const int64_t ns[2] = {n, n};
    calls = 0;
    ck_assert_int_eq(hc_ctx_set_progress(d, stop_at_last, &calls), HC_OK);
    ck_assert_int_eq(hc_append_batch(pair, 2, 0, bx, ns, by), HC_ERR_ABORTED);
    ck_assert_int_eq(calls, 3);
    ck_assert_int_eq(hc_ctx_set_progress(d, NULL, NULL), HC_OK);
    ck_assert_int_eq(hc_ctx_n_tokens(c), L);
    assert_history_intact(c, fmt, "stopped batch");
    ck_assert_msg(hc_append_batch(pair, 2, 0, bx, ns, by) == HC_OK, "%s", hc_ctx_last_error(c));
    for (int l = 1; l < g_layers; l++)
        ck_assert_msg(hc_append(c, l, g_z + at(l, L), n, junk + at(l, L)) == HC_OK, "%s", hc_ctx_last_error(c));
    ck_assert_int_eq(hc_ctx_n_tokens(c), L + n);
    run_steps(c, g_z, L + n, L + n + 10, 1, junk);
    /* back to the limit: as a context that computed x[0, limit) */
    int64_t lim = L + n + 10 - R;
    ck_assert_int_eq(hc_ctx_truncate_limit(c), lim);
    ck_assert_msg(hc_ctx_truncate(c, lim) == HC_OK, "%s", hc_ctx_last_error(c));
    hc_ctx *r = reference(lim, 0, fmt);
    ck_assert_uint_eq(tsu_digest(c), tsu_digest(r));
    run(c, g_x, lim, L + n + 10, y);
    assert_same_y(y, g_ref, 0, L + n + 10, "after stops, a batch and a truncation");
    hc_ctx_free(c), hc_ctx_free(d), hc_ctx_free(r);
    free(y), free(junk), free(bx), free(by);
}
END_TEST

static void add_tests(TCase *tc)
{
    tcase_set_timeout(tc, 1200);
    tcase_add_test(tc, fork_continues_bitwise);
    tcase_add_test(tc, fork_of_fork_and_sessions);
    tcase_add_test(tc, fork_refusals);
    tcase_add_test(tc, memory_info_shows_sharing);
    tcase_add_test(tc, truncate_round_trips_fp8);
    tcase_add_test(tc, truncate_round_trips_bf16_pieces);
    tcase_add_test(tc, truncate_full_depth);
    tcase_add_test(tc, truncate_refusals);
    tcase_add_test(tc, truncate_after_load);
    tcase_add_test(tc, fork_and_truncate);
    tcase_add_test(tc, stops_and_batches_keep_history);
}

Suite *tu_suite(int argc, char **argv)
{
    (void)argc, (void)argv;
    Suite *s = suite_create("serve");
    TCase *tc = tcase_create("cpu");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    add_tests(tc);
    suite_add_tcase(s, tc);
    int32_t nd = 0;
    if (hc_cuda_device_count(&nd) == HC_OK && nd > 0) {
        TCase *tg = tcase_create("cuda");
        tcase_add_unchecked_fixture(tg, setup_cuda, teardown);
        add_tests(tg);
        suite_add_tcase(s, tg);
    }
    return s;
}
