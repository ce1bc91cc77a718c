/* cpu_backend.c - the CPU backend: host memory (cache pages too), input conversion and the ops
 * table. Kernels read page tables on the host: no pages_sync. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "cpu.h"
#include "cpu_slab.h"
#include "hybridctx.h"
#include "../../util/error.h"

static void cpu_destroy(hci_backend *be)
{
    hci_cpu *c = be->impl;
    if (c) hci_pool_destroy(c->pool);
    free(c);
    free(be);
}

static int cpu_alloc(hci_backend *be, size_t bytes, void **out)
{
    (void)be;
    *out = calloc(1, bytes ? bytes : 1);
    return *out ? HC_OK : HC_ERR_OUT_OF_MEMORY;
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14; older kernels answer EINVAL and pages fault as before */
#endif

/* Cache pages are made resident in one call each (and, in bulk, on the host pool's threads):
 * a 1M-token load or fill writes ~100k pages, and faulting each in 4 KiB at a time cost more
 * than the copy into it (in VMs a fault costs several microseconds). calloc would clear most
 * pages itself (all but memory fresh from the system), faulting them one by one, so: malloc,
 * populate the whole 4 KiB pages inside the allocation (advisory; its failure changes
 * nothing), then clear memory that is resident by then. */
static void page_clear(void *p, size_t bytes)
{
    size_t head = (4096 - ((uintptr_t)p & 4095)) & 4095; /* to the first whole page */
    if (bytes > head && (bytes - head) >= 4096)
        madvise((char *)p + head, (bytes - head) & ~(size_t)4095, MADV_POPULATE_WRITE);
    memset(p, 0, bytes);
}

static int cpu_page_alloc(hci_backend *be, size_t bytes, void **out)
{
    (void)be;
    if (!bytes) bytes = 1;
    *out = malloc(bytes);
    if (!*out) return HC_ERR_OUT_OF_MEMORY;
    page_clear(*out, bytes);
    return HC_OK;
}

typedef struct clear_job {
    void **pages;
    size_t bytes;
} clear_job;

static void clear_range(void *arg, int64_t lo, int64_t hi, int tid)
{
    (void)tid;
    const clear_job *j = arg;
    for (int64_t i = lo; i < hi; i++) page_clear(j->pages[i], j->bytes);
}

static int cpu_pages_alloc(hci_backend *be, size_t bytes, int n, void **out)
{
    if (!bytes) bytes = 1;
    for (int i = 0; i < n; i++)
        if (!(out[i] = malloc(bytes))) {
            while (i--) free(out[i]);
            return HC_ERR_OUT_OF_MEMORY;
        }
    clear_job j = {out, bytes};
    hci_pool_for(hci_cpu_pool(be), n, 4, clear_range, &j);
    return HC_OK;
}

static void cpu_free(hci_backend *be, void *p)
{
    (void)be;
    free(p);
}

static int cpu_pages_alloc_host(hci_backend *be, size_t bytes, int n, void **out)
{
    (void)be;
    return hci_slab_alloc(bytes, n, out);
}

static void cpu_page_free(hci_backend *be, void *p)
{
    (void)be;
    if (!hci_slab_free(p)) free(p);
}

static int cpu_copy(hci_backend *be, void *dst, const void *src, size_t bytes)
{
    (void)be;
    if (bytes) memmove(dst, src, bytes);
    return HC_OK;
}

static hci_pool *cpu_host_pool(hci_backend *be) { return hci_cpu_pool(be); }

static int cpu_check_input(hci_backend *be, const void *x, int io_dtype, int from_host, int64_t count,
                           int *bad)
{
    (void)be, (void)from_host;
    int b = 0;
    if (io_dtype == HC_DTYPE_BF16) {
        const uint16_t *h = x;
        for (int64_t i = 0; i < count; i++) b |= (h[i] & 0x7f80) == 0x7f80;
    } else {
        const uint32_t *u = x; /* exponent all ones: infinity or NaN */
        for (int64_t i = 0; i < count; i++) b |= (u[i] & 0x7f800000u) == 0x7f800000u;
    }
    *bad = b;
    return HC_OK;
}

static int cpu_load_input(hci_backend *be, const void *x, int io_dtype, int from_host, int64_t count,
                          uint16_t *xb)
{
    (void)be, (void)from_host;
    if (io_dtype == HC_DTYPE_BF16) {
        memmove(xb, x, (size_t)count * 2);
    } else {
        const float *f = x;
        for (int64_t i = 0; i < count; i++) xb[i] = hci_bf16_from_f32(f[i]);
    }
    return HC_OK;
}

static int cpu_store_output(hci_backend *be, const uint16_t *yb, int io_dtype, int to_host, int64_t count,
                            void *y)
{
    (void)be, (void)to_host;
    if (io_dtype == HC_DTYPE_BF16) {
        memmove(y, yb, (size_t)count * 2);
    } else {
        float *f = y;
        for (int64_t i = 0; i < count; i++) f[i] = hci_f32_from_bf16(yb[i]);
    }
    return HC_OK;
}

static const hci_backend_ops cpu_ops = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .copy = cpu_copy,
    .page_alloc = cpu_page_alloc, /* zero-filled and resident */
    .pages_alloc = cpu_pages_alloc,
    .pages_alloc_host = cpu_pages_alloc_host, /* zero-filled, resident when written */
    .page_free = cpu_page_free,
    .host_pool = cpu_host_pool,
    .check_input = cpu_check_input,
    .load_input = cpu_load_input,
    .store_output = cpu_store_output,
    .q_path = hci_cpu_q_path,
    .kv_path = hci_cpu_kv_path,
    .index_q = hci_cpu_index_q,
    .compress = hci_cpu_compress,
    .index_topk = hci_cpu_index_topk,
    .attend = hci_cpu_attend,
    .window_write = hci_cpu_window_write,
    .out_path = hci_cpu_out_path,
};

int hci_backend_cpu_create(const struct hc_model *m, const hci_backend_args *a, hci_backend **out)
{
    hci_backend *be = calloc(1, sizeof *be);
    hci_cpu *c = calloc(1, sizeof *c);
    if (c) c->pool = hci_pool_create(a->n_threads);
    if (!be || !c || !c->pool) {
        if (c) hci_pool_destroy(c->pool);
        free(be), free(c);
        return hci_errf(a->err, a->errsz, HC_ERR_OUT_OF_MEMORY, "out of memory creating the CPU backend");
    }
    be->ops = &cpu_ops;
    be->kind = HC_BACKEND_CPU;
    be->caps = HC_CAP_HOST_IO | HC_CAP_THREADS | HC_CAP_BITWISE_CPU;
    be->model = m;
    be->max_chunk = a->max_chunk > 0 ? a->max_chunk : 256;
    be->numerics = HC_NUMERICS_EXACT; /* the CPU has one arithmetic, the reference's */
    be->ops_may_fail = 1;
    be->err = a->err;
    be->errsz = a->errsz;
    be->impl = c;
    *out = be;
    return HC_OK;
}
