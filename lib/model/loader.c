/* loader.c - hc_model_load(): the configuration and the layers.{i}.attn.* weights of a checkpoint
 * directory (config.json + shards, with or without model.safetensors.index.json) or of one
 * .safetensors file carrying config.json text in __metadata__["config"].
 *
 * Every tensor is looked up by name, checked against the shape the configuration implies and
 * streamed through a fixed scratch buffer into the model's arrays, converting and validating
 * each element on the way (finite values, valid scales). Sizes therefore come only from the
 * validated configuration, and memory beyond the weights is bounded. */
#include "loader.h"
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "hybridctx.h"
#include "safetensors.h"
#include "../util/bf16.h"
#include "../util/error.h"
#include "../util/numerics.h"

#define LD_INDEX_FILE "model.safetensors.index.json"
#define LD_MAX_INDEX_TEXT (64u << 20) /* generous: real indexes are a few MB */
#define LD_SCRATCH (1u << 20)         /* bytes per read while converting a tensor */

typedef struct ld_file {
    char *shard;            /* file name inside the directory (index mode) */
    hci_st_file *st;
} ld_file;

typedef struct ld_entry {   /* one tensor of the merged table (no index) */
    const char *name;
    hci_st_file *st;
    const hci_st_tensor *t;
} ld_entry;

typedef struct ld_src {
    const char *where;      /* the path given, for messages */
    char *dir;              /* checkpoint directory; NULL for a single file */
    char *index_path;       /* dir/model.safetensors.index.json when it exists */
    json_t *index;          /* parsed index, or NULL */
    json_t *weight_map;     /* borrowed from index */
    ld_file *files;         /* opened files (index mode: lazily, on first use) */
    size_t n_files, cap_files;
    ld_entry *table;        /* without index: every tensor of every file, sorted by name */
    size_t n_table;
    unsigned char *scratch; /* LD_SCRATCH bytes */
    int dry;                /* check names, dtypes and shapes only; read and convert nothing */
    hc_progress_fn progress;/* optional: bytes read of the tensors the dry pass counted */
    void *progress_user;
    uint64_t done, total;
} ld_src;

typedef struct ld_ref {     /* a tensor found by name */
    const char *name;
    hci_st_file *st;
    const hci_st_tensor *t;
} ld_ref;

static const char *errno_text(int e, char *buf, size_t n) { return strerror_r(e, buf, n); }

static char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int oom(const char *what, char *err, size_t errsz)
{
    return hci_errf(err, errsz, HC_ERR_OUT_OF_MEMORY, "out of memory (%s)", what);
}

/* Read a whole small text file (at most limit bytes) as a NUL-terminated string. */
static int read_text(const char *path, size_t limit, char **out, char *err, size_t errsz)
{
    char eb[128];
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) return hci_errf(err, errsz, HC_ERR_IO, "%s: %s", path, errno_text(errno, eb, sizeof eb));
    struct stat sb;
    int st = HC_OK;
    size_t n = 0;
    char *text = NULL;
    if (fstat(fileno(fp), &sb) != 0)
        st = hci_errf(err, errsz, HC_ERR_IO, "%s: %s", path, errno_text(errno, eb, sizeof eb));
    else if (!S_ISREG(sb.st_mode)) st = hci_errf(err, errsz, HC_ERR_IO, "%s: not a regular file", path);
    else if ((uint64_t)sb.st_size > limit)
        st = hci_errf(err, errsz, HC_ERR_LIMIT, "%s: %lld bytes (at most %zu)", path, (long long)sb.st_size, limit);
    else if (!(text = malloc((n = (size_t)sb.st_size) + 1))) st = oom(path, err, errsz);
    else if (fread(text, 1, n, fp) != n)
        st = hci_errf(err, errsz, HC_ERR_IO, "%s: short read (%s)", path,
                      ferror(fp) ? errno_text(errno, eb, sizeof eb) : "file changed while read");
    else if (memchr(text, 0, n)) st = hci_errf(err, errsz, HC_ERR_FORMAT, "%s: holds a NUL byte", path);
    fclose(fp);
    if (st) {
        free(text);
        return st;
    }
    text[n] = 0;
    *out = text;
    return HC_OK;
}

