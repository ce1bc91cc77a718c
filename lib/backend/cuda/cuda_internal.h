/* cuda_internal.h - private interface of the CUDA backend (C++, nvcc only): the backend state,
 * the device copy of the weights, and the kernel launchers of kernels/. Every launcher queues
 * work on the given stream and returns an hc_status (HC_ERR_CUDA when the launch fails); none
 * allocates memory: scratch comes from the caller, sized by the matching *_scratch_bytes(). */
#ifndef HCI_CUDA_INTERNAL_H
#define HCI_CUDA_INTERNAL_H
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <stdint.h>
extern "C" {
#include "../backend.h"
#include "../../cache/format.h"
#include "../../model/model.h"
#include "../../util/error.h"
}

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
 * and the CUDA backend writes the same entries and selects the same keys as the CPU. */
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

/* ---- the backend ---- */
struct hci_cuda {
    int device;
    cudaStream_t stream;
    int own_stream;
    cublasLtHandle_t lt;
    void *lt_ws;
    size_t lt_ws_bytes;
    const hci_cu_weights *w;
    /* scratch, grown by reserve() before a layer call runs */
    void *scratch;
    size_t scratch_bytes;
};

static inline hci_cuda *hci_cu(hci_backend *be) { return (hci_cuda *)be->impl; }

/* lib/backend/cuda/pages.cu: the page ops of backend.h (page_alloc, page_free, pages_sync). */
int hci_cu_page_alloc(hci_backend *be, size_t bytes, void **out);
void hci_cu_page_free(hci_backend *be, void *p);
int hci_cu_pages_sync(hci_backend *be, hci_page_list *l, int first);

