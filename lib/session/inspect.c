/* inspect.c - a description of a validated session file for `hybridctx inspect` (text or JSON,
 * the JSON through jansson so that every string is escaped). */
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "session.h"
#include "hybridctx.h"

typedef struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void put(sbuf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = b->oom ? 0 : vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (b->oom || k < 0) return;
        if (b->p && (size_t)k < b->cap - b->n) {
            b->n += (size_t)k;
            return;
        }
        size_t cap = (b->cap ? b->cap * 2 : 4096) + (size_t)k;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np, b->cap = cap;
    }
}

static void hex(const uint8_t *p, int n, char *out)
{
    for (int i = 0; i < n; i++) sprintf(out + 2 * (size_t)i, "%02x", p[i]);
}

static const char *human(double b, char *buf, size_t n)
{
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (b >= 1024 && i < 4) b /= 1024, i++;
    snprintf(buf, n, i ? "%.2f %s" : "%.0f %s", b, u[i]);
    return buf;
}

static void time_text(uint64_t ns, char *out, size_t n)
{
    time_t t = (time_t)(ns / 1000000000ull);
    struct tm tm;
    if (!gmtime_r(&t, &tm) || !strftime(out, n, "%Y-%m-%d %H:%M:%S UTC", &tm)) snprintf(out, n, "?");
}

static const char *kind(int r) { return r == 0 ? "SWA" : r == 4 ? "CSA" : "HCA"; }

/* Per section: rows, bytes and how many chunks are compressed. */
static void sec_stats(const hcs_file *f, uint32_t i, uint32_t *zchunks)
{
    *zchunks = 0;
    for (uint32_t j = 0; j < f->sec[i].n_chunks; j++) *zchunks += hcs_file_chunk(f, f->sec[i].first_chunk + j).codec == HCS_CODEC_ZSTD;
}

static int describe_json(const hcs_file *f, const char *writer, int verified, int vstatus, const char *verr, char **out)
{
    const hcs_record *r = &f->rec;
    const hci_config *c = &f->cfg;
    char fp[65], uu[33];
    hex(r->fingerprint, 32, fp), hex(r->uuid, 16, uu);
    json_t *ratios = json_array(), *secs = json_array();
    for (int l = 0; l < c->n_layers; l++) json_array_append_new(ratios, json_integer(c->ratios[l]));
    uint32_t zall = 0;
    for (uint32_t i = 0; i < f->n_sec; i++) {
        const hcs_section *s = &f->sec[i];
        uint32_t z;
        sec_stats(f, i, &z);
        zall += z;
        json_t *o = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:b}", "type", hcs_section_name(s->type), "layer",
                              s->layer == HCS_NO_LAYER ? -1 : (json_int_t)s->layer, "rows", (json_int_t)s->n_rows,
                              "row_bytes", (json_int_t)s->row_bytes, "raw_bytes", (json_int_t)s->raw_length,
                              "stored_bytes", (json_int_t)s->stored_length, "chunks", (json_int_t)s->n_chunks,
                              "zstd_chunks", (json_int_t)z, "optional", f->plan_of[i] < 0);
        json_array_append_new(secs, o);
    }
    json_t *cfg = json_pack("{s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:I, s:f, s:f, s:f, s:I, s:f, s:f, s:f, s:o}",
                            "hidden_size", c->dim, "num_hidden_layers", c->n_layers, "num_attention_heads", c->n_heads,
                            "head_dim", c->head_dim, "qk_rope_head_dim", c->rope_dim, "q_lora_rank", c->q_lora_rank,
                            "o_groups", c->o_groups, "o_lora_rank", c->o_lora_rank, "sliding_window", c->window,
                            "index_n_heads", c->index_n_heads, "index_head_dim", c->index_head_dim, "index_topk",
                            c->index_topk, "max_position_embeddings", (json_int_t)c->max_positions, "rope_theta",
                            c->rope_theta, "compress_rope_theta", c->compress_rope_theta, "rope_scaling_factor",
                            c->yarn_factor, "rope_scaling_original_max_position_embeddings",
                            (json_int_t)c->yarn_original_len, "rope_scaling_beta_fast", c->yarn_beta_fast,
                            "rope_scaling_beta_slow", c->yarn_beta_slow, "rms_norm_eps", c->norm_eps,
                            "compress_ratios", ratios);
    char ver[16];
    snprintf(ver, sizeof ver, "%u.%u", r->major, r->minor);
    json_t *root = json_pack("{s:s, s:s, s:I, s:s, s:I, s:I, s:s, s:b, s:I, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:o, s:o}",
                             "format", ver, "writer", writer, "file_bytes", (json_int_t)r->file_length, "uuid", uu,
                             "generation", (json_int_t)r->generation, "created_ns", (json_int_t)r->created_ns,
                             "fingerprint", fp, "has_weights", r->has_weights != 0, "n_tokens", (json_int_t)r->n_tokens,
                             "saved_cache_format", r->cache_format == 1 ? "bf16" : "fp8", "saved_backend",
                             r->backend == 2 ? "cuda" : "cpu", "metadata_bytes", (json_int_t)r->metadata_length,
                             "raw_bytes", (json_int_t)f->total_raw, "stored_bytes", (json_int_t)f->total_stored,
                             "chunks", (json_int_t)f->n_chunks, "zstd_chunks", (json_int_t)zall, "config", cfg,
                             "sections", secs);
    if (!root) return HC_ERR_OUT_OF_MEMORY;
    if (verified) {
        json_object_set_new(root, "verified", json_boolean(vstatus == HC_OK));
        if (vstatus) {
            json_object_set_new(root, "status", json_string(hc_status_name(vstatus)));
            json_object_set_new(root, "error", json_string(verr));
        }
    }
    *out = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    return *out ? HC_OK : HC_ERR_OUT_OF_MEMORY;
}

