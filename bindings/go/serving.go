package hybridctx

/*
#include <stdlib.h>
#include "hcgo.h"
*/
import "C"

import (
	"fmt"
	"sort"
	"unsafe"
)

// MemoryInfo is what a context holds, in bytes of its backend's memory (hc_ctx_memory_info).
type MemoryInfo struct {
	OwnBytes       uint64 // cache this context alone holds: window ring, compressor states, unshared pages
	SharedBytes    uint64 // pages shared with forks (every holder counts them); OwnBytes+SharedBytes == MemoryBytes()
	HistoryBytes   uint64 // the rollback history (ContextParams.MaxRollback), fixed
	WorkspaceBytes uint64 // activations of one piece of MaxChunk tokens, plus backend scratch
}

// batch is the locked contexts of a batched call.
type batch struct {
	ctxs []*Context
	ptrs []*C.hc_ctx
}

// lockBatch checks the contexts of a batch and locks them, in the order of their ids so that
// concurrent batches sharing contexts cannot deadlock. The same context twice is refused here,
// as the library would refuse it (locking it twice would deadlock).
func lockBatch(ctxs []*Context) (*batch, error) {
	if len(ctxs) == 0 {
		return nil, invalidArg("a batch needs at least one context")
	}
	if len(ctxs) > 1<<31-1 {
		return nil, invalidArg("too many contexts for one batch")
	}
	seen := make(map[*Context]int, len(ctxs))
	for i, c := range ctxs {
		if c == nil {
			return nil, newError(ErrNullArg, fmt.Sprintf("batch context %d is nil", i))
		}
		if j, dup := seen[c]; dup {
			return nil, invalidArg("batch context %d is the same context as context %d", i, j)
		}
		seen[c] = i
	}
	order := append([]*Context(nil), ctxs...)
	sort.Slice(order, func(i, j int) bool { return order[i].id < order[j].id })
	for _, c := range order {
		c.mu.Lock()
	}
	b := &batch{ctxs: ctxs, ptrs: make([]*C.hc_ctx, len(ctxs))}
	for i, c := range ctxs {
		if c.ptr == nil {
			b.unlock()
			return nil, newError(ErrNullArg, fmt.Sprintf("batch context %d is closed", i))
		}
		b.ptrs[i] = c.ptr
	}
	return b, nil
}

func (b *batch) unlock() {
	for _, c := range b.ctxs {
		c.mu.Unlock()
	}
}

// rows checks that every context takes dtype in memory and has the width of the first, and
// returns the rows the batch holds: one per context, or counts[i] for context i.
func (b *batch) rows(dtype IODtype, memory IOMemory, counts []int) (int, []C.int64_t, error) {
	dim := b.ctxs[0].dim
	for i, c := range b.ctxs {
		if err := c.checkIO(dtype, memory); err != nil {
			e := err.(*Error)
			return 0, nil, newError(e.Status, fmt.Sprintf("batch context %d: %s", i, e.Message))
		}
		if c.dim != dim {
			return 0, nil, newError(ErrModelMismatch,
				fmt.Sprintf("batch context %d belongs to a model of width %d, context 0 to one of %d", i, c.dim, dim))
		}
	}
	if counts == nil {
		return len(b.ctxs), nil, nil
	}
	if len(counts) != len(b.ctxs) {
		return 0, nil, invalidArg("%d token counts for %d contexts", len(counts), len(b.ctxs))
	}
	nt := make([]C.int64_t, len(counts))
	total := 0
	for i, n := range counts {
		if n <= 0 {
			return 0, nil, newError(ErrNTokens, fmt.Sprintf("batch context %d: a count of %d tokens", i, n))
		}
		if total > (1<<62)/dim-n {
			return 0, nil, invalidArg("the token counts overflow")
		}
		total += n
		nt[i] = C.int64_t(n)
	}
	return total, nt, nil
}

// fail is the error of a failed batch: every context holds the detail, naming the context at
// fault; panics of progress callbacks are per context.
func (b *batch) fail(st C.hc_status) error {
	msg := C.GoString(C.hc_ctx_last_error(b.ptrs[0]))
	for i, c := range b.ctxs {
		if p := progressOf(c.progress).panicText(); p != "" {
			msg += fmt.Sprintf("; the progress callback of context %d panicked: %s", i, p)
		}
	}
	return newError(Status(st), msg)
}

