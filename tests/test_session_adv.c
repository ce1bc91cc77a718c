/* test_session_adv.c - hostile session files (the adversarial list of the session spec, §7):
 * truncation at every header byte, bit flips everywhere, wrong magics and versions, TOC and
 * size lies, codec attacks, semantic lies and non-canonical entries. Every load must fail with
 * the expected status and leave the target context exactly as it was. Files with valid
 * checksums but lying contents are made by re-signing patched bytes (resign) or by rebuilding a
 * parsed file (tf_*), so that each case reaches the check it is about. */
#define ZSTD_STATIC_LINKING_ONLY
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>
#include "hybridctx.h"
#include "hybridctx_experimental.h"
#include "session/container.h"
#include "model/model.h"
#include "session/entry.h"
#include "session/session.h"
#include "test_session_util.h"
#include "testutil.h"
#include "runner.h"

static hc_model *g_model;
static hc_ctx *g_target;
static uint64_t g_digest;
static uint8_t *g_s, *g_z; /* a raw and a zstd session of 300 tokens with metadata */
static uint64_t g_sn, g_zn;

static void setup(void)
{
    g_model = tsu_model(tsu_micro_json, 1, 1);
    hc_ctx *c = tsu_ctx(g_model, HC_CACHE_FP8, 0);
    ck_assert_int_eq(hc_x_ctx_fill_random(c, 300, 7), HC_OK);
    uint8_t meta[100];
    for (int i = 0; i < 100; i++) meta[i] = (uint8_t)(i / 10); /* compressible */
    ck_assert_int_eq(hc_ctx_set_metadata(c, meta, sizeof meta), HC_OK);
    g_s = tsu_save(c, HC_COMPRESS_NONE, &g_sn);
    g_z = tsu_save(c, HC_COMPRESS_ZSTD, &g_zn);
    hc_ctx_free(c);
    g_target = tsu_ctx(g_model, HC_CACHE_FP8, 0);
    ck_assert_int_eq(hc_x_ctx_fill_random(g_target, 200, 8), HC_OK);
    ck_assert_int_eq(hc_ctx_set_metadata(g_target, "target", 6), HC_OK);
    g_digest = tsu_digest(g_target);
}

static void teardown(void)
{
    free(g_s), free(g_z);
    hc_ctx_free(g_target);
    hc_model_free(g_model);
}

/* The load must fail with want (any error when want is 1) and change nothing. */
static void refuse(const uint8_t *b, uint64_t n, hc_status want, const char *needle, const char *what)
{
    hc_status st = hc_ctx_load_buffer(g_target, b, n);
    if (want == 1) ck_assert_msg(st != HC_OK, "%s: loaded", what);
    else ck_assert_msg(st == want, "%s: %s (%s), expected %s", what, hc_status_name(st), hc_ctx_last_error(g_target),
                       hc_status_name(want));
    if (needle)
        ck_assert_msg(strstr(hc_ctx_last_error(g_target), needle), "%s: message '%s' lacks '%s'", what,
                      hc_ctx_last_error(g_target), needle);
    ck_assert_int_eq(hc_ctx_n_tokens(g_target), 200);
    const void *md;
    uint64_t ml;
    hc_ctx_get_metadata(g_target, &md, &ml);
    ck_assert_uint_eq(ml, 6);
    ck_assert_msg(tsu_digest(g_target) == g_digest, "%s: the context changed", what);
}

static void accept_load(const uint8_t *b, uint64_t n, const char *what)
{
    hc_ctx *c = tsu_ctx(g_model, HC_CACHE_BF16, 0);
    ck_assert_msg(hc_ctx_load_buffer(c, b, n) == HC_OK, "%s: %s", what, hc_ctx_last_error(c));
    hc_ctx *r = tsu_ctx(g_model, HC_CACHE_BF16, 0);
    ck_assert_int_eq(hc_ctx_load_buffer(r, g_s, g_sn), HC_OK);
    ck_assert_uint_eq(tsu_digest(c), tsu_digest(r));
    hc_ctx_free(c), hc_ctx_free(r);
}

static uint8_t *dup(const uint8_t *b, uint64_t n)
{
    uint8_t *d = malloc(n ? n : 1);
    memcpy(d, b, n);
    return d;
}

/* Recompute the TOC hash (into both records) and the superblock and footer hashes. */
static void resign(uint8_t *b, uint64_t n)
{
    uint64_t toff = hcs_get64(b + 8 + 40), tlen = hcs_get64(b + 8 + 48);
    if (toff < n && tlen <= n - toff) {
        uint64_t h = hcs_hash(b + toff, tlen);
        hcs_put64(b + 8 + 56, h);
        hcs_put64(b + n - 4096 + 8 + 56, h);
    }
    hcs_put64(b + HCS_SB_HASH_OFF, hcs_hash(b, HCS_SB_HASH_OFF));
    hcs_put64(b + n - 4096 + HCS_FOOT_HASH_OFF, hcs_hash(b + n - 4096, HCS_FOOT_HASH_OFF));
}

