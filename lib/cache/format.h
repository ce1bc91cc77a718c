/* format.h - the one definition of the cache's byte layouts, shared by the C code and the CUDA
 * kernels. Storage is in pages of HCI_PAGE_ENTRIES entries.
 *
 * Main KV entry (window slots and compressed entries), head_dim = nope + rope:
 *   bf16 format: head_dim bf16 values, entry i of a page at i * head_dim * 2.
 *   fp8 format (FlashMLA "MODEL1" layout): a page holds first the data of its 64 entries,
 *     [nope e4m3 codes | rope bf16 values] = nope + 2*rope bytes each (576 for V4), then the
 *     scale bytes of its 64 entries: nope/64 ue8m0 exponents padded with zeros to a multiple of 8
 *     (8 for V4). 584 bytes per entry for V4.
 * Indexer key entry (ratio-4 layers), index_head_dim values:
 *   bf16 format: index_head_dim bf16 values.
 *   fp8 format: FP4 e2m1 codes, two per byte (even element in the low nibble), then one ue8m0
 *     exponent per 32 values: 64 + 4 = 68 bytes per entry for V4; data of the page's entries
 *     first, then their scales.
 * Values in the cache always sit on the FP8 / FP4 grids already (the model's quantization
 * simulation), so the fp8 format holds exactly the values of the bf16 format. Packing chooses
 * each block's exponent with the same rule as the simulation, which reproduces every value. */
#ifndef HCI_CACHE_FORMAT_H
#define HCI_CACHE_FORMAT_H
#include <stddef.h>
#include <stdint.h>
#include "../util/bf16.h"

#define HCI_PAGE_ENTRIES 64
#define HCI_FMT_BF16 1
#define HCI_FMT_FP8 2

typedef struct hci_entry_layout {
    int fmt;          /* HCI_FMT_BF16 or HCI_FMT_FP8 */
    int dim;          /* values per entry */
    int quant_dim;    /* leading values stored in FP8 (main) or FP4 (indexer); fp8 format only */
    int qblock;       /* values per scale: 64 (FP8 main) or 32 (FP4 indexer) */
    int fp4;          /* 1 for indexer keys */
    int data_bytes;   /* per entry, in the page's data section */
    int scale_bytes;  /* per entry, in the page's scale section */
    int entry_bytes;  /* data_bytes + scale_bytes */
} hci_entry_layout;

HCI_HD hci_entry_layout hci_layout_main(int fmt, int head_dim, int rope_dim)
{
    hci_entry_layout l;
    l.fmt = fmt;
    l.dim = head_dim;
    l.quant_dim = head_dim - rope_dim;
    l.qblock = 64;
    l.fp4 = 0;
    if (fmt == HCI_FMT_BF16) {
        l.data_bytes = head_dim * 2;
        l.scale_bytes = 0;
    } else {
        l.data_bytes = l.quant_dim + rope_dim * 2;
        l.scale_bytes = (l.quant_dim / 64 + 7) / 8 * 8;
    }
    l.entry_bytes = l.data_bytes + l.scale_bytes;
    return l;
}

HCI_HD hci_entry_layout hci_layout_index(int fmt, int index_head_dim)
{
    hci_entry_layout l;
    l.fmt = fmt;
    l.dim = index_head_dim;
    l.quant_dim = index_head_dim;
    l.qblock = 32;
    l.fp4 = 1;
    if (fmt == HCI_FMT_BF16) {
        l.data_bytes = index_head_dim * 2;
        l.scale_bytes = 0;
    } else {
        l.data_bytes = index_head_dim / 2;
        l.scale_bytes = index_head_dim / 32;
    }
    l.entry_bytes = l.data_bytes + l.scale_bytes;
    return l;
}

HCI_HD size_t hci_page_bytes(const hci_entry_layout *l)
{
    return (size_t)HCI_PAGE_ENTRIES * (size_t)l->entry_bytes;
}

/* Where entry `slot` (0..63) of a page keeps its data and its scales. */
HCI_HD uint8_t *hci_entry_data(const hci_entry_layout *l, void *page, int slot)
{
    return (uint8_t *)page + (size_t)slot * (size_t)l->data_bytes;
}
HCI_HD uint8_t *hci_entry_scales(const hci_entry_layout *l, void *page, int slot)
{
    return (uint8_t *)page + (size_t)HCI_PAGE_ENTRIES * (size_t)l->data_bytes +
           (size_t)slot * (size_t)l->scale_bytes;
}

/* Pack / unpack one entry of bf16-valued floats (host code; kernels have their own readers of
 * the same layout). Implemented in format.c. */
void hci_entry_pack(const hci_entry_layout *l, void *page, int slot, const float *vals);
void hci_entry_unpack(const hci_entry_layout *l, const void *page, int slot, float *vals);
void hci_entry_unpack_bf16(const hci_entry_layout *l, const void *page, int slot, uint16_t *vals);

#endif
