/* backend.h - the one table of operations through which the engine runs a layer. The CPU and
 * CUDA backends implement the same signatures; every buffer argument lives in the backend's
 * memory (host for CPU, device for CUDA). A piece of a chunk is n tokens at positions
 * pos0 .. pos0+n-1 of one layer; the engine keeps n <= the backend's max_chunk. */
#ifndef HCI_BACKEND_H
#define HCI_BACKEND_H
#include <stddef.h>
#include <stdint.h>
#include "../cache/cache.h"

struct hc_model;
struct hci_pool;
typedef struct hci_backend hci_backend;

/* The most rows of one shared launch of a batch (the share_* ops below). */
#define HCI_SHARE_MAX_ROWS 64

/* A batch's shared workspace (share_reserve), in the backend memory of the group's first context:
 * the rows of several contexts' pieces one after another, each buffer as hci_workspace's
 * (lib/ctx/ctx.h) with `rows` rows; a context's rows start at its row offset in every buffer. */
typedef struct hci_share_ws {
    int rows;                    /* capacity in rows */
    uint16_t *x, *c, *q, *kv, *qi, *w, *o, *y;
    void *aux;                   /* the backend's per-row data between share_in and compress_rows
                                    (CUDA: the compressors' projections, the indexer head weights) */
} hci_share_ws;

