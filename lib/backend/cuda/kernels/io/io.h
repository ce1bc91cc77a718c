/* io/io.h - the I/O family: input and output conversion, the finiteness check, packing rows
 * into cache entries (window ring writes) in the layouts of lib/cache/format.h, gathering rows of
 * several contexts (batches) and cache pages (session saves) into one buffer (io.cu). */
#ifndef HCI_KERNELS_IO_H
#define HCI_KERNELS_IO_H
#include <cuda_runtime.h>
#include <stdint.h>
#include "config.h"
extern "C" {
#include "cache/format.h"
}

/* *flag_dev = 1 if any of count values (bf16 when bf16, else fp32) is inf or nan; it is not cleared. */
int hci_cu_check_finite(cudaStream_t s, const void *x, int bf16, int64_t count, int *flag_dev);
/* count values (bf16 or fp32) -> bf16 (round to nearest even). */
int hci_cu_to_bf16(cudaStream_t s, const void *x, int bf16, int64_t count, uint16_t *out);
/* count bf16 values -> bf16 or fp32. */
int hci_cu_from_bf16(cudaStream_t s, const uint16_t *x, int bf16, int64_t count, void *out);
/* x = RMSNorm(x + y) per row of dim (no weight), f32 or bf16 (bf16 != 0), the sum of squares in
 * fp32 in a fixed order (hc_x_ctx_residual_norm: the demo's stand-in between layers). */
int hci_cu_residual_norm(cudaStream_t s, void *x, const void *y, int bf16, int64_t rows, int dim, float eps);
/* count bf16 values -> double (exact). */
int hci_cu_bf16_to_f64(cudaStream_t s, const uint16_t *x, int64_t count, double *out);
/* Pack rows [n][dim] (bf16, values on the cache grid) into entries first_entry.. (mod modulo when
 * modulo > 0) of a page list (format.h layout). */
int hci_cu_pack_rows(cudaStream_t s, const hci_entry_layout *l, uint8_t *const *pages, const uint16_t *rows,
                     int n, int64_t first_entry, int64_t modulo);
/* Row t of dst [n][cols] (bf16) = the cols values at src[t] (device memory; src a host array of
 * n <= HCI_CU_ROWS_MAX pointers, passed with the launch): the rows of several contexts gathered
 * for one launch over them. HC_ERR_INVALID_ARG for more rows. */
int hci_cu_gather_rows(cudaStream_t s, const uint16_t *const *src, int n, int cols, uint16_t *dst);
/* Pages first .. first + n - 1 of a page table (device memory), back to back into dst:
 * n * page_bytes bytes, so that one DMA moves them to the host. */
int hci_cu_gather_pages(cudaStream_t s, const uint8_t *const *pages, int first, int n, size_t page_bytes, uint8_t *dst);

#endif
