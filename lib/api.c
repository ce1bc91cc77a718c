/* api.c - the public entry points: argument checks, error text, the per-context last error,
 * and dispatch to the model, context and engine code. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "hybridctx.h"
#include "hybridctx_experimental.h"
#include "backend/backend.h"
#include "backend/registry.h"
#include "ctx/ctx.h"
#include "model/loader.h"
#include "model/model.h"
#include "util/error.h"
#include "util/params.h"

HC_API uint32_t hc_version_number(void) { return HC_VERSION_NUMBER; }
HC_API const char *hc_version_string(void) { return HC_VERSION_STRING; }

static const struct { hc_status s; const char *name, *text; } status_table[] = {
    {HC_OK, "HC_OK", "success"},
    {HC_ERR_NULL_ARG, "HC_ERR_NULL_ARG", "a required pointer argument is NULL"},
    {HC_ERR_INVALID_ARG, "HC_ERR_INVALID_ARG", "an argument is outside its documented range"},
    {HC_ERR_OUT_OF_MEMORY, "HC_ERR_OUT_OF_MEMORY", "out of memory"},
    {HC_ERR_UNKNOWN_PRESET, "HC_ERR_UNKNOWN_PRESET", "unknown model preset"},
    {HC_ERR_BAD_CONFIG, "HC_ERR_BAD_CONFIG", "invalid model configuration"},
    {HC_ERR_LAYER_RANGE, "HC_ERR_LAYER_RANGE", "layer index out of range"},
    {HC_ERR_ORDER, "HC_ERR_ORDER", "layer called out of order"},
    {HC_ERR_N_TOKENS, "HC_ERR_N_TOKENS", "token count must be positive"},
    {HC_ERR_POSITION, "HC_ERR_POSITION", "position beyond the context's maximum length"},
    {HC_ERR_NONFINITE, "HC_ERR_NONFINITE", "input holds NaN or infinity"},
    {HC_ERR_IO, "HC_ERR_IO", "input/output error"},
    {HC_ERR_FORMAT, "HC_ERR_FORMAT", "malformed file or text"},
    {HC_ERR_MISSING_TENSOR, "HC_ERR_MISSING_TENSOR", "a required tensor is missing"},
    {HC_ERR_TENSOR, "HC_ERR_TENSOR", "a tensor has the wrong shape or dtype"},
    {HC_ERR_UNSUPPORTED, "HC_ERR_UNSUPPORTED", "not supported"},
    {HC_ERR_NO_DEVICE, "HC_ERR_NO_DEVICE", "no usable CUDA device"},
    {HC_ERR_CUDA, "HC_ERR_CUDA", "CUDA runtime error"},
    {HC_ERR_CUBLAS, "HC_ERR_CUBLAS", "cuBLAS error"},
    {HC_ERR_BAD_STATE, "HC_ERR_BAD_STATE", "context poisoned by an earlier device fault"},
    {HC_ERR_CORRUPT, "HC_ERR_CORRUPT", "data is corrupt"},
    {HC_ERR_VERSION, "HC_ERR_VERSION", "incompatible format version"},
    {HC_ERR_MODEL_MISMATCH, "HC_ERR_MODEL_MISMATCH", "data belongs to another model or configuration"},
    {HC_ERR_BUFFER_TOO_SMALL, "HC_ERR_BUFFER_TOO_SMALL", "buffer too small"},
    {HC_ERR_LIMIT, "HC_ERR_LIMIT", "input exceeds a documented limit"},
    {HC_ERR_ABORTED, "HC_ERR_ABORTED", "stopped by a progress callback"},
    {HC_ERR_INTERNAL, "HC_ERR_INTERNAL", "internal error"},
};

HC_API const char *hc_strerror(hc_status s)
{
    for (size_t i = 0; i < sizeof status_table / sizeof status_table[0]; i++)
        if (status_table[i].s == s) return status_table[i].text;
    return "unknown status";
}

HC_API const char *hc_status_name(hc_status s)
{
    for (size_t i = 0; i < sizeof status_table / sizeof status_table[0]; i++)
        if (status_table[i].s == s) return status_table[i].name;
    return "HC_UNKNOWN";
}

/* ------------------------------------------------------------------------------------------- */

HC_API hc_status hc_model_params_init(hc_model_params *p, size_t struct_size)
{
    if (!p) return HC_ERR_NULL_ARG;
    if (struct_size < sizeof(uint32_t)) return HC_ERR_INVALID_ARG;
    hc_model_params d = {0};
    d.struct_size = (uint32_t)(struct_size < sizeof d ? struct_size : sizeof d);
    memset(p, 0, struct_size);
    memcpy(p, &d, d.struct_size);
    p->struct_size = (uint32_t)struct_size;
    return HC_OK;
}

HC_API hc_status hc_ctx_params_init(hc_ctx_params *p, size_t struct_size)
{
    if (!p) return HC_ERR_NULL_ARG;
    if (struct_size < sizeof(uint32_t)) return HC_ERR_INVALID_ARG;
    memset(p, 0, struct_size);
    p->struct_size = (uint32_t)struct_size;
    return HC_OK;
}

