/* index/index.h - the indexer family: lightning-indexer scores of every visible key and the
 * top-k, equal bit for bit to the CPU backend (index.cu; constants and exact helpers in config.h). */
#ifndef HCI_KERNELS_INDEX_H
#define HCI_KERNELS_INDEX_H
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>
#include "config.h"
extern "C" {
#include "cache/format.h"
}

/* Scratch bytes of hci_cu_index_topk for n queries over at most n_entries keys; grows with both. */
size_t hci_cu_index_scratch_bytes(int n, int64_t n_entries, int K);
/* Queries i = 0..n-1 at positions pos0+i see keys j < (pos0+i+1)/4 of the indexer cache (pages
 * in device memory, layout l). qi [n][IH][ID] bf16 (Hadamard + FP4-exact values), w [n][IH] bf16.
 * Score: bf16( sum_h bf16( relu(bf16(qi_h . k_j)) * w_h ) ), the dot exact and the head sum
 * accumulated in double, so scores equal the CPU backend's bit for bit. Output sel [n][K]: the
 * min(K, visible) best entries in descending score order, ties broken by the lower entry
 * number, then -1 padding. mode HCI_IX_EXACT_ONLY: every dot by the exact fallback (the CPU's
 * own computation) instead of the int8 tensor-core path, as a cross-check (the results are the
 * same). HCI_IX_FAST: the fast scores of index_fast.h where it takes the shape (else EXACT);
 * not the CPU's scores, the same selection rule; with the flag HCI_IX_TCSUM added, their head
 * sum on the tensor cores, with HCI_IX_TCPIPE (and TCSUM) the same pipelined, with HCI_IX_REGA
 * and/or HCI_IX_TCMIX (and TCSUM) the keys in registers and/or a quarter of the roundings on the
 * fp32 adder; HCI_IX_F32SUM the production fp32 head sum (index_fast.h). K <= IX_MAX_K, IH <= IX_MAX_HEADS,
 * IH * ID <= IX_MAX_ROW_ELEMS, l->dim == ID. */
enum { HCI_IX_EXACT = 0, HCI_IX_EXACT_ONLY = 1, HCI_IX_FAST = 2, HCI_IX_TCSUM = 4, HCI_IX_TCPIPE = 8, HCI_IX_F32SUM = 16, HCI_IX_REGA = 32,
       HCI_IX_TCMIX = 64 };
int hci_cu_index_topk(cudaStream_t s, const hci_entry_layout *l, uint8_t *const *pages, int n, int64_t pos0,
                      int IH, int ID, int K, const uint16_t *qi, const uint16_t *w, int32_t *sel, void *scratch,
                      int mode);

#endif
