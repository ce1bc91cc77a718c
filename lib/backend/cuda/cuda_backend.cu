/* cuda_backend.cu - the CUDA backend: device and stream, the device copy of the weights, device
 * memory and cache pages, input/output, and the ops table that runs each step of the attention
 * block with cuBLASLt and the kernels of kernels/. Work is queued on the context's stream; a
 * call returns after its host-visible results are ready. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <vector>
#include "cuda_internal.h"
#include "hybridctx.h"

/* ---------------------------------------------------------------------------------------------
 * errors and the current device
 * ------------------------------------------------------------------------------------------- */
int hci_cu_fail(hci_backend *be, cudaError_t e, const char *what)
{
    int st = e == cudaErrorMemoryAllocation ? HC_ERR_OUT_OF_MEMORY : HC_ERR_CUDA;
    hci_errf(be->err, be->errsz, st, "CUDA %s (%s) in %s", cudaGetErrorName(e), cudaGetErrorString(e), what);
    /* clear a non-sticky error (a failed allocation) so that the next launch check does not see it */
    cudaGetLastError();
    return st;
}

int hci_cu_blas_fail(hci_backend *be, cublasStatus_t s, const char *what)
{
    hci_errf(be->err, be->errsz, HC_ERR_CUBLAS, "cuBLASLt status %d in %s", (int)s, what);
    return HC_ERR_CUBLAS;
}

namespace {
/* Every entry point runs on the context's device and gives the caller's current device back. */
struct DeviceGuard {
    int prev = -1;
    explicit DeviceGuard(int dev)
    {
        if (cudaGetDevice(&prev) != cudaSuccess) prev = -1;
        if (prev != dev) cudaSetDevice(dev);
    }
    ~DeviceGuard()
    {
        int cur;
        if (prev >= 0 && cudaGetDevice(&cur) == cudaSuccess && cur != prev) cudaSetDevice(prev);
    }
};
}

extern "C" void *hci_backend_cuda_stream(hci_backend *be) { return (void *)hci_cu(be)->stream; }

extern "C" int hci_backend_cuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

/* ---------------------------------------------------------------------------------------------
 * weights: uploaded once per model and device
 * ------------------------------------------------------------------------------------------- */
struct Uploader {
    std::vector<void *> allocs;
    size_t bytes = 0;
    cudaError_t err = cudaSuccess;
    void *put(const void *src, size_t n)
    {
        void *p = nullptr;
        if (err != cudaSuccess || !n) return nullptr;
        if ((err = cudaMalloc(&p, n)) != cudaSuccess) return nullptr;
        allocs.push_back(p);
        bytes += n;
        if ((err = cudaMemcpy(p, src, n, cudaMemcpyHostToDevice)) != cudaSuccess) return nullptr;
        return p;
    }
    hci_cu_fp8 fp8(const hci_fp8_mat &m)
    {
        int rb = (m.rows + 127) / 128, kb = (m.cols + 127) / 128, sld = (kb + 3) / 4 * 4;
        hci_cu_fp8 d = {m.rows, m.cols, nullptr, nullptr, sld};
        d.w = (uint8_t *)put(m.w, (size_t)m.rows * m.cols);
        std::vector<float> s((size_t)rb * sld, 1.0f);
        for (int r = 0; r < rb; r++)
            for (int k = 0; k < kb; k++) s[(size_t)r * sld + k] = m.scale[(size_t)r * kb + k];
        d.scale = (float *)put(s.data(), s.size() * sizeof(float));
        return d;
    }
    hci_cu_bf16 bf16(const hci_bf16_mat &m)
    {
        hci_cu_bf16 d = {m.rows, m.cols, (uint16_t *)put(m.w, (size_t)m.rows * m.cols * 2)};
        return d;
    }
    /* bf16 matrices stacked row-wise, widened to double */
    hci_cu_f64 f64(const hci_bf16_mat *const *parts, int n_parts)
    {
        hci_cu_f64 d = {0, parts[0]->cols, nullptr};
        for (int i = 0; i < n_parts; i++) d.rows += parts[i]->rows;
        std::vector<double> h((size_t)d.rows * d.cols);
        size_t k = 0;
        for (int i = 0; i < n_parts; i++)
            for (size_t e = 0; e < (size_t)parts[i]->rows * parts[i]->cols; e++)
                h[k++] = (double)hci_f32_from_bf16(parts[i]->w[e]);
        d.w = (double *)put(h.data(), h.size() * sizeof(double));
        return d;
    }
    float *f32(const float *v, size_t n) { return (float *)put(v, n * sizeof(float)); }
    hci_cu_bf16 stack16(const hci_bf16_mat *const *parts, int n_parts)
    {
        hci_cu_bf16 d = {0, parts[0]->cols, nullptr};
        for (int i = 0; i < n_parts; i++) d.rows += parts[i]->rows;
        std::vector<uint16_t> h;
        for (int i = 0; i < n_parts; i++) h.insert(h.end(), parts[i]->w, parts[i]->w + (size_t)parts[i]->rows * parts[i]->cols);
        d.w = (uint16_t *)put(h.data(), h.size() * 2);
        return d;
    }
    hci_cu_comp comp(const hci_compressor_w &c, int dim)
    {
        (void)dim;
        hci_cu_comp d;
        d.ratio = c.ratio, d.coff = c.coff, d.dc = c.dc;
        d.ape = f32(c.ape, (size_t)c.ratio * c.coff * c.dc);
        const hci_bf16_mat *parts[2] = {&c.wkv, &c.wgate};
        d.wkvg = f64(parts, 2);
        d.wkvg16 = stack16(parts, 2);
        d.norm = f32(c.norm, (size_t)c.dc);
        return d;
    }
};

