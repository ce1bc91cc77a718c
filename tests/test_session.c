/* test_session.c - sessions through the public API: bit-exact round trips at the lengths where
 * the window, the ratio-4 and ratio-128 compressors change state, across cache formats, raw
 * and zstd, files and buffers; decoding after a load equals decoding without one; parameters,
 * metadata, size queries, determinism, model/length refusals that leave the context as it was,
 * target-path rules, concurrent saves, and hc_x_ctx_fill_random. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <dirent.h>
#include "hybridctx.h"
#include "hybridctx_experimental.h"
#include "test_session_util.h"
#include "testutil.h"
#include "runner.h"

#define L 3
#define D 128
#define NMAX 4100
static const int64_t checkpoints[] = {0, 1, 3, 4, 5, 127, 128, 129, 300, 4095, 4096, 4097};
#define NCP ((int)(sizeof checkpoints / sizeof checkpoints[0]))

static hc_model *g_model;
static float *g_x, *g_y; /* [layer][NMAX][D] */
static uint8_t *g_sess[NCP], *g_zsess[NCP];
static uint64_t g_len[NCP], g_zlen[NCP];
static char *g_dir;

static const float *xin(int l, int64_t t) { return g_x + ((size_t)l * NMAX + (size_t)t) * D; }
static float *yref(int l, int64_t t) { return g_y + ((size_t)l * NMAX + (size_t)t) * D; }

static void run(hc_ctx *c, int64_t t0, int64_t n, float *y_at /* NULL: reference y */)
{
    for (int l = 0; l < L; l++) {
        float *y = y_at ? y_at + (size_t)l * n * D : yref(l, t0);
        ck_assert_msg(hc_append(c, l, xin(l, t0), n, y) == HC_OK, "append: %s", hc_ctx_last_error(c));
    }
}

/* The reference: one context through NMAX tokens, saved (raw and zstd) at every checkpoint. */
static void setup(void)
{
    g_model = tsu_model(tsu_micro_json, 3, 0);
    g_x = malloc(sizeof(float) * L * NMAX * D);
    g_y = malloc(sizeof(float) * L * NMAX * D);
    tu_fill_normal(g_x, (size_t)L * NMAX * D, 11, 1.0f);
    hc_ctx *c = tsu_ctx(g_model, HC_CACHE_FP8, 0);
    int64_t t = 0;
    for (int i = 0; i < NCP; i++) {
        if (checkpoints[i] > t) run(c, t, checkpoints[i] - t, NULL);
        t = checkpoints[i];
        char meta[32];
        snprintf(meta, sizeof meta, "tokens=%lld", (long long)t);
        ck_assert_int_eq(hc_ctx_set_metadata(c, meta, strlen(meta)), HC_OK);
        g_sess[i] = tsu_save(c, HC_COMPRESS_NONE, &g_len[i]);
        g_zsess[i] = tsu_save(c, HC_COMPRESS_ZSTD, &g_zlen[i]);
    }
    run(c, t, NMAX - t, NULL);
    hc_ctx_free(c);
    g_dir = tu_tempdir();
}

static void teardown(void)
{
    for (int i = 0; i < NCP; i++) free(g_sess[i]), free(g_zsess[i]);
    free(g_x), free(g_y);
    hc_model_free(g_model);
    tu_rmtree(g_dir);
    free(g_dir);
}

static void assert_same_session(const uint8_t *a, uint64_t na, const uint8_t *b, uint64_t nb, const char *what)
{
    uint64_t where;
    ck_assert_msg(tsu_same_session(a, na, b, nb, &where), "%s: sessions differ (%llu vs %llu bytes, first at %llu)",
                  what, (unsigned long long)na, (unsigned long long)nb, (unsigned long long)where);
}

/* Decoding 3 tokens after a load gives the reference outputs bit for bit. */
static void check_continues(hc_ctx *c, int64_t n, const char *what)
{
    float y[L * D];
    for (int64_t t = n; t < n + 3; t++) {
        run(c, t, 1, y);
        for (int l = 0; l < L; l++)
            ck_assert_msg(!memcmp(y + (size_t)l * D, yref(l, t), sizeof(float) * D),
                          "%s: token %lld layer %d differs from the uninterrupted run", what, (long long)t, l);
    }
}

