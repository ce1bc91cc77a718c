/* x_io.c - the experimental helpers that let a program without an allocator of its own for the
 * context's io_memory (the CLI's demo, with device memory on CUDA) run a long synthetic prefill at
 * the backend's speed: io memory, copies into and out of it, and the demo's stand-in for the MLP
 * between layers (hybridctx_experimental.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "ctx.h"
#include "hybridctx_experimental.h"
#include "../util/bf16.h"
#include "../util/threadpool.h"

#define RESIDUAL_EPS 1e-6

static int device_io(const hc_ctx *c) { return c->io_memory == HC_MEM_DEVICE; }

HC_API hc_status hc_x_ctx_io_alloc(hc_ctx *c, uint64_t bytes, void **out)
{
    if (!c || !out) return HC_ERR_NULL_ARG;
    c->err[0] = 0;
    *out = NULL;
    if (bytes == 0 || bytes > (uint64_t)SIZE_MAX)
        return hci_errf(c->err, sizeof c->err, HC_ERR_INVALID_ARG, "io_alloc: %llu bytes", (unsigned long long)bytes);
    if (device_io(c)) return c->be->ops->alloc(c->be, (size_t)bytes, out);
    if (!(*out = calloc(1, (size_t)bytes)))
        return hci_errf(c->err, sizeof c->err, HC_ERR_OUT_OF_MEMORY, "io_alloc: out of memory for %llu bytes",
                        (unsigned long long)bytes);
    return HC_OK;
}

HC_API void hc_x_ctx_io_free(hc_ctx *c, void *p)
{
    if (!c || !p) return;
    if (device_io(c)) c->be->ops->free(c->be, p);
    else free(p);
}

HC_API hc_status hc_x_ctx_io_copy(hc_ctx *c, void *dst, const void *src, uint64_t bytes, int32_t to_io)
{
    if (!c) return HC_ERR_NULL_ARG;
    c->err[0] = 0;
    if (!bytes) return HC_OK;
    if (!dst || !src) return hci_errf(c->err, sizeof c->err, HC_ERR_NULL_ARG, "io_copy: NULL dst or src");
    if (!device_io(c)) {
        memcpy(dst, src, (size_t)bytes);
        return HC_OK;
    }
    return to_io ? c->be->ops->upload(c->be, dst, src, (size_t)bytes)
                 : c->be->ops->download(c->be, dst, src, (size_t)bytes);
}

/* ---- the stand-in on the host: the sum of squares in eight double lanes (vectorisable) */
typedef struct residual_job {
    void *x;
    const void *y;
    int dim, bf16;
} residual_job;

/* x + y of element i: in place for f32 (the sum is the row's new x before the scaling); computed
 * twice for bf16 (once for the sum of squares, once for the scaled result) instead of a buffer. */
static inline float residual_sum(const residual_job *j, int64_t r, int i)
{
    size_t k = (size_t)r * j->dim + i;
    if (j->bf16) return hci_f32_from_bf16(((const uint16_t *)j->x)[k]) + hci_f32_from_bf16(((const uint16_t *)j->y)[k]);
    float *x = (float *)j->x + k;
    return *x += ((const float *)j->y)[k];
}

static void residual_rows(void *p, int64_t r0, int64_t r1, int tid)
{
    (void)tid;
    const residual_job *j = p;
    const int dim = j->dim;
    for (int64_t r = r0; r < r1; r++) {
        double ss[8] = {0};
        int i = 0;
        for (; i + 8 <= dim; i += 8)
            for (int k = 0; k < 8; k++) {
                double v = residual_sum(j, r, i + k);
                ss[k] += v * v;
            }
        for (; i < dim; i++) {
            double v = residual_sum(j, r, i);
            ss[0] += v * v;
        }
        double s = ((ss[0] + ss[1]) + (ss[2] + ss[3])) + ((ss[4] + ss[5]) + (ss[6] + ss[7]));
        float rs = (float)(1.0 / sqrt(s / dim + RESIDUAL_EPS));
        if (j->bf16) {
            uint16_t *xb = (uint16_t *)j->x + (size_t)r * dim;
            for (i = 0; i < dim; i++) xb[i] = hci_bf16_from_f32(residual_sum(j, r, i) * rs);
        } else {
            float *x = (float *)j->x + (size_t)r * dim;
            for (i = 0; i < dim; i++) x[i] *= rs;
        }
    }
}

HC_API hc_status hc_x_ctx_residual_norm(hc_ctx *c, void *x, const void *y, int64_t n_tokens)
{
    if (!c) return HC_ERR_NULL_ARG;
    c->err[0] = 0;
    if (!x || !y) return hci_errf(c->err, sizeof c->err, HC_ERR_NULL_ARG, "residual_norm: NULL x or y");
    if (n_tokens < 0)
        return hci_errf(c->err, sizeof c->err, HC_ERR_INVALID_ARG, "residual_norm: n_tokens %lld < 0",
                        (long long)n_tokens);
    if (!n_tokens) return HC_OK;
    hci_backend *be = c->be;
    int dim = c->model->cfg.dim, bf16 = c->io_dtype == HC_DTYPE_BF16;
    if (device_io(c)) {
        if (!be->ops->residual_norm)
            return hci_errf(c->err, sizeof c->err, HC_ERR_UNSUPPORTED, "residual_norm: the %s backend has no device io",
                            be->ops->name);
        return be->ops->residual_norm(be, x, y, bf16, n_tokens, dim, (float)RESIDUAL_EPS);
    }
    residual_job j = {x, y, dim, bf16};
    hci_pool *pool = be->ops->host_pool ? be->ops->host_pool(be) : NULL;
    hci_pool_for(pool, n_tokens, 16, residual_rows, &j);
    return HC_OK;
}
