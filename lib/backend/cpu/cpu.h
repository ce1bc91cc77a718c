/* cpu.h - private interface of the CPU backend: the reference implementation of every op. */
#ifndef HCI_CPU_H
#define HCI_CPU_H
#include "../backend.h"
#include "../../model/model.h"
#include "../../util/threadpool.h"

typedef struct hci_cpu {
    hci_pool *pool;
} hci_cpu;

static inline hci_pool *hci_cpu_pool(hci_backend *be) { return ((hci_cpu *)be->impl)->pool; }

/* y[t][r] = bf16(sum over 128-blocks kb of fl32(dot(q_t, w_r)) * fl32(s_t[kb] * s_w[r/128][kb]))
 * with q_t the e4m3 activation quantization of x[t] (1x128 blocks). x and y row-major with
 * leading dimensions ldx / ldy (elements). */
int hci_cpu_linear_fp8(hci_pool *pool, const hci_fp8_mat *W, int n, const uint16_t *x, int ldx,
                       uint16_t *y, int ldy);
/* y[t][r] = dot(x[t], w_r) over bf16 weights, accumulated exactly-ordered; result as fp32
 * (yf) or rounded to bf16 (yb); one of the two is NULL. x holds bf16 bits. */
int hci_cpu_linear_bf16(hci_pool *pool, const hci_bf16_mat *W, int n, const uint16_t *x, int ldx,
                        float *yf, uint16_t *yb, int ldy);

int hci_cpu_q_path(hci_backend *be, int layer, int n, int64_t pos0, const uint16_t *x, uint16_t *c,
                   uint16_t *q);
int hci_cpu_kv_path(hci_backend *be, int layer, int n, int64_t pos0, const uint16_t *x, uint16_t *kv);
int hci_cpu_index_q(hci_backend *be, int layer, int n, int64_t pos0, const uint16_t *x,
                    const uint16_t *c, uint16_t *qi, uint16_t *w);
int hci_cpu_compress(hci_backend *be, int layer, int which, hci_comp_cache *cc, int n, int64_t pos0,
                     const uint16_t *x);
int hci_cpu_index_topk(hci_backend *be, int layer, const hci_comp_cache *idx, int n, int64_t pos0,
                       const uint16_t *qi, const uint16_t *w, int32_t *sel);
int hci_cpu_attend(hci_backend *be, int layer, const hci_layer_cache *lc, int n, int64_t pos0,
                   const uint16_t *q, const uint16_t *kv, const int32_t *sel, uint16_t *o);
int hci_cpu_window_write(hci_backend *be, hci_layer_cache *lc, int n, int64_t pos0, const uint16_t *kv);
int hci_cpu_out_path(hci_backend *be, int layer, int n, int64_t pos0, uint16_t *o, uint16_t *y);

#endif
