/* test_engine.c - the engine through the public API: split, thread and chunk-size invariance
 * (bitwise), bf16 vs fp8 cache equality, memory accounting, and every argument error leaving
 * the context unchanged. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "hybridctx.h"
#include "hybridctx_experimental.h"
#include "testutil.h"
#include "runner.h"

#define NTOK 600
static hc_model *g_model;
static int g_layers, g_dim;
static float *g_x; /* [layer][NTOK][dim] */

static void setup(void)
{
    ck_assert_int_eq(hc_model_create_random("tiny", 42, NULL, &g_model), HC_OK);
    g_layers = hc_model_n_layers(g_model);
    g_dim = hc_model_dim(g_model);
    g_x = malloc(sizeof(float) * (size_t)g_layers * NTOK * g_dim);
    tu_fill_normal(g_x, (size_t)g_layers * NTOK * g_dim, 7, 1.0f);
}

static void teardown(void)
{
    hc_model_free(g_model);
    free(g_x);
}

static hc_ctx *make_ctx(int threads, int fmt, int max_chunk)
{
    hc_ctx_params p;
    hc_ctx_params_init(&p, sizeof p);
    p.backend = HC_BACKEND_CPU;
    p.n_threads = threads;
    p.cache_format = fmt;
    p.max_chunk = max_chunk;
    hc_ctx *c = NULL;
    ck_assert_int_eq(hc_ctx_create(g_model, &p, &c), HC_OK);
    return c;
}

static const float *xin(int layer, int64_t t) { return g_x + ((size_t)layer * NTOK + (size_t)t) * g_dim; }

/* Run tokens [0, NTOK) in the given chunk sizes (cycled); y gets [layer][NTOK][dim]. */
static void run_split(hc_ctx *c, const int *sizes, int nsizes, float *y)
{
    int64_t t = 0;
    for (int k = 0; t < NTOK; k++) {
        int64_t n = sizes[k % nsizes];
        if (n > NTOK - t) n = NTOK - t;
        for (int l = 0; l < g_layers; l++)
            ck_assert_msg(hc_append(c, l, xin(l, t), n, y + ((size_t)l * NTOK + (size_t)t) * g_dim) == HC_OK,
                          "append failed: %s", hc_ctx_last_error(c));
        t += n;
        ck_assert_int_eq(hc_ctx_n_tokens(c), t);
    }
}

static float *new_y(void) { return malloc(sizeof(float) * (size_t)g_layers * NTOK * g_dim); }

static void assert_same(const float *a, const float *b, const char *what)
{
    size_t n = (size_t)g_layers * NTOK * g_dim;
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], 4) != 0)
            ck_abort_msg("%s: first difference at layer %zu token %zu dim %zu: %.9g vs %.9g", what,
                         i / ((size_t)NTOK * g_dim), i / g_dim % NTOK, i % g_dim, a[i], b[i]);
}

static float *reference_run(void)
{
    static const int whole[] = {NTOK};
    hc_ctx *c = make_ctx(2, HC_CACHE_BF16, 0);
    float *y = new_y();
    run_split(c, whole, 1, y);
    hc_ctx_free(c);
    return y;
}

START_TEST(split_invariance)
{
    float *ref = reference_run();
    static const int a[] = {1, 3, 4, 5, 127, 128, 129, 2, 64};
    static const int b[] = {1};
    static const int cc[] = {255, 1, 1, 1, 130};
    const int *splits[] = {a, b, cc};
    int counts[] = {9, 1, 5};
    for (int s = 0; s < 3; s++) {
        hc_ctx *c = make_ctx(2, HC_CACHE_BF16, 0);
        float *y = new_y();
        run_split(c, splits[s], counts[s], y);
        assert_same(y, ref, "split");
        free(y);
        hc_ctx_free(c);
    }
    free(ref);
}
END_TEST

START_TEST(thread_and_piece_invariance)
{
    float *ref = reference_run();
    static const int whole[] = {NTOK};
    int threads[] = {1, 3, 2};
    int pieces[] = {0, 7, 1000};
    for (int k = 0; k < 3; k++) {
        hc_ctx *c = make_ctx(threads[k], HC_CACHE_BF16, pieces[k]);
        float *y = new_y();
        run_split(c, whole, 1, y);
        assert_same(y, ref, "threads/pieces");
        free(y);
        hc_ctx_free(c);
    }
    free(ref);
}
END_TEST

