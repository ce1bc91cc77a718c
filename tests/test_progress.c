/* test_progress.c - progress callbacks and HC_ERR_ABORTED through the public API: saves (file
 * and buffer), loads (file and buffer), hc_model_load, hc_model_create_random and the
 * experimental verify report monotone progress that ends at its total; a stop at the first, a
 * middle and the last report leaves everything as it was (the file that was at the path, no
 * temporary file beside it, the context's contents, no model). Layer calls and batches are
 * covered by test_batch. */
#include <check.h>
#include <dirent.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "hybridctx.h"
#include "hybridctx_experimental.h"
#include "test_session_util.h"
#include "testutil.h"
#include "runner.h"

#define L 3
#define D 128
#define NT 700

static hc_model *g_model;
static float *g_x; /* [layer][NT][D] */
static char *g_dir;

static void setup(void)
{
    g_model = tsu_model(tsu_micro_json, 8, 0);
    g_x = malloc(sizeof(float) * L * NT * D);
    tu_fill_normal(g_x, (size_t)L * NT * D, 21, 1.0f);
    g_dir = tu_tempdir();
}

static void teardown(void)
{
    hc_model_free(g_model);
    free(g_x);
    tu_rmtree(g_dir);
    free(g_dir);
}

/* Tokens [t0, t1) through every layer. */
static void run(hc_ctx *c, int64_t t0, int64_t t1)
{
    float *y = malloc(sizeof(float) * (size_t)(t1 - t0) * D);
    for (int l = 0; l < L; l++)
        ck_assert_msg(hc_append(c, l, g_x + ((size_t)l * NT + (size_t)t0) * D, t1 - t0, y) == HC_OK, "%s",
                      hc_ctx_last_error(c));
    free(y);
}

static hc_ctx *ctx_at(int64_t n)
{
    hc_ctx *c = tsu_ctx(g_model, HC_CACHE_FP8, 0);
    if (n) run(c, 0, n);
    return c;
}

typedef struct watch {
    int calls, stop_at;  /* stop at report number stop_at (1-based; 0 = never) */
    uint64_t last, total;
    int ok;              /* done never decreased, never passed total, total never changed */
} watch;

static int on_progress(void *user, uint64_t done, uint64_t total)
{
    watch *w = user;
    w->calls++;
    if (done < w->last || done > total || total == 0 || (w->calls > 1 && total != w->total)) w->ok = 0;
    w->last = done, w->total = total;
    return w->calls == w->stop_at;
}

static watch watching(int stop_at) { return (watch){.stop_at = stop_at, .ok = 1}; }

static void assert_complete(const watch *w, const char *what)
{
    ck_assert_msg(w->ok, "%s: progress not monotone", what);
    ck_assert_msg(w->calls > 0 && w->last == w->total, "%s: %d reports, last %llu of %llu", what, w->calls,
                  (unsigned long long)w->last, (unsigned long long)w->total);
}

/* The report numbers to stop at: the first, one in the middle, the last. */
static void stops_of(int n, int out[3])
{
    out[0] = 1, out[1] = (n + 1) / 2, out[2] = n;
}