/* Copy a caller's params into the library's version (size-versioned, unknown tail must be 0). */
static hc_status read_model_params(const hc_model_params *p, hc_model_params *out)
{
    return hci_read_params(p, sizeof *out, out);
}

/* A message into a caller's optional buffer (params' errbuf), truncated to fit. */
static void copy_errbuf(char *buf, uint64_t size, const char *msg)
{
    if (!buf || !size) return;
    size_t n = strlen(msg);
    if (n >= size) n = (size_t)size - 1;
    memcpy(buf, msg, n);
    buf[n] = 0;
}

static hc_status model_fail(hc_model *m, const hc_model_params *mp, const char *err, hc_status st)
{
    copy_errbuf(mp->errbuf, mp->errbuf_size, err);
    if (m) {
        hci_model_destroy(m);
        free(m);
    }
    return st;
}

static hc_model *model_new(void) { return calloc(1, sizeof(hc_model)); }

HC_API hc_status hc_model_create_random(const char *text, uint64_t seed, const hc_model_params *p,
                                        hc_model **out)
{
    if (out) *out = NULL;
    if (!text || !out) return HC_ERR_NULL_ARG;
    hc_model_params mp;
    hc_status st = read_model_params(p, &mp);
    if (st) return st;
    if (mp.reserved0 || (mp.flags & ~HC_MODEL_GEOMETRY_ONLY) || mp.n_threads < 0) return HC_ERR_INVALID_ARG;
    char err[HCI_ERRLEN] = "";
    hc_model *m = model_new();
    if (!m) return model_fail(NULL, &mp, "out of memory", HC_ERR_OUT_OF_MEMORY);
    if ((st = hci_config_from_text(text, &m->cfg, err, sizeof err))) return model_fail(m, &mp, err, st);
    if (!(mp.flags & HC_MODEL_GEOMETRY_ONLY)) {
        if ((st = hci_model_alloc(m, err, sizeof err))) return model_fail(m, &mp, err, st);
        m->has_weights = 1;
        if (hci_model_init_random(m, seed, mp.n_threads, mp.progress, mp.progress_user))
            return model_fail(m, &mp, "model creation stopped by the progress callback", HC_ERR_ABORTED);
    }
    if ((st = hci_model_finish(m))) return model_fail(m, &mp, "out of memory", st);
    *out = m;
    return HC_OK;
}

HC_API hc_status hc_model_load(const char *path, const hc_model_params *p, hc_model **out)
{
    if (out) *out = NULL;
    if (!path || !out) return HC_ERR_NULL_ARG;
    hc_model_params mp;
    hc_status st = read_model_params(p, &mp);
    if (st) return st;
    if (mp.reserved0 || (mp.flags & ~HC_MODEL_GEOMETRY_ONLY) || mp.n_threads < 0) return HC_ERR_INVALID_ARG;
    char err[HCI_ERRLEN] = "";
    hc_model *m = model_new();
    if (!m) return model_fail(NULL, &mp, "out of memory", HC_ERR_OUT_OF_MEMORY);
    if ((st = hci_model_load_path_progress(path, !(mp.flags & HC_MODEL_GEOMETRY_ONLY), mp.progress,
                                           mp.progress_user, m, err, sizeof err)))
        return model_fail(m, &mp, err, st);
    if ((st = hci_model_finish(m))) return model_fail(m, &mp, "out of memory", st);
    *out = m;
    return HC_OK;
}

HC_API void hc_model_free(hc_model *m)
{
    if (!m) return;
    hci_backends_model_release(m); /* weights on devices and the rest that contexts shared */
    hci_model_destroy(m);
    free(m);
}

HC_API int hc_model_n_layers(const hc_model *m) { return m ? m->cfg.n_layers : -1; }
HC_API int hc_model_dim(const hc_model *m) { return m ? m->cfg.dim : -1; }
HC_API int hc_model_layer_ratio(const hc_model *m, int layer)
{
    if (!m || layer < 0 || layer >= m->cfg.n_layers) return -1;
    return m->cfg.ratios[layer];
}

HC_API hc_status hc_model_info_get(const hc_model *m, hc_model_info *info)
{
    if (!m || !info) return HC_ERR_NULL_ARG;
    if (info->struct_size < sizeof(uint32_t)) return HC_ERR_INVALID_ARG;
    const hci_config *c = &m->cfg;
    hc_model_info d = {0};
    d.n_layers = c->n_layers, d.dim = c->dim, d.n_heads = c->n_heads, d.head_dim = c->head_dim;
    d.rope_dim = c->rope_dim, d.q_lora_rank = c->q_lora_rank, d.o_groups = c->o_groups;
    d.o_lora_rank = c->o_lora_rank, d.window = c->window, d.index_n_heads = c->index_n_heads;
    d.index_head_dim = c->index_head_dim, d.index_topk = c->index_topk;
    d.has_weights = m->has_weights, d.max_positions = c->max_positions, d.weight_bytes = m->weight_bytes;
    size_t n = info->struct_size < sizeof d ? info->struct_size : sizeof d;
    d.struct_size = info->struct_size;
    memcpy(info, &d, n);
    return HC_OK;
}

