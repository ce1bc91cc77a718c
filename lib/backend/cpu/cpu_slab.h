/* cpu_slab.h - cache pages in one mapping per bulk allocation (cpu_slab.c). */
#ifndef HCI_CPU_SLAB_H
#define HCI_CPU_SLAB_H
#include <stddef.h>

/* n pages of page_bytes, out[i] = out[0] + i * page_bytes, out[0] 4096-aligned, zero-filled,
 * not yet resident; at least 4096 bytes of slack follow the last page. HC_OK or
 * HC_ERR_OUT_OF_MEMORY. */
int hci_slab_alloc(size_t page_bytes, int n, void **out);
/* Free one page of a slab: 1, or 0 when p is not in a slab (the caller frees it). */
int hci_slab_free(void *p);

#endif
