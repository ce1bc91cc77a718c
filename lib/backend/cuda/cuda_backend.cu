/* cuda_backend.cu - the CUDA backend: device and stream, the device copy of the weights, device
 * memory and cache pages, input/output, and the ops table that runs each step of the attention
 * block with cuBLASLt and the kernel families of kernels/. Work is queued on the context's stream;
 * a call returns after its host-visible results are ready. */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <vector>
#include "device.h"
#include "hybridctx.h"

/* ---------------------------------------------------------------------------------------------
 * errors and the current device
 * ------------------------------------------------------------------------------------------- */
int hci_cu_fail_msg(char *err, size_t errsz, cudaError_t e, const char *what)
{
    int st = e == cudaErrorMemoryAllocation ? HC_ERR_OUT_OF_MEMORY : HC_ERR_CUDA;
    hci_errf(err, errsz, st, "CUDA %s (%s) in %s", cudaGetErrorName(e), cudaGetErrorString(e), what);
    /* clear a non-sticky error (a failed allocation) so that the next launch check does not see it */
    cudaGetLastError();
    return st;
}

int hci_cu_fail(hci_backend *be, cudaError_t e, const char *what) { return hci_cu_fail_msg(be->err, be->errsz, e, what); }

int hci_cu_blas_fail(hci_backend *be, cublasStatus_t s, const char *what)
{
    hci_errf(be->err, be->errsz, HC_ERR_CUBLAS, "cuBLASLt status %d in %s", (int)s, what);
    return HC_ERR_CUBLAS;
}

/* Every entry point runs on the context's device and gives the caller's current device back. */
using DeviceGuard = hci_cu_device_guard;

static void *cu_stream(hci_backend *be) { return (void *)hci_cu(be)->stream; }

static void sync_ops(hci_backend *be);

/* The named options of cuda_options.h, by the names docs/cuda.md gives them. */
static int cu_set_option(hci_backend *be, const char *name, int64_t value)
{
    hci_cu_options *o = &hci_cu(be)->opt;
    static const struct { const char *name; size_t offset; } fields[] = {
        {"fp8_gemm_cublaslt", offsetof(hci_cu_options, fp8_gemm_cublaslt)},
        {"index_exact_only", offsetof(hci_cu_options, index_exact_only)},
        {"attend_simple", offsetof(hci_cu_options, attend_simple)},
        {"attend_fast", offsetof(hci_cu_options, attend_fast)},
        {"attend_pingpong", offsetof(hci_cu_options, attend_pingpong)},
        {"gemv_fast", offsetof(hci_cu_options, gemv_fast)},
        {"gemv_teams", offsetof(hci_cu_options, gemv_teams)},
        {"index_fast", offsetof(hci_cu_options, index_fast)},
        {"index_tcsum", offsetof(hci_cu_options, index_tcsum)},
        {"index_tcpipe", offsetof(hci_cu_options, index_tcpipe)},
        {"index_f32sum", offsetof(hci_cu_options, index_f32sum)},
        {"index_rega", offsetof(hci_cu_options, index_rega)},
        {"index_tcmix", offsetof(hci_cu_options, index_tcmix)},
        {"comp_fast", offsetof(hci_cu_options, comp_fast)},
        {"gemm_wgmma", offsetof(hci_cu_options, gemm_wgmma)},
        {"batch_shared", offsetof(hci_cu_options, batch_shared)},
        {"gemm_fp8_native", offsetof(hci_cu_options, gemm_fp8_native)},
        {"gemm_fp8_native_out", offsetof(hci_cu_options, gemm_fp8_native_out)},
        {"decode_fused", offsetof(hci_cu_options, decode_fused)},
    };
    for (const auto &f : fields)
        if (!strcmp(name, f.name)) {
            if (value != 0 && value != 1)
                return hci_errf(be->err, be->errsz, HC_ERR_INVALID_ARG, "option %s takes 0 or 1", name);
            *(int *)((char *)o + f.offset) = (int)value;
            sync_ops(be);
            return HC_OK;
        }
    return hci_errf(be->err, be->errsz, HC_ERR_UNSUPPORTED, "the CUDA backend has no option \"%s\"", name);
}

/* Work queued on `to` from now on runs after the work queued so far on from's stream. */
static cudaError_t order_after(hci_cuda *from, cudaStream_t to)
{
    if (from->stream == to) return cudaSuccess;
    cudaError_t e = cudaEventRecord(from->order, from->stream);
    return e == cudaSuccess ? cudaStreamWaitEvent(to, from->order, 0) : e;
}

static int cu_stream_wait(hci_backend *be, hci_backend *on)
{
    hci_cuda *cu = hci_cu(be);
    DeviceGuard g(cu->device);
    HCI_CU_TRY(be, order_after(hci_cu(on), cu->stream));
    return HC_OK;
}

/* hc_ctx_set_stream: the new stream waits for the old one's work; a lent stream goes back to the
 * device object (its pending work completes in order, whoever takes it next). */
static int cu_set_stream(hci_backend *be, void *stream)
{
    hci_cuda *cu = hci_cu(be);
    cudaStream_t next = (cudaStream_t)stream, lent = nullptr;
    if (next ? next == cu->stream : cu->own_stream) return HC_OK; /* already there */
    DeviceGuard g(cu->device);
    if (!next) {
        int st = hci_cu_device_take_stream(cu->dev, &lent);
        if (st) return hci_errf(be->err, be->errsz, st, "cannot create a CUDA stream on device %d", cu->device);
        next = lent;
    }
    cudaError_t e = order_after(cu, next);
    if (e != cudaSuccess) {
        if (lent) hci_cu_device_give_stream(cu->dev, lent);
        return hci_cu_fail(be, e, "ordering the new stream after the old one");
    }
    if (cu->own_stream) hci_cu_device_give_stream(cu->dev, cu->stream);
    cu->stream = next;
    cu->own_stream = lent != nullptr;
    return HC_OK;
}