START_TEST(test_roundtrip_exact)
{
    int i = _i;
    int64_t n = checkpoints[i];
    const int fmts[2] = {HC_CACHE_FP8, HC_CACHE_BF16};
    for (int f = 0; f < 2; f++) {
        char what[64];
        snprintf(what, sizeof what, "n=%lld %s", (long long)n, f ? "bf16" : "fp8");
        hc_ctx *c = tsu_ctx(g_model, fmts[f], 0);
        ck_assert_msg(hc_ctx_load_buffer(c, g_sess[i], g_len[i]) == HC_OK, "%s: %s", what, hc_ctx_last_error(c));
        ck_assert_int_eq(hc_ctx_n_tokens(c), n);
        ck_assert_int_eq(hc_ctx_next_layer(c), 0);
        const void *md;
        uint64_t ml;
        char meta[32];
        snprintf(meta, sizeof meta, "tokens=%lld", (long long)n);
        ck_assert_int_eq(hc_ctx_get_metadata(c, &md, &ml), HC_OK);
        ck_assert_uint_eq(ml, strlen(meta));
        ck_assert_mem_eq(md, meta, ml);
        /* a session saved from the loaded context (either format) is the same session */
        uint64_t n2;
        uint8_t *again = tsu_save(c, HC_COMPRESS_NONE, &n2);
        assert_same_session(g_sess[i], g_len[i], again, n2, what);
        free(again);
        /* the zstd session holds the same state */
        hc_ctx *z = tsu_ctx(g_model, fmts[1 - f], 0);
        ck_assert_msg(hc_ctx_load_buffer(z, g_zsess[i], g_zlen[i]) == HC_OK, "%s zstd: %s", what, hc_ctx_last_error(z));
        ck_assert_uint_eq(tsu_digest(z), tsu_digest(c));
        check_continues(c, n, what);
        check_continues(z, n, what);
        hc_ctx_free(c), hc_ctx_free(z);
    }
}
END_TEST

START_TEST(test_file_roundtrip)
{
    char *path = tu_join(g_dir, "s.hcs");
    int i = NCP - 1;
    hc_ctx *c = tsu_ctx(g_model, HC_CACHE_FP8, 0);
    ck_assert_int_eq(hc_ctx_load_buffer(c, g_sess[i], g_len[i]), HC_OK);
    hc_save_params p;
    hc_save_params_init(&p, sizeof p);
    for (int comp = HC_COMPRESS_NONE; comp <= HC_COMPRESS_ZSTD; comp++) {
        p.compression = comp;
        ck_assert_msg(hc_ctx_save(c, path, &p) == HC_OK, "%s", hc_ctx_last_error(c));
        hc_ctx *d = tsu_ctx(g_model, HC_CACHE_BF16, 0);
        ck_assert_msg(hc_ctx_load(d, path) == HC_OK, "%s", hc_ctx_last_error(d));
        ck_assert_uint_eq(tsu_digest(d), tsu_digest(c));
        check_continues(d, checkpoints[i], "file");
        hc_ctx_free(d);
    }
    /* generation: 1 + that of the session the context came from */
    size_t n;
    uint8_t *b = tu_read_file(path, &n);
    ck_assert_ptr_nonnull(b);
    ck_assert_uint_eq(b[88], 2); /* g_sess was saved from a fresh context (1), c loaded it */
    free(b);
    hc_ctx_free(c);
    free(path);
}
END_TEST