struct weights_owner {
    hci_cu_weights w;
    std::vector<void *> allocs;
};

static void weights_free(void *p)
{
    weights_owner *o = (weights_owner *)p;
    DeviceGuard g(o->w.device);
    for (void *a : o->allocs) cudaFree(a);
    delete[] o->w.layers;
    delete o;
}

static int upload_weights(hci_backend *be, const hc_model *m, int device, const hci_cu_weights **out)
{
    const hci_config *c = &m->cfg;
    Uploader u;
    weights_owner *o = new (std::nothrow) weights_owner;
    if (!o) return hci_errf(be->err, be->errsz, HC_ERR_OUT_OF_MEMORY, "out of memory");
    o->w.device = device;
    o->w.n_layers = c->n_layers;
    o->w.layers = new (std::nothrow) hci_cu_layer[c->n_layers];
    if (!o->w.layers) {
        delete o;
        return hci_errf(be->err, be->errsz, HC_ERR_OUT_OF_MEMORY, "out of memory");
    }
    o->w.rope_swa = u.f32(m->rope_swa.freq, (size_t)m->rope_swa.n_pairs);
    o->w.rope_comp = u.f32(m->rope_comp.freq, (size_t)m->rope_comp.n_pairs);
    for (int i = 0; i < c->n_layers && u.err == cudaSuccess; i++) {
        const hci_layer_w &L = m->layers[i];
        hci_cu_layer &d = o->w.layers[i];
        memset(&d, 0, sizeof d);
        d.ratio = L.ratio;
        d.wq_a = u.fp8(L.wq_a), d.wq_b = u.fp8(L.wq_b), d.wkv = u.fp8(L.wkv), d.wo_b = u.fp8(L.wo_b);
        d.q_norm = u.f32(L.q_norm, (size_t)c->q_lora_rank);
        d.kv_norm = u.f32(L.kv_norm, (size_t)c->head_dim);
        d.attn_sink = u.f32(L.attn_sink, (size_t)c->n_heads);
        d.wo_a = u.bf16(L.wo_a);
        if (L.ratio) d.comp = u.comp(L.comp, c->dim);
        if (L.ratio == 4) {
            d.idx_wq_b = u.fp8(L.idx_wq_b);
            const hci_bf16_mat *wp[1] = {&L.idx_weights_proj};
            d.idx_wproj = u.f64(wp, 1);
            d.idx_wproj16 = u.stack16(wp, 1);
            d.idx_comp = u.comp(L.idx_comp, c->dim);
        }
    }
    o->allocs = u.allocs;
    o->w.bytes = u.bytes;
    if (u.err != cudaSuccess) {
        int st = hci_cu_fail(be, u.err, "uploading the weights");
        weights_free(o);
        return st;
    }
    *out = &o->w;
    ((hc_model *)m)->dev_weights[device] = o;
    ((hc_model *)m)->dev_weights_free = weights_free;
    return HC_OK;
}

