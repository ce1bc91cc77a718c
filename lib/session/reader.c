/* reader.c - validation of a session file (docs/session-format.md §6, steps 1-5) and the
 * checked chunk stream (step 7) that loads and verifies share. Nothing is allocated from a
 * size before it is validated; every offset is checked against the file's real size. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <zstd.h>
#include "dio.h"
#include "entry.h"
#include "io.h"
#include "pipe.h"
#include "session.h"
#include "../util/error.h"
#include "../util/trace.h"

#define FAIL(st, ...) return hci_errf(err, errsz, st, __VA_ARGS__)

static int src_read(const hcs_src *s, uint64_t off, size_t n, uint8_t *tmp, const uint8_t **out, char *err,
                    size_t errsz)
{
    if (off > s->size || n > s->size - off) FAIL(HC_ERR_CORRUPT, "read of %zu bytes at %" PRIu64 " past the end", n, off);
    if (s->buf) {
        *out = s->buf + off;
        return HC_OK;
    }
    *out = tmp;
    return hcs_pread_all(s->fd, tmp, n, off, s->name, err, errsz);
}

/* Zero when the first byte is and every byte equals the next (one memcmp, not a byte loop). */
static int all_zero(const uint8_t *p, size_t n)
{
    return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

hcs_chunk hcs_file_chunk(const hcs_file *f, uint32_t i)
{
    hcs_chunk c;
    hcs_chunk_decode(f->toc + HCS_TOC_HEAD + (size_t)f->n_sec * HCS_SEC_ENTRY + (size_t)i * HCS_CHUNK_ENTRY, &c);
    return c;
}

void hcs_file_close(hcs_file *f)
{
    free(f->toc), free(f->sec), free(f->plan_of), free(f->plan);
    memset(f, 0, sizeof *f);
}

/* Raw bytes of one chunk: decompress (when zstd) into rawbuf (raw_size bytes) and check the hash.
 * Writes a short reason into why on failure. */
static int decode_chunk(const hcs_chunk *ch, const uint8_t *stored, uint8_t *rawbuf, ZSTD_DCtx **dz,
                        const uint8_t **raw, char *why, size_t whysz)
{
    if (ch->codec == HCS_CODEC_ZSTD) {
        if (!*dz) {
            *dz = ZSTD_createDCtx();
            if (!*dz) return hci_errf(why, whysz, HC_ERR_OUT_OF_MEMORY, "out of memory for zstd");
            ZSTD_DCtx_setParameter(*dz, ZSTD_d_windowLogMax, HCS_ZSTD_WINDOW_LOG_MAX);
        }
        unsigned long long fcs = ZSTD_getFrameContentSize(stored, ch->stored_size);
        if (fcs != ch->raw_size)
            return hci_errf(why, whysz, HC_ERR_CORRUPT, "the zstd frame does not declare the TOC's %u bytes",
                            ch->raw_size);
        size_t fsz = ZSTD_findFrameCompressedSize(stored, ch->stored_size);
        if (ZSTD_isError(fsz) || fsz != ch->stored_size)
            return hci_errf(why, whysz, HC_ERR_CORRUPT, "not exactly one zstd frame");
        size_t n = ZSTD_decompressDCtx(*dz, rawbuf, ch->raw_size, stored, ch->stored_size);
        if (ZSTD_isError(n) || n != ch->raw_size)
            return hci_errf(why, whysz, HC_ERR_CORRUPT, "zstd: %s",
                            ZSTD_isError(n) ? ZSTD_getErrorName(n) : "short frame");
        *raw = rawbuf;
    } else {
        *raw = stored;
    }
    if (hcs_hash(*raw, ch->raw_size) != ch->hash) return hci_errf(why, whysz, HC_ERR_CORRUPT, "checksum mismatch");
    return HC_OK;
}

static const char *layer_text(const hcs_section *s, char *buf, size_t n)
{
    if (s->layer == HCS_NO_LAYER) snprintf(buf, n, "%s", hcs_section_name(s->type));
    else snprintf(buf, n, "layer %u %s", s->layer, hcs_section_name(s->type));
    return buf;
}

/* ---- steps 1-2: superblock and footer ---- */

static int check_blocks(hcs_file *f, char *err, size_t errsz)
{
    const hcs_src *src = &f->src;
    uint64_t size = src->size;
    uint8_t tmp[HCS_BLOCK];
    const uint8_t *sb;
    if (size < 8) FAIL(HC_ERR_FORMAT, "not a session file (%" PRIu64 " bytes)", size);
    int st = src_read(src, 0, size < HCS_BLOCK ? (size_t)size : HCS_BLOCK, tmp, &sb, err, errsz);
    if (st) return st;
    if (memcmp(sb, hcs_magic_sb, 8) != 0) FAIL(HC_ERR_FORMAT, "not a session file (no session magic)");
    if (size < 12) FAIL(HC_ERR_CORRUPT, "truncated: %" PRIu64 " bytes", size);
    unsigned major = hcs_get16(sb + 8), minor = hcs_get16(sb + 10);
    if (major != HCS_MAJOR)
        FAIL(HC_ERR_VERSION, "written by session format %u.%u; this build reads %u.x (up to %u.%u)", major, minor,
             HCS_MAJOR, HCS_MAJOR, HCS_MINOR);
    if (size < 2 * (uint64_t)HCS_BLOCK) FAIL(HC_ERR_CORRUPT, "truncated: %" PRIu64 " bytes, a session has at least %u", size, 2 * HCS_BLOCK);
    if (hcs_get64(sb + HCS_SB_HASH_OFF) != hcs_hash(sb, HCS_SB_HASH_OFF)) FAIL(HC_ERR_CORRUPT, "superblock checksum mismatch");
    hcs_record *r = &f->rec;
    hcs_record_decode(sb + HCS_RECORD_OFF, r);
    if (r->endian != HCS_ENDIAN) {
        if (r->endian == 0x04030201u) FAIL(HC_ERR_VERSION, "written in big-endian byte order, which this build does not read");
        FAIL(HC_ERR_CORRUPT, "bad byte-order marker 0x%08x", r->endian);
    }
    if (r->block != HCS_BLOCK || r->record_size != HCS_RECORD_SIZE)
        FAIL(HC_ERR_CORRUPT, "block size %u / record size %u, expected %u / %u", r->block, r->record_size, HCS_BLOCK,
             HCS_RECORD_SIZE);
    if (r->required_flags)
        FAIL(HC_ERR_VERSION, "the file needs features 0x%" PRIx64 " unknown to this build (written by format %u.%u)",
             r->required_flags, major, minor);
    int newer = minor > HCS_MINOR;
    if (!newer && !all_zero(sb + HCS_RECORD_OFF + HCS_RECORD_SIZE, HCS_SB_HASH_OFF - HCS_RECORD_OFF - HCS_RECORD_SIZE))
        FAIL(HC_ERR_CORRUPT, "superblock: reserved bytes are not zero");
    uint8_t rec[HCS_RECORD_SIZE];
    memcpy(rec, sb + HCS_RECORD_OFF, HCS_RECORD_SIZE);
    if (r->file_length > size)
        FAIL(HC_ERR_CORRUPT, "truncated: the file has %" PRIu64 " of its %" PRIu64 " bytes", size, r->file_length);
    if (r->file_length < size)
        FAIL(HC_ERR_CORRUPT, "%" PRIu64 " bytes of trailing data after the session", size - r->file_length);
    if (size % HCS_BLOCK) FAIL(HC_ERR_CORRUPT, "length %" PRIu64 " is not a multiple of %u", size, HCS_BLOCK);

    const uint8_t *ft;
    if ((st = src_read(src, size - HCS_BLOCK, HCS_BLOCK, tmp, &ft, err, errsz))) return st;
    if (memcmp(ft, hcs_magic_foot, 8) != 0 || memcmp(ft + HCS_END_MAGIC_OFF, hcs_magic_end, 8) != 0)
        FAIL(HC_ERR_CORRUPT, "no footer at the end of the file");
    if (hcs_get64(ft + HCS_FOOT_HASH_OFF) != hcs_hash(ft, HCS_FOOT_HASH_OFF)) FAIL(HC_ERR_CORRUPT, "footer checksum mismatch");
    if (memcmp(ft + HCS_RECORD_OFF, rec, HCS_RECORD_SIZE) != 0) FAIL(HC_ERR_CORRUPT, "footer and superblock disagree");
    if (!newer && !all_zero(ft + HCS_RECORD_OFF + HCS_RECORD_SIZE, HCS_FOOT_HASH_OFF - HCS_RECORD_OFF - HCS_RECORD_SIZE))
        FAIL(HC_ERR_CORRUPT, "footer: reserved bytes are not zero");
    if (r->n_tokens < 0) FAIL(HC_ERR_CORRUPT, "negative token count");
    if (r->n_layers < 1 || r->n_layers > HCI_MAX_LAYERS) FAIL(HC_ERR_CORRUPT, "%u layers", r->n_layers);
    if (r->metadata_length > HCS_MAX_METADATA)
        FAIL(HC_ERR_LIMIT, "metadata of %" PRIu64 " bytes, over the limit of 1 GiB", r->metadata_length);
    return HC_OK;
}

/* ---- steps 3-4: TOC, section layout, chunk table ---- */

static int read_toc(hcs_file *f, char *err, size_t errsz)
{
    const hcs_record *r = &f->rec;
    uint64_t foot = f->src.size - HCS_BLOCK;
    if (r->toc_length > HCS_MAX_TOC)
        FAIL(HC_ERR_LIMIT, "TOC of %" PRIu64 " bytes, over the limit of %llu", r->toc_length, HCS_MAX_TOC);
    if (r->toc_offset < HCS_BLOCK || r->toc_offset % HCS_BLOCK || r->toc_offset > foot || r->toc_length < HCS_TOC_HEAD ||
        r->toc_length > foot - r->toc_offset || hcs_align(r->toc_offset + r->toc_length) != foot)
        FAIL(HC_ERR_CORRUPT, "TOC at %" PRIu64 " (+%" PRIu64 ") is not where the layout puts it", r->toc_offset,
             r->toc_length);
    f->toc = malloc((size_t)r->toc_length);
    if (!f->toc) FAIL(HC_ERR_OUT_OF_MEMORY, "out of memory for the TOC");
    const uint8_t *p;
    int st = src_read(&f->src, r->toc_offset, (size_t)r->toc_length, f->toc, &p, err, errsz);
    if (st) return st;
    if (p != f->toc) memcpy(f->toc, p, (size_t)r->toc_length);
    if (hcs_hash(f->toc, (size_t)r->toc_length) != r->toc_hash) FAIL(HC_ERR_CORRUPT, "TOC checksum mismatch");
    const uint8_t *t = f->toc;
    if (memcmp(t, hcs_magic_toc, 8) != 0 || hcs_get32(t + 16) != HCS_SEC_ENTRY || hcs_get32(t + 20) != HCS_CHUNK_ENTRY ||
        hcs_get64(t + 24))
        FAIL(HC_ERR_CORRUPT, "malformed TOC header");
    f->n_sec = hcs_get32(t + 8), f->n_chunks = hcs_get32(t + 12);
    if (HCS_TOC_HEAD + (uint64_t)HCS_SEC_ENTRY * f->n_sec + (uint64_t)HCS_CHUNK_ENTRY * f->n_chunks != r->toc_length)
        FAIL(HC_ERR_CORRUPT, "TOC length %" PRIu64 " does not fit %u sections and %u chunks", r->toc_length, f->n_sec,
             f->n_chunks);
    if (f->n_sec > HCS_MAX_SECTIONS) FAIL(HC_ERR_LIMIT, "%u sections, over the limit of %u", f->n_sec, HCS_MAX_SECTIONS);
    if (f->n_sec == 0) FAIL(HC_ERR_CORRUPT, "no sections");
    f->sec = malloc(sizeof *f->sec * f->n_sec);
    f->plan_of = malloc(sizeof *f->plan_of * f->n_sec);
    if (!f->sec || !f->plan_of) FAIL(HC_ERR_OUT_OF_MEMORY, "out of memory");
    for (uint32_t i = 0; i < f->n_sec; i++) hcs_section_decode(t + HCS_TOC_HEAD + (size_t)i * HCS_SEC_ENTRY, &f->sec[i]);
    return HC_OK;
}

static int check_section(hcs_file *f, uint32_t i, uint64_t *pos, uint32_t *chunk, char *err, size_t errsz)
{
    const hcs_section *s = &f->sec[i];
    char nm[64];
    layer_text(s, nm, sizeof nm);
    uint64_t want = hcs_align(*pos);
    if (s->offset != want)
        FAIL(HC_ERR_CORRUPT, "section %u (%s) at offset %" PRIu64 ", the layout puts it at %" PRIu64, i, nm, s->offset, want);
    if (s->stored_length > f->rec.toc_offset - s->offset)
        FAIL(HC_ERR_CORRUPT, "section %u (%s) runs past the TOC", i, nm);
    *pos = s->offset + s->stored_length;
    if (s->first_chunk != *chunk || s->n_chunks > f->n_chunks - *chunk)
        FAIL(HC_ERR_CORRUPT, "section %u (%s): chunks %u+%u do not follow the previous section's", i, nm, s->first_chunk,
             s->n_chunks);
    *chunk += s->n_chunks;
    if (!s->row_bytes || !s->rows_per_chunk) FAIL(HC_ERR_CORRUPT, "section %u (%s): zero row size", i, nm);
    uint64_t chunk_raw = (uint64_t)s->rows_per_chunk * s->row_bytes;
    if (chunk_raw > HCS_MAX_CHUNK_RAW)
        FAIL(HC_ERR_LIMIT, "section %u (%s): chunks of %" PRIu64 " bytes, over the limit of %u", i, nm, chunk_raw,
             HCS_MAX_CHUNK_RAW);
    if (s->n_rows > UINT64_MAX / s->row_bytes || s->n_rows * s->row_bytes != s->raw_length)
        FAIL(HC_ERR_CORRUPT, "section %u (%s): %" PRIu64 " rows of %u bytes are not %" PRIu64 " bytes", i, nm, s->n_rows,
             s->row_bytes, s->raw_length);
    uint64_t nch = s->n_rows / s->rows_per_chunk + (s->n_rows % s->rows_per_chunk != 0);
    if (nch != s->n_chunks) FAIL(HC_ERR_CORRUPT, "section %u (%s): %u chunks, %" PRIu64 " expected", i, nm, s->n_chunks, nch);
    uint64_t stored = 0;
    for (uint32_t j = 0; j < s->n_chunks; j++) {
        hcs_chunk c = hcs_file_chunk(f, s->first_chunk + j);
        uint64_t rows = j + 1 < s->n_chunks ? s->rows_per_chunk : s->n_rows - (uint64_t)j * s->rows_per_chunk;
        if (c.raw_size != rows * s->row_bytes)
            FAIL(HC_ERR_CORRUPT, "section %u (%s) chunk %u: raw size %u, expected %" PRIu64, i, nm, j, c.raw_size,
                 rows * s->row_bytes);
        if (c.reserved) FAIL(HC_ERR_CORRUPT, "section %u (%s) chunk %u: reserved field set", i, nm, j);
        if (c.codec == HCS_CODEC_RAW) {
            if (c.stored_size != c.raw_size)
                FAIL(HC_ERR_CORRUPT, "section %u (%s) chunk %u: raw chunk stored in %u bytes", i, nm, j, c.stored_size);
        } else if (c.codec == HCS_CODEC_ZSTD) {
            if (c.stored_size == 0 || c.stored_size >= c.raw_size)
                FAIL(HC_ERR_CORRUPT, "section %u (%s) chunk %u: compressed size %u not below raw size %u", i, nm, j,
                     c.stored_size, c.raw_size);
        } else {
            FAIL(HC_ERR_VERSION, "section %u (%s) chunk %u: codec %u unknown to this build", i, nm, j, c.codec);
        }
        stored += c.stored_size;
        if (c.raw_size > f->max_raw) f->max_raw = c.raw_size;
    }
    if (stored != s->stored_length)
        FAIL(HC_ERR_CORRUPT, "section %u (%s): chunks hold %" PRIu64 " bytes, the section %" PRIu64, i, nm, stored,
             s->stored_length);
    f->total_raw += s->raw_length, f->total_stored += s->stored_length;
    return HC_OK;
}

static int check_gap(const hcs_file *f, uint64_t from, uint64_t to, char *err, size_t errsz)
{
    if (from >= to) return HC_OK;
    uint8_t tmp[HCS_BLOCK];
    const uint8_t *p;
    int st = src_read(&f->src, from, (size_t)(to - from), tmp, &p, err, errsz);
    if (st) return st;
    if (!all_zero(p, (size_t)(to - from))) FAIL(HC_ERR_CORRUPT, "non-zero padding at offset %" PRIu64, from);
    return HC_OK;
}

static int check_layout(hcs_file *f, char *err, size_t errsz)
{
    uint64_t pos = HCS_BLOCK;
    uint32_t chunk = 0;
    for (uint32_t i = 0; i < f->n_sec; i++) {
        int st = check_section(f, i, &pos, &chunk, err, errsz);
        if (!st && i + 1 < f->n_sec) st = check_gap(f, pos, hcs_align(pos), err, errsz);
        if (st) return st;
    }
    if (chunk != f->n_chunks) FAIL(HC_ERR_CORRUPT, "%u chunks in the TOC, the sections use %u", f->n_chunks, chunk);
    if (hcs_align(pos) != f->rec.toc_offset)
        FAIL(HC_ERR_CORRUPT, "the TOC is at %" PRIu64 ", the sections end at %" PRIu64, f->rec.toc_offset, pos);
    int st = check_gap(f, pos, f->rec.toc_offset, err, errsz);
    if (!st) st = check_gap(f, f->rec.toc_offset + f->rec.toc_length, f->src.size - HCS_BLOCK, err, errsz);
    return st;
}

/* ---- step 5: configuration and what each section must hold ---- */

static int known_type(uint32_t t) { return t == HCS_SEC_CONFIG || t == HCS_SEC_METADATA || (t >= HCS_SEC_WINDOW && t <= HCS_SEC_INDEX_STATE); }

static int read_config(hcs_file *f, const hcs_section *s, char *err, size_t errsz)
{
    uint32_t maxlen = hcs_config_size(HCI_MAX_LAYERS);
    if (s->layer != HCS_NO_LAYER || s->dtype != HCS_DT_BYTES || s->row_bytes != 1 || s->n_rows > maxlen)
        FAIL(HC_ERR_CORRUPT, "malformed CONFIG section");
    uint8_t *rec = malloc(maxlen), *io = malloc(maxlen), *raw = malloc(maxlen); /* stored <= raw <= n_rows */
    ZSTD_DCtx *dz = NULL;
    int st = rec && io && raw ? HC_OK : hci_errf(err, errsz, HC_ERR_OUT_OF_MEMORY, "out of memory");
    uint64_t off = s->offset, at = 0;
    for (uint32_t j = 0; !st && j < s->n_chunks; j++) {
        hcs_chunk c = hcs_file_chunk(f, s->first_chunk + j);
        const uint8_t *stored, *r;
        char why[160];
        st = src_read(&f->src, off, c.stored_size, io, &stored, err, errsz);
        if (!st && (st = decode_chunk(&c, stored, raw, &dz, &r, why, sizeof why)))
            hci_errf(err, errsz, st, "CONFIG chunk %u: %s", j, why);
        if (!st) memcpy(rec + at, r, c.raw_size);
        off += c.stored_size, at += c.raw_size;
    }
    if (!st) st = hcs_config_decode(rec, s->n_rows, &f->cfg, err, errsz);
    if (!st && (uint32_t)f->cfg.n_layers != f->rec.n_layers)
        st = hci_errf(err, errsz, HC_ERR_CORRUPT, "superblock says %u layers, CONFIG %d", f->rec.n_layers, f->cfg.n_layers);
    ZSTD_freeDCtx(dz);
    free(rec), free(io), free(raw);
    return st;
}

static int check_semantics(hcs_file *f, char *err, size_t errsz)
{
    int newer = f->rec.minor > HCS_MINOR;
    const hcs_section *cfg_sec = NULL;
    for (uint32_t i = 0; i < f->n_sec; i++) {
        const hcs_section *s = &f->sec[i];
        char nm[64];
        if (!known_type(s->type)) {
            if (!(s->flags & HCS_SEC_OPTIONAL))
                FAIL(HC_ERR_VERSION, "section %u has type %u, unknown to this build (written by format %u.%u)", i, s->type,
                     f->rec.major, f->rec.minor);
            continue;
        }
        if (s->flags && !newer) FAIL(HC_ERR_CORRUPT, "section %u (%s): unknown flags 0x%x", i, layer_text(s, nm, sizeof nm), s->flags);
        if (s->subversion != 1)
            FAIL(HC_ERR_VERSION, "section %u (%s): version %u unknown to this build", i, layer_text(s, nm, sizeof nm),
                 s->subversion);
        if (!cfg_sec) {
            if (s->type != HCS_SEC_CONFIG) FAIL(HC_ERR_CORRUPT, "the first section is %s, not CONFIG", hcs_section_name(s->type));
            cfg_sec = s;
        }
    }
    if (!cfg_sec) FAIL(HC_ERR_CORRUPT, "no CONFIG section");
    int st = read_config(f, cfg_sec, err, errsz);
    if (st) return st;
    if (f->rec.n_tokens > f->cfg.max_positions)
        FAIL(HC_ERR_CORRUPT, "%" PRId64 " tokens, over the model's max_position_embeddings %" PRId64, f->rec.n_tokens,
             f->cfg.max_positions);
    f->n_plan = hcs_plan_count(&f->cfg);
    f->plan = malloc(sizeof *f->plan * f->n_plan);
    if (!f->plan) FAIL(HC_ERR_OUT_OF_MEMORY, "out of memory");
    hcs_plan_build(&f->cfg, f->rec.n_tokens, f->rec.metadata_length, f->plan);
    uint32_t k = 0;
    for (uint32_t i = 0; i < f->n_sec; i++) {
        const hcs_section *s = &f->sec[i];
        f->plan_of[i] = -1;
        if (!known_type(s->type)) continue;
        char nm[64], en[64];
        layer_text(s, nm, sizeof nm);
        if (k == f->n_plan) FAIL(HC_ERR_CORRUPT, "section %u (%s) is one too many", i, nm);
        const hcs_plan_sec *p = &f->plan[k];
        hcs_section ps = {.type = p->type, .layer = p->layer};
        layer_text(&ps, en, sizeof en);
        if (s->type != p->type || s->layer != p->layer) FAIL(HC_ERR_CORRUPT, "section %u is %s where %s belongs", i, nm, en);
        if (s->dtype != p->dtype || s->row_bytes != p->row_bytes)
            FAIL(HC_ERR_CORRUPT, "%s: dtype %u with %u-byte rows, expected dtype %u with %u-byte rows", nm, s->dtype,
                 s->row_bytes, p->dtype, p->row_bytes);
        if (s->n_rows != p->n_rows)
            FAIL(HC_ERR_CORRUPT, "%s: %" PRIu64 " rows, %" PRIu64 " expected at %" PRId64 " tokens", nm, s->n_rows, p->n_rows,
                 f->rec.n_tokens);
        if ((p->dtype == HCS_DT_FP8_ENTRY || p->dtype == HCS_DT_FP4_ENTRY) && s->rows_per_chunk % HCI_PAGE_ENTRIES)
            FAIL(HC_ERR_CORRUPT, "%s: %u rows per chunk is not a multiple of %d", nm, s->rows_per_chunk, HCI_PAGE_ENTRIES);
        for (uint32_t j = 0; p->type == HCS_SEC_METADATA && j < s->n_chunks; j++)
            if (hcs_file_chunk(f, s->first_chunk + j).codec != HCS_CODEC_RAW) FAIL(HC_ERR_CORRUPT, "METADATA must be stored raw");
        f->plan_of[i] = (int32_t)k++;
    }
    if (k != f->n_plan) {
        hcs_section ps = {.type = f->plan[k].type, .layer = f->plan[k].layer};
        char en[64];
        FAIL(HC_ERR_CORRUPT, "section %s is missing", layer_text(&ps, en, sizeof en));
    }
    return HC_OK;
}

int hcs_file_open(hcs_file *f, const hcs_src *src, char *err, size_t errsz)
{
    memset(f, 0, sizeof *f);
    f->src = *src;
    int st = check_blocks(f, err, errsz);
    if (!st) st = read_toc(f, err, errsz);
    if (!st) st = check_layout(f, err, errsz);
    if (!st) st = check_semantics(f, err, errsz);
    if (st) hcs_file_close(f);
    return st;
}

/* ---- step 7: the chunk stream ---- */

typedef struct rslot {
    hcs_piece pc;
    hcs_chunk ch;
    const uint8_t *stored;
    uint8_t *b_raw, *b_pg;      /* host_buf (from r->bufs when pin_raw / pin_pg), made at the slot's first use */
    uint8_t *dst;               /* != NULL: the chunk's raw bytes go here (they are its pages) */
    int in_place;               /* stored == dst: read straight into the pages */
    int status;
    char err[200];
    ZSTD_DCtx *dz;
} rslot;

/* A unit of a file stream: the bytes [off, end) of the file, all three offsets multiples of
 * HCS_DIO_ALIGN (the chunks themselves are not), read into a buffer, or with dst straight into the
 * pages of a section. Chunks first .. first+n-1 (stream order) end in it: a buffered unit holds
 * them whole; in a direct run a chunk may start in an earlier unit, and a unit may end none. A
 * buffered unit reads only [rd, end): the carry [off, rd), the start of its first chunk, was read
 * by the unit before (buffered too) and is copied from that one's buffer, so that the reads are
 * one sequential stream, each starting where the one before ended, like the raw read's. */
typedef struct runit {
    uint64_t off, rd, end;
    uint64_t first;
    uint32_t n;
    uint8_t *dst;
    uint32_t buf;               /* dst == NULL: the how-manieth buffered unit (its buffer: buf % n_ubuf) */
    uint32_t sec;               /* the section it starts in */
} runit;

typedef struct reader {
    const hcs_file *f;
    int fmt;
    uint8_t *const *dest;       /* [n_sec] or NULL: where sections' pages are (hcs_file_stream) */
    const hcs_bufs *bufs;       /* NULL, or where the buffers that pieces may point into come from */
    int pin_raw, pin_pg;        /* the slots' b_raw / b_pg come from bufs */
    hci_entry_layout cm, ci, xm, xi;
    rslot *slots;
    int n_slots;
    hcs_pipe *pipe;
    /* file streams */
    hcs_dio *dio;
    runit *units;
    uint32_t n_units;
    uint32_t n_desc;            /* units in flight or queued at most: unit u uses dio unit u % n_desc */
    uint32_t n_bunits;          /* buffered units (their reads go into ubuf) */
    uint32_t n_ubuf;            /* buffers of the buffered units (direct ones read into the pages) */
    size_t ucap;                /* bytes of each */
    size_t cap_pg;              /* bytes of a slot's b_pg */
    uint8_t *ubuf[HCS_READ_BUFS_MAX]; /* host_buf (from bufs when given), allocated as first needed */
    int eager;                  /* release buffered units as their chunks are applied, before waiting for a read */
    int cut;                    /* HCS_CUT_*: how runs of buffered chunks are cut into units */
    uint32_t u_read, u_wait;    /* units queued for reading / whose reads were waited for */
    uint32_t u_done;            /* units whose slot is free again (direct: waited; buffered: applied) */
    uint32_t b_done;            /* buffered units among them */
    atomic_int no_huge;         /* hcs_populate of the pages (direct units, zstd chunks): slow huge pages */
    uint64_t seq, fin;          /* chunks submitted / applied */
    hci_trace *trace;           /* NULL: none (lib/util/trace.h) */
} reader;

/* The pages of section i (dest[i]): whole blocks, one page each (the fp8 format). */
static size_t section_pages(const reader *r, uint32_t i)
{
    const hcs_section *s = &r->f->sec[i];
    return (size_t)((s->n_rows + HCI_PAGE_ENTRIES - 1) / HCI_PAGE_ENTRIES) * HCI_PAGE_ENTRIES * s->row_bytes;
}

/* Make [p, p + n) of section i's pages resident; when huge pages turn out slow, decline them
 * from p on, in this section and every later one (once, not per range: each change of the
 * mapping takes the address space's lock for writing, which waits for the other threads'
 * populates). */
static void populate(reader *r, uint32_t i, uint8_t *p, size_t n)
{
    uint64_t t0 = r->trace ? hci_now_ns() : 0;
    int tripped = hcs_populate(p, n, &r->no_huge);
    if (t0) hci_trace_add(r->trace, HCI_T_POPULATE, hci_now_ns() - t0, n);
    if (!tripped && hcs_hooks.huge_slow) tripped = atomic_exchange(&r->no_huge, 1) == 0;
    if (!tripped) return;
    for (uint32_t k = i; k < r->f->n_sec; k++) {
        if (!r->dest[k]) continue;
        uint8_t *from = k == i ? p + n : r->dest[k], *end = r->dest[k] + section_pages(r, k);
        if (from < end) hcs_decline_huge(from, (size_t)(end - from));
    }
}

static void check_chunk(reader *r, rslot *s);

static void load_work(void *arg, int si)
{
    reader *r = arg;
    rslot *s = &r->slots[si];
    uint64_t t0 = r->trace ? hci_now_ns() : 0;
    s->pc.pages = NULL;
    /* the consumer may still be copying out of this slot's buffers (its previous piece) */
    for (int k = 0; k < 2 && r->bufs && r->bufs->wait; k++) {
        const uint8_t *b = k ? s->b_pg : s->b_raw;
        if (!(k ? r->pin_pg : r->pin_raw)) continue;
        if ((s->status = r->bufs->wait(r->bufs->arg, b, s->err, sizeof s->err))) return;
    }
    uint64_t t1 = t0 ? hci_now_ns() : 0;
    check_chunk(r, s);
    if (t0) {
        hci_trace_add(r->trace, HCI_T_WORK_BUFWAIT, t1 - t0, 0);
        hci_trace_add(r->trace, HCI_T_WORK, hci_now_ns() - t1, s->ch.raw_size);
    }
}

/* Decompress, hash and check the slot's chunk, and convert its entries (load_work). */
static void check_chunk(reader *r, rslot *s)
{
    const hcs_section *sec = &r->f->sec[s->pc.sec];
    char nm[64], why[160];
    if (s->dst && !s->in_place) populate(r, s->pc.sec, s->dst, s->ch.raw_size);
    s->status = decode_chunk(&s->ch, s->stored, s->dst && s->ch.codec == HCS_CODEC_ZSTD ? s->dst : s->b_raw, &s->dz,
                             &s->pc.raw, why, sizeof why);
    if (s->status) {
        hci_errf(s->err, sizeof s->err, s->status, "%s chunk %u: %s", layer_text(sec, nm, sizeof nm), s->pc.chunk, why);
        return;
    }
    int32_t p = r->f->plan_of[s->pc.sec];
    if (p < 0) return;
    uint32_t dt = r->f->plan[p].dtype;
    if (dt != HCS_DT_FP8_ENTRY && dt != HCS_DT_FP4_ENTRY) return;
    const hci_entry_layout *cl = dt == HCS_DT_FP4_ENTRY ? &r->ci : &r->cm, *x = dt == HCS_DT_FP4_ENTRY ? &r->xi : &r->xm;
    size_t bb = (size_t)HCI_PAGE_ENTRIES * cl->entry_bytes;
    for (uint32_t b = 0; b * HCI_PAGE_ENTRIES < s->pc.rows; b++) {
        int k = (int)(s->pc.rows - b * HCI_PAGE_ENTRIES < HCI_PAGE_ENTRIES ? s->pc.rows - b * HCI_PAGE_ENTRIES : HCI_PAGE_ENTRIES);
        int bad = hcs_block_check(cl, s->pc.raw + b * bb, k);
        if (bad >= 0) {
            s->status = hci_errf(s->err, sizeof s->err, HC_ERR_CORRUPT, "%s row %" PRIu64 ": entry is not canonical",
                                 layer_text(sec, nm, sizeof nm), s->pc.row0 + (uint64_t)b * HCI_PAGE_ENTRIES + (uint64_t)bad);
            return;
        }
    }
    if (s->dst) { /* full blocks are pages: in place already, or copied here, in parallel */
        if (s->pc.raw != s->dst) memcpy(s->dst, s->pc.raw, s->ch.raw_size);
        s->pc.raw = s->pc.pages = s->dst;
        return;
    }
    if (!r->fmt) return;
    if (r->fmt == HCI_FMT_FP8 && s->pc.rows % HCI_PAGE_ENTRIES == 0) { /* a full block is a page */
        s->pc.pages = s->pc.raw;
        return;
    }
    size_t pb = hci_page_bytes(x);
    for (uint32_t b = 0; b * HCI_PAGE_ENTRIES < s->pc.rows; b++) {
        int k = (int)(s->pc.rows - b * HCI_PAGE_ENTRIES < HCI_PAGE_ENTRIES ? s->pc.rows - b * HCI_PAGE_ENTRIES : HCI_PAGE_ENTRIES);
        hcs_page_from_block(cl, s->pc.raw + b * bb, k, x, s->b_pg + b * pb);
    }
    s->pc.pages = s->b_pg;
}

/* Where chunk j of section i goes in the section's pages (dest), or NULL: entries in the fp8
 * format whose chunk holds whole blocks, since a canonical fp8 block is byte for byte a page. */
static uint8_t *chunk_dst(const reader *r, uint32_t i, uint32_t j, const hcs_chunk *c)
{
    const hcs_section *s = &r->f->sec[i];
    if (!r->dest || !r->dest[i] || r->fmt != HCI_FMT_FP8 || (c->raw_size / s->row_bytes) % HCI_PAGE_ENTRIES) return NULL;
    return r->dest[i] + (size_t)j * s->rows_per_chunk * s->row_bytes;
}

/* Chunks of section i read straight into its pages: the leading raw chunks of whole blocks,
 * whose file bytes map to the pages one to one from the (aligned) section start. */
static uint32_t direct_chunks(const reader *r, uint32_t i)
{
    uint32_t j = 0;
    const hcs_section *s = &r->f->sec[i];
    for (; j < s->n_chunks; j++) {
        hcs_chunk c = hcs_file_chunk(r->f, s->first_chunk + j);
        if (c.codec != HCS_CODEC_RAW || !chunk_dst(r, i, j, &c)) break;
    }
    return j;
}

/* Where a buffered chunk is in the file (plan_units). */
typedef struct bchunk {
    uint64_t off, end;
    uint32_t sec;
} bchunk;

/* Cut a run of buffered chunks c[0..m) (consecutive in the file; g: the stream index of c[0])
 * into units u[n], ...; returns the new unit count. HCS_CUT_GRID: a run longer than target is
 * read in the blocks of the file's target grid, the raw benchmark's, each extended to the next
 * grid point where no chunk would end in it (chunks larger than target); the others: units of
 * whole chunks of at most target bytes (one chunk when larger). */
static uint32_t cut_run(reader *r, const bchunk *c, uint32_t m, uint64_t g, uint64_t target, runit *u, uint32_t n,
                        size_t *cap)
{
    uint64_t run_end = hcs_align(c[m - 1].end), rd = c[0].off / HCS_DIO_ALIGN * HCS_DIO_ALIGN;
    for (uint32_t j = 0, k; j < m; j = k) {
        uint64_t base = c[j].off / HCS_DIO_ALIGN * HCS_DIO_ALIGN, hi;
        k = j + 1;
        if (r->cut == HCS_CUT_GRID) {
            hi = run_end - rd <= target ? run_end : (rd / target + 1) * target;
            for (;; hi = run_end - hi <= target ? run_end : hi + target) {
                while (k < m && c[k].end <= hi) k++;
                if (c[k - 1].end <= hi) break; /* some chunk ends in (rd, hi] */
            }
        } else {
            while (k < m && hcs_align(c[k].end) - base <= target) k++;
            hi = hcs_align(c[k - 1].end);
        }
        /* base <= rd: c[j] starts where the chunk before ended (or at its section's aligned start),
         * at most at rd, the aligned end of the unit before */
        uint64_t from = r->cut == HCS_CUT_OVERLAP || rd < base ? base : rd;
        u[n] = (runit){.off = base, .rd = from, .end = hi, .first = g + j, .n = k - j, .dst = NULL, .buf = r->n_bunits++,
                       .sec = c[j].sec};
        if (hi - base > *cap) *cap = (size_t)(hi - base);
        n++, rd = hi;
    }
    return n;
}

/* Units of about `target` bytes covering every chunk in file order: direct runs cut at aligned
 * offsets (the last one's aligned end reaches at most 4095 bytes past the run: into the next
 * chunk's page, which its upload rewrites whole later, or the block's slack), the other chunks
 * in buffered units (cut_run). Returns their number into r->units, *cap the largest buffered
 * unit; 0 units and r->units NULL when out of memory. */
static uint32_t plan_units(reader *r, uint64_t target, size_t *cap)
{
    const hcs_file *f = r->f;
    target = (target + HCS_DIO_ALIGN - 1) / HCS_DIO_ALIGN * HCS_DIO_ALIGN;
    runit *u = malloc(sizeof *u * (f->n_chunks + f->n_sec + f->total_stored / target + 1));
    bchunk *run = malloc(sizeof *run * (f->n_chunks ? f->n_chunks : 1));
    uint32_t n = 0, m = 0; /* units, chunks of the buffered run not cut yet */
    r->units = u, *cap = HCS_DIO_ALIGN, r->n_bunits = 0;
    if (!u || !run) {
        free(u), free(run);
        r->units = NULL;
        return 0;
    }
    uint64_t g = 0;
    for (uint32_t i = 0; i < f->n_sec; i++) {
        const hcs_section *sec = &f->sec[i];
        uint64_t off = sec->offset;
        uint32_t d = direct_chunks(r, i), j = 0;
        if (d) {
            if (m) n = cut_run(r, run, m, g - m, target, u, n, cap), m = 0;
            uint64_t run_end = off;
            for (uint32_t k = 0; k < d; k++) run_end += hcs_file_chunk(f, sec->first_chunk + k).stored_size;
            uint64_t cend = off + hcs_file_chunk(f, sec->first_chunk).stored_size;
            for (uint64_t pos = off, stop = hcs_align(run_end); pos < stop; n++) {
                uint64_t hi = stop - pos < target ? stop : pos + target;
                u[n] = (runit){.off = pos, .rd = pos, .end = hi, .first = g, .n = 0, .dst = r->dest[i] + (pos - off), .buf = 0,
                               .sec = i};
                for (; j < d && cend <= hi; j++, g++, u[n].n++)
                    if (j + 1 < d) cend += hcs_file_chunk(f, sec->first_chunk + j + 1).stored_size;
                pos = hi;
            }
            off = run_end;
        }
        for (; j < sec->n_chunks; j++, g++) {
            uint64_t end = off + hcs_file_chunk(f, sec->first_chunk + j).stored_size;
            run[m++] = (bchunk){off, end, i};
            off = end;
        }
    }
    if (m) n = cut_run(r, run, m, g - m, target, u, n, cap);
    free(run);
    return n;
}

/* hcs_dio_prep_fn: a direct unit's pages are made resident before its read, on the populate
 * threads, as soon as the unit is queued. */
static void prep_unit(void *arg, const hcs_unit *b)
{
    reader *r = arg;
    const runit *u = &r->units[b->tag];
    if (u->dst) populate(r, u->sec, u->dst, (size_t)(u->end - u->off));
}

/* A host buffer of n bytes, HCS_DIO_ALIGN-aligned (unit buffers take O_DIRECT reads), from bufs
 * when pin. */
static uint8_t *host_buf(const reader *r, int pin, size_t n)
{
    void *b = NULL;
    uint64_t t0 = r->trace ? hci_now_ns() : 0;
    if (pin && r->bufs) b = r->bufs->alloc(r->bufs->arg, n); /* pin is only set with bufs */
    else if (posix_memalign(&b, HCS_DIO_ALIGN, n)) b = NULL;
    if (t0) hci_trace_add(r->trace, HCI_T_BUF_ALLOC, hci_now_ns() - t0, n);
    return b;
}

static void host_buf_free(const reader *r, int pin, void *p)
{
    if (!p) return;
    uint64_t t0 = r->trace ? hci_now_ns() : 0;
    if (pin && r->bufs) r->bufs->free(r->bufs->arg, p);
    else free(p);
    if (t0) hci_trace_add(r->trace, HCI_T_BUF_FREE, hci_now_ns() - t0, 0);
}

/* A slot's buffers, made at its first use (page-locking them all before the first read would
 * delay it): b_raw for decompressed chunks, b_pg for converted pages. */
static int slot_bufs(const reader *r, rslot *s, char *err, size_t errsz)
{
    s->b_raw = host_buf(r, r->pin_raw, r->f->max_raw ? r->f->max_raw : 1);
    if (r->fmt && s->b_raw) s->b_pg = host_buf(r, r->pin_pg, r->cap_pg);
    if (!s->b_raw || (r->fmt && !s->b_pg)) return hci_errf(err, errsz, HC_ERR_OUT_OF_MEMORY, "out of memory for the load buffers");
    return HC_OK;
}

/* Whether unit u starts with a carry from the unit before (runit). */
static int carries(const runit *u) { return u->rd > u->off; }

/* Unit k's carry, copied out of the buffer of unit k - 1 (buffered: cut_run carries only inside a
 * run; advance keeps that buffer until then) after k's read, before its chunks go to the workers. */
static void take_carry(reader *r, uint32_t k)
{
    const runit *u = &r->units[k], *p = &r->units[k - 1];
    uint64_t t0 = r->trace ? hci_now_ns() : 0;
    memcpy(r->ubuf[u->buf % r->n_ubuf], r->ubuf[p->buf % r->n_ubuf] + (u->off - p->off), (size_t)(u->rd - u->off));
    if (t0) hci_trace_add(r->trace, HCI_T_CARRY, hci_now_ns() - t0, u->rd - u->off);
}

/* Free the slots of units that are done with (direct: waited for; buffered: every chunk
 * applied and the next unit's carry taken), then queue unit reads while slots (and, for
 * buffered units, buffers) are free.
 * Direct units hold no buffer, so their reads are queued up to n_desc units ahead of the
 * calling thread, and their pages are made resident (prep_unit) as soon as they are queued:
 * fresh pages cost the kernel about as much CPU to fault in as the disk takes to fill them, and
 * on threads of their own that runs ahead of the reads instead of between them. A unit buffer is
 * allocated when a read first needs it (the first reads start after one allocation, and the
 * page-locking of the others runs while the disk works). */
static int advance(reader *r, char *err, size_t errsz)
{
    for (; r->u_done < r->u_read; r->u_done++) {
        const runit *u = &r->units[r->u_done];
        if (u->dst ? r->u_done >= r->u_wait : r->fin < u->first + u->n) break;
        if (!u->dst && r->u_done + 1 < r->n_units && carries(&r->units[r->u_done + 1]) && r->u_done + 1 >= r->u_wait)
            break; /* the next unit's carry is still to be copied out of this buffer */
        if (!u->dst) r->b_done++;
        if (r->trace) r->trace->units[r->u_done].released = hci_trace_at(r->trace);
    }
    while (r->u_read < r->n_units && r->u_read < r->u_done + r->n_desc) {
        const runit *u = &r->units[r->u_read];
        uint8_t *dst = u->dst;
        if (!dst) {
            if (u->buf >= r->b_done + r->n_ubuf) break;
            uint8_t **b = &r->ubuf[u->buf % r->n_ubuf];
            if (!*b && !(*b = host_buf(r, r->bufs != NULL, r->ucap)))
                return hci_errf(err, errsz, HC_ERR_OUT_OF_MEMORY, "out of memory for the load buffers");
            dst = *b;
        }
        hcs_unit *b = hcs_dio_unit(r->dio, (int)(r->u_read % r->n_desc));
        b->off = u->rd, b->len = (size_t)(u->end - u->rd);
        b->dst = dst + (u->rd - u->off);
        b->tag = r->u_read;
        if (r->trace) {
            r->trace->units[r->u_read].queued = hci_trace_at(r->trace);
            r->trace->units[r->u_read].bytes = b->len;
        }
        hcs_dio_submit(r->dio, (int)(r->u_read % r->n_desc));
        r->u_read++;
    }
    return HC_OK;
}

/* Apply the oldest submitted chunk. */
static int finish_one(reader *r, hcs_apply_fn apply, void *arg, char *err, size_t errsz)
{
    rslot *s = &r->slots[r->fin++ % (uint64_t)r->n_slots];
    uint64_t t0 = r->trace ? hci_now_ns() : 0;
    hcs_pipe_wait(r->pipe, (int)(s - r->slots));
    uint64_t t1 = t0 ? hci_now_ns() : 0;
    int st = s->status ? hci_errf(err, errsz, s->status, "%s", s->err) : apply ? apply(arg, &s->pc, err, errsz) : HC_OK;
    if (t0) {
        hci_trace_add(r->trace, HCI_T_WAIT_CHECK, t1 - t0, 0);
        hci_trace_add(r->trace, HCI_T_APPLY, hci_now_ns() - t1, s->pc.raw_bytes);
    }
    if (!st && r->dio) st = advance(r, err, errsz);
    return st;
}

/* Whether the oldest unit not yet released holds a buffer that applying its chunks frees. */
static int buffer_held(const reader *r)
{
    return r->u_done < r->u_wait && !r->units[r->u_done].dst;
}

/* Wait for the reads of every unit up to cu (the unit the next chunk ends in); a unit not yet
 * queued waits for a slot: applying chunks frees them. While the read waited for is still
 * running, the chunks submitted before it are applied first (eager): they free the buffers of
 * their units, so that the next reads are queued at once and the disk always has work. Waiting
 * for the read first, as this did before, kept every buffer full of read but unapplied units
 * until the calling thread ran out of queued reads: then one read at a time, the disk idle in
 * between (docs/perf/NEXT-cuda-load.md). */
static int wait_units(reader *r, uint32_t cu, hcs_apply_fn apply, void *arg, char *err, size_t errsz)
{
    while (r->u_wait <= cu) {
        int st;
        if (r->u_wait >= r->u_read) {
            if ((st = advance(r, err, errsz))) return st;
            if (r->u_wait < r->u_read) continue;
            if (r->fin == r->seq) return hci_errf(err, errsz, HC_ERR_INTERNAL, "unit %u cannot be read", r->u_wait);
            st = finish_one(r, apply, arg, err, errsz);
        } else if (r->eager && r->fin < r->seq && buffer_held(r) && !hcs_dio_ready(r->dio, (int)(r->u_wait % r->n_desc))) {
            st = finish_one(r, apply, arg, err, errsz);
        } else {
            uint64_t t0 = r->trace ? hci_now_ns() : 0;
            st = hcs_dio_wait(r->dio, (int)(r->u_wait % r->n_desc), err, errsz);
            if (t0) {
                uint64_t t1 = hci_now_ns();
                hci_trace_add(r->trace, HCI_T_WAIT_READ, t1 - t0, 0);
                hci_trace_unit *tu = &r->trace->units[r->u_wait];
                const hcs_unit *b = hcs_dio_unit(r->dio, (int)(r->u_wait % r->n_desc));
                tu->start = b->t_start, tu->end = b->t_end, tu->waited = t1 - r->trace->t0 + 1;
            }
            if (!st && carries(&r->units[r->u_wait])) take_carry(r, r->u_wait);
            if (!st) r->u_wait++, st = advance(r, err, errsz);
        }
        if (st) return st;
    }
    return HC_OK;
}

static void reader_free(reader *r)
{
    hcs_dio_cancel(r->dio); /* after a failure: the reads still queued are not needed */
    hcs_pipe_destroy(r->pipe);
    hcs_dio_destroy(r->dio);
    for (uint32_t i = 0; i < r->n_ubuf; i++) host_buf_free(r, r->bufs != NULL, r->ubuf[i]);
    for (int i = 0; r->slots && i < r->n_slots; i++) {
        rslot *s = &r->slots[i];
        host_buf_free(r, r->pin_raw, s->b_raw);
        host_buf_free(r, r->pin_pg, s->b_pg);
        ZSTD_freeDCtx(s->dz);
    }
    free(r->slots), free(r->units);
}

int hcs_file_stream(const hcs_file *f, int fmt, int n_workers, uint8_t *const *dest, const hcs_bufs *bufs,
                    hcs_apply_fn apply, void *arg, char *err, size_t errsz)
{
    reader r;
    memset(&r, 0, sizeof r);
    r.f = f, r.fmt = fmt, r.dest = dest, r.bufs = bufs;
    r.trace = hci_trace_tls;
    uint64_t t_start = r.trace ? hci_now_ns() : 0;
    hci_session_knobs knobs;
    hci_session_knobs_get(&knobs);
    r.eager = knobs.eager != 0;
    r.cut = knobs.cut >= 0 ? knobs.cut : HCS_CUT_DEFAULT;
    atomic_init(&r.no_huge, 0);
    /* Pieces point into the unit buffers (raw chunks), b_raw (decompressed chunks) or b_pg (pages
     * converted to the context's format): the slot buffers come from bufs when they can be the
     * pages of a piece often (b_raw: the file has zstd chunks; b_pg: a format other than fp8,
     * whose chunks are all converted). A piece in a malloc'd buffer is copied synchronously. */
    for (uint32_t i = 0; bufs && i < f->n_chunks && !r.pin_raw; i++) r.pin_raw = hcs_file_chunk(f, i).codec == HCS_CODEC_ZSTD;
    r.pin_pg = bufs && fmt && fmt != HCI_FMT_FP8;
    r.cm = hcs_canon_main(&f->cfg), r.ci = hcs_canon_index(&f->cfg);
    r.xm = hci_layout_main(fmt ? fmt : HCI_FMT_FP8, f->cfg.head_dim, f->cfg.rope_dim);
    r.xi = hci_layout_index(fmt ? fmt : HCI_FMT_FP8, f->cfg.index_head_dim);
    size_t cap_pg = 1;
    for (uint32_t i = 0; fmt && i < f->n_sec; i++) {
        int32_t p = f->plan_of[i];
        if (p < 0 || (f->plan[p].dtype != HCS_DT_FP8_ENTRY && f->plan[p].dtype != HCS_DT_FP4_ENTRY)) continue;
        uint64_t rows = f->sec[i].rows_per_chunk < f->sec[i].n_rows ? f->sec[i].rows_per_chunk : f->sec[i].n_rows;
        size_t pg = (size_t)((rows + HCI_PAGE_ENTRIES - 1) / HCI_PAGE_ENTRIES) *
                    hci_page_bytes(f->plan[p].dtype == HCS_DT_FP4_ENTRY ? &r.xi : &r.xm);
        if (pg > cap_pg) cap_pg = pg;
    }
    r.n_slots = n_workers ? 2 * n_workers + 2 : 1;
    r.slots = calloc((size_t)r.n_slots, sizeof *r.slots);
    r.cap_pg = cap_pg;
    int st = r.slots ? HC_OK : HC_ERR_OUT_OF_MEMORY;
    if (!st && !f->src.buf) { /* a file: read in units, ahead of the workers */
        size_t cap = 0;
        uint64_t target = hcs_hooks.io_unit ? hcs_hooks.io_unit
                          : knobs.unit_mib > 0 ? (uint64_t)knobs.unit_mib << 20 : HCS_IO_UNIT;
        r.n_units = plan_units(&r, target, &cap);
        /* raw chunks' pieces point into the buffers of buffered units (allocated by advance, from
         * bufs like the slots'): as many as such units, up to HCS_READ_BUFS; two at least, since a
         * unit's buffer is kept until the next one has taken its carry */
        uint32_t nb = knobs.read_bufs > 0 ? (uint32_t)knobs.read_bufs : HCS_READ_BUFS;
        r.n_ubuf = r.n_bunits < nb ? r.n_bunits : nb < 2 ? 2 : nb;
        r.ucap = cap;
        r.n_desc = r.n_ubuf > HCS_READ_AHEAD ? r.n_ubuf : HCS_READ_AHEAD;
        int direct = hcs_hooks.direct_io ? hcs_hooks.direct_io > 0 : f->total_stored >= HCS_DIRECT_MIN;
        int n_io = HCS_READ_THREADS;
        if (!n_workers) n_io = 1;
        else if (knobs.read_threads > 0) n_io = knobs.read_threads;
        int n_pop = n_workers < HCS_POPULATE_THREADS ? n_workers : HCS_POPULATE_THREADS;
        if (!r.units || !(r.dio = hcs_dio_create(f->src.fd, f->src.name, 0, direct, (int)r.n_desc, 0, n_io, bufs)) ||
            (dest && hcs_dio_set_prep(r.dio, prep_unit, &r, n_pop)))
            st = HC_ERR_OUT_OF_MEMORY;
        if (!st && r.trace) {
            hci_trace *t = r.trace;
            free(t->units);
            t->n_units = 0;
            if ((t->units = calloc(r.n_units ? r.n_units : 1, sizeof *t->units))) {
                t->n_units = r.n_units;
                t->read_threads = n_io, t->read_bufs = (int)r.n_ubuf, t->populate_threads = dest ? n_pop : 0;
                t->direct = direct, t->eager = r.eager, t->cut = r.cut, t->unit_bytes = target;
                hcs_dio_set_trace(r.dio, t);
            } else {
                r.trace = NULL;
            }
        }
    }
    if (r.trace) r.trace->workers = n_workers, r.trace->n_chunks = f->n_chunks, r.trace->session_bytes = f->src.size;
    if (!st && !(r.pipe = hcs_pipe_create(n_workers, r.n_slots, load_work, &r))) st = HC_ERR_OUT_OF_MEMORY;
    if (st) {
        reader_free(&r);
        FAIL(st, "out of memory for the load buffers");
    }
    if (r.dio) st = advance(&r, err, errsz);
    uint32_t cu = 0; /* the unit the next chunk ends in */
    for (uint32_t i = 0; i < f->n_sec && !st; i++) {
        const hcs_section *sec = &f->sec[i];
        uint64_t off = sec->offset;
        uint32_t d = r.dio ? direct_chunks(&r, i) : 0;
        for (uint32_t j = 0; j < sec->n_chunks && !st; j++) {
            hcs_chunk ch = hcs_file_chunk(f, sec->first_chunk + j);
            const uint8_t *stored = NULL;
            uint8_t *dst = chunk_dst(&r, i, j, &ch);
            if (r.dio) {
                while (r.seq >= r.units[cu].first + r.units[cu].n) cu++;
                if ((st = wait_units(&r, cu, apply, arg, err, errsz))) break;
                stored = j < d ? dst : r.ubuf[r.units[cu].buf % r.n_ubuf] + (off - r.units[cu].off);
            } else if ((st = src_read(&f->src, off, ch.stored_size, NULL, &stored, err, errsz))) {
                break;
            }
            if (r.seq - r.fin == (uint64_t)r.n_slots && (st = finish_one(&r, apply, arg, err, errsz))) break;
            rslot *s = &r.slots[r.seq % (uint64_t)r.n_slots];
            if (!s->b_raw && (st = slot_bufs(&r, s, err, errsz))) break;
            s->ch = ch, s->stored = stored, s->dst = dst, s->in_place = j < d;
            s->pc.sec = i, s->pc.chunk = j, s->pc.row0 = (uint64_t)j * sec->rows_per_chunk;
            s->pc.rows = ch.raw_size / sec->row_bytes;
            s->pc.raw_bytes = ch.raw_size;
            off += ch.stored_size;
            hcs_pipe_submit(r.pipe, (int)(r.seq++ % (uint64_t)r.n_slots));
        }
    }
    while (r.fin < r.seq) { /* drain in order; after an error only wait */
        if (st) hcs_pipe_wait(r.pipe, (int)(r.fin++ % (uint64_t)r.n_slots));
        else st = finish_one(&r, apply, arg, err, errsz);
    }
    reader_free(&r);
    if (t_start) hci_trace_add(r.trace, HCI_T_STREAM, hci_now_ns() - t_start, f->total_stored);
    return st;
}
