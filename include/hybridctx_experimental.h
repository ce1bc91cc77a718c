/**
 * @file hybridctx_experimental.h
 * hybridctx_experimental.h - UNSTABLE functions of libhybridctx. They may change or disappear in
 * any release; their symbols are exported under the HC_EXPERIMENTAL version node and are not
 * covered by the ABI checks. Include after hybridctx.h.
 */
#ifndef HC_HYBRIDCTX_EXPERIMENTAL_H
#define HC_HYBRIDCTX_EXPERIMENTAL_H
#include "hybridctx.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Test and benchmark fast path: fill an empty context with n_tokens tokens of valid random
 *  cache state (window, compressed entries and indexer keys on their FP8/FP4 grids, finite
 *  compressor state) without computing it, as if n_tokens tokens had passed every layer. Used
 *  to build 1M-token contexts for decode benchmarks and session tests in seconds.
 *  @return HC_OK; HC_ERR_NULL_ARG; HC_ERR_BAD_STATE (the context is not empty);
 *  HC_ERR_POSITION (n_tokens over max_tokens); HC_ERR_INVALID_ARG (n_tokens < 0);
 *  HC_ERR_OUT_OF_MEMORY. */
HC_API hc_status hc_x_ctx_fill_random(hc_ctx *c, int64_t n_tokens, uint64_t seed);

/** Set a named option of the context's backend: the alternative code paths a backend keeps for
 *  comparisons and cross-checks (docs/cuda.md, "Options": fp8_gemm_cublaslt, index_exact_only,
 *  attend_simple, gemv_fast, each 0 or 1, all 0 by default). The calls that follow use it.
 *  @return HC_OK; HC_ERR_NULL_ARG; HC_ERR_UNSUPPORTED (the backend has no such option; the CPU
 *  backend has none); HC_ERR_INVALID_ARG (a value outside the option's range); the detail is in
 *  hc_ctx_last_error(). Threads: as any call on c. @since 0.2 */
HC_API hc_status hc_x_ctx_set_option(hc_ctx *c, const char *name, int64_t value);

/** Flags of hc_x_session_inspect(). */
enum { HC_X_INSPECT_JSON = 1, HC_X_INSPECT_VERIFY = 2 }; /* hc_x_session_inspect() flags */
/** @var HC_X_INSPECT_JSON
 *  describe the file as JSON instead of text */
/** @var HC_X_INSPECT_VERIFY
 *  also read, decompress and check every chunk */

/** Describe the session file at path without a model (what `hybridctx inspect` prints): format,
 *  model fingerprint and configuration, length, metadata size and every section. Text, or JSON
 *  with HC_X_INSPECT_JSON; with HC_X_INSPECT_VERIFY every chunk is also read, decompressed and
 *  checked (checksums, canonical entries), as a load would. The description is written into buf
 *  (NUL-terminated, *len = its size including the NUL) even when the file is invalid: it then
 *  holds the reason.
 *  @return HC_OK (the file is valid, and verified when asked); HC_ERR_BUFFER_TOO_SMALL (*len says
 *  how much is needed; call again); otherwise the status a load would give: HC_ERR_IO,
 *  HC_ERR_FORMAT, HC_ERR_VERSION, HC_ERR_CORRUPT, HC_ERR_LIMIT, HC_ERR_OUT_OF_MEMORY. */
HC_API hc_status hc_x_session_inspect(const char *path, int32_t flags, char *buf, uint64_t cap, uint64_t *len);

/** hc_x_session_inspect() watched by a progress callback (fn may be NULL): with
 *  HC_X_INSPECT_VERIFY, fn reports the payload bytes checked (total: the file's payload bytes).
 *  A stop gives HC_ERR_ABORTED, with the description and the reason in buf. */
HC_API hc_status hc_x_session_inspect_progress(const char *path, int32_t flags, hc_progress_fn fn, void *user,
                                               char *buf, uint64_t cap, uint64_t *len);

/** Memory for x and y in the context's io_memory, for programs that hold no allocator of their
 *  own for it (the CLI's demo): HC_MEM_DEVICE, device memory of the context's GPU (zero-filled);
 *  HC_MEM_HOST, host memory (malloc). Owned by the caller, freed by hc_x_ctx_io_free() on the
 *  same context before it is freed.
 *  @return HC_OK; HC_ERR_NULL_ARG (c or out); HC_ERR_INVALID_ARG (bytes 0);
 *  HC_ERR_OUT_OF_MEMORY; HC_ERR_CUDA. Threads: as any call on c. @since 0.2 */
HC_API hc_status hc_x_ctx_io_alloc(hc_ctx *c, uint64_t bytes, void **out);

/** Free memory from hc_x_ctx_io_alloc() on the same context (NULL p: nothing). On CUDA it waits
 *  for the work queued on the context's stream first. Threads: as any call on c. @since 0.2 */
HC_API void hc_x_ctx_io_free(hc_ctx *c, void *p);

/** Copy bytes between host memory and the context's io_memory, in order with the context's
 *  calls (its stream on CUDA), done when it returns. to_io 1: host src into io-memory dst;
 *  0: io-memory src into host dst. With HC_MEM_HOST both sides are host memory (memcpy).
 *  @return HC_OK; HC_ERR_NULL_ARG; HC_ERR_CUDA (the detail in hc_ctx_last_error()).
 *  Threads: as any call on c. @since 0.2 */
HC_API hc_status hc_x_ctx_io_copy(hc_ctx *c, void *dst, const void *src, uint64_t bytes, int32_t to_io);

/** The stand-in for a model's MLP between two attention layers that the CLI's demo runs:
 *  x = RMSNorm(x + y) for each of n_tokens rows of dim (no weight, eps 1e-6; the sum of squares
 *  accumulated in double on the host, in fp32 on the GPU), x and y of the context's io_dtype in
 *  its io_memory (device memory: on the context's stream, asynchronous like hc_append). Not part
 *  of the attention block, and not the model's real MLP: a way to feed a long synthetic run
 *  from layer to layer at the speed of the backend.
 *  @return HC_OK; HC_ERR_NULL_ARG; HC_ERR_INVALID_ARG (n_tokens < 0); HC_ERR_CUDA. The context
 *  itself never changes. Threads: as any call on c. @since 0.2 */
HC_API hc_status hc_x_ctx_residual_norm(hc_ctx *c, void *x, const void *y, int64_t n_tokens);

#ifdef __cplusplus
}
#endif
#endif