extern "C" void hci_cu_set_options(hci_backend *be, const hci_cu_options *opt)
{
    hci_cu(be)->opt = *opt;
    sync_ops(be);
}

/* ---------------------------------------------------------------------------------------------
 * memory
 * ------------------------------------------------------------------------------------------- */
static int cu_alloc(hci_backend *be, size_t bytes, void **out)
{
    hci_cuda *cu = hci_cu(be);
    DeviceGuard g(cu->device);
    *out = nullptr;
    HCI_CU_TRY(be, cudaMalloc(out, bytes ? bytes : 1));
    cudaError_t e = cudaMemsetAsync(*out, 0, bytes ? bytes : 1, cu->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(cu->stream);
    if (e != cudaSuccess) {
        cudaFree(*out);
        *out = nullptr;
        return hci_cu_fail(be, e, "clearing new device memory");
    }
    return HC_OK;
}

static void cu_free(hci_backend *be, void *p)
{
    DeviceGuard g(hci_cu(be)->device);
    cudaStreamSynchronize(hci_cu(be)->stream);
    cudaFree(p);
}

static int cu_upload(hci_backend *be, void *dst, const void *src, size_t bytes)
{
    hci_cuda *cu = hci_cu(be);
    DeviceGuard g(cu->device);
    HCI_CU_TRY(be, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cu->stream));
    HCI_CU_TRY(be, cudaStreamSynchronize(cu->stream));
    return HC_OK;
}

static int cu_download(hci_backend *be, void *dst, const void *src, size_t bytes)
{
    hci_cuda *cu = hci_cu(be);
    DeviceGuard g(cu->device);
    HCI_CU_TRY(be, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cu->stream));
    HCI_CU_TRY(be, cudaStreamSynchronize(cu->stream));
    return HC_OK;
}

static int cu_sync(hci_backend *be)
{
    hci_cuda *cu = hci_cu(be);
    DeviceGuard g(cu->device);
    HCI_CU_TRY(be, cudaStreamSynchronize(cu->stream));
    return HC_OK;
}

static uint64_t cu_scratch_bytes(hci_backend *be)
{
    hci_cuda *cu = hci_cu(be);
    return (uint64_t)cu->scratch_bytes + (uint64_t)cu->lt_ws_bytes + (uint64_t)cu->share_bytes + (uint64_t)cu->fused_bytes;
}

static int cu_copy(hci_backend *be, void *dst, const void *src, size_t bytes)
{
    hci_cuda *cu = hci_cu(be);
    DeviceGuard g(cu->device);
    HCI_CU_TRY(be, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cu->stream));
    return HC_OK;
}

/* The attention kernel the options choose (kernels/attend/attend.h). */
static int attend_path(hci_backend *be)
{
    const hci_cu_options &o = hci_cu(be)->opt;
    if (o.attend_simple) return HCI_AT_SIMPLE;
    if (o.attend_fast) return o.attend_pingpong ? HCI_AT_PINGPONG : HCI_AT_FAST;
    return HCI_AT_MMA;
}

/* ---------------------------------------------------------------------------------------------
 * scratch: one buffer, sized in the preflight for the largest need of any op of the call
 * ------------------------------------------------------------------------------------------- */
static size_t need_scratch(hci_backend *be, int layer, int n, int64_t end_pos)
{
    const hci_config *c = &be->model->cfg;
    int ratio = c->ratios[layer];
    int kmax = c->dim > c->q_lora_rank ? c->dim : c->q_lora_rank;
    if (c->o_groups * c->o_lora_rank > kmax) kmax = c->o_groups * c->o_lora_rank;
    size_t io = hci_align256((size_t)n * c->dim * 4) + 256;
    /* FP8 activations, plus the grouped output projection's z behind them (cu_out_path) */
    size_t lin = hci_cu_fp8_scratch_bytes(n, kmax) + hci_align256((size_t)n * c->o_groups * c->o_lora_rank * 2);
    size_t comp = 0, idx = 0;
    if (ratio) {
        int w2 = (ratio == 4 ? 2 : 1) * c->head_dim;
        size_t st = (size_t)(ratio == 4 ? 2 : 1) * ratio * w2 * sizeof(float);
        comp = hci_align256((size_t)n * c->dim * 8) + hci_align256((size_t)n * 2 * w2 * 8) + 2 * hci_align256((size_t)n * w2 * 4) + 2 * hci_align256(st);
    }
    if (ratio == 4) {
        idx = hci_align256((size_t)n * c->dim * 8) + hci_align256((size_t)n * c->index_n_heads * 8);
        size_t sel = hci_cu_index_scratch_bytes(n, end_pos / 4, c->index_topk);
        if (sel > idx) idx = sel;
    }
    int64_t row = c->window + (ratio == 4 ? c->index_topk : (ratio ? end_pos / ratio : 0));
    size_t att = hci_cu_attend_scratch_bytes(n, c->n_heads, c->head_dim, row, attend_path(be));
    size_t need = io;
    size_t parts[] = {lin, comp, idx, att, hci_cu_fused_scratch_bytes(be, n)};
    for (size_t p : parts)
        if (p > need) need = p;
    return need;
}

static int cu_reserve(hci_backend *be, int layer, int n_piece, int64_t end_pos)
{
    hci_cuda *cu = hci_cu(be);
    /* option decode_fused: where proj_in keeps the projections for the piece's compress */
    if (cu->opt.decode_fused) {
        int st = hci_cu_fused_reserve(be, n_piece);
        if (st) return st;
    }
    size_t need = need_scratch(be, layer, n_piece, end_pos);
    if (need <= cu->scratch_bytes) return HC_OK;
    DeviceGuard g(cu->device);
    size_t grow = need + need / 4;
    void *p = nullptr;
    HCI_CU_TRY(be, cudaStreamSynchronize(cu->stream));
    HCI_CU_TRY(be, cudaMalloc(&p, grow));
    cudaFree(cu->scratch);
    cu->scratch = p;
    cu->scratch_bytes = grow;
    return HC_OK;
}

