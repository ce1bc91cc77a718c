package hybridctx

/*
#include <stdlib.h>
#include "hcgo.h"
*/
import "C"

import (
	"fmt"
	"runtime"
	"runtime/cgo"
	"sync"
	"sync/atomic"
	"unsafe"
)

// ContextParams are the options of NewContext and Context.Fork; the zero value (or nil) means
// defaults: automatic backend, device 0, all cores, FP8 cache, float32 input and output in
// host memory, the model's maximum length, no rollback, the backend's default numerics.
type ContextParams struct {
	Backend     Backend
	Device      int         // CUDA device ordinal
	NThreads    int         // CPU backend threads; 0 = all online cores (results do not depend on it)
	CacheFormat CacheFormat // the cache format
	IODtype     IODtype     // IODtypeF32 (default) or IODtypeBF16
	MaxTokens   int64       // maximum length; 0 = the model's maximum
	MaxChunk    int         // tokens processed at once inside a call (and the step of progress reports); 0 = backend default
	// IOMemory is where x and y live: IOMemoryHost (slices, the default) or IOMemoryDevice
	// (DeviceSlice; CUDA backend only, a CPU context refuses it).
	IOMemory IOMemory
	// MaxRollback is the number of tokens Truncate can always take back, 0..65536; 0 = none.
	// It costs a fixed amount of memory per layer (MemoryInfo.HistoryBytes).
	MaxRollback int64
	// CUDAStream is the cudaStream_t to run on (CUDA backend), as a number; 0 = a stream of the
	// context's own. It must stay valid while the context runs on it.
	CUDAStream uintptr
	// Numerics is the arithmetic to compute with: NumericsDefault (the backend's), NumericsFast
	// or NumericsExact. The CPU backend computes NumericsExact for every value; Context.Numerics
	// tells what a context got. A batch takes contexts of one numerics only.
	Numerics Numerics
}

// cParams returns p as C params in C memory (freed by the caller with C.free): the stream is an
// address Go must not keep in pointer-typed memory.
func (p *ContextParams) cParams() (*C.hc_ctx_params, error) {
	cp := (*C.hc_ctx_params)(C.calloc(1, C.sizeof_hc_ctx_params))
	if cp == nil {
		return nil, newError(ErrOutOfMemory, "out of memory for the context params")
	}
	if err := statusError(C.hc_ctx_params_init(cp, C.sizeof_hc_ctx_params)); err != nil {
		C.free(unsafe.Pointer(cp))
		return nil, err
	}
	cp.backend = C.int32_t(p.Backend)
	cp.device = C.int32_t(p.Device)
	cp.n_threads = C.int32_t(p.NThreads)
	cp.cache_format = C.int32_t(p.CacheFormat)
	cp.io_dtype = C.int32_t(p.IODtype)
	cp.io_memory = C.int32_t(p.IOMemory)
	cp.max_tokens = C.int64_t(p.MaxTokens)
	cp.max_chunk = C.int64_t(p.MaxChunk)
	cp.max_rollback = C.int64_t(p.MaxRollback)
	cp.numerics = C.int32_t(p.Numerics)
	C.hcgo_ctx_params_stream(cp, C.uintptr_t(p.CUDAStream))
	if int(cp.device) != p.Device || int(cp.n_threads) != p.NThreads || int(cp.max_chunk) != p.MaxChunk {
		C.free(unsafe.Pointer(cp))
		return nil, invalidArg("Device, NThreads or MaxChunk out of range")
	}
	return cp, nil
}

func (p *ContextParams) ioDtype() IODtype {
	if p.IODtype == 0 {
		return IODtypeF32
	}
	return p.IODtype
}

// SaveOptions are the options of SaveWith and SaveBytes; nil means defaults (no compression).
type SaveOptions struct {
	Compression Compression
	ZstdLevel   int // 1..19; 0 = 1
	NThreads    int // checksum and compression workers; 0 = all online cores
}