static hcs_record record_of(const uint8_t *b)
{
    hcs_record r;
    hcs_record_decode(b + HCS_RECORD_OFF, &r);
    return r;
}

static void set_record(uint8_t *b, uint64_t n, const hcs_record *r)
{
    hcs_record_encode(r, b + HCS_RECORD_OFF);
    hcs_record_encode(r, b + n - 4096 + HCS_RECORD_OFF);
    resign(b, n);
}

static uint8_t *toc_of(uint8_t *b) { return b + hcs_get64(b + 8 + 40); }
static uint8_t *sec_entry(uint8_t *b, uint32_t i) { return toc_of(b) + HCS_TOC_HEAD + (size_t)i * HCS_SEC_ENTRY; }
static uint32_t n_secs(uint8_t *b) { return hcs_get32(toc_of(b) + 8); }
static uint8_t *chunk_entry(uint8_t *b, uint32_t i)
{
    return toc_of(b) + HCS_TOC_HEAD + (size_t)n_secs(b) * HCS_SEC_ENTRY + (size_t)i * HCS_CHUNK_ENTRY;
}
static hcs_section get_sec(uint8_t *b, uint32_t i)
{
    hcs_section s;
    hcs_section_decode(sec_entry(b, i), &s);
    return s;
}
static void put_sec(uint8_t *b, uint32_t i, const hcs_section *s) { hcs_section_encode(s, sec_entry(b, i)); }
/* index of the first section of a type (and layer, unless HCS_NO_LAYER is given for any) */
static uint32_t find_sec(uint8_t *b, uint16_t type, uint32_t layer)
{
    for (uint32_t i = 0; i < n_secs(b); i++) {
        hcs_section s = get_sec(b, i);
        if (s.type == type && (layer == HCS_NO_LAYER || s.layer == layer)) return i;
    }
    ck_abort_msg("no section %u", type);
    return 0;
}

/* ---- a parsed, editable file; tf_build lays it out again (offsets, counts, TOC, hashes) ---- */

typedef struct tf_sec {
    hcs_section s;
    hcs_chunk *e;
    uint8_t **data;
    uint32_t n;
} tf_sec;

typedef struct tf {
    hcs_record r;
    tf_sec *sec;
    uint32_t n_sec;
} tf;

static tf *tf_parse(uint8_t *b)
{
    tf *t = calloc(1, sizeof *t);
    t->r = record_of(b);
    t->n_sec = n_secs(b);
    t->sec = calloc(t->n_sec, sizeof *t->sec);
    for (uint32_t i = 0; i < t->n_sec; i++) {
        tf_sec *s = &t->sec[i];
        s->s = get_sec(b, i);
        s->n = s->s.n_chunks;
        s->e = calloc(s->n + 1, sizeof *s->e);
        s->data = calloc(s->n + 1, sizeof *s->data);
        uint64_t off = s->s.offset;
        for (uint32_t j = 0; j < s->n; j++) {
            hcs_chunk_decode(chunk_entry(b, s->s.first_chunk + j), &s->e[j]);
            s->data[j] = dup(b + off, s->e[j].stored_size);
            off += s->e[j].stored_size;
        }
    }
    return t;
}

static void tf_free(tf *t)
{
    for (uint32_t i = 0; i < t->n_sec; i++) {
        for (uint32_t j = 0; j < t->sec[i].n; j++) free(t->sec[i].data[j]);
        free(t->sec[i].e), free(t->sec[i].data);
    }
    free(t->sec), free(t);
}

static void tf_set_chunk(tf_sec *s, uint32_t j, const void *data, uint32_t stored, uint32_t codec)
{
    free(s->data[j]);
    s->data[j] = dup(data, stored);
    s->e[j].stored_size = stored, s->e[j].codec = codec;
}

static uint8_t *tf_build(const tf *t, uint64_t *len)
{
    uint64_t pos = HCS_BLOCK, nch = 0;
    for (uint32_t i = 0; i < t->n_sec; i++) {
        pos = hcs_align(pos);
        for (uint32_t j = 0; j < t->sec[i].n; j++) pos += t->sec[i].e[j].stored_size;
        nch += t->sec[i].n;
    }
    uint64_t toff = hcs_align(pos), tl = HCS_TOC_HEAD + HCS_SEC_ENTRY * (uint64_t)t->n_sec + HCS_CHUNK_ENTRY * nch;
    uint64_t n = hcs_align(toff + tl) + HCS_BLOCK;
    uint8_t *b = calloc(1, n);
    pos = HCS_BLOCK;
    uint32_t first = 0;
    uint8_t *toc = b + toff;
    memcpy(toc, hcs_magic_toc, 8);
    hcs_put32(toc + 8, t->n_sec), hcs_put32(toc + 12, (uint32_t)nch), hcs_put32(toc + 16, HCS_SEC_ENTRY);
    hcs_put32(toc + 20, HCS_CHUNK_ENTRY);
    for (uint32_t i = 0; i < t->n_sec; i++) {
        hcs_section s = t->sec[i].s;
        pos = hcs_align(pos);
        s.offset = pos, s.first_chunk = first, s.n_chunks = t->sec[i].n, s.stored_length = 0;
        for (uint32_t j = 0; j < t->sec[i].n; j++) {
            memcpy(b + pos, t->sec[i].data[j], t->sec[i].e[j].stored_size);
            pos += t->sec[i].e[j].stored_size, s.stored_length += t->sec[i].e[j].stored_size;
            hcs_chunk_encode(&t->sec[i].e[j], toc + HCS_TOC_HEAD + HCS_SEC_ENTRY * (size_t)t->n_sec +
                                                  HCS_CHUNK_ENTRY * (size_t)(first + j));
        }
        first += t->sec[i].n;
        hcs_section_encode(&s, toc + HCS_TOC_HEAD + (size_t)i * HCS_SEC_ENTRY);
    }
    hcs_record r = t->r;
    r.file_length = n, r.toc_offset = toff, r.toc_length = tl, r.toc_hash = hcs_hash(toc, tl);
    hcs_superblock_build(&r, b);
    hcs_footer_build(&r, b + n - HCS_BLOCK);
    *len = n;
    return b;
}

