/* session_api.c - the public session functions (include/hybridctx.h, "Sessions") and the
 * experimental inspector: argument checks, the per-context last error, files and buffers. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "hybridctx.h"
#include "hybridctx_experimental.h"
#include "io.h"
#include "session.h"
#include "../util/error.h"
#include "../util/params.h"
#include "../util/trace.h"

HC_API hc_status hc_save_params_init(hc_save_params *p, size_t struct_size)
{
    if (!p) return HC_ERR_NULL_ARG;
    if (struct_size < sizeof(uint32_t)) return HC_ERR_INVALID_ARG;
    memset(p, 0, struct_size);
    p->struct_size = (uint32_t)struct_size;
    return HC_OK;
}

/* Common entry checks of the save functions; *level receives the zstd level (0 = none). */
static hc_status save_begin(hc_ctx *c, const hc_save_params *p, int *level, int *threads)
{
    c->err[0] = 0;
    hc_save_params sp;
    hc_status st = hci_read_params(p, sizeof sp, &sp);
    if (st) return hci_errf(c->err, sizeof c->err, st, "hc_save_params: unknown non-zero fields");
    if (sp.compression < HC_COMPRESS_DEFAULT || sp.compression > HC_COMPRESS_ZSTD || sp.zstd_level < 0 ||
        sp.zstd_level > 19 || sp.n_threads < 0 || sp.n_threads > 4096)
        return hci_errf(c->err, sizeof c->err, HC_ERR_INVALID_ARG, "hc_save_params: a field is out of range");
    if (c->poisoned) return hci_errf(c->err, sizeof c->err, HC_ERR_BAD_STATE, "context poisoned by an earlier device fault");
    if (c->next_layer)
        return hci_errf(c->err, sizeof c->err, HC_ERR_ORDER,
                        "a chunk is in progress (layer %d is next); finish it before saving", c->next_layer);
    *level = sp.compression == HC_COMPRESS_ZSTD ? (sp.zstd_level ? sp.zstd_level : 1) : 0;
    *threads = sp.n_threads;
    return HC_OK;
}

HC_API hc_status hc_ctx_save(hc_ctx *c, const char *path, const hc_save_params *p)
{
    if (!c) return HC_ERR_NULL_ARG;
    c->err[0] = 0;
    if (!path) return hci_errf(c->err, sizeof c->err, HC_ERR_NULL_ARG, "path is NULL");
    int level, threads;
    hc_status st = save_begin(c, p, &level, &threads);
    if (st) return st;
    hcs_tmp t;
    if ((st = hcs_tmp_create(&t, path, c->err, sizeof c->err))) return st;
    hcs_sink sink = {t.fd, t.path, NULL, 0, 0};
    uint64_t total;
    st = hcs_save(c, &sink, level, threads, &total, c->err, sizeof c->err);
    if (st) {
        hcs_tmp_abort(&t);
        return st;
    }
    return hcs_tmp_commit(&t, c->err, sizeof c->err);
}

HC_API hc_status hc_ctx_save_size(hc_ctx *c, const hc_save_params *p, uint64_t *size)
{
    if (!c) return HC_ERR_NULL_ARG;
    c->err[0] = 0;
    if (!size) return hci_errf(c->err, sizeof c->err, HC_ERR_NULL_ARG, "size is NULL");
    int level, threads;
    hc_status st = save_begin(c, p, &level, &threads);
    if (st) return st;
    *size = hcs_save_size(c);
    return *size ? HC_OK : hci_errf(c->err, sizeof c->err, HC_ERR_OUT_OF_MEMORY, "out of memory");
}