/* ---------------------------------------------------------------------------------------------
 * input / output
 * ------------------------------------------------------------------------------------------- */
static int cu_check_input(hci_backend *be, const void *x, int io_dtype, int from_host, int64_t count, int *bad)
{
    hci_cuda *cu = hci_cu(be);
    int bf16 = io_dtype == HC_DTYPE_BF16;
    if (from_host) { /* the host scans host memory: no copy needed for a refusal */
        /* the preflight makes the staging of the call's copies (host_io.cu), so that they cannot
         * fail for lack of pinned memory once the call has changed something */
        int st = hci_cu_host_reserve(be, count);
        return st ? st : hci_cu_host_check(be, x, bf16, count, bad);
    }
    DeviceGuard g(cu->device);
    int st = cu_reserve(be, 0, 1, 0);
    if (st) return st;
    int *flag = (int *)cu->scratch;
    HCI_CU_TRY(be, cudaMemsetAsync(flag, 0, sizeof(int), cu->stream));
    if (hci_cu_check_finite(cu->stream, x, bf16, count, flag)) return hci_cu_fail(be, cudaGetLastError(), "check");
    HCI_CU_TRY(be, cudaMemcpyAsync(bad, flag, sizeof(int), cudaMemcpyDeviceToHost, cu->stream));
    HCI_CU_TRY(be, cudaStreamSynchronize(cu->stream));
    return HC_OK;
}

/* Host x: checked and converted in one pass into the staging, then copied (host_io.cu). */
static int cu_check_load_input(hci_backend *be, const void *x, int io_dtype, int64_t count, uint16_t *xb, int *bad)
{
    return hci_cu_host_load(be, x, io_dtype == HC_DTYPE_BF16, count, xb, bad);
}

static int cu_load_input(hci_backend *be, const void *x, int io_dtype, int from_host, int64_t count, uint16_t *xb)
{
    hci_cuda *cu = hci_cu(be);
    int bf16 = io_dtype == HC_DTYPE_BF16;
    if (from_host) return hci_cu_host_load(be, x, bf16, count, xb, nullptr);
    DeviceGuard g(cu->device);
    if (hci_cu_to_bf16(cu->stream, x, bf16, count, xb)) return hci_cu_fail(be, cudaGetLastError(), "input");
    return HC_OK;
}

static int cu_store_output(hci_backend *be, const uint16_t *yb, int io_dtype, int to_host, int64_t count, void *y)
{
    hci_cuda *cu = hci_cu(be);
    int bf16 = io_dtype == HC_DTYPE_BF16;
    if (to_host) return hci_cu_host_store(be, yb, bf16, count, y);
    DeviceGuard g(cu->device);
    if (hci_cu_from_bf16(cu->stream, yb, bf16, count, y)) return hci_cu_fail(be, cudaGetLastError(), "output");
    return HC_OK;
}

static int cu_residual_norm(hci_backend *be, void *x, const void *y, int bf16, int64_t rows, int dim, float eps)
{
    hci_cuda *cu = hci_cu(be);
    DeviceGuard g(cu->device);
    int st = hci_cu_residual_norm(cu->stream, x, y, bf16, rows, dim, eps);
    if (st == HC_ERR_INVALID_ARG)
        return hci_errf(be->err, be->errsz, st, "residual_norm: %lld rows of %d", (long long)rows, dim);
    if (st) return hci_cu_fail(be, cudaGetLastError(), "residual_norm");
    return HC_OK;
}

/* ---------------------------------------------------------------------------------------------
 * the attention block
 * ------------------------------------------------------------------------------------------- */
static const float *rope_of(hci_backend *be, int layer)
{
    return be->model->cfg.ratios[layer] ? hci_cu(be)->w->rope_comp : hci_cu(be)->w->rope_swa;
}

/* The projections take the positions of their rows as the kernels do (kernels/qkv/qkv.h): pos0 + t
 * for one context's piece, or pos[t] (host array) for the rows of a batch's shared launch. */
static int q_path_rows(hci_backend *be, int layer, int n, int64_t pos0, const int64_t *pos, const uint16_t *x,
                       uint16_t *c, uint16_t *q)
{
    hci_cuda *cu = hci_cu(be);
    const hci_config *cf = &be->model->cfg;
    int st = hci_cu_linear_fp8(be, &hci_cu_lw(be, layer).wq_a, n, x, cf->dim, c, cf->q_lora_rank, cu->scratch, 0);
    if (st) return st;
    KTRY(be, hci_cu_rmsnorm_rows(cu->stream, c, n, cf->q_lora_rank, hci_cu_lw(be, layer).q_norm, (float)cf->norm_eps));
    st = hci_cu_linear_fp8(be, &hci_cu_lw(be, layer).wq_b, n, c, cf->q_lora_rank, q, cf->n_heads * cf->head_dim,
                           cu->scratch, 0);
    if (st) return st;
    KTRY(be, hci_cu_q_heads(cu->stream, q, n, cf->n_heads, cf->head_dim, cf->rope_dim, rope_of(be, layer), pos0, pos,
                            (float)cf->norm_eps));
    return HC_OK;
}

static int cu_q_path(hci_backend *be, int layer, int n, int64_t pos0, const uint16_t *x, uint16_t *c, uint16_t *q)
{
    DeviceGuard g(hci_cu(be)->device);
    return q_path_rows(be, layer, n, pos0, nullptr, x, c, q);
}

static int kv_path_rows(hci_backend *be, int layer, int n, int64_t pos0, const int64_t *pos, const uint16_t *x,
                        uint16_t *kv)
{
    hci_cuda *cu = hci_cu(be);
    const hci_config *cf = &be->model->cfg;
    int st = hci_cu_linear_fp8(be, &hci_cu_lw(be, layer).wkv, n, x, cf->dim, kv, cf->head_dim, cu->scratch, 0);
    if (st) return st;
    KTRY(be, hci_cu_rmsnorm_rows(cu->stream, kv, n, cf->head_dim, hci_cu_lw(be, layer).kv_norm, (float)cf->norm_eps));
    KTRY(be, hci_cu_kv_rows(cu->stream, kv, n, cf->head_dim, cf->rope_dim, rope_of(be, layer), pos0, pos));
    return HC_OK;
}

