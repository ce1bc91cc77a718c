/* index/index_fast.h - the indexer's fast scores (HC_NUMERICS_FAST, option index_fast): e4m3
 * tensor-core dots with the reference's roundings after them and an fp32 head sum, written as the
 * same 16-bit score keys and high-byte histograms that the exact score kernel of index.cu writes,
 * so that its selection kernels run unchanged (index_fast.cu). */
#ifndef HCI_KERNELS_INDEX_FAST_H
#define HCI_KERNELS_INDEX_FAST_H
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>
extern "C" {
#include "cache/format.h"
}

/* Whether the fast scores take this index cache and head shape: FP4 keys in the fp8 page format,
 * index_head_dim 128, a multiple of 8 heads up to 64. Others take the exact path. */
bool hci_cu_index_fast_ok(const hci_entry_layout *l, int IH, int ID);
/* Bytes per query row of the prepared queries (e4m3 rows, then the head scales and weights). */
size_t hci_cu_index_fast_qstride(int IH);
/* Queries r = 0..rows-1 at positions pos0+r, qi [rows][IH][128] bf16, w [rows][IH] bf16: for
 * every visible key j < (pos0+r+1)/4 (pages: device page table), score
 *   bf16( sum_h bf16( relu( bf16( dot8(q'_h, k'_j) * s_qh * s_j ) ) * w_h ) )
 * where q'_h = q_h / s_qh and k'_j = k_j / s_j are exact e4m3 copies (power-of-two scales) and
 * dot8 their fp32 tensor-core dot: the reference's roundings, the heads summed in fp32 in a fixed
 * order: deterministic, and a query's scores do not depend on the other queries. Writes
 * scores[r * stride + j] (order-preserving 16-bit keys, index/config.h's ix_key16) and adds
 * each key's high byte to hist[r][256] (zeroed by the caller). prep: scratch
 * of rows * hci_cu_index_fast_qstride(IH) bytes (16-byte aligned). sms: multiprocessors.
 * sum: where the wgmma kernel runs, how it adds the head terms (index_wgmma.cu): HCI_IX_SUM_CORES
 * in a fixed fp32 order on the CUDA cores; HCI_IX_SUM_TC on the tensor cores (their fp32 order);
 * HCI_IX_SUM_TC_PIPE the same sums, a pair of queries' tensor work overlapping the previous
 * pair's end; HCI_IX_SUM_F32 the production kernels' head sum instead of the reference's
 * roundings: bf16( s_j * sum_h relu(dot8_h) * (w_h * s_qh) ), the terms fused into fp32 FMAs in a
 * fixed order (no bf16 rounding per head); HCI_IX_SUM_TC_REGA HCI_IX_SUM_TC's sums with each
 * warp's keys of a tile held in registers for all the tile's query pairs (wgmma's A from
 * registers: shared memory then feeds only the queries); HCI_IX_SUM_TC_MIX (and with REGA) the
 * same sums with a quarter of the terms' bf16 roundings on the fp32 adder. Returns HC_OK, HC_ERR_UNSUPPORTED (shape not taken, nothing launched) or
 * HC_ERR_CUDA. */
enum { HCI_IX_SUM_CORES = 0, HCI_IX_SUM_TC = 1, HCI_IX_SUM_TC_PIPE = 2, HCI_IX_SUM_F32 = 3, HCI_IX_SUM_TC_REGA = 4,
       HCI_IX_SUM_TC_MIX = 5, HCI_IX_SUM_TC_REGA_MIX = 6 };
int hci_cu_index_fast_scores(cudaStream_t s, const hci_entry_layout *l, uint8_t *const *pages, int rows,
                             int64_t pos0, int IH, const uint16_t *qi, const uint16_t *w, uint8_t *prep,
                             uint16_t *scores, int64_t stride, uint32_t *hist, int sms, int sum);

#endif