/* The model's weights on this device: made by the first context, shared by the others. */
static int get_weights(hci_backend *be, int device, const hci_cu_weights **out)
{
    hc_model *m = (hc_model *)be->model;
    if (device >= HCI_MAX_DEVICES) return hci_errf(be->err, be->errsz, HC_ERR_UNSUPPORTED, "device %d", device);
    pthread_mutex_lock(&m->dev_lock);
    int st = HC_OK;
    if (m->dev_weights[device]) *out = &((weights_owner *)m->dev_weights[device])->w;
    else st = upload_weights(be, m, device, out);
    pthread_mutex_unlock(&m->dev_lock);
    return st;
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

static int cu_copy(hci_backend *be, void *dst, const void *src, size_t bytes)
{
    hci_cuda *cu = hci_cu(be);
    DeviceGuard g(cu->device);
    HCI_CU_TRY(be, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cu->stream));
    return HC_OK;
}

/* ---------------------------------------------------------------------------------------------
 * scratch: one buffer, sized in the preflight for the largest need of any op of the call
 * ------------------------------------------------------------------------------------------- */
static size_t a256(size_t b) { return (b + 255) & ~(size_t)255; }

static size_t need_scratch(const hci_backend *be, int layer, int n, int64_t end_pos)
{
    const hci_config *c = &be->model->cfg;
    int ratio = c->ratios[layer];
    int kmax = c->dim > c->q_lora_rank ? c->dim : c->q_lora_rank;
    if (c->o_groups * c->o_lora_rank > kmax) kmax = c->o_groups * c->o_lora_rank;
    size_t io = a256((size_t)n * c->dim * 4) + 256;
    /* FP8 activations, plus the grouped output projection's z behind them (cu_out_path) */
    size_t lin = hci_cu_fp8_scratch_bytes(n, kmax) + a256((size_t)n * c->o_groups * c->o_lora_rank * 2);
    size_t comp = 0, idx = 0;
    if (ratio) {
        int w2 = (ratio == 4 ? 2 : 1) * c->head_dim;
        size_t st = (size_t)(ratio == 4 ? 2 : 1) * ratio * w2 * sizeof(float);
        comp = a256((size_t)n * c->dim * 8) + a256((size_t)n * 2 * w2 * 8) + 2 * a256((size_t)n * w2 * 4) + 2 * a256(st);
    }
    if (ratio == 4) {
        idx = a256((size_t)n * c->dim * 8) + a256((size_t)n * c->index_n_heads * 8);
        size_t sel = hci_cu_index_scratch_bytes(n, end_pos / 4, c->index_topk);
        if (sel > idx) idx = sel;
    }
    int64_t row = c->window + (ratio == 4 ? c->index_topk : (ratio ? end_pos / ratio : 0));
    size_t att = hci_cu_attend_scratch_bytes(n, c->n_heads, c->head_dim, row);
    size_t need = io;
    size_t parts[] = {lin, comp, idx, att};
    for (size_t p : parts)
        if (p > need) need = p;
    return need;
}