static int cu_kv_path(hci_backend *be, int layer, int n, int64_t pos0, const uint16_t *x, uint16_t *kv)
{
    DeviceGuard g(hci_cu(be)->device);
    return kv_path_rows(be, layer, n, pos0, nullptr, x, kv);
}

/* The indexer's queries and head weights; wd: [n][IH] doubles (the head-weight projection), xd:
 * [n][dim] doubles for the double GEMM of more than 16 tokens (NULL where n never needs it). */
static int index_q_rows(hci_backend *be, int layer, int n, int64_t pos0, const int64_t *pos, const uint16_t *x,
                        const uint16_t *c, uint16_t *qi, uint16_t *w, double *wd, double *xd)
{
    hci_cuda *cu = hci_cu(be);
    const hci_config *cf = &be->model->cfg;
    int IH = cf->index_n_heads, ID = cf->index_head_dim;
    int st = hci_cu_linear_fp8(be, &hci_cu_lw(be, layer).idx_wq_b, n, c, cf->q_lora_rank, qi, IH * ID, cu->scratch, 0);
    if (st) return st;
    if (cu->opt.comp_fast) { /* one GEMM for every n: batch-invariant (gemm_bf16.cu) */
        if ((st = hci_cu_linear_bf16_fast(be, &hci_cu_lw(be, layer).idx_wproj16, n, x, cf->dim, wd, IH))) return st;
    } else if (n <= HCI_CU_GEMV_MAX_N) {
        const hci_cu_bf16 &wp = hci_cu_lw(be, layer).idx_wproj16;
        KTRY(be, hci_cu_gemv_bf16(cu->stream, wp.w, wp.rows, wp.cols, 1, x, cf->dim, n, wd, nullptr, IH));
    } else {
        if (!xd) return hci_errf(be->err, be->errsz, HC_ERR_INTERNAL, "index_q: %d shared rows need the double GEMM", n);
        KTRY(be, hci_cu_bf16_to_f64(cu->stream, x, (int64_t)n * cf->dim, xd));
        if ((st = hci_cu_linear_f64(be, &hci_cu_lw(be, layer).idx_wproj, n, xd, wd))) return st;
    }
    KTRY(be, hci_cu_index_q_heads(cu->stream, qi, n, IH, ID, cf->rope_dim, rope_of(be, layer), pos0, pos, wd,
                                  hci_cu_index_wscale(cf), w));
    return HC_OK;
}

static int cu_index_q(hci_backend *be, int layer, int n, int64_t pos0, const uint16_t *x, const uint16_t *c,
                      uint16_t *qi, uint16_t *w)
{
    hci_cuda *cu = hci_cu(be);
    const hci_config *cf = &be->model->cfg;
    DeviceGuard g(cu->device);
    double *xd = (double *)cu->scratch;
    double *wd = (double *)((char *)cu->scratch + hci_align256((size_t)n * cf->dim * 8));
    return index_q_rows(be, layer, n, pos0, nullptr, x, c, qi, w, wd, xd);
}

/* A compressor's projection proj [n][2*coff*dc] (double) of x [n][dim]; xd: [n][dim] doubles for the
 * double GEMM of more than 16 tokens (NULL where n never needs it). */
static int comp_project(hci_backend *be, const hci_cu_comp &w, int n, const uint16_t *x, double *proj, double *xd)
{
    hci_cuda *cu = hci_cu(be);
    const hci_config *cf = &be->model->cfg;
    int w2 = w.coff * w.dc;
    if (cu->opt.comp_fast) /* one GEMM for every n: batch-invariant (gemm_bf16.cu) */
        return hci_cu_linear_bf16_fast(be, &w.wkvg16, n, x, cf->dim, proj, 2 * w2);
    if (n <= HCI_CU_GEMV_MAX_N) {
        KTRY(be, hci_cu_gemv_bf16(cu->stream, w.wkvg16.w, w.wkvg16.rows, w.wkvg16.cols, 1, x, cf->dim, n, proj,
                                  nullptr, 2 * w2));
        return HC_OK;
    }
    if (!xd) return hci_errf(be->err, be->errsz, HC_ERR_INTERNAL, "compress: %d shared rows need the double GEMM", n);
    KTRY(be, hci_cu_bf16_to_f64(cu->stream, x, (int64_t)n * cf->dim, xd));
    return hci_cu_linear_f64(be, &w.wkvg, n, xd, proj);
}

/* The compressor's step from its projection proj [n][2*coff*dc]: pooling, entries, state, log.
 * Its own scratch starts at s. */
static int comp_apply(hci_backend *be, int layer, int which, hci_comp_cache *cc, int n, int64_t pos0,
                      const double *proj, char *s)
{
    hci_cuda *cu = hci_cu(be);
    const hci_config *cf = &be->model->cfg;
    const hci_cu_comp &w = which ? hci_cu_lw(be, layer).idx_comp : hci_cu_lw(be, layer).comp;
    int w2 = w.coff * w.dc;
    size_t st_bytes = hci_comp_state_floats(cc) * sizeof(float);
    float *A = (float *)s;
    s += hci_align256((size_t)n * w2 * 4);
    float *Z = (float *)s;
    s += hci_align256((size_t)n * w2 * 4);
    float *nkv = (float *)s;
    s += hci_align256(st_bytes);
    float *nsc = (float *)s;
    hci_cu_comp_args a;
    a.ratio = w.ratio, a.coff = w.coff, a.dc = w.dc, a.rope_dim = cf->rope_dim, a.rotate = cc->rotate;
    a.pos0 = pos0, a.n = n, a.proj = proj, a.ape = w.ape, a.norm = w.norm, a.freq = rope_of(be, layer);
    a.eps = (float)cf->norm_eps, a.state_kv = cc->state_kv, a.state_score = cc->state_score;
    a.A = A, a.Z = Z, a.new_kv = nkv, a.new_score = nsc, a.l = cc->layout;
    a.pages = (uint8_t *const *)cc->entries.dev_table;
    a.log_kv = cc->log.kv, a.log_score = cc->log.score, a.log_cap = cc->log.cap, a.log_from = cc->log.from;
    KTRY(be, hci_cu_compress(cu->stream, &a));
    cc->n_entries = (pos0 + n) / w.ratio;
    return HC_OK;
}

