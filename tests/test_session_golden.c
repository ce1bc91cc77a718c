/* test_session_golden.c - the golden files of session format 1.0 (tests/data/session-golden-*).
 * They must keep loading, into either cache format, and the bytes this build writes for the
 * state they hold must stay their bytes: a difference means the format changed, which needs a
 * version bump, a new golden file and keeping this one (docs/session-format.md §8).
 * HC_REGEN_GOLDEN=1 rewrites the files (only when the format is bumped on purpose). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "hybridctx.h"
#include "hybridctx_experimental.h"
#include "test_session_util.h"
#include "testutil.h"
#include "runner.h"

#define GOLDEN_TOKENS 300
#define GOLDEN_SEED 2024
static const char golden_meta[] = "golden session, format 1.0";

static uint8_t *read_golden(const char *name, uint64_t *len)
{
    size_t n = 0;
    uint8_t *b = tu_read_file(tu_data_path(name), &n);
    ck_assert_msg(b != NULL, "cannot read %s", tu_data_path(name));
    *len = n;
    return b;
}

static const char *const files[] = {"session-golden-v1.0-raw.hcs", "session-golden-v1.0-zstd.hcs"};

/* Written once by this function (HC_REGEN_GOLDEN=1), from a fill of the golden geometry. */
static void regenerate(hc_model *m)
{
    hc_ctx *c = tsu_ctx(m, HC_CACHE_FP8, 0);
    ck_assert_int_eq(hc_x_ctx_fill_random(c, GOLDEN_TOKENS, GOLDEN_SEED), HC_OK);
    ck_assert_int_eq(hc_ctx_set_metadata(c, golden_meta, sizeof golden_meta), HC_OK);
    for (int z = 0; z < 2; z++) {
        uint64_t n;
        uint8_t *b = tsu_save(c, z ? HC_COMPRESS_ZSTD : HC_COMPRESS_NONE, &n);
        ck_assert_int_eq(tu_write_file(tu_data_path(files[z]), b, n), 0);
        free(b);
    }
    hc_ctx_free(c);
}

/* Loading the raw golden file and saving again gives its bytes back: the reader and the writer
 * still agree with format 1.0 as it was written. */
START_TEST(test_golden_bytes)
{
    hc_model *m = tsu_model(tsu_golden_json, 1, 1);
    if (getenv("HC_REGEN_GOLDEN")) regenerate(m);
    uint64_t gn, n, where;
    uint8_t *g = read_golden(files[0], &gn);
    for (int fmt = HC_CACHE_BF16; fmt <= HC_CACHE_FP8; fmt++) {
        hc_ctx *c = tsu_ctx(m, fmt, 0);
        ck_assert_msg(hc_ctx_load_buffer(c, g, gn) == HC_OK, "%s", hc_ctx_last_error(c));
        uint8_t *now = tsu_save(c, HC_COMPRESS_NONE, &n);
        ck_assert_msg(tsu_same_session(g, gn, now, n, &where),
                      "this build writes other bytes than session-golden-v1.0-raw.hcs for the same state (first "
                      "difference at offset %llu, %llu vs %llu bytes): the session format changed; see "
                      "docs/session-format.md section 8",
                      (unsigned long long)where, (unsigned long long)gn, (unsigned long long)n);
        free(now);
        hc_ctx_free(c);
    }
    free(g);
    hc_model_free(m);
}
END_TEST

START_TEST(test_golden_loads)
{
    hc_model *m = tsu_model(tsu_golden_json, 1, 1);
    uint64_t want = 0;
    for (int f = 0; f < 2; f++)
        for (int fmt = HC_CACHE_BF16; fmt <= HC_CACHE_FP8; fmt++) {
            uint64_t n;
            uint8_t *g = read_golden(files[f], &n);
            hc_ctx *c = tsu_ctx(m, fmt, 0);
            ck_assert_msg(hc_ctx_load_buffer(c, g, n) == HC_OK, "%s: %s", files[f], hc_ctx_last_error(c));
            ck_assert_int_eq(hc_ctx_n_tokens(c), GOLDEN_TOKENS);
            const void *md;
            uint64_t ml;
            ck_assert_int_eq(hc_ctx_get_metadata(c, &md, &ml), HC_OK);
            ck_assert_uint_eq(ml, sizeof golden_meta);
            ck_assert_mem_eq(md, golden_meta, ml);
            /* every file, every format: one state */
            if (!want) want = tsu_digest(c);
            ck_assert_uint_eq(tsu_digest(c), want);
            hc_ctx *d = tsu_ctx(m, fmt, 0);
            ck_assert_int_eq(hc_ctx_load(d, tu_data_path(files[f])), HC_OK);
            ck_assert_uint_eq(tsu_digest(d), want);
            free(g);
            hc_ctx_free(c), hc_ctx_free(d);
        }
    /* the zstd golden file has compressed chunks, and both verify */
    char buf[65536];
    uint64_t len;
    ck_assert_int_eq(hc_x_session_inspect(tu_data_path(files[1]), HC_X_INSPECT_JSON | HC_X_INSPECT_VERIFY, buf, sizeof buf, &len), HC_OK);
    ck_assert_ptr_null(strstr(buf, "\"zstd_chunks\": 0,\n  \"config\""));
    ck_assert_ptr_nonnull(strstr(buf, "\"verified\": true"));
    ck_assert_int_eq(hc_x_session_inspect(tu_data_path(files[0]), HC_X_INSPECT_VERIFY, buf, sizeof buf, &len), HC_OK);
    /* a geometry-only model of another configuration refuses them, naming the field */
    char json[2048];
    snprintf(json, sizeof json, "%s", tsu_golden_json);
    char *p = strstr(json, "\"index_topk\": 16");
    memcpy(p, "\"index_topk\": 32", 16);
    hc_model *o = tsu_model(json, 1, 1);
    hc_ctx *c = tsu_ctx(o, HC_CACHE_FP8, 0);
    ck_assert_int_eq(hc_ctx_load(c, tu_data_path(files[0])), HC_ERR_MODEL_MISMATCH);
    ck_assert_ptr_nonnull(strstr(hc_ctx_last_error(c), "index_topk 16"));
    hc_ctx_free(c);
    hc_model_free(o);
    hc_model_free(m);
}
END_TEST

Suite *tu_suite(int argc, char **argv)
{
    (void)argc, (void)argv;
    Suite *s = suite_create("session_golden");
    TCase *tc = tcase_create("golden");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_golden_bytes);
    tcase_add_test(tc, test_golden_loads);
    suite_add_tcase(s, tc);
    return s;
}