static tf_sec *tf_find(tf *t, uint16_t type, uint32_t layer)
{
    for (uint32_t i = 0; i < t->n_sec; i++)
        if (t->sec[i].s.type == type && (layer == HCS_NO_LAYER || t->sec[i].s.layer == layer)) return &t->sec[i];
    ck_abort_msg("no section %u", type);
    return NULL;
}

/* ---- the cases ---- */

START_TEST(test_sanity)
{
    accept_load(g_s, g_sn, "raw");
    accept_load(g_z, g_zn, "zstd");
    tf *t = tf_parse(g_s);
    uint64_t n;
    uint8_t *b = tf_build(t, &n);
    ck_assert_uint_eq(n, g_sn);
    ck_assert_mem_eq(b, g_s, n); /* the test builder lays files out as the writer does */
    free(b), tf_free(t);
    t = tf_parse(g_z);
    b = tf_build(t, &n);
    ck_assert_uint_eq(n, g_zn);
    ck_assert_mem_eq(b, g_z, n);
    free(b), tf_free(t);
}
END_TEST

START_TEST(test_truncation)
{
    uint64_t toff = record_of(g_s).toc_offset;
    for (uint64_t len = 0; len < g_sn; len++) {
        int header = len <= 8200, tail = len + 1 >= toff;
        int boundary = 0;
        for (uint32_t i = 0; i < n_secs(g_s) && !boundary; i++) {
            hcs_section s = get_sec(g_s, i);
            boundary = len + 1 >= s.offset && len <= s.offset + 1;
            boundary |= len + 1 >= s.offset + s.stored_length && len <= s.offset + s.stored_length + 1;
        }
        if (!header && !tail && !boundary && len % 97) continue;
        char what[64];
        snprintf(what, sizeof what, "truncated to %llu bytes", (unsigned long long)len);
        refuse(g_s, len, len < 8 ? HC_ERR_FORMAT : HC_ERR_CORRUPT, NULL, what);
    }
    /* and through a file: the reader meets the end of the file */
    char *dir = tu_tempdir(), *path = tu_join(dir, "t.hcs");
    uint64_t lens[] = {0, 1, 4095, 4096, 4097, 8192, g_sn / 2, g_sn - 1};
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        ck_assert_int_eq(tu_write_file(path, g_s, lens[k]), 0);
        hc_status st = hc_ctx_load(g_target, path);
        ck_assert_int_eq(st, lens[k] < 8 ? HC_ERR_FORMAT : HC_ERR_CORRUPT);
        ck_assert_ptr_nonnull(strstr(hc_ctx_last_error(g_target), path));
    }
    ck_assert_int_eq(tsu_digest(g_target), g_digest);
    tu_rmtree(dir);
    free(dir), free(path);
}
END_TEST

START_TEST(test_bit_flips)
{
    uint8_t *b = dup(g_s, g_sn);
    uint64_t toff = record_of(g_s).toc_offset, tlen = record_of(g_s).toc_length;
    /* every byte of the superblock, the TOC and the footer */
    for (uint64_t i = 0; i < g_sn; i++) {
        int in = i < 4096 || (i >= toff && i < toff + tlen) || i >= g_sn - 4096;
        if (!in) continue;
        b[i] ^= (uint8_t)(1u << (i % 8));
        hc_status want = i < 8 ? HC_ERR_FORMAT : (i == 8 || i == 9) ? HC_ERR_VERSION : HC_ERR_CORRUPT;
        char what[64];
        snprintf(what, sizeof what, "bit %llu of byte %llu", (unsigned long long)(i % 8), (unsigned long long)i);
        refuse(b, g_sn, want, NULL, what);
        b[i] = g_s[i];
    }
    /* payload and padding: random bits, and zeroed 4 KiB blocks */
    uint64_t r = 12345;
    for (int k = 0; k < 300; k++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t i = 4096 + (r >> 17) % (toff - 4096);
        b[i] ^= (uint8_t)(1u << (r >> 5 & 7));
        refuse(b, g_sn, HC_ERR_CORRUPT, NULL, "payload bit flip");
        b[i] = g_s[i];
    }
    for (uint64_t at = 4096; at + 4096 <= toff; at += 4096) {
        int nonzero = 0;
        for (uint64_t i = at; i < at + 4096; i++) nonzero |= g_s[i];
        if (!nonzero) continue;
        memset(b + at, 0, 4096);
        refuse(b, g_sn, HC_ERR_CORRUPT, NULL, "zeroed block");
        memcpy(b + at, g_s + at, 4096);
    }
    free(b);
}
END_TEST

