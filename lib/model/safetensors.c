/* safetensors.c - strict header validation and bounded tensor reads (pread, never mmap). */
#include "safetensors.h"
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "hybridctx.h"
#include "../util/error.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; big-endian hosts are not supported"
#endif

struct hci_st_file {
    char *path;
    int fd;                  /* -1 for a memory-backed file */
    const unsigned char *mem; /* hci_st_open_mem(): the caller's bytes, else NULL */
    uint64_t mem_size;
    uint64_t data_start;     /* 8 + header length */
    uint64_t data_size;      /* bytes after the header */
    json_t *header;          /* the parsed header; owns the tensor names */
    json_t *metadata;        /* "__metadata__", borrowed from header; NULL when absent */
    hci_st_tensor *tensors;  /* sorted by name */
    size_t n_tensors;
};

static const struct { const char *name; unsigned bits; } dtype_table[HCI_ST_N_DTYPES] = {
    [HCI_ST_BOOL] = {"BOOL", 8},          [HCI_ST_F4] = {"F4", 4},
    [HCI_ST_F6_E2M3] = {"F6_E2M3", 6},    [HCI_ST_F6_E3M2] = {"F6_E3M2", 6},
    [HCI_ST_U8] = {"U8", 8},              [HCI_ST_I8] = {"I8", 8},
    [HCI_ST_F8_E5M2] = {"F8_E5M2", 8},    [HCI_ST_F8_E4M3] = {"F8_E4M3", 8},
    [HCI_ST_F8_E8M0] = {"F8_E8M0", 8},    [HCI_ST_F8_E4M3FNUZ] = {"F8_E4M3FNUZ", 8},
    [HCI_ST_F8_E5M2FNUZ] = {"F8_E5M2FNUZ", 8},
    [HCI_ST_I16] = {"I16", 16},           [HCI_ST_U16] = {"U16", 16},
    [HCI_ST_F16] = {"F16", 16},           [HCI_ST_BF16] = {"BF16", 16},
    [HCI_ST_I32] = {"I32", 32},           [HCI_ST_U32] = {"U32", 32},
    [HCI_ST_F32] = {"F32", 32},           [HCI_ST_C64] = {"C64", 64},
    [HCI_ST_F64] = {"F64", 64},           [HCI_ST_I64] = {"I64", 64},
    [HCI_ST_U64] = {"U64", 64},
};

const char *hci_st_dtype_name(hci_st_dtype d)
{
    return (unsigned)d < HCI_ST_N_DTYPES ? dtype_table[d].name : "?";
}

unsigned hci_st_dtype_bits(hci_st_dtype d) { return (unsigned)d < HCI_ST_N_DTYPES ? dtype_table[d].bits : 0; }

static int dtype_from_name(const char *s, hci_st_dtype *out)
{
    for (int i = 0; i < HCI_ST_N_DTYPES; i++)
        if (strcmp(s, dtype_table[i].name) == 0) {
            *out = (hci_st_dtype)i;
            return 1;
        }
    return 0;
}

void hci_st_shape_str(const hci_st_tensor *t, char *buf, size_t bufsz)
{
    size_t n = 0;
    if (!bufsz) return;
    buf[0] = 0;
    n += (size_t)snprintf(buf, bufsz, "[");
    for (int i = 0; i < t->ndim && n < bufsz; i++)
        n += (size_t)snprintf(buf + n, bufsz - n, "%s%" PRId64, i ? ", " : "", t->shape[i]);
    if (n < bufsz) snprintf(buf + n, bufsz - n, "]");
}

/* strerror() is not thread-safe; the build defines _GNU_SOURCE, so this is GNU strerror_r. */
static const char *errno_text(int e, char *buf, size_t n) { return strerror_r(e, buf, n); }

/* ---- reading ---- */