START_TEST(fp8_cache_equals_bf16)
{
    float *ref = reference_run();
    static const int sizes[] = {300, 1, 1, 1, 50};
    hc_ctx *c = make_ctx(2, HC_CACHE_FP8, 0);
    float *y = new_y();
    float *yb = new_y();
    run_split(c, sizes, 5, y);
    assert_same(y, ref, "fp8 vs bf16 cache");
    hc_ctx *cb = make_ctx(2, HC_CACHE_BF16, 0);
    run_split(cb, sizes, 5, yb);
    ck_assert_uint_lt(hc_ctx_memory_bytes(c), hc_ctx_memory_bytes(cb));
    free(y), free(yb), free(ref);
    hc_ctx_free(c), hc_ctx_free(cb);
}
END_TEST

START_TEST(bf16_io_matches_f32_io)
{
    hc_ctx_params p;
    hc_ctx_params_init(&p, sizeof p);
    p.backend = HC_BACKEND_CPU;
    p.io_dtype = HC_DTYPE_BF16;
    hc_ctx *c = NULL, *cf = make_ctx(0, 0, 0);
    ck_assert_int_eq(hc_ctx_create(g_model, &p, &c), HC_OK);
    int n = 150;
    uint16_t *xb = malloc(sizeof(uint16_t) * (size_t)n * g_dim), *yb = malloc(sizeof(uint16_t) * (size_t)n * g_dim);
    float *xf = malloc(sizeof(float) * (size_t)n * g_dim), *yf = malloc(sizeof(float) * (size_t)n * g_dim);
    for (int l = 0; l < g_layers; l++) {
        for (int i = 0; i < n * g_dim; i++) {
            uint32_t u;
            float v = xin(l, 0)[i];
            memcpy(&u, &v, 4);
            xb[i] = (uint16_t)(u >> 16); /* truncation gives a bf16 value */
            xf[i] = tu_bf16(xb[i]);
        }
        ck_assert_int_eq(hc_append(c, l, xb, n, yb), HC_OK);
        ck_assert_int_eq(hc_append(cf, l, xf, n, yf), HC_OK);
        for (int i = 0; i < n * g_dim; i++) ck_assert_float_eq(tu_bf16(yb[i]), yf[i]);
    }
    free(xb), free(yb), free(xf), free(yf);
    hc_ctx_free(c), hc_ctx_free(cf);
}
END_TEST

START_TEST(reset_and_in_place)
{
    float *ref = reference_run();
    static const int sizes[] = {200};
    hc_ctx *c = make_ctx(2, 0, 0);
    float *y = new_y();
    run_split(c, sizes, 1, y);
    ck_assert_int_eq(hc_ctx_reset(c), HC_OK);
    ck_assert_int_eq(hc_ctx_n_tokens(c), 0);
    /* y may alias x */
    memcpy(y, g_x, sizeof(float) * (size_t)g_layers * NTOK * g_dim);
    for (int l = 0; l < g_layers; l++) {
        float *io = y + (size_t)l * NTOK * g_dim;
        ck_assert_int_eq(hc_append(c, l, io, NTOK, io), HC_OK);
    }
    assert_same(y, ref, "after reset, in place");
    free(y), free(ref);
    hc_ctx_free(c);
}
END_TEST

