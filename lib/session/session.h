/* session.h - internal interface of lib/session: the writer, the reader (validation of a file
 * and the chunk stream), the loader and the test hooks. The format is docs/session-format.md. */
#ifndef HCS_SESSION_H
#define HCS_SESSION_H
#include <stddef.h>
#include <stdint.h>
#include "container.h"
#include "dio.h"
#include "plan.h"
#include "../ctx/ctx.h"

/* Where a save goes: a file descriptor, or (fd < 0) a caller buffer of which bytes past cap are
 * counted, not written. */
typedef struct hcs_sink {
    int fd;
    const char *name;
    uint8_t *buf;
    uint64_t cap, end;
} hcs_sink;

/* Where a load comes from: a file descriptor or a caller buffer. */
typedef struct hcs_src {
    int fd;
    const char *name;
    const uint8_t *buf;
    uint64_t size;
} hcs_src;

/* Knobs for tests that need files a correct writer never makes (all zero in normal use). */
typedef struct hcs_test_hooks {
    uint16_t minor;             /* != 0: write this minor version */
    uint64_t required_flags;    /* extra required / optional flag bits */
    uint64_t optional_flags;
    uint16_t extra_section;     /* != 0: add a section of this type, OPTIONAL, 5000 bytes, after METADATA */
    uint32_t entry_rows_per_chunk; /* != 0: chunk size of entry sections, in rows (a multiple of 64) */
    uint32_t io_unit;           /* != 0: file transfers of about this many bytes (a multiple of 4096) */
    int direct_io;              /* 0: O_DIRECT for large sessions only; 1: always; -1: never */
    int huge_slow;              /* != 0: a load's first populate counts as slow (huge pages declined) */
} hcs_test_hooks;
extern hcs_test_hooks hcs_hooks;

/* ---- writer ---- */
/* Bytes of the session of c without compression (an upper bound with it). */
uint64_t hcs_save_size(const hc_ctx *c);
/* Stream c into sink; *total receives the session's size. level 0 = no compression. */
int hcs_save(const hc_ctx *c, hcs_sink *sink, int level, int n_workers, uint64_t *total, char *err, size_t errsz);

/* ---- reader ---- */
typedef struct hcs_file {
    hcs_src src;
    hcs_record rec;
    uint8_t *toc;
    hcs_section *sec;       /* [n_sec], TOC order */
    int32_t *plan_of;       /* [n_sec]: index into plan[], -1 for skipped optional sections */
    uint32_t n_sec, n_chunks;
    hcs_plan_sec *plan;     /* expected sections (hcs_plan_build of the stored configuration) */
    uint32_t n_plan;
    hci_config cfg;         /* the stored configuration */
    uint32_t max_raw;       /* largest chunk raw size */
    uint64_t total_raw, total_stored;
} hcs_file;

/* Validation steps 1-5 of docs/session-format.md §6. On failure f holds nothing to free. */
int hcs_file_open(hcs_file *f, const hcs_src *src, char *err, size_t errsz);
void hcs_file_close(hcs_file *f);
hcs_chunk hcs_file_chunk(const hcs_file *f, uint32_t i);

/* What a stream delivers to its consumer, in file order, on the calling thread. */
typedef struct hcs_piece {
    uint32_t sec;              /* TOC index */
    uint32_t chunk;            /* chunk number within the section */
    uint64_t row0;
    uint32_t rows;
    uint32_t raw_bytes;        /* bytes of raw (the chunk's raw size) */
    const uint8_t *raw;        /* canonical bytes, checked */
    const uint8_t *pages;      /* entries: ceil(rows/64) pages of the target format, or NULL */
} hcs_piece;
typedef int (*hcs_apply_fn)(void *arg, const hcs_piece *p, char *err, size_t errsz);

/* Read, decompress, hash-check and canonical-check every chunk (step 7); convert entries to
 * pages of fmt (HCI_FMT_BF16/FP8; 0 = no conversion) and hand each piece to apply (may be NULL).
 * dest (NULL, or per TOC section NULL or the host address of its page 0, pages contiguous, with
 * 4096 bytes of slack after the last; fmt FP8 only): chunks of whole blocks are read, decompressed
 * or copied straight into those pages, and checked there (their piece's pages point there).
 * bufs (NULL: malloc): where the file units and the slot buffers that pieces point into come
 * from, for an apply that copies out of a piece asynchronously (dio.h); a buffer is written
 * again only after bufs->wait. */
int hcs_file_stream(const hcs_file *f, int fmt, int n_workers, uint8_t *const *dest, const hcs_bufs *bufs,
                    hcs_apply_fn apply, void *arg, char *err, size_t errsz);

/* ---- loader ---- */
/* Model and length checks (step 6), then the all-or-nothing load of f into c. */
int hcs_load(hc_ctx *c, const hcs_file *f, char *err, size_t errsz);

/* Worker count for n_threads (0 = online cores) and a stream of total_raw bytes. */
int hcs_workers(int n_threads, uint64_t total_raw);

/* Human-readable or JSON description of an opened file (and of the result of a verify). */
int hcs_describe(const hcs_file *f, int json, int verified, int vstatus, const char *verr, char **out);

#endif