static int cu_compress(hci_backend *be, int layer, int which, hci_comp_cache *cc, int n, int64_t pos0,
                       const uint16_t *x)
{
    hci_cuda *cu = hci_cu(be);
    const hci_config *cf = &be->model->cfg;
    DeviceGuard g(cu->device);
    if (!x) /* proj_in made the projection (backend.h) */
        return comp_apply(be, layer, which, cc, n, pos0, hci_cu_fused_proj(be, which), (char *)cu->scratch);
    const hci_cu_comp &w = which ? hci_cu_lw(be, layer).idx_comp : hci_cu_lw(be, layer).comp;
    int w2 = w.coff * w.dc;
    char *s = (char *)cu->scratch;
    double *xd = (double *)s;
    s += hci_align256((size_t)n * cf->dim * 8);
    double *proj = (double *)s;
    s += hci_align256((size_t)n * 2 * w2 * 8);
    int st = comp_project(be, w, n, x, proj, xd);
    return st ? st : comp_apply(be, layer, which, cc, n, pos0, proj, s);
}

static int cu_index_topk(hci_backend *be, int layer, const hci_comp_cache *idx, int n, int64_t pos0,
                         const uint16_t *qi, const uint16_t *w, int32_t *sel)
{
    (void)layer;
    hci_cuda *cu = hci_cu(be);
    const hci_config *cf = &be->model->cfg;
    DeviceGuard g(cu->device);
    KTRY(be, hci_cu_index_topk(cu->stream, &idx->layout, (uint8_t *const *)idx->entries.dev_table, n, pos0,
                               cf->index_n_heads, cf->index_head_dim, cf->index_topk, qi, w, sel, cu->scratch,
                               cu->opt.index_exact_only ? HCI_IX_EXACT_ONLY
                               : cu->opt.index_fast     ? HCI_IX_FAST | (cu->opt.index_tcsum ? HCI_IX_TCSUM : 0) |
                                                          (cu->opt.index_tcpipe ? HCI_IX_TCPIPE : 0) |
                                                          (cu->opt.index_f32sum ? HCI_IX_F32SUM : 0) |
                                                          (cu->opt.index_rega ? HCI_IX_REGA : 0) |
                                                          (cu->opt.index_tcmix ? HCI_IX_TCMIX : 0)
                                                        : HCI_IX_EXACT));
    return HC_OK;
}

static int cu_attend(hci_backend *be, int layer, const hci_layer_cache *lc, int n, int64_t pos0, const uint16_t *q,
                     const uint16_t *kv, const int32_t *sel, uint16_t *o)
{
    hci_cuda *cu = hci_cu(be);
    const hci_config *cf = &be->model->cfg;
    DeviceGuard g(cu->device);
    hci_cu_attn_args a;
    memset(&a, 0, sizeof a);
    a.n = n, a.pos0 = pos0, a.H = cf->n_heads, a.d = cf->head_dim, a.window = lc->window, a.ratio = lc->ratio;
    a.K = cf->index_topk, a.scale = (float)(1.0 / sqrt((double)cf->head_dim));
    a.q = q, a.kv = kv, a.win_l = lc->win_layout, a.ring = (uint8_t *const *)lc->ring.dev_table;
    if (lc->ratio) {
        a.comp_l = lc->comp.layout;
        a.comp = (uint8_t *const *)lc->comp.entries.dev_table;
    }
    a.sel = sel, a.sink = hci_cu_lw(be, layer).attn_sink, a.o = o;
    KTRY(be, hci_cu_attend(cu->stream, &a, cu->scratch, attend_path(be)));
    return HC_OK;
}

static int cu_window_write(hci_backend *be, hci_layer_cache *lc, int n, int64_t pos0, const uint16_t *kv)
{
    hci_cuda *cu = hci_cu(be);
    int d = be->model->cfg.head_dim, W = lc->window;
    DeviceGuard g(cu->device);
    int64_t first = pos0 + n - W > pos0 ? pos0 + n - W : pos0;
    KTRY(be, hci_cu_pack_rows(cu->stream, &lc->win_layout, (uint8_t *const *)lc->ring.dev_table,
                              kv + (size_t)(first - pos0) * d, (int)(pos0 + n - first), first, W));
    return HC_OK;
}

static int out_path_rows(hci_backend *be, int layer, int n, int64_t pos0, const int64_t *pos, uint16_t *o, uint16_t *y)
{
    hci_cuda *cu = hci_cu(be);
    const hci_config *cf = &be->model->cfg;
    int G = cf->o_groups, R = cf->o_lora_rank, H = cf->n_heads, d = cf->head_dim;
    KTRY(be, hci_cu_inverse_rope(cu->stream, o, n, H, d, cf->rope_dim, rope_of(be, layer), pos0, pos));
    /* z [n][G*R] lives behind the FP8 activation scratch */
    uint16_t *z = (uint16_t *)((char *)cu->scratch + hci_cu_fp8_scratch_bytes(n, G * R));
    int st = hci_cu_linear_bf16_grouped(be, &hci_cu_lw(be, layer).wo_a, G, n, o, H * d, z, G * R);
    if (!st) st = hci_cu_linear_fp8(be, &hci_cu_lw(be, layer).wo_b, n, z, G * R, y, cf->dim, cu->scratch, 1);
    return st;
}

static int cu_out_path(hci_backend *be, int layer, int n, int64_t pos0, uint16_t *o, uint16_t *y)
{
    DeviceGuard g(hci_cu(be)->device);
    return out_path_rows(be, layer, n, pos0, nullptr, o, y);
}

