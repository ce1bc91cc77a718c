/* test_limits.c - bounded memory for any input (docs/hardening.md): a configuration cannot make
 * hc_model_load() allocate weights the files do not hold, the documented size limits give
 * HC_ERR_LIMIT, and the in-memory safetensors reader (the fuzzing entry) matches the file one. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "hybridctx.h"
#include "model/config.h"
#include "model/safetensors.h"
#include "st_writer.h"
#include "testutil.h"
#include "runner.h"

static char *tmp;

static void tmp_setup(void) { ck_assert_ptr_nonnull(tmp = tu_tempdir()); }
static void tmp_teardown(void)
{
    tu_rmtree(tmp);
    free(tmp);
}

static void put(const char *name, const char *text)
{
    char *p = tu_join(tmp, name);
    ck_assert_int_eq(tu_write_file(p, text, strlen(text)), 0);
    free(p);
}

static hc_status load(const char *path, int32_t flags, char *err, size_t errsz)
{
    hc_model_params p;
    hc_model_params_init(&p, sizeof p);
    p.flags = flags;
    p.errbuf = err;
    p.errbuf_size = errsz;
    hc_model *m = NULL;
    hc_status st = hc_model_load(path, &p, &m);
    hc_model_free(m);
    return st;
}

/* The largest geometry the configuration checks accept describes petabytes of weights; with
 * one empty shard the load must report the first missing tensor without allocating them. */
START_TEST(config_cannot_size_the_allocation)
{
    put("config.json", "{\"hidden_size\": 65536, \"num_hidden_layers\": 1024, \"num_attention_heads\": 1024,"
                       " \"head_dim\": 1024, \"q_lora_rank\": 65536, \"o_groups\": 1024, \"o_lora_rank\": 65536}");
    stw *w = stw_new();
    char *shard = tu_join(tmp, "model.safetensors");
    ck_assert_int_eq(stw_write(w, shard), 0);
    char err[512] = "";
    time_t t0 = time(NULL);
    ck_assert_int_eq(load(tmp, 0, err, sizeof err), HC_ERR_MISSING_TENSOR);
    ck_assert_msg(strstr(err, "layers.0.attn.wq_a.weight"), "%s", err);
    ck_assert_int_le(time(NULL) - t0, 10);
    /* a tensor present with the wrong shape is reported the same way, before any allocation */
    static const uint8_t one = 0;
    static const int64_t shape[2] = {1, 1};
    ck_assert_int_eq(stw_add(w, "layers.0.attn.wq_a.weight", "F8_E4M3", 2, shape, &one, 1), 0);
    ck_assert_int_eq(stw_write(w, shard), 0);
    ck_assert_int_eq(load(tmp, 0, err, sizeof err), HC_ERR_TENSOR);
    /* the geometry itself is fine: without weights the model is created */
    ck_assert_int_eq(load(tmp, HC_MODEL_GEOMETRY_ONLY, err, sizeof err), HC_OK);
    stw_free(w);
    free(shard);
}
END_TEST

/* model.safetensors.index.json is read whole: at most 64 MiB. */
START_TEST(index_text_limit)
{
    put("config.json", "{\"hidden_size\": 128}");
    char *index = tu_join(tmp, "model.safetensors.index.json");
    ck_assert_int_eq(tu_write_file(index, "{", 1), 0);
    ck_assert_int_eq(truncate(index, (off_t)(64u << 20) + 1), 0);
    char err[512] = "";
    ck_assert_int_eq(load(tmp, 0, err, sizeof err), HC_ERR_LIMIT);
    ck_assert_msg(strstr(err, "model.safetensors.index.json"), "%s", err);
    ck_assert_int_eq(truncate(index, (off_t)(64u << 20)), 0); /* at the limit: read, then malformed */
    ck_assert_int_eq(load(tmp, 0, err, sizeof err), HC_ERR_FORMAT);
    free(index);
}
END_TEST

