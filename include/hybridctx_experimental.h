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

#ifdef __cplusplus
}
#endif
#endif
