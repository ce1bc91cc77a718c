/* hcgo.h - C helpers of the Go binding.
 *
 * Values that are addresses only to C (device pointers, CUDA streams, runtime/cgo.Handle values
 * passed as a callback's user pointer) cross from Go as uintptr_t and become void * here: Go
 * code must not hold them in pointer-typed memory, where the garbage collector would inspect
 * them, and go vet rightly refuses uintptr-to-unsafe.Pointer conversions. */
#ifndef HCGO_H
#define HCGO_H

#include <stdint.h>
#include <hybridctx.h>

/* progress.c: the hc_progress_fn of every Go callback; user is a runtime/cgo.Handle */
int hcgo_progress(void *user, uint64_t done, uint64_t total);

static inline hc_status hcgo_set_progress(hc_ctx *c, uintptr_t handle)
{
    return hc_ctx_set_progress(c, handle ? hcgo_progress : NULL, (void *)handle);
}

static inline void hcgo_model_params_progress(hc_model_params *p, uintptr_t handle)
{
    p->progress = handle ? hcgo_progress : NULL;
    p->progress_user = (void *)handle;
}

static inline void hcgo_ctx_params_stream(hc_ctx_params *p, uintptr_t stream)
{
    p->cuda_stream = (void *)stream;
}

static inline hc_status hcgo_set_stream(hc_ctx *c, uintptr_t stream)
{
    return hc_ctx_set_stream(c, (void *)stream);
}

static inline hc_status hcgo_append_device(hc_ctx *c, int layer, uintptr_t x, int64_t n, uintptr_t y)
{
    return hc_append(c, layer, (const void *)x, n, (void *)y);
}

static inline hc_status hcgo_decode_batch_device(hc_ctx *const *ctxs, int32_t n, int layer, uintptr_t x,
                                                 uintptr_t y)
{
    return hc_decode_batch(ctxs, n, layer, (const void *)x, (void *)y);
}

static inline hc_status hcgo_append_batch_device(hc_ctx *const *ctxs, int32_t n, int layer, uintptr_t x,
                                                 const int64_t *n_tokens, uintptr_t y)
{
    return hc_append_batch(ctxs, n, layer, (const void *)x, n_tokens, (void *)y);
}

#endif