HC_API hc_status hc_ctx_save_buffer(hc_ctx *c, void *buf, uint64_t cap, const hc_save_params *p, uint64_t *written)
{
    if (!c) return HC_ERR_NULL_ARG;
    c->err[0] = 0;
    if (!written || (!buf && cap)) return hci_errf(c->err, sizeof c->err, HC_ERR_NULL_ARG, "buf or written is NULL");
    *written = 0;
    int level, threads;
    hc_status st = save_begin(c, p, &level, &threads);
    if (st) return st;
    uint64_t bound = hcs_save_size(c);
    if (!bound) return hci_errf(c->err, sizeof c->err, HC_ERR_OUT_OF_MEMORY, "out of memory");
    if (!level && cap < bound) { /* the uncompressed size is exact: no need to run the save */
        *written = bound;
        return hci_errf(c->err, sizeof c->err, HC_ERR_BUFFER_TOO_SMALL, "the session needs %llu bytes",
                        (unsigned long long)bound);
    }
    hcs_sink sink = {-1, "buffer", buf, cap, 0};
    uint64_t total = 0;
    if ((st = hcs_save(c, &sink, level, threads, &total, c->err, sizeof c->err))) return st;
    *written = sink.end;
    if (sink.end > cap)
        return hci_errf(c->err, sizeof c->err, HC_ERR_BUFFER_TOO_SMALL, "the session needs %llu bytes",
                        (unsigned long long)sink.end);
    return HC_OK;
}

static hc_status load_from(hc_ctx *c, const hcs_src *src)
{
    hcs_file f;
    char msg[HCI_ERRLEN];
    /* HYBRIDCTX_SESSION_TRACE: where the time goes (lib/util/trace.h, tools/session-bench --trace) */
    hci_trace *t = hci_trace_tls = hci_trace_begin();
    hc_status st = hcs_file_open(&f, src, msg, sizeof msg);
    if (t) hci_trace_add(t, HCI_T_OPEN, hci_now_ns() - t->t0, 0);
    if (!st) {
        st = hcs_load(c, &f, msg, sizeof msg);
        hcs_file_close(&f);
    }
    if (st) hci_errf(c->err, sizeof c->err, st, "%s: %s", src->name, msg);
    if (t) {
        hci_trace_add(t, HCI_T_TOTAL, hci_now_ns() - t->t0, src->size);
        t->status = st;
        hci_trace_tls = NULL;
        hci_trace_end(t);
    }
    return st;
}