/* Read exactly n bytes at pos. Returns 0, an errno value, or -1 at end of file. */
static int pread_full(int fd, void *dst, size_t n, uint64_t pos)
{
    char *p = dst;
    while (n) {
        size_t chunk = n < ((size_t)1 << 30) ? n : ((size_t)1 << 30);
        ssize_t r = pread(fd, p, chunk, (off_t)pos);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return errno;
        if (r == 0) return -1;
        p += r, pos += (uint64_t)r, n -= (size_t)r;
    }
    return 0;
}

/* Read exactly n bytes at pos from the file or its memory. Returns as pread_full(). */
static int st_pread(const hci_st_file *f, void *dst, size_t n, uint64_t pos)
{
    if (!f->mem) return pread_full(f->fd, dst, n, pos);
    if (pos > f->mem_size || n > f->mem_size - pos) return -1;
    memcpy(dst, f->mem + pos, n);
    return 0;
}

static int read_fail(const char *path, const char *what, int e, char *err, size_t errsz)
{
    char eb[128];
    if (e < 0)
        return hci_errf(err, errsz, HC_ERR_IO, "%s: reading %s: unexpected end of file (was it changed "
                        "while open?)", path, what);
    return hci_errf(err, errsz, HC_ERR_IO, "%s: reading %s: %s", path, what, errno_text(e, eb, sizeof eb));
}

int hci_st_read_at(hci_st_file *f, const hci_st_tensor *t, uint64_t off, void *dst, size_t n, char *err,
                   size_t errsz)
{
    if (off > t->nbytes || n > t->nbytes - off)
        return hci_errf(err, errsz, HC_ERR_INTERNAL, "%s: read of %zu bytes at %" PRIu64 " outside tensor "
                        "\"%s\" (%" PRIu64 " bytes)", f->path, n, off, t->name, t->nbytes);
    int e = st_pread(f, dst, n, f->data_start + t->begin + off);
    if (e) {
        char what[300];
        snprintf(what, sizeof what, "tensor \"%.200s\"", t->name);
        return read_fail(f->path, what, e, err, errsz);
    }
    return HC_OK;
}

int hci_st_read(hci_st_file *f, const hci_st_tensor *t, void *dst, size_t nbytes, char *err, size_t errsz)
{
    if (nbytes != t->nbytes)
        return hci_errf(err, errsz, HC_ERR_INTERNAL, "%s: tensor \"%s\" has %" PRIu64 " bytes, caller "
                        "expected %zu", f->path, t->name, t->nbytes, nbytes);
    return hci_st_read_at(f, t, 0, dst, nbytes, err, errsz);
}

/* ---- header validation ---- */

/* Every validation function has err/errsz parameters; this reports into them. */
#define FORMAT_ERR(...) hci_errf(err, errsz, HC_ERR_FORMAT, __VA_ARGS__)

/* Non-negative JSON integer, or -1. */
static int64_t json_uint(const json_t *v)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0) return -1;
    return (int64_t)json_integer_value(v);
}

static int parse_dtype(const hci_st_file *f, const char *name, const json_t *v, hci_st_tensor *t, char *err,
                       size_t errsz)
{
    if (!json_is_string(v)) return FORMAT_ERR("%s: tensor \"%.200s\": dtype is not a string", f->path, name);
    if (!dtype_from_name(json_string_value(v), &t->dtype))
        return FORMAT_ERR("%s: tensor \"%.200s\": unknown dtype \"%.32s\"", f->path, name,
                          json_string_value(v));
    return HC_OK;
}

