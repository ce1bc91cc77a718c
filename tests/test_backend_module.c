/* test_backend_module.c - the core library without a usable CUDA module: it loads and runs on
 * the CPU, asking for CUDA fails cleanly with the reason, and the backend query says why AUTO
 * chose the CPU. One scenario per run (the module is loaded once per process), named by
 * argv[1], with HYBRIDCTX_CUDA_MODULE pointing at the file under test (tests/meson.build):
 *   absent     no file there             HC_ERR_NO_DEVICE,   HC_BACKEND_MODULE_MISSING
 *   garbage    not a shared library      HC_ERR_NO_DEVICE,   HC_BACKEND_MODULE_MISSING
 *   no_entry   a library without entry   HC_ERR_NO_DEVICE,   HC_BACKEND_MODULE_MISSING
 *   bad_abi    another table version     HC_ERR_UNSUPPORTED, HC_BACKEND_MODULE_INVALID
 *   bad_build  another build's module    HC_ERR_UNSUPPORTED, HC_BACKEND_MODULE_INVALID
 * In a build without CUDA every scenario gives HC_ERR_NO_DEVICE and HC_BACKEND_NOT_BUILT. */
#include <check.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "hybridctx.h"
#include "testutil.h"
#include "runner.h"

static const struct scenario {
    const char *name;
    hc_status status;
    int32_t state;
    const char *says;    /* in the detail */
} scenarios[] = {
    {"absent", HC_ERR_NO_DEVICE, HC_BACKEND_MODULE_MISSING, "cannot load"},
    {"garbage", HC_ERR_NO_DEVICE, HC_BACKEND_MODULE_MISSING, "cannot load"},
    {"no_entry", HC_ERR_NO_DEVICE, HC_BACKEND_MODULE_MISSING, "not a libhybridctx backend module"},
    {"bad_abi", HC_ERR_UNSUPPORTED, HC_BACKEND_MODULE_INVALID, "another version"},
    {"bad_build", HC_ERR_UNSUPPORTED, HC_BACKEND_MODULE_INVALID, "another build"},
};
static struct scenario g_want;
static const char *g_path;

START_TEST(query_says_why)
{
    hc_backend_info info = {.struct_size = sizeof info};
    ck_assert_int_eq(hc_backend_info_get(HC_BACKEND_CUDA, 0, &info), HC_OK);
    ck_assert_int_eq(info.backend, HC_BACKEND_CUDA);
    ck_assert_str_eq(info.name, "cuda");
    ck_assert_int_eq(info.state, g_want.state);
    ck_assert_int_eq(info.n_devices, 0);
    ck_assert_int_eq(info.caps, 0);
    ck_assert_msg(strstr(info.detail, g_want.says), "detail \"%s\" lacks \"%s\"", info.detail, g_want.says);
    if (g_want.state != HC_BACKEND_NOT_BUILT)
        ck_assert_msg(strstr(info.detail, g_path), "detail \"%s\" does not name %s", info.detail, g_path);
    /* AUTO picks the CPU and keeps the reason */
    hc_backend_info a = {.struct_size = sizeof a};
    ck_assert_int_eq(hc_backend_info_get(HC_BACKEND_AUTO, 0, &a), HC_OK);
    ck_assert_int_eq(a.backend, HC_BACKEND_CPU);
    ck_assert_str_eq(a.name, "cpu");
    ck_assert_int_eq(a.state, g_want.state);
    ck_assert_msg(strstr(a.detail, "cuda not used") && strstr(a.detail, g_want.says), "AUTO detail \"%s\"", a.detail);
    ck_assert(a.caps & HC_CAP_HOST_IO);
    ck_assert(!(a.caps & HC_CAP_DEVICE_IO));
    /* the CPU is always there; a short struct is written only as far as its size */
    hc_backend_info c = {.struct_size = sizeof c};
    ck_assert_int_eq(hc_backend_info_get(HC_BACKEND_CPU, 0, &c), HC_OK);
    ck_assert_int_eq(c.state, HC_BACKEND_USABLE);
    ck_assert_int_eq(c.n_devices, 1);
    ck_assert_uint_eq(c.caps, HC_CAP_HOST_IO | HC_CAP_THREADS | HC_CAP_BITWISE_CPU);
    hc_backend_info shorter;
    memset(&shorter, 0x5a, sizeof shorter);
    shorter.struct_size = (uint32_t)offsetof(hc_backend_info, n_devices);
    ck_assert_int_eq(hc_backend_info_get(HC_BACKEND_CPU, 0, &shorter), HC_OK);
    ck_assert_int_eq(shorter.state, HC_BACKEND_USABLE);
    ck_assert_int_eq(shorter.n_devices, 0x5a5a5a5a);
    int32_t nd = -1;
    ck_assert_int_eq(hc_cuda_device_count(&nd), HC_OK);
    ck_assert_int_eq(nd, 0);
    /* bad queries */
    ck_assert_int_eq(hc_backend_info_get(HC_BACKEND_CUDA, 0, NULL), HC_ERR_NULL_ARG);
    ck_assert_int_eq(hc_backend_info_get(7, 0, &info), HC_ERR_INVALID_ARG);
    ck_assert_int_eq(hc_backend_info_get(HC_BACKEND_CUDA, -1, &info), HC_ERR_INVALID_ARG);
    info.struct_size = 2;
    ck_assert_int_eq(hc_backend_info_get(HC_BACKEND_CUDA, 0, &info), HC_ERR_INVALID_ARG);
}
END_TEST

