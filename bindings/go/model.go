package hybridctx

/*
#include <stdlib.h>
#include "hcgo.h"
*/
import "C"

import (
	"runtime"
	"sync"
	"unsafe"
)

// ModelOptions are the options of NewRandomModel and LoadModel; nil means defaults.
type ModelOptions struct {
	// GeometryOnly creates the configuration without weights: contexts can be created, sized,
	// saved and loaded, but Append fails with ErrUnsupported.
	GeometryOnly bool
	// NThreads is the number of threads for loading or random initialisation; 0 = all cores.
	NThreads int
	// Progress, when set, receives the weight bytes read (LoadModel) or the layers initialised
	// (NewRandomModel) on the calling goroutine; returning false stops with ErrAborted and no
	// model (hc_model_params.progress).
	Progress ProgressFunc
}

// Model holds the attention weights and configuration of every layer. It is immutable and safe
// for concurrent use by any number of goroutines and contexts.
type Model struct {
	mu      sync.RWMutex
	ptr     *C.hc_model
	refs    int  // open contexts
	closed  bool // Close was called
	nLayers int
	dim     int
}

// ModelInfo describes a model (hc_model_info in the header).
type ModelInfo struct {
	NLayers, Dim, NHeads, HeadDim, RopeDim, QLoraRank, OGroups, OLoraRank int
	Window, IndexNHeads, IndexHeadDim, IndexTopk                          int
	HasWeights                                                            bool   // false for a geometry-only model
	MaxPositions                                                          int64  // max_position_embeddings
	WeightBytes                                                           uint64 // host bytes held by the weights
}

// NewRandomModel creates a model with seeded random weights. presetOrConfigJSON is "tiny",
// "v4-flash", "v4-pro" or the text of a HF config.json. The same seed gives the same weights
// everywhere.
func NewRandomModel(presetOrConfigJSON string, seed uint64, opts *ModelOptions) (*Model, error) {
	text := C.CString(presetOrConfigJSON)
	defer C.free(unsafe.Pointer(text))
	return newModel(opts, func(p *C.hc_model_params, out **C.hc_model) C.hc_status {
		return C.hc_model_create_random(text, C.uint64_t(seed), p, out)
	})
}

// LoadModel loads a checkpoint directory or a .safetensors file (see hc_model_load).
func LoadModel(path string, opts *ModelOptions) (*Model, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	return newModel(opts, func(p *C.hc_model_params, out **C.hc_model) C.hc_status {
		return C.hc_model_load(cpath, p, out)
	})
}

func newModel(opts *ModelOptions, ctor func(*C.hc_model_params, **C.hc_model) C.hc_status) (*Model, error) {
	if versionErr != nil {
		return nil, versionErr
	}
	if opts == nil {
		opts = &ModelOptions{}
	}
	if opts.NThreads < 0 || opts.NThreads > 1<<20 {
		return nil, invalidArg("NThreads %d is out of range", opts.NThreads)
	}
	const errLen = 1024
	// C memory, so that the library may write the message into it.
	errbuf := (*C.char)(C.calloc(errLen, 1))
	defer C.free(unsafe.Pointer(errbuf))
	// C memory: progress_user holds a cgo.Handle's number, which Go must not keep in a pointer
	p := (*C.hc_model_params)(C.calloc(1, C.sizeof_hc_model_params))
	if p == nil {
		return nil, newError(ErrOutOfMemory, "out of memory for the model params")
	}
	defer C.free(unsafe.Pointer(p))
	if err := statusError(C.hc_model_params_init(p, C.sizeof_hc_model_params)); err != nil {
		return nil, err
	}
	if opts.GeometryOnly {
		p.flags |= C.HC_MODEL_GEOMETRY_ONLY
	}
	p.n_threads = C.int32_t(opts.NThreads)
	p.errbuf = errbuf
	p.errbuf_size = errLen
	progress := newProgress(opts.Progress)
	if progress != 0 {
		defer progress.Delete() // the library calls it only during ctor
		C.hcgo_model_params_progress(p, C.uintptr_t(progress))
	}
	var ptr *C.hc_model
	if st := ctor(p, &ptr); st != C.HC_OK {
		msg := C.GoString(errbuf)
		if progress != 0 {
			if text := progressOf(progress).panicText(); text != "" {
				msg += "; the progress callback panicked: " + text
			}
		}
		return nil, newError(Status(st), msg)
	}
	m := &Model{ptr: ptr, nLayers: int(C.hc_model_n_layers(ptr)), dim: int(C.hc_model_dim(ptr))}
	runtime.SetFinalizer(m, (*Model).Close)
	return m, nil
}