static int resolve_format(int32_t f) { return f == HC_CACHE_BF16 ? HCI_FMT_BF16 : HCI_FMT_FP8; }

HC_API hc_status hc_model_cache_bytes(const hc_model *m, int64_t n_tokens, int32_t cache_format,
                                      uint64_t *kv_bytes, uint64_t *state_bytes)
{
    if (!m) return HC_ERR_NULL_ARG;
    if (n_tokens < 0 || cache_format < HC_CACHE_DEFAULT || cache_format > HC_CACHE_FP8)
        return HC_ERR_INVALID_ARG;
    const hci_config *c = &m->cfg;
    int fmt = resolve_format(cache_format);
    hci_entry_layout ml = hci_layout_main(fmt, c->head_dim, c->rope_dim);
    hci_entry_layout il = hci_layout_index(fmt, c->index_head_dim);
    uint64_t kv = 0, stb = 0;
    for (int i = 0; i < c->n_layers; i++) {
        int r = c->ratios[i];
        kv += (uint64_t)c->window * ml.entry_bytes;
        if (!r) continue;
        uint64_t ne = (uint64_t)n_tokens / (uint64_t)r;
        kv += ne * ml.entry_bytes;
        int coff = hci_cfg_coff(r);
        stb += 2ull * coff * r * coff * c->head_dim * sizeof(float);
        if (r == 4) {
            kv += ne * il.entry_bytes;
            stb += 2ull * 2 * 4 * 2 * c->index_head_dim * sizeof(float);
        }
    }
    if (kv_bytes) *kv_bytes = kv;
    if (state_bytes) *state_bytes = stb;
    return HC_OK;
}

/* ------------------------------------------------------------------------------------------- */

static const char null_ctx_msg[] = "NULL context";

HC_API hc_status hc_cuda_device_count(int32_t *out)
{
    if (!out) return HC_ERR_NULL_ARG;
    *out = hci_backend_cuda_devices();
    return HC_OK;
}

HC_API hc_status hc_backend_info_get(int32_t backend, int32_t device, hc_backend_info *info)
{
    if (!info) return HC_ERR_NULL_ARG;
    if (info->struct_size < sizeof(uint32_t) || backend < HC_BACKEND_AUTO || backend > HC_BACKEND_CUDA || device < 0)
        return HC_ERR_INVALID_ARG;
    hc_backend_info d = {.struct_size = sizeof d};
    hci_backend_describe(backend, device, &d);
    size_t n = info->struct_size < sizeof d ? info->struct_size : sizeof d;
    d.struct_size = info->struct_size;
    memcpy(info, &d, n);
    return HC_OK;
}

/* A failed create or fork: the detail goes to the caller's buffer, as the context that would hold
 * it does not exist. */
static void put_errbuf(const hc_ctx_params *cp, const char *msg) { copy_errbuf(cp->errbuf, cp->errbuf_size, msg); }

static hc_status create_fail(hc_ctx *c, const hc_ctx_params *cp, hc_status st)
{
    put_errbuf(cp, c && c->err[0] ? c->err : hc_strerror(st));
    hc_ctx_free(c);
    return st;
}

#define HCI_MAX_ROLLBACK 65536

/* The ranges of hc_ctx_params' fields (what hc_ctx_create and hc_ctx_fork both accept). */
static int ctx_params_valid(const hc_ctx_params *cp)
{
    return !(cp->backend < HC_BACKEND_AUTO || cp->backend > HC_BACKEND_CUDA || cp->device < 0 || cp->n_threads < 0 ||
             cp->n_threads > 4096 || cp->cache_format < 0 || cp->cache_format > HC_CACHE_FP8 || cp->io_dtype < 0 ||
             cp->io_dtype > HC_DTYPE_BF16 || (cp->io_memory != HC_MEM_HOST && cp->io_memory != HC_MEM_DEVICE) ||
             cp->flags || cp->max_tokens < 0 || cp->max_chunk < 0 || cp->max_chunk > 65536 ||
             (cp->errbuf_size && !cp->errbuf) || cp->max_rollback < 0 || cp->max_rollback > HCI_MAX_ROLLBACK ||
             cp->numerics < HC_NUMERICS_DEFAULT || cp->numerics > HC_NUMERICS_EXACT || cp->reserved);
}

/* A context without caches: fields, backend, workspace. *out is set even on failure (with the
 * message in its err) unless it could not be allocated. */