// Context holds one token sequence and its compressed KV cache. Its methods may be called from
// any goroutine; a mutex serialises them (the library uses a context from one thread at a time).
type Context struct {
	mu       sync.Mutex
	ptr      *C.hc_ctx
	model    *Model
	dim      int
	ioDtype  IODtype
	ioMemory IOMemory
	id       uint64     // the order in which batches lock their contexts
	progress cgo.Handle // the registered ProgressFunc; 0: none
}

var contextIDs atomic.Uint64

func newContextObject(ptr *C.hc_ctx, m *Model, dtype IODtype, memory IOMemory) *Context {
	c := &Context{ptr: ptr, model: m, dim: m.dim, ioDtype: dtype, ioMemory: memory, id: contextIDs.Add(1)}
	runtime.SetFinalizer(c, (*Context).Close)
	return c
}

// NewContext creates an empty context for m; the context keeps m alive until it is closed. A
// failure is an *Error with the library's detail (for a backend that cannot be used, what
// Backend.Info reports too).
func NewContext(m *Model, p *ContextParams) (*Context, error) {
	if m == nil {
		return nil, newError(ErrNullArg, "the model is nil")
	}
	if p == nil {
		p = &ContextParams{}
	}
	cp, err := p.cParams()
	if err != nil {
		return nil, err
	}
	defer C.free(unsafe.Pointer(cp))
	const errLen = 1024
	// C memory, so that the library may write the message into it.
	errbuf := (*C.char)(C.calloc(errLen, 1))
	defer C.free(unsafe.Pointer(errbuf))
	cp.errbuf = errbuf
	cp.errbuf_size = errLen
	mp, err := m.acquire()
	if err != nil {
		return nil, err
	}
	var ptr *C.hc_ctx
	if st := C.hc_ctx_create(mp, cp, &ptr); st != C.HC_OK {
		m.release()
		return nil, newError(Status(st), C.GoString(errbuf))
	}
	return newContextObject(ptr, m, p.ioDtype(), p.IOMemory), nil
}

// Close frees the context (and releases its progress callback). It is idempotent and always
// returns nil.
func (c *Context) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ptr != nil {
		C.hc_ctx_free(c.ptr)
		c.ptr = nil
		runtime.SetFinalizer(c, nil)
		c.model.release()
		if c.progress != 0 {
			c.progress.Delete()
			c.progress = 0
		}
	}
	return nil
}

// Model returns the context's model.
func (c *Context) Model() *Model { return c.model }

// IODtype returns the element type of x and y.
func (c *Context) IODtype() IODtype { return c.ioDtype }

// IOMemory returns where x and y live: IOMemoryHost (slices) or IOMemoryDevice (DeviceSlice).
func (c *Context) IOMemory() IOMemory { return c.ioMemory }

// do runs f with the live C context under the mutex and turns a failure into an *Error with the
// context's last error. The deferred unlock keeps c reachable (no finalizer) during the call.
func (c *Context) do(f func(*C.hc_ctx) C.hc_status) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ptr == nil {
		return newError(ErrNullArg, "the context is closed")
	}
	if st := f(c.ptr); st != C.HC_OK {
		return c.fail(st)
	}
	return nil
}

// fail is the error of a failed call on c: its last error, and a panic of its progress
// callback. c.mu must be held.
func (c *Context) fail(st C.hc_status) error {
	msg := C.GoString(C.hc_ctx_last_error(c.ptr))
	if p := progressOf(c.progress).panicText(); p != "" {
		msg += "; the progress callback panicked: " + p
	}
	return newError(Status(st), msg)
}

// checkIO says why c refuses x and y of type want in memory.
func (c *Context) checkIO(want IODtype, memory IOMemory) error {
	if memory != c.ioMemory {
		if c.ioMemory == IOMemoryDevice {
			return invalidArg("the context takes device memory (IOMemoryDevice): use DeviceSlice and the *Device calls")
		}
		return invalidArg("the context takes host slices (IOMemoryHost), not device memory")
	}
	if want != c.ioDtype {
		return invalidArg("the context takes %s input, not %s", dtypeName(c.ioDtype), dtypeName(want))
	}
	return nil
}

