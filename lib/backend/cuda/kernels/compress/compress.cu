/* compress.cu - the compressors on the GPU, arithmetic identical to lib/backend/cpu/cpu_compress.c:
 * fp32 projections (from the double GEMM), ape added to the scores, per-channel softmax pooling
 * over the candidate rows in the CPU's order, bf16 cast, RMSNorm, RoPE at m*j, then FP8 (main) or
 * Hadamard + FP4 (indexer), packed into the entry's page; then the state for the next piece. */
#include "../common.cuh"
#include "compress.h"
#include "config.h"

struct rows_view {
    int ratio, coff, w2;
    int64_t P;           /* first position of the piece */
    const float *A, *Z;  /* piece rows */
    const float *skv, *ssc;
};

/* The (kv, score) row of token t: from the piece or from the state before it; false for t < 0. */
__device__ __forceinline__ bool get_row(const rows_view &r, int64_t t, const float *&kv, const float *&sc)
{
    if (t < 0) return false;
    if (t >= r.P) {
        kv = r.A + (size_t)(t - r.P) * r.w2;
        sc = r.Z + (size_t)(t - r.P) * r.w2;
        return true;
    }
    int m = r.ratio;
    int64_t cur = r.P / m * m;
    int64_t row = r.coff == 2 ? (t >= cur ? m + (t - cur) : t - (cur - m)) : t - cur;
    kv = r.skv + (size_t)row * r.w2;
    sc = r.ssc + (size_t)row * r.w2;
    return true;
}

__device__ __forceinline__ int64_t cand_pos(int coff, int m, int64_t j, int i)
{
    return coff == 2 ? (i < m ? m * j - m + i : m * j + (i - m)) : m * j + i;
}

__global__ void prep_kernel(const double *proj, const float *ape, int64_t pos0, int n, int ratio, int w2,
                            float *A, float *Z)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)n * w2) return;
    int64_t t = i / w2;
    int c = (int)(i % w2);
    A[i] = (float)proj[(size_t)t * 2 * w2 + c];
    Z[i] = __fadd_rn((float)proj[(size_t)t * 2 * w2 + w2 + c], ape[(size_t)((pos0 + t) % ratio) * w2 + c]);
}

/* One CTA per emitted entry, one thread per output channel. */
__global__ void emit_kernel(rows_view r, int dc, int rope_dim, int rotate, const float *norm, const float *freq,
                            float eps, float hscale, int64_t j0, hci_entry_layout l, uint8_t *const *pages)
{
    extern __shared__ float v[];
    __shared__ double red[CP_EMIT_MAX_THREADS];
    int64_t j = j0 + blockIdx.x;
    int m = r.ratio, R = r.coff * m;
    for (int c = threadIdx.x; c < dc; c += blockDim.x) {
        const float *kv, *sc;
        float mx = -INFINITY;
        for (int i = 0; i < R; i++)
            if (get_row(r, cand_pos(r.coff, m, j, i), kv, sc)) mx = fmaxf(mx, sc[(r.coff == 2 && i >= m ? dc : 0) + c]);
        float sum = 0.0f;
        for (int i = 0; i < R; i++)
            if (get_row(r, cand_pos(r.coff, m, j, i), kv, sc))
                sum = __fadd_rn(sum, expf(__fsub_rn(sc[(r.coff == 2 && i >= m ? dc : 0) + c], mx)));
        float acc = 0.0f;
        for (int i = 0; i < R; i++)
            if (get_row(r, cand_pos(r.coff, m, j, i), kv, sc)) {
                int off = (r.coff == 2 && i >= m ? dc : 0) + c;
                float e = expf(__fsub_rn(sc[off], mx));
                acc = __fadd_rn(acc, __fmul_rn(kv[off], __fdiv_rn(e, sum)));
            }
        v[c] = hci_round_bf16(acc);
    }
    __syncthreads();
    double ss = 0.0;
    for (int c = threadIdx.x; c < dc; c += blockDim.x) ss += (double)__fmul_rn(v[c], v[c]);
    ss = hci_dev_block_sum(ss, red);
    float var = __fdiv_rn((float)ss, (float)dc);
    float rs = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(var, eps)));
    for (int c = threadIdx.x; c < dc; c += blockDim.x) v[c] = hci_round_bf16(__fmul_rn(norm[c], __fmul_rn(v[c], rs)));
    __syncthreads();
    hci_dev_rope_tail(v, dc, rope_dim, freq, (int64_t)m * j, 0);
    __syncthreads();
    if (rotate) {
        hci_dev_hadamard(v, dc, hscale);
        hci_dev_quant_sim(v, dc, 1);
    } else {
        hci_dev_quant_sim(v, dc - rope_dim, 0);
    }
    __syncthreads();
    hci_dev_pack_entry(l, pages[j / HCI_PAGE_ENTRIES], (int)(j % HCI_PAGE_ENTRIES), v);
}