/* Every refused call leaves the context as it was: after the errors, the run still matches. */
START_TEST(errors_leave_context_unchanged)
{
    float *ref = reference_run();
    hc_ctx_params p;
    hc_ctx_params_init(&p, sizeof p);
    p.backend = HC_BACKEND_CPU;
    p.max_tokens = NTOK;
    hc_ctx *c = NULL;
    ck_assert_int_eq(hc_ctx_create(g_model, &p, &c), HC_OK);
    float *y = new_y();
    float *bad = malloc(sizeof(float) * 10 * (size_t)g_dim);
    memcpy(bad, xin(0, 0), sizeof(float) * 10 * (size_t)g_dim);
    bad[5 * g_dim + 3] = NAN;
    ck_assert_int_eq(hc_append(NULL, 0, bad, 1, y), HC_ERR_NULL_ARG);
    ck_assert_int_eq(hc_append(c, 0, NULL, 1, y), HC_ERR_NULL_ARG);
    ck_assert_int_eq(hc_append(c, 0, bad, 1, NULL), HC_ERR_NULL_ARG);
    ck_assert_int_eq(hc_append(c, -1, bad, 1, y), HC_ERR_LAYER_RANGE);
    ck_assert_int_eq(hc_append(c, g_layers, bad, 1, y), HC_ERR_LAYER_RANGE);
    ck_assert_int_eq(hc_append(c, 1, bad, 1, y), HC_ERR_ORDER);
    ck_assert_int_eq(hc_append(c, 0, bad, 0, y), HC_ERR_N_TOKENS);
    ck_assert_int_eq(hc_append(c, 0, bad, -5, y), HC_ERR_N_TOKENS);
    ck_assert_int_eq(hc_append(c, 0, bad, NTOK + 1, y), HC_ERR_POSITION);
    ck_assert_int_eq(hc_append(c, 0, bad, 10, y), HC_ERR_NONFINITE);
    ck_assert_ptr_nonnull(strstr(hc_ctx_last_error(c), "NaN"));
    bad[5 * g_dim + 3] = INFINITY;
    ck_assert_int_eq(hc_append(c, 0, bad, 10, y), HC_ERR_NONFINITE);
    ck_assert_int_eq(hc_ctx_n_tokens(c), 0);
    ck_assert_int_eq(hc_ctx_next_layer(c), 0);
    /* a chunk in progress: layer 0 twice, a different n, a non-finite layer-1 input */
    ck_assert_int_eq(hc_append(c, 0, xin(0, 0), 300, y), HC_OK);
    ck_assert_int_eq(hc_append(c, 0, xin(0, 0), 300, y), HC_ERR_ORDER);
    ck_assert_int_eq(hc_append(c, 1, xin(1, 0), 299, y), HC_ERR_ORDER);
    ck_assert_int_eq(hc_append(c, 2, xin(2, 0), 300, y), HC_ERR_ORDER);
    ck_assert_int_eq(hc_append(c, 1, bad, 10, y), HC_ERR_ORDER);
    float *bad300 = malloc(sizeof(float) * 300 * (size_t)g_dim);
    memcpy(bad300, xin(1, 0), sizeof(float) * 300 * (size_t)g_dim);
    bad300[299 * g_dim] = -INFINITY;
    ck_assert_int_eq(hc_append(c, 1, bad300, 300, y), HC_ERR_NONFINITE);
    ck_assert_int_eq(hc_ctx_next_layer(c), 1);
    /* finish the run; the output must equal the uninterrupted one */
    float *out = new_y();
    memcpy(out, y, sizeof(float) * 300 * (size_t)g_dim);
    for (int l = 1; l < g_layers; l++)
        ck_assert_int_eq(hc_append(c, l, xin(l, 0), 300, out + (size_t)l * NTOK * g_dim), HC_OK);
    for (int l = 0; l < g_layers; l++)
        ck_assert_int_eq(hc_append(c, l, xin(l, 300), 300, out + ((size_t)l * NTOK + 300) * g_dim), HC_OK);
    assert_same(out, ref, "after refused calls");
    ck_assert_int_eq(hc_append(c, 0, xin(0, 0), 1, y), HC_ERR_POSITION);
    free(y), free(bad), free(bad300), free(out), free(ref);
    hc_ctx_free(c);
}
END_TEST

