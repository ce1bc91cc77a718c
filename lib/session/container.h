/* container.h - the byte layout of session files (docs/session-format.md): constants, limits,
 * little-endian field access and the decoded forms of the superblock record, section and chunk
 * entries. Everything that knows an offset inside the container lives here. */
#ifndef HCS_CONTAINER_H
#define HCS_CONTAINER_H
#include <stdint.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "session payloads (fp32 state, bf16 values) are written in host order: little-endian hosts only"
#endif

#define HCS_MAJOR 1
#define HCS_MINOR 0
#define HCS_BLOCK 4096u
#define HCS_ENDIAN 0x01020304u
#define HCS_RECORD_OFF 8
#define HCS_RECORD_SIZE 192u
#define HCS_SB_HASH_OFF 4088
#define HCS_FOOT_HASH_OFF 4080
#define HCS_END_MAGIC_OFF 4088

#define HCS_TOC_HEAD 32u
#define HCS_SEC_ENTRY 64u
#define HCS_CHUNK_ENTRY 24u

/* limits (docs/session-format.md §6) */
#define HCS_MAX_TOC (64ull << 20)
#define HCS_MAX_SECTIONS 8192u
#define HCS_MAX_CHUNK_RAW (4u << 20)
#define HCS_MAX_METADATA (1ull << 30)
#define HCS_TARGET_CHUNK (1u << 20)
#define HCS_ZSTD_WINDOW_LOG_MAX 22
#define HCS_IO_UNIT (8u << 20)       /* file transfers of save and load: about this many bytes each */
#define HCS_IO_UNITS 4               /* saves: ... with this many in flight or buffered (lib/session/dio.h) */
#define HCS_READ_AHEAD 16            /* loads: units read ahead of the checks at most (buffered ones: HCS_READ_BUFS) */
#define HCS_READ_BUFS 8              /* ... buffers of the units read into a buffer (not straight into the pages) */
#define HCS_READ_BUFS_MAX 32         /* ... at most (HYBRIDCTX_SESSION_IO, lib/util/trace.h) */
#define HCS_READ_THREADS 2           /* ... by this many I/O threads, i.e. reads in flight (1 for sessions of
                                        under 2 MiB): one read queued behind the running one keeps the disk
                                        busy through a read's turnaround, and two adjacent reads are one
                                        sequential stream to the disk, the pattern of the raw O_DIRECT read
                                        (docs/perf/NEXT-cuda-load.md: four in flight read slower) */
/* ... runs of buffered chunks (CUDA contexts: the whole file) cut into reads: */
enum {
    HCS_CUT_OVERLAP = 0, /* units of whole chunks, each read from its first chunk's block: a read re-reads the
                            last block of the one before (the layout before branch load-direct, for comparison) */
    HCS_CUT_CHUNKS = 1,  /* units of whole chunks, each read from where the one before ended */
    HCS_CUT_GRID = 2,    /* reads on the HCS_IO_UNIT grid of the file, like the raw benchmark's */
};
#define HCS_CUT_DEFAULT HCS_CUT_GRID
#define HCS_POPULATE_THREADS 4       /* ... whose pages up to this many threads make resident first */
#define HCS_DIRECT_MIN (64ull << 20) /* sessions this large go through O_DIRECT (small ones stay
                                        buffered: their reads are mostly page-cache hits) */

#define HCS_FLAG_OPT_ZSTD 1ull    /* optional_flags: some chunk is compressed */
#define HCS_SEC_OPTIONAL 1u       /* section flags */
#define HCS_NO_LAYER 0xffffffffu

enum { HCS_CODEC_RAW = 0, HCS_CODEC_ZSTD = 1 };
enum { HCS_DT_BYTES = 1, HCS_DT_FP8_ENTRY = 2, HCS_DT_FP4_ENTRY = 3, HCS_DT_F32_STATE = 4 };
enum {
    HCS_SEC_CONFIG = 1, HCS_SEC_METADATA = 2,
    HCS_SEC_WINDOW = 16, HCS_SEC_COMP = 17, HCS_SEC_COMP_STATE = 18, HCS_SEC_INDEX = 19,
    HCS_SEC_INDEX_STATE = 20
};

extern const uint8_t hcs_magic_sb[8], hcs_magic_foot[8], hcs_magic_end[8], hcs_magic_toc[8];

/* The record shared by superblock and footer (bytes [8, 200)). */
typedef struct hcs_record {
    uint16_t major, minor;
    uint32_t endian, block, record_size;
    uint64_t required_flags, optional_flags;
    uint64_t file_length, toc_offset, toc_length, toc_hash;
    uint8_t uuid[16];
    uint64_t generation;
    int64_t n_tokens;
    uint32_t n_layers, cache_format, backend, has_weights;
    uint8_t fingerprint[32];
    uint64_t created_ns, metadata_length;
    char writer[32];
} hcs_record;

typedef struct hcs_section {
    uint16_t type, subversion;
    uint32_t flags, layer, dtype, row_bytes, rows_per_chunk;
    uint64_t n_rows, offset, stored_length, raw_length;
    uint32_t first_chunk, n_chunks;
} hcs_section;

typedef struct hcs_chunk {
    uint64_t hash;
    uint32_t stored_size, raw_size, codec, reserved;
} hcs_chunk;

static inline uint16_t hcs_get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t hcs_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t hcs_get64(const uint8_t *p) { return hcs_get32(p) | (uint64_t)hcs_get32(p + 4) << 32; }
static inline void hcs_put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8); }
static inline void hcs_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> 8 * i);
}
static inline void hcs_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> 8 * i);
}
static inline uint64_t hcs_align(uint64_t x) { return (x + HCS_BLOCK - 1) / HCS_BLOCK * HCS_BLOCK; }

void hcs_record_encode(const hcs_record *r, uint8_t *out);
void hcs_record_decode(const uint8_t *in, hcs_record *r);
void hcs_section_encode(const hcs_section *s, uint8_t *out);
void hcs_section_decode(const uint8_t *in, hcs_section *s);
void hcs_chunk_encode(const hcs_chunk *c, uint8_t *out);
void hcs_chunk_decode(const uint8_t *in, hcs_chunk *c);
/* Superblock / footer blocks from a record (hashes included). */
void hcs_superblock_build(const hcs_record *r, uint8_t *out);
void hcs_footer_build(const hcs_record *r, uint8_t *out);
uint64_t hcs_hash(const void *p, size_t n);
const char *hcs_section_name(uint32_t type);

#endif