START_TEST(test_params)
{
    hc_ctx *c = tsu_ctx(g_model, HC_CACHE_FP8, 0);
    hc_save_params p;
    ck_assert_int_eq(hc_save_params_init(NULL, sizeof p), HC_ERR_NULL_ARG);
    ck_assert_int_eq(hc_save_params_init(&p, 2), HC_ERR_INVALID_ARG);
    ck_assert_int_eq(hc_save_params_init(&p, sizeof p), HC_OK);
    ck_assert_uint_eq(p.struct_size, sizeof p);
    ck_assert_int_eq(p.compression, 0);
    uint64_t sz, w;
    int bad[][3] = {{3, 0, 0}, {-1, 0, 0}, {HC_COMPRESS_ZSTD, 20, 0}, {HC_COMPRESS_ZSTD, -1, 0}, {0, 0, -1}};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        hc_save_params_init(&p, sizeof p);
        p.compression = bad[k][0], p.zstd_level = bad[k][1], p.n_threads = bad[k][2];
        ck_assert_int_eq(hc_ctx_save_size(c, &p, &sz), HC_ERR_INVALID_ARG);
        ck_assert_int_eq(hc_ctx_save(c, "/nonexistent/x", &p), HC_ERR_INVALID_ARG);
    }
    struct { hc_save_params p; uint64_t extra; } big;
    memset(&big, 0, sizeof big);
    big.p.struct_size = sizeof big;
    ck_assert_int_eq(hc_ctx_save_size(c, &big.p, &sz), HC_OK);
    big.extra = 1;
    ck_assert_int_eq(hc_ctx_save_size(c, &big.p, &sz), HC_ERR_UNSUPPORTED);
    ck_assert_int_eq(hc_ctx_save(NULL, "x", NULL), HC_ERR_NULL_ARG);
    ck_assert_int_eq(hc_ctx_save(c, NULL, NULL), HC_ERR_NULL_ARG);
    ck_assert_int_eq(hc_ctx_load(NULL, "x"), HC_ERR_NULL_ARG);
    ck_assert_int_eq(hc_ctx_load(c, NULL), HC_ERR_NULL_ARG);
    ck_assert_int_eq(hc_ctx_save_size(c, NULL, NULL), HC_ERR_NULL_ARG);
    ck_assert_int_eq(hc_ctx_save_buffer(c, NULL, 10, NULL, &w), HC_ERR_NULL_ARG);
    ck_assert_int_eq(hc_ctx_save_buffer(c, &w, 8, NULL, NULL), HC_ERR_NULL_ARG);
    ck_assert_int_eq(hc_ctx_load_buffer(c, NULL, 10), HC_ERR_NULL_ARG);
    ck_assert_int_eq(hc_ctx_load_buffer(c, NULL, 0), HC_ERR_FORMAT);
    ck_assert_int_eq(hc_ctx_save(c, "", NULL), HC_ERR_INVALID_ARG);
    hc_ctx_free(c);
}
END_TEST

START_TEST(test_order)
{
    hc_ctx *c = tsu_ctx(g_model, HC_CACHE_FP8, 0);
    float y[2 * D];
    ck_assert_int_eq(hc_append(c, 0, xin(0, 0), 2, y), HC_OK);
    uint64_t sz, w;
    uint8_t buf[16];
    char *path = tu_join(g_dir, "order.hcs");
    ck_assert_int_eq(hc_ctx_save(c, path, NULL), HC_ERR_ORDER);
    ck_assert_int_eq(access(path, F_OK), -1);
    ck_assert_int_eq(hc_ctx_save_size(c, NULL, &sz), HC_ERR_ORDER);
    ck_assert_int_eq(hc_ctx_save_buffer(c, buf, sizeof buf, NULL, &w), HC_ERR_ORDER);
    ck_assert_ptr_nonnull(strstr(hc_ctx_last_error(c), "in progress"));
    /* a load replaces the chunk in progress too */
    ck_assert_int_eq(hc_ctx_load_buffer(c, g_sess[7], g_len[7]), HC_OK);
    ck_assert_int_eq(hc_ctx_next_layer(c), 0);
    ck_assert_int_eq(hc_ctx_n_tokens(c), checkpoints[7]);
    check_continues(c, checkpoints[7], "after a chunk in progress");
    hc_ctx_free(c);
    free(path);
}
END_TEST