START_TEST(model_and_ctx_argument_errors)
{
    hc_model *m = (hc_model *)1;
    char msg[256] = "";
    hc_model_params mp;
    hc_model_params_init(&mp, sizeof mp);
    mp.errbuf = msg;
    mp.errbuf_size = sizeof msg;
    ck_assert_int_eq(hc_model_create_random(NULL, 1, NULL, &m), HC_ERR_NULL_ARG);
    ck_assert_int_eq(hc_model_create_random("tiny", 1, NULL, NULL), HC_ERR_NULL_ARG);
    ck_assert_int_eq(hc_model_create_random("v5-giant", 1, &mp, &m), HC_ERR_UNKNOWN_PRESET);
    ck_assert_ptr_null(m);
    ck_assert_ptr_nonnull(strstr(msg, "v5-giant"));
    ck_assert_int_eq(hc_model_create_random("{\"hidden_size\": 100}", 1, &mp, &m), HC_ERR_BAD_CONFIG);
    ck_assert_ptr_nonnull(strstr(msg, "hidden_size"));
    ck_assert_int_eq(hc_model_create_random("{\"num_hidden_layers\": 2, \"compress_ratios\": [0, 5]}", 1, &mp, &m),
                     HC_ERR_BAD_CONFIG);
    ck_assert_int_eq(hc_model_create_random("{\"num_key_value_heads\": 8}", 1, &mp, &m), HC_ERR_BAD_CONFIG);
    ck_assert_int_eq(hc_model_create_random("{\"hidden_size\": ", 1, &mp, &m), HC_ERR_FORMAT);
    ck_assert_int_eq(hc_model_create_random("{\"head_dim\": \"big\"}", 1, &mp, &m), HC_ERR_BAD_CONFIG);
    ck_assert_int_eq(hc_model_load(NULL, NULL, &m), HC_ERR_NULL_ARG);
    ck_assert_int_eq(hc_model_load("/nonexistent/path/x.safetensors", NULL, &m), HC_ERR_IO);
    ck_assert_int_eq(hc_ctx_create(NULL, NULL, NULL), HC_ERR_NULL_ARG);
    hc_ctx *c = (hc_ctx *)1;
    hc_ctx_params p;
    hc_ctx_params_init(&p, sizeof p);
    p.cache_format = 7;
    ck_assert_int_eq(hc_ctx_create(g_model, &p, &c), HC_ERR_INVALID_ARG);
    ck_assert_ptr_null(c);
    hc_ctx_params_init(&p, sizeof p);
    p.backend = HC_BACKEND_CPU;
    p.io_memory = HC_MEM_DEVICE;
    ck_assert_int_eq(hc_ctx_create(g_model, &p, &c), HC_ERR_INVALID_ARG);
    /* a newer caller's larger struct: zero tail accepted, non-zero tail refused */
    unsigned char big[sizeof(hc_ctx_params) + 16] = {0};
    hc_ctx_params_init((hc_ctx_params *)big, sizeof big);
    ((hc_ctx_params *)big)->backend = HC_BACKEND_CPU;
    ck_assert_int_eq(hc_ctx_create(g_model, (hc_ctx_params *)big, &c), HC_OK);
    hc_ctx_free(c);
    big[sizeof(hc_ctx_params) + 3] = 1;
    ck_assert_int_eq(hc_ctx_create(g_model, (hc_ctx_params *)big, &c), HC_ERR_UNSUPPORTED);
    if (hc_cuda_device_count(&(int32_t){0}) == HC_OK) {
        int32_t nd = 0;
        hc_cuda_device_count(&nd);
        if (nd == 0) {
            hc_ctx_params_init(&p, sizeof p);
            p.backend = HC_BACKEND_CUDA;
            ck_assert_int_eq(hc_ctx_create(g_model, &p, &c), HC_ERR_NO_DEVICE);
        }
    }
    ck_assert_int_eq(hc_model_layer_ratio(g_model, 4), -1);
    ck_assert_int_eq(hc_model_layer_ratio(g_model, 2), 128);
    ck_assert_int_eq(hc_model_n_layers(NULL), -1);
    ck_assert_str_eq(hc_status_name(HC_ERR_ORDER), "HC_ERR_ORDER");
    ck_assert_str_eq(hc_strerror(12345), "unknown status");
    hc_ctx_free(NULL);
    hc_model_free(NULL);
}
END_TEST

/* The spec's 1M-token figures for v4-pro: 9.62 GiB (bf16) and 4.92 GiB (fp8). */
START_TEST(cache_bytes_formula)
{
    hc_model_params mp;
    hc_model_params_init(&mp, sizeof mp);
    mp.flags = HC_MODEL_GEOMETRY_ONLY;
    hc_model *pro = NULL;
    ck_assert_int_eq(hc_model_create_random("v4-pro", 0, &mp, &pro), HC_OK);
    uint64_t kv = 0, st = 0;
    ck_assert_int_eq(hc_model_cache_bytes(pro, 1048576, HC_CACHE_BF16, &kv, &st), HC_OK);
    ck_assert_uint_eq(kv, 10334371840ull); /* 30 x 320.125 MiB + 31 x 8.125 MiB */
    ck_assert(fabs((double)kv / (1 << 30) - 9.62) < 0.01);
    ck_assert_int_eq(hc_model_cache_bytes(pro, 1048576, HC_CACHE_FP8, &kv, NULL), HC_OK);
    ck_assert_uint_eq(kv, 5280404480ull);
    ck_assert(fabs((double)kv / (1 << 30) - 4.92) < 0.01);
    hc_model_info info = {.struct_size = sizeof info};
    ck_assert_int_eq(hc_model_info_get(pro, &info), HC_OK);
    ck_assert_int_eq(info.has_weights, 0);
    ck_assert_int_eq(info.n_heads, 128);
    /* a geometry-only model refuses to compute */
    hc_ctx_params p;
    hc_ctx_params_init(&p, sizeof p);
    p.backend = HC_BACKEND_CPU;
    hc_ctx *c = NULL;
    ck_assert_int_eq(hc_ctx_create(pro, &p, &c), HC_OK);
    float x[7168] = {0};
    ck_assert_int_eq(hc_append(c, 0, x, 1, x), HC_ERR_UNSUPPORTED);
    hc_ctx_free(c);
    hc_model_free(pro);
}
END_TEST

