/**
 * @file hybridctx.h
 * hybridctx.h - the public, stable C API of libhybridctx (SONAME libhybridctx.so.0).
 *
 * libhybridctx runs the attention block of DeepSeek V4 (sliding window + compressed sparse
 * attention "CSA" + heavily compressed attention "HCA") and keeps its compressed KV cache, so
 * that an application can hold contexts of up to a million tokens on one machine.
 *
 * Concepts
 * --------
 * - hc_model: the attention weights of every layer plus the configuration (geometry, RoPE
 *            constants, per-layer compression ratio). Built by hc_model_load() or
 *            hc_model_create_random(); immutable afterwards and safe to share between any number
 *            of threads and contexts.
 * - hc_ctx:   one token sequence: per layer a 128-token window ring, the compressed entries,
 *            the indexer keys (ratio-4 layers) and the compressor state. A context is used by
 *            one thread at a time (it may move between threads); distinct contexts run
 *            concurrently. Memory grows with the sequence in pages; nothing is sized for the
 *            maximum length up front.
 * - chunk:    hc_append() feeds n tokens ("a chunk") through ONE layer. A chunk enters layer 0,
 *            then 1, ..., then the last layer: the application runs its own MLP/MoE between
 *            layers and passes each layer's input. Once the last layer has taken the chunk, the
 *            context's length grows by n. hc_decode() is hc_append() with n = 1.
 * - backend:  CPU (always built, the reference) or CUDA (when built with nvcc and a GPU is
 *            present). Both compute the same function; the CPU backend is bitwise deterministic:
 *            its results do not depend on the thread count or on how a sequence is split into
 *            calls. CUDA computes in FAST numerics by default (deterministic and batch-invariant,
 *            within the faithful tolerance of the reference); HC_NUMERICS_EXACT gives caches,
 *            compressed entries, indexer keys and top-k sets bitwise the CPU's
 *            (hc_ctx_params.numerics).
 *
 * Numerics follow the official DeepSeek V4 reference: x is rounded to bf16 on entry, FP8
 * (e4m3, 1x128 blocks, power-of-two scales) activations for the FP8 projections, FP8-simulated
 * KV, Hadamard + FP4 indexer keys and queries, one softmax with a per-head sink, bf16 output.
 *
 * Conventions
 * -----------
 * - Every fallible function returns hc_status: HC_OK (0) or a negative code. Codes are fixed
 *   forever; treat unknown negative codes as errors. hc_strerror() gives static text and
 *   hc_ctx_last_error() a message with the detail of the last failure on that context.
 * - A failing call leaves its objects unchanged unless its documentation says otherwise.
 * - Parameter structs start with struct_size and are filled by their *_params_init() function;
 *   zero means "default"; members are only ever appended. The library reads min(struct_size,
 *   its own size) bytes and refuses (HC_ERR_UNSUPPORTED) a larger struct whose unknown tail is
 *   not all zero. Nothing is passed or returned by value.
 * - The caller owns every buffer it passes; the library never keeps a caller pointer after a
 *   call returns. Strings returned by the library are static or owned by the object they come
 *   from; nothing returned needs freeing except handles, through their own free function.
 * - Threads: functions that take no handle are thread-safe; an hc_model may be used from any
 *   number of threads at once; an hc_ctx by one thread at a time.
 * - Experimental, unstable functions live in hybridctx_experimental.h.
 */
#ifndef HC_HYBRIDCTX_H
#define HC_HYBRIDCTX_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#  if defined(HC_BUILDING)
#    define HC_API __declspec(dllexport)
#  else
#    define HC_API __declspec(dllimport)
#  endif
#elif defined(__GNUC__) && defined(HC_BUILDING)
#  define HC_API __attribute__((visibility("default")))
#else
#  define HC_API
#endif
/** @def HC_API
 *  Marks the exported functions: visibility("default") when the library is built (HC_BUILDING)
 *  with GCC or Clang, dllexport / dllimport on Windows, nothing for an application on other
 *  systems. */

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------------
 * Version
 * ------------------------------------------------------------------------------------------- */
#define HC_VERSION_MAJOR 0
#define HC_VERSION_MINOR 2
#define HC_VERSION_PATCH 0
#define HC_VERSION_NUMBER (HC_VERSION_MAJOR * 10000 + HC_VERSION_MINOR * 100 + HC_VERSION_PATCH)
#define HC_VERSION_STRING "0.2.0"
/** @def HC_VERSION_MAJOR
 *  Major version of the header: changes only with an incompatible API or ABI (a new SONAME). */
/** @def HC_VERSION_MINOR
 *  Minor version of the header: grows with backward-compatible additions. */
/** @def HC_VERSION_PATCH
 *  Patch version of the header: fixes without API changes. */
/** @def HC_VERSION_NUMBER
 *  The header's version as MAJOR*10000 + MINOR*100 + PATCH; compare with hc_version_number() to
 *  detect a runtime library older than the header. */
/** @def HC_VERSION_STRING
 *  The header's version as "MAJOR.MINOR.PATCH"; hc_version_string() gives the runtime's. */

/** Runtime library version as MAJOR*10000 + MINOR*100 + PATCH; compare with HC_VERSION_NUMBER.
 *  Thread-safe. @since 0.1 */
HC_API uint32_t hc_version_number(void);
/** Runtime library version as "MAJOR.MINOR.PATCH" (static string). Thread-safe. @since 0.1 */
HC_API const char *hc_version_string(void);

/* ---------------------------------------------------------------------------------------------
 * Status codes
 * ------------------------------------------------------------------------------------------- */
/** Result of every fallible call: HC_OK (0) or one of the negative HC_ERR_* codes below. Codes
 *  are fixed forever; treat an unknown negative code as an error. */
typedef int32_t hc_status;
/** The status codes (values of hc_status). */
enum {
    HC_OK                   =   0, /**< success */
    HC_ERR_NULL_ARG         =  -1, /**< a required pointer argument is NULL */
    HC_ERR_INVALID_ARG      =  -2, /**< an argument or a params field is outside its documented range */
    HC_ERR_OUT_OF_MEMORY    =  -3, /**< host or device allocation failed; the object stays usable */
    HC_ERR_UNKNOWN_PRESET   =  -4, /**< not a known preset name, and not JSON text either */
    HC_ERR_BAD_CONFIG       =  -5, /**< configuration malformed, out of range or inconsistent */
    HC_ERR_LAYER_RANGE      =  -6, /**< layer index < 0 or >= the model's layer count */
    HC_ERR_ORDER            =  -7, /**< layer called out of order, or n_tokens differs from the chunk in progress */
    HC_ERR_N_TOKENS         =  -8, /**< n_tokens <= 0 */
    HC_ERR_POSITION         =  -9, /**< the chunk would pass the context's maximum length */
    HC_ERR_NONFINITE        = -10, /**< the input holds NaN or infinity */
    HC_ERR_IO               = -11, /**< a file could not be opened, read or written */
    HC_ERR_FORMAT           = -12, /**< a file or text is malformed (safetensors, JSON, index) */
    HC_ERR_MISSING_TENSOR   = -13, /**< a tensor the configuration needs is absent */
    HC_ERR_TENSOR           = -14, /**< a tensor has the wrong shape or dtype */
    HC_ERR_UNSUPPORTED      = -15, /**< valid but not supported by this build or this object */
    HC_ERR_NO_DEVICE        = -16, /**< the CUDA backend was asked for but no usable GPU exists */
    HC_ERR_CUDA             = -17, /**< a CUDA runtime call failed (detail in the last error) */
    HC_ERR_CUBLAS           = -18, /**< a cuBLAS(Lt) call failed (detail in the last error) */
    HC_ERR_BAD_STATE        = -19, /**< the context was poisoned by an earlier device fault; free it */
    HC_ERR_CORRUPT          = -20, /**< stored data fails its checksums or its own consistency rules */
    HC_ERR_VERSION          = -21, /**< written by an incompatible format version */
    HC_ERR_MODEL_MISMATCH   = -22, /**< data belongs to another model or configuration */
    HC_ERR_BUFFER_TOO_SMALL = -23, /**< an output buffer is too small; the size needed is reported */
    HC_ERR_LIMIT            = -24, /**< an input exceeds a documented limit (header size, counts) */
    HC_ERR_ABORTED          = -25, /**< a progress callback asked the call to stop; nothing changed. @since 0.2 */
    HC_ERR_INTERNAL         = -99  /**< a bug in libhybridctx; please report it */
};

