/* cuda_internal.h - private interface of the CUDA backend's host code (C++, nvcc only): the
 * backend state, the device copy of the weights, error helpers and the projections of
 * cuda_gemm.cu. The kernels are in kernels/<family>/, each family with its launcher header (the
 * launchers queue work on the given stream and return an hc_status, HC_ERR_CUDA when the launch
 * fails; none allocates memory: scratch comes from the caller, sized by the matching
 * *_scratch_bytes()) and its compile-time config.h. */
#ifndef HCI_CUDA_INTERNAL_H
#define HCI_CUDA_INTERNAL_H
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <mutex>
#include <vector>
extern "C" {
#include "../backend.h"
#include "../../cache/format.h"
#include "../../model/model.h"
#include "../../util/error.h"
}
#include "cuda_options.h"
#include "kernels/common.cuh" /* hci_align256 */
#include "kernels/attend/attend.h"
#include "kernels/compress/compress.h"
#include "kernels/gemm/gemm.h"
#include "kernels/gemv/gemv.h"
#include "kernels/index/index.h"
#include "kernels/io/io.h"
#include "kernels/qkv/qkv.h"
#include "kernels/quant/quant.h"

/* ---- weights on the device (made once per model and device, shared by its contexts) ---- */
struct hci_cu_fp8 {
    int rows, cols;
    uint8_t *w;    /* e4m3 codes [rows][cols] */
    float *scale;  /* [ceil(rows/128)][sld]: the checkpoint's [rows/128][cols/128] with each row of
                      block scales padded to a multiple of 4 (what cuBLASLt's 128x128 mode reads) */
    int sld;
};
struct hci_cu_bf16 {
    int rows, cols;
    uint16_t *w;
};
/* Projections the reference runs in fp32 (compressor) or whose bf16 result feeds a rounding
 * cascade (indexer head weights): kept in double so that the GEMM is exact to fp32 rounding
 * and the CUDA backend writes the same entries and selects the same keys as the CPU (numerics
 * EXACT; with the option comp_fast their bf16 copies go to the tensor cores instead). */
struct hci_cu_f64 {
    int rows, cols;
    double *w;     /* [rows][cols] */
};
struct hci_cu_comp {
    int ratio, coff, dc;
    float *ape;      /* [ratio][coff*dc] */
    hci_cu_f64 wkvg; /* wkv rows then wgate rows: [2*coff*dc][dim] (GEMMs of many tokens) */
    hci_cu_bf16 wkvg16; /* the same as bf16 (GEMVs of a few tokens) */
    float *norm;     /* [dc] */
};
struct hci_cu_layer {
    int ratio;
    hci_cu_fp8 wq_a, wq_b, wkv, wo_b, idx_wq_b;
    float *q_norm, *kv_norm, *attn_sink;
    hci_cu_bf16 wo_a;
    hci_cu_f64 idx_wproj;
    hci_cu_bf16 idx_wproj16;
    hci_cu_comp comp, idx_comp;
};
struct hci_cu_weights {
    int device;
    int n_layers;
    float *rope_swa, *rope_comp; /* RoPE frequencies [rope_dim/2] */
    hci_cu_layer *layers; /* host array of device pointers */
    size_t bytes;
};

/* ---- host-memory x and y (host_io.cu): staged through pinned host pieces ---- */
/* A piece holds at most HCI_CU_STAGE_BYTES of bf16 values (1 Mi values: 256 V4-Flash rows);
 * HCI_CU_STAGE_N pieces alternate, so the host converts one while the other's DMA runs. Each
 * context's pieces are sized on first use to its calls (64 KiB for a decode step), growing up to
 * HCI_CU_STAGE_BYTES: at most HCI_CU_STAGE_N * HCI_CU_STAGE_BYTES (4 MiB) pinned per context. */