static int entries_in(const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

START_TEST(status_text)
{
    ck_assert_str_eq(hc_status_name(HC_ERR_ABORTED), "HC_ERR_ABORTED");
    ck_assert_int_eq(HC_ERR_ABORTED, -25);
    ck_assert_str_eq(hc_strerror(HC_ERR_ABORTED), "stopped by a progress callback");
}
END_TEST

START_TEST(save_progress_and_abort)
{
    hc_ctx *old = ctx_at(300), *c = ctx_at(NT);
    ck_assert_int_eq(hc_ctx_set_metadata(c, "new", 3), HC_OK);
    char *path = tu_join(g_dir, "s.hcs");
    ck_assert_int_eq(hc_ctx_save(old, path, NULL), HC_OK);
    size_t n_old;
    void *before = tu_read_file(path, &n_old);
    int n_entries = entries_in(g_dir);
    /* the whole save: how many reports */
    char *other = tu_join(g_dir, "count.hcs");
    watch w = watching(0);
    hc_ctx_set_progress(c, on_progress, &w);
    ck_assert_int_eq(hc_ctx_save(c, other, NULL), HC_OK);
    assert_complete(&w, "save");
    ck_assert_int_ge(w.calls, 10);
    int n = w.calls, stops[3];
    uint64_t total = w.total;
    remove(other);
    stops_of(n, stops);
    for (int k = 0; k < 3; k++)
        for (int z = 0; z < 2; z++) {
            hc_save_params p;
            hc_save_params_init(&p, sizeof p);
            p.compression = z ? HC_COMPRESS_ZSTD : HC_COMPRESS_NONE;
            w = watching(stops[k]);
            ck_assert_int_eq(hc_ctx_save(c, path, &p), HC_ERR_ABORTED);
            ck_assert_int_eq(w.calls, stops[k]);
            ck_assert_msg(strstr(hc_ctx_last_error(c), "stopped by the progress callback"), "%s", hc_ctx_last_error(c));
            size_t n_now;
            void *now = tu_read_file(path, &n_now);
            ck_assert_msg(n_now == n_old && memcmp(now, before, n_old) == 0, "the old file changed");
            free(now);
            ck_assert_int_eq(entries_in(g_dir), n_entries); /* no temporary left */
        }
    /* to a buffer: stopped, then complete */
    uint64_t cap = 0, written = 0;
    hc_ctx_set_progress(c, NULL, NULL);
    ck_assert_int_eq(hc_ctx_save_size(c, NULL, &cap), HC_OK);
    uint8_t *buf = malloc(cap);
    hc_ctx_set_progress(c, on_progress, &w);
    w = watching(n);
    ck_assert_int_eq(hc_ctx_save_buffer(c, buf, cap, NULL, &written), HC_ERR_ABORTED);
    w = watching(0);
    ck_assert_int_eq(hc_ctx_save_buffer(c, buf, cap, NULL, &written), HC_OK);
    assert_complete(&w, "save to a buffer");
    ck_assert_uint_eq(w.total, total);
    /* and to the file */
    w = watching(0);
    ck_assert_int_eq(hc_ctx_save(c, path, NULL), HC_OK);
    assert_complete(&w, "save");
    size_t n_new;
    void *after = tu_read_file(path, &n_new);
    uint64_t where;
    ck_assert(tsu_same_session(after, n_new, buf, written, &where));
    free(after), free(before), free(buf), free(path), free(other);
    hc_ctx_free(old), hc_ctx_free(c);
}
END_TEST

START_TEST(load_progress_and_abort)
{
    hc_ctx *src = ctx_at(NT), *c = ctx_at(130), *ref = ctx_at(130);
    ck_assert_int_eq(hc_ctx_set_metadata(src, "src", 3), HC_OK);
    ck_assert_int_eq(hc_ctx_set_metadata(c, "mine", 4), HC_OK);
    ck_assert_int_eq(hc_ctx_set_metadata(ref, "mine", 4), HC_OK);
    char *path = tu_join(g_dir, "l.hcs");
    hc_save_params p;
    hc_save_params_init(&p, sizeof p);
    p.compression = HC_COMPRESS_ZSTD;
    ck_assert_int_eq(hc_ctx_save(src, path, &p), HC_OK);
    uint64_t len;
    uint8_t *buf = tsu_save(src, HC_COMPRESS_NONE, &len);
    uint64_t d_ref = tsu_digest(ref);
    /* count the reports of a load (into a scratch context) */
    hc_ctx *t = ctx_at(0);
    watch w = watching(0);
    hc_ctx_set_progress(t, on_progress, &w);
    ck_assert_int_eq(hc_ctx_load(t, path), HC_OK);
    assert_complete(&w, "load");
    int n = w.calls, stops[3];
    ck_assert_int_ge(n, 10);
    hc_ctx_free(t);
    stops_of(n, stops);
    for (int k = 0; k < 3; k++)
        for (int b = 0; b < 2; b++) {
            w = watching(stops[k]);
            hc_ctx_set_progress(c, on_progress, &w);
            hc_status st = b ? hc_ctx_load_buffer(c, buf, len) : hc_ctx_load(c, path);
            ck_assert_int_eq(st, HC_ERR_ABORTED);
            ck_assert_int_eq(w.calls, stops[k]);
            ck_assert_msg(strstr(hc_ctx_last_error(c), "stopped by the progress callback"), "%s", hc_ctx_last_error(c));
            hc_ctx_set_progress(c, NULL, NULL);
            ck_assert_int_eq(hc_ctx_n_tokens(c), 130);
            const void *meta;
            uint64_t ml;
            ck_assert_int_eq(hc_ctx_get_metadata(c, &meta, &ml), HC_OK);
            ck_assert(ml == 4 && memcmp(meta, "mine", 4) == 0);
            ck_assert_msg(tsu_digest(c) == d_ref, "a stopped load changed the context");
        }
    /* the context goes on as its twin */
    run(c, 130, 140), run(ref, 130, 140);
    ck_assert(tsu_digest(c) == tsu_digest(ref));
    /* a complete load through the buffer */
    w = watching(0);
    hc_ctx_set_progress(c, on_progress, &w);
    ck_assert_int_eq(hc_ctx_load_buffer(c, buf, len), HC_OK);
    assert_complete(&w, "load from a buffer");
    hc_ctx_set_progress(c, NULL, NULL);
    ck_assert(tsu_digest(c) == tsu_digest(src));
    free(buf), free(path);
    hc_ctx_free(src), hc_ctx_free(c), hc_ctx_free(ref);
}
END_TEST

START_TEST(verify_progress)
{
    hc_ctx *c = ctx_at(400);
    char *path = tu_join(g_dir, "v.hcs");
    ck_assert_int_eq(hc_ctx_save(c, path, NULL), HC_OK);
    char out[65536];
    uint64_t len;
    watch w = watching(0);
    ck_assert_int_eq(hc_x_session_inspect_progress(path, HC_X_INSPECT_VERIFY, on_progress, &w, out, sizeof out, &len),
                     HC_OK);
    assert_complete(&w, "verify");
    int stop = w.calls / 2;
    w = watching(stop);
    ck_assert_int_eq(hc_x_session_inspect_progress(path, HC_X_INSPECT_VERIFY, on_progress, &w, out, sizeof out, &len),
                     HC_ERR_ABORTED);
    ck_assert_int_eq(w.calls, stop);
    ck_assert_msg(strstr(out, "stopped by the progress callback"), "%s", out);
    /* without VERIFY nothing is streamed; without a callback it is hc_x_session_inspect() */
    w = watching(0);
    ck_assert_int_eq(hc_x_session_inspect_progress(path, 0, on_progress, &w, out, sizeof out, &len), HC_OK);
    ck_assert_int_eq(w.calls, 0);
    ck_assert_int_eq(hc_x_session_inspect_progress(path, HC_X_INSPECT_VERIFY, NULL, NULL, out, sizeof out, &len), HC_OK);
    free(path);
    hc_ctx_free(c);
}
END_TEST

START_TEST(model_load_progress_and_abort)
{
    const char *path = tu_data_path("tiny-a-short.safetensors");
    hc_model_params p;
    hc_model_params_init(&p, sizeof p);
    watch w = watching(0);
    p.progress = on_progress;
    p.progress_user = &w;
    hc_model *m = NULL;
    ck_assert_int_eq(hc_model_load(path, &p, &m), HC_OK);
    assert_complete(&w, "model load");
    hc_model_info info = {.struct_size = sizeof info};
    ck_assert_int_eq(hc_model_info_get(m, &info), HC_OK);
    ck_assert_uint_gt(w.total, 0);
    hc_model_free(m);
    int n = w.calls, stops[3];
    ck_assert_int_ge(n, 4);
    stops_of(n, stops);
    char err[256];
    p.errbuf = err, p.errbuf_size = sizeof err;
    for (int k = 0; k < 3; k++) {
        w = watching(stops[k]);
        m = (hc_model *)&w; /* set to NULL on failure */
        ck_assert_int_eq(hc_model_load(path, &p, &m), HC_ERR_ABORTED);
        ck_assert_ptr_null(m);
        ck_assert_int_eq(w.calls, stops[k]);
        ck_assert_msg(strstr(err, "stopped by the progress callback"), "%s", err);
    }
    /* geometry only: no weights read, no report */
    w = watching(1);
    p.flags = HC_MODEL_GEOMETRY_ONLY;
    ck_assert_int_eq(hc_model_load(path, &p, &m), HC_OK);
    ck_assert_int_eq(w.calls, 0);
    hc_model_free(m);
}
END_TEST

START_TEST(create_random_progress_and_abort)
{
    hc_model_params p;
    hc_model_params_init(&p, sizeof p);
    watch w = watching(0);
    p.progress = on_progress;
    p.progress_user = &w;
    hc_model *m = NULL;
    ck_assert_int_eq(hc_model_create_random("tiny", 1, &p, &m), HC_OK);
    assert_complete(&w, "create_random");
    ck_assert_int_eq(w.calls, hc_model_n_layers(m));
    ck_assert_uint_eq(w.total, (uint64_t)hc_model_n_layers(m));
    hc_model_free(m);
    for (int stop = 1; stop <= 4; stop++) {
        w = watching(stop);
        ck_assert_int_eq(hc_model_create_random("tiny", 1, &p, &m), HC_ERR_ABORTED);
        ck_assert_ptr_null(m);
    }
    /* a caller compiled against 0.1 (hc_model_params without the progress members) */
    hc_model_params old;
    size_t old_size = offsetof(hc_model_params, progress);
    ck_assert_int_eq(hc_model_params_init(&old, old_size), HC_OK);
    ck_assert_int_eq(hc_model_create_random("tiny", 1, &old, &m), HC_OK);
    hc_model_free(m);
}
END_TEST

Suite *tu_suite(int argc, char **argv)
{
    (void)argc, (void)argv;
    Suite *s = suite_create("progress");
    TCase *tc = tcase_create("progress");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, status_text);
    tcase_add_test(tc, save_progress_and_abort);
    tcase_add_test(tc, load_progress_and_abort);
    tcase_add_test(tc, verify_progress);
    tcase_add_test(tc, model_load_progress_and_abort);
    tcase_add_test(tc, create_random_progress_and_abort);
    suite_add_tcase(s, tc);
    return s;
}