/** Static English text for a status; "unknown status" for codes this build does not know.
 *  Never NULL. Thread-safe. @since 0.1 */
HC_API const char *hc_strerror(hc_status s);
/** The status' symbolic name ("HC_ERR_ORDER"), or "HC_UNKNOWN". Never NULL. Thread-safe. @since 0.1 */
HC_API const char *hc_status_name(hc_status s);

/* ---------------------------------------------------------------------------------------------
 * Constants stored in int32_t fields
 * ------------------------------------------------------------------------------------------- */
/** Backends: values of hc_ctx_params.backend, returned by hc_ctx_backend(). */
enum { HC_BACKEND_AUTO = 0, HC_BACKEND_CPU = 1, HC_BACKEND_CUDA = 2 };
/** Cache formats: values of hc_ctx_params.cache_format and hc_model_cache_bytes()' cache_format. */
enum { HC_CACHE_DEFAULT = 0, HC_CACHE_BF16 = 1, HC_CACHE_FP8 = 2 };
/** Element types of x and y: values of hc_ctx_params.io_dtype. */
enum { HC_DTYPE_DEFAULT = 0, HC_DTYPE_F32 = 1, HC_DTYPE_BF16 = 2 };
/** Where x and y live: values of hc_ctx_params.io_memory. */
enum { HC_MEM_HOST = 0, HC_MEM_DEVICE = 1 };
/** Numerics: values of hc_ctx_params.numerics, returned by hc_ctx_numerics() (docs/numerics.md). */
enum { HC_NUMERICS_DEFAULT = 0, HC_NUMERICS_FAST = 1, HC_NUMERICS_EXACT = 2 };
/** Flags of hc_model_params.flags. */
enum { HC_MODEL_GEOMETRY_ONLY = 1 }; /* hc_model_params.flags */
/** @var HC_BACKEND_AUTO
 *  CUDA when the library was built with it and a usable GPU exists, else the CPU */
/** @var HC_BACKEND_CPU
 *  the CPU backend: the bitwise deterministic reference, always built */
/** @var HC_BACKEND_CUDA
 *  the CUDA backend (HC_ERR_NO_DEVICE when not built or no GPU is usable) */
/** @var HC_CACHE_DEFAULT
 *  the default format, HC_CACHE_FP8 */
/** @var HC_CACHE_BF16
 *  entries kept in bf16: about twice the memory of FP8, bitwise identical results (in FAST
 *  numerics within its tolerance: see hc_ctx_params.cache_format) */
/** @var HC_CACHE_FP8
 *  entries kept as their FP8 (e4m3) / FP4 codes with scales, as the reference numerics round
 *  them */
/** @var HC_DTYPE_DEFAULT
 *  the default element type, HC_DTYPE_F32 */
/** @var HC_DTYPE_F32
 *  IEEE binary32 */
/** @var HC_DTYPE_BF16
 *  bfloat16 (the upper 16 bits of a binary32) */
/** @var HC_MEM_HOST
 *  x and y are host pointers (the default) */
/** @var HC_MEM_DEVICE
 *  x and y are CUDA device pointers, used in order on the context's stream (CUDA backend only) */
/** @var HC_NUMERICS_DEFAULT
 *  the backend's default numerics: FAST on CUDA, EXACT on the CPU (hc_ctx_params.numerics) */
/** @var HC_NUMERICS_FAST
 *  the official kernels' structure (CUDA): deterministic, batch-invariant, within the faithful
 *  tolerance; the CPU backend computes EXACT */
/** @var HC_NUMERICS_EXACT
 *  caches, entries, keys and top-k sets bitwise equal to the CPU backend's */
/** @var HC_MODEL_GEOMETRY_ONLY
 *  build the configuration without weights (see hc_model_params.flags) */

/** Progress of a long call (hc_ctx_set_progress(), hc_model_params.progress). Called on the
 *  thread that made the call, with done growing from report to report and the last report
 *  having done == total (units: tokens, bytes or layers, as each call documents). Return 0 to
 *  go on; any other value stops the call, which then returns HC_ERR_ABORTED and leaves its
 *  objects as they were. The callback must not call libhybridctx functions on the objects of
 *  the call in progress. @since 0.2 */
typedef int (*hc_progress_fn)(void *user, uint64_t done, uint64_t total);

/* ---------------------------------------------------------------------------------------------
 * Model
 * ------------------------------------------------------------------------------------------- */
/** Opaque handle of a model: the attention weights of every layer and the configuration. Made by
 *  hc_model_load() or hc_model_create_random(), freed by hc_model_free(); immutable, shared by
 *  any number of threads and contexts. */
typedef struct hc_model hc_model; /* opaque */

/** Options of hc_model_load() and hc_model_create_random(); fill with hc_model_params_init(). */
typedef struct hc_model_params {
    uint32_t struct_size; /**< sizeof(hc_model_params), set by hc_model_params_init() */
    int32_t  flags;       /**< HC_MODEL_GEOMETRY_ONLY: configuration without weights. Contexts of such a
                               model can be created, sized, saved and loaded, but hc_append() refuses
                               with HC_ERR_UNSUPPORTED. Used for planning and for tests. */
    int32_t  n_threads;   /**< threads for loading / random initialisation; 0 = all online cores */
    int32_t  reserved0;   /**< must be 0 */
    char    *errbuf;      /**< optional: receives a NUL-terminated message when a model call fails */
    uint64_t errbuf_size; /**< capacity of errbuf in bytes */
    hc_progress_fn progress; /**< optional: hc_model_load() reports the weight bytes read (total: the
                                  bytes of every tensor the configuration needs, known before any is
                                  read), hc_model_create_random() the layers initialised (none for a
                                  geometry-only model). A stop gives HC_ERR_ABORTED and no model. @since 0.2 */
    void    *progress_user;  /**< passed to progress as its first argument. @since 0.2 */
    /* new members are only appended below */
} hc_model_params;

/** Fill *p with defaults. @param p the struct to fill. @param struct_size sizeof(*p) as the
 *  caller compiled it.
 *  @return HC_OK, HC_ERR_NULL_ARG, HC_ERR_INVALID_ARG (struct_size smaller than the first
 *  member). Thread-safe. @since 0.1 */
