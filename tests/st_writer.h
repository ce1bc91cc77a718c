/* st_writer.h - a small safetensors writer for tests: tensors from memory (copied), optional
 * __metadata__ strings, header padded with spaces to 8 bytes as the reference writer does.
 * Nothing is validated, so tests can also write files that a reader must refuse. */
#ifndef HC_ST_WRITER_H
#define HC_ST_WRITER_H
#include <stddef.h>
#include <stdint.h>

typedef struct stw stw;

stw *stw_new(void);
void stw_free(stw *w);

/* Append a tensor; data (nbytes, may be 0) is copied and laid out in the order of the calls.
 * dtype is written as given ("F32", "BF16", "F8_E4M3", ...). Returns 0, or -1 when out of memory. */
int stw_add(stw *w, const char *name, const char *dtype, int ndim, const int64_t *shape, const void *data,
            size_t nbytes);
/* Add or replace a __metadata__ entry. Returns 0 or -1. */
int stw_meta(stw *w, const char *key, const char *value);
/* Number of tensors added so far. */
size_t stw_count(const stw *w);

/* Write the file. Returns 0, or -1 (errno set) on failure. */
int stw_write(const stw *w, const char *path);
/* The header JSON as stw_write() writes it (padded), malloc'd; *len receives its length. */
char *stw_header(const stw *w, size_t *len);

/* Write a raw file: an arbitrary u64 length field, then header_len bytes of header, then data.
 * For files that are malformed on purpose. Returns 0 or -1. */
int stw_write_raw(const char *path, uint64_t len_field, const void *header, size_t header_len, const void *data,
                  size_t data_len);

#endif