/* Shape -> dims, element count and byte size, every product checked for overflow. */
static int parse_shape(const hci_st_file *f, const char *name, const json_t *v, hci_st_tensor *t, char *err,
                       size_t errsz)
{
    if (!json_is_array(v)) return FORMAT_ERR("%s: tensor \"%.200s\": shape is not an array", f->path, name);
    size_t nd = json_array_size(v);
    if (nd > HCI_ST_MAX_DIMS)
        return hci_errf(err, errsz, HC_ERR_LIMIT, "%s: tensor \"%.200s\": %zu dimensions (at most %d)", f->path,
                        name, nd, HCI_ST_MAX_DIMS);
    uint64_t n = 1;
    for (size_t i = 0; i < nd; i++) {
        int64_t d = json_uint(json_array_get(v, i));
        if (d < 0)
            return FORMAT_ERR("%s: tensor \"%.200s\": shape[%zu] is not a non-negative integer", f->path,
                              name, i);
        if (d && n > UINT64_MAX / (uint64_t)d)
            return FORMAT_ERR("%s: tensor \"%.200s\": element count overflows", f->path, name);
        n *= (uint64_t)d;
        t->shape[i] = d;
    }
    t->ndim = (int)nd;
    t->n_elems = n;
    uint64_t bits = hci_st_dtype_bits(t->dtype);
    if (n > UINT64_MAX / bits)
        return FORMAT_ERR("%s: tensor \"%.200s\": byte size overflows", f->path, name);
    if (n * bits % 8)
        return FORMAT_ERR("%s: tensor \"%.200s\": %" PRIu64 " elements of %s do not fill whole bytes",
                          f->path, name, n, hci_st_dtype_name(t->dtype));
    t->nbytes = n * bits / 8;
    return HC_OK;
}

static int parse_offsets(const hci_st_file *f, const char *name, const json_t *v, hci_st_tensor *t, char *err,
                         size_t errsz)
{
    int64_t b = -1, e = -1;
    if (json_is_array(v) && json_array_size(v) == 2) {
        b = json_uint(json_array_get(v, 0));
        e = json_uint(json_array_get(v, 1));
    }
    if (b < 0 || e < b)
        return FORMAT_ERR("%s: tensor \"%.200s\": data_offsets must be [begin, end] with 0 <= begin <= end",
                          f->path, name);
    if ((uint64_t)e > f->data_size)
        return FORMAT_ERR("%s: tensor \"%.200s\": data_offsets [%" PRId64 ", %" PRId64 "] pass the end of "
                          "the %" PRIu64 "-byte data buffer (truncated file?)", f->path, name, b, e, f->data_size);
    if ((uint64_t)(e - b) != t->nbytes) {
        char sh[160];
        hci_st_shape_str(t, sh, sizeof sh);
        return FORMAT_ERR("%s: tensor \"%.200s\": data_offsets [%" PRId64 ", %" PRId64 "] hold %" PRId64
                          " bytes, shape %s of %s needs %" PRIu64, f->path, name, b, e, e - b, sh,
                          hci_st_dtype_name(t->dtype), t->nbytes);
    }
    t->begin = (uint64_t)b;
    return HC_OK;
}

/* One tensor entry: exactly the keys dtype, shape and data_offsets. */
static int parse_entry(const hci_st_file *f, const char *name, json_t *v, hci_st_tensor *t, char *err,
                       size_t errsz)
{
    if (!json_is_object(v)) return FORMAT_ERR("%s: tensor \"%.200s\": entry is not an object", f->path, name);
    const char *key;
    json_t *val;
    json_object_foreach(v, key, val) {
        if (strcmp(key, "dtype") != 0 && strcmp(key, "shape") != 0 && strcmp(key, "data_offsets") != 0)
            return FORMAT_ERR("%s: tensor \"%.200s\": unknown field \"%.64s\"", f->path, name, key);
    }
    static const char *const required[] = {"dtype", "shape", "data_offsets"};
    for (int i = 0; i < 3; i++)
        if (!json_object_get(v, required[i]))
            return FORMAT_ERR("%s: tensor \"%.200s\": no \"%s\"", f->path, name, required[i]);
    memset(t, 0, sizeof *t);
    t->name = name;
    int st = parse_dtype(f, name, json_object_get(v, "dtype"), t, err, errsz);
    if (!st) st = parse_shape(f, name, json_object_get(v, "shape"), t, err, errsz);
    if (!st) st = parse_offsets(f, name, json_object_get(v, "data_offsets"), t, err, errsz);
    return st;
}