#define HCI_CU_STAGE_N 2
#define HCI_CU_STAGE_BYTES ((size_t)2 << 20)
#define HCI_CU_STAGE_MIN ((size_t)64 << 10)
/* Host threads of a device object's conversion pool (device.h), the caller included. */
#define HCI_CU_IO_THREADS 8
struct hci_cu_staging {
    void *buf[HCI_CU_STAGE_N];          /* pinned (cudaHostAlloc), piece_bytes each; NULL until first use */
    cudaEvent_t done[HCI_CU_STAGE_N];   /* recorded after the last DMA that used buf[i] */
    size_t piece_bytes;                 /* 0: none yet */
};

/* ---- bulk transfers of sessions (xfer.cu): page-locked buffers with one event each ---- */
struct hci_cu_hostbuf {
    uint8_t *p;          /* an anonymous mapping, registered (cudaHostRegister) */
    size_t bytes;        /* a multiple of 4096 */
    cudaEvent_t done;    /* recorded after the last transfer queued from or into it */
};
struct hci_cu_xfer {
    std::mutex lock;     /* bufs: host_wait runs on the session's worker and I/O threads */
    std::vector<hci_cu_hostbuf> bufs;
    void *dev;           /* device staging of pages_download (pool memory, stream-ordered) */
    size_t dev_bytes;
};

/* A cuBLASLt algorithm pinned for one projection shape (cuda_gemm.cu): kind, weight rows and
 * columns, groups. */
struct hci_cu_lt_algo {
    int kind, M, K, groups;
    cublasLtMatmulAlgo_t algo;
};

/* ---- the backend ---- */
struct hci_cu_device;
struct hci_cuda {
    int device;
    hci_cu_device *dev;  /* shared with the model's other contexts on this GPU (device.h) */
    cudaStream_t stream;
    int own_stream;      /* stream lent by the device object (given back when the context leaves it) */
    cudaEvent_t order;   /* recorded on this stream to order another stream after it (stream_wait, set_stream) */
    cublasLtHandle_t lt;
    void *lt_ws;
    size_t lt_ws_bytes;
    const hci_cu_weights *w;
    hci_cu_options opt; /* named alternative code paths (cuda_options.h), all off by default */
    /* scratch, grown by reserve() before a layer call runs */
    void *scratch;
    size_t scratch_bytes;
    /* the shared workspace of the batches this context leads (share_reserve; rows of several
     * contexts), grown in their preflight; NULL until the first */
    void *share;
    size_t share_bytes;
    /* option decode_fused: the projections proj_in makes for the later ops of the piece (the
     * head weights, the compressors' projections: cuda_fused.cu), for fused_rows rows */
    void *fused;
    size_t fused_bytes;
    int fused_rows;
    hci_cu_staging stage; /* host I/O staging (host_io.cu), made on the first host-memory call */
    hci_cu_xfer xfer;     /* session transfers (xfer.cu): buffers exist only during a save or load */
};

static inline hci_cuda *hci_cu(hci_backend *be) { return (hci_cuda *)be->impl; }
/* The device weights of one layer. */
static inline const hci_cu_layer &hci_cu_lw(hci_backend *be, int layer) { return hci_cu(be)->w->layers[layer]; }
/* The indexer head weights' constant, fl32(index_head_dim^-1/2 * index_n_heads^-1/2) (spec 4,
 * step 5), which index_q and the fused projections apply alike. */
static inline float hci_cu_index_wscale(const hci_config *cf)
{
    return (float)(pow((double)cf->index_head_dim, -0.5) * pow((double)cf->index_n_heads, -0.5));
}
/* Return from the calling op with hci_cu_fail's status and message when a kernel launcher
 * (HC_OK or HC_ERR_CUDA) fails. */