// Close releases the model. The C memory is freed once every context of the model is closed as
// well. Close is idempotent and always returns nil.
func (m *Model) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.closed {
		m.closed = true
		runtime.SetFinalizer(m, nil)
		m.freeIfUnused()
	}
	return nil
}

// freeIfUnused frees the C model when it is closed and has no context. m.mu must be held.
func (m *Model) freeIfUnused() {
	if m.closed && m.refs == 0 && m.ptr != nil {
		C.hc_model_free(m.ptr)
		m.ptr = nil
	}
}

// acquire registers a new context; the C model stays alive until release.
func (m *Model) acquire() (*C.hc_model, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, newError(ErrNullArg, "the model is closed")
	}
	m.refs++
	return m.ptr, nil
}

// retain registers a new context of a context of m (a fork), which holds m alive already, so
// that it succeeds even when m was closed.
func (m *Model) retain() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.refs++
}

func (m *Model) release() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.refs--
	m.freeIfUnused()
}

// NLayers returns the number of attention layers.
func (m *Model) NLayers() int { return m.nLayers }

// Dim returns the model width: the length of one token's x and y.
func (m *Model) Dim() int { return m.dim }

// use runs f with the live C model under the read lock.
func (m *Model) use(f func(*C.hc_model) error) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return newError(ErrNullArg, "the model is closed")
	}
	return f(m.ptr)
}

// LayerRatio returns a layer's compression ratio (0 window only, 4 CSA, 128 HCA), or -1 for a
// layer out of range or a closed model.
func (m *Model) LayerRatio(layer int) int {
	r := -1
	if layer >= 0 && layer < m.nLayers {
		_ = m.use(func(p *C.hc_model) error { r = int(C.hc_model_layer_ratio(p, C.int(layer))); return nil })
	}
	return r
}

// Info describes the model.
func (m *Model) Info() (ModelInfo, error) {
	var i C.hc_model_info
	i.struct_size = C.uint32_t(unsafe.Sizeof(i))
	err := m.use(func(p *C.hc_model) error { return statusError(C.hc_model_info_get(p, &i)) })
	if err != nil {
		return ModelInfo{}, err
	}
	return ModelInfo{
		NLayers: int(i.n_layers), Dim: int(i.dim), NHeads: int(i.n_heads), HeadDim: int(i.head_dim),
		RopeDim: int(i.rope_dim), QLoraRank: int(i.q_lora_rank), OGroups: int(i.o_groups),
		OLoraRank: int(i.o_lora_rank), Window: int(i.window), IndexNHeads: int(i.index_n_heads),
		IndexHeadDim: int(i.index_head_dim), IndexTopk: int(i.index_topk), HasWeights: i.has_weights != 0,
		MaxPositions: int64(i.max_positions), WeightBytes: uint64(i.weight_bytes),
	}, nil
}

// CacheBytes returns the bytes a context of this model holds after nTokens tokens in the given
// cache format: kv (windows, compressed entries, indexer keys) and state (compressor states).
func (m *Model) CacheBytes(nTokens int64, format CacheFormat) (kv, state uint64, err error) {
	var k, s C.uint64_t
	err = m.use(func(p *C.hc_model) error {
		return statusError(C.hc_model_cache_bytes(p, C.int64_t(nTokens), C.int32_t(format), &k, &s))
	})
	return uint64(k), uint64(s), err
}