func (c *Context) rows(want IODtype, nx, ny int) (int, error) {
	return c.rowsIn(want, IOMemoryHost, nx, ny)
}

func (c *Context) rowsIn(want IODtype, memory IOMemory, nx, ny int) (int, error) {
	if err := c.checkIO(want, memory); err != nil {
		return 0, err
	}
	if nx == 0 {
		return 0, newError(ErrNTokens, "x holds no token")
	}
	if nx%c.dim != 0 {
		return 0, invalidArg("x has %d elements, not a multiple of the model width %d", nx, c.dim)
	}
	if ny != nx {
		return 0, invalidArg("y has %d elements, x has %d", ny, nx)
	}
	return nx / c.dim, nil
}

func (c *Context) elemSize() int { return dtypeSize(c.ioDtype) }

func dtypeName(d IODtype) string {
	if d == IODtypeBF16 {
		return "bfloat16 ([]uint16)"
	}
	return "float32 ([]float32)"
}

func (c *Context) append(layer int, n int, x, y unsafe.Pointer) error {
	if x != y {
		nb := uintptr(n * c.dim * c.elemSize())
		if uintptr(x) < uintptr(y)+nb && uintptr(y) < uintptr(x)+nb {
			return invalidArg("y overlaps x without being x")
		}
	}
	if layer < 0 || layer > 1<<30 {
		layer = -1 // the library reports HC_ERR_LAYER_RANGE
	}
	return c.do(func(p *C.hc_ctx) C.hc_status { return C.hc_append(p, C.int(layer), x, C.int64_t(n), y) })
}

// Append runs a chunk of len(x)/Dim() tokens through layer (0 starts a chunk, then 1, 2, ...,
// the last layer), writing the attention output to y (same length as x; y may be x).
func (c *Context) Append(layer int, x, y []float32) error {
	n, err := c.rows(IODtypeF32, len(x), len(y))
	if err != nil {
		return err
	}
	return c.append(layer, n, unsafe.Pointer(&x[0]), unsafe.Pointer(&y[0]))
}

// AppendBF16 is Append for a context created with IODtypeBF16: x and y hold bfloat16 bits.
func (c *Context) AppendBF16(layer int, x, y []uint16) error {
	n, err := c.rows(IODtypeBF16, len(x), len(y))
	if err != nil {
		return err
	}
	return c.append(layer, n, unsafe.Pointer(&x[0]), unsafe.Pointer(&y[0]))
}

// Decode is Append with one token: x and y hold Dim() elements.
func (c *Context) Decode(layer int, x, y []float32) error {
	if len(x) != c.dim {
		return invalidArg("decode takes one token: x has %d elements, not %d", len(x), c.dim)
	}
	return c.Append(layer, x, y)
}

// DecodeBF16 is Decode for a context created with IODtypeBF16.
func (c *Context) DecodeBF16(layer int, x, y []uint16) error {
	if len(x) != c.dim {
		return invalidArg("decode takes one token: x has %d elements, not %d", len(x), c.dim)
	}
	return c.AppendBF16(layer, x, y)
}

// NTokens returns the number of tokens the context holds (chunks that passed the last layer),
// or -1 when it is closed.
func (c *Context) NTokens() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return int64(C.hc_ctx_n_tokens(c.ptr))
}

// NextLayer returns the layer the next Append must name (0 when no chunk is in progress), or -1
// when the context is closed.
func (c *Context) NextLayer() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return int(C.hc_ctx_next_layer(c.ptr))
}

// MemoryBytes returns the bytes of cache the context holds now.
func (c *Context) MemoryBytes() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return uint64(C.hc_ctx_memory_bytes(c.ptr))
}

// Backend returns the backend the context runs on (BackendCPU or BackendCUDA), or -1 when it is
// closed.
func (c *Context) Backend() Backend {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Backend(C.hc_ctx_backend(c.ptr))
}

// Numerics returns the numerics the context computes with, NumericsFast or NumericsExact
// (hc_ctx_numerics: ContextParams.Numerics resolved for the backend; always NumericsExact on the
// CPU), or -1 when it is closed.
func (c *Context) Numerics() Numerics {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ptr == nil {
		return -1
	}
	return Numerics(C.hc_ctx_numerics(c.ptr))
}