START_TEST(test_magic_version_flags)
{
    uint8_t *b = dup(g_s, g_sn);
    b[1] = 'X';
    refuse(b, g_sn, HC_ERR_FORMAT, "not a session file", "magic");
    memcpy(b, g_s, g_sn);
    b[g_sn - 1] ^= 0xff;
    refuse(b, g_sn, HC_ERR_CORRUPT, "footer", "trailing magic");
    memcpy(b, g_s, g_sn);
    hcs_record r = record_of(b);
    r.endian = 0x04030201u;
    set_record(b, g_sn, &r);
    refuse(b, g_sn, HC_ERR_VERSION, "big-endian", "big-endian marker");
    r = record_of(g_s);
    r.major = 2;
    set_record(b, g_sn, &r);
    refuse(b, g_sn, HC_ERR_VERSION, "format 2.0; this build reads 1.x", "major + 1");
    r = record_of(g_s);
    r.minor = 1, r.required_flags = 4;
    set_record(b, g_sn, &r);
    refuse(b, g_sn, HC_ERR_VERSION, "features 0x4", "unknown required flag");
    /* a newer minor with an unknown optional flag and non-zero reserved bytes loads */
    r = record_of(g_s);
    r.minor = 1, r.optional_flags |= 1ull << 40;
    memcpy(b, g_s, g_sn);
    b[1000] = 7;
    set_record(b, g_sn, &r);
    accept_load(b, g_sn, "minor + 1, optional flag");
    /* ... but not with this minor */
    r.minor = 0;
    set_record(b, g_sn, &r);
    refuse(b, g_sn, HC_ERR_CORRUPT, "reserved", "reserved bytes");
    free(b);
    /* an unknown optional section (as a newer writer adds) is skipped; a required one refused */
    hcs_hooks.minor = 1, hcs_hooks.extra_section = 0x7f00;
    hc_ctx *c = tsu_ctx(g_model, HC_CACHE_FP8, 0);
    ck_assert_int_eq(hc_ctx_load_buffer(c, g_s, g_sn), HC_OK);
    uint64_t n;
    b = tsu_save(c, HC_COMPRESS_NONE, &n);
    hcs_hooks.minor = 0, hcs_hooks.extra_section = 0;
    ck_assert_uint_eq(n_secs(b), n_secs(g_s) + 1);
    accept_load(b, n, "optional section");
    char txt[65536];
    uint64_t tl;
    char *dir = tu_tempdir(), *path = tu_join(dir, "x.hcs");
    ck_assert_int_eq(tu_write_file(path, b, n), 0);
    ck_assert_int_eq(hc_x_session_inspect(path, HC_X_INSPECT_VERIFY, txt, sizeof txt, &tl), HC_OK);
    ck_assert_ptr_nonnull(strstr(txt, "(optional)"));
    uint32_t i = find_sec(b, 0x7f00, HCS_NO_LAYER);
    hcs_section s = get_sec(b, i);
    s.flags = 0;
    put_sec(b, i, &s);
    resign(b, n);
    refuse(b, n, HC_ERR_VERSION, "type 32512, unknown", "unknown required section");
    tu_rmtree(dir);
    free(dir), free(path), free(b);
    hc_ctx_free(c);
}
END_TEST

