/* cuda_fused.cu - option decode_fused: the projections of a small piece (q_path, kv_path,
 * index_q and the compressors' projections: backend.h proj_in, and a batch's share_in) in six
 * launches instead of sixteen (a CSA layer):
 *
 *   1. act_quant of x, once for wq_a and wkv (the separate ops quantize the same x twice);
 *   2. [wq_a; wkv] over it: one grouped FP8 GEMV (kernels/gemv, a segment per weight);
 *   3. the indexer's head weights and the two compressors' projections over x: one grouped bf16
 *      launch (comp_fast: the few-token GEMM; EXACT: the double GEMV);
 *   4. RMSNorm of c with its act_quant, and the window KV's RMSNorm, RoPE and FP8 simulation: one
 *      launch (kernels/qkv hci_cu_ckv_rows; the separate ops quantize c twice too);
 *   5. [wq_b; indexer wq_b] over c: one grouped FP8 GEMV;
 *   6. the query heads and the indexer heads: one launch (hci_cu_q_index_heads).
 *
 * Each output row goes through the same operations in the same order as in the separate kernels
 * (the grouped kernels run the one-weight kernels' code per segment; the fused element-wise
 * kernels the same device functions), so the results are bitwise those of the separate ops, and
 * batch-invariant as they are. That holds only where the separate ops take these kernels:
 * hci_cu_fused_ok. */
#include "cuda_internal.h"
#include "device.h"
#include "hybridctx.h"

int hci_cu_comp_width(hci_backend *be, int which)
{
    const hci_config *cf = &be->model->cfg;
    int w = 0;
    for (int l = 0; l < cf->n_layers; l++) {
        int r = cf->ratios[l];
        if (!r || (which && r != 4)) continue;
        const hci_cu_comp &c = which ? hci_cu_lw(be, l).idx_comp : hci_cu_lw(be, l).comp;
        if (2 * c.coff * c.dc > w) w = 2 * c.coff * c.dc;
    }
    return w;
}

int hci_cu_fused_ok(hci_backend *be, int layer, int n)
{
    const hci_cu_options &o = hci_cu(be)->opt;
    const hci_cu_layer &L = hci_cu_lw(be, layer);
    const int ratio = be->model->cfg.ratios[layer];
    if (!o.decode_fused || n < 1 || n > HCI_CU_ROWS_MAX) return 0;
    /* the previous fast kernels (gemv_teams off) are kept for comparisons: not grouped */
    if ((o.gemv_fast || o.comp_fast) && !o.gemv_teams) return 0;
    /* FP8 (hci_cu_linear_fp8): the fast GEMV up to 64 rows where every weight's rows are whole
     * row groups, else the exact GEMV up to 16; beyond, the GEMMs */
    if (o.gemv_fast) {
        if (n > HCI_CU_GEMV_FAST_MAX_N) return 0;
        if (L.wq_a.rows % GT_ROWS || L.wkv.rows % GT_ROWS || L.wq_b.rows % GT_ROWS ||
            (ratio == 4 && L.idx_wq_b.rows % GT_ROWS))
            return 0;
    } else if (n > HCI_CU_GEMV_MAX_N) {
        return 0;
    }
    /* the bf16 projections over x: comp_fast's GEMM (any kernel of it gives the few-token
     * kernel's bits) up to its 64, else the double GEMV up to 16 */
    if (ratio && n > (o.comp_fast ? GP_MAX_N : HCI_CU_GEMV_MAX_N)) return 0;
    return 1;
}

size_t hci_cu_fused_scratch_bytes(hci_backend *be, int n)
{
    const hci_config *cf = &be->model->cfg;
    if (!hci_cu(be)->opt.decode_fused || n < 1) return 0;
    if (n > HCI_CU_ROWS_MAX) n = HCI_CU_ROWS_MAX;
    return hci_cu_fp8_scratch_bytes(n, cf->dim) + hci_cu_fp8_scratch_bytes(n, cf->q_lora_rank);
}

