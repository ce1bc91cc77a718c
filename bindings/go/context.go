package hybridctx

/*
#include <stdlib.h>
#include <hybridctx.h>
*/
import "C"

import (
	"fmt"
	"runtime"
	"sync"
	"unsafe"
)

// ContextParams are the options of NewContext; the zero value (or nil) means defaults:
// automatic backend, device 0, all cores, FP8 cache, float32 input and output, the model's
// maximum length.
type ContextParams struct {
	Backend     Backend
	Device      int         // CUDA device ordinal
	NThreads    int         // CPU backend threads; 0 = all online cores (results do not depend on it)
	CacheFormat CacheFormat // the cache format
	IODtype     IODtype     // IODtypeF32 (default) or IODtypeBF16
	MaxTokens   int64       // maximum length; 0 = the model's maximum
	MaxChunk    int         // tokens processed at once inside a call; 0 = backend default
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
	mu      sync.Mutex
	ptr     *C.hc_ctx
	model   *Model
	dim     int
	ioDtype IODtype
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
	var cp C.hc_ctx_params
	if err := statusError(C.hc_ctx_params_init(&cp, C.size_t(unsafe.Sizeof(cp)))); err != nil {
		return nil, err
	}
	cp.backend = C.int32_t(p.Backend)
	cp.device = C.int32_t(p.Device)
	cp.n_threads = C.int32_t(p.NThreads)
	cp.cache_format = C.int32_t(p.CacheFormat)
	cp.io_dtype = C.int32_t(p.IODtype)
	cp.max_tokens = C.int64_t(p.MaxTokens)
	cp.max_chunk = C.int64_t(p.MaxChunk)
	if int(cp.device) != p.Device || int(cp.n_threads) != p.NThreads {
		return nil, invalidArg("Device or NThreads out of range")
	}
	ioDtype := p.IODtype
	if ioDtype == 0 {
		ioDtype = IODtypeF32
	}
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
	if st := C.hc_ctx_create(mp, &cp, &ptr); st != C.HC_OK {
		m.release()
		return nil, newError(Status(st), C.GoString(errbuf))
	}
	c := &Context{ptr: ptr, model: m, dim: m.dim, ioDtype: ioDtype}
	runtime.SetFinalizer(c, (*Context).Close)
	return c, nil
}

// Close frees the context. It is idempotent and always returns nil.
func (c *Context) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ptr != nil {
		C.hc_ctx_free(c.ptr)
		c.ptr = nil
		runtime.SetFinalizer(c, nil)
		c.model.release()
	}
	return nil
}

// Model returns the context's model.
func (c *Context) Model() *Model { return c.model }

// IODtype returns the element type of x and y.
func (c *Context) IODtype() IODtype { return c.ioDtype }

// do runs f with the live C context under the mutex and turns a failure into an *Error with the
// context's last error. The deferred unlock keeps c reachable (no finalizer) during the call.
func (c *Context) do(f func(*C.hc_ctx) C.hc_status) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ptr == nil {
		return newError(ErrNullArg, "the context is closed")
	}
	if st := f(c.ptr); st != C.HC_OK {
		return newError(Status(st), C.GoString(C.hc_ctx_last_error(c.ptr)))
	}
	return nil
}

func (c *Context) rows(want IODtype, nx, ny int) (int, error) {
	if want != c.ioDtype {
		return 0, invalidArg("the context takes %s input, not %s", dtypeName(c.ioDtype), dtypeName(want))
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

func (c *Context) elemSize() int {
	if c.ioDtype == IODtypeBF16 {
		return 2
	}
	return 4
}

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