HC_API hc_status hc_model_params_init(hc_model_params *p, size_t struct_size);

/** Load a model.
 *  @param path  either a checkpoint directory (config.json + one or more *.safetensors, plus
 *               model.safetensors.index.json when sharded) or one .safetensors file whose
 *               __metadata__ has a "config" entry holding config.json text. Only tensors named
 *               layers.{i}.attn.* are read; others are ignored. Dtypes: F32, BF16, F8_E4M3 with
 *               128x128 block scales ("<name>.scale") in F32 or F8_E8M0.
 *  @param p     NULL for defaults.
 *  @param out   receives the new model; set to NULL on failure.
 *  @return HC_OK; HC_ERR_NULL_ARG; HC_ERR_IO (cannot read); HC_ERR_FORMAT (malformed safetensors,
 *  JSON or index); HC_ERR_BAD_CONFIG; HC_ERR_MISSING_TENSOR / HC_ERR_TENSOR (the message names the
 *  tensor); HC_ERR_LIMIT (a file over the limits below); HC_ERR_OUT_OF_MEMORY.
 *  Limits: a safetensors header of at most 100,000,000 bytes, 1,000,000 tensors and 8 dimensions
 *  per tensor; config.json of at most 1 MiB; model.safetensors.index.json of at most 64 MiB; at
 *  most 1024 layers. Memory: every tensor the configuration needs is found and its dtype and
 *  shape checked before the weights are allocated, so a load never allocates more than about 4x
 *  the tensor bytes the files hold, plus the parsed headers. With p->progress set (@since 0.2)
 *  the weight bytes read are reported and a stop gives HC_ERR_ABORTED.
 *  Ownership: the caller frees *out with hc_model_free(). Thread-safe. @since 0.1 */
HC_API hc_status hc_model_load(const char *path, const hc_model_params *p, hc_model **out);

/** Create a model with seeded random weights of sensible scale (the same seed gives the same
 *  weights on every machine and thread count).
 *  @param preset_or_config_json "v4-flash", "v4-pro", "tiny", or the text of a HF config.json
 *               (a JSON object; missing fields take the v4-flash values).
 *  @param seed  the seed of the weights.
 *  @param p     NULL for defaults (HC_MODEL_GEOMETRY_ONLY in p->flags: no weights at all).
 *  @param out   receives the new model; set to NULL on failure.
 *  @return HC_OK; HC_ERR_NULL_ARG; HC_ERR_UNKNOWN_PRESET; HC_ERR_BAD_CONFIG; HC_ERR_FORMAT
 *  (malformed JSON); HC_ERR_LIMIT (config text over 1 MiB); HC_ERR_OUT_OF_MEMORY;
 *  HC_ERR_ABORTED (p->progress stopped it, @since 0.2). Ownership and threads as
 *  hc_model_load(). @since 0.1 */
HC_API hc_status hc_model_create_random(const char *preset_or_config_json, uint64_t seed,
                                        const hc_model_params *p, hc_model **out);

/** Free a model. NULL is a no-op. Every context of the model must be freed first. @since 0.1 */
HC_API void hc_model_free(hc_model *m);

/** Number of attention layers, or -1 when m is NULL. Thread-safe. @since 0.1 */
HC_API int hc_model_n_layers(const hc_model *m);
/** Model width D (the length of one token's x and y), or -1 when m is NULL. @since 0.1 */
HC_API int hc_model_dim(const hc_model *m);
/** Compression ratio of a layer: 0 (window only), 4 (CSA) or 128 (HCA); -1 for a NULL model or
 *  a layer out of range. @since 0.1 */
HC_API int hc_model_layer_ratio(const hc_model *m, int layer);

/** A model's geometry, filled by hc_model_info_get(). The geometry fields carry the
 *  configuration values of the same meaning (each is described after the struct). */
typedef struct hc_model_info {
    uint32_t struct_size;   /**< set by the caller to sizeof(hc_model_info) */
    int32_t  n_layers, dim, n_heads, head_dim, rope_dim, q_lora_rank, o_groups, o_lora_rank;
    int32_t  window, index_n_heads, index_head_dim, index_topk;
    int32_t  has_weights;   /**< 0 for HC_MODEL_GEOMETRY_ONLY models */
    int32_t  reserved0;
    int64_t  max_positions; /**< max_position_embeddings */
    uint64_t weight_bytes;  /**< host bytes held by the weights */
    /* new members are only appended below */
} hc_model_info;
/** @var hc_model_info::n_layers
 *  attention layers (num_hidden_layers) */
/** @var hc_model_info::dim
 *  model width D: the length of one token's x and y (hidden_size) */
/** @var hc_model_info::n_heads
 *  query heads (num_attention_heads) */
/** @var hc_model_info::head_dim
 *  width of a head and of one cache entry (MQA: one key = value vector per entry) */
/** @var hc_model_info::rope_dim
 *  the rotary part of head_dim (qk_rope_head_dim) */
/** @var hc_model_info::q_lora_rank
 *  rank of the low-rank query projection */
/** @var hc_model_info::o_groups
 *  groups of the grouped output projection */
/** @var hc_model_info::o_lora_rank
 *  rank of each output projection group */
/** @var hc_model_info::window
 *  tokens of the sliding window (128 in DeepSeek V4) */
/** @var hc_model_info::index_n_heads
 *  heads of the lightning indexer (ratio-4 layers) */
/** @var hc_model_info::index_head_dim
 *  width of an indexer key */
/** @var hc_model_info::index_topk
 *  compressed entries each query attends to in a ratio-4 layer (index_topk) */
/** @var hc_model_info::reserved0
 *  0 */

/** Describe a model. The library writes min(info->struct_size, sizeof(hc_model_info)) bytes.
 *  @return HC_OK, HC_ERR_NULL_ARG, HC_ERR_INVALID_ARG (struct_size too small). @since 0.1 */
HC_API hc_status hc_model_info_get(const hc_model *m, hc_model_info *info);

/** Bytes a context of this model holds after n_tokens tokens in the given cache format.
 *  @param m            the model.
 *  @param n_tokens     context length, >= 0.
 *  @param cache_format HC_CACHE_DEFAULT, HC_CACHE_BF16 or HC_CACHE_FP8.
 *  @param kv_bytes    windows + compressed entries + indexer keys, counted per entry (a context
 *                     allocates pages of 64 entries, so it matches exactly when every layer's entry
 *                     count is a multiple of 64, for example at 2^20 tokens);
 *  @param state_bytes the compressor states (fixed per layer).
 *  Either output may be NULL. For v4-pro at 1,048,576 tokens kv_bytes is 9.62 GiB (bf16) and
 *  4.92 GiB (fp8). @return HC_OK, HC_ERR_NULL_ARG (m), HC_ERR_INVALID_ARG. @since 0.1 */
HC_API hc_status hc_model_cache_bytes(const hc_model *m, int64_t n_tokens, int32_t cache_format,
                                      uint64_t *kv_bytes, uint64_t *state_bytes);

/* ---------------------------------------------------------------------------------------------
 * Context
 * ------------------------------------------------------------------------------------------- */
/** Opaque handle of a context: one token sequence and its compressed KV cache. Made by
 *  hc_ctx_create(), freed by hc_ctx_free(); used by one thread at a time. */
