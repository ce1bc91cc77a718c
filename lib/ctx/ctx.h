/* ctx.h - hc_ctx: one sequence. Position bookkeeping, the per-layer caches, the backend and the
 * workspace of one piece. */
#ifndef HCI_CTX_H
#define HCI_CTX_H
#include <stdint.h>
#include "hybridctx.h"
#include "../backend/backend.h"
#include "../cache/cache.h"
#include "../model/model.h"
#include "../util/error.h"

typedef struct hci_workspace {
    int tokens;                 /* capacity in tokens */
    uint16_t *x, *c, *q, *kv, *qi, *w, *o, *y;
    int32_t *sel;
} hci_workspace;

struct hc_ctx {
    hc_model *model;
    hci_backend *be;
    int32_t cache_fmt;          /* HCI_FMT_BF16 / HCI_FMT_FP8 */
    int32_t io_dtype;           /* HC_DTYPE_F32 / HC_DTYPE_BF16 */
    int32_t io_memory;          /* HC_MEM_HOST / HC_MEM_DEVICE */
    int64_t max_tokens;
    int64_t n_tokens;           /* tokens that have passed every layer */
    int next_layer;             /* layer the next call must name */
    int64_t chunk_n;            /* tokens of the chunk in progress (next_layer > 0) */
    hci_layer_cache *layers;    /* [n_layers], lib/cache */
    hci_workspace ws;
    int poisoned;
    uint64_t shared_pieces;     /* pieces that ran in a batch's shared launches (tests, benchmarks) */
    char err[HCI_ERRLEN];
    /* sessions (lib/session) */
    void *meta;                 /* caller metadata blob saved with the context (hc_ctx_set_metadata) */
    uint64_t meta_len;
    uint64_t sess_generation;   /* generation of the session last loaded into the context, 0 if none */
    /* forks and rollback */
    hc_ctx_params params;       /* as created, backend/device/format/numerics resolved, errbuf
                                   cleared: what hc_ctx_fork() with NULL params gives the fork */
    int64_t max_rollback;       /* R: the history (lib/cache/history.c) covers R tokens */
    int64_t hist_from;          /* the history reaches back to max(hist_from, n_tokens - R) */
    /* progress of long calls (hc_ctx_set_progress) */
    hc_progress_fn progress;
    void *progress_user;
    /* backend memory for the engine's copying snapshot of one layer (hci_cache_snap_take_in),
     * allocated on first use and kept: a layer call then allocates nothing for its rollback */
    void *snap_store;
    size_t snap_store_bytes;
};

/* The shortest length the context can be truncated to now (hc_ctx_truncate_limit()). */
static inline int64_t hci_ctx_truncate_limit(const hc_ctx *c)
{
    int64_t lo = c->n_tokens - c->max_rollback;
    return lo > c->hist_from ? lo : c->hist_from;
}

int hci_ctx_alloc_workspace(hc_ctx *c, int tokens);
void hci_ctx_free_workspace(hc_ctx *c);
/* Bytes of the workspace (one piece's activations). */
uint64_t hci_ctx_workspace_bytes(const hc_ctx *c);

/* Run n tokens of the current chunk through one layer (checks done by the caller): a batch of one. */
int hci_engine_layer(hc_ctx *c, int layer, const void *x, int64_t n, void *y);

/* One context's part of a batched layer call. The caller fills c, x, y, n; the rest is the
 * engine's. */
typedef struct hci_engine_job {
    hc_ctx *c;
    const void *x;              /* n rows of dim, io_dtype, in io_memory */
    void *y;
    int64_t n;
    hci_cache_snap snap;        /* the layer before the call, for the rollback */
    int snapped;
    int loaded;                 /* the first piece's input is in the workspace already (check_load_input) */
    /* shared launches (engine.c): the job's group, -1 when it runs alone, else the index of the
     * group's first job (its lead, whose backend runs the shared launches); its first row there */
    int share_lead, share_row;
    int share_cap;              /* the rows of a shared launch it may join (share_rows), 0: none */
    uint64_t share_key;
    int share_n;                /* a lead's: rows of its group */
    hci_share_ws share;         /* a lead's: the shared workspace (share_reserve) */
} hci_engine_job;

/* Run every job's tokens through `layer` (contexts distinct, of one model, backend kind and
 * device, each at that layer: checked by the caller), all or nothing: inputs are checked and
 * every context's preflight is done before any op runs; a later failure (out of memory on the
 * CPU, a stop by a progress callback) restores every context of the batch; a device fault
 * poisons them all. On failure *at is the index of the job at fault (its context's err holds
 * the detail), or -1. CUDA: ordered on the first job's stream (the others' streams joined to it
 * by events at the start and at the end). Where the backend has the share_* ops, the
 * projections of small pieces run as shared launches over the rows of several jobs (engine.c);
 * results are bitwise those of separate calls either way. */
int hci_engine_batch(hci_engine_job *jobs, int n_jobs, int layer, int *at);

#endif
