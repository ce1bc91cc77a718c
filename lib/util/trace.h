/* trace.h - an opt-in timing breakdown of session loads, for benchmarks (tools/session-bench
 * --trace, docs/perf/NEXT-cuda-load.md). When the environment variable HYBRIDCTX_SESSION_TRACE
 * names a file ("-": stderr) as a load starts, the load measures where its wall time goes (the
 * calling thread's phases and waits, the I/O threads' reads and waits, the workers' work, how long
 * the disk had a read in progress) and appends one JSON object to that file when it ends. Not part
 * of the API: a developer's instrument, like the knobs of HYBRIDCTX_SESSION_IO (hci_session_knobs).
 * Off, it costs one getenv per load and a NULL test per event. */
#ifndef HCI_TRACE_H
#define HCI_TRACE_H
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

/* What a trace adds up: nanoseconds (and a count, and bytes where they mean something). */
enum {
    HCI_T_TOTAL,        /* the whole load (hc_ctx_load), wall */
    HCI_T_OPEN,         /* validation steps 1-5: superblock, footer, TOC */
    HCI_T_SETUP,        /* model checks, the loader's host memory */
    HCI_T_SHADOW,       /* the shadow cache's empty layers: backend allocations (CUDA: cudaMalloc + sync each) */
    HCI_T_BLOCK_ALLOC,  /* entry lists' blocks: pages_alloc_block (device) or pages_alloc_host */
    HCI_T_PAGE_SYNC,    /* pages_sync of grown lists (CUDA: page table copy + stream synchronisation) */
    HCI_T_STREAM,       /* the chunk stream (hcs_file_stream), wall */
    HCI_T_BUF_ALLOC,    /* the stream's buffers (host_alloc: mmap + cudaHostRegister on CUDA) */
    HCI_T_WAIT_READ,    /* calling thread: blocked on a unit's read (the disk) */
    HCI_T_WAIT_CHECK,   /* calling thread: blocked on a chunk's check (the workers) */
    HCI_T_APPLY,        /* calling thread: applying checked chunks (all of it, the three below included) */
    HCI_T_UPLOAD_ASYNC, /* ... upload_async calls (cudaMemcpyAsync + event record) */
    HCI_T_UPLOAD,       /* ... synchronous uploads (window rings, states, single pages) */
    HCI_T_PREPARE,      /* ... the shadow and blocks made at the first piece (included in SHADOW etc. too) */
    HCI_T_BUF_FREE,     /* the stream's buffers freed (waits for their last copies, cudaHostUnregister) */
    HCI_T_HIST,         /* the rollback history seeded */
    HCI_T_COMMIT,       /* the shadow swapped in, the old cache freed */
    HCI_T_IO_READ,      /* I/O threads: in pread, summed over threads (bytes: read) */
    HCI_T_IO_BUFWAIT,   /* I/O threads: waiting for the copies out of a buffer before reading into it */
    HCI_T_IO_PREPWAIT,  /* I/O threads: waiting for the populate stage (CPU contexts) */
    HCI_T_DISK_BUSY,    /* wall time with at least one read in progress */
    HCI_T_DISK_BUSY2,   /* wall time with at least two */
    HCI_T_WORK,         /* workers: decompress, hash, check, convert, summed over threads */
    HCI_T_WORK_BUFWAIT, /* workers: waiting for the copies out of a slot's buffer */
    HCI_T_POPULATE,     /* making fresh host pages resident (populate threads and workers) */
    HCI_T_CARRY,        /* calling thread: a unit's first bytes copied from the previous unit's buffer (bytes) */
    HCI_T_IO_DIRECT,    /* unit reads done wholly with O_DIRECT (count, bytes; no time) */
    HCI_T_IO_BUFFERED,  /* unit reads done wholly or partly through the page cache (count, bytes) */
    HCI_T_IO_FALLBACK,  /* O_DIRECT refused (EINVAL): the stream went buffered for good (count) */
    HCI_T_N
};

/* One unit's life in a trace, ns from the trace's start (0: did not happen). */
typedef struct hci_trace_unit {
    uint64_t queued, start, end, waited, released;
    uint64_t bytes;
} hci_trace_unit;

typedef struct hci_trace {
    uint64_t t0;                       /* hci_now_ns() at the start */
    atomic_uint_fast64_t ns[HCI_T_N], count[HCI_T_N], bytes[HCI_T_N];
    pthread_mutex_t lock;              /* the reads-in-progress count below */
    int in_flight;
    uint64_t busy_from, busy2_from;
    /* what the stream was (set by the reader) */
    int workers, read_threads, read_bufs, populate_threads, direct, eager, cut, status;
    uint64_t session_bytes, n_chunks, unit_bytes;
    const char *backend;
    hci_trace_unit *units;             /* [n_units], owned */
    uint32_t n_units;
    char path[512];
} hci_trace;

/* The trace of the load running on this thread (NULL: none). */
extern _Thread_local hci_trace *hci_trace_tls;

uint64_t hci_now_ns(void);

/* A trace when HYBRIDCTX_SESSION_TRACE is set (and memory allows), else NULL. */
hci_trace *hci_trace_begin(void);
/* Append the trace as one JSON object to its file (a line), and free it. NULL: no-op. */
void hci_trace_end(hci_trace *t);

static inline void hci_trace_add(hci_trace *t, int what, uint64_t ns, uint64_t bytes)
{
    if (!t) return;
    atomic_fetch_add_explicit(&t->ns[what], ns, memory_order_relaxed);
    atomic_fetch_add_explicit(&t->count[what], 1, memory_order_relaxed);
    if (bytes) atomic_fetch_add_explicit(&t->bytes[what], bytes, memory_order_relaxed);
}

/* ns since t started (0 when t is NULL). */
static inline uint64_t hci_trace_at(const hci_trace *t) { return t ? hci_now_ns() - t->t0 + 1 : 0; }

/* A read starts / ends (the disk-busy times). */
void hci_trace_read_begin(hci_trace *t);
void hci_trace_read_end(hci_trace *t);

/* Knobs of the session streams for experiments (HYBRIDCTX_SESSION_IO="read_threads=4,read_bufs=16,
 * eager=0,workers=16,cut=0,unit_mib=16"): each field -1 where not given (or out of range), the
 * built-in choice then. */
typedef struct hci_session_knobs {
    int read_threads;   /* 1..16: I/O threads of a load (reads in flight at most) */
    int read_bufs;      /* 1..32: buffers of a load's buffered units */
    int eager;          /* 0: buffered units are released only when the reading thread runs out of them (the old way) */
    int workers;        /* 1..64: worker threads of a load (default: the online cores, at most 16) */
    int cut;            /* 0..2: how runs of buffered chunks are cut into reads (HCS_CUT_*, lib/session/container.h) */
    int unit_mib;       /* 1..64: reads of about this many MiB (default HCS_IO_UNIT) */
} hci_session_knobs;
void hci_session_knobs_get(hci_session_knobs *k);

#endif