#define KTRY(be, call) \
    do { if ((call) != HC_OK) return hci_cu_fail((be), cudaGetLastError(), #call); } while (0)

/* The backend of one context (the module's create, module.cu). */
int hci_backend_cuda_create(const struct hc_model *m, const hci_backend_args *a, hci_backend **out);

/* lib/backend/cuda/pages.cu: the page ops of backend.h (page_alloc, page_free, pages_sync). */
int hci_cu_page_alloc(hci_backend *be, size_t bytes, void **out);
void hci_cu_page_free(hci_backend *be, void *p);
int hci_cu_pages_sync(hci_backend *be, hci_page_list *l, int first);
/* pages_alloc_block: n pages carved from one pool allocation, freed with the last of them. */
int hci_cu_pages_alloc_block(hci_backend *be, size_t bytes, int n, void **out);

/* lib/backend/cuda/xfer.cu: the bulk-transfer ops of backend.h (session save and load). */
int hci_cu_host_alloc(hci_backend *be, size_t bytes, void **out);
void hci_cu_host_free(hci_backend *be, void *p);
int hci_cu_host_wait(hci_backend *be, const void *p, char *err, size_t errsz);
int hci_cu_upload_async(hci_backend *be, void *dst, const void *host_src, size_t bytes);
int hci_cu_pages_download(hci_backend *be, const hci_page_list *l, int first, int n, void *host_dst);
/* Free what is left (buffers a failed caller did not free, the device staging). */
void hci_cu_xfer_release(hci_cuda *cu);

/* lib/backend/cuda/host_io.cu: host-memory x and y (HC_MEM_HOST), io dtype f32 or bf16 (bf16 != 0).
 * Values go over PCIe as bf16, through the context's pinned pieces, the host converting (f32 <->
 * bf16, util/bf16.h: the same bits as hci_cu_to_bf16 and the CPU backend) one piece while the
 * other's DMA runs, on the device object's host threads when free. */
/* Make the staging for calls of count values (grows the pieces up to HCI_CU_STAGE_BYTES);
 * on failure the old staging is kept. Runs in the preflight (check_input). */
int hci_cu_host_reserve(hci_backend *be, int64_t count);
/* *bad = 1 when x holds NaN/Inf (exponent all ones, of the io dtype, as the CPU backend checks). */
int hci_cu_host_check(hci_backend *be, const void *x, int bf16, int64_t count, int *bad);
/* x -> xb (device, bf16): the copies are queued on the context's stream; x may be reused as soon
 * as this returns. With bad != NULL the same pass checks x: on *bad = 1 it stops, xb is then
 * undefined (and may still be written by DMAs queued before the bad piece was seen). */
int hci_cu_host_load(hci_backend *be, const void *x, int bf16, int64_t count, uint16_t *xb, int *bad);
/* yb (device, bf16) -> y: returns when y is written (after the work queued before it). */
int hci_cu_host_store(hci_backend *be, const uint16_t *yb, int bf16, int64_t count, void *y);
/* Free the staging (after its DMAs). */
void hci_cu_host_release(hci_cuda *cu);

/* Map a CUDA / cuBLAS failure to a status with a message in be->err. */
int hci_cu_fail(hci_backend *be, cudaError_t e, const char *what);
/* The same into a message buffer (for code that runs without a backend: device.cu). */
int hci_cu_fail_msg(char *err, size_t errsz, cudaError_t e, const char *what);
int hci_cu_blas_fail(hci_backend *be, cublasStatus_t s, const char *what);
#define HCI_CU_TRY(be, call)                                               \
    do {                                                                   \
        cudaError_t e_ = (call);                                           \
        if (e_ != cudaSuccess) return hci_cu_fail((be), e_, #call);        \
    } while (0)

/* ---- cuda_fused.cu: option decode_fused (backend.h proj_in_ok, proj_in) ---- */
/* Whether the fused projections take a piece (or shared launch) of n rows of `layer` with be's
 * options: where each of their kernels computes what the separate ops' would (cuda_fused.cu). */
int hci_cu_fused_ok(hci_backend *be, int layer, int n);
/* Scratch the fused projections of n rows use (the FP8 operands of x and c); 0 with the option off. */
size_t hci_cu_fused_scratch_bytes(hci_backend *be, int n);
/* Grow the buffer of the projections that proj_in keeps for compress to `rows` rows (preflight). */
int hci_cu_fused_reserve(hci_backend *be, int rows);
/* The compressor projection (which: 0 main, 1 indexer) that the last proj_in made: what compress
 * takes when called without x. */
const double *hci_cu_fused_proj(hci_backend *be, int which);
/* q_path, kv_path, index_q (ratio 4) and the compressors' projections (ratio != 0) of n rows in
 * the fused way, row t at pos0 + t or pos[t] (qkv.h); wd [n][IH] and proj0/proj1 [n][2*coff*dc
 * of the layer] are what index_q's head weights and comp_project compute. hci_cu_fused_ok must
 * hold; scratch: hci_cu_fused_scratch_bytes(n). */
int hci_cu_proj_in_rows(hci_backend *be, int layer, int n, int64_t pos0, const int64_t *pos, const uint16_t *x,
                        uint16_t *c, uint16_t *q, uint16_t *kv, uint16_t *qi, uint16_t *w, double *wd, double *proj0,
                        double *proj1);
/* The ops. */
int hci_cu_proj_in_ok(hci_backend *be, int layer, int n);
int hci_cu_proj_in(hci_backend *be, int layer, int n, int64_t pos0, const uint16_t *x, uint16_t *c, uint16_t *q,
                   uint16_t *kv, uint16_t *qi, uint16_t *w);
/* The widest projection row (2 * coff * dc) of the model's main (which 0) or indexer compressors. */
int hci_cu_comp_width(hci_backend *be, int which);

/* ---- cuda_gemm.cu: the projections ---- */
/* y[t][r] (bf16, leading dim ldy) = W_fp8 . act_quant(x[t]) for t < n (x bf16, leading dim ldx).
 * n <= 16: the GEMV family; more: the GEMM family, or cuBLASLt with the option fp8_gemm_cublaslt
 * (for comparison), which writes rows n .. round_up(n, 16) - 1 of y too (it needs N % 16 == 0):
 * y must have room for them. scratch: hci_cu_fp8_scratch_bytes(n, W->cols). block_out: W is the
 * block's output projection (wo_b), whose result no FP8 quantization follows (option
 * gemm_fp8_native_out). */
size_t hci_cu_fp8_scratch_bytes(int n, int cols);
int hci_cu_linear_fp8(hci_backend *be, const hci_cu_fp8 *W, int n, const uint16_t *x, int ldx, uint16_t *y,
                      int ldy, void *scratch, int block_out);
/* Grouped bf16 projection: for g < groups, z[t][g*rows + r] = bf16(sum_k x[t][g*cols + k] * W[g*rows + r][k])
 * with fp32 accumulation; x leading dim ldx, z leading dim ldz. */
int hci_cu_linear_bf16_grouped(hci_backend *be, const hci_cu_bf16 *W, int groups, int n, const uint16_t *x,
                               int ldx, uint16_t *z, int ldz);
/* out[t][r] (double) = sum_k W[r][k] * xd[t][k], in double (exact to fp32 rounding for bf16 data). */
int hci_cu_linear_f64(hci_backend *be, const hci_cu_f64 *W, int n, const double *xd, double *out);
/* Option comp_fast: out[t][r] (double, leading dim ldo) = the fp32 sum of W[r][k] * x[t][k] on bf16
 * tensor cores (kernels/gemm/gemm_bf16.cu) for any n >= 1: deterministic and batch-invariant (a
 * token's bits do not depend on n), within rounding of hci_cu_linear_f64, not its bits. */
int hci_cu_linear_bf16_fast(hci_backend *be, const hci_cu_bf16 *W, int n, const uint16_t *x, int ldx, double *out,
                            int ldo);

#endif