/* ---------------------------------------------------------------------------------------------
 * shared projections of a batch (backend.h share_*; lib/engine/engine.c runs them). A row's
 * projections go through the same kernels as in its context's own ops only while the row counts
 * of both stay in one size class whose kernels are batch-invariant per row (docs/numerics.md):
 *  - FP8 (cuda_gemm.cu): with gemv_fast the fast GEMV up to 64 rows, else the exact GEMV up to 16;
 *  - grouped bf16 wo_a: with gemv_fast the fast GEMV up to 64 rows where it takes the shape, else
 *    the exact GEMV (double sums) up to 16; beyond these, cuBLASLt (rows not independent);
 *  - compressors and indexer head weights: with comp_fast the own bf16 GEMM (any rows), else the
 *    double GEMV up to 16 (the double GEMM beyond: cuBLASLt's heuristic, rows not independent).
 * So pieces share launches of up to 64 rows with gemv_fast and comp_fast both set (FAST) and
 * wo_a's shape taken by the fast GEMV, else of up to 16. The element-wise kernels take each row's
 * position from a table passed with the launch (kernels/qkv/qkv.h).
 * ------------------------------------------------------------------------------------------- */

/* The fast grouped bf16 GEMV takes wo_a (hci_cu_gemv_bf16_fast's conditions; x, the attention
 * output, is 16-byte aligned in the workspaces). */
static bool wo_a_fast_ok(const hci_config *cf)
{
    int G = cf->o_groups, R = cf->o_lora_rank, Kg = cf->n_heads * cf->head_dim / G;
    return G > 0 && R % GT_ROWS == 0 && Kg % GT_BF16_SPAN == 0 && (cf->n_heads * cf->head_dim) % 8 == 0;
}

static int cu_share_rows(hci_backend *be, int layer, int n, uint64_t *key)
{
    (void)layer;
    const hci_cu_options &o = hci_cu(be)->opt;
    if (!o.batch_shared) return 0;
    int rows = o.gemv_fast && o.comp_fast && wo_a_fast_ok(&be->model->cfg) ? HCI_CU_GEMV_FAST_MAX_N : HCI_CU_GEMV_MAX_N;
    if (rows > HCI_CU_ROWS_MAX) rows = HCI_CU_ROWS_MAX;
    if (rows > HCI_SHARE_MAX_ROWS) rows = HCI_SHARE_MAX_ROWS;
    if (n < 1 || n > rows) return 0;
    /* the options that choose the projections' kernels up to that many rows */
    *key = (uint64_t)(o.gemv_fast != 0) | (uint64_t)(o.comp_fast != 0) << 1;
    return rows;
}

/* The shared workspace of `rows` rows: the bf16 buffers of hci_share_ws, then (aux) the indexer
 * head weights [rows][IH] and the two compressors' projections [rows][2*coff*dc] (the widest of
 * the model's layers) as doubles. Each piece 256-byte aligned; every row of a bf16 buffer starts
 * 16-byte aligned (the model's widths are multiples of 128 but the head weights'). */
struct share_layout {
    size_t x, c, q, kv, qi, w, o, y, wd, proj[2], bytes;
};

static share_layout share_plan(hci_backend *be, int rows)
{
    const hci_config *cf = &be->model->cfg;
    share_layout L;
    size_t R = (size_t)rows, at = 0;
    auto take = [&](size_t bytes) {
        size_t p = at;
        at += hci_align256(bytes);
        return p;
    };
    L.x = take(R * cf->dim * 2);
    L.c = take(R * cf->q_lora_rank * 2);
    L.q = take(R * cf->n_heads * cf->head_dim * 2);
    L.kv = take(R * cf->head_dim * 2);
    L.qi = take(R * cf->index_n_heads * cf->index_head_dim * 2);
    L.w = take(R * cf->index_n_heads * 2);
    L.o = take(R * cf->n_heads * cf->head_dim * 2);
    L.y = take(R * cf->dim * 2);
    L.wd = take(R * cf->index_n_heads * 8);
    L.proj[0] = take(R * hci_cu_comp_width(be, 0) * 8);
    L.proj[1] = take(R * hci_cu_comp_width(be, 1) * 8);
    L.bytes = at;
    return L;
}

/* aux (share_plan) of a workspace of ws->rows rows: the head weights and the projections, whose
 * rows are as wide as the layer's compressor (comp_project's leading dimension). */
struct share_aux {
    double *wd, *proj[2];
};
static share_aux share_aux_of(hci_backend *be, const hci_share_ws *ws)
{
    share_layout L = share_plan(be, ws->rows);
    char *b = (char *)ws->aux - L.wd;
    return {(double *)(b + L.wd), {(double *)(b + L.proj[0]), (double *)(b + L.proj[1])}};
}

static int cu_share_reserve(hci_backend *be, int rows, hci_share_ws *ws)
{
    hci_cuda *cu = hci_cu(be);
    const hci_config *cf = &be->model->cfg;
    DeviceGuard g(cu->device);
    share_layout L = share_plan(be, rows);
    if (L.bytes > cu->share_bytes) {
        void *p = nullptr;
        /* the old workspace's last readers are ordered before this stream (the batch's events) */
        HCI_CU_TRY(be, cudaStreamSynchronize(cu->stream));
        HCI_CU_TRY(be, cudaMalloc(&p, L.bytes));
        cudaFree(cu->share);
        cu->share = p;
        cu->share_bytes = L.bytes;
    }
    /* the FP8 activations and the grouped projection's z of `rows` rows (out_path_rows) */
    int G = cf->o_groups, R = cf->o_lora_rank;
    int kmax = cf->dim > cf->q_lora_rank ? cf->dim : cf->q_lora_rank;
    if (G * R > kmax) kmax = G * R;
    size_t lin = hci_cu_fp8_scratch_bytes(rows, kmax) + hci_align256((size_t)rows * G * R * 2);
    if (hci_cu_fused_scratch_bytes(be, rows) > lin) lin = hci_cu_fused_scratch_bytes(be, rows);
    if (lin > cu->scratch_bytes) {
        void *p = nullptr;
        HCI_CU_TRY(be, cudaStreamSynchronize(cu->stream));
        HCI_CU_TRY(be, cudaMalloc(&p, lin));
        cudaFree(cu->scratch);
        cu->scratch = p;
        cu->scratch_bytes = lin;
    }
    char *b = (char *)cu->share;
    ws->rows = rows;
    ws->x = (uint16_t *)(b + L.x), ws->c = (uint16_t *)(b + L.c), ws->q = (uint16_t *)(b + L.q);
    ws->kv = (uint16_t *)(b + L.kv), ws->qi = (uint16_t *)(b + L.qi), ws->w = (uint16_t *)(b + L.w);
    ws->o = (uint16_t *)(b + L.o), ws->y = (uint16_t *)(b + L.y);
    ws->aux = b + L.wd;
    return HC_OK;
}