// runBatch is every batched call: lock, check, call (counts nil: decode), unlock.
func runBatch(ctxs []*Context, layer int, dtype IODtype, memory IOMemory, counts []int, nx, ny int,
	call func(ptrs **C.hc_ctx, n C.int32_t, layer C.int, nTokens *C.int64_t) C.hc_status) error {
	b, err := lockBatch(ctxs)
	if err != nil {
		return err
	}
	defer b.unlock()
	total, nt, err := b.rows(dtype, memory, counts)
	if err != nil {
		return err
	}
	if want := total * b.ctxs[0].dim; nx != want || ny != want {
		return invalidArg("x has %d and y %d elements; the batch's %d tokens need %d (tokens x width %d)",
			nx, ny, total, want, b.ctxs[0].dim)
	}
	if layer < 0 || layer > 1<<30 {
		layer = -1 // the library reports HC_ERR_LAYER_RANGE
	}
	var ntp *C.int64_t
	if nt != nil {
		ntp = &nt[0]
	}
	if st := call(&b.ptrs[0], C.int32_t(len(b.ptrs)), C.int(layer), ntp); st != C.HC_OK {
		return b.fail(st)
	}
	return nil
}

// hostBatch runs a batch on Go slices at x and y (nx, ny elements of esize bytes).
func hostBatch(ctxs []*Context, layer int, dtype IODtype, counts []int, x, y unsafe.Pointer, nx, ny, esize int) error {
	if nx > 0 && ny > 0 && x != y {
		xs, ys := uintptr(x), uintptr(y)
		if xs < ys+uintptr(ny*esize) && ys < xs+uintptr(nx*esize) {
			return invalidArg("y overlaps x without being x")
		}
	}
	return runBatch(ctxs, layer, dtype, IOMemoryHost, counts, nx, ny,
		func(ptrs **C.hc_ctx, n C.int32_t, l C.int, nt *C.int64_t) C.hc_status {
			if nt == nil {
				return C.hc_decode_batch(ptrs, n, l, x, y)
			}
			return C.hc_append_batch(ptrs, n, l, x, nt, y)
		})
}

// slicePtr returns the address of a slice's first element, or nil when it is empty (the batch
// then fails its length check before any call).
func slicePtr[T any](s []T) unsafe.Pointer {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Pointer(&s[0])
}

// DecodeBatch runs one decode step of several contexts in one call (hc_decode_batch): row i of x
// (Dim() elements) is the input of ctxs[i], row i of y receives its output (y may be x). The
// results are bitwise those of Decode on each context in turn.
//
// Every context must have layer next (with a one-token chunk in progress for layer > 0); all
// must belong to one model and share backend, device, I/O type, cache format and Numerics();
// none may appear twice. All or nothing: on an error no context has changed (but a device fault, which
// poisons them all), and the error carries the detail, naming the context at fault by index.
// The contexts are locked for the call, in an order that lets concurrent batches share them.
func DecodeBatch(ctxs []*Context, layer int, x, y []float32) error {
	return hostBatch(ctxs, layer, IODtypeF32, nil, slicePtr(x), slicePtr(y), len(x), len(y), 4)
}

// DecodeBatchBF16 is DecodeBatch for contexts created with IODtypeBF16.
func DecodeBatchBF16(ctxs []*Context, layer int, x, y []uint16) error {
	return hostBatch(ctxs, layer, IODtypeBF16, nil, slicePtr(x), slicePtr(y), len(x), len(y), 2)
}

// AppendBatch appends a ragged batch (hc_append_batch): ctxs[i] takes nTokens[i] tokens; x and y
// hold the contexts' rows one after another (nTokens[0] rows of ctxs[0], then those of ctxs[1],
// ...). For layer > 0 each count must equal that context's chunk in progress. Otherwise as
// DecodeBatch.
func AppendBatch(ctxs []*Context, layer int, x []float32, nTokens []int, y []float32) error {
	if nTokens == nil {
		nTokens = []int{}
	}
	return hostBatch(ctxs, layer, IODtypeF32, nTokens, slicePtr(x), slicePtr(y), len(x), len(y), 4)
}