START_TEST(cuda_refused_cpu_runs)
{
    hc_model *m = NULL;
    ck_assert_int_eq(hc_model_create_random("tiny", 1, NULL, &m), HC_OK);
    char err[512] = "unchanged";
    hc_ctx_params p;
    hc_ctx_params_init(&p, sizeof p);
    p.backend = HC_BACKEND_CUDA;
    p.errbuf = err;
    p.errbuf_size = sizeof err;
    hc_ctx *c = (hc_ctx *)&p; /* must come back NULL */
    ck_assert_int_eq(hc_ctx_create(m, &p, &c), g_want.status);
    ck_assert_ptr_null(c);
    ck_assert_msg(strstr(err, g_want.says), "errbuf \"%s\" lacks \"%s\"", err, g_want.says);
    /* device-memory I/O needs a backend that has it */
    p.backend = HC_BACKEND_AUTO;
    p.io_memory = HC_MEM_DEVICE;
    ck_assert_int_eq(hc_ctx_create(m, &p, &c), HC_ERR_INVALID_ARG);
    ck_assert_msg(strstr(err, "device-memory"), "errbuf \"%s\"", err);
    /* AUTO runs on the CPU */
    p.io_memory = HC_MEM_HOST;
    ck_assert_int_eq(hc_ctx_create(m, &p, &c), HC_OK);
    ck_assert_int_eq(hc_ctx_backend(c), HC_BACKEND_CPU);
    int L = hc_model_n_layers(m), D = hc_model_dim(m), n = 5;
    float *x = malloc(sizeof(float) * (size_t)n * D), *y = malloc(sizeof(float) * (size_t)n * D);
    tu_fill_normal(x, (size_t)n * D, 3, 1.0f);
    for (int l = 0; l < L; l++) ck_assert_msg(hc_append(c, l, x, n, y) == HC_OK, "%s", hc_ctx_last_error(c));
    double sum = 0;
    for (int i = 0; i < n * D; i++) sum += fabs(y[i]);
    ck_assert(isfinite(sum) && sum > 0);
    ck_assert_int_eq(hc_ctx_n_tokens(c), n);
    free(x), free(y);
    hc_ctx_free(c);
    hc_model_free(m);
}
END_TEST

Suite *tu_suite(int argc, char **argv)
{
    g_path = getenv("HYBRIDCTX_CUDA_MODULE");
    if (argc < 2 || !g_path) {
        fprintf(stderr, "usage: HYBRIDCTX_CUDA_MODULE=FILE test_backend_module SCENARIO\n");
        exit(2);
    }
    for (size_t i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++)
        if (!strcmp(argv[1], scenarios[i].name)) g_want = scenarios[i];
    if (!g_want.name) {
        fprintf(stderr, "test_backend_module: unknown scenario %s\n", argv[1]);
        exit(2);
    }
#ifndef HC_HAVE_CUDA
    g_want.status = HC_ERR_NO_DEVICE;
    g_want.state = HC_BACKEND_NOT_BUILT;
    g_want.says = "no CUDA backend";
#endif
    Suite *s = suite_create("backend_module");
    TCase *tc = tcase_create(argv[1]);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, query_says_why);
    tcase_add_test(tc, cuda_refused_cpu_runs);
    suite_add_tcase(s, tc);
    return s;
}
