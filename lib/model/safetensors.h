/* safetensors.h - a strict, bounded reader of the safetensors format.
 *
 * Layout: u64 little-endian header length N, N bytes of JSON (an object, possibly padded with
 * trailing spaces), then the data buffer. Every header entry but "__metadata__" is a tensor
 * {"dtype": ..., "shape": [...], "data_offsets": [begin, end]} with offsets relative to the
 * buffer. hci_st_open() validates the whole header before anything uses it (sizes, dtypes,
 * offsets within the buffer, no overlaps), so later reads need no further checks. Tensor data
 * is read on demand with pread: the file is never mapped or read whole. */
#ifndef HCI_SAFETENSORS_H
#define HCI_SAFETENSORS_H
#include <stddef.h>
#include <stdint.h>

#define HCI_ST_MAX_HEADER 100000000u /* bytes of JSON header */
#define HCI_ST_MAX_TENSORS 1000000u
#define HCI_ST_MAX_DIMS 8

/* The format's whole dtype vocabulary; sub-byte types (F4, F6_*) are packed, and a tensor of
 * them must fill whole bytes. */
typedef enum hci_st_dtype {
    HCI_ST_BOOL, HCI_ST_F4, HCI_ST_F6_E2M3, HCI_ST_F6_E3M2, HCI_ST_U8, HCI_ST_I8, HCI_ST_F8_E5M2,
    HCI_ST_F8_E4M3, HCI_ST_F8_E8M0, HCI_ST_F8_E4M3FNUZ, HCI_ST_F8_E5M2FNUZ, HCI_ST_I16, HCI_ST_U16,
    HCI_ST_F16, HCI_ST_BF16, HCI_ST_I32, HCI_ST_U32, HCI_ST_F32, HCI_ST_C64, HCI_ST_F64, HCI_ST_I64,
    HCI_ST_U64,
    HCI_ST_N_DTYPES
} hci_st_dtype;

typedef struct hci_st_tensor {
    const char *name;               /* owned by the file */
    hci_st_dtype dtype;
    int ndim;
    int64_t shape[HCI_ST_MAX_DIMS];
    uint64_t n_elems;               /* product of shape (1 for a scalar) */
    uint64_t begin, nbytes;         /* byte range within the data buffer */
} hci_st_tensor;

typedef struct hci_st_file hci_st_file;

/* Open and validate path; *out is NULL on failure. Returns an hc_status: HC_ERR_IO (open or
 * read failure, with strerror), HC_ERR_FORMAT (malformed; also a header length past the end of
 * the file), HC_ERR_LIMIT (header or tensor count over the limits), HC_ERR_OUT_OF_MEMORY.
 * err names the file and, where one is at fault, the tensor. */
int hci_st_open(const char *path, hci_st_file **out, char *err, size_t errsz);
/* The same over len bytes in memory (fuzzing, tests); name stands for the path in messages.
 * buf is borrowed: it must stay unchanged until hci_st_close(). */
int hci_st_open_mem(const void *buf, size_t len, const char *name, hci_st_file **out, char *err, size_t errsz);
void hci_st_close(hci_st_file *f);

const char *hci_st_path(const hci_st_file *f);
/* Tensors, sorted by name. */
size_t hci_st_count(const hci_st_file *f);
const hci_st_tensor *hci_st_at(const hci_st_file *f, size_t i);
/* The tensor called name, or NULL. */
const hci_st_tensor *hci_st_find(const hci_st_file *f, const char *name);
/* A "__metadata__" value, or NULL when absent. */
const char *hci_st_metadata(const hci_st_file *f, const char *key);

/* Read n bytes starting at byte offset off of tensor t (a tensor of f) into dst. The range must
 * lie within the tensor (HC_ERR_INTERNAL otherwise); HC_ERR_IO on a failed or short read. */
int hci_st_read_at(hci_st_file *f, const hci_st_tensor *t, uint64_t off, void *dst, size_t n, char *err,
                   size_t errsz);
/* Read all of t; nbytes must equal t->nbytes. */
int hci_st_read(hci_st_file *f, const hci_st_tensor *t, void *dst, size_t nbytes, char *err, size_t errsz);

/* "F32", "BF16", ... and the element size in bits. */
const char *hci_st_dtype_name(hci_st_dtype d);
unsigned hci_st_dtype_bits(hci_st_dtype d);
/* Format t's shape as "[a, b]" into buf (truncated to bufsz). */
void hci_st_shape_str(const hci_st_tensor *t, char *buf, size_t bufsz);

#endif