static hc_status ctx_new(hc_model *m, const hc_ctx_params *cp, hc_ctx **out)
{
    hc_ctx *c = *out = calloc(1, sizeof *c);
    if (!c) return HC_ERR_OUT_OF_MEMORY;
    c->model = m;
    c->cache_fmt = resolve_format(cp->cache_format);
    c->io_dtype = cp->io_dtype == HC_DTYPE_BF16 ? HC_DTYPE_BF16 : HC_DTYPE_F32;
    c->io_memory = cp->io_memory;
    c->max_tokens = cp->max_tokens && cp->max_tokens < m->cfg.max_positions ? cp->max_tokens : m->cfg.max_positions;
    c->max_rollback = cp->max_rollback;
    hci_backend_args args = {.kind = cp->backend, .device = cp->device, .stream = cp->cuda_stream,
                             .n_threads = cp->n_threads, .max_chunk = (int)cp->max_chunk, .numerics = cp->numerics,
                             .err = c->err, .errsz = sizeof c->err};
    hc_status st = hci_backend_create(m, &args, &c->be);
    if (!st && cp->io_memory == HC_MEM_DEVICE && !(c->be->caps & HC_CAP_DEVICE_IO))
        st = hci_errf(c->err, sizeof c->err, HC_ERR_INVALID_ARG, "the %s backend takes no device-memory x and y",
                      c->be->ops->name);
    if (!st) st = hci_ctx_alloc_workspace(c, c->be->max_chunk);
    /* what a fork with NULL params gets: these params, resolved, without the caller's buffer */
    c->params = *cp;
    c->params.errbuf = NULL, c->params.errbuf_size = 0;
    if (c->be) c->params.backend = c->be->kind, c->params.numerics = c->be->numerics; /* DEFAULT resolved */
    c->params.cache_format = c->cache_fmt == HCI_FMT_BF16 ? HC_CACHE_BF16 : HC_CACHE_FP8;
    return st;
}

HC_API hc_status hc_ctx_create(hc_model *m, const hc_ctx_params *p, hc_ctx **out)
{
    if (out) *out = NULL;
    if (!m || !out) return HC_ERR_NULL_ARG;
    hc_ctx_params cp;
    hc_status st = hci_read_params(p, sizeof cp, &cp);
    if (st) return st;
    if (!ctx_params_valid(&cp)) return create_fail(NULL, &cp, HC_ERR_INVALID_ARG);
    hc_ctx *c = NULL;
    st = ctx_new(m, &cp, &c);
    if (!st) st = hci_cache_create(c->be, &m->cfg, c->cache_fmt, &c->layers);
    if (!st && (st = hci_hist_alloc(c->be, c->layers, m->cfg.n_layers, c->max_rollback)))
        hci_errf(c->err, sizeof c->err, st, "out of memory for a rollback history of %lld tokens",
                 (long long)c->max_rollback);
    if (st) return create_fail(c, &cp, st);
    *out = c;
    return HC_OK;
}

HC_API void hc_ctx_free(hc_ctx *c)
{
    if (!c) return;
    if (c->be) {
        if (c->snap_store) c->be->ops->free(c->be, c->snap_store);
        hci_ctx_free_workspace(c);
        hci_cache_free(c->be, c->layers, c->model->cfg.n_layers);
        c->layers = NULL;
        c->be->ops->destroy(c->be);
    }
    free(c->meta);
    free(c);
}

HC_API const char *hc_ctx_last_error(const hc_ctx *c) { return c ? c->err : null_ctx_msg; }

static hc_status ctx_fail(hc_ctx *c, hc_status st, const char *msg)
{
    if (!c->err[0]) hci_errf(c->err, sizeof c->err, st, "%s", msg);
    return st;
}

/* The checks of a layer call that do not read x: why c refuses `n_tokens` tokens at `layer`. */
static hc_status check_layer_call(hc_ctx *c, int layer, int64_t n_tokens)
{
    const hci_config *cfg = &c->model->cfg;
    if (c->poisoned) return ctx_fail(c, HC_ERR_BAD_STATE, "context poisoned by an earlier device fault");
    if (layer < 0 || layer >= cfg->n_layers)
        return hci_errf(c->err, sizeof c->err, HC_ERR_LAYER_RANGE, "layer %d outside 0..%d", layer,
                        cfg->n_layers - 1);
    if (n_tokens <= 0)
        return hci_errf(c->err, sizeof c->err, HC_ERR_N_TOKENS, "n_tokens %lld must be positive",
                        (long long)n_tokens);
    if (layer != c->next_layer)
        return hci_errf(c->err, sizeof c->err, HC_ERR_ORDER,
                        "layer %d called, but the chunk in progress needs layer %d next", layer, c->next_layer);
    if (layer > 0 && n_tokens != c->chunk_n)
        return hci_errf(c->err, sizeof c->err, HC_ERR_ORDER,
                        "the chunk in progress has %lld tokens, this call passes %lld", (long long)c->chunk_n,
                        (long long)n_tokens);
    if (n_tokens > c->max_tokens - c->n_tokens)
        return hci_errf(c->err, sizeof c->err, HC_ERR_POSITION,
                        "%lld tokens at position %lld pass the maximum length %lld", (long long)n_tokens,
                        (long long)c->n_tokens, (long long)c->max_tokens);
    if (!c->model->has_weights)
        return ctx_fail(c, HC_ERR_UNSUPPORTED, "the model has no weights (HC_MODEL_GEOMETRY_ONLY)");
    return HC_OK;
}