static hc_status open_file(const char *path, int *fd, uint64_t *size, char *err, size_t errsz)
{
    *fd = hci_io()->open(path, O_RDONLY | O_CLOEXEC, 0);
    if (*fd < 0) return hci_errf(err, errsz, HC_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat st;
    const char *why = NULL;
    if (hci_io()->fstat(*fd, &st)) why = strerror(errno);
    else if (!S_ISREG(st.st_mode)) why = "not a regular file";
    if (why) {
        hci_io()->close(*fd);
        *fd = -1;
        return hci_errf(err, errsz, HC_ERR_IO, "%s: %s", path, why);
    }
    *size = (uint64_t)st.st_size;
    posix_fadvise(*fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    return HC_OK;
}

HC_API hc_status hc_ctx_load(hc_ctx *c, const char *path)
{
    if (!c) return HC_ERR_NULL_ARG;
    c->err[0] = 0;
    if (!path) return hci_errf(c->err, sizeof c->err, HC_ERR_NULL_ARG, "path is NULL");
    if (c->poisoned) return hci_errf(c->err, sizeof c->err, HC_ERR_BAD_STATE, "context poisoned by an earlier device fault");
    int fd;
    uint64_t size;
    hc_status st = open_file(path, &fd, &size, c->err, sizeof c->err);
    if (st) return st;
    hcs_src src = {fd, path, NULL, size};
    st = load_from(c, &src);
    hci_io()->close(fd);
    return st;
}

HC_API hc_status hc_ctx_load_buffer(hc_ctx *c, const void *buf, uint64_t len)
{
    if (!c) return HC_ERR_NULL_ARG;
    c->err[0] = 0;
    if (!buf && len) return hci_errf(c->err, sizeof c->err, HC_ERR_NULL_ARG, "buf is NULL");
    if (c->poisoned) return hci_errf(c->err, sizeof c->err, HC_ERR_BAD_STATE, "context poisoned by an earlier device fault");
    static const uint8_t empty[1];
    hcs_src src = {-1, "buffer", buf ? buf : empty, len};
    return load_from(c, &src);
}

HC_API hc_status hc_ctx_set_metadata(hc_ctx *c, const void *data, uint64_t len)
{
    if (!c) return HC_ERR_NULL_ARG;
    c->err[0] = 0;
    if (!data && len) return hci_errf(c->err, sizeof c->err, HC_ERR_NULL_ARG, "data is NULL");
    if (len > HCS_MAX_METADATA)
        return hci_errf(c->err, sizeof c->err, HC_ERR_LIMIT, "metadata of %llu bytes, over the limit of 1 GiB",
                        (unsigned long long)len);
    void *copy = NULL;
    if (len) {
        if (!(copy = malloc((size_t)len))) return hci_errf(c->err, sizeof c->err, HC_ERR_OUT_OF_MEMORY, "out of memory");
        memcpy(copy, data, (size_t)len);
    }
    free(c->meta);
    c->meta = copy, c->meta_len = len;
    return HC_OK;
}

HC_API hc_status hc_ctx_get_metadata(const hc_ctx *c, const void **data, uint64_t *len)
{
    if (!c || !data || !len) return HC_ERR_NULL_ARG;
    *data = c->meta, *len = c->meta_len;
    return HC_OK;
}

/* The verify stream's consumer when a progress callback watches it. */
typedef struct verify_watch {
    hc_progress_fn fn;
    void *user;
    uint64_t done, total;
} verify_watch;

static int verify_progress(void *arg, const hcs_piece *p, char *err, size_t errsz)
{
    verify_watch *v = arg;
    v->done += p->raw_bytes;
    if (v->fn(v->user, v->done, v->total))
        return hci_errf(err, errsz, HC_ERR_ABORTED, "verify stopped by the progress callback after %llu of %llu bytes",
                        (unsigned long long)v->done, (unsigned long long)v->total);
    return HC_OK;
}

HC_API hc_status hc_x_session_inspect(const char *path, int32_t flags, char *buf, uint64_t cap, uint64_t *len)
{
    return hc_x_session_inspect_progress(path, flags, NULL, NULL, buf, cap, len);
}

HC_API hc_status hc_x_session_inspect_progress(const char *path, int32_t flags, hc_progress_fn fn, void *user,
                                               char *buf, uint64_t cap, uint64_t *len)
{
    if (!path || !len || (!buf && cap)) return HC_ERR_NULL_ARG;
    if (flags & ~(HC_X_INSPECT_JSON | HC_X_INSPECT_VERIFY)) return HC_ERR_INVALID_ARG;
    char err[HCI_ERRLEN] = "";
    int fd = -1;
    uint64_t size = 0;
    char *text = NULL;
    hcs_file f;
    hc_status st = open_file(path, &fd, &size, err, sizeof err), vst = HC_OK;
    if (!st) {
        hcs_src src = {fd, path, NULL, size};
        st = hcs_file_open(&f, &src, err, sizeof err);
        if (!st) {
            verify_watch v = {fn, user, 0, f.total_raw};
            if (flags & HC_X_INSPECT_VERIFY)
                vst = hcs_file_stream(&f, 0, hcs_workers(0, f.total_raw), NULL, NULL, fn ? verify_progress : NULL, &v, err, sizeof err);
            st = hcs_describe(&f, flags & HC_X_INSPECT_JSON, flags & HC_X_INSPECT_VERIFY, vst, err, &text);
            hcs_file_close(&f);
            if (!st) st = vst;
        }
        hci_io()->close(fd);
    }
    if (!text) { /* the file could not be described: report why */
        size_t n = strlen(err) + strlen(path) + 64;
        text = malloc(n);
        if (!text) return HC_ERR_OUT_OF_MEMORY;
        if (flags & HC_X_INSPECT_JSON) {
            /* err and path may hold any bytes: keep printable ASCII only for the JSON string */
            char clean[HCI_ERRLEN];
            size_t k = 0;
            for (const char *s = err; *s && k + 1 < sizeof clean; s++)
                clean[k++] = (*s >= 32 && *s < 127 && *s != '"' && *s != '\\') ? *s : '?';
            clean[k] = 0;
            snprintf(text, n, "{\n  \"status\": \"%s\",\n  \"error\": \"%s\"\n}", hc_status_name(st), clean);
        } else {
            snprintf(text, n, "error         %s (%s)\n", err, hc_status_name(st));
        }
    }
    uint64_t need = strlen(text) + 1;
    *len = need;
    if (need > cap) {
        free(text);
        return HC_ERR_BUFFER_TOO_SMALL;
    }
    memcpy(buf, text, (size_t)need);
    free(text);
    return st;
}