/* ---- configuration ---- */

/* config.json text -> cfg. Only a JSON object is accepted here: hci_config_from_text() would
 * also take a preset name, which a file must not be able to select. */
static int parse_config(const char *text, const char *where, hci_config *cfg, char *err, size_t errsz)
{
    const char *p = text;
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++;
    if (*p != '{') return hci_errf(err, errsz, HC_ERR_FORMAT, "%s: the configuration is not a JSON object", where);
    char msg[HCI_ERRLEN] = "";
    int st = hci_config_from_text(text, cfg, msg, sizeof msg);
    if (st) hci_errf(err, errsz, st, "%s: %s", where, msg);
    return st;
}

static int config_from_dir(const char *dir, hci_config *cfg, char *err, size_t errsz)
{
    char *path = path_join(dir, "config.json"), *text = NULL;
    if (!path) return oom("path", err, errsz);
    int st = read_text(path, HCI_MAX_CONFIG_TEXT, &text, err, errsz);
    if (!st) st = parse_config(text, path, cfg, err, errsz);
    free(text);
    free(path);
    return st;
}

static int config_from_file(const hci_st_file *st, hci_config *cfg, char *err, size_t errsz)
{
    const char *text = hci_st_metadata(st, "config");
    if (!text)
        return hci_errf(err, errsz, HC_ERR_FORMAT, "%s: no __metadata__ \"config\" entry (a single-file "
                        "checkpoint carries its config.json text there)", hci_st_path(st));
    char where[HCI_ERRLEN];
    snprintf(where, sizeof where, "%s: __metadata__.config", hci_st_path(st));
    return parse_config(text, where, cfg, err, errsz);
}

/* ---- tensor sources ---- */

static int add_file(ld_src *s, const char *path, const char *shard, char *err, size_t errsz)
{
    if (s->n_files == s->cap_files) {
        size_t cap = s->cap_files ? 2 * s->cap_files : 8;
        ld_file *nf = realloc(s->files, cap * sizeof *nf);
        if (!nf) return oom("file table", err, errsz);
        s->files = nf, s->cap_files = cap;
    }
    ld_file *f = &s->files[s->n_files];
    f->shard = shard ? strdup(shard) : NULL;
    if (shard && !f->shard) return oom("file table", err, errsz);
    int st = hci_st_open(path, &f->st, err, errsz);
    if (st) {
        free(f->shard);
        return st;
    }
    s->n_files++;
    return HC_OK;
}

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const ld_entry *)a)->name, ((const ld_entry *)b)->name);
}

/* Merge every opened file's tensors into one sorted table; a name in two files is an error. */
static int build_table(ld_src *s, char *err, size_t errsz)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n_files; i++) n += hci_st_count(s->files[i].st);
    s->table = calloc(n ? n : 1, sizeof *s->table);
    if (!s->table) return oom("tensor table", err, errsz);
    for (size_t i = 0; i < s->n_files; i++)
        for (size_t j = 0; j < hci_st_count(s->files[i].st); j++) {
            const hci_st_tensor *t = hci_st_at(s->files[i].st, j);
            s->table[s->n_table++] = (ld_entry){t->name, s->files[i].st, t};
        }
    qsort(s->table, s->n_table, sizeof *s->table, cmp_entry);
    for (size_t i = 1; i < s->n_table; i++)
        if (strcmp(s->table[i - 1].name, s->table[i].name) == 0)
            return hci_errf(err, errsz, HC_ERR_FORMAT, "tensor \"%.200s\" is in both %s and %s", s->table[i].name,
                            hci_st_path(s->table[i - 1].st), hci_st_path(s->table[i].st));
    return HC_OK;
}