typedef struct hc_ctx hc_ctx; /* opaque */

/** Options of hc_ctx_create(); fill with hc_ctx_params_init(). */
typedef struct hc_ctx_params {
    uint32_t struct_size;  /**< sizeof(hc_ctx_params), set by hc_ctx_params_init() */
    int32_t  backend;      /**< HC_BACKEND_AUTO (CUDA when built and a GPU exists, else CPU), _CPU, _CUDA */
    int32_t  device;       /**< CUDA device ordinal */
    int32_t  n_threads;    /**< CPU backend threads; 0 = all online cores */
    int32_t  cache_format; /**< HC_CACHE_DEFAULT (= FP8), HC_CACHE_BF16, HC_CACHE_FP8; both give
                                bitwise identical results, FP8 in about half the memory (in FAST
                                numerics on CUDA the indexer's fast scores read the FP8 format's
                                FP4 keys and a BF16 context computes the exact scores: the two
                                agree within FAST's tolerance, docs/numerics.md) */
    int32_t  io_dtype;     /**< dtype of x and y: HC_DTYPE_DEFAULT (= F32), HC_DTYPE_F32, HC_DTYPE_BF16 */
    int32_t  io_memory;    /**< HC_MEM_HOST (default) or HC_MEM_DEVICE (CUDA backend only: x and y are
                                device pointers, used in order on the context's stream) */
    int32_t  flags;        /**< reserved, must be 0 */
    int64_t  max_tokens;   /**< 0 = the model's max_position_embeddings; a smaller cap refuses longer
                                sequences with HC_ERR_POSITION */
    void    *cuda_stream;  /**< cudaStream_t to run on (CUDA backend); NULL = the context makes its own */
    int64_t  max_chunk;    /**< tokens the backend processes at once inside a call (bounds workspace
                                memory); 0 = backend default. Does not change the CPU backend's
                                results; on CUDA a token's bits may depend on the size of its piece,
                                within the tolerance of the context's numerics (docs/numerics.md). */
    char    *errbuf;       /**< optional: receives a NUL-terminated message when hc_ctx_create() fails
                                (the context that would hold hc_ctx_last_error() does not exist). @since 0.2 */
    uint64_t errbuf_size;  /**< capacity of errbuf in bytes. @since 0.2 */
    int64_t  max_rollback; /**< tokens that hc_ctx_truncate() can always take back, 0..65536; 0 = none
                                (default). Costs memory per layer, fixed whatever the length (see
                                "Serving" below; hc_ctx_memory_info.history_bytes). @since 0.2 */
    int32_t  numerics;     /**< HC_NUMERICS_DEFAULT (= FAST on CUDA, EXACT on the CPU), _FAST or
                                _EXACT (docs/numerics.md); fixed at creation, hc_ctx_numerics() tells
                                which. EXACT: caches, compressed entries, indexer keys and top-k
                                sets bitwise equal to the CPU backend's, outputs within 6e-4..3.3e-3
                                rel. L2 of it. FAST: the official kernels' structure (native FP8
                                tensor cores, fp32 promotion per 128-k block; the decode
                                projections, the indexer's scores, the compressors' projections),
                                deterministic and batch-invariant, within the faithful tolerance of
                                docs/golden.md (rel. L2 <= 1e-2 per layer and <= 5e-2 per token,
                                >= 95% of the top-k picks shared); prefill and decode agree within
                                it. The CPU backend computes EXACT for every value. CUDA computed
                                EXACT only in 0.1: ask for EXACT where a CUDA context must give the
                                CPU's caches bit for bit. @since 0.2 */
    int32_t  reserved;     /**< must be 0. @since 0.2 */
    /* new members are only appended below */
} hc_ctx_params;

/** Fill *p with defaults. @return HC_OK, HC_ERR_NULL_ARG, HC_ERR_INVALID_ARG. @since 0.1 */
HC_API hc_status hc_ctx_params_init(hc_ctx_params *p, size_t struct_size);

/** Create an empty context (length 0) for model m.
 *  @param m the model; it must outlive the context.
 *  @param p NULL for defaults. @param out receives the context, NULL on failure.
 *  @return HC_OK; HC_ERR_NULL_ARG; HC_ERR_INVALID_ARG (a params field out of range; HC_MEM_DEVICE
 *  with the CPU backend); HC_ERR_UNSUPPORTED (struct tail not zero); HC_ERR_NO_DEVICE (CUDA asked
 *  for: not built, module missing or unloadable, or no device); HC_ERR_UNSUPPORTED (the CUDA
 *  module is of another version or build); HC_ERR_CUDA / HC_ERR_CUBLAS; HC_ERR_OUT_OF_MEMORY.
 *  On failure the detail goes to p->errbuf when given (hc_backend_info_get() explains a missing
 *  CUDA backend too). Ownership: free with hc_ctx_free() before freeing the model. Thread-safe with respect to
 *  the model. @since 0.1 */
HC_API hc_status hc_ctx_create(hc_model *m, const hc_ctx_params *p, hc_ctx **out);

/** Free a context and all its memory. NULL is a no-op. @since 0.1 */
HC_API void hc_ctx_free(hc_ctx *c);

/** The detail of the last failure of a call on c ("" after a success, or if none). Owned by c,
 *  valid until the next call on c. Never NULL (a static string for a NULL c). @since 0.1 */
HC_API const char *hc_ctx_last_error(const hc_ctx *c);

/** The numerics the context computes with: HC_NUMERICS_FAST or HC_NUMERICS_EXACT (DEFAULT resolved
 *  for its backend: FAST on CUDA, EXACT on the CPU; hc_ctx_params.numerics). Fixed at creation: a
 *  load does not change it. HC_ERR_NULL_ARG for a NULL c. Thread-safe. @since 0.2 */
HC_API int32_t hc_ctx_numerics(const hc_ctx *c);

/** Run a chunk of n_tokens tokens through one layer.
 *  @param c       the context.
 *  @param layer   the next layer of the chunk: 0 starts a new chunk, then 1, 2, ... n_layers-1.
 *  @param x       [n_tokens][dim] of io_dtype, row-major (the layer's input after attn_norm);
 *                 rounded to bf16 on entry.
 *  @param n_tokens tokens in the chunk, >= 1; the same for every layer of the chunk.
 *  @param y       [n_tokens][dim] of io_dtype: the attention block's output. May equal x.
 *  The tokens take positions hc_ctx_n_tokens(c) .. + n_tokens - 1.
 *  @return HC_OK; HC_ERR_NULL_ARG; HC_ERR_LAYER_RANGE; HC_ERR_ORDER (layer is not the one
 *  expected, or n_tokens differs from the chunk in progress); HC_ERR_N_TOKENS; HC_ERR_POSITION;
 *  HC_ERR_NONFINITE (x holds NaN/Inf); HC_ERR_UNSUPPORTED (geometry-only model);
 *  HC_ERR_OUT_OF_MEMORY; HC_ERR_CUDA / HC_ERR_CUBLAS; HC_ERR_BAD_STATE; HC_ERR_ABORTED (the
 *  context's progress callback stopped the call, see hc_ctx_set_progress(); @since 0.2). On any
 *  error but a device fault the context is unchanged and y is unspecified; a device fault
 *  poisons the context.
 *  Threads: one thread at a time per context. @since 0.1 */
