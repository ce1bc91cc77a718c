/* cpu_linear.c - FP8 block-scaled and bf16 projections on the CPU, in an exact, fixed order:
 * every output element is computed by one thread the same way whatever the thread count. */
#include <stdlib.h>
#include <string.h>
#include "cpu.h"
#include "hybridctx.h"
#include "../../util/numerics.h"

#define TOK_TILE 32
#define ROW_TILE 16

typedef struct fp8_job {
    const hci_fp8_mat *W;
    int n, nkb;
    const float *af;     /* [n][cols] decoded e4m3 activation codes */
    const float *as;     /* [n][nkb] activation scales */
    uint16_t *y;
    int ldy;
} fp8_job;

static void fp8_rows(void *arg, int64_t lo, int64_t hi, int tid)
{
    (void)tid;
    fp8_job *j = arg;
    const hci_fp8_mat *W = j->W;
    int cols = W->cols, sc = (cols + 127) / 128;
    float wf[128];
    for (int64_t r0 = lo * ROW_TILE; r0 < hi * ROW_TILE && r0 < W->rows; r0++) {
        const uint8_t *wr = W->w + (size_t)r0 * cols;
        const float *ws = W->scale + (size_t)(r0 / 128) * sc;
        for (int t0 = 0; t0 < j->n; t0 += TOK_TILE) {
            int tn = j->n - t0 < TOK_TILE ? j->n - t0 : TOK_TILE;
            float acc[TOK_TILE] = {0};
            for (int kb = 0; kb < j->nkb; kb++) {
                hci_e4m3_decode_n(wr + (size_t)kb * 128, 128, wf);
                for (int t = 0; t < tn; t++) {
                    const float *a = j->af + (size_t)(t0 + t) * cols + (size_t)kb * 128;
                    float partial = (float)hci_dot_exact_f32(a, wf, 128);
                    float s = j->as[(size_t)(t0 + t) * j->nkb + kb] * ws[kb];
                    acc[t] += partial * s;
                }
            }
            for (int t = 0; t < tn; t++) j->y[(size_t)(t0 + t) * j->ldy + r0] = hci_bf16_from_f32(acc[t]);
        }
    }
}

typedef struct quant_job {
    const uint16_t *x;
    int ldx, cols, nkb;
    float *af, *as;
} quant_job;

static void quant_rows(void *arg, int64_t lo, int64_t hi, int tid)
{
    (void)tid;
    quant_job *j = arg;
    uint8_t codes[128];
    for (int64_t t = lo; t < hi; t++)
        for (int kb = 0; kb < j->nkb; kb++) {
            size_t off = (size_t)t * j->ldx + (size_t)kb * 128;
            hci_act_quant_fp8(j->x + off, 128, codes, j->as + (size_t)t * j->nkb + kb);
            hci_e4m3_decode_n(codes, 128, j->af + (size_t)t * j->cols + (size_t)kb * 128);
        }
}

int hci_cpu_linear_fp8(hci_pool *pool, const hci_fp8_mat *W, int n, const uint16_t *x, int ldx,
                       uint16_t *y, int ldy)
{
    int nkb = W->cols / 128;
    float *af = malloc((size_t)n * W->cols * sizeof(float));
    float *as = malloc((size_t)n * nkb * sizeof(float));
    if (!af || !as) {
        free(af), free(as);
        return HC_ERR_OUT_OF_MEMORY;
    }
    quant_job q = {x, ldx, W->cols, nkb, af, as};
    hci_pool_for(pool, n, 4, quant_rows, &q);
    fp8_job j = {W, n, nkb, af, as, y, ldy};
    hci_pool_for(pool, (W->rows + ROW_TILE - 1) / ROW_TILE, 1, fp8_rows, &j);
    free(af), free(as);
    return HC_OK;
}

typedef struct bf16_job {
    const hci_bf16_mat *W;
    int n;
    const float *xf;  /* [n][cols] */
    float *yf;
    uint16_t *yb;
    int ldy;
} bf16_job;

static void bf16_rows(void *arg, int64_t lo, int64_t hi, int tid)
{
    (void)tid;
    bf16_job *j = arg;
    int cols = j->W->cols;
    float wf[128];
    for (int64_t r = lo * ROW_TILE; r < hi * ROW_TILE && r < j->W->rows; r++) {
        const uint16_t *wr = j->W->w + (size_t)r * cols;
        for (int t0 = 0; t0 < j->n; t0 += TOK_TILE) {
            int tn = j->n - t0 < TOK_TILE ? j->n - t0 : TOK_TILE;
            double acc[TOK_TILE] = {0};
            for (int k0 = 0; k0 < cols; k0 += 128) {
                int kn = cols - k0 < 128 ? cols - k0 : 128;
                hci_bf16_decode_n(wr + k0, kn, wf);
                for (int t = 0; t < tn; t++)
                    acc[t] += hci_dot_exact_f32(j->xf + (size_t)(t0 + t) * cols + k0, wf, kn);
            }
            for (int t = 0; t < tn; t++) {
                size_t o = (size_t)(t0 + t) * j->ldy + r;
                if (j->yf) j->yf[o] = (float)acc[t];
                else j->yb[o] = hci_bf16_from_f32((float)acc[t]);
            }
        }
    }
}

int hci_cpu_linear_bf16(hci_pool *pool, const hci_bf16_mat *W, int n, const uint16_t *x, int ldx,
                        float *yf, uint16_t *yb, int ldy)
{
    float *xf = malloc((size_t)n * W->cols * sizeof(float));
    if (!xf) return HC_ERR_OUT_OF_MEMORY;
    for (int t = 0; t < n; t++) hci_bf16_decode_n(x + (size_t)t * ldx, W->cols, xf + (size_t)t * W->cols);
    bf16_job j = {W, n, xf, yf, yb, ldy};
    hci_pool_for(pool, (W->rows + ROW_TILE - 1) / ROW_TILE, 1, bf16_rows, &j);
    free(xf);
    return HC_OK;
}