/* A layer call has passed: the chunk moves on (and the context grows after the last layer). */
static void advance(hc_ctx *c, int64_t n_tokens)
{
    c->chunk_n = n_tokens;
    if (++c->next_layer == c->model->cfg.n_layers) {
        c->next_layer = 0;
        c->n_tokens += n_tokens;
    }
}

HC_API hc_status hc_append(hc_ctx *c, int layer, const void *x, int64_t n_tokens, void *y)
{
    if (!c) return HC_ERR_NULL_ARG;
    c->err[0] = 0;
    if (!x || !y) return ctx_fail(c, HC_ERR_NULL_ARG, "x and y must not be NULL");
    hc_status st = check_layer_call(c, layer, n_tokens);
    if (st) return st;
    st = hci_engine_layer(c, layer, x, n_tokens, y);
    if (st) return st;
    advance(c, n_tokens);
    return HC_OK;
}

HC_API hc_status hc_decode(hc_ctx *c, int layer, const void *x, void *y) { return hc_append(c, layer, x, 1, y); }

HC_API int64_t hc_ctx_n_tokens(const hc_ctx *c) { return c ? c->n_tokens : -1; }

HC_API int32_t hc_ctx_numerics(const hc_ctx *c) { return c ? c->be->numerics : HC_ERR_NULL_ARG; }
HC_API int hc_ctx_next_layer(const hc_ctx *c) { return c ? c->next_layer : -1; }
HC_API uint64_t hc_ctx_memory_bytes(const hc_ctx *c)
{
    if (!c) return 0;
    hci_cache_usage u = hci_cache_bytes(c->layers, c->model->cfg.n_layers);
    return u.own + u.shared;
}
HC_API int32_t hc_ctx_backend(const hc_ctx *c) { return c ? c->be->kind : -1; }

HC_API hc_status hc_x_ctx_set_option(hc_ctx *c, const char *name, int64_t value)
{
    if (!c) return HC_ERR_NULL_ARG;
    c->err[0] = 0;
    if (!name) return ctx_fail(c, HC_ERR_NULL_ARG, "name must not be NULL");
    if (!c->be->ops->set_option)
        return hci_errf(c->err, sizeof c->err, HC_ERR_UNSUPPORTED, "the %s backend has no option \"%s\"",
                        c->be->ops->name, name);
    return c->be->ops->set_option(c->be, name, value);
}