START_TEST(test_toc_lies)
{
    uint8_t *b = dup(g_s, g_sn);
    uint32_t ns = n_secs(b), comp = find_sec(b, HCS_SEC_COMP, 1);
    struct { const char *what; hc_status want; } cases[] = {
        {"offset + length wraps", HC_ERR_CORRUPT}, {"section past the end", HC_ERR_CORRUPT},
        {"overlapping sections", HC_ERR_CORRUPT}, {"sections out of order", HC_ERR_CORRUPT},
        {"unaligned offset", HC_ERR_CORRUPT}, {"duplicate section", HC_ERR_CORRUPT},
        {"missing section (type changed to an unknown optional one)", HC_ERR_CORRUPT},
        {"chunk range past the table", HC_ERR_CORRUPT}, {"sections share chunks", HC_ERR_CORRUPT},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        memcpy(b, g_s, g_sn);
        hcs_section s = get_sec(b, comp), p = get_sec(b, comp - 1);
        switch (k) {
        case 0: s.stored_length = UINT64_MAX - s.offset + 10; break;
        case 1: s.stored_length = g_sn; break;
        case 2: s.offset = p.offset; break;
        case 3: put_sec(b, comp - 1, &s), s = p; break;
        case 4: s.offset += 8; break;
        case 5: s = p; break;
        case 6: s.type = 0x7f01, s.flags = HCS_SEC_OPTIONAL; break;
        case 7: s.n_chunks = 1000; break;
        case 8: s.first_chunk = p.first_chunk; break;
        }
        put_sec(b, comp, &s);
        resign(b, g_sn);
        refuse(b, g_sn, cases[k].want, NULL, cases[k].what);
    }
    /* the TOC pointing at the superblock, into a section, at itself; absurd counts and lengths */
    hcs_record r0 = record_of(g_s);
    uint64_t offs[] = {0, 4096, r0.toc_offset + 4096, UINT64_MAX - 4095};
    for (size_t k = 0; k < sizeof offs / sizeof offs[0]; k++) {
        memcpy(b, g_s, g_sn);
        hcs_record r = r0;
        r.toc_offset = offs[k];
        set_record(b, g_sn, &r);
        refuse(b, g_sn, HC_ERR_CORRUPT, "TOC", "TOC offset");
    }
    memcpy(b, g_s, g_sn);
    hcs_record r = r0;
    r.toc_length = 1ull << 63;
    set_record(b, g_sn, &r);
    refuse(b, g_sn, HC_ERR_LIMIT, "TOC of", "TOC length 2^63");
    memcpy(b, g_s, g_sn);
    hcs_put32(toc_of(b) + 8, UINT32_MAX);
    resign(b, g_sn);
    refuse(b, g_sn, HC_ERR_CORRUPT, "does not fit", "n_sections = 2^32 - 1");
    memcpy(b, g_s, g_sn);
    hcs_put32(toc_of(b) + 12, ns + 1000);
    resign(b, g_sn);
    refuse(b, g_sn, HC_ERR_CORRUPT, "does not fit", "n_chunks");
    /* non-zero padding between sections and after the TOC */
    memcpy(b, g_s, g_sn);
    hcs_section s = get_sec(b, 0);
    b[s.offset + s.stored_length + 5] = 1;
    refuse(b, g_sn, HC_ERR_CORRUPT, "padding", "padding after a section");
    memcpy(b, g_s, g_sn);
    b[r0.toc_offset + r0.toc_length + 1] = 1;
    refuse(b, g_sn, HC_ERR_CORRUPT, "padding", "padding after the TOC");
    /* trailing data */
    uint8_t *big = calloc(1, g_sn + 4096);
    memcpy(big, g_s, g_sn);
    refuse(big, g_sn + 4096, HC_ERR_CORRUPT, "trailing", "trailing block");
    free(big), free(b);
}
END_TEST

START_TEST(test_size_lies)
{
    uint8_t *b = dup(g_s, g_sn);
    uint32_t comp = find_sec(b, HCS_SEC_COMP, 1);
    for (int k = 0; k < 6; k++) {
        memcpy(b, g_s, g_sn);
        hcs_section s = get_sec(b, comp);
        hc_status want = HC_ERR_CORRUPT;
        switch (k) {
        case 0: s.raw_length += 1; break;                                  /* rows x row_bytes != raw */
        case 1: s.raw_length = UINT64_MAX, s.n_rows = UINT64_MAX / 2; break; /* 16 EiB */
        case 2: s.rows_per_chunk = 1u << 30, want = HC_ERR_LIMIT; break;   /* chunks over 4 MiB */
        case 3: s.rows_per_chunk = 1; break;                               /* chunk count mismatch */
        case 4: s.row_bytes = 0; break;
        case 5: s.n_rows += 64, s.raw_length += 64ull * s.row_bytes; break;
        }
        put_sec(b, comp, &s);
        resign(b, g_sn);
        refuse(b, g_sn, want, NULL, "section size lie");
    }
    /* chunk entries: raw size, stored size 0, reserved, codec */
    for (int k = 0; k < 5; k++) {
        memcpy(b, g_s, g_sn);
        hcs_section s = get_sec(b, comp);
        hcs_chunk c;
        hcs_chunk_decode(chunk_entry(b, s.first_chunk), &c);
        hc_status want = HC_ERR_CORRUPT;
        switch (k) {
        case 0: c.raw_size += 1; break;
        case 1: c.stored_size = 0; break;
        case 2: c.reserved = 1; break;
        case 3: c.codec = 9, want = HC_ERR_VERSION; break;
        case 4: c.codec = HCS_CODEC_ZSTD; break; /* "compressed" but not smaller */
        }
        hcs_chunk_encode(&c, chunk_entry(b, s.first_chunk));
        resign(b, g_sn);
        refuse(b, g_sn, want, NULL, "chunk size lie");
    }
    free(b);
}
END_TEST

/* One zstd frame of src (declaring its size). wlog != 0: rewrite the header so that the frame
 * is not single-segment and declares a window of 2^wlog (zstd itself never writes that for a
 * small input). */