START_TEST(test_metadata)
{
    hc_ctx *c = tsu_ctx(g_model, HC_CACHE_FP8, 0);
    const void *d = &d;
    uint64_t n = 7;
    ck_assert_int_eq(hc_ctx_get_metadata(c, &d, &n), HC_OK);
    ck_assert_ptr_null(d);
    ck_assert_uint_eq(n, 0);
    ck_assert_int_eq(hc_ctx_get_metadata(NULL, &d, &n), HC_ERR_NULL_ARG);
    ck_assert_int_eq(hc_ctx_get_metadata(c, NULL, &n), HC_ERR_NULL_ARG);
    ck_assert_int_eq(hc_ctx_set_metadata(NULL, "a", 1), HC_ERR_NULL_ARG);
    ck_assert_int_eq(hc_ctx_set_metadata(c, NULL, 1), HC_ERR_NULL_ARG);
    char tok[4] = "abc";
    ck_assert_int_eq(hc_ctx_set_metadata(c, tok, (1ull << 30) + 1), HC_ERR_LIMIT);
    uint32_t ids[1000];
    for (int i = 0; i < 1000; i++) ids[i] = (uint32_t)i * 2654435761u;
    ck_assert_int_eq(hc_ctx_set_metadata(c, ids, sizeof ids), HC_OK);
    ids[0] = 0; /* the context keeps a copy */
    ck_assert_int_eq(hc_ctx_get_metadata(c, &d, &n), HC_OK);
    ck_assert_uint_eq(n, sizeof ids);
    ck_assert_uint_eq(((const uint32_t *)d)[0], 0);
    ck_assert_uint_eq(((const uint32_t *)d)[999], 999u * 2654435761u);
    uint64_t len;
    uint8_t *s = tsu_save(c, HC_COMPRESS_ZSTD, &len);
    hc_ctx *e = tsu_ctx(g_model, HC_CACHE_BF16, 0);
    ck_assert_int_eq(hc_ctx_load_buffer(e, s, len), HC_OK);
    const void *d2;
    ck_assert_int_eq(hc_ctx_get_metadata(e, &d2, &n), HC_OK);
    ck_assert_uint_eq(n, sizeof ids);
    ck_assert_mem_eq(d2, d, sizeof ids);
    /* a failed load keeps it; a successful one replaces it (here: with none) */
    s[5000] ^= 1;
    ck_assert_int_ne(hc_ctx_load_buffer(e, s, len), HC_OK);
    ck_assert_int_eq(hc_ctx_get_metadata(e, &d2, &n), HC_OK);
    ck_assert_uint_eq(n, sizeof ids);
    ck_assert_int_eq(hc_ctx_set_metadata(c, NULL, 0), HC_OK);
    free(s);
    s = tsu_save(c, HC_COMPRESS_NONE, &len);
    ck_assert_int_eq(hc_ctx_load_buffer(e, s, len), HC_OK);
    ck_assert_int_eq(hc_ctx_get_metadata(e, &d2, &n), HC_OK);
    ck_assert_ptr_null(d2);
    ck_assert_uint_eq(n, 0);
    free(s);
    hc_ctx_free(c), hc_ctx_free(e);
}
END_TEST