typedef struct hci_backend_ops {
    const char *name;
    void (*destroy)(hci_backend *be);

    /* ---- memory ---- */
    int (*alloc)(hci_backend *be, size_t bytes, void **out); /* zero-filled */
    void (*free)(hci_backend *be, void *p);
    int (*upload)(hci_backend *be, void *dst, const void *host_src, size_t bytes);
    int (*download)(hci_backend *be, void *host_dst, const void *src, size_t bytes);
    int (*copy)(hci_backend *be, void *dst, const void *src, size_t bytes); /* within the backend */
    /* Optional (NULL: every op has finished when it returns): wait until the work queued on the
     * backend has finished (CUDA: the stream synchronised). */
    int (*sync)(hci_backend *be);
    /* Optional (NULL: none): bytes of working memory the backend holds beside the context's
     * workspace (CUDA: the scratch grown by reserve, the cuBLASLt workspace it borrows). */
    uint64_t (*scratch_bytes)(hci_backend *be);

    /* ---- cache pages: single pages here, lists and reference counts in lib/cache; a page is
     * copied with `copy` ---- */
    /* One page, zero-filled. May complete asynchronously (CUDA: stream-ordered); pages_sync
     * completes every pending allocation before kernels read the page table. */
    int (*page_alloc)(hci_backend *be, size_t bytes, void **out);
    void (*page_free)(hci_backend *be, void *p);
    /* Optional (NULL: page_alloc n times): n pages at once into out[0..n), as page_alloc would
     * make them (each freed by page_free); on failure none is left. For work per page that is
     * better done in bulk (CPU: making the memory resident on the host pool's threads). */
    int (*pages_alloc)(hci_backend *be, size_t bytes, int n, void **out);
    /* Optional (NULL: pages are not host memory): n pages in one block of host memory, page i
     * at out[0] + i * bytes, out[0] 4096-aligned, at least 4096 bytes of slack after the last
     * page, zero-filled but not made resident (the caller writes them at once, e.g. a load
     * reads a session straight into them). Each is freed by page_free; on failure none is left. */
    int (*pages_alloc_host)(hci_backend *be, size_t bytes, int n, void **out);
    /* Optional (NULL: kernels read l->pages on the host): make the backend's mirror of the page
     * table (l->dev_table, backend memory that ops->free releases) hold pages[first..n_pages)
     * and complete pending page allocations. On failure l is still usable with its old mirror. */
    int (*pages_sync)(hci_backend *be, hci_page_list *l, int first);

    /* ---- bulk transfers (session save and load). Optional; NULL: upload/download page by page
     * from malloc'd memory ---- */
    /* n pages in one block of backend memory, page i at out[0] + i * bytes, zero-filled; each is
     * freed by page_free (the block with its last page). A load that fills a whole list allocates
     * once and copies each chunk's pages in one transfer. On failure none is left. */
    int (*pages_alloc_block)(hci_backend *be, size_t bytes, int n, void **out);
    /* Host memory (4096-aligned; CUDA: page-locked) that the two transfers below may still be
     * reading or writing when they return: host_wait(p) returns when every transfer queued so far
     * from or into the host_alloc buffer holding p has finished (at once for any other pointer).
     * host_wait may be called from any thread, while the caller's thread queues transfers on
     * other buffers; errors are formatted into err. host_free waits, then frees. */
    int (*host_alloc)(hci_backend *be, size_t bytes, void **out);
    void (*host_free)(hci_backend *be, void *p);
    int (*host_wait)(hci_backend *be, const void *p, char *err, size_t errsz);
    /* upload, that may return before the copy is done when host_src lies in a host_alloc buffer. */
    int (*upload_async)(hci_backend *be, void *dst, const void *host_src, size_t bytes);
    /* Pages [first, first + n) of l, back to back, into host_dst (n * l->page_bytes bytes): done
     * when it returns, unless host_dst lies in a host_alloc buffer (then host_wait). */
    int (*pages_download)(hci_backend *be, const hci_page_list *l, int first, int n, void *host_dst);

    /* Optional: the backend's host thread pool, for host work beside it (NULL: none). */
    struct hci_pool *(*host_pool)(hci_backend *be);
    /* Optional (NULL = nothing to do): make room for a layer call of `n` tokens whose piece
     * sizes are at most n_piece and that ends at position end_pos (scratch buffers that grow with
     * the context). Runs in the engine's preflight, before anything changes. */
    int (*reserve)(hci_backend *be, int layer, int n_piece, int64_t end_pos);

    /* ---- input / output ---- */
    /* *bad = 1 when x (io_dtype, in host memory when from_host, else backend memory) holds NaN/Inf. */
    int (*check_input)(hci_backend *be, const void *x, int io_dtype, int from_host, int64_t count,
                       int *bad);
    /* Optional (NULL: check_input, then load_input per piece): check_input and load_input of host
     * memory x in one pass. *bad = 1 when x holds NaN/Inf; xb is then undefined. The engine calls
     * it in the preflight, for the first piece of a host-memory chunk, before anything of the
     * context changes (xb is the context's workspace); it must change nothing but xb. */
    int (*check_load_input)(hci_backend *be, const void *x, int io_dtype, int64_t count, uint16_t *xb,
                            int *bad);
    /* x -> bf16 xb (round to nearest even). */
    int (*load_input)(hci_backend *be, const void *x, int io_dtype, int from_host, int64_t count,
                      uint16_t *xb);
    int (*store_output)(hci_backend *be, const uint16_t *yb, int io_dtype, int to_host, int64_t count,
                        void *y);

    /* ---- the attention block ---- */
    /* c = RMSNorm(W_qa x) [n][q_lora]; q = per-head RMS(W_qb c) with RoPE [n][H][d]. */
    int (*q_path)(hci_backend *be, int layer, int n, int64_t pos0, const uint16_t *x, uint16_t *c,
                  uint16_t *q);
    /* kv = FP8sim(RoPE(RMSNorm(W_kv x))) [n][d]. */
    int (*kv_path)(hci_backend *be, int layer, int n, int64_t pos0, const uint16_t *x, uint16_t *kv);
    /* Indexer queries qi [n][IH][ID] (RoPE, Hadamard, FP4) and head weights w [n][IH]. */
    int (*index_q)(hci_backend *be, int layer, int n, int64_t pos0, const uint16_t *x,
                   const uint16_t *c, uint16_t *qi, uint16_t *w);
    /* Feed n tokens to a compressor: update its state and write every entry that a token of the
     * piece completes (pages already grown). which: 0 main, 1 indexer. x NULL (backends with
     * proj_in, after proj_in of the same piece): from the compressor projection proj_in made. */
    int (*compress)(hci_backend *be, int layer, int which, hci_comp_cache *cc, int n, int64_t pos0,
                    const uint16_t *x);
    /* Top-k selection sel [n][index_topk] (entry numbers, -1 padding) over the visible keys. */
    int (*index_topk)(hci_backend *be, int layer, const hci_comp_cache *idx, int n, int64_t pos0,
                      const uint16_t *qi, const uint16_t *w, int32_t *sel);
    /* o [n][H][d] = attention over the window (ring for positions < pos0, kv for the piece) and
     * the compressed entries (sel for ratio 4, all visible for ratio 128). */
    int (*attend)(hci_backend *be, int layer, const hci_layer_cache *lc, int n, int64_t pos0,
                  const uint16_t *q, const uint16_t *kv, const int32_t *sel, uint16_t *o);
    /* Write the piece's window KV into the ring (slot = pos % window). */
    int (*window_write)(hci_backend *be, hci_layer_cache *lc, int n, int64_t pos0, const uint16_t *kv);
    /* y [n][D] = W_ob act_quant(W_oa · invRoPE(o)); o is overwritten. */
    int (*out_path)(hci_backend *be, int layer, int n, int64_t pos0, uint16_t *o, uint16_t *y);

    /* ---- optional ---- */
    /* The stream the backend runs on (cudaStream_t as void *), for benchmarks and tests. */
    void *(*stream)(hci_backend *be);
    /* Set a named option (the backend's alternative code paths, docs/cuda.md "Options");
     * HC_ERR_UNSUPPORTED for a name the backend does not know, HC_ERR_INVALID_ARG for a value. */
    int (*set_option)(hci_backend *be, const char *name, int64_t value);
    /* Run on `stream` from now on (NULL: a stream of the backend's own), ordered after the work
     * queued on the old one without blocking the host (hc_ctx_set_stream). NULL op: the backend
     * has no streams. On failure the backend stays on its old stream. */
    int (*set_stream)(hci_backend *be, void *stream);
    /* Order the work queued on be from now on after the work queued so far on `on` (a backend
     * of the same kind and device): an event recorded on on's stream, waited on be's. Nothing
     * when both run on one stream. NULL op: calls complete before they return (batches). */
    int (*stream_wait)(hci_backend *be, hci_backend *on);
    /* Optional (NULL: no device io): x = RMSNorm(x + y) per row of dim (no weight), x and y of
     * io dtype f32 or bf16 (bf16 != 0) in backend memory, queued like the layer ops
     * (hc_x_ctx_residual_norm, the demo's stand-in between layers). */
    int (*residual_norm)(hci_backend *be, void *x, const void *y, int bf16, int64_t rows, int dim, float eps);

    /* ---- shared projections of a batch: optional, all or none (NULL: each context of a batch
     * runs its own ops; the CPU). The pieces of several contexts of one model go through the
     * projections (q_path, kv_path, index_q, out_path and the compressors' projections, with
     * their element-wise kernels) as one launch over all their rows, so that a batched decode
     * reads the weights once; the other ops run per context on its rows of the shared
     * workspace (lib/engine/engine.c). Row r of a shared launch sits at position pos[r]. ---- */
    /* The most rows of a shared launch that a piece of n tokens of `layer` may join, 0 when it
     * may not (a piece of n tokens takes a kernel whose rows depend on each other), and in *key
     * what else must match: pieces of backends with the same ops table, key and answer may share
     * a launch of at most that many rows (<= HCI_SHARE_MAX_ROWS), and each row's results are then
     * bitwise those of its piece's own ops. */
    int (*share_rows)(hci_backend *be, int layer, int n, uint64_t *key);
    /* Make be's shared workspace hold `rows` rows and describe it in ws (the batch's preflight,
     * after every context's; on failure the batch runs without sharing). The workspace stays
     * be's, valid until its next share_reserve; its users are ordered by the batch's events. */
    int (*share_reserve)(hci_backend *be, int rows, hci_share_ws *ws);
    /* n <= ws->rows rows: row r's input is the bf16 row xrow[r] (backend memory; xrow and pos are
     * host arrays of n) at position pos[r]. Gathers them into ws->x, then computes ws->c, q, kv
     * as q_path and kv_path, and on a layer with an indexer ws->qi, w as index_q, and on a
     * compressed layer the compressors' projections for compress_rows. */
    int (*share_in)(hci_backend *be, int layer, int n, const int64_t *pos, const uint16_t *const *xrow,
                    const hci_share_ws *ws);
    /* compress of a piece of n tokens whose projections share_in computed as rows row .. row +
     * n - 1 of ws (another backend's workspace: be is the piece's own). */
    int (*compress_rows)(hci_backend *be, int layer, int which, hci_comp_cache *cc, int n, int64_t pos0,
                         const hci_share_ws *ws, int row);
    /* ws->y = out_path of the n rows of ws->o (overwritten), row r at position pos[r]. */
    int (*share_out)(hci_backend *be, int layer, int n, const int64_t *pos, const hci_share_ws *ws);

    /* ---- fused projections of a piece: optional, both or none (NULL: the engine runs q_path,
     * kv_path, index_q and compress with x one by one; the CPU, and CUDA without its option
     * decode_fused). For small pieces (decode) a backend may compute the projections in fewer,
     * fuller launches than the ops one by one, with bitwise their results. ---- */
    /* Nonzero when proj_in takes a piece of n tokens of `layer` (else the ops one by one). */
    int (*proj_in_ok)(hci_backend *be, int layer, int n);
    /* What q_path, kv_path and, on a layer with an indexer, index_q compute (c, q, kv, qi, w), and
     * the compressors' projections, which the backend keeps for the piece's compress calls: the
     * engine then calls compress with x NULL. */
    int (*proj_in)(hci_backend *be, int layer, int n, int64_t pos0, const uint16_t *x, uint16_t *c, uint16_t *q,
                   uint16_t *kv, uint16_t *qi, uint16_t *w);
} hci_backend_ops;

