/* container.c - encoding and decoding of the container's fixed records. */
#include "container.h"
#include <xxhash.h>

const uint8_t hcs_magic_sb[8] = {0x89, 'H', 'C', 'S', 0x0d, 0x0a, 0x1a, 0x0a};
const uint8_t hcs_magic_foot[8] = {0x89, 'H', 'C', 'F', 0x0d, 0x0a, 0x1a, 0x0a};
const uint8_t hcs_magic_end[8] = {0x89, 'H', 'C', 'E', 0x0d, 0x0a, 0x1a, 0x0a};
const uint8_t hcs_magic_toc[8] = {'H', 'C', 'S', 'T', 'O', 'C', 0, 0};

uint64_t hcs_hash(const void *p, size_t n) { return XXH3_64bits(p, n); }

/* Record offsets are relative to the record (file offset - 8). */
void hcs_record_encode(const hcs_record *r, uint8_t *o)
{
    memset(o, 0, HCS_RECORD_SIZE);
    hcs_put16(o + 0, r->major), hcs_put16(o + 2, r->minor);
    hcs_put32(o + 4, r->endian), hcs_put32(o + 8, r->block), hcs_put32(o + 12, r->record_size);
    hcs_put64(o + 16, r->required_flags), hcs_put64(o + 24, r->optional_flags);
    hcs_put64(o + 32, r->file_length), hcs_put64(o + 40, r->toc_offset);
    hcs_put64(o + 48, r->toc_length), hcs_put64(o + 56, r->toc_hash);
    memcpy(o + 64, r->uuid, 16);
    hcs_put64(o + 80, r->generation), hcs_put64(o + 88, (uint64_t)r->n_tokens);
    hcs_put32(o + 96, r->n_layers), hcs_put32(o + 100, r->cache_format);
    hcs_put32(o + 104, r->backend), hcs_put32(o + 108, r->has_weights);
    memcpy(o + 112, r->fingerprint, 32);
    hcs_put64(o + 144, r->created_ns), hcs_put64(o + 152, r->metadata_length);
    memcpy(o + 160, r->writer, 32);
}

void hcs_record_decode(const uint8_t *i, hcs_record *r)
{
    r->major = hcs_get16(i + 0), r->minor = hcs_get16(i + 2);
    r->endian = hcs_get32(i + 4), r->block = hcs_get32(i + 8), r->record_size = hcs_get32(i + 12);
    r->required_flags = hcs_get64(i + 16), r->optional_flags = hcs_get64(i + 24);
    r->file_length = hcs_get64(i + 32), r->toc_offset = hcs_get64(i + 40);
    r->toc_length = hcs_get64(i + 48), r->toc_hash = hcs_get64(i + 56);
    memcpy(r->uuid, i + 64, 16);
    r->generation = hcs_get64(i + 80), r->n_tokens = (int64_t)hcs_get64(i + 88);
    r->n_layers = hcs_get32(i + 96), r->cache_format = hcs_get32(i + 100);
    r->backend = hcs_get32(i + 104), r->has_weights = hcs_get32(i + 108);
    memcpy(r->fingerprint, i + 112, 32);
    r->created_ns = hcs_get64(i + 144), r->metadata_length = hcs_get64(i + 152);
    memcpy(r->writer, i + 160, 32);
    r->writer[31] = 0;
}

void hcs_section_encode(const hcs_section *s, uint8_t *o)
{
    hcs_put16(o + 0, s->type), hcs_put16(o + 2, s->subversion);
    hcs_put32(o + 4, s->flags), hcs_put32(o + 8, s->layer), hcs_put32(o + 12, s->dtype);
    hcs_put32(o + 16, s->row_bytes), hcs_put32(o + 20, s->rows_per_chunk);
    hcs_put64(o + 24, s->n_rows), hcs_put64(o + 32, s->offset);
    hcs_put64(o + 40, s->stored_length), hcs_put64(o + 48, s->raw_length);
    hcs_put32(o + 56, s->first_chunk), hcs_put32(o + 60, s->n_chunks);
}

void hcs_section_decode(const uint8_t *i, hcs_section *s)
{
    s->type = hcs_get16(i + 0), s->subversion = hcs_get16(i + 2);
    s->flags = hcs_get32(i + 4), s->layer = hcs_get32(i + 8), s->dtype = hcs_get32(i + 12);
    s->row_bytes = hcs_get32(i + 16), s->rows_per_chunk = hcs_get32(i + 20);
    s->n_rows = hcs_get64(i + 24), s->offset = hcs_get64(i + 32);
    s->stored_length = hcs_get64(i + 40), s->raw_length = hcs_get64(i + 48);
    s->first_chunk = hcs_get32(i + 56), s->n_chunks = hcs_get32(i + 60);
}

void hcs_chunk_encode(const hcs_chunk *c, uint8_t *o)
{
    hcs_put64(o, c->hash);
    hcs_put32(o + 8, c->stored_size), hcs_put32(o + 12, c->raw_size);
    hcs_put32(o + 16, c->codec), hcs_put32(o + 20, c->reserved);
}

void hcs_chunk_decode(const uint8_t *i, hcs_chunk *c)
{
    c->hash = hcs_get64(i);
    c->stored_size = hcs_get32(i + 8), c->raw_size = hcs_get32(i + 12);
    c->codec = hcs_get32(i + 16), c->reserved = hcs_get32(i + 20);
}

void hcs_superblock_build(const hcs_record *r, uint8_t *out)
{
    memset(out, 0, HCS_BLOCK);
    memcpy(out, hcs_magic_sb, 8);
    hcs_record_encode(r, out + HCS_RECORD_OFF);
    hcs_put64(out + HCS_SB_HASH_OFF, hcs_hash(out, HCS_SB_HASH_OFF));
}

void hcs_footer_build(const hcs_record *r, uint8_t *out)
{
    memset(out, 0, HCS_BLOCK);
    memcpy(out, hcs_magic_foot, 8);
    hcs_record_encode(r, out + HCS_RECORD_OFF);
    hcs_put64(out + HCS_FOOT_HASH_OFF, hcs_hash(out, HCS_FOOT_HASH_OFF));
    memcpy(out + HCS_END_MAGIC_OFF, hcs_magic_end, 8);
}

const char *hcs_section_name(uint32_t type)
{
    switch (type) {
    case HCS_SEC_CONFIG: return "CONFIG";
    case HCS_SEC_METADATA: return "METADATA";
    case HCS_SEC_WINDOW: return "WINDOW";
    case HCS_SEC_COMP: return "COMP";
    case HCS_SEC_COMP_STATE: return "COMP_STATE";
    case HCS_SEC_INDEX: return "INDEX";
    case HCS_SEC_INDEX_STATE: return "INDEX_STATE";
    default: return "unknown";
    }
}