HC_API hc_status hc_append(hc_ctx *c, int layer, const void *x, int64_t n_tokens, void *y);

/** hc_append() with one token: the latency path of token-by-token generation. @since 0.1 */
HC_API hc_status hc_decode(hc_ctx *c, int layer, const void *x, void *y);

/** Tokens the context holds (chunks that have passed the last layer); -1 for NULL. @since 0.1 */
HC_API int64_t hc_ctx_n_tokens(const hc_ctx *c);

/** The layer the next hc_append() must name: 0 when no chunk is in progress; -1 for NULL. @since 0.1 */
HC_API int hc_ctx_next_layer(const hc_ctx *c);

/** Bytes of cache the context holds now (windows, compressed pages, indexer pages, compressor
 *  state), in host or device memory by backend; 0 for NULL. @since 0.1 */
HC_API uint64_t hc_ctx_memory_bytes(const hc_ctx *c);

/** The backend the context runs on: HC_BACKEND_CPU or HC_BACKEND_CUDA; -1 for NULL. @since 0.1 */
HC_API int32_t hc_ctx_backend(const hc_ctx *c);

/** Empty the context (length 0, no chunk in progress), release its cache pages and drop its
 *  metadata blob.
 *  @return HC_OK, HC_ERR_NULL_ARG, HC_ERR_BAD_STATE. @since 0.1 */
HC_API hc_status hc_ctx_reset(hc_ctx *c);

/* ---------------------------------------------------------------------------------------------
 * Serving: batches, progress and abort, streams
 * ------------------------------------------------------------------------------------------- */
/** One decode step (one token each) of n_ctx contexts through one layer: hc_decode() of every
 *  context in one call. The results are bitwise those of hc_decode() on each context in turn,
 *  on either backend.
 *  @param ctxs  n_ctx distinct contexts of one model, each with `layer` as its next layer and,
 *               for layer > 0, a chunk of 1 token in progress; all with the same backend,
 *               device, io_dtype, io_memory, cache format and numerics.
 *  @param n_ctx number of contexts, >= 1.
 *  @param layer the layer every context runs next (see hc_append()).
 *  @param x     [n_ctx][dim] of io_dtype: row i is the input of ctxs[i].
 *  @param y     [n_ctx][dim] of io_dtype: row i receives the output of ctxs[i]. May equal x.
 *  All or nothing: the whole batch is checked (arguments, layer order, positions, every row of
 *  x for NaN/Inf) before any context changes, and a failure after that (out of memory in a
 *  later context, a stop by a progress callback) undoes the contexts already done; only a
 *  device fault does not: it poisons every context of the batch.
 *  @return HC_OK; HC_ERR_NULL_ARG (ctxs, x or y, or an entry of ctxs is NULL); HC_ERR_INVALID_ARG
 *  (n_ctx <= 0; a context twice; contexts that differ in backend, device, io_dtype, io_memory,
 *  cache format or numerics); HC_ERR_MODEL_MISMATCH (contexts of two models); HC_ERR_LAYER_RANGE;
 *  HC_ERR_ORDER (a context is not at `layer`, or its chunk in progress is not 1 token);
 *  HC_ERR_POSITION; HC_ERR_NONFINITE (a row of x holds NaN/Inf); HC_ERR_UNSUPPORTED
 *  (geometry-only model); HC_ERR_BAD_STATE (a context is poisoned); HC_ERR_OUT_OF_MEMORY;
 *  HC_ERR_ABORTED (a context's progress callback stopped the batch); HC_ERR_CUDA / HC_ERR_CUBLAS
 *  (device fault: every context of the batch is poisoned). On every error but a device fault no
 *  context has changed and y is unspecified. Every context of a failed batch holds the detail
 *  in hc_ctx_last_error(), which names the context at fault by its index in ctxs.
 *  Progress: each context's callback (hc_ctx_set_progress()) reports that context's tokens; a
 *  stop from any of them stops the whole batch.
 *  Streams (CUDA): a batch is ordered on the stream of ctxs[0]. It starts after the work queued
 *  there before the call (device-memory x must be ready on that stream); the other contexts'
 *  streams wait on an event recorded there before they run their part, and that stream waits
 *  on an event of each of them at the end, so device-memory y is ready on the stream of
 *  ctxs[0] when the call returns, and work queued afterwards on it follows the whole batch.
 *  (Each context's part runs on its own stream in this version; shared launches will not
 *  change this contract.)
 *  Threads: no context of the batch may be used by another thread during the call; batches of
 *  disjoint contexts may run concurrently. @since 0.2 */
HC_API hc_status hc_decode_batch(hc_ctx *const *ctxs, int32_t n_ctx, int layer, const void *x, void *y);

/** Ragged batch: hc_append() of n_tokens[i] tokens on each ctxs[i] in one call, bitwise as the
 *  separate calls would give. Contexts, layer order, all-or-nothing, errors, progress and
 *  streams as hc_decode_batch().
 *  @param ctxs     n_ctx distinct contexts of one model, as for hc_decode_batch().
 *  @param n_ctx    number of contexts, >= 1.
 *  @param layer    the layer every context runs next (see hc_append()).
 *  @param x        the contexts' rows one after another: n_tokens[0] rows of ctxs[0], then
 *                  n_tokens[1] rows of ctxs[1], ...; [sum of n_tokens][dim] of io_dtype.
 *  @param n_tokens n_ctx token counts, each > 0; for layer > 0 each must equal the context's
 *                  chunk in progress (else HC_ERR_ORDER). Not kept.
 *  @param y        the outputs, laid out as x. May equal x.
 *  @return as hc_decode_batch(), plus HC_ERR_NULL_ARG for a NULL n_tokens and HC_ERR_N_TOKENS
 *  for a count <= 0. @since 0.2 */
HC_API hc_status hc_append_batch(hc_ctx *const *ctxs, int32_t n_ctx, int layer, const void *x,
                                 const int64_t *n_tokens, void *y);

/** Set (fn not NULL) or clear (fn NULL) the progress callback of a context (hc_progress_fn). It
 *  covers the context's long calls:
 *  - hc_append(), hc_decode() and the batch calls: tokens of this context's chunk through the
 *    layer, reported after each piece of at most max_chunk tokens (total = its n_tokens);
 *  - hc_ctx_save(), hc_ctx_save_buffer(): session payload bytes written (total = the raw bytes
 *    of every section);
 *  - hc_ctx_load(), hc_ctx_load_buffer(): payload bytes read and checked (total from the file).
 *  A stop makes the call return HC_ERR_ABORTED with the context as it was, also at the last
 *  report (done == total): a layer call or a batch is rolled back; a save to a file leaves the
 *  file that was at its path intact and no temporary file (a save to a buffer leaves the
 *  buffer's content unspecified); a load keeps the context's previous contents.
 *  Cost: none on the CPU backend. On CUDA, a layer call of a context with a callback (and every
 *  context of a batch in which one has a callback) first copies that layer's window ring and
 *  compressor states on the device (about window x entry bytes plus the states, into memory the
 *  context keeps), so that a stop can undo the pieces already run: clear the callback when the
 *  lowest decode latency matters. With device-memory x and y the reports of a layer call count
 *  queued pieces.
 *  @param c    the context.
 *  @param fn   the callback, or NULL to clear it.
 *  @param user passed to fn; not owned by the library.
 *  @return HC_OK, HC_ERR_NULL_ARG (c). Threads: as any call on c. @since 0.2 */