/* The kept projections of `rows` rows: head weights [rows][IH], then the main and the indexer
 * compressors' [rows][widest of the model's layers], doubles, each part 256-byte aligned. */
struct fused_layout {
    size_t wd, proj[2], bytes;
};
static fused_layout fused_plan(hci_backend *be, int rows)
{
    const hci_config *cf = &be->model->cfg;
    fused_layout L;
    L.wd = 0;
    L.proj[0] = hci_align256((size_t)rows * cf->index_n_heads * 8);
    L.proj[1] = L.proj[0] + hci_align256((size_t)rows * hci_cu_comp_width(be, 0) * 8);
    L.bytes = L.proj[1] + hci_align256((size_t)rows * hci_cu_comp_width(be, 1) * 8);
    return L;
}

int hci_cu_fused_reserve(hci_backend *be, int rows)
{
    hci_cuda *cu = hci_cu(be);
    if (rows > HCI_CU_ROWS_MAX) rows = HCI_CU_ROWS_MAX;
    if (rows <= cu->fused_rows) return HC_OK;
    hci_cu_device_guard g(cu->device);
    void *p = nullptr;
    size_t bytes = fused_plan(be, rows).bytes;
    HCI_CU_TRY(be, cudaStreamSynchronize(cu->stream)); /* the old buffer's last readers */
    HCI_CU_TRY(be, cudaMalloc(&p, bytes));
    cudaFree(cu->fused);
    cu->fused = p;
    cu->fused_bytes = bytes;
    cu->fused_rows = rows;
    return HC_OK;
}

const double *hci_cu_fused_proj(hci_backend *be, int which)
{
    hci_cuda *cu = hci_cu(be);
    return (const double *)((char *)cu->fused + fused_plan(be, cu->fused_rows).proj[which ? 1 : 0]);
}

/* A launcher's status: a refused shape is the backend's mistake (hci_cu_fused_ok admits only what
 * the kernels take), a failed launch a CUDA error. */
static int launched(hci_backend *be, int st, const char *what)
{
    if (st == HC_ERR_CUDA) return hci_cu_fail(be, cudaGetLastError(), what);
    if (st) return hci_errf(be->err, be->errsz, HC_ERR_INTERNAL, "%s: a shape the kernel does not take", what);
    return HC_OK;
}

static hci_cu_seg fp8_seg(const hci_cu_fp8 &W, uint16_t *y, int ldy) { return {W.w, W.scale, W.sld, W.rows, y, ldy}; }
static hci_cu_seg bf16_seg(const hci_cu_bf16 &W, double *y, int ldy) { return {W.w, nullptr, 0, W.rows, y, ldy}; }

/* The FP8 GEMVs of n rows over one quantized input, as hci_cu_linear_fp8 would pick them. */
static int fp8_grouped(hci_backend *be, const hci_cu_seg *seg, int nseg, int K, const uint8_t *xq, const float *xs,
                       int np, int n)
{
    hci_cuda *cu = hci_cu(be);
    if (cu->opt.gemv_fast)
        return launched(be, hci_cu_gemv_fp8_fast_grouped(cu->stream, seg, nseg, K, xq, xs, np, n, 0), "gemv_fp8_fast_grouped");
    return launched(be, hci_cu_gemv_fp8_grouped(cu->stream, seg, nseg, K, xq, xs, np, n), "gemv_fp8_grouped");
}