HC_API hc_status hc_ctx_reset(hc_ctx *c)
{
    if (!c) return HC_ERR_NULL_ARG;
    c->err[0] = 0;
    if (c->poisoned) return ctx_fail(c, HC_ERR_BAD_STATE, "context poisoned by an earlier device fault");
    hc_status st = hci_cache_clear(c->be, c->layers, c->model->cfg.n_layers);
    if (st) return ctx_fail(c, st, "reset failed");
    c->n_tokens = 0;
    c->next_layer = 0;
    c->chunk_n = 0;
    c->hist_from = 0;
    /* the metadata describes the sequence (token ids, say): it goes with it */
    free(c->meta);
    c->meta = NULL;
    c->meta_len = 0;
    return HC_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Serving: forks, rollback, memory
 * ------------------------------------------------------------------------------------------- */

/* A failed fork: the detail goes to src's last error and to the caller's buffer (the fork does
 * not exist); f, if any, is freed. */
static hc_status fork_fail(hc_ctx *src, const hc_ctx_params *cp, hc_ctx *f, hc_status st, const char *msg)
{
    if (!msg) msg = f && f->err[0] ? f->err : hc_strerror(st);
    hci_errf(src->err, sizeof src->err, st, "fork: %s", msg);
    if (cp) put_errbuf(cp, src->err);
    hc_ctx_free(f);
    return st;
}

HC_API hc_status hc_ctx_fork(hc_ctx *src, const hc_ctx_params *p, hc_ctx **out)
{
    if (out) *out = NULL;
    if (!src || !out) return HC_ERR_NULL_ARG;
    src->err[0] = 0;
    hc_ctx_params cp;
    hc_status st;
    if (p && (st = hci_read_params(p, sizeof cp, &cp)))
        return fork_fail(src, NULL, NULL, st, "hc_ctx_params: struct_size too small or unknown non-zero fields");
    if (!p) cp = src->params;
    const hc_ctx_params *ep = p ? &cp : NULL;
    char msg[HCI_ERRLEN];
    if (!ctx_params_valid(&cp)) return fork_fail(src, ep, NULL, HC_ERR_INVALID_ARG, "hc_ctx_params: a field is out of range");
    if (src->poisoned)
        return fork_fail(src, ep, NULL, HC_ERR_BAD_STATE, "the source was poisoned by an earlier device fault");
    if (src->next_layer) {
        snprintf(msg, sizeof msg, "the source has a chunk in progress (layer %d is next); finish it first", src->next_layer);
        return fork_fail(src, ep, NULL, HC_ERR_ORDER, msg);
    }
    /* the fork holds src's pages: same backend, device and cache format (zero = src's) */
    int kind = src->be->kind;
    if (cp.backend != HC_BACKEND_AUTO && cp.backend != kind) {
        snprintf(msg, sizeof msg, "a fork runs on its source's backend (%s)", src->be->ops->name);
        return fork_fail(src, ep, NULL, HC_ERR_INVALID_ARG, msg);
    }
    if (kind == HC_BACKEND_CUDA && cp.device && cp.device != src->params.device) {
        snprintf(msg, sizeof msg, "a fork runs on its source's device (%d)", src->params.device);
        return fork_fail(src, ep, NULL, HC_ERR_INVALID_ARG, msg);
    }
    if (cp.cache_format != HC_CACHE_DEFAULT && resolve_format(cp.cache_format) != src->cache_fmt) {
        snprintf(msg, sizeof msg, "a fork keeps its source's cache format (%s)", src->cache_fmt == HCI_FMT_BF16 ? "bf16" : "fp8");
        return fork_fail(src, ep, NULL, HC_ERR_INVALID_ARG, msg);
    }
    const hci_config *cfg = &src->model->cfg;
    int64_t max_tokens = cp.max_tokens && cp.max_tokens < cfg->max_positions ? cp.max_tokens : cfg->max_positions;
    if (max_tokens < src->n_tokens) {
        snprintf(msg, sizeof msg, "max_tokens %lld is below the source's length %lld", (long long)max_tokens,
                 (long long)src->n_tokens);
        return fork_fail(src, ep, NULL, HC_ERR_POSITION, msg);
    }
    cp.backend = kind, cp.device = src->params.device, cp.cache_format = src->params.cache_format;
    if (cp.numerics == HC_NUMERICS_DEFAULT) cp.numerics = src->params.numerics;
    hc_ctx *f = NULL;
    if ((st = ctx_new(src->model, &cp, &f))) return fork_fail(src, ep, f, st, NULL);
    /* the source's queued writes end before the clone's copies read its buffers */
    if (src->be->ops->sync && (st = src->be->ops->sync(src->be)))
        return fork_fail(src, ep, f, st, src->err[0] ? src->err : NULL);
    int64_t n = src->n_tokens, lo = hci_ctx_truncate_limit(src);
    st = hci_cache_clone(f->be, src->layers, cfg->n_layers, &f->layers);
    if (!st && f->max_rollback != src->max_rollback) {
        /* the history the fork can hold: what the source has, within the fork's own R */
        int64_t flo = n - f->max_rollback > lo ? n - f->max_rollback : lo;
        st = hci_hist_resize(f->be, f->layers, cfg->n_layers, f->max_rollback, flo, n);
    }
    if (!st && src->meta_len) {
        if ((f->meta = malloc((size_t)src->meta_len))) {
            memcpy(f->meta, src->meta, (size_t)src->meta_len);
            f->meta_len = src->meta_len;
        } else {
            st = HC_ERR_OUT_OF_MEMORY;
        }
    }
    /* the fork's copies end before the source may write again */
    if (!st && f->be->ops->sync) st = f->be->ops->sync(f->be);
    if (st) return fork_fail(src, ep, f, st, NULL);
    f->n_tokens = n;
    f->hist_from = lo;
    f->sess_generation = src->sess_generation;
    *out = f;
    return HC_OK;
}

HC_API int64_t hc_ctx_truncate_limit(const hc_ctx *c) { return c ? hci_ctx_truncate_limit(c) : -1; }

HC_API hc_status hc_ctx_truncate(hc_ctx *c, int64_t n_tokens)
{
    if (!c) return HC_ERR_NULL_ARG;
    c->err[0] = 0;
    if (c->poisoned) return ctx_fail(c, HC_ERR_BAD_STATE, "context poisoned by an earlier device fault");
    if (c->next_layer)
        return hci_errf(c->err, sizeof c->err, HC_ERR_ORDER,
                        "a chunk is in progress (layer %d is next); finish it before truncating", c->next_layer);
    if (n_tokens < 0 || n_tokens > c->n_tokens)
        return hci_errf(c->err, sizeof c->err, HC_ERR_INVALID_ARG, "length %lld outside 0..%lld (the current length)",
                        (long long)n_tokens, (long long)c->n_tokens);
    int64_t lim = hci_ctx_truncate_limit(c);
    if (n_tokens < lim) {
        if (!c->max_rollback)
            return hci_errf(c->err, sizeof c->err, HC_ERR_LIMIT,
                            "the context keeps no rollback history (hc_ctx_params.max_rollback is 0)");
        return hci_errf(c->err, sizeof c->err, HC_ERR_LIMIT,
                        "length %lld is further back than the rollback history reaches (%lld: max_rollback %lld%s)",
                        (long long)n_tokens, (long long)lim, (long long)c->max_rollback,
                        lim > c->n_tokens - c->max_rollback ? ", history started later (load, fork or truncation)" : "");
    }
    if (n_tokens == c->n_tokens) return HC_OK;
    const hci_config *cfg = &c->model->cfg;
    float *host = malloc(hci_cache_max_state_floats(c->layers, cfg->n_layers) * sizeof(float));
    if (!host) return ctx_fail(c, HC_ERR_OUT_OF_MEMORY, "out of memory");
    hc_status st = hci_hist_truncate(c->be, c->layers, cfg->n_layers, c->n_tokens, n_tokens, host);
    free(host);
    if (st) { /* a device fault half-way: the caches are neither length */
        c->poisoned = 1;
        return ctx_fail(c, st, "truncating failed on the device");
    }
    c->hist_from = lim; /* the discarded positions' history slots are gone: no further back than before */
    c->n_tokens = n_tokens;
    return HC_OK;
}

HC_API hc_status hc_ctx_memory_info_get(const hc_ctx *c, hc_ctx_memory_info *info)
{
    if (!c || !info) return HC_ERR_NULL_ARG;
    if (info->struct_size < sizeof(uint32_t)) return HC_ERR_INVALID_ARG;
    int L = c->model->cfg.n_layers;
    hci_cache_usage u = hci_cache_bytes(c->layers, L);
    hc_ctx_memory_info d = {0};
    d.own_bytes = u.own, d.shared_bytes = u.shared;
    d.history_bytes = hci_hist_bytes(c->layers, L);
    d.workspace_bytes = hci_ctx_workspace_bytes(c) + (c->be->ops->scratch_bytes ? c->be->ops->scratch_bytes(c->be) : 0) +
                        c->snap_store_bytes;
    size_t n = info->struct_size < sizeof d ? info->struct_size : sizeof d;
    d.struct_size = info->struct_size;
    memcpy(info, &d, n);
    return HC_OK;
}

/* ---- serving: batches, progress, streams ------------------------------------------------ */

/* A refused or failed batch: every context of it gets the detail, naming the context at fault
 * by its index (at < 0: the batch as a whole). */
static hc_status batch_fail(hc_ctx *const *ctxs, int32_t n_ctx, int32_t at, hc_status st, const char *msg)
{
    char m[HCI_ERRLEN];
    snprintf(m, sizeof m, "%s", msg && msg[0] ? msg : hc_strerror(st));
    for (int32_t i = 0; i < n_ctx; i++) {
        if (!ctxs[i]) continue;
        if (at >= 0) hci_errf(ctxs[i]->err, sizeof ctxs[i]->err, st, "batch of %d, context %d: %s", n_ctx, at, m);
        else hci_errf(ctxs[i]->err, sizeof ctxs[i]->err, st, "batch of %d: %s", n_ctx, m);
    }
    return st;
}

static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)((const hci_engine_job *)a)->c, y = (uintptr_t)((const hci_engine_job *)b)->c;
    return x < y ? -1 : x > y;
}