static size_t frame(uint8_t *dst, size_t cap, const uint8_t *src, size_t n, int wlog)
{
    uint8_t tmp[16384];
    size_t r = ZSTD_compress(tmp, sizeof tmp, src, n, 3);
    ck_assert(!ZSTD_isError(r));
    if (!wlog) {
        ck_assert_uint_le(r, cap);
        memcpy(dst, tmp, r);
        return r;
    }
    uint8_t fhd = tmp[4];
    int flag = fhd >> 6, ss = fhd >> 5 & 1, did = fhd & 3;
    static const int fcs_bytes[4] = {0, 2, 4, 8}, did_bytes[4] = {0, 1, 2, 4};
    size_t head = 5 + (size_t)!ss + (size_t)did_bytes[did] + (size_t)(flag == 0 && ss ? 1 : fcs_bytes[flag]);
    ck_assert_int_eq(did, 0);
    memcpy(dst, tmp, 4);
    dst[4] = (uint8_t)(0x80 | (fhd & 0x04)); /* 4-byte content size, not single-segment */
    dst[5] = (uint8_t)((wlog - 10) << 3);
    hcs_put32(dst + 6, (uint32_t)n);
    memcpy(dst + 10, tmp + head, r - head);
    return 10 + r - head;
}

START_TEST(test_codec_attacks)
{
    /* work on the CONFIG chunk: small, compressible, checked first */
    uint8_t raw[8192], fr[16384];
    for (int k = 0; k < 7; k++) {
        tf *t = tf_parse(g_s);
        tf_sec *cs = tf_find(t, HCS_SEC_CONFIG, HCS_NO_LAYER);
        uint32_t rn = cs->e[0].raw_size;
        memcpy(raw, cs->data[0], rn);
        size_t n = 0;
        const char *what = "";
        switch (k) {
        case 0: /* garbage that is not zstd */
            memset(fr, 0x5a, 40), n = 40, what = "invalid zstd bytes";
            break;
        case 1: /* a frame that declares another content size */
            n = frame(fr, sizeof fr, raw, rn - 1, 0), what = "frame content size != TOC";
            break;
        case 2: { /* two frames back to back */
            size_t a = frame(fr, sizeof fr, raw, rn / 2, 0);
            n = a + frame(fr + a, sizeof fr - a, raw + rn / 2, rn - rn / 2, 0), what = "concatenated frames";
            break;
        }
        case 3: { /* a skippable frame first */
            hcs_put32(fr, 0x184D2A50u), hcs_put32(fr + 4, 4), memset(fr + 8, 0, 4);
            n = 12 + frame(fr + 12, sizeof fr - 12, raw, rn, 0), what = "skippable frame";
            break;
        }
        case 4: /* a frame with no declared size */
            n = ZSTD_compress(fr, sizeof fr, raw, rn, 1);
            fr[4] &= 0x3f, fr[4] &= (uint8_t)~0x20; /* drop the size: the header then lacks it */
            what = "frame without a content size";
            break;
        case 5: /* a valid frame followed by junk */
            n = frame(fr, sizeof fr, raw, rn, 0);
            fr[n++] = 0;
            what = "trailing bytes after the frame";
            break;
        case 6: /* a valid frame of other bytes: the checksum catches it */
            raw[10] ^= 1;
            n = frame(fr, sizeof fr, raw, rn, 0), what = "frame of other content";
            break;
        }
        ck_assert_uint_lt(n, rn);
        tf_set_chunk(cs, 0, fr, (uint32_t)n, HCS_CODEC_ZSTD);
        uint64_t len;
        uint8_t *b = tf_build(t, &len);
        refuse(b, len, HC_ERR_CORRUPT, NULL, what);
        free(b), tf_free(t);
    }
    /* the valid frame of the right bytes loads (the cases above fail for their own reason), also
     * when it declares a 128 MiB window: decoding in one pass into the buffer the TOC sized
     * allocates no window, so a declared window costs nothing */
    tf *t;
    tf_sec *cs;
    size_t n;
    uint64_t len;
    uint8_t *b;
    for (int wlog = 0; wlog <= 27; wlog += 27) {
        t = tf_parse(g_s);
        cs = tf_find(t, HCS_SEC_CONFIG, HCS_NO_LAYER);
        n = frame(fr, sizeof fr, cs->data[0], cs->e[0].raw_size, wlog);
        tf_set_chunk(cs, 0, fr, (uint32_t)n, HCS_CODEC_ZSTD);
        b = tf_build(t, &len);
        accept_load(b, len, wlog ? "zstd CONFIG with a 2^27 window" : "hand-made zstd CONFIG");
        free(b), tf_free(t);
    }
    /* METADATA must stay raw (its size is allocated before it is read) */
    t = tf_parse(g_s);
    cs = tf_find(t, HCS_SEC_METADATA, HCS_NO_LAYER);
    n = frame(fr, sizeof fr, cs->data[0], cs->e[0].raw_size, 0);
    ck_assert_uint_lt(n, cs->e[0].raw_size);
    tf_set_chunk(cs, 0, fr, (uint32_t)n, HCS_CODEC_ZSTD);
    b = tf_build(t, &len);
    refuse(b, len, HC_ERR_CORRUPT, "METADATA", "compressed metadata");
    free(b), tf_free(t);
    /* decompression bomb: a tiny frame that declares 4 GiB */
    t = tf_parse(g_z);
    tf_sec *e = tf_find(t, HCS_SEC_COMP, 1);
    uint8_t *zeros = calloc(1, 1u << 22);
    n = frame(fr, sizeof fr, zeros, 1u << 22, 0);
    free(zeros);
    tf_set_chunk(e, 0, fr, (uint32_t)n, HCS_CODEC_ZSTD);
    b = tf_build(t, &len);
    refuse(b, len, HC_ERR_CORRUPT, NULL, "frame declaring 4 MiB for a smaller chunk");
    free(b), tf_free(t);
}
END_TEST