HC_API hc_status hc_ctx_set_progress(hc_ctx *c, hc_progress_fn fn, void *user);

/** Move a CUDA context to another stream after creation.
 *  @param c      the context.
 *  @param stream the cudaStream_t (as void *) to run on from now on, owned by the caller and kept
 *                alive while the context runs on it; NULL: back to a stream of the context's own
 *                (lent by the library, as when hc_ctx_params.cuda_stream is NULL).
 *  The switch is ordered without blocking the host: an event recorded on the old stream is
 *  waited on by the new one, so every call queued before the switch completes before work
 *  queued after it. A stream of the context's own that it leaves goes back to the library's
 *  pool (its pending work still completes in order). Passing the stream already in use changes
 *  nothing.
 *  @return HC_OK; HC_ERR_NULL_ARG (c); HC_ERR_UNSUPPORTED (a CPU context and a non-NULL stream;
 *  NULL is accepted and changes nothing); HC_ERR_BAD_STATE (poisoned context); HC_ERR_CUDA (the
 *  ordering event failed: the context stays on its old stream). Threads: as any call on c.
 *  @since 0.2 */
HC_API hc_status hc_ctx_set_stream(hc_ctx *c, void *stream);

/* ---------------------------------------------------------------------------------------------
 * Sessions: save a context and restore it later, bit-exactly (format: docs/session-format.md)
 * ------------------------------------------------------------------------------------------- */
/** Session compression: values of hc_save_params.compression. */
enum { HC_COMPRESS_DEFAULT = 0, HC_COMPRESS_NONE = 1, HC_COMPRESS_ZSTD = 2 }; /* hc_save_params.compression */
/** @var HC_COMPRESS_DEFAULT
 *  the default, HC_COMPRESS_NONE */
/** @var HC_COMPRESS_NONE
 *  chunks stored raw */
/** @var HC_COMPRESS_ZSTD
 *  chunks compressed with zstd where it gains */

/** Options of hc_ctx_save() and hc_ctx_save_buffer(); fill with hc_save_params_init(). */
typedef struct hc_save_params {
    uint32_t struct_size; /**< sizeof(hc_save_params), set by hc_save_params_init() */
    int32_t  compression; /**< HC_COMPRESS_DEFAULT (= NONE), HC_COMPRESS_NONE, HC_COMPRESS_ZSTD: zstd per
                               chunk where it gains, raw where it does not */
    int32_t  zstd_level;  /**< 1..19; 0 = 1 */
    int32_t  n_threads;   /**< checksum / compression workers; 0 = all online cores (at most 16 are
                               used; sessions under 2 MiB are saved on the calling thread) */
    /* new members are only appended below */
} hc_save_params;

/** Fill *p with defaults. @return HC_OK, HC_ERR_NULL_ARG, HC_ERR_INVALID_ARG. @since 0.1 */
HC_API hc_status hc_save_params_init(hc_save_params *p, size_t struct_size);

/** Save the context to path, atomically: a temporary file in the same directory is written,
 *  synced and renamed over path, then the directory is synced. On any failure the previous
 *  file at path is intact and no temporary file is left. Memory use is bounded (the cache is
 *  streamed). The context must not have a chunk in progress.
 *  Temporaries are named "<path>.tmp.<pid>.<16 hex>"; ones left by a killed process (pid not
 *  alive) are removed by the next save to the same path. The one failure after the rename is
 *  the directory sync: HC_ERR_IO is returned while path already holds the new, complete file.
 *  Entries are stored in one canonical encoding whatever the cache format (docs/session-format.md);
 *  sessions are little-endian and identical across thread counts. A session holds the cache's
 *  values, not the numerics that made them (see hc_ctx_load()).
 *  @param c the context. @param path the session file to write.
 *  @param p NULL for defaults. @return HC_OK; HC_ERR_NULL_ARG; HC_ERR_INVALID_ARG (a params field
 *  out of range; path empty, naming a directory, a symbolic link, or an existing non-empty file
 *  that is not a session, which is never replaced); HC_ERR_UNSUPPORTED (params tail not zero);
 *  HC_ERR_ORDER (a chunk is in progress); HC_ERR_IO (with errno text in the last error);
 *  HC_ERR_OUT_OF_MEMORY; HC_ERR_CUDA; HC_ERR_BAD_STATE; HC_ERR_ABORTED (the context's progress
 *  callback stopped the save, see hc_ctx_set_progress(); @since 0.2). The context is never
 *  changed. @since 0.1 */
HC_API hc_status hc_ctx_save(hc_ctx *c, const char *path, const hc_save_params *p);

/** Replace the context's contents with the session in path. Everything is validated (format
 *  version, model fingerprint, sizes, checksums) before the context changes: on any failure
 *  the context is exactly as before. A session loads into a context of either cache format,
 *  either backend and either numerics; the context holds exactly the saved cache values and goes
 *  on with its own backend and numerics (the session records no numerics; hc_ctx_numerics() is
 *  unchanged by a load). What the continuation promises (docs/numerics.md, "Sessions"):
 *  - same backend and numerics as the saving context (the CPU; CUDA EXACT; CUDA FAST): decoding
 *    continues bitwise as if the session had never been saved;
 *  - continued on the CPU or on CUDA in EXACT: the new caches, compressed entries, indexer keys
 *    and top-k sets are bitwise those the CPU computes from the same session and inputs (CUDA's
 *    outputs within EXACT's tolerance of the CPU's); so a session saved by the CPU or by CUDA in
 *    EXACT continues as the CPU that never saved it would;
 *  - a session saved in FAST holds caches made by the fast kernels: continued in EXACT or on the
 *    CPU it agrees with the FAST context that made it, and with the CPU that computed every token
 *    itself, within the faithful tolerance, not bit for bit; so does a CPU or EXACT session
 *    continued in FAST.
 *  The load replaces everything: length, cache, metadata (none when the session has none), and
 *  a chunk in progress is dropped (hc_ctx_next_layer() is 0 afterwards). The session must come
 *  from a model with the same fingerprint (configuration and weights; a geometry-only model's
 *  sessions load only into geometry-only models of the same configuration).
 *  Memory: the new cache is built in fresh backend memory and swapped in at the end, so while
 *  loading the context holds its old cache too (hc_ctx_reset() first avoids that); host memory
 *  is bounded by a few MiB per worker thread.
 *  @return HC_OK; HC_ERR_NULL_ARG; HC_ERR_IO; HC_ERR_FORMAT (not a session file);
 *  HC_ERR_VERSION (written by an incompatible format version, or needing a feature this build
 *  lacks; the message names both); HC_ERR_MODEL_MISMATCH (the message names the first field that
 *  differs); HC_ERR_CORRUPT (truncated, a checksum or consistency check failed);
 *  HC_ERR_POSITION (longer than the context's max_tokens); HC_ERR_LIMIT; HC_ERR_OUT_OF_MEMORY;
 *  HC_ERR_CUDA; HC_ERR_BAD_STATE; HC_ERR_ABORTED (the context's progress callback stopped the
 *  load, see hc_ctx_set_progress(); @since 0.2). @since 0.1 */
HC_API hc_status hc_ctx_load(hc_ctx *c, const char *path);