// AppendBatchBF16 is AppendBatch for contexts created with IODtypeBF16.
func AppendBatchBF16(ctxs []*Context, layer int, x []uint16, nTokens []int, y []uint16) error {
	if nTokens == nil {
		nTokens = []int{}
	}
	return hostBatch(ctxs, layer, IODtypeBF16, nTokens, slicePtr(x), slicePtr(y), len(x), len(y), 2)
}

// Fork returns a new context with c's sequence, metadata and rollback history (hc_ctx_fork).
// The two share the cache pages of the common prefix copy-on-write and are independent
// afterwards; each continues bitwise like a context that computed the whole sequence.
//
// p nil: c's own parameters. Otherwise read as for NewContext, where Backend, Device and
// CacheFormat must be zero or c's (a fork holds its source's pages), and MaxTokens at least the
// current length; the fork computes with p.Numerics (nil p or NumericsDefault: c's numerics). The fork has no
// progress callback. A chunk in progress is refused with ErrOrder; on failure c is unchanged and
// the error has the detail.
func (c *Context) Fork(p *ContextParams) (*Context, error) {
	dtype, memory := c.ioDtype, c.ioMemory
	var cp *C.hc_ctx_params
	if p != nil {
		var err error
		if cp, err = p.cParams(); err != nil {
			return nil, err
		}
		defer C.free(unsafe.Pointer(cp))
		dtype, memory = p.ioDtype(), p.IOMemory
	}
	var out *C.hc_ctx
	if err := c.do(func(ptr *C.hc_ctx) C.hc_status { return C.hc_ctx_fork(ptr, cp, &out) }); err != nil {
		return nil, err
	}
	c.model.retain()
	return newContextObject(out, c.model, dtype, memory), nil
}

// Truncate shortens the sequence to nTokens (hc_ctx_truncate): appending afterwards gives bitwise
// what appending without the discarded tokens would have given. nTokens must lie between
// TruncateLimit() and NTokens(): further back is ErrLimit (always, with MaxRollback 0), longer
// ErrInvalidArg, and a chunk in progress ErrOrder; the context is then unchanged. The metadata
// blob is kept as it is.
func (c *Context) Truncate(nTokens int64) error {
	return c.do(func(p *C.hc_ctx) C.hc_status { return C.hc_ctx_truncate(p, C.int64_t(nTokens)) })
}

// TruncateLimit returns the shortest length Truncate accepts now (the current length minus
// MaxRollback, or later where the history starts), or -1 when the context is closed.
func (c *Context) TruncateLimit() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return int64(C.hc_ctx_truncate_limit(c.ptr))
}

// MemoryInfo returns the memory the context holds, own and shared with forks.
func (c *Context) MemoryInfo() (MemoryInfo, error) {
	var i C.hc_ctx_memory_info
	i.struct_size = C.uint32_t(unsafe.Sizeof(i))
	err := c.do(func(p *C.hc_ctx) C.hc_status { return C.hc_ctx_memory_info_get(p, &i) })
	if err != nil {
		return MemoryInfo{}, err
	}
	return MemoryInfo{
		OwnBytes:       uint64(i.own_bytes),
		SharedBytes:    uint64(i.shared_bytes),
		HistoryBytes:   uint64(i.history_bytes),
		WorkspaceBytes: uint64(i.workspace_bytes),
	}, nil
}

// SetProgress registers f to receive the progress of the context's long calls and to stop them
// (hc_ctx_set_progress): Append and Decode (tokens of the chunk through the layer, one report per
// piece of MaxChunk tokens), the batch calls, saves and loads (bytes). f returning false, or
// panicking, makes the call fail with ErrAborted and leaves the context as it was (a stopped
// save keeps the previous file). nil removes the callback. It replaces any earlier one; Close
// releases it. C keeps only a runtime/cgo.Handle's number, never a Go pointer.
func (c *Context) SetProgress(f ProgressFunc) error {
	h := newProgress(f)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ptr == nil {
		if h != 0 {
			h.Delete()
		}
		return newError(ErrNullArg, "the context is closed")
	}
	if st := C.hcgo_set_progress(c.ptr, C.uintptr_t(h)); st != C.HC_OK {
		if h != 0 {
			h.Delete()
		}
		return c.fail(st)
	}
	if c.progress != 0 {
		c.progress.Delete()
	}
	c.progress = h
	return nil
}