static int cu_share_in(hci_backend *be, int layer, int n, const int64_t *pos, const uint16_t *const *xrow,
                       const hci_share_ws *ws)
{
    hci_cuda *cu = hci_cu(be);
    const hci_config *cf = &be->model->cfg;
    DeviceGuard g(cu->device);
    if (n < 1 || n > ws->rows || n > HCI_CU_ROWS_MAX)
        return hci_errf(be->err, be->errsz, HC_ERR_INTERNAL, "share_in: %d rows for a workspace of %d", n, ws->rows);
    share_aux a = share_aux_of(be, ws);
    KTRY(be, hci_cu_gather_rows(cu->stream, xrow, n, cf->dim, ws->x));
    if (hci_cu_fused_ok(be, layer, n)) /* option decode_fused: the same rows in fewer launches */
        return hci_cu_proj_in_rows(be, layer, n, 0, pos, ws->x, ws->c, ws->q, ws->kv, ws->qi, ws->w, a.wd, a.proj[0],
                                   a.proj[1]);
    int st = q_path_rows(be, layer, n, 0, pos, ws->x, ws->c, ws->q);
    if (!st) st = kv_path_rows(be, layer, n, 0, pos, ws->x, ws->kv);
    int ratio = cf->ratios[layer];
    if (!st && ratio == 4) st = index_q_rows(be, layer, n, 0, pos, ws->x, ws->c, ws->qi, ws->w, a.wd, nullptr);
    if (!st && ratio == 4) st = comp_project(be, hci_cu_lw(be, layer).idx_comp, n, ws->x, a.proj[1], nullptr);
    if (!st && ratio) st = comp_project(be, hci_cu_lw(be, layer).comp, n, ws->x, a.proj[0], nullptr);
    return st;
}

static int cu_compress_rows(hci_backend *be, int layer, int which, hci_comp_cache *cc, int n, int64_t pos0,
                            const hci_share_ws *ws, int row)
{
    hci_cuda *cu = hci_cu(be);
    DeviceGuard g(cu->device);
    const hci_cu_comp &w = which ? hci_cu_lw(be, layer).idx_comp : hci_cu_lw(be, layer).comp;
    /* ws is the group lead's: the same model, so the same layout */
    const double *proj = share_aux_of(be, ws).proj[which] + (size_t)row * 2 * w.coff * w.dc;
    return comp_apply(be, layer, which, cc, n, pos0, proj, (char *)cu->scratch);
}

static int cu_share_out(hci_backend *be, int layer, int n, const int64_t *pos, const hci_share_ws *ws)
{
    DeviceGuard g(hci_cu(be)->device);
    if (n < 1 || n > ws->rows || n > HCI_CU_ROWS_MAX)
        return hci_errf(be->err, be->errsz, HC_ERR_INTERNAL, "share_out: %d rows for a workspace of %d", n, ws->rows);
    return out_path_rows(be, layer, n, 0, pos, ws->o, ws->y);
}

/* ---------------------------------------------------------------------------------------------
 * creation
 * ------------------------------------------------------------------------------------------- */
static void cu_destroy(hci_backend *be)
{
    hci_cuda *cu = hci_cu(be);
    if (cu) {
        DeviceGuard g(cu->device);
        if (cu->stream) cudaStreamSynchronize(cu->stream);
        hci_cu_host_release(cu);
        hci_cu_xfer_release(cu);
        cudaFree(cu->scratch);
        cudaFree(cu->share);
        cudaFree(cu->fused);
        if (cu->order) cudaEventDestroy(cu->order);
        if (cu->dev) {
            if (cu->lt_ws) hci_cu_device_give_workspace(cu->dev, cu->lt_ws);
            if (cu->own_stream && cu->stream) hci_cu_device_give_stream(cu->dev, cu->stream);
            hci_cu_device_put(cu->dev);
        }
        delete cu;
    }
    free(be);
}

static hci_backend_ops make_ops(bool fused)
{
    hci_backend_ops o = {};
    o.name = "cuda";
    o.destroy = cu_destroy;
    o.alloc = cu_alloc;
    o.free = cu_free;
    o.upload = cu_upload;
    o.download = cu_download;
    o.copy = cu_copy;
    o.sync = cu_sync;
    o.scratch_bytes = cu_scratch_bytes;
    o.page_alloc = hci_cu_page_alloc;
    o.page_free = hci_cu_page_free;
    o.pages_sync = hci_cu_pages_sync;
    o.pages_alloc_block = hci_cu_pages_alloc_block;
    o.host_alloc = hci_cu_host_alloc;
    o.host_free = hci_cu_host_free;
    o.host_wait = hci_cu_host_wait;
    o.upload_async = hci_cu_upload_async;
    o.pages_download = hci_cu_pages_download;
    o.reserve = cu_reserve;
    o.check_input = cu_check_input;
    o.check_load_input = cu_check_load_input;
    o.load_input = cu_load_input;
    o.store_output = cu_store_output;
    o.q_path = cu_q_path;
    o.kv_path = cu_kv_path;
    o.index_q = cu_index_q;
    o.compress = cu_compress;
    o.index_topk = cu_index_topk;
    o.attend = cu_attend;
    o.window_write = cu_window_write;
    o.out_path = cu_out_path;
    o.stream = cu_stream;
    o.set_option = cu_set_option;
    o.set_stream = cu_set_stream;
    o.stream_wait = cu_stream_wait;
    o.residual_norm = cu_residual_norm;
    o.share_rows = cu_share_rows;
    o.share_reserve = cu_share_reserve;
    o.share_in = cu_share_in;
    o.compress_rows = cu_compress_rows;
    o.share_out = cu_share_out;
    if (fused) { /* option decode_fused */
        o.proj_in_ok = hci_cu_proj_in_ok;
        o.proj_in = hci_cu_proj_in;
    }
    return o;
}
static const hci_backend_ops cuda_ops = make_ops(false), cuda_ops_fused = make_ops(true);