static int check_metadata(const hci_st_file *f, json_t *md, char *err, size_t errsz)
{
    if (!json_is_object(md)) return FORMAT_ERR("%s: __metadata__ is not an object", f->path);
    const char *key;
    json_t *val;
    json_object_foreach(md, key, val) {
        if (!json_is_string(val))
            return FORMAT_ERR("%s: __metadata__ \"%.64s\" is not a string", f->path, key);
    }
    return HC_OK;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const hci_st_tensor *)a)->name, ((const hci_st_tensor *)b)->name);
}

static int cmp_begin(const void *a, const void *b)
{
    const hci_st_tensor *x = *(const hci_st_tensor *const *)a, *y = *(const hci_st_tensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return (x->nbytes > y->nbytes) - (x->nbytes < y->nbytes);
}

/* Sorted by offset, each non-empty tensor must start at or after the end of all before it. */
static int check_overlaps(const hci_st_file *f, char *err, size_t errsz)
{
    if (f->n_tensors < 2) return HC_OK;
    /* an array of pointers: sizeof *by is meant to be the size of a pointer */
    const hci_st_tensor **by = malloc(f->n_tensors * sizeof *by); // NOLINT(bugprone-sizeof-expression)
    if (!by) return hci_errf(err, errsz, HC_ERR_OUT_OF_MEMORY, "%s: out of memory", f->path);
    for (size_t i = 0; i < f->n_tensors; i++) by[i] = &f->tensors[i];
    qsort(by, f->n_tensors, sizeof *by, cmp_begin); // NOLINT(bugprone-sizeof-expression): as above
    int st = HC_OK;
    const hci_st_tensor *last = NULL; /* the non-empty tensor ending furthest so far */
    for (size_t i = 0; i < f->n_tensors && !st; i++) {
        const hci_st_tensor *t = by[i];
        if (!t->nbytes) continue;
        if (last && t->begin < last->begin + last->nbytes)
            st = FORMAT_ERR("%s: tensors \"%.150s\" and \"%.150s\" overlap in the data buffer", f->path,
                            last->name, t->name);
        if (!last || t->begin + t->nbytes > last->begin + last->nbytes) last = t;
    }
    free(by);
    return st;
}

static int parse_header(hci_st_file *f, char *err, size_t errsz)
{
    if (!json_is_object(f->header)) return FORMAT_ERR("%s: header is not a JSON object", f->path);
    size_t n = json_object_size(f->header);
    f->metadata = json_object_get(f->header, "__metadata__");
    if (f->metadata) {
        int st = check_metadata(f, f->metadata, err, errsz);
        if (st) return st;
        n--;
    }
    if (n > HCI_ST_MAX_TENSORS)
        return hci_errf(err, errsz, HC_ERR_LIMIT, "%s: %zu tensors (at most %u)", f->path, n, HCI_ST_MAX_TENSORS);
    f->tensors = calloc(n ? n : 1, sizeof *f->tensors);
    if (!f->tensors)
        return hci_errf(err, errsz, HC_ERR_OUT_OF_MEMORY, "%s: out of memory for %zu tensors", f->path, n);
    const char *key;
    json_t *val;
    json_object_foreach(f->header, key, val) {
        if (strcmp(key, "__metadata__") == 0) continue;
        int st = parse_entry(f, key, val, &f->tensors[f->n_tensors], err, errsz);
        if (st) return st;
        f->n_tensors++;
    }
    qsort(f->tensors, f->n_tensors, sizeof *f->tensors, cmp_name);
    return check_overlaps(f, err, errsz);
}

/* Length prefix, then the header JSON (duplicate keys rejected, UTF-8 checked by jansson). */
static int load_header(hci_st_file *f, uint64_t file_size, char *err, size_t errsz)
{
    if (file_size < 8)
        return FORMAT_ERR("%s: %" PRIu64 " bytes, too short for a safetensors file", f->path, file_size);
    uint8_t le[8];
    int e = st_pread(f, le, 8, 0);
    if (e) return read_fail(f->path, "the header length", e, err, errsz);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | le[i];
    /* Past the end first: a corrupt length is a format error, not a limit. */
    if (n > file_size - 8)
        return FORMAT_ERR("%s: header length %" PRIu64 " exceeds the %" PRIu64 " bytes that follow it "
                          "(truncated or not a safetensors file)", f->path, n, file_size - 8);
    if (n > HCI_ST_MAX_HEADER)
        return hci_errf(err, errsz, HC_ERR_LIMIT, "%s: header of %" PRIu64 " bytes (at most %u)", f->path, n,
                        HCI_ST_MAX_HEADER);
    char *buf = malloc(n ? n : 1);
    if (!buf) return hci_errf(err, errsz, HC_ERR_OUT_OF_MEMORY, "%s: out of memory for the header", f->path);
    e = st_pread(f, buf, n, 8);
    if (e) {
        free(buf);
        return read_fail(f->path, "the header", e, err, errsz);
    }
    json_error_t je;
    f->header = json_loadb(buf, n, JSON_REJECT_DUPLICATES, &je);
    free(buf);
    if (!f->header)
        return FORMAT_ERR("%s: header JSON: %s (byte %d of the header)", f->path, je.text, je.position);
    f->data_start = 8 + n;
    f->data_size = file_size - 8 - n;
    return HC_OK;
}

static int open_fd(hci_st_file *f, uint64_t *size, char *err, size_t errsz)
{
    char eb[128];
    f->fd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0) return hci_errf(err, errsz, HC_ERR_IO, "%s: %s", f->path, errno_text(errno, eb, sizeof eb));
    struct stat sb;
    if (fstat(f->fd, &sb) != 0)
        return hci_errf(err, errsz, HC_ERR_IO, "%s: %s", f->path, errno_text(errno, eb, sizeof eb));
    if (!S_ISREG(sb.st_mode)) return hci_errf(err, errsz, HC_ERR_IO, "%s: not a regular file", f->path);
    *size = (uint64_t)sb.st_size;
    return HC_OK;
}