static const char *backend_name(const hc_ctx *c) { return c->be->ops->name; }
static const char *numerics_name(const hc_ctx *c) { return c->be->numerics == HC_NUMERICS_FAST ? "fast" : "exact"; }

/* Why the contexts cannot run as one batch (they must match what a shared launch needs). */
static hc_status batch_mismatch(hc_ctx *const *ctxs, int32_t n_ctx, int32_t i)
{
    const hc_ctx *a = ctxs[0], *b = ctxs[i];
    char m[HCI_ERRLEN];
    if (a->be->kind != b->be->kind || a->be->device != b->be->device)
        snprintf(m, sizeof m, "runs on %s device %d, context 0 on %s device %d", backend_name(b), b->be->device,
                 backend_name(a), a->be->device);
    else if (a->io_dtype != b->io_dtype)
        snprintf(m, sizeof m, "has io_dtype %d, context 0 %d", b->io_dtype, a->io_dtype);
    else if (a->io_memory != b->io_memory)
        snprintf(m, sizeof m, "has io_memory %d, context 0 %d", b->io_memory, a->io_memory);
    else if (a->cache_fmt != b->cache_fmt)
        snprintf(m, sizeof m, "has another cache format than context 0");
    else if (a->be->numerics != b->be->numerics)
        snprintf(m, sizeof m, "computes with %s numerics, context 0 with %s", numerics_name(b), numerics_name(a));
    else
        return HC_OK;
    return batch_fail(ctxs, n_ctx, i, HC_ERR_INVALID_ARG, m);
}