static int is_safetensors_name(const char *name)
{
    static const char ext[] = ".safetensors";
    size_t n = strlen(name), e = sizeof ext - 1;
    return n > e && strcmp(name + n - e, ext) == 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The *.safetensors names of dir, sorted (so that messages do not depend on readdir order). */
static int list_shards(const char *dir, char ***out, size_t *count, char *err, size_t errsz)
{
    DIR *d = opendir(dir);
    if (!d) {
        char eb[128];
        return hci_errf(err, errsz, HC_ERR_IO, "%s: %s", dir, errno_text(errno, eb, sizeof eb));
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    int st = HC_OK;
    struct dirent *de;
    while (!st && (de = readdir(d))) {
        if (!is_safetensors_name(de->d_name)) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            char **nn = realloc(names, cap * sizeof *nn);
            if (!nn) st = oom("directory listing", err, errsz);
            else names = nn;
        }
        if (!st && !(names[n] = strdup(de->d_name))) st = oom("directory listing", err, errsz);
        if (!st) n++;
    }
    closedir(d);
    if (!st && n) qsort(names, n, sizeof *names, cmp_str);
    *out = names;
    *count = n;
    return st;
}

static int open_dir_shards(ld_src *s, char *err, size_t errsz)
{
    char **names = NULL;
    size_t n = 0;
    int st = list_shards(s->dir, &names, &n, err, errsz);
    if (!st && n == 0)
        st = hci_errf(err, errsz, HC_ERR_MISSING_TENSOR, "%s: no " LD_INDEX_FILE " and no *.safetensors file",
                      s->dir);
    for (size_t i = 0; i < n && !st; i++) {
        char *path = path_join(s->dir, names[i]);
        st = path ? add_file(s, path, NULL, err, errsz) : oom("path", err, errsz);
        free(path);
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    return st ? st : build_table(s, err, errsz);
}

/* Shard names come from the file: only plain names inside the directory are allowed. */
static int check_shard_name(const char *index_path, const char *tensor, const json_t *v, char *err, size_t errsz)
{
    const char *s = json_string_value(v);
    if (!s)
        return hci_errf(err, errsz, HC_ERR_FORMAT, "%s: weight_map[\"%.200s\"] is not a string", index_path, tensor);
    if (!*s || strchr(s, '/') || strstr(s, ".."))
        return hci_errf(err, errsz, HC_ERR_FORMAT, "%s: weight_map[\"%.200s\"] = \"%.100s\" is not a plain file "
                        "name in the checkpoint directory", index_path, tensor, s);
    return HC_OK;
}

static int load_index(ld_src *s, const char *index_path, char *err, size_t errsz)
{
    char *text = NULL;
    int st = read_text(index_path, LD_MAX_INDEX_TEXT, &text, err, errsz);
    if (st) return st;
    json_error_t je;
    s->index = json_loadb(text, strlen(text), JSON_REJECT_DUPLICATES, &je);
    free(text);
    if (!s->index)
        return hci_errf(err, errsz, HC_ERR_FORMAT, "%s: %s (line %d, column %d)", index_path, je.text, je.line,
                        je.column);
    s->weight_map = json_object_get(s->index, "weight_map");
    if (!json_is_object(s->weight_map))
        return hci_errf(err, errsz, HC_ERR_FORMAT, "%s: no \"weight_map\" object", index_path);
    const char *key;
    json_t *val;
    json_object_foreach(s->weight_map, key, val) {
        if ((st = check_shard_name(index_path, key, val, err, errsz))) return st;
    }
    return HC_OK;
}

/* Open the tensor sources of a directory: the index when present, else every *.safetensors. */
static int open_dir(ld_src *s, char *err, size_t errsz)
{
    s->index_path = path_join(s->dir, LD_INDEX_FILE);
    if (!s->index_path) return oom("path", err, errsz);
    struct stat sb;
    /* NOLINTNEXTLINE(clang-analyzer-unix.Malloc): index_path stays in s, src_close() frees it */
    if (stat(s->index_path, &sb) == 0) return load_index(s, s->index_path, err, errsz);
    if (errno != ENOENT) {
        char eb[128];
        return hci_errf(err, errsz, HC_ERR_IO, "%s: %s", s->index_path, errno_text(errno, eb, sizeof eb));
    }
    free(s->index_path);
    s->index_path = NULL;
    return open_dir_shards(s, err, errsz);
}

static int missing(const char *name, const char *where, char *err, size_t errsz)
{
    return hci_errf(err, errsz, HC_ERR_MISSING_TENSOR, "%.200s: missing (in %s)", name, where);
}

/* The shard named by the index, opened on first use. */
static int index_shard(ld_src *s, const char *shard, hci_st_file **out, char *err, size_t errsz)
{
    for (size_t i = 0; i < s->n_files; i++)
        if (strcmp(s->files[i].shard, shard) == 0) {
            *out = s->files[i].st;
            return HC_OK;
        }
    char *path = path_join(s->dir, shard);
    if (!path) return oom("path", err, errsz);
    int st = add_file(s, path, shard, err, errsz);
    free(path);
    if (!st) *out = s->files[s->n_files - 1].st;
    return st;
}

static int find_tensor(ld_src *s, const char *name, ld_ref *r, char *err, size_t errsz)
{
    r->name = name;
    if (s->weight_map) {
        const char *shard = json_string_value(json_object_get(s->weight_map, name));
        if (!shard) return missing(name, s->index_path, err, errsz);
        int st = index_shard(s, shard, &r->st, err, errsz);
        if (st) return st;
        r->t = hci_st_find(r->st, name);
        if (!r->t) {
            char where[HCI_ERRLEN];
            snprintf(where, sizeof where, "%s, the shard " LD_INDEX_FILE " names", hci_st_path(r->st));
            return missing(name, where, err, errsz);
        }
        return HC_OK;
    }
    ld_entry key = {.name = name};
    const ld_entry *e = bsearch(&key, s->table, s->n_table, sizeof key, cmp_entry);
    if (!e) return missing(name, s->where, err, errsz);
    r->st = e->st, r->t = e->t;
    return HC_OK;
}

static void src_close(ld_src *s)
{
    for (size_t i = 0; i < s->n_files; i++) {
        hci_st_close(s->files[i].st);
        free(s->files[i].shard);
    }
    free(s->files);
    free(s->table);
    json_decref(s->index);
    free(s->index_path);
    free(s->dir);
    free(s->scratch);
}

/* ---- shape and dtype checks ---- */

#define DT(x) (1u << HCI_ST_##x)

static void dtypes_str(unsigned mask, char *buf, size_t bufsz)
{
    size_t n = 0;
    int k = 0, total = 0;
    for (unsigned b = mask; b; b &= b - 1) total++;
    buf[0] = 0;
    for (int d = 0; d < HCI_ST_N_DTYPES && n < bufsz; d++) {
        if (!(mask & (1u << d))) continue;
        const char *sep = k == 0 ? "" : k == total - 1 ? " or " : ", ";
        n += (size_t)snprintf(buf + n, bufsz - n, "%s%s", sep, hci_st_dtype_name((hci_st_dtype)d));
        k++;
    }
}

/* r must be one of the dtypes in mask, of shape [d0] (ndim 1) or [d0][d1] (ndim 2). */
static int check_tensor(const ld_ref *r, unsigned mask, int ndim, int64_t d0, int64_t d1, char *err, size_t errsz)
{
    const hci_st_tensor *t = r->t;
    int ok = (mask & (1u << t->dtype)) && t->ndim == ndim && t->shape[0] == d0 && (ndim < 2 || t->shape[1] == d1);
    if (ok) return HC_OK;
    char have[160], want[64], dts[64];
    hci_st_shape_str(t, have, sizeof have);
    if (ndim == 1) snprintf(want, sizeof want, "[%" PRId64 "]", d0);
    else snprintf(want, sizeof want, "[%" PRId64 ", %" PRId64 "]", d0, d1);
    dtypes_str(mask, dts, sizeof dts);
    return hci_errf(err, errsz, HC_ERR_TENSOR, "%.200s (in %s): %s %s, expected %s %s", r->name, hci_st_path(r->st),
                    hci_st_dtype_name(t->dtype), have, dts, want);
}

/* ---- streaming conversion ---- */

/* Converts n elements of src (first = index of src[0] in the tensor) into the destination.
 * Returns NULL, or what is wrong with element first + *bad. */
typedef const char *(*ld_conv)(void *arg, const unsigned char *src, size_t first, size_t n, size_t *bad);

static float get_f32(const unsigned char *p, size_t i)
{
    float v;
    memcpy(&v, p + 4 * i, 4);
    return v;
}

static uint16_t get_u16(const unsigned char *p, size_t i)
{
    uint16_t v;
    memcpy(&v, p + 2 * i, 2);
    return v;
}

static int bf16_finite(uint16_t h) { return (h & 0x7f80u) != 0x7f80u; }
static int e4m3_is_nan(uint8_t c) { return (c & 0x7fu) == 0x7fu; }

static const char *conv_fp8_codes(void *arg, const unsigned char *src, size_t first, size_t n, size_t *bad)
{
    uint8_t *dst = (uint8_t *)arg + first;
    for (size_t i = 0; i < n; i++) {
        if (e4m3_is_nan(src[i])) {
            *bad = i;
            return "NaN code";
        }
        dst[i] = src[i];
    }
    return NULL;
}

static const char *conv_scale_e8m0(void *arg, const unsigned char *src, size_t first, size_t n, size_t *bad)
{
    float *dst = (float *)arg + first;
    for (size_t i = 0; i < n; i++) {
        if (src[i] == 255) {
            *bad = i;
            return "NaN scale (F8_E8M0 byte 255)";
        }
        dst[i] = ldexpf(1.0f, (int)src[i] - 127);
    }
    return NULL;
}

static const char *conv_scale_f32(void *arg, const unsigned char *src, size_t first, size_t n, size_t *bad)
{
    float *dst = (float *)arg + first;
    for (size_t i = 0; i < n; i++) {
        float v = get_f32(src, i);
        if (!(isfinite(v) && v > 0)) {
            *bad = i;
            return "scale that is not finite and positive";
        }
        dst[i] = v;
    }
    return NULL;
}

static const char *conv_bf16_bf16(void *arg, const unsigned char *src, size_t first, size_t n, size_t *bad)
{
    uint16_t *dst = (uint16_t *)arg + first;
    for (size_t i = 0; i < n; i++) {
        uint16_t h = get_u16(src, i);
        if (!bf16_finite(h)) {
            *bad = i;
            return "non-finite value";
        }
        dst[i] = h;
    }
    return NULL;
}

/* Round to nearest even; a value that overflows bf16 is refused like an infinity. */
static const char *conv_f32_bf16(void *arg, const unsigned char *src, size_t first, size_t n, size_t *bad)
{
    uint16_t *dst = (uint16_t *)arg + first;
    for (size_t i = 0; i < n; i++) {
        uint16_t h = hci_bf16_from_f32(get_f32(src, i));
        if (!bf16_finite(h)) {
            *bad = i;
            return "value that is not finite in bf16";
        }
        dst[i] = h;
    }
    return NULL;
}

static const char *conv_f32_f32(void *arg, const unsigned char *src, size_t first, size_t n, size_t *bad)
{
    float *dst = (float *)arg + first;
    for (size_t i = 0; i < n; i++) {
        float v = get_f32(src, i);
        if (!isfinite(v)) {
            *bad = i;
            return "non-finite value";
        }
        dst[i] = v;
    }
    return NULL;
}

static const char *conv_bf16_f32(void *arg, const unsigned char *src, size_t first, size_t n, size_t *bad)
{
    float *dst = (float *)arg + first;
    for (size_t i = 0; i < n; i++) {
        uint16_t h = get_u16(src, i);
        if (!bf16_finite(h)) {
            *bad = i;
            return "non-finite value";
        }
        dst[i] = hci_f32_from_bf16(h);
    }
    return NULL;
}

typedef struct ld_dequant {  /* FP8 codes with 128x128 block scales -> bf16 */
    uint16_t *dst;
    size_t cols, scale_cols;
    const float *scale;
} ld_dequant;

/* As the official converter: fp32 code value times its block scale, rounded once to bf16. */
static const char *conv_fp8_bf16(void *arg, const unsigned char *src, size_t first, size_t n, size_t *bad)
{
    const ld_dequant *q = arg;
    for (size_t i = 0; i < n; i++) {
        size_t e = first + i, r = e / q->cols, c = e % q->cols;
        if (e4m3_is_nan(src[i])) {
            *bad = i;
            return "NaN code";
        }
        float v = hci_e4m3_decode(src[i]) * q->scale[r / 128 * q->scale_cols + c / 128];
        uint16_t h = hci_bf16_from_f32(v);
        if (!bf16_finite(h)) {
            *bad = i;
            return "value that is not finite in bf16";
        }
        q->dst[e] = h;
    }
    return NULL;
}

/* Stream r's tensor through the scratch buffer into conv, whole elements at a time (callers
 * have checked that the dtype is one of whole bytes). */
/* The dry pass counts the bytes that the second pass reads (the progress total). */
static void count_dry(ld_src *s, const ld_ref *r)
{
    s->total += r->t->n_elems * (hci_st_dtype_bits(r->t->dtype) / 8);
}

static int read_converted(ld_src *s, const ld_ref *r, ld_conv conv, void *arg, char *err, size_t errsz)
{
    if (s->dry) {
        count_dry(s, r);
        return HC_OK;
    }
    size_t esz = hci_st_dtype_bits(r->t->dtype) / 8, per = LD_SCRATCH / esz;
    for (uint64_t i = 0; i < r->t->n_elems; i += per) {
        size_t n = r->t->n_elems - i < per ? (size_t)(r->t->n_elems - i) : per, bad = 0;
        int st = hci_st_read_at(r->st, r->t, i * esz, s->scratch, n * esz, err, errsz);
        if (st) return st;
        const char *why = conv(arg, s->scratch, (size_t)i, n, &bad);
        if (why)
            return hci_errf(err, errsz, HC_ERR_TENSOR, "%.200s (in %s): %s at element %" PRIu64, r->name,
                            hci_st_path(r->st), why, i + bad);
        s->done += n * esz;
        if (s->progress && s->progress(s->progress_user, s->done, s->total))
            return hci_errf(err, errsz, HC_ERR_ABORTED,
                            "model load stopped by the progress callback after %" PRIu64 " of %" PRIu64 " bytes",
                            s->done, s->total);
    }
    return HC_OK;
}

/* ---- one weight of each kind ---- */

static int find_checked(ld_src *s, const char *name, unsigned mask, int ndim, int64_t d0, int64_t d1, ld_ref *r,
                        char *err, size_t errsz)
{
    int st = find_tensor(s, name, r, err, errsz);
    return st ? st : check_tensor(r, mask, ndim, d0, d1, err, errsz);
}

static int64_t blocks(int n) { return (n + 127) / 128; }

/* "<base>.scale": [ceil(rows/128)][ceil(cols/128)] in F8_E8M0 (2^(byte-127)) or F32. */
static int load_scale(ld_src *s, const char *base, int rows, int cols, float *dst, char *err, size_t errsz)
{
    char name[112];
    snprintf(name, sizeof name, "%s.scale", base);
    ld_ref r;
    int st = find_checked(s, name, DT(F8_E8M0) | DT(F32), 2, blocks(rows), blocks(cols), &r, err, errsz);
    if (st) return st;
    return read_converted(s, &r, r.t->dtype == HCI_ST_F32 ? conv_scale_f32 : conv_scale_e8m0, dst, err, errsz);
}

/* "<base>.weight" F8_E4M3 codes, kept as they are, and "<base>.scale". */
static int load_fp8(ld_src *s, const char *base, hci_fp8_mat *m, char *err, size_t errsz)
{
    char name[112];
    snprintf(name, sizeof name, "%s.weight", base);
    ld_ref r;
    int st = find_checked(s, name, DT(F8_E4M3), 2, m->rows, m->cols, &r, err, errsz);
    if (!st) st = read_converted(s, &r, conv_fp8_codes, m->w, err, errsz);
    return st ? st : load_scale(s, base, m->rows, m->cols, m->scale, err, errsz);
}

/* A bf16 matrix from BF16 (as is) or F32 (rounded to nearest even). */
static int load_bf16(ld_src *s, const char *name, hci_bf16_mat *m, char *err, size_t errsz)
{
    ld_ref r;
    int st = find_checked(s, name, DT(BF16) | DT(F32), 2, m->rows, m->cols, &r, err, errsz);
    if (st) return st;
    return read_converted(s, &r, r.t->dtype == HCI_ST_F32 ? conv_f32_bf16 : conv_bf16_bf16, m->w, err, errsz);
}

/* wo_a: BF16 or F32 like load_bf16(), or F8_E4M3 with "<base>.scale", dequantized to bf16. */
static int load_wo_a(ld_src *s, const char *base, hci_bf16_mat *m, char *err, size_t errsz)
{
    char name[112];
    snprintf(name, sizeof name, "%s.weight", base);
    ld_ref r;
    int st = find_checked(s, name, DT(BF16) | DT(F32) | DT(F8_E4M3), 2, m->rows, m->cols, &r, err, errsz);
    if (st) return st;
    if (r.t->dtype != HCI_ST_F8_E4M3)
        return read_converted(s, &r, r.t->dtype == HCI_ST_F32 ? conv_f32_bf16 : conv_bf16_bf16, m->w, err, errsz);
    if (s->dry) {
        count_dry(s, &r);
        return load_scale(s, base, m->rows, m->cols, NULL, err, errsz);
    }
    ld_dequant q = {m->w, (size_t)m->cols, (size_t)blocks(m->cols), NULL};
    float *scale = malloc((size_t)(blocks(m->rows) * blocks(m->cols)) * sizeof *scale);
    if (!scale) return oom(name, err, errsz);
    q.scale = scale;
    st = load_scale(s, base, m->rows, m->cols, scale, err, errsz);
    if (!st) st = read_converted(s, &r, conv_fp8_bf16, &q, err, errsz);
    free(scale);
    return st;
}

/* An fp32 array of shape [d0] or [d0][d1] from F32 or BF16 (widened). */
static int load_f32(ld_src *s, const char *name, int ndim, int64_t d0, int64_t d1, float *dst, char *err,
                    size_t errsz)
{
    ld_ref r;
    int st = find_checked(s, name, DT(F32) | DT(BF16), ndim, d0, d1, &r, err, errsz);
    if (st) return st;
    return read_converted(s, &r, r.t->dtype == HCI_ST_F32 ? conv_f32_f32 : conv_bf16_f32, dst, err, errsz);
}

/* ---- layers ---- */

typedef struct ld_layer {   /* names are "<prefix><suffix>" */
    ld_src *s;
    char prefix[32];        /* "layers.{i}.attn." */
    char name[96];
} ld_layer;

static const char *lname(ld_layer *l, const char *suffix)
{
    snprintf(l->name, sizeof l->name, "%s%s", l->prefix, suffix);
    return l->name;
}

/* "<pfx>compressor.": ape [ratio][coff*dc], wkv / wgate [coff*dc][dim], norm [dc]. */
static int load_comp(ld_layer *l, const char *pfx, hci_compressor_w *c, char *err, size_t errsz)
{
    char sfx[48];
    int out = c->coff * c->dc, st;
    snprintf(sfx, sizeof sfx, "%scompressor.ape", pfx);
    if ((st = load_f32(l->s, lname(l, sfx), 2, c->ratio, out, c->ape, err, errsz))) return st;
    snprintf(sfx, sizeof sfx, "%scompressor.wkv.weight", pfx);
    if ((st = load_bf16(l->s, lname(l, sfx), &c->wkv, err, errsz))) return st;
    snprintf(sfx, sizeof sfx, "%scompressor.wgate.weight", pfx);
    if ((st = load_bf16(l->s, lname(l, sfx), &c->wgate, err, errsz))) return st;
    snprintf(sfx, sizeof sfx, "%scompressor.norm.weight", pfx);
    return load_f32(l->s, lname(l, sfx), 1, c->dc, 0, c->norm, err, errsz);
}

static int load_indexer(ld_layer *l, hci_layer_w *L, char *err, size_t errsz)
{
    int st;
    if ((st = load_fp8(l->s, lname(l, "indexer.wq_b"), &L->idx_wq_b, err, errsz))) return st;
    if ((st = load_bf16(l->s, lname(l, "indexer.weights_proj.weight"), &L->idx_weights_proj, err, errsz)))
        return st;
    return load_comp(l, "indexer.", &L->idx_comp, err, errsz);
}

static int load_layer(ld_src *s, const hci_config *c, int i, hci_layer_w *L, char *err, size_t errsz)
{
    ld_layer l = {.s = s};
    snprintf(l.prefix, sizeof l.prefix, "layers.%d.attn.", i);
    int st;
    if ((st = load_fp8(s, lname(&l, "wq_a"), &L->wq_a, err, errsz)) ||
        (st = load_f32(s, lname(&l, "q_norm.weight"), 1, c->q_lora_rank, 0, L->q_norm, err, errsz)) ||
        (st = load_fp8(s, lname(&l, "wq_b"), &L->wq_b, err, errsz)) ||
        (st = load_fp8(s, lname(&l, "wkv"), &L->wkv, err, errsz)) ||
        (st = load_f32(s, lname(&l, "kv_norm.weight"), 1, c->head_dim, 0, L->kv_norm, err, errsz)) ||
        (st = load_wo_a(s, lname(&l, "wo_a"), &L->wo_a, err, errsz)) ||
        (st = load_fp8(s, lname(&l, "wo_b"), &L->wo_b, err, errsz)) ||
        (st = load_f32(s, lname(&l, "attn_sink"), 1, c->n_heads, 0, L->attn_sink, err, errsz)))
        return st;
    if (L->ratio && (st = load_comp(&l, "", &L->comp, err, errsz))) return st;
    if (L->ratio == 4 && (st = load_indexer(&l, L, err, errsz))) return st;
    return HC_OK;
}

/* Two passes: first every tensor is found and its dtype and shape checked, and only then are
 * the weights allocated and read. The configuration alone cannot make a load allocate more
 * than the tensors present can fill (a few times the checkpoint's bytes at most). */
static int load_weights(ld_src *s, struct hc_model *m, char *err, size_t errsz)
{
    int st = hci_model_shape(m, err, errsz);
    s->dry = 1;
    for (int i = 0; !st && i < m->cfg.n_layers; i++) st = load_layer(s, &m->cfg, i, &m->layers[i], err, errsz);
    s->dry = 0;
    if (!st) st = hci_model_alloc(m, err, errsz);
    if (!st && !(s->scratch = malloc(LD_SCRATCH))) st = oom("read buffer", err, errsz);
    for (int i = 0; !st && i < m->cfg.n_layers; i++) st = load_layer(s, &m->cfg, i, &m->layers[i], err, errsz);
    if (!st) m->has_weights = 1;
    return st;
}

/* ---- entry point ---- */

static int load_from_dir(ld_src *s, int with_weights, struct hc_model *m, char *err, size_t errsz)
{
    int st = config_from_dir(s->dir, &m->cfg, err, errsz);
    if (st || !with_weights) return st;
    if ((st = open_dir(s, err, errsz))) return st;
    return load_weights(s, m, err, errsz);
}

static int load_from_file(ld_src *s, const char *path, int with_weights, struct hc_model *m, char *err,
                          size_t errsz)
{
    int st = add_file(s, path, NULL, err, errsz);
    if (!st) st = config_from_file(s->files[0].st, &m->cfg, err, errsz);
    if (st || !with_weights) return st;
    if ((st = build_table(s, err, errsz))) return st;
    return load_weights(s, m, err, errsz);
}

/* On failure m may hold partly loaded weights: the caller destroys it (hci_model_destroy). */
int hci_model_load_path_progress(const char *path, int with_weights, hc_progress_fn progress, void *progress_user,
                                 struct hc_model *m, char *err, size_t errsz)
{
    struct stat sb;
    if (stat(path, &sb) != 0) {
        char eb[128];
        return hci_errf(err, errsz, HC_ERR_IO, "%s: %s", path, errno_text(errno, eb, sizeof eb));
    }
    ld_src s = {.where = path, .progress = progress, .progress_user = progress_user};
    int st;
    if (S_ISDIR(sb.st_mode)) {
        s.dir = strdup(path);
        st = s.dir ? load_from_dir(&s, with_weights, m, err, errsz) : oom("path", err, errsz);
    } else if (S_ISREG(sb.st_mode)) {
        st = load_from_file(&s, path, with_weights, m, err, errsz);
    } else {
        st = hci_errf(err, errsz, HC_ERR_IO, "%s: neither a directory nor a regular file", path);
    }
    src_close(&s);
    return st;
}