/* A context's bytes equal the formula whenever every layer's entry count fills its pages. */
START_TEST(ctx_memory_matches_formula)
{
    hc_model *m = NULL;
    ck_assert_int_eq(hc_model_create_random("{\"hidden_size\": 256, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
                                            "\"head_dim\": 128, \"q_lora_rank\": 128, \"o_groups\": 2, \"o_lora_rank\": 64,"
                                            "\"index_n_heads\": 4, \"index_topk\": 8, \"compress_ratios\": [4, 0]}",
                                            3, NULL, &m), HC_OK);
    for (int fmt = HC_CACHE_BF16; fmt <= HC_CACHE_FP8; fmt++) {
        hc_ctx_params p;
        hc_ctx_params_init(&p, sizeof p);
        p.backend = HC_BACKEND_CPU;
        p.cache_format = fmt;
        hc_ctx *c = NULL;
        ck_assert_int_eq(hc_ctx_create(m, &p, &c), HC_OK);
        int n = 512;
        float *x = calloc((size_t)n * 256, sizeof(float));
        tu_fill_normal(x, (size_t)n * 256, 5, 1.0f);
        for (int l = 0; l < 2; l++) ck_assert_int_eq(hc_append(c, l, x, n, x), HC_OK);
        uint64_t kv, st;
        ck_assert_int_eq(hc_model_cache_bytes(m, n, fmt, &kv, &st), HC_OK);
        ck_assert_uint_eq(hc_ctx_memory_bytes(c), kv + st);
        free(x);
        hc_ctx_free(c);
    }
    hc_model_free(m);
}
END_TEST

/* The demo's stand-in between layers (hc_x_ctx_residual_norm) against a direct computation,
 * f32 and bf16 io, on 1, 3 and 2 threads (the same bits), and the io helpers of a host-memory
 * context; bad arguments change nothing. */
static void residual_reference(const float *x, const float *y, int64_t n, int dim, float *out)
{
    for (int64_t t = 0; t < n; t++) {
        double ss = 0;
        for (int i = 0; i < dim; i++) {
            float v = x[t * dim + i] + y[t * dim + i];
            ss += (double)v * v;
        }
        float r = (float)(1.0 / sqrt(ss / dim + 1e-6));
        for (int i = 0; i < dim; i++) out[t * dim + i] = (x[t * dim + i] + y[t * dim + i]) * r;
    }
}

static uint16_t bf16_rne(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16); /* finite values */
}