static int cu_reserve(hci_backend *be, int layer, int n_piece, int64_t end_pos)
{
    hci_cuda *cu = hci_cu(be);
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
        int b = 0;
        if (bf16) for (int64_t i = 0; i < count; i++) b |= (((const uint16_t *)x)[i] & 0x7f80) == 0x7f80;
        else for (int64_t i = 0; i < count; i++) b |= (((const uint32_t *)x)[i] & 0x7f800000u) == 0x7f800000u;
        *bad = b;
        return HC_OK;
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

static int cu_load_input(hci_backend *be, const void *x, int io_dtype, int from_host, int64_t count, uint16_t *xb)
{
    hci_cuda *cu = hci_cu(be);
    DeviceGuard g(cu->device);
    int bf16 = io_dtype == HC_DTYPE_BF16;
    const void *src = x;
    if (from_host) {
        HCI_CU_TRY(be, cudaMemcpyAsync(cu->scratch, x, (size_t)count * (bf16 ? 2 : 4), cudaMemcpyHostToDevice,
                                       cu->stream));
        src = cu->scratch;
    }
    if (hci_cu_to_bf16(cu->stream, src, bf16, count, xb)) return hci_cu_fail(be, cudaGetLastError(), "input");
    return HC_OK;
}

static int cu_store_output(hci_backend *be, const uint16_t *yb, int io_dtype, int to_host, int64_t count, void *y)
{
    hci_cuda *cu = hci_cu(be);
    DeviceGuard g(cu->device);
    int bf16 = io_dtype == HC_DTYPE_BF16;
    void *dst = to_host ? cu->scratch : y;
    if (hci_cu_from_bf16(cu->stream, yb, bf16, count, dst)) return hci_cu_fail(be, cudaGetLastError(), "output");
    if (to_host) {
        HCI_CU_TRY(be, cudaMemcpyAsync(y, cu->scratch, (size_t)count * (bf16 ? 2 : 4), cudaMemcpyDeviceToHost,
                                       cu->stream));
        HCI_CU_TRY(be, cudaStreamSynchronize(cu->stream));
    }
    return HC_OK;
}

/* ---------------------------------------------------------------------------------------------
 * the attention block
 * ------------------------------------------------------------------------------------------- */
static const hci_cu_layer &lw(hci_backend *be, int layer) { return hci_cu(be)->w->layers[layer]; }
static const float *rope_of(hci_backend *be, int layer)
{
    return be->model->cfg.ratios[layer] ? hci_cu(be)->w->rope_comp : hci_cu(be)->w->rope_swa;
}
#define KTRY(be, call) \
    do { if ((call) != HC_OK) return hci_cu_fail((be), cudaGetLastError(), #call); } while (0)

static int cu_q_path(hci_backend *be, int layer, int n, int64_t pos0, const uint16_t *x, uint16_t *c, uint16_t *q)
{
    hci_cuda *cu = hci_cu(be);
    const hci_config *cf = &be->model->cfg;
    DeviceGuard g(cu->device);
    int st = hci_cu_linear_fp8(be, &lw(be, layer).wq_a, n, x, cf->dim, c, cf->q_lora_rank, cu->scratch);
    if (st) return st;
    KTRY(be, hci_cu_rmsnorm_rows(cu->stream, c, n, cf->q_lora_rank, lw(be, layer).q_norm, (float)cf->norm_eps));
    st = hci_cu_linear_fp8(be, &lw(be, layer).wq_b, n, c, cf->q_lora_rank, q, cf->n_heads * cf->head_dim, cu->scratch);
    if (st) return st;
    KTRY(be, hci_cu_q_heads(cu->stream, q, n, cf->n_heads, cf->head_dim, cf->rope_dim, rope_of(be, layer), pos0,
                            (float)cf->norm_eps));
    return HC_OK;
}

static int cu_kv_path(hci_backend *be, int layer, int n, int64_t pos0, const uint16_t *x, uint16_t *kv)
{
    hci_cuda *cu = hci_cu(be);
    const hci_config *cf = &be->model->cfg;
    DeviceGuard g(cu->device);
    int st = hci_cu_linear_fp8(be, &lw(be, layer).wkv, n, x, cf->dim, kv, cf->head_dim, cu->scratch);
    if (st) return st;
    KTRY(be, hci_cu_rmsnorm_rows(cu->stream, kv, n, cf->head_dim, lw(be, layer).kv_norm, (float)cf->norm_eps));
    KTRY(be, hci_cu_kv_rows(cu->stream, kv, n, cf->head_dim, cf->rope_dim, rope_of(be, layer), pos0));
    return HC_OK;
}

static int cu_index_q(hci_backend *be, int layer, int n, int64_t pos0, const uint16_t *x, const uint16_t *c,
                      uint16_t *qi, uint16_t *w)
{
    hci_cuda *cu = hci_cu(be);
    const hci_config *cf = &be->model->cfg;
    DeviceGuard g(cu->device);
    int IH = cf->index_n_heads, ID = cf->index_head_dim;
    int st = hci_cu_linear_fp8(be, &lw(be, layer).idx_wq_b, n, c, cf->q_lora_rank, qi, IH * ID, cu->scratch);
    if (st) return st;
    double *xd = (double *)cu->scratch;
    double *wd = (double *)((char *)cu->scratch + a256((size_t)n * cf->dim * 8));
    if (n <= HCI_CU_GEMV_MAX_N) {
        const hci_cu_bf16 &wp = lw(be, layer).idx_wproj16;
        KTRY(be, hci_cu_gemv_bf16(cu->stream, wp.w, wp.rows, wp.cols, 1, x, cf->dim, n, wd, nullptr, IH));
    } else {
        KTRY(be, hci_cu_bf16_to_f64(cu->stream, x, (int64_t)n * cf->dim, xd));
        if ((st = hci_cu_linear_f64(be, &lw(be, layer).idx_wproj, n, xd, wd))) return st;
    }
    float wscale = (float)(pow((double)ID, -0.5) * pow((double)IH, -0.5));
    KTRY(be, hci_cu_index_q_heads(cu->stream, qi, n, IH, ID, cf->rope_dim, rope_of(be, layer), pos0, wd, wscale, w));
    return HC_OK;
}

static int cu_compress(hci_backend *be, int layer, int which, hci_comp_cache *cc, int n, int64_t pos0,
                       const uint16_t *x)
{
    hci_cuda *cu = hci_cu(be);
    const hci_config *cf = &be->model->cfg;
    DeviceGuard g(cu->device);
    const hci_cu_comp &w = which ? lw(be, layer).idx_comp : lw(be, layer).comp;
    int w2 = w.coff * w.dc;
    size_t st_bytes = hci_comp_state_floats(cc) * sizeof(float);
    char *s = (char *)cu->scratch;
    double *xd = (double *)s;
    s += a256((size_t)n * cf->dim * 8);
    double *proj = (double *)s;
    s += a256((size_t)n * 2 * w2 * 8);
    float *A = (float *)s;
    s += a256((size_t)n * w2 * 4);
    float *Z = (float *)s;
    s += a256((size_t)n * w2 * 4);
    float *nkv = (float *)s;
    s += a256(st_bytes);
    float *nsc = (float *)s;
    if (n <= HCI_CU_GEMV_MAX_N) {
        KTRY(be, hci_cu_gemv_bf16(cu->stream, w.wkvg16.w, w.wkvg16.rows, w.wkvg16.cols, 1, x, cf->dim, n, proj,
                                  nullptr, 2 * w2));
    } else {
        KTRY(be, hci_cu_bf16_to_f64(cu->stream, x, (int64_t)n * cf->dim, xd));
        int st = hci_cu_linear_f64(be, &w.wkvg, n, xd, proj);
        if (st) return st;
    }
    hci_cu_comp_args a;
    a.ratio = w.ratio, a.coff = w.coff, a.dc = w.dc, a.rope_dim = cf->rope_dim, a.rotate = cc->rotate;
    a.pos0 = pos0, a.n = n, a.proj = proj, a.ape = w.ape, a.norm = w.norm, a.freq = rope_of(be, layer);
    a.eps = (float)cf->norm_eps, a.state_kv = cc->state_kv, a.state_score = cc->state_score;
    a.A = A, a.Z = Z, a.new_kv = nkv, a.new_score = nsc, a.l = cc->layout;
    a.pages = (uint8_t *const *)cc->entries.dev_table;
    KTRY(be, hci_cu_compress(cu->stream, &a));
    cc->n_entries = (pos0 + n) / w.ratio;
    return HC_OK;
}

static int cu_index_topk(hci_backend *be, int layer, const hci_comp_cache *idx, int n, int64_t pos0,
                         const uint16_t *qi, const uint16_t *w, int32_t *sel)
{
    (void)layer;
    hci_cuda *cu = hci_cu(be);
    const hci_config *cf = &be->model->cfg;
    DeviceGuard g(cu->device);
    KTRY(be, hci_cu_index_topk(cu->stream, &idx->layout, (uint8_t *const *)idx->entries.dev_table, n, pos0,
                               cf->index_n_heads, cf->index_head_dim, cf->index_topk, qi, w, sel, cu->scratch));
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
    a.sel = sel, a.sink = lw(be, layer).attn_sink, a.o = o;
    KTRY(be, hci_cu_attend(cu->stream, &a, cu->scratch));
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

static int cu_out_path(hci_backend *be, int layer, int n, int64_t pos0, uint16_t *o, uint16_t *y)
{
    hci_cuda *cu = hci_cu(be);
    const hci_config *cf = &be->model->cfg;
    DeviceGuard g(cu->device);
    int G = cf->o_groups, R = cf->o_lora_rank, H = cf->n_heads, d = cf->head_dim;
    KTRY(be, hci_cu_inverse_rope(cu->stream, o, n, H, d, cf->rope_dim, rope_of(be, layer), pos0));
    /* z [n][G*R] lives behind the FP8 activation scratch */
    uint16_t *z = (uint16_t *)((char *)cu->scratch + hci_cu_fp8_scratch_bytes(n, G * R));
    int st = hci_cu_linear_bf16_grouped(be, &lw(be, layer).wo_a, G, n, o, H * d, z, G * R);
    if (!st) st = hci_cu_linear_fp8(be, &lw(be, layer).wo_b, n, z, G * R, y, cf->dim, cu->scratch);
    return st;
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
        cudaFree(cu->scratch);
        cudaFree(cu->lt_ws);
        if (cu->lt) cublasLtDestroy(cu->lt);
        if (cu->own_stream && cu->stream) cudaStreamDestroy(cu->stream);
        delete cu;
    }
    free(be);
}

/* Every field, in declaration order (C++ designated initializers). */
static const hci_backend_ops cuda_ops = {
    .name = "cuda",
    .destroy = cu_destroy,
    .alloc = cu_alloc,
    .free = cu_free,
    .upload = cu_upload,
    .download = cu_download,
    .copy = cu_copy,
    .page_alloc = hci_cu_page_alloc,
    .page_free = hci_cu_page_free,
    .pages_sync = hci_cu_pages_sync,
    .host_pool = nullptr,
    .reserve = cu_reserve,
    .check_input = cu_check_input,
    .load_input = cu_load_input,
    .store_output = cu_store_output,
    .q_path = cu_q_path,
    .kv_path = cu_kv_path,
    .index_q = cu_index_q,
    .compress = cu_compress,
    .index_topk = cu_index_topk,
    .attend = cu_attend,
    .window_write = cu_window_write,
    .out_path = cu_out_path,
};

/* The projections' row counts that the cuBLASLt block-scaled path needs to be multiples of 128. */
static int geometry_supported(const hci_config *c)
{
    return c->q_lora_rank % 128 == 0 && (c->n_heads * c->head_dim) % 128 == 0 && c->head_dim % 128 == 0 &&
           c->dim % 128 == 0 && (c->index_n_heads * c->index_head_dim) % 128 == 0;
}

extern "C" int hci_backend_cuda_create(const struct hc_model *m, int device, void *stream, int max_chunk,
                                       char *err, size_t errsz, hci_backend **out)
{
    int count = hci_backend_cuda_device_count();
    if (device >= count)
        return hci_errf(err, errsz, HC_ERR_NO_DEVICE, "CUDA device %d asked for, %d usable", device, count);
    if (!geometry_supported(&m->cfg))
        return hci_errf(err, errsz, HC_ERR_UNSUPPORTED,
                        "the CUDA backend needs q_lora_rank, heads*head_dim, head_dim and index heads*dim to be "
                        "multiples of 128");
    hci_backend *be = (hci_backend *)calloc(1, sizeof *be);
    hci_cuda *cu = new (std::nothrow) hci_cuda();
    if (!be || !cu) {
        free(be);
        delete cu;
        return hci_errf(err, errsz, HC_ERR_OUT_OF_MEMORY, "out of memory");
    }
    be->ops = &cuda_ops;
    be->kind = HC_BACKEND_CUDA;
    be->model = m;
    be->max_chunk = ((max_chunk > 0 ? max_chunk : 2048) + 15) & ~15;
    be->ops_may_fail = 0;
    be->err = err;
    be->errsz = errsz;
    be->impl = cu;
    cu->device = device;
    DeviceGuard g(device);
    int st = HC_OK;
    cudaError_t e;
    if (stream) cu->stream = (cudaStream_t)stream;
    else if ((e = cudaStreamCreateWithFlags(&cu->stream, cudaStreamNonBlocking)) != cudaSuccess)
        st = hci_cu_fail(be, e, "cudaStreamCreate");
    else cu->own_stream = 1;
    if (!st) {
        cublasStatus_t bs = cublasLtCreate(&cu->lt);
        if (bs != CUBLAS_STATUS_SUCCESS) st = hci_cu_blas_fail(be, bs, "cublasLtCreate");
    }
    cu->lt_ws_bytes = 32u << 20;
    if (!st && (e = cudaMalloc(&cu->lt_ws, cu->lt_ws_bytes)) != cudaSuccess) st = hci_cu_fail(be, e, "workspace");
    /* a geometry-only model has no weights: its contexts are sized, filled and saved, never run */
    if (!st && m->has_weights) st = get_weights(be, device, &cu->w);
    if (!st) st = cu_reserve(be, 0, be->max_chunk, 0);
    if (st) {
        cu_destroy(be);
        return st;
    }
    *out = be;
    return HC_OK;
}