/* Shared by both openers: mem is NULL for a file on disk. */
static int st_open(const char *path, const void *mem, size_t len, hci_st_file **out, char *err, size_t errsz)
{
    *out = NULL;
    hci_st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return hci_errf(err, errsz, HC_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    f->fd = -1;
    f->mem = mem;
    f->mem_size = len;
    uint64_t size = len;
    int st = mem ? HC_OK : open_fd(f, &size, err, errsz);
    if (!st) st = load_header(f, size, err, errsz);
    if (!st) st = parse_header(f, err, errsz);
    if (st) {
        hci_st_close(f);
        return st;
    }
    *out = f;
    return HC_OK;
}

int hci_st_open(const char *path, hci_st_file **out, char *err, size_t errsz)
{
    return st_open(path, NULL, 0, out, err, errsz);
}

int hci_st_open_mem(const void *buf, size_t len, const char *name, hci_st_file **out, char *err, size_t errsz)
{
    static const unsigned char empty[1];
    return st_open(name, buf ? buf : empty, buf ? len : 0, out, err, errsz);
}

void hci_st_close(hci_st_file *f)
{
    if (!f) return;
    if (f->fd >= 0) close(f->fd);
    json_decref(f->header);
    free(f->tensors);
    free(f->path);
    free(f);
}

const char *hci_st_path(const hci_st_file *f) { return f->path; }
size_t hci_st_count(const hci_st_file *f) { return f->n_tensors; }
const hci_st_tensor *hci_st_at(const hci_st_file *f, size_t i) { return i < f->n_tensors ? &f->tensors[i] : NULL; }

const hci_st_tensor *hci_st_find(const hci_st_file *f, const char *name)
{
    hci_st_tensor key = {.name = name};
    return bsearch(&key, f->tensors, f->n_tensors, sizeof key, cmp_name);
}

const char *hci_st_metadata(const hci_st_file *f, const char *key)
{
    return f->metadata ? json_string_value(json_object_get(f->metadata, key)) : NULL;
}