/** Bytes that hc_ctx_save_buffer() needs with these params (exact without compression, an
 *  upper bound with it). @return as hc_ctx_save(). @since 0.1 */
HC_API hc_status hc_ctx_save_size(hc_ctx *c, const hc_save_params *p, uint64_t *size);
/** Save into a caller buffer; *written receives the bytes used. buf may be NULL when cap is 0.
 *  With compression the exact size is known only after compressing: a too small buffer is
 *  reported with the exact size (the same params then fit). @return as hc_ctx_save(), plus
 *  HC_ERR_BUFFER_TOO_SMALL (with the size needed in *written). @since 0.1 */
HC_API hc_status hc_ctx_save_buffer(hc_ctx *c, void *buf, uint64_t cap, const hc_save_params *p,
                                    uint64_t *written);
/** Load from a caller buffer (the library does not keep it). @return as hc_ctx_load(). @since 0.1 */
HC_API hc_status hc_ctx_load_buffer(hc_ctx *c, const void *buf, uint64_t len);

/** Attach an opaque metadata blob (for example the token ids) that is saved with the session;
 *  the bytes are copied. len 0 removes it. At most 1 GiB.
 *  @return HC_OK, HC_ERR_NULL_ARG (c, or data with len > 0), HC_ERR_LIMIT, HC_ERR_OUT_OF_MEMORY. @since 0.1 */
HC_API hc_status hc_ctx_set_metadata(hc_ctx *c, const void *data, uint64_t len);
/** The metadata blob of the context (set, or restored by a load): *data is owned by the
 *  context and valid until the next call that changes it or hc_ctx_free(); NULL with *len 0
 *  when there is none. @return HC_OK, HC_ERR_NULL_ARG. @since 0.1 */
HC_API hc_status hc_ctx_get_metadata(const hc_ctx *c, const void **data, uint64_t *len);

/** Number of CUDA devices usable by this build (0 in CPU-only builds, without the CUDA module,
 *  or without a driver). Loads the CUDA module on first use (see hc_backend_info_get()).
 *  @return HC_OK, HC_ERR_NULL_ARG. Thread-safe. @since 0.1 */
HC_API hc_status hc_cuda_device_count(int32_t *out);

/* ---------------------------------------------------------------------------------------------
 * Serving: forks, bounded rollback, memory (@since 0.2)
 *
 * A fork is a second context holding its source's sequence. The two share the pages of compressed
 * entries and indexer keys of their common prefix, reference-counted and copied on write, so a
 * fork costs its own window ring, compressor states and rollback history (fixed per layer), then
 * only the pages that it writes. Use forks for many continuations of one prompt, and to keep a
 * point to return to that lies further back than max_rollback.
 *
 * Rollback: a context created with hc_ctx_params.max_rollback = R keeps a history from which
 * hc_ctx_truncate() can take back any of its last R tokens (speculative decoding, a regenerated
 * answer). Its memory, per layer, with E the bytes of a window entry (584 fp8, 1024 bf16 for the
 * V4 models), dc = head_dim and di = index_head_dim:
 *     roundup(R, 64) * E                           (window entries the ring overwrote)
 *   + (R + 7)   * 16 * (dc + di) bytes             ratio-4 layers  (compressor state rows)
 *   + (R + 127) *  8 * dc        bytes             ratio-128 layers
 * that is about (R + 7) * 10 KiB per ratio-4 layer and (R + 127) * 4 KiB per ratio-128 layer
 * for V4: 26.2 MiB for v4-pro at R = 16, plus about 0.45 MiB for each further token. The history
 * is in the context's backend memory and not part of hc_ctx_memory_bytes(); a fork copies it.
 * ------------------------------------------------------------------------------------------- */
/** Create a new context with src's sequence: its length, caches, metadata blob and rollback
 *  history (hc_ctx_truncate_limit() of the fork equals src's when both have the same max_rollback).
 *  The fork and src share the pages of the common prefix copy-on-write and are independent
 *  afterwards: either may be appended to, truncated, saved, loaded, reset, forked again or freed
 *  first, and each continues bitwise like a context that computed its whole sequence itself on
 *  the same backend in the same numerics (in FAST on CUDA: taking the same chunks, see
 *  hc_ctx_params.max_chunk).
 *  @param src the context to fork; only read (its stream is synchronised on CUDA).
 *  @param p NULL: src's params (those it was created or forked with). Otherwise read as for
 *           hc_ctx_create(), where these may differ from src's: n_threads, max_chunk, io_dtype,
 *           io_memory, cuda_stream, max_tokens (at least src's length), max_rollback (a fork
 *           with another R keeps what of src's history its own R covers) and numerics
 *           (HC_NUMERICS_DEFAULT = as src; the caches are valid in either mode, and a fork in
 *           the other mode continues as a context of that mode that loaded src's session, see
 *           hc_ctx_load()). The fork holds src's
 *           pages, so backend must be HC_BACKEND_AUTO or src's backend, device 0 or src's
 *           device, cache_format HC_CACHE_DEFAULT or src's format: those zero values mean "as
 *           src", anything else is HC_ERR_INVALID_ARG.
 *  @param out receives the fork; NULL on failure.
 *  Cost: the fork's window ring, compressor states, history and workspace; on CUDA src's stream
 *  is synchronised and the fork's copies are finished before the call returns.
 *  Threads: src is only read, but must not be used by another thread during the call; afterwards
 *  the two may run on different threads (the shared pages' counts are atomic).
 *  @return HC_OK; HC_ERR_NULL_ARG (src, out); HC_ERR_INVALID_ARG (a params field out of range, or
 *  a backend, device or cache format other than src's); HC_ERR_UNSUPPORTED (params tail not
 *  zero); HC_ERR_ORDER (src has a chunk in progress: hc_ctx_next_layer(src) != 0);
 *  HC_ERR_POSITION (max_tokens below src's length); HC_ERR_BAD_STATE (src poisoned);
 *  HC_ERR_OUT_OF_MEMORY; HC_ERR_NO_DEVICE / HC_ERR_CUDA / HC_ERR_CUBLAS. On failure src is
 *  unchanged and the detail goes to p->errbuf (when p is given) and to hc_ctx_last_error(src).
 *  Ownership: free the fork with hc_ctx_free() before the model. @since 0.2 */
HC_API hc_status hc_ctx_fork(hc_ctx *src, const hc_ctx_params *p, hc_ctx **out);

/** Shorten the sequence to n_tokens tokens: appending afterwards gives bitwise what appending to
 *  a context that never took the discarded tokens would give (on the CPU; on CUDA the same as
 *  that context on CUDA in the same numerics, in FAST one that took the kept tokens in pieces of
 *  the same sizes: docs/numerics.md). Pages that only the discarded tokens used are released;
 *  the metadata blob is kept as it is (update it when it describes the tokens). n_tokens equal
 *  to the current length is a no-op that always succeeds.
 *  @param c        the context.
 *  @param n_tokens the new length, hc_ctx_truncate_limit(c) .. hc_ctx_n_tokens(c).
 *  How far back: down to hc_ctx_truncate_limit(c). The history covers the last max_rollback
 *  tokens, but it starts when the context is created or reset (length 0), loaded or filled
 *  (sessions hold no history: right after a load the limit is the loaded length), and a fork
 *  starts with its source's. A truncation keeps the limit where it was: after going back k
 *  tokens the limit only moves on once the length passes the old one.
 *  @return HC_OK; HC_ERR_NULL_ARG; HC_ERR_INVALID_ARG (n_tokens < 0 or above the current length);
 *  HC_ERR_LIMIT (n_tokens below hc_ctx_truncate_limit(c): further back than the history
 *  reaches; with max_rollback 0 every truncation); HC_ERR_ORDER (a chunk is in progress);
 *  HC_ERR_OUT_OF_MEMORY; HC_ERR_BAD_STATE; HC_ERR_CUDA (a device fault, which poisons the
 *  context). On any error but a device fault the context is unchanged. Threads: one thread at
 *  a time per context. @since 0.2 */