int hci_cu_proj_in_rows(hci_backend *be, int layer, int n, int64_t pos0, const int64_t *pos, const uint16_t *x,
                        uint16_t *c, uint16_t *q, uint16_t *kv, uint16_t *qi, uint16_t *w, double *wd, double *proj0,
                        double *proj1)
{
    hci_cuda *cu = hci_cu(be);
    const hci_config *cf = &be->model->cfg;
    const hci_cu_layer &L = hci_cu_lw(be, layer);
    const int ratio = cf->ratios[layer], D = cf->dim, C = cf->q_lora_rank, d = cf->head_dim, H = cf->n_heads;
    const int IH = cf->index_n_heads, ID = cf->index_head_dim, np = (n + 15) & ~15;
    const float *freq = ratio ? cu->w->rope_comp : cu->w->rope_swa, eps = (float)cf->norm_eps;
    /* scratch: the FP8 operands of x and c, each as hci_cu_linear_fp8 lays its own out */
    uint8_t *xq = (uint8_t *)cu->scratch, *cq = xq + hci_cu_fp8_scratch_bytes(n, D);
    float *xs = (float *)(xq + hci_align256((size_t)np * D)), *cs = (float *)(cq + hci_align256((size_t)np * C));
    KTRY(be, hci_cu_act_quant(cu->stream, x, D, n, np, D, xq, xs));
    const hci_cu_seg a[2] = {fp8_seg(L.wq_a, c, C), fp8_seg(L.wkv, kv, d)};
    int st = fp8_grouped(be, a, 2, D, xq, xs, np, n);
    if (st) return st;
    /* the projections of x on bf16 weights: index_q's head weights and comp_project's */
    hci_cu_seg b[3];
    int nb = 0;
    if (ratio == 4) {
        b[nb++] = bf16_seg(L.idx_wproj16, wd, IH);
        b[nb++] = bf16_seg(L.idx_comp.wkvg16, proj1, 2 * L.idx_comp.coff * L.idx_comp.dc);
    }
    if (ratio) b[nb++] = bf16_seg(L.comp.wkvg16, proj0, 2 * L.comp.coff * L.comp.dc);
    if (nb && cu->opt.comp_fast) st = launched(be, hci_cu_gemm_bf16_few_grouped(cu->stream, b, nb, D, x, D, n), "gemm_bf16_few_grouped");
    else if (nb) st = launched(be, hci_cu_gemv_bf16_grouped(cu->stream, b, nb, D, x, D, n), "gemv_bf16_grouped");
    if (st) return st;
    KTRY(be, hci_cu_ckv_rows(cu->stream, c, n, C, L.q_norm, cq, cs, np, kv, d, cf->rope_dim, L.kv_norm, freq, pos0, pos,
                             eps));
    const hci_cu_seg e[2] = {fp8_seg(L.wq_b, q, H * d), fp8_seg(L.idx_wq_b, qi, IH * ID)};
    if ((st = fp8_grouped(be, e, ratio == 4 ? 2 : 1, C, cq, cs, np, n))) return st;
    if (ratio != 4) {
        KTRY(be, hci_cu_q_heads(cu->stream, q, n, H, d, cf->rope_dim, freq, pos0, pos, eps));
        return HC_OK;
    }
    KTRY(be, hci_cu_q_index_heads(cu->stream, q, n, H, d, cf->rope_dim, freq, pos0, pos, eps, qi, IH, ID, wd,
                                  hci_cu_index_wscale(cf), w));
    return HC_OK;
}

int hci_cu_proj_in_ok(hci_backend *be, int layer, int n)
{
    return hci_cu_fused_ok(be, layer, n) && n <= hci_cu(be)->fused_rows;
}

int hci_cu_proj_in(hci_backend *be, int layer, int n, int64_t pos0, const uint16_t *x, uint16_t *c, uint16_t *q,
                   uint16_t *kv, uint16_t *qi, uint16_t *w)
{
    hci_cuda *cu = hci_cu(be);
    hci_cu_device_guard g(cu->device);
    if (!hci_cu_proj_in_ok(be, layer, n))
        return hci_errf(be->err, be->errsz, HC_ERR_INTERNAL, "proj_in: a piece of %d tokens it does not take", n);
    fused_layout F = fused_plan(be, cu->fused_rows);
    char *b = (char *)cu->fused;
    return hci_cu_proj_in_rows(be, layer, n, pos0, nullptr, x, c, q, kv, qi, w, (double *)(b + F.wd),
                               (double *)(b + F.proj[0]), (double *)(b + F.proj[1]));
}
