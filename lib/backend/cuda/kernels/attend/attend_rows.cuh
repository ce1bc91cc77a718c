/* attend/attend_rows.cuh - what the attention kernels share (attend.cu: mma.sync and fp32 paths,
 * attend_wgmma.cu: the fast path): a query's index row (window slots, then the compressed
 * part) resolved entry by entry, the blocks of a split, and where split partials go. */
#ifndef HCI_KERNELS_ATTEND_ROWS_CUH
#define HCI_KERNELS_ATTEND_ROWS_CUH
#include <stdint.h>
#include "../common.cuh"
#include "attend.h"
#include "config.h"

namespace hci_at {

struct at_desc {
    const uint8_t *data;   /* the entry's values: bf16 row, or e4m3 codes then bf16 rope */
    const uint8_t *scales; /* ue8m0 exponents (fp8 entries) */
    int kind;              /* 0 padding, 1 bf16, 2 fp8 ring (win_l), 3 fp8 compressed (comp_l) */
    int pad;
};

/* Entries of query i's row and the row length. */
__device__ __forceinline__ int64_t at_ncomp(const hci_cu_attn_args &a, int64_t t)
{
    return a.ratio == 4 ? a.K : (a.ratio ? (t + 1) / a.ratio : 0);
}

/* Position of window slot u of query t's row (positions max(0, t-W+1) .. t ascending), or -1
 * past t. */
__device__ __forceinline__ int64_t at_window_pos(const hci_cu_attn_args &a, int64_t t, int64_t u)
{
    int64_t first = t - a.window + 1 > 0 ? t - a.window + 1 : 0, p = first + u;
    return p > t ? -1 : p;
}

/* Entry j of a page table of layout l; fp8_kind is the kind of an fp8 entry (2 ring, 3 compressed). */
__device__ __forceinline__ at_desc at_entry(const hci_entry_layout &l, uint8_t *const *pages, int64_t j, int fp8_kind)
{
    const uint8_t *page = pages[j / HCI_PAGE_ENTRIES];
    const int slot = (int)(j % HCI_PAGE_ENTRIES);
    at_desc e;
    e.data = page + (size_t)slot * l.data_bytes;
    e.scales = page + (size_t)HCI_PAGE_ENTRIES * l.data_bytes + (size_t)slot * l.scale_bytes;
    e.kind = l.fmt == HCI_FMT_BF16 ? 1 : fp8_kind;
    e.pad = 0;
    return e;
}

__device__ __forceinline__ at_desc at_resolve(const hci_cu_attn_args &a, int i, int64_t t, int64_t u, int64_t ncomp)
{
    at_desc e = {nullptr, nullptr, 0, 0};
    if (u < a.window) {
        const int64_t p = at_window_pos(a, t, u);
        if (p < 0) return e;
        if (p >= a.pos0) {
            e.data = (const uint8_t *)(a.kv + (size_t)(p - a.pos0) * a.d);
            e.kind = 1;
            return e;
        }
        return at_entry(a.win_l, a.ring, p % a.window, 2);
    }
    const int64_t c = u - a.window;
    if (c >= ncomp) return e;
    const int64_t j = a.ratio == 4 ? a.sel[(size_t)i * a.K + c] : c;
    return j < 0 ? e : at_entry(a.comp_l, a.comp, j, 3);
}

/* Bytes of the split partials (at_out) for S splits of n queries: pm, pl, then pacc. */
__host__ __device__ inline size_t at_part_bytes(int S, int n, int H, int d)
{
    const size_t rows = (size_t)S * n * H;
    return 2 * hci_align256(rows * 4) + hci_align256(rows * (size_t)d * 4);
}

/* Rows of the split: blocks [b0, b1) of query i's row. */
struct at_range {
    int64_t t, ncomp, len, b0, b1;
};

__device__ __forceinline__ at_range at_split_range(const hci_cu_attn_args &a, int i, int s, int bps)
{
    at_range r;
    r.t = a.pos0 + i;
    r.ncomp = at_ncomp(a, r.t);
    r.len = a.window + r.ncomp;
    int64_t nblk = (r.len + AT_BLK - 1) / AT_BLK;
    r.b0 = (int64_t)s * bps;
    r.b1 = r.b0 + bps < nblk ? r.b0 + bps : nblk;
    return r;
}

struct at_out {
    int S;          /* splits; 1 writes o directly */
    int bps;        /* blocks per split */
    float *pm, *pl; /* [S][n][H] */
    float *pacc;    /* [S][n][H][d] */
};

/* The fast path (attend_wgmma.cu): d = 512, 64-head groups, Hopper. at_fast_ok says whether it
 * takes these arguments on the current device; at_fast_launch runs it (HC_OK, HC_ERR_CUDA, or
 * HC_ERR_NULL_ARG without pre: the 256-byte-aligned scratch of the rows its pre-pass
 * dequantises once per piece for ratio 0 and 128, window + compressed entries of d bf16). */
bool at_fast_ok(const hci_cu_attn_args &a);
int at_fast_launch(cudaStream_t s, const hci_cu_attn_args &a, const at_out &out, void *pre);
/* Its ping-pong kernel (attend_pingpong.cu, option attend_pingpong): the same shapes where the
 * window is a whole number of blocks; the same splits and partials; pre is required for every
 * ratio (the window's ring rows are dequantised ahead for CSA too). */
bool at_pp_ok(const hci_cu_attn_args &a);
int at_pp_launch(cudaStream_t s, const hci_cu_attn_args &a, const at_out &out, void *pre);

} // namespace hci_at

#endif
