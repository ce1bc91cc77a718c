/* st_writer.c - see st_writer.h. The header is built with jansson so that names and metadata
 * values (config.json text) are escaped correctly. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* strdup */
#endif
#include "st_writer.h"
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct stw_tensor {
    char *name, *dtype;
    int ndim;
    int64_t shape[8];
    unsigned char *data;
    size_t nbytes;
} stw_tensor;

struct stw {
    stw_tensor *t;
    size_t n, cap;
    json_t *meta; /* object of strings, or NULL */
};

stw *stw_new(void) { return calloc(1, sizeof(stw)); }

void stw_free(stw *w)
{
    if (!w) return;
    for (size_t i = 0; i < w->n; i++) {
        free(w->t[i].name);
        free(w->t[i].dtype);
        free(w->t[i].data);
    }
    free(w->t);
    json_decref(w->meta);
    free(w);
}

size_t stw_count(const stw *w) { return w->n; }

int stw_add(stw *w, const char *name, const char *dtype, int ndim, const int64_t *shape, const void *data,
            size_t nbytes)
{
    if (ndim < 0 || ndim > 8) return -1;
    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 64;
        stw_tensor *nt = realloc(w->t, cap * sizeof *nt);
        if (!nt) return -1;
        w->t = nt, w->cap = cap;
    }
    stw_tensor *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    t->dtype = strdup(dtype);
    t->data = malloc(nbytes ? nbytes : 1);
    if (!t->name || !t->dtype || !t->data) {
        free(t->name), free(t->dtype), free(t->data);
        return -1;
    }
    t->ndim = ndim;
    if (ndim) memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    if (nbytes) memcpy(t->data, data, nbytes);
    t->nbytes = nbytes;
    w->n++;
    return 0;
}

int stw_meta(stw *w, const char *key, const char *value)
{
    if (!w->meta && !(w->meta = json_object())) return -1;
    return json_object_set_new(w->meta, key, json_string(value));
}

static json_t *tensor_json(const stw_tensor *t, uint64_t begin)
{
    json_t *shape = json_array();
    for (int i = 0; i < t->ndim; i++) json_array_append_new(shape, json_integer(t->shape[i]));
    return json_pack("{s:s, s:o, s:[I, I]}", "dtype", t->dtype, "shape", shape, "data_offsets", (json_int_t)begin,
                     (json_int_t)(begin + t->nbytes));
}

char *stw_header(const stw *w, size_t *len)
{
    json_t *h = json_object();
    if (!h) return NULL;
    if (w->meta) json_object_set(h, "__metadata__", w->meta);
    uint64_t off = 0;
    for (size_t i = 0; i < w->n; i++) {
        json_object_set_new(h, w->t[i].name, tensor_json(&w->t[i], off));
        off += w->t[i].nbytes;
    }
    char *text = json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(h);
    if (!text) return NULL;
    size_t n = strlen(text), padded = (n + 7) / 8 * 8;
    char *out = realloc(text, padded + 1);
    if (!out) {
        free(text);
        return NULL;
    }
    memset(out + n, ' ', padded - n);
    out[padded] = 0;
    *len = padded;
    return out;
}

static int write_all(FILE *fp, const void *p, size_t n) { return n == 0 || fwrite(p, 1, n, fp) == n ? 0 : -1; }

static int write_le64(FILE *fp, uint64_t v)
{
    unsigned char b[8];
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
    return write_all(fp, b, 8);
}

int stw_write(const stw *w, const char *path)
{
    size_t hlen = 0;
    char *header = stw_header(w, &hlen);
    if (!header) return -1;
    FILE *fp = fopen(path, "wb");
    int rc = fp ? 0 : -1;
    if (!rc) rc = write_le64(fp, hlen);
    if (!rc) rc = write_all(fp, header, hlen);
    for (size_t i = 0; i < w->n && !rc; i++) rc = write_all(fp, w->t[i].data, w->t[i].nbytes);
    if (fp && fclose(fp) != 0) rc = -1;
    free(header);
    return rc;
}

int stw_write_raw(const char *path, uint64_t len_field, const void *header, size_t header_len, const void *data,
                  size_t data_len)
{
    FILE *fp = fopen(path, "wb");
    if (!fp) return -1;
    int rc = write_le64(fp, len_field);
    if (!rc) rc = write_all(fp, header, header_len);
    if (!rc) rc = write_all(fp, data, data_len);
    if (fclose(fp) != 0) rc = -1;
    return rc;
}