/* config.json text given to hc_model_create_random(): at most 1 MiB. */
START_TEST(config_text_limit)
{
    size_t n = HCI_MAX_CONFIG_TEXT + 1;
    char *text = malloc(n + 1);
    ck_assert_ptr_nonnull(text);
    memset(text, ' ', n);
    text[0] = '{';
    text[n - 1] = '}';
    text[n] = 0;
    hc_model *m = NULL;
    ck_assert_int_eq(hc_model_create_random(text, 1, NULL, &m), HC_ERR_LIMIT);
    ck_assert_ptr_null(m);
    text[n - 2] = '}', text[n - 1] = 0; /* exactly 1 MiB: accepted ({} = all defaults) */
    hc_model_params p;
    hc_model_params_init(&p, sizeof p);
    p.flags = HC_MODEL_GEOMETRY_ONLY;
    ck_assert_int_eq(hc_model_create_random(text, 1, &p, &m), HC_OK);
    hc_model_free(m);
    free(text);
}
END_TEST

/* hci_st_open_mem() over a file's bytes sees exactly what hci_st_open() sees. */
START_TEST(memory_reader_matches_file_reader)
{
    const char *path = tu_data_path("tiny-a-short.safetensors");
    size_t n = 0;
    unsigned char *bytes = tu_read_file(path, &n);
    ck_assert_ptr_nonnull(bytes);
    hci_st_file *f = NULL, *g = NULL;
    char err[512];
    ck_assert_int_eq(hci_st_open(path, &f, err, sizeof err), HC_OK);
    ck_assert_int_eq(hci_st_open_mem(bytes, n, "mem", &g, err, sizeof err), HC_OK);
    ck_assert_uint_eq(hci_st_count(f), hci_st_count(g));
    ck_assert_str_eq(hci_st_metadata(f, "config"), hci_st_metadata(g, "config"));
    for (size_t i = 0; i < hci_st_count(f); i++) {
        const hci_st_tensor *a = hci_st_at(f, i), *b = hci_st_at(g, i);
        ck_assert_str_eq(a->name, b->name);
        ck_assert(a->dtype == b->dtype && a->ndim == b->ndim && a->begin == b->begin && a->nbytes == b->nbytes);
        ck_assert_int_eq(memcmp(a->shape, b->shape, sizeof a->shape), 0);
        unsigned char x[64] = {0}, y[64] = {0};
        size_t k = a->nbytes < sizeof x ? (size_t)a->nbytes : sizeof x;
        ck_assert_int_eq(hci_st_read_at(f, a, a->nbytes - k, x, k, err, sizeof err), HC_OK);
        ck_assert_int_eq(hci_st_read_at(g, b, b->nbytes - k, y, k, err, sizeof err), HC_OK);
        ck_assert_int_eq(memcmp(x, y, k), 0);
    }
    hci_st_close(f);
    hci_st_close(g);
    /* truncated in memory: a format error, as for a truncated file */
    ck_assert_int_eq(hci_st_open_mem(bytes, n - 1, "mem", &g, err, sizeof err), HC_ERR_FORMAT);
    ck_assert_ptr_null(g);
    ck_assert_int_eq(hci_st_open_mem(NULL, 0, "mem", &g, err, sizeof err), HC_ERR_FORMAT);
    free(bytes);
}
END_TEST

Suite *tu_suite(int argc, char **argv)
{
    (void)argc, (void)argv;
    Suite *s = suite_create("limits");
    TCase *tc = tcase_create("limits");
    tcase_set_timeout(tc, 600);
    tcase_add_checked_fixture(tc, tmp_setup, tmp_teardown);
    tcase_add_test(tc, config_cannot_size_the_allocation);
    tcase_add_test(tc, index_text_limit);
    tcase_add_test(tc, config_text_limit);
    tcase_add_test(tc, memory_reader_matches_file_reader);
    suite_add_tcase(s, tc);
    return s;
}
