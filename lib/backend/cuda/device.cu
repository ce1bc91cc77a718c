/* device.cu - the device objects (device.h): a process-wide list of (model, GPU) objects, the
 * one-time upload of a model's weights, and the streams and workspaces lent to contexts. */
#include <stdlib.h>
#include <string.h>
#include "device.h"
#include "hybridctx.h"
extern "C" {
#include "../../util/bf16.h"
#include "../../util/threadpool.h"
}

/* ---------------------------------------------------------------------------------------------
 * weights: uploaded once per model and device
 * ------------------------------------------------------------------------------------------- */
namespace {
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
    hci_cu_comp comp(const hci_compressor_w &c)
    {
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
} // namespace

static int upload_weights(hci_cu_device *d, char *err, size_t errsz)
{
    const hc_model *m = d->model;
    const hci_config *c = &m->cfg;
    d->w.device = d->ordinal;
    d->w.n_layers = c->n_layers;
    d->w.layers = new (std::nothrow) hci_cu_layer[c->n_layers];
    if (!d->w.layers) return hci_errf(err, errsz, HC_ERR_OUT_OF_MEMORY, "out of memory");
    Uploader u;
    d->w.rope_swa = u.f32(m->rope_swa.freq, (size_t)m->rope_swa.n_pairs);
    d->w.rope_comp = u.f32(m->rope_comp.freq, (size_t)m->rope_comp.n_pairs);
    for (int i = 0; i < c->n_layers && u.err == cudaSuccess; i++) {
        const hci_layer_w &L = m->layers[i];
        hci_cu_layer &l = d->w.layers[i];
        memset(&l, 0, sizeof l);
        l.ratio = L.ratio;
        l.wq_a = u.fp8(L.wq_a), l.wq_b = u.fp8(L.wq_b), l.wkv = u.fp8(L.wkv), l.wo_b = u.fp8(L.wo_b);
        l.q_norm = u.f32(L.q_norm, (size_t)c->q_lora_rank);
        l.kv_norm = u.f32(L.kv_norm, (size_t)c->head_dim);
        l.attn_sink = u.f32(L.attn_sink, (size_t)c->n_heads);
        l.wo_a = u.bf16(L.wo_a);
        if (L.ratio) l.comp = u.comp(L.comp);
        if (L.ratio == 4) {
            l.idx_wq_b = u.fp8(L.idx_wq_b);
            const hci_bf16_mat *wp[1] = {&L.idx_weights_proj};
            l.idx_wproj = u.f64(wp, 1);
            l.idx_wproj16 = u.stack16(wp, 1);
            l.idx_comp = u.comp(L.idx_comp);
        }
    }
    d->weight_allocs = u.allocs;
    d->w.bytes = u.bytes;
    return u.err == cudaSuccess ? HC_OK : hci_cu_fail_msg(err, errsz, u.err, "uploading the weights");
}

/* ---------------------------------------------------------------------------------------------
 * life of a device object
 * ------------------------------------------------------------------------------------------- */
static void destroy(hci_cu_device *d)
{
    hci_cu_device_guard g(d->ordinal);
    /* contexts are gone (they hold references): cudaFree waits for work still queued */
    for (cudaStream_t s : d->idle_streams) cudaStreamDestroy(s);
    for (void *w : d->idle_workspaces) cudaFree(w);
    for (void *a : d->weight_allocs) cudaFree(a);
    delete[] d->w.layers;
    if (d->pool) cudaMemPoolDestroy(d->pool);
    if (d->lt) cublasLtDestroy(d->lt);
    hci_pool_destroy(d->io_pool);
    delete d;
}

static int create(const hc_model *m, int ordinal, char *err, size_t errsz, hci_cu_device **out)
{
    hci_cu_device *d = new (std::nothrow) hci_cu_device();
    if (!d) return hci_errf(err, errsz, HC_ERR_OUT_OF_MEMORY, "out of memory");
    d->model = m;
    d->ordinal = ordinal;
    d->refs = 1;
    d->workspace_bytes = 32u << 20;
    hci_cu_device_guard g(ordinal);
    int st = HC_OK;
    cublasStatus_t bs = cublasLtCreate(&d->lt);
    if (bs != CUBLAS_STATUS_SUCCESS) {
        d->lt = nullptr;
        st = hci_errf(err, errsz, HC_ERR_CUBLAS, "cuBLASLt status %d in cublasLtCreate", (int)bs);
    }
    if (!st) {
        cudaMemPoolProps props;
        memset(&props, 0, sizeof props);
        props.allocType = cudaMemAllocationTypePinned;
        props.location.type = cudaMemLocationTypeDevice;
        props.location.id = ordinal;
        cudaError_t e = cudaMemPoolCreate(&d->pool, &props);
        if (e != cudaSuccess) {
            d->pool = nullptr;
            st = hci_cu_fail_msg(err, errsz, e, "cudaMemPoolCreate");
        }
    }
    /* a geometry-only model has no weights: its contexts are sized, filled and saved, never run */
    if (!st && m->has_weights) st = upload_weights(d, err, errsz);
    if (st) {
        destroy(d);
        return st;
    }
    *out = d;
    return HC_OK;
}

/* The registry's references, one per (model, device) object. */
static std::mutex registry_lock;
static std::vector<hci_cu_device *> registry;

int hci_cu_device_get(const hc_model *m, int ordinal, char *err, size_t errsz, hci_cu_device **out)
{
    std::lock_guard<std::mutex> hold(registry_lock);
    for (hci_cu_device *d : registry)
        if (d->model == m && d->ordinal == ordinal) {
            d->refs++;
            *out = d;
            return HC_OK;
        }
    hci_cu_device *d = nullptr;
    int st = create(m, ordinal, err, errsz, &d);
    if (st) return st;
    try {
        registry.push_back(d);
    } catch (...) {
        destroy(d);
        return hci_errf(err, errsz, HC_ERR_OUT_OF_MEMORY, "out of memory");
    }
    d->refs++;
    *out = d;
    return HC_OK;
}

void hci_cu_device_put(hci_cu_device *d)
{
    if (d && --d->refs == 0) destroy(d);
}

void hci_cu_devices_release_model(const hc_model *m)
{
    std::vector<hci_cu_device *> mine;
    {
        std::lock_guard<std::mutex> hold(registry_lock);
        for (size_t i = 0; i < registry.size();)
            if (registry[i]->model == m) {
                mine.push_back(registry[i]);
                registry.erase(registry.begin() + (long)i);
            } else {
                i++;
            }
    }
    for (hci_cu_device *d : mine) hci_cu_device_put(d);
}

/* ---------------------------------------------------------------------------------------------
 * streams and workspaces lent to contexts
 * ------------------------------------------------------------------------------------------- */
int hci_cu_device_take_stream(hci_cu_device *d, cudaStream_t *out)
{
    {
        std::lock_guard<std::mutex> hold(d->lock);
        if (!d->idle_streams.empty()) {
            *out = d->idle_streams.back();
            d->idle_streams.pop_back();
            return HC_OK;
        }
    }
    hci_cu_device_guard g(d->ordinal);
    return cudaStreamCreateWithFlags(out, cudaStreamNonBlocking) == cudaSuccess ? HC_OK : HC_ERR_CUDA;
}

void hci_cu_device_give_stream(hci_cu_device *d, cudaStream_t s)
{
    std::lock_guard<std::mutex> hold(d->lock);
    try {
        d->idle_streams.push_back(s);
    } catch (...) {
        hci_cu_device_guard g(d->ordinal);
        cudaStreamDestroy(s);
    }
}

int hci_cu_device_take_workspace(hci_cu_device *d, void **out)
{
    {
        std::lock_guard<std::mutex> hold(d->lock);
        if (!d->idle_workspaces.empty()) {
            *out = d->idle_workspaces.back();
            d->idle_workspaces.pop_back();
            return HC_OK;
        }
    }
    hci_cu_device_guard g(d->ordinal);
    cudaError_t e = cudaMalloc(out, d->workspace_bytes);
    if (e == cudaSuccess) return HC_OK;
    cudaGetLastError();
    return e == cudaErrorMemoryAllocation ? HC_ERR_OUT_OF_MEMORY : HC_ERR_CUDA;
}

void hci_cu_device_give_workspace(hci_cu_device *d, void *ws)
{
    std::lock_guard<std::mutex> hold(d->lock);
    try {
        d->idle_workspaces.push_back(ws);
    } catch (...) {
        hci_cu_device_guard g(d->ordinal);
        cudaFree(ws);
    }
}

/* ---------------------------------------------------------------------------------------------
 * host threads for host I/O (host_io.cu)
 * ------------------------------------------------------------------------------------------- */
hci_pool *hci_cu_device_take_io_pool(hci_cu_device *d)
{
    if (!d->io_lock.try_lock()) return nullptr;
    if (!d->io_pool_tried) {
        d->io_pool_tried = 1;
        /* the conversions are memory-bound: a few threads fill the memory bus (docs/cuda.md) */
        int n = hci_online_cores();
        if (n > HCI_CU_IO_THREADS) n = HCI_CU_IO_THREADS;
        if (n > 1) d->io_pool = hci_pool_create(n);
    }
    if (!d->io_pool) {
        d->io_lock.unlock();
        return nullptr;
    }
    return d->io_pool;
}

void hci_cu_device_give_io_pool(hci_cu_device *d) { d->io_lock.unlock(); }
