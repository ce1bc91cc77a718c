/* attend/attend.h - the attention family: sparse attention with the per-head sink over the
 * window slots and the compressed entries, split-KV for small launches (attend.cu). */
#ifndef HCI_KERNELS_ATTEND_H
#define HCI_KERNELS_ATTEND_H
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>
#include "config.h"
extern "C" {
#include "cache/format.h"
}

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
/* Kernels of hci_cu_attend. FAST falls back to MMA where it does not apply (d != 512, heads not
 * in groups of 64, other entry layouts, not sm_90); PINGPONG is FAST by attend_pingpong.cu, and
 * falls back to FAST's kernel where that does not apply (a window not a multiple of 64 entries). */
enum { HCI_AT_MMA = 0, HCI_AT_SIMPLE = 1, HCI_AT_FAST = 2, HCI_AT_PINGPONG = 3 };
/* Scratch bytes of hci_cu_attend for pieces of up to n queries with rows of up to max_row entries
 * on the given path. */
size_t hci_cu_attend_scratch_bytes(int n, int H, int d, int64_t max_row, int path);
/* Query t's index row: W window slots (positions max(0,t-W+1)..t ascending, then -1), then the
 * compressed part (sel row, or entries 0..(t+1)/128-1); o = softmax over the row with the
 * per-head sink in the denominator, times the entries (as in docs/numerics.md). MMA: the
 * mma.sync kernel for d in {64, 128, 256, 512}, the fp32 FMA kernel for any other d; SIMPLE: the
 * fp32 kernel for every d (a cross-check; the two agree within rounding); FAST: the wgmma kernel
 * (attend_wgmma.cu), whose row splits depend only on the row and the piece size class, so that
 * a decode row's output does not depend on its batch; PINGPONG: FAST's splits and arithmetic
 * by the ping-pong wgmma kernel (attend_pingpong.cu; within rounding of FAST's). */
int hci_cu_attend(cudaStream_t s, const hci_cu_attn_args *a, void *scratch, int path);

#endif