int hcs_describe(const hcs_file *f, int json, int verified, int vstatus, const char *verr, char **out)
{
    *out = NULL;
    char writer[32]; /* printable ASCII only: the text comes from the file */
    for (int i = 0; i < 32; i++) {
        char ch = f->rec.writer[i];
        writer[i] = ch == 0 || (ch >= 32 && ch < 127) ? ch : '?';
    }
    writer[31] = 0;
    if (json) return describe_json(f, writer, verified, vstatus, verr, out);
    const hcs_record *r = &f->rec;
    const hci_config *c = &f->cfg;
    sbuf b = {0};
    char t1[32], t2[32], tm[64], fp[65], uu[33];
    hex(r->fingerprint, 32, fp), hex(r->uuid, 16, uu);
    time_text(r->created_ns, tm, sizeof tm);
    put(&b, "format        %u.%u, written by %s on %s\n", r->major, r->minor, writer, tm);
    put(&b, "file          %s (%" PRIu64 " bytes), uuid %s, generation %" PRIu64 "\n",
        human((double)r->file_length, t1, sizeof t1), r->file_length, uu, r->generation);
    put(&b, "tokens        %" PRId64 "\n", r->n_tokens);
    put(&b, "model         fingerprint %s, %s\n", fp, r->has_weights ? "with weights" : "geometry only (no weights)");
    put(&b, "geometry      hidden %d, %d heads x %d (rope %d), q_lora %d, %d groups x %d, window %d,\n", c->dim,
        c->n_heads, c->head_dim, c->rope_dim, c->q_lora_rank, c->o_groups, c->o_lora_rank, c->window);
    put(&b, "              indexer %d x %d top-%d, max positions %" PRId64 ", rope theta %g / %g (YaRN x%g from %" PRId64 ")\n",
        c->index_n_heads, c->index_head_dim, c->index_topk, c->max_positions, c->rope_theta, c->compress_rope_theta,
        c->yarn_factor, c->yarn_original_len);
    put(&b, "layers        %d:", c->n_layers);
    for (int l = 0; l < c->n_layers; l++) put(&b, " %s", kind(c->ratios[l]));
    put(&b, "\n");
    put(&b, "saved from    %s cache, %s backend\n", r->cache_format == 1 ? "bf16" : "fp8", r->backend == 2 ? "cuda" : "cpu");
    put(&b, "metadata      %" PRIu64 " bytes\n", r->metadata_length);
    uint32_t zall = 0;
    for (uint32_t i = 0; i < f->n_sec; i++) {
        uint32_t z;
        sec_stats(f, i, &z);
        zall += z;
    }
    put(&b, "payload       %s raw, %s stored (%.3fx), %u chunks, %u zstd\n", human((double)f->total_raw, t1, sizeof t1),
        human((double)f->total_stored, t2, sizeof t2),
        f->total_stored ? (double)f->total_raw / (double)f->total_stored : 1.0, f->n_chunks, zall);
    put(&b, "sections      %-12s %6s %10s %6s %12s %12s %7s\n", "type", "layer", "rows", "row B", "raw", "stored", "chunks");
    for (uint32_t i = 0; i < f->n_sec; i++) {
        const hcs_section *s = &f->sec[i];
        char ly[16];
        if (s->layer == HCS_NO_LAYER) snprintf(ly, sizeof ly, "-");
        else snprintf(ly, sizeof ly, "%u", s->layer);
        put(&b, "              %-12s %6s %10" PRIu64 " %6u %12" PRIu64 " %12" PRIu64 " %7u%s\n",
            f->plan_of[i] < 0 ? "(optional)" : hcs_section_name(s->type), ly, s->n_rows, s->row_bytes, s->raw_length,
            s->stored_length, s->n_chunks, "");
    }
    if (verified) {
        if (vstatus == HC_OK) put(&b, "verify        OK: every checksum and entry checks\n");
        else put(&b, "verify        FAILED (%s): %s\n", hc_status_name(vstatus), verr);
    }
    if (b.oom) {
        free(b.p);
        return HC_ERR_OUT_OF_MEMORY;
    }
    *out = b.p;
    return HC_OK;
}