START_TEST(test_buffer_sizes)
{
    hc_ctx *c = tsu_ctx(g_model, HC_CACHE_FP8, 0);
    ck_assert_int_eq(hc_ctx_load_buffer(c, g_sess[8], g_len[8]), HC_OK);
    uint64_t sz, w;
    ck_assert_int_eq(hc_ctx_save_size(c, NULL, &sz), HC_OK);
    ck_assert_uint_eq(sz, g_len[8]);
    ck_assert_uint_eq(sz % 4096, 0);
    uint8_t *buf = malloc(sz);
    ck_assert_int_eq(hc_ctx_save_buffer(c, buf, sz - 1, NULL, &w), HC_ERR_BUFFER_TOO_SMALL);
    ck_assert_uint_eq(w, sz);
    ck_assert_int_eq(hc_ctx_save_buffer(c, buf, sz, NULL, &w), HC_OK);
    ck_assert_uint_eq(w, sz);
    /* compressed: the bound is the raw size; a NULL buffer of capacity 0 asks for the exact size */
    hc_save_params p;
    hc_save_params_init(&p, sizeof p);
    p.compression = HC_COMPRESS_ZSTD;
    uint64_t zb;
    ck_assert_int_eq(hc_ctx_save_size(c, &p, &zb), HC_OK);
    ck_assert_uint_eq(zb, sz);
    ck_assert_int_eq(hc_ctx_save_buffer(c, NULL, 0, &p, &w), HC_ERR_BUFFER_TOO_SMALL);
    ck_assert_uint_le(w, sz);
    uint64_t need = w;
    ck_assert_int_eq(hc_ctx_save_buffer(c, buf, need, &p, &w), HC_OK);
    ck_assert_uint_eq(w, need);
    hc_ctx *d = tsu_ctx(g_model, HC_CACHE_FP8, 0);
    ck_assert_int_eq(hc_ctx_load_buffer(d, buf, w), HC_OK);
    ck_assert_uint_eq(tsu_digest(d), tsu_digest(c));
    free(buf);
    hc_ctx_free(c), hc_ctx_free(d);
}
END_TEST

START_TEST(test_determinism)
{
    hc_ctx *c = tsu_ctx(g_model, HC_CACHE_FP8, 0);
    ck_assert_int_eq(hc_ctx_load_buffer(c, g_sess[NCP - 1], g_len[NCP - 1]), HC_OK);
    hc_save_params p;
    hc_save_params_init(&p, sizeof p);
    uint8_t *ref[2] = {NULL, NULL};
    uint64_t rlen[2] = {0, 0};
    for (int comp = 0; comp < 2; comp++)
        for (int th = 1; th <= 4; th++) {
            p.compression = comp ? HC_COMPRESS_ZSTD : HC_COMPRESS_NONE;
            p.n_threads = th;
            uint64_t cap, w;
            ck_assert_int_eq(hc_ctx_save_size(c, &p, &cap), HC_OK);
            uint8_t *b = malloc(cap);
            ck_assert_int_eq(hc_ctx_save_buffer(c, b, cap, &p, &w), HC_OK);
            if (!ref[comp]) {
                ref[comp] = b, rlen[comp] = w;
                continue;
            }
            assert_same_session(ref[comp], rlen[comp], b, w, comp ? "zstd, other thread count" : "other thread count");
            ck_assert_mem_ne(ref[comp] + 72, b + 72, 16); /* a fresh uuid per save */
            free(b);
        }
    free(ref[0]), free(ref[1]);
    hc_ctx_free(c);
}
END_TEST

static void refused(hc_ctx *c, hc_status want, const char *needle)
{
    uint64_t before = tsu_digest(c);
    int64_t n = hc_ctx_n_tokens(c);
    hc_status st = hc_ctx_load_buffer(c, g_sess[NCP - 1], g_len[NCP - 1]);
    ck_assert_msg(st == want, "load gave %s (%s), expected %s", hc_status_name(st), hc_ctx_last_error(c),
                  hc_status_name(want));
    if (needle) ck_assert_msg(strstr(hc_ctx_last_error(c), needle), "message '%s' lacks '%s'", hc_ctx_last_error(c), needle);
    ck_assert_int_eq(hc_ctx_n_tokens(c), n);
    ck_assert_uint_eq(tsu_digest(c), before);
}