/* Map a CUDA / cuBLAS failure to a status with a message in be->err. */
int hci_cu_fail(hci_backend *be, cudaError_t e, const char *what);
int hci_cu_blas_fail(hci_backend *be, cublasStatus_t s, const char *what);
#define HCI_CU_TRY(be, call)                                               \
    do {                                                                   \
        cudaError_t e_ = (call);                                           \
        if (e_ != cudaSuccess) return hci_cu_fail((be), e_, #call);        \
    } while (0)

/* ---- kernels/index.cu: lightning-indexer scores and top-k ---- */
/* Queries i = 0..n-1 at positions pos0+i see keys j < (pos0+i+1)/4 of the indexer cache (pages
 * in device memory, layout l). qi [n][IH][ID] bf16 (Hadamard + FP4-exact values), w [n][IH] bf16.
 * Score: bf16( sum_h bf16( relu(bf16(qi_h . k_j)) * w_h ) ), the dot exact and the head sum
 * accumulated in double, so scores equal the CPU backend's bit for bit. Output sel [n][K]: the
 * min(K, visible) best entries in descending score order, ties broken by the lower entry
 * number, then -1 padding. */
size_t hci_cu_index_scratch_bytes(int n, int64_t n_entries, int K);
int hci_cu_index_topk(cudaStream_t s, const hci_entry_layout *l, uint8_t *const *pages, int n,
                      int64_t pos0, int IH, int ID, int K, const uint16_t *qi, const uint16_t *w,
                      int32_t *sel, void *scratch);

/* ---- kernels/attend.cu: sparse attention with the sink ---- */
struct hci_cu_attn_args {
    int n;                   /* queries in the piece */
    int64_t pos0;            /* position of query 0 */
    int H, d;                /* heads, head_dim */
    int window;              /* W: window slots in every index row */
    int ratio;               /* 0, 4 (sel gives the compressed part) or 128 (all visible entries) */
    int K;                   /* sel row width (ratio 4) */
    float scale;             /* fl32(d^-1/2) */
    const uint16_t *q;       /* [n][H][d] bf16 */
    const uint16_t *kv;      /* [n][d] bf16: window KV of the piece's own positions */
    hci_entry_layout win_l;  /* ring layout; slot = position % window */
    uint8_t *const *ring;    /* device table of the ring's pages */
    hci_entry_layout comp_l;
    uint8_t *const *comp;    /* device table of the compressed entries' pages */
    const int32_t *sel;      /* [n][K] or NULL */
    const float *sink;       /* [H] */
    uint16_t *o;             /* [n][H][d] bf16 out */
};
/* Query t's index row: W window slots (positions max(0,t-W+1)..t ascending, then -1), then the
 * compressed part (sel row, or entries 0..(t+1)/128-1); o = softmax over the row with the
 * per-head sink in the denominator, times the entries (as in docs/numerics.md). */
size_t hci_cu_attend_scratch_bytes(int n, int H, int d, int64_t max_row);
int hci_cu_attend(cudaStream_t s, const hci_cu_attn_args *a, void *scratch);

/* ---- lib/backend/cuda/cuda_gemm.cu: projections ---- */
/* y[t][r] (bf16, leading dim ldy) = W_fp8 . act_quant(x[t]) for t < n (x bf16, leading dim ldx).
 * n <= 16: gemv.cu; more: gemm_fp8.cu, or cuBLASLt when HC_CUBLASLT_FP8=1 (for comparison),
 * which writes rows n .. round_up(n, 16) - 1 of y too (it needs N % 16 == 0): y must have room
 * for them. scratch: hci_cu_fp8_scratch_bytes(n, W->cols). */
size_t hci_cu_fp8_scratch_bytes(int n, int cols);
int hci_cu_linear_fp8(hci_backend *be, const hci_cu_fp8 *W, int n, const uint16_t *x, int ldx, uint16_t *y,
                      int ldy, void *scratch);
/* Grouped bf16 projection: for g < groups, z[t][g*rows + r] = bf16(sum_k x[t][g*cols + k] * W[g*rows + r][k])
 * with fp32 accumulation; x leading dim ldx, z leading dim ldz. */
int hci_cu_linear_bf16_grouped(hci_backend *be, const hci_cu_bf16 *W, int groups, int n, const uint16_t *x,
                               int ldx, uint16_t *z, int ldz);
/* out[t][r] (double) = sum_k W[r][k] * xd[t][k], in double (exact to fp32 rounding for bf16 data). */
int hci_cu_linear_f64(hci_backend *be, const hci_cu_f64 *W, int n, const double *xd, double *out);

/* ---- kernels/gemv.cu: a few tokens (n <= 16), exact as the CPU backend ---- */
/* fp8: K a multiple of 128, W and xq 16-byte aligned (else HC_ERR_INVALID_ARG). */
#define HCI_CU_GEMV_MAX_N 16
int hci_cu_gemv_fp8(cudaStream_t s, const uint8_t *W, const float *Ws, int sld, int M, int K, const uint8_t *xq,
                    const float *xs, int np, int n, uint16_t *y, int ldy);
int hci_cu_gemv_bf16(cudaStream_t s, const uint16_t *W, int M, int K, int groups, const uint16_t *x, int ldx, int n,
                     double *outd, uint16_t *outb, int ldo);

/* ---- kernels/gemm_fp8.cu: many tokens, the same arithmetic on the tensor cores ---- */
/* y[t][r] (bf16, leading dim ldy) for t < n only: the block dots of e4m3 codes by f16 mma.sync
 * (fp32 accumulation per 128-block), then fl32(acc + fl32(P * fl32(xs * ws))) in k order as the
 * CPU backend. W [M][K] codes with scales Ws [M/128][sld]; xq [np][K] codes (rows n.. zero) with
 * scales xs [K/128][np]; M % 128 == 0, K % 128 == 0, np % 16 == 0. HC_ERR_INVALID_ARG on a bad
 * shape, HC_ERR_CUDA when the launch fails. */
int hci_cu_gemm_fp8(cudaStream_t s, const uint8_t *W, const float *Ws, int sld, int M, int K, const uint8_t *xq,
                    const float *xs, int np, int n, uint16_t *y, int ldy);

/* ---- kernels/io.cu ---- */
int hci_cu_check_finite(cudaStream_t s, const void *x, int bf16, int64_t count, int *flag_dev);
int hci_cu_to_bf16(cudaStream_t s, const void *x, int bf16, int64_t count, uint16_t *out);
int hci_cu_from_bf16(cudaStream_t s, const uint16_t *x, int bf16, int64_t count, void *out);
int hci_cu_bf16_to_f64(cudaStream_t s, const uint16_t *x, int64_t count, double *out);
/* Pack rows [n][dim] (bf16) into entries first_entry.. of a page list (format.h layout). */
int hci_cu_pack_rows(cudaStream_t s, const hci_entry_layout *l, uint8_t *const *pages, const uint16_t *rows,
                     int n, int64_t first_entry, int64_t modulo);

/* ---- kernels/qkv.cu ---- */
/* Weighted RMSNorm of n bf16 rows of `dim` in place (fp32 inside, the sum of squares in double). */
int hci_cu_rmsnorm_rows(cudaStream_t s, uint16_t *v, int n, int dim, const float *w, float eps);
/* Per head: the weightless bf16 RMS norm, then RoPE on the last rope_dim dims at pos0 + t. */
int hci_cu_q_heads(cudaStream_t s, uint16_t *q, int n, int H, int d, int rope_dim, const float *freq,
                   int64_t pos0, float eps);
/* RoPE on the last rope_dim dims, then the FP8 simulation (64-blocks) of the others. */
int hci_cu_kv_rows(cudaStream_t s, uint16_t *kv, int n, int d, int rope_dim, const float *freq, int64_t pos0);
/* Indexer queries in place: RoPE, Hadamard, FP4 simulation; head weights: bf16((float)wd) * wscale. */
int hci_cu_index_q_heads(cudaStream_t s, uint16_t *qi, int n, int IH, int ID, int rope_dim, const float *freq,
                         int64_t pos0, const double *wd, float wscale, uint16_t *w);
/* Inverse RoPE of every head's last rope_dim dims at the query position. */
int hci_cu_inverse_rope(cudaStream_t s, uint16_t *o, int n, int H, int d, int rope_dim, const float *freq,
                        int64_t pos0);

/* ---- kernels/compress.cu ---- */
struct hci_cu_comp_args {
    int ratio, coff, dc, rope_dim, rotate;
    int64_t pos0;
    int n;
    const double *proj;  /* [n][2*coff*dc]: kv projections then gate projections, in double */
    const float *ape;    /* [ratio][coff*dc] */
    const float *norm;   /* [dc] */
    const float *freq;   /* RoPE frequencies of the layer */
    float eps;
    float *state_kv, *state_score;   /* [coff*ratio][coff*dc] */
    float *A, *Z;        /* scratch [n][coff*dc] each */
    float *new_kv, *new_score;       /* scratch of the state's size */
    hci_entry_layout l;
    uint8_t *const *pages;
};
int hci_cu_compress(cudaStream_t s, const hci_cu_comp_args *a);

#endif