HC_API hc_status hc_ctx_truncate(hc_ctx *c, int64_t n_tokens);

/** The shortest length hc_ctx_truncate() accepts now: max(hc_ctx_n_tokens(c) - max_rollback,
 *  the length the history starts at), so hc_ctx_n_tokens(c) itself with max_rollback 0 or right
 *  after a load; -1 for NULL. While a chunk is in progress truncate refuses with HC_ERR_ORDER;
 *  this then tells the limit for the length before the chunk. Threads: as the other calls on c.
 *  @param c the context (NULL gives -1).
 *  @since 0.2 */
HC_API int64_t hc_ctx_truncate_limit(const hc_ctx *c);

/** What a context holds, in bytes of its backend's memory (host for CPU, device for CUDA). */
typedef struct hc_ctx_memory_info {
    uint32_t struct_size;     /**< set by the caller to sizeof(hc_ctx_memory_info) */
    uint32_t reserved0;       /**< 0 */
    uint64_t own_bytes;       /**< cache that this context alone holds: window ring, compressor states,
                                   and the entry pages that no other context shares */
    uint64_t shared_bytes;    /**< entry pages shared with other contexts (forks, copy-on-write); every
                                   holder counts them, so count them once per family.
                                   own_bytes + shared_bytes == hc_ctx_memory_bytes(c) */
    uint64_t history_bytes;   /**< the rollback history (hc_ctx_params.max_rollback), fixed */
    uint64_t workspace_bytes; /**< activations of one piece of max_chunk tokens, plus backend scratch
                                   (CUDA: buffers that grow with the length, the cuBLASLt workspace),
                                   plus the all-or-nothing snapshot of one layer once a call has
                                   needed it (CPU: the first layer call; CUDA: the first with a
                                   progress callback), kept for the next calls */
    /* new members are only appended below */
} hc_ctx_memory_info;

/** Describe the memory a context holds. Which pages are shared is read at the call (atomically):
 *  it changes when another holder writes, truncates or is freed. The library writes
 *  min(info->struct_size, sizeof(hc_ctx_memory_info)) bytes.
 *  @param c    the context.
 *  @param info receives the report; the caller sets info->struct_size first.
 *  @return HC_OK, HC_ERR_NULL_ARG, HC_ERR_INVALID_ARG (struct_size too small). Threads: as the
 *  other calls on c. @since 0.2 */
HC_API hc_status hc_ctx_memory_info_get(const hc_ctx *c, hc_ctx_memory_info *info);

/* ---------------------------------------------------------------------------------------------
 * Backends
 *
 * The CPU backend is part of libhybridctx.so. The CUDA backend is a separate module,
 * libhybridctx-cuda.so.0, that the library loads with dlopen() the first time a call needs it
 * (creating a context with HC_BACKEND_AUTO or HC_BACKEND_CUDA, hc_cuda_device_count(),
 * hc_backend_info_get()). It is looked for in the directory of libhybridctx.so itself, then
 * by the dynamic linker's search path; the environment variable HYBRIDCTX_CUDA_MODULE, read
 * at that first load, names the module file instead. A program that never asks for CUDA never
 * loads it, and libhybridctx.so needs no CUDA library to load. A module that is missing or
 * cannot be loaded (CUDA runtime absent) makes CUDA unavailable (HC_ERR_NO_DEVICE); a module
 * from another version or build of the library is refused (HC_ERR_UNSUPPORTED). Either way the
 * CPU backend works, and hc_backend_info_get() says why CUDA is not there.
 * ------------------------------------------------------------------------------------------- */
/** hc_backend_info.state: why a backend can or cannot be used. */
enum {
    HC_BACKEND_USABLE = 0,          /**< usable now */
    HC_BACKEND_NOT_BUILT = 1,       /**< this build has no such backend (built without nvcc) */
    HC_BACKEND_MODULE_MISSING = 2,  /**< its module file is missing or cannot be loaded */
    HC_BACKEND_MODULE_INVALID = 3,  /**< its module is of another version or build */
    HC_BACKEND_NO_DEVICE = 4        /**< loaded, but no usable device (driver missing, device absent) */
};
/** hc_backend_info.caps: what a backend offers. */
enum {
    HC_CAP_HOST_IO = 1,      /**< x and y in host memory (HC_MEM_HOST) */
    HC_CAP_DEVICE_IO = 2,    /**< x and y in device memory (HC_MEM_DEVICE) */
    HC_CAP_STREAM = 4,       /**< runs on a caller's stream (hc_ctx_params.cuda_stream) */
    HC_CAP_THREADS = 8,      /**< uses hc_ctx_params.n_threads */
    HC_CAP_BITWISE_CPU = 16  /**< results bitwise equal to the CPU backend's for every chunking */
};

/** What one backend can do on this machine. Filled by hc_backend_info_get(). */
typedef struct hc_backend_info {
    uint32_t struct_size;  /**< set by the caller to sizeof(hc_backend_info) */
    int32_t  backend;      /**< the backend described (HC_BACKEND_CPU or HC_BACKEND_CUDA) */
    int32_t  state;        /**< HC_BACKEND_USABLE or why not; for a query of HC_BACKEND_AUTO, why
                                AUTO did not pick CUDA (HC_BACKEND_USABLE when it did) */
    int32_t  n_devices;    /**< usable devices (1 for the CPU) */
    uint32_t caps;         /**< HC_CAP_* flags; 0 when the backend is not usable */
    uint32_t reserved0;    /**< 0 */
    char     name[16];     /**< "cpu" or "cuda" */
    char     detail[256];  /**< human-readable: the module file, and the reason it cannot be used */
    /* new members are only appended below */
} hc_backend_info;

/** Describe a backend: whether it can be used here, and if not, why.
 *  @param backend HC_BACKEND_CPU, HC_BACKEND_CUDA, or HC_BACKEND_AUTO: then info describes the
 *                 backend that hc_ctx_create() with HC_BACKEND_AUTO and this device picks, and
 *                 info->state says why it is not CUDA.
 *  @param device  the CUDA device ordinal that AUTO or CUDA would use (>= 0).
 *  @param info    info->struct_size set by the caller; the library writes min(struct_size,
 *                 sizeof(hc_backend_info)) bytes.
 *  May load the CUDA module (see above). @return HC_OK (also when the backend is not usable:
 *  read info->state), HC_ERR_NULL_ARG, HC_ERR_INVALID_ARG (unknown backend, device < 0,
 *  struct_size too small). Thread-safe. @since 0.2 */
HC_API hc_status hc_backend_info_get(int32_t backend, int32_t device, hc_backend_info *info);

#ifdef __cplusplus
}
#endif
#endif /* HC_HYBRIDCTX_H */