/* Re-hash chunk j of a section after editing its raw bytes. */
static void rehash(tf_sec *s, uint32_t j) { s->e[j].hash = hcs_hash(s->data[j], s->e[j].stored_size); }

START_TEST(test_semantic_lies)
{
    uint64_t len;
    uint8_t *b;
    /* n_tokens that the row counts do not match */
    int64_t ns[] = {0, 299, 301, 1ll << 40};
    for (size_t k = 0; k < 4; k++) {
        tf *t = tf_parse(g_s);
        t->r.n_tokens = ns[k];
        b = tf_build(t, &len);
        refuse(b, len, HC_ERR_CORRUPT, NULL, "n_tokens lie");
        free(b), tf_free(t);
    }
    /* every section's row count one off, and rows of another size */
    for (uint16_t type = HCS_SEC_WINDOW; type <= HCS_SEC_INDEX_STATE; type++) {
        tf *t = tf_parse(g_s);
        tf_sec *s = tf_find(t, type, 1);
        s->s.n_rows -= 1, s->s.raw_length -= s->s.row_bytes;
        s->e[s->n - 1].raw_size -= s->s.row_bytes;
        s->e[s->n - 1].stored_size -= s->s.row_bytes;
        rehash(s, s->n - 1);
        b = tf_build(t, &len);
        char what[64];
        snprintf(what, sizeof what, "%s rows - 1", hcs_section_name(type));
        refuse(b, len, HC_ERR_CORRUPT, "expected at 300 tokens", what);
        free(b), tf_free(t);
    }
    {
        tf *t = tf_parse(g_s);
        tf_sec *s = tf_find(t, HCS_SEC_INDEX, 1);
        s->s.dtype = HCS_DT_FP8_ENTRY;
        b = tf_build(t, &len);
        refuse(b, len, HC_ERR_CORRUPT, "dtype", "index keys with the main dtype");
        free(b), tf_free(t);
        t = tf_parse(g_s);
        s = tf_find(t, HCS_SEC_COMP, 1);
        s->s.rows_per_chunk = 32, s->s.raw_length = s->s.n_rows * s->s.row_bytes;
        b = tf_build(t, &len);
        refuse(b, len, HC_ERR_CORRUPT, NULL, "entry chunks not made of whole blocks");
        free(b), tf_free(t);
    }
    /* a stored configuration that the library refuses, and one of another layer count */
    for (int k = 0; k < 2; k++) {
        tf *t = tf_parse(g_s);
        tf_sec *s = tf_find(t, HCS_SEC_CONFIG, HCS_NO_LAYER);
        if (k == 0) hcs_put64(s->data[0] + 8 + 8 * 3, 100); /* head_dim 100 */
        else hcs_put32(s->data[0] + 4, 4);
        rehash(s, 0);
        b = tf_build(t, &len);
        refuse(b, len, HC_ERR_CORRUPT, "CONFIG", "bad configuration");
        free(b), tf_free(t);
    }
    /* sections of another model: ratio vector and fingerprint */
    {
        tf *t = tf_parse(g_s);
        t->r.fingerprint[20] ^= 1;
        b = tf_build(t, &len);
        refuse(b, len, HC_ERR_MODEL_MISMATCH, "weights", "fingerprint of other weights");
        free(b), tf_free(t);
        t = tf_parse(g_s);
        t->r.fingerprint[3] ^= 1;
        b = tf_build(t, &len);
        refuse(b, len, HC_ERR_MODEL_MISMATCH, "configuration fingerprint", "configuration fingerprint");
        free(b), tf_free(t);
        t = tf_parse(g_s);
        t->r.has_weights = 1;
        b = tf_build(t, &len);
        refuse(b, len, HC_ERR_MODEL_MISMATCH, "geometry-only", "has_weights");
        free(b), tf_free(t);
    }
    /* metadata lengths that disagree, and over the limit */
    {
        tf *t = tf_parse(g_s);
        t->r.metadata_length = 99;
        b = tf_build(t, &len);
        refuse(b, len, HC_ERR_CORRUPT, "METADATA", "metadata length");
        free(b), tf_free(t);
        t = tf_parse(g_s);
        t->r.metadata_length = (1ull << 30) + 1;
        b = tf_build(t, &len);
        refuse(b, len, HC_ERR_LIMIT, NULL, "metadata over 1 GiB");
        free(b), tf_free(t);
    }
}
END_TEST