START_TEST(residual_norm_and_io_helpers)
{
    const int64_t n = 37;
    size_t count = (size_t)n * g_dim;
    float *ref = malloc(sizeof(float) * count), *x = malloc(sizeof(float) * count), *first = malloc(sizeof(float) * count);
    residual_reference(xin(0, 0), xin(1, 0), n, g_dim, ref);
    int threads[] = {1, 3, 2};
    for (int k = 0; k < 3; k++) {
        hc_ctx *c = make_ctx(threads[k], HC_CACHE_FP8, 0);
        void *dx = NULL, *dy = NULL;
        ck_assert_int_eq(hc_x_ctx_io_alloc(c, sizeof(float) * count, &dx), HC_OK);
        ck_assert_int_eq(hc_x_ctx_io_alloc(c, sizeof(float) * count, &dy), HC_OK);
        ck_assert_int_eq(hc_x_ctx_io_copy(c, dx, xin(0, 0), sizeof(float) * count, 1), HC_OK);
        ck_assert_int_eq(hc_x_ctx_io_copy(c, dy, xin(1, 0), sizeof(float) * count, 1), HC_OK);
        ck_assert_int_eq(hc_x_ctx_residual_norm(c, dx, dy, n), HC_OK);
        ck_assert_int_eq(hc_x_ctx_io_copy(c, x, dx, sizeof(float) * count, 0), HC_OK);
        double worst = 0;
        for (size_t i = 0; i < count; i++) {
            double e = fabs((double)x[i] - ref[i]) / (fabs(ref[i]) + 1e-3);
            if (e > worst) worst = e;
        }
        ck_assert_msg(worst < 1e-6, "f32 residual norm off by %g", worst);
        if (k == 0) memcpy(first, x, sizeof(float) * count);
        else ck_assert_msg(!memcmp(first, x, sizeof(float) * count), "thread count changed the bits");
        /* refusals: x unchanged */
        ck_assert_int_eq(hc_x_ctx_residual_norm(c, dx, dy, -1), HC_ERR_INVALID_ARG);
        ck_assert_int_eq(hc_x_ctx_residual_norm(c, NULL, dy, n), HC_ERR_NULL_ARG);
        ck_assert_int_eq(hc_x_ctx_residual_norm(NULL, dx, dy, n), HC_ERR_NULL_ARG);
        ck_assert_int_eq(hc_x_ctx_residual_norm(c, dx, dy, 0), HC_OK);
        ck_assert(!memcmp(dx, first, sizeof(float) * count));
        void *none = (void *)1;
        ck_assert_int_eq(hc_x_ctx_io_alloc(c, 0, &none), HC_ERR_INVALID_ARG);
        ck_assert_ptr_null(none);
        ck_assert_int_eq(hc_x_ctx_io_copy(c, NULL, x, 4, 1), HC_ERR_NULL_ARG);
        ck_assert_int_eq(hc_ctx_n_tokens(c), 0);
        hc_x_ctx_io_free(c, dx);
        hc_x_ctx_io_free(c, dy);
        hc_x_ctx_io_free(c, NULL);
        hc_ctx_free(c);
    }
    /* bf16 io: the sum of the bf16 values in fp32, the result rounded once */
    hc_ctx_params p;
    hc_ctx_params_init(&p, sizeof p);
    p.backend = HC_BACKEND_CPU;
    p.io_dtype = HC_DTYPE_BF16;
    hc_ctx *c = NULL;
    ck_assert_int_eq(hc_ctx_create(g_model, &p, &c), HC_OK);
    uint16_t *bx = malloc(2 * count), *by = malloc(2 * count);
    float *fx = calloc(count, sizeof(float)), *fy = calloc(count, sizeof(float));
    for (size_t i = 0; i < count; i++) {
        bx[i] = bf16_rne(xin(0, 0)[i]), by[i] = bf16_rne(xin(1, 0)[i]);
        fx[i] = tu_bf16(bx[i]), fy[i] = tu_bf16(by[i]);
    }
    residual_reference(fx, fy, n, g_dim, ref);
    ck_assert_int_eq(hc_x_ctx_residual_norm(c, bx, by, n), HC_OK);
    size_t differ = 0;
    for (size_t i = 0; i < count; i++) differ += bx[i] != bf16_rne(ref[i]);
    ck_assert_msg(differ == 0, "%zu bf16 values differ", differ);
    hc_ctx_free(c);
    free(bx), free(by), free(fx), free(fy), free(ref), free(x), free(first);
}
END_TEST

Suite *tu_suite(int argc, char **argv)
{
    (void)argc, (void)argv;
    Suite *s = suite_create("engine");
    TCase *tc = tcase_create("cpu");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, split_invariance);
    tcase_add_test(tc, thread_and_piece_invariance);
    tcase_add_test(tc, fp8_cache_equals_bf16);
    tcase_add_test(tc, bf16_io_matches_f32_io);
    tcase_add_test(tc, reset_and_in_place);
    tcase_add_test(tc, errors_leave_context_unchanged);
    tcase_add_test(tc, model_and_ctx_argument_errors);
    tcase_add_test(tc, cache_bytes_formula);
    tcase_add_test(tc, ctx_memory_matches_formula);
    tcase_add_test(tc, residual_norm_and_io_helpers);
    suite_add_tcase(s, tc);
    return s;
}