START_TEST(test_refusals)
{
    /* same configuration, other weights */
    hc_model *m2 = tsu_model(tsu_micro_json, 4, 0);
    hc_ctx *c = tsu_ctx(m2, HC_CACHE_FP8, 0);
    refused(c, HC_ERR_MODEL_MISMATCH, "different weights");
    hc_ctx_free(c);
    hc_model_free(m2);
    /* geometry-only model of the same configuration */
    m2 = tsu_model(tsu_micro_json, 3, 1);
    c = tsu_ctx(m2, HC_CACHE_FP8, 0);
    ck_assert_int_eq(hc_x_ctx_fill_random(c, 50, 1), HC_OK);
    refused(c, HC_ERR_MODEL_MISMATCH, "geometry-only");
    /* and a geometry-only session does not load into the weighted model */
    uint64_t len;
    uint8_t *s = tsu_save(c, HC_COMPRESS_NONE, &len);
    hc_ctx *w = tsu_ctx(g_model, HC_CACHE_FP8, 0);
    ck_assert_int_eq(hc_ctx_load_buffer(w, s, len), HC_ERR_MODEL_MISMATCH);
    ck_assert_ptr_nonnull(strstr(hc_ctx_last_error(w), "geometry-only"));
    ck_assert_int_eq(hc_ctx_n_tokens(w), 0);
    hc_ctx_free(w);
    free(s);
    hc_ctx_free(c);
    hc_model_free(m2);
    /* other geometry: the message names the field */
    char json[1024];
    snprintf(json, sizeof json, "%s", tsu_micro_json);
    char *p = strstr(json, "\"sliding_window\": 128");
    memcpy(p, "\"sliding_window\": 64 ", 21);
    m2 = tsu_model(json, 3, 0);
    c = tsu_ctx(m2, HC_CACHE_FP8, 0);
    refused(c, HC_ERR_MODEL_MISMATCH, "sliding_window 128");
    hc_ctx_free(c);
    hc_model_free(m2);
    snprintf(json, sizeof json, "%s", tsu_micro_json);
    p = strstr(json, "[0, 4, 128]");
    memcpy(p, "[0, 128, 4]", 11);
    m2 = tsu_model(json, 3, 0);
    c = tsu_ctx(m2, HC_CACHE_FP8, 0);
    refused(c, HC_ERR_MODEL_MISMATCH, "layer 1 has compress ratio 4");
    hc_ctx_free(c);
    hc_model_free(m2);
    /* a context shorter than the session */
    c = tsu_ctx(g_model, HC_CACHE_FP8, 4096);
    ck_assert_int_eq(hc_ctx_load_buffer(c, g_sess[8], g_len[8]), HC_OK);
    refused(c, HC_ERR_POSITION, "4097 tokens");
    hc_ctx_free(c);
    c = tsu_ctx(g_model, HC_CACHE_FP8, 4097);
    ck_assert_int_eq(hc_ctx_load_buffer(c, g_sess[NCP - 1], g_len[NCP - 1]), HC_OK);
    hc_ctx_free(c);
    /* a file that does not exist, a directory */
    c = tsu_ctx(g_model, HC_CACHE_FP8, 0);
    ck_assert_int_eq(hc_ctx_load_buffer(c, g_sess[6], g_len[6]), HC_OK);
    uint64_t before = tsu_digest(c);
    char *missing = tu_join(g_dir, "missing.hcs");
    ck_assert_int_eq(hc_ctx_load(c, missing), HC_ERR_IO);
    ck_assert_ptr_nonnull(strstr(hc_ctx_last_error(c), "No such file"));
    ck_assert_int_eq(hc_ctx_load(c, g_dir), HC_ERR_IO);
    ck_assert_uint_eq(tsu_digest(c), before);
    ck_assert_int_eq(hc_ctx_n_tokens(c), checkpoints[6]);
    free(missing);
    hc_ctx_free(c);
}
END_TEST

static int count_temps(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) n++;
    if (d) closedir(d);
    return n;
}