/* hc_decode_batch (n_tokens NULL: one token each) and hc_append_batch. */
static hc_status batch_call(hc_ctx *const *ctxs, int32_t n_ctx, int layer, const void *x, const int64_t *n_tokens,
                            int decode, void *y)
{
    if (!ctxs) return HC_ERR_NULL_ARG;
    if (n_ctx <= 0) return HC_ERR_INVALID_ARG;
    int32_t null_at = -1;
    for (int32_t i = 0; i < n_ctx; i++) {
        if (ctxs[i]) ctxs[i]->err[0] = 0;
        else if (null_at < 0) null_at = i;
    }
    if (null_at >= 0) return batch_fail(ctxs, n_ctx, null_at, HC_ERR_NULL_ARG, "the context is NULL");
    if (!x || !y) return batch_fail(ctxs, n_ctx, -1, HC_ERR_NULL_ARG, "x and y must not be NULL");
    if (!decode && !n_tokens) return batch_fail(ctxs, n_ctx, -1, HC_ERR_NULL_ARG, "n_tokens must not be NULL");
    hci_engine_job *jobs = calloc((size_t)n_ctx, sizeof *jobs);
    if (!jobs) return batch_fail(ctxs, n_ctx, -1, HC_ERR_OUT_OF_MEMORY, "out of memory for the batch");
    hc_status st = HC_OK;
    /* the same context twice: sort a copy of the pointers */
    for (int32_t i = 0; i < n_ctx; i++) jobs[i].c = ctxs[i];
    qsort(jobs, (size_t)n_ctx, sizeof *jobs, cmp_ptr);
    for (int32_t i = 1; i < n_ctx && !st; i++)
        if (jobs[i].c == jobs[i - 1].c)
            for (int32_t k = 0, first = -1; k < n_ctx && !st; k++)
                if (ctxs[k] == jobs[i].c) {
                    if (first < 0) first = k;
                    else {
                        char m[96];
                        snprintf(m, sizeof m, "the same context as context %d", first);
                        st = batch_fail(ctxs, n_ctx, k, HC_ERR_INVALID_ARG, m);
                    }
                }
    for (int32_t i = 1; i < n_ctx && !st; i++)
        if (ctxs[i]->model != ctxs[0]->model)
            st = batch_fail(ctxs, n_ctx, i, HC_ERR_MODEL_MISMATCH, "belongs to another model than context 0");
    for (int32_t i = 1; i < n_ctx && !st; i++) st = batch_mismatch(ctxs, n_ctx, i);
    for (int32_t i = 0; i < n_ctx && !st; i++)
        if ((st = check_layer_call(ctxs[i], layer, decode ? 1 : n_tokens[i])))
            batch_fail(ctxs, n_ctx, i, st, ctxs[i]->err);
    /* the rows of x and y, one context after another */
    const hc_ctx *c0 = ctxs[0];
    size_t row = (size_t)c0->model->cfg.dim * (c0->io_dtype == HC_DTYPE_BF16 ? 2 : 4), off = 0;
    for (int32_t i = 0; i < n_ctx && !st; i++) {
        int64_t n = decode ? 1 : n_tokens[i];
        jobs[i] = (hci_engine_job){.c = ctxs[i], .x = (const char *)x + off, .y = (char *)y + off, .n = n};
        if ((uint64_t)n > (SIZE_MAX - off) / row)
            st = batch_fail(ctxs, n_ctx, i, HC_ERR_INVALID_ARG, "the batch's rows pass the address space");
        else
            off += (size_t)n * row;
    }
    if (!st) {
        int32_t at = -1;
        if ((st = hci_engine_batch(jobs, n_ctx, layer, &at)))
            batch_fail(ctxs, n_ctx, at, st, at >= 0 ? ctxs[at]->err : NULL);
        else
            for (int32_t i = 0; i < n_ctx; i++) advance(ctxs[i], jobs[i].n);
    }
    free(jobs);
    return st;
}

HC_API hc_status hc_decode_batch(hc_ctx *const *ctxs, int32_t n_ctx, int layer, const void *x, void *y)
{
    return batch_call(ctxs, n_ctx, layer, x, NULL, 1, y);
}

HC_API hc_status hc_append_batch(hc_ctx *const *ctxs, int32_t n_ctx, int layer, const void *x,
                                 const int64_t *n_tokens, void *y)
{
    return batch_call(ctxs, n_ctx, layer, x, n_tokens, 0, y);
}

HC_API hc_status hc_ctx_set_progress(hc_ctx *c, hc_progress_fn fn, void *user)
{
    if (!c) return HC_ERR_NULL_ARG;
    c->err[0] = 0;
    c->progress = fn;
    c->progress_user = fn ? user : NULL;
    return HC_OK;
}

HC_API hc_status hc_ctx_set_stream(hc_ctx *c, void *stream)
{
    if (!c) return HC_ERR_NULL_ARG;
    c->err[0] = 0;
    if (c->poisoned) return ctx_fail(c, HC_ERR_BAD_STATE, "context poisoned by an earlier device fault");
    if (!c->be->ops->set_stream) {
        if (!stream) return HC_OK;
        return hci_errf(c->err, sizeof c->err, HC_ERR_UNSUPPORTED, "the %s backend runs on no stream",
                        backend_name(c));
    }
    return c->be->ops->set_stream(c->be, stream);
}