/* The state rows after the piece: previous complete block (overlap) and the current partial one. */
__global__ void state_kernel(rows_view r, int64_t end, float *nkv, float *nsc)
{
    int m = r.ratio, rows = r.coff * m;
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (int64_t)rows * r.w2) return;
    int row = (int)(i / r.w2), c = (int)(i % r.w2);
    int64_t cur = end / m * m;
    int64_t t = r.coff == 2 ? (row < m ? cur - m + row : cur + (row - m)) : cur + row;
    const float *kv, *sc;
    if (t < end && get_row(r, t, kv, sc)) {
        nkv[i] = kv[c];
        nsc[i] = sc[c];
    } else {
        nkv[i] = 0.0f;
        nsc[i] = -INFINITY;
    }
}

int hci_cu_compress(cudaStream_t s, const hci_cu_comp_args *a)
{
    int w2 = a->coff * a->dc;
    int64_t n_el = (int64_t)a->n * w2;
    if (a->n <= 0) return HC_OK;
    prep_kernel<<<(unsigned)((n_el + CP_THREADS - 1) / CP_THREADS), CP_THREADS, 0, s>>>(a->proj, a->ape, a->pos0, a->n,
                                                                                       a->ratio, w2, a->A, a->Z);
    if (HCI_CU_CHECK_LAUNCH() != HC_OK) return HC_ERR_CUDA;
    if (a->log_cap > 0) { /* the rows as the state keeps them, into the rollback history */
        int64_t t1 = a->pos0 + a->n, t0 = t1 - a->log_cap;
        if (t0 < a->pos0) t0 = a->pos0;
        if (t0 < a->log_from) t0 = a->log_from;
        for (int64_t t = t0; t < t1;) {
            int64_t slot = t % a->log_cap, k = t1 - t < a->log_cap - slot ? t1 - t : a->log_cap - slot;
            size_t dst = (size_t)slot * w2, src = (size_t)(t - a->pos0) * w2, bytes = (size_t)k * w2 * sizeof(float);
            if (cudaMemcpyAsync(a->log_kv + dst, a->A + src, bytes, cudaMemcpyDeviceToDevice, s) ||
                cudaMemcpyAsync(a->log_score + dst, a->Z + src, bytes, cudaMemcpyDeviceToDevice, s))
                return HC_ERR_CUDA;
            t += k;
        }
    }
    rows_view r = {a->ratio, a->coff, w2, a->pos0, a->A, a->Z, a->state_kv, a->state_score};
    int64_t j0 = a->pos0 / a->ratio, j1 = (a->pos0 + a->n) / a->ratio;
    int threads = a->dc < CP_EMIT_MAX_THREADS ? ((a->dc + 31) / 32) * 32 : CP_EMIT_MAX_THREADS;
    if (threads < CP_EMIT_MIN_THREADS) threads = CP_EMIT_MIN_THREADS;
    /* hci_dev_block_sum needs a power-of-two block */
    int p2 = CP_EMIT_MIN_THREADS;
    while (p2 < threads) p2 *= 2;
    if (j1 > j0) {
        float hscale = (float)(1.0 / sqrt((double)a->dc));
        emit_kernel<<<(unsigned)(j1 - j0), p2, (size_t)a->dc * sizeof(float), s>>>(
            r, a->dc, a->rope_dim, a->rotate, a->norm, a->freq, a->eps, hscale, j0, a->l, a->pages);
        if (HCI_CU_CHECK_LAUNCH() != HC_OK) return HC_ERR_CUDA;
    }
    int64_t st_el = (int64_t)a->coff * a->ratio * w2;
    state_kernel<<<(unsigned)((st_el + CP_THREADS - 1) / CP_THREADS), CP_THREADS, 0, s>>>(r, a->pos0 + a->n, a->new_kv,
                                                                                          a->new_score);
    if (HCI_CU_CHECK_LAUNCH() != HC_OK) return HC_ERR_CUDA;
    if (cudaMemcpyAsync(a->state_kv, a->new_kv, (size_t)st_el * sizeof(float), cudaMemcpyDeviceToDevice, s) ||
        cudaMemcpyAsync(a->state_score, a->new_score, (size_t)st_el * sizeof(float), cudaMemcpyDeviceToDevice, s))
        return HC_ERR_CUDA;
    return HC_OK;
}