START_TEST(test_targets)
{
    hc_ctx *c = tsu_ctx(g_model, HC_CACHE_FP8, 0);
    ck_assert_int_eq(hc_ctx_load_buffer(c, g_sess[5], g_len[5]), HC_OK);
    char *other = tu_join(g_dir, "notes.txt"), *link = tu_join(g_dir, "link.hcs"), *sub = tu_join(g_dir, "sub");
    char *empty = tu_join(g_dir, "empty.hcs");
    ck_assert_int_eq(tu_write_file(other, "precious data\n", 14), 0);
    ck_assert_int_eq(hc_ctx_save(c, other, NULL), HC_ERR_INVALID_ARG);
    size_t n;
    char *t = tu_read_file(other, &n);
    ck_assert_uint_eq(n, 14);
    ck_assert_mem_eq(t, "precious data\n", 14);
    free(t);
    ck_assert_int_eq(symlink(other, link), 0);
    ck_assert_int_eq(hc_ctx_save(c, link, NULL), HC_ERR_INVALID_ARG);
    ck_assert_ptr_nonnull(strstr(hc_ctx_last_error(c), "symbolic link"));
    ck_assert_int_eq(mkdir(sub, 0755), 0);
    ck_assert_int_eq(hc_ctx_save(c, sub, NULL), HC_ERR_INVALID_ARG);
    ck_assert_int_eq(tu_write_file(empty, "", 0), 0);
    ck_assert_int_eq(hc_ctx_save(c, empty, NULL), HC_OK);
    /* an existing session is replaced */
    ck_assert_int_eq(hc_ctx_save(c, empty, NULL), HC_OK);
    char *deep = tu_join(sub, "no/such/dir.hcs");
    ck_assert_int_eq(hc_ctx_save(c, deep, NULL), HC_ERR_IO);
    if (geteuid() != 0) { /* root ignores directory permissions */
        ck_assert_int_eq(chmod(sub, 0555), 0);
        char *ro = tu_join(sub, "x.hcs");
        ck_assert_int_eq(hc_ctx_save(c, ro, NULL), HC_ERR_IO);
        chmod(sub, 0755);
        free(ro);
    }
    ck_assert_int_eq(count_temps(g_dir), 0);
    ck_assert_int_eq(count_temps(sub), 0);
    free(other), free(link), free(sub), free(empty), free(deep);
    hc_ctx_free(c);
}
END_TEST

typedef struct saver { hc_ctx *c; const char *path; int rounds, fails, load; } saver;

static void *save_loop(void *a)
{
    saver *s = a;
    for (int i = 0; i < s->rounds; i++)
        s->fails += (s->load ? hc_ctx_load(s->c, s->path) : hc_ctx_save(s->c, s->path, NULL)) != HC_OK;
    return NULL;
}

START_TEST(test_concurrent_saves)
{
    char *path = tu_join(g_dir, "shared.hcs");
    /* two savers and a loader on one path: every load sees a complete session */
    saver s[3] = {{tsu_ctx(g_model, HC_CACHE_FP8, 0), path, 15, 0, 0}, {tsu_ctx(g_model, HC_CACHE_BF16, 0), path, 15, 0, 0},
                  {tsu_ctx(g_model, HC_CACHE_FP8, 0), path, 30, 0, 1}};
    ck_assert_int_eq(hc_ctx_load_buffer(s[0].c, g_sess[8], g_len[8]), HC_OK);
    ck_assert_int_eq(hc_ctx_load_buffer(s[1].c, g_sess[9], g_len[9]), HC_OK);
    ck_assert_int_eq(hc_ctx_save(s[0].c, path, NULL), HC_OK);
    pthread_t th[3];
    for (int i = 0; i < 3; i++) ck_assert_int_eq(pthread_create(&th[i], NULL, save_loop, &s[i]), 0);
    for (int i = 0; i < 3; i++) pthread_join(th[i], NULL);
    ck_assert_int_eq(s[0].fails + s[1].fails + s[2].fails, 0);
    uint64_t h2 = tsu_digest(s[2].c);
    ck_assert(h2 == tsu_digest(s[0].c) || h2 == tsu_digest(s[1].c));
    hc_ctx_free(s[2].c);
    hc_ctx *d = tsu_ctx(g_model, HC_CACHE_FP8, 0);
    ck_assert_msg(hc_ctx_load(d, path) == HC_OK, "%s", hc_ctx_last_error(d));
    uint64_t h = tsu_digest(d);
    ck_assert(h == tsu_digest(s[0].c) || h == tsu_digest(s[1].c));
    ck_assert_int_eq(count_temps(g_dir), 0);
    hc_ctx_free(d), hc_ctx_free(s[0].c), hc_ctx_free(s[1].c);
    free(path);
}
END_TEST