/* The table of the options: proj_in only with decode_fused (backend.h: the engine runs the ops
 * one by one where it is NULL). */
static void sync_ops(hci_backend *be) { be->ops = hci_cu(be)->opt.decode_fused ? &cuda_ops_fused : &cuda_ops; }

/* The projections' row counts that the cuBLASLt block-scaled path needs to be multiples of 128. */
static int geometry_supported(const hci_config *c)
{
    return c->q_lora_rank % 128 == 0 && (c->n_heads * c->head_dim) % 128 == 0 && c->head_dim % 128 == 0 &&
           c->dim % 128 == 0 && (c->index_n_heads * c->index_head_dim) % 128 == 0;
}

int hci_backend_cuda_create(const struct hc_model *m, const hci_backend_args *a, hci_backend **out)
{
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
        cudaGetLastError();
        count = 0;
    }
    if (a->device >= count)
        return hci_errf(a->err, a->errsz, HC_ERR_NO_DEVICE, "CUDA device %d asked for, %d usable", a->device, count);
    if (!geometry_supported(&m->cfg))
        return hci_errf(a->err, a->errsz, HC_ERR_UNSUPPORTED,
                        "the CUDA backend needs q_lora_rank, heads*head_dim, head_dim and index heads*dim to be "
                        "multiples of 128");
    hci_backend *be = (hci_backend *)calloc(1, sizeof *be);
    hci_cuda *cu = new (std::nothrow) hci_cuda();
    if (!be || !cu) {
        free(be);
        delete cu;
        return hci_errf(a->err, a->errsz, HC_ERR_OUT_OF_MEMORY, "out of memory");
    }
    be->ops = &cuda_ops;
    be->kind = HC_BACKEND_CUDA;
    be->device = a->device;
    be->caps = HC_CAP_HOST_IO | HC_CAP_DEVICE_IO | HC_CAP_STREAM;
    be->model = m;
    be->max_chunk = ((a->max_chunk > 0 ? a->max_chunk : 2048) + 15) & ~15;
    /* DEFAULT is FAST on CUDA (hybridctx.h, docs/numerics.md); EXACT only when asked for */
    be->numerics = a->numerics == HC_NUMERICS_EXACT ? HC_NUMERICS_EXACT : HC_NUMERICS_FAST;
    cu->opt.gemv_fast = cu->opt.index_fast = cu->opt.comp_fast = cu->opt.attend_fast = be->numerics == HC_NUMERICS_FAST;
    cu->opt.gemm_wgmma = 1; /* the same bits as gemm_fp8.cu's big tiles, faster (cuda_options.h) */
    /* measured on an H100 on 2026-12-07 (docs/perf/cuda-h100-2026-12-07-s7.md): FAST's faster
     * kernels within its tolerance; gemv_teams and batch_shared keep each row's bits, so both
     * modes. gemm_fp8_native stays off: with it, test_gpu's FAST layers came out 2e-2 from the
     * CPU (tiny and V4-Flash geometry), the FP8 tensor cores' accumulation grown by the block's FP8
     * quantizations after q, kv and c; gemm_fp8_native_out (wo_b only) until measured
     * (NEXT-gemm-native.md) */
    cu->opt.index_tcsum = cu->opt.attend_pingpong = be->numerics == HC_NUMERICS_FAST;
    cu->opt.gemv_teams = 1;
    cu->opt.batch_shared = 1;
    be->ops_may_fail = 0;
    be->err = a->err;
    be->errsz = a->errsz;
    be->impl = cu;
    cu->device = a->device;
    DeviceGuard g(a->device);
    /* what the model's contexts on this GPU share: weights, cuBLASLt, pools (device.h) */
    int st = hci_cu_device_get(m, a->device, a->err, a->errsz, &cu->dev);
    if (!st) {
        cu->w = &cu->dev->w;
        cu->lt = cu->dev->lt;
        cu->lt_ws_bytes = cu->dev->workspace_bytes;
        st = hci_cu_device_take_workspace(cu->dev, &cu->lt_ws);
        if (st) hci_errf(a->err, a->errsz, st, "no cuBLASLt workspace of %zu bytes on device %d", cu->lt_ws_bytes,
                         a->device);
    }
    if (!st && a->stream) {
        cu->stream = (cudaStream_t)a->stream;
    } else if (!st) {
        st = hci_cu_device_take_stream(cu->dev, &cu->stream);
        if (st) hci_errf(a->err, a->errsz, st, "cannot create a CUDA stream on device %d", a->device);
        else cu->own_stream = 1;
    }
    if (!st) {
        cudaError_t e = cudaEventCreateWithFlags(&cu->order, cudaEventDisableTiming);
        if (e != cudaSuccess) {
            cu->order = nullptr;
            st = hci_cu_fail(be, e, "cudaEventCreateWithFlags");
        }
    }
    if (!st) st = cu_reserve(be, 0, be->max_chunk, 0);
    if (st) {
        cu_destroy(be);
        return st;
    }
    *out = be;
    return HC_OK;
}