START_TEST(test_noncanonical_entries)
{
    hc_model *m = tsu_model(tsu_micro_json, 1, 1);
    hci_entry_layout cm = hcs_canon_main(&m->cfg), ci = hcs_canon_index(&m->cfg);
    hc_model_free(m);
    for (int k = 0; k < 7; k++) {
        tf *t = tf_parse(g_s);
        tf_sec *s = tf_find(t, k < 5 ? HCS_SEC_COMP : HCS_SEC_INDEX, 1);
        const hci_entry_layout *c = k < 5 ? &cm : &ci;
        uint8_t *blk = s->data[0]; /* first block of 64 rows, row 5 */
        uint8_t *d = blk + 5 * c->data_bytes, *sc = blk + 64 * c->data_bytes + 5 * c->scale_bytes;
        const char *what = "";
        /* (the same codes under an exponent one higher are canonical: other values, which only
         * the checksum can catch) */
        switch (k) {
        case 0: /* no code of the block in the top binade: packing would pick a smaller exponent */
            for (int i = 0; i < c->qblock; i++) d[i] &= 0xbf;
            what = "block without a top-binade code";
            break;
        case 1: sc[0] = 0, what = "exponent 2^-127"; break;
        case 2: d[3] = 0x7f, what = "e4m3 NaN code"; break;
        case 3: sc[c->scale_bytes - 1] = 1, what = "non-zero exponent padding"; break;
        case 4: d[c->quant_dim + 1] = 0x7f, d[c->quant_dim] = 0x80, what = "infinite rope value"; break;
        case 5: sc[0] = 255, what = "indexer exponent 2^128"; break;
        case 6: /* every code of the first block small: the exponent is then too large */
            for (int i = 0; i < 16; i++) d[i] &= 0x11;
            what = "indexer block without a top-binade code";
            break;
        }
        rehash(s, 0);
        uint64_t len;
        uint8_t *b = tf_build(t, &len);
        refuse(b, len, HC_ERR_CORRUPT, "not canonical", what);
        free(b), tf_free(t);
    }
}
END_TEST

/* Canonical means: packing the unpacked values gives the bytes back (checked by brute force). */
START_TEST(test_canonical_rule)
{
    hc_model *m = tsu_model(tsu_micro_json, 1, 1);
    hci_entry_layout ls[2] = {hcs_canon_main(&m->cfg), hcs_canon_index(&m->cfg)};
    hc_model_free(m);
    uint64_t r = 99;
    int agree = 0, canon = 0;
    for (int trial = 0; trial < 20000; trial++) {
        const hci_entry_layout *l = &ls[trial & 1];
        uint8_t page[64 * 1200], back[64 * 1200];
        memset(page, 0, sizeof page);
        uint8_t *d = hci_entry_data(l, page, 0), *s = hci_entry_scales(l, page, 0);
        for (int i = 0; i < l->data_bytes; i++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            d[i] = (uint8_t)(r >> 33);
            if ((trial >> 1) % 3 == 0) d[i] &= 0x3f; /* often no top-binade code */
            if (!l->fp4 && i < l->quant_dim && (d[i] & 0x7f) == 0x7f) d[i] ^= 1; /* no NaN: packing is for values */
        }
        for (int i = l->quant_dim; i + 1 < l->data_bytes && !l->fp4; i += 2) d[i + 1] &= 0xbf; /* finite rope */
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        for (int b = 0; b < l->quant_dim / l->qblock; b++) s[b] = (uint8_t)(127 - 8 + (r >> (8 + 3 * b)) % 8);
        float v[1024];
        hci_entry_unpack(l, page, 0, v);
        memset(back, 0, sizeof back);
        hci_entry_pack(l, back, 0, v);
        int same = !memcmp(hci_entry_data(l, back, 0), d, (size_t)l->data_bytes) &&
                   !memcmp(hci_entry_scales(l, back, 0), s, (size_t)l->scale_bytes);
        int c = hcs_entry_canonical(l, d, s);
        agree += c == same;
        canon += c;
    }
    ck_assert_int_eq(agree, 20000);
    ck_assert_int_gt(canon, 1000);   /* both outcomes are exercised */
    ck_assert_int_lt(canon, 19000);
}
END_TEST

Suite *tu_suite(int argc, char **argv)
{
    (void)argc, (void)argv;
    Suite *s = suite_create("session_adv");
    TCase *tc = tcase_create("adversarial");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_sanity);
    tcase_add_test(tc, test_truncation);
    tcase_add_test(tc, test_bit_flips);
    tcase_add_test(tc, test_magic_version_flags);
    tcase_add_test(tc, test_toc_lies);
    tcase_add_test(tc, test_size_lies);
    tcase_add_test(tc, test_codec_attacks);
    tcase_add_test(tc, test_semantic_lies);
    tcase_add_test(tc, test_noncanonical_entries);
    tcase_add_test(tc, test_canonical_rule);
    suite_add_tcase(s, tc);
    return s;
}