START_TEST(test_fill_random)
{
    hc_model *g = tsu_model(tsu_golden_json, 1, 1);
    hc_ctx *a = tsu_ctx(g, HC_CACHE_FP8, 5000), *b = tsu_ctx(g, HC_CACHE_BF16, 0);
    ck_assert_int_eq(hc_x_ctx_fill_random(NULL, 1, 1), HC_ERR_NULL_ARG);
    ck_assert_int_eq(hc_x_ctx_fill_random(a, -1, 1), HC_ERR_INVALID_ARG);
    ck_assert_int_eq(hc_x_ctx_fill_random(a, 5001, 1), HC_ERR_POSITION);
    ck_assert_int_eq(hc_x_ctx_fill_random(a, 4099, 9), HC_OK);
    ck_assert_int_eq(hc_ctx_n_tokens(a), 4099);
    ck_assert_int_eq(hc_x_ctx_fill_random(a, 1, 9), HC_ERR_BAD_STATE);
    ck_assert_int_eq(hc_x_ctx_fill_random(b, 4099, 9), HC_OK);
    /* the same state in both formats: same session, and it round-trips */
    uint64_t la, lb;
    uint8_t *sa = tsu_save(a, HC_COMPRESS_NONE, &la), *sb = tsu_save(b, HC_COMPRESS_NONE, &lb);
    assert_same_session(sa, la, sb, lb, "fill fp8 vs bf16");
    hc_ctx *c = tsu_ctx(g, HC_CACHE_FP8, 0);
    ck_assert_int_eq(hc_ctx_load_buffer(c, sb, lb), HC_OK);
    ck_assert_uint_eq(tsu_digest(c), tsu_digest(a));
    /* another seed, another state */
    hc_ctx *e = tsu_ctx(g, HC_CACHE_FP8, 0);
    ck_assert_int_eq(hc_x_ctx_fill_random(e, 4099, 10), HC_OK);
    ck_assert_uint_ne(tsu_digest(e), tsu_digest(a));
    /* memory grows as for a computed context of that length */
    uint64_t kv, stb;
    ck_assert_int_eq(hc_model_cache_bytes(g, 4099, HC_CACHE_FP8, &kv, &stb), HC_OK);
    ck_assert_uint_ge(hc_ctx_memory_bytes(a), kv);
    free(sa), free(sb);
    hc_ctx_free(a), hc_ctx_free(b), hc_ctx_free(c), hc_ctx_free(e);
    hc_model_free(g);
    /* a weighted model decodes after a fill */
    hc_ctx *w = tsu_ctx(g_model, HC_CACHE_FP8, 0);
    ck_assert_int_eq(hc_x_ctx_fill_random(w, 700, 5), HC_OK);
    float y[D];
    for (int l = 0; l < L; l++) {
        ck_assert_int_eq(hc_append(w, l, xin(l, 0), 1, y), HC_OK);
        for (int i = 0; i < D; i++) ck_assert(isfinite(y[i]));
    }
    ck_assert_int_eq(hc_ctx_n_tokens(w), 701);
    hc_ctx_free(w);
}
END_TEST

Suite *tu_suite(int argc, char **argv)
{
    (void)argc, (void)argv;
    Suite *s = suite_create("session");
    TCase *tc = tcase_create("public");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, test_roundtrip_exact, 0, NCP);
    tcase_add_test(tc, test_file_roundtrip);
    tcase_add_test(tc, test_params);
    tcase_add_test(tc, test_order);
    tcase_add_test(tc, test_metadata);
    tcase_add_test(tc, test_buffer_sizes);
    tcase_add_test(tc, test_determinism);
    tcase_add_test(tc, test_refusals);
    tcase_add_test(tc, test_targets);
    tcase_add_test(tc, test_concurrent_saves);
    tcase_add_test(tc, test_fill_random);
    suite_add_tcase(s, tc);
    return s;
}