// Reset empties the context (length 0, no chunk in progress).
func (c *Context) Reset() error {
	return c.do(func(p *C.hc_ctx) C.hc_status { return C.hc_ctx_reset(p) })
}

func saveParams(o *SaveOptions) (C.hc_save_params, error) {
	var sp C.hc_save_params
	if err := statusError(C.hc_save_params_init(&sp, C.size_t(unsafe.Sizeof(sp)))); err != nil {
		return sp, err
	}
	if o != nil {
		sp.compression = C.int32_t(o.Compression)
		sp.zstd_level = C.int32_t(o.ZstdLevel)
		sp.n_threads = C.int32_t(o.NThreads)
		if int(sp.zstd_level) != o.ZstdLevel || int(sp.n_threads) != o.NThreads {
			return sp, invalidArg("ZstdLevel or NThreads out of range")
		}
	}
	return sp, nil
}

// Save writes the session to path atomically (no chunk may be in progress).
func (c *Context) Save(path string) error { return c.SaveWith(path, nil) }

// SaveWith is Save with options.
func (c *Context) SaveWith(path string, o *SaveOptions) error {
	sp, err := saveParams(o)
	if err != nil {
		return err
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	return c.do(func(p *C.hc_ctx) C.hc_status { return C.hc_ctx_save(p, cpath, &sp) })
}

// Load replaces the context's contents with the session in path; on failure the context is
// unchanged.
func (c *Context) Load(path string) error {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	return c.do(func(p *C.hc_ctx) C.hc_status { return C.hc_ctx_load(p, cpath) })
}

// SaveBytes returns the session as bytes (the bytes SaveWith writes).
func (c *Context) SaveBytes(o *SaveOptions) ([]byte, error) {
	sp, err := saveParams(o)
	if err != nil {
		return nil, err
	}
	var buf []byte
	err = c.do(func(p *C.hc_ctx) C.hc_status {
		var size, written C.uint64_t
		if st := C.hc_ctx_save_size(p, &sp, &size); st != C.HC_OK {
			return st
		}
		if uint64(size) > uint64(^uint(0)>>1) {
			return C.HC_ERR_OUT_OF_MEMORY
		}
		buf = make([]byte, int(size))
		st := C.hc_ctx_save_buffer(p, cbytes(buf), size, &sp, &written)
		buf = buf[:int(written)]
		return st
	})
	if err != nil {
		return nil, err
	}
	return buf, nil
}

// LoadBytes replaces the context's contents with a session held in memory.
func (c *Context) LoadBytes(session []byte) error {
	return c.do(func(p *C.hc_ctx) C.hc_status {
		return C.hc_ctx_load_buffer(p, cbytes(session), C.uint64_t(len(session)))
	})
}

// SetMetadata attaches a metadata blob (for example token ids) that is saved with the session;
// an empty blob removes it. The bytes are copied.
func (c *Context) SetMetadata(data []byte) error {
	return c.do(func(p *C.hc_ctx) C.hc_status {
		return C.hc_ctx_set_metadata(p, cbytes(data), C.uint64_t(len(data)))
	})
}

// Metadata returns a copy of the metadata blob (set, or restored by a load); nil when none.
func (c *Context) Metadata() ([]byte, error) {
	var out []byte
	err := c.do(func(p *C.hc_ctx) C.hc_status {
		var data unsafe.Pointer
		var n C.uint64_t
		st := C.hc_ctx_get_metadata(p, &data, &n)
		if st == C.HC_OK && data != nil && n > 0 {
			if n > 1<<30 { // the library keeps at most 1 GiB
				return C.HC_ERR_LIMIT
			}
			out = C.GoBytes(data, C.int(n))
		}
		return st
	})
	return out, err
}

// String describes the context.
func (c *Context) String() string {
	return fmt.Sprintf("hybridctx.Context{tokens: %d, next layer: %d}", c.NTokens(), c.NextLayer())
}