struct hci_backend {
    const hci_backend_ops *ops;
    int kind;                    /* HC_BACKEND_CPU / HC_BACKEND_CUDA */
    int device;                  /* device ordinal (CUDA); 0 for the CPU */
    uint32_t caps;               /* HC_CAP_* */
    const struct hc_model *model;
    int max_chunk;               /* tokens per piece */
    int numerics;                /* HC_NUMERICS_FAST or _EXACT: what the backend computes with */
    int ops_may_fail;            /* 1: an op may fail for lack of memory, so the engine snapshots the
                                    layer's mutable state to roll back (CPU); 0: failures after the
                                    engine's preflight are device faults that poison the context */
    char *err;                   /* message buffer of the owning context */
    size_t errsz;
    void *impl;
};

/* What a backend is created with (the context's params, already checked). */
typedef struct hci_backend_args {
    int kind;                    /* HC_BACKEND_CPU / HC_BACKEND_CUDA (AUTO is resolved by the registry) */
    int device;                  /* CUDA device ordinal */
    void *stream;                /* caller's cudaStream_t, or NULL */
    int n_threads;               /* CPU threads, 0 = all cores */
    int max_chunk;               /* tokens per piece, 0 = backend default */
    int numerics;                /* hc_ctx_params.numerics as given (the backend resolves DEFAULT) */
    char *err;                   /* the context's message buffer */
    size_t errsz;
} hci_backend_args;

/* The CPU backend (always built; registry.c reaches the others). */
int hci_backend_cpu_create(const struct hc_model *m, const hci_backend_args *a, hci_backend **out);

#endif
