/* compress/compress.h - the compressor family: softmax pooling of the projected rows into
 * compressed entries (main KV and indexer keys), normalized, rotated and quantized as the CPU
 * backend does (compress.cu), and the rolling state for the next piece. */
#ifndef HCI_KERNELS_COMPRESS_H
#define HCI_KERNELS_COMPRESS_H
#include <cuda_runtime.h>
#include <stdint.h>
#include "config.h"
extern "C" {
#include "cache/format.h"
}

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
    /* rollback history (lib/cache/history.c): the rows of positions >= log_from go to slot
     * t % log_cap of the row log; log_cap 0 = none */
    float *log_kv, *log_score;
    int log_cap;
    int64_t log_from;
};
/* Emit the entries that the piece closes (positions pos0..pos0+n-1; entry j covers positions
 * ratio*j .. ratio*j + ratio - 1, with the previous block as overlap when coff == 2) into their
 * pages, replace the state by the rows the next piece needs, and log the piece's rows. */
int hci_cu_compress(cudaStream_t s, const hci_cu_comp_args *a);

#endif
