// Package hybridctx is the Go binding of libhybridctx: DeepSeek V4's hybrid attention (sliding
// window, compressed sparse attention and heavily compressed attention) with its compressed KV
// cache.
//
// A Model holds the attention weights of every layer; it is immutable and safe for concurrent
// use. A Context holds one token sequence; its methods are serialised by a mutex. A chunk of n
// tokens enters layer 0, then 1, ..., then the last layer (Context.Append); the application runs
// its own MLP between layers. x and y are row-major [n][dim] slices of float32 (or of uint16
// bfloat16 bit patterns for a context created with IODtypeBF16).
//
// Objects own C memory: call Close when done (a finalizer is only a safety net). A Model is
// freed once it is closed and all its contexts are closed, so closing it early is safe.
//
// Every failure is an *Error carrying the library's Status and message; errors.Is(err,
// hybridctx.ErrOrder) tests the status. Backend.Info says whether a backend (BackendCPU,
// BackendCUDA, or the one BackendAuto picks) can be used here, and if not, why. The C header include/hybridctx.h documents every call.
//
// Serving: DecodeBatch and AppendBatch run several contexts of one model in one call,
// Context.Fork shares a prefix copy-on-write, Context.Truncate takes back up to
// ContextParams.MaxRollback tokens, Context.SetProgress reports and stops long calls
// (ErrAborted), Context.MemoryInfo tells own and shared bytes apart. A CUDA context created with
// IOMemoryDevice takes DeviceSlice values (Context.AppendDevice); Context.SetStream moves it to
// another stream.
//
// The package links libhybridctx through pkg-config (PKG_CONFIG_PATH=<builddir>/meson-uninstalled
// for an uninstalled build; LD_LIBRARY_PATH to run).
package hybridctx

/*
#cgo pkg-config: hybridctx
#include <stdlib.h>
#include <hybridctx.h>
*/
import "C"

import (
	"fmt"
	"strings"
	"unsafe"
)

// The library version these bindings were written for: a runtime library with the same major
// and at least this minor version is accepted.
const (
	BindingVersionMajor = 0
	BindingVersionMinor = 2
)

// Version returns the runtime library's version string, for example "0.1.0".
func Version() string { return C.GoString(C.hc_version_string()) }

// VersionNumber returns the runtime library's version as MAJOR*10000 + MINOR*100 + PATCH.
func VersionNumber() uint32 { return uint32(C.hc_version_number()) }

var versionErr = versionError(VersionNumber(), Version())

// versionError returns the error for runtime version v (MAJOR*10000+MINOR*100+PATCH, printed as
// text), or nil when these bindings accept it.
func versionError(v uint32, text string) error {
	major, minor := v/10000, v/100%100
	if major == BindingVersionMajor && minor >= BindingVersionMinor {
		return nil
	}
	return &Error{Status: ErrVersion, Message: fmt.Sprintf(
		"libhybridctx %s is loaded, but these Go bindings need version %d.x with x >= %d "+
			"(install a matching libhybridctx or matching bindings)",
		text, BindingVersionMajor, BindingVersionMinor)}
}

// CheckVersion reports whether the loaded library is compatible with these bindings (checked
// once when the package is initialised); every model constructor returns this error.
func CheckVersion() error { return versionErr }

// Status is a libhybridctx status code: 0 is success, negative codes are errors. Codes are fixed
// forever. The error statuses are error values themselves, so errors.Is(err, ErrOrder) is true
// for an *Error with that status.
type Status int32

// The status codes of hybridctx.h.
const (
	OK                Status = C.HC_OK
	ErrNullArg        Status = C.HC_ERR_NULL_ARG
	ErrInvalidArg     Status = C.HC_ERR_INVALID_ARG
	ErrOutOfMemory    Status = C.HC_ERR_OUT_OF_MEMORY
	ErrUnknownPreset  Status = C.HC_ERR_UNKNOWN_PRESET
	ErrBadConfig      Status = C.HC_ERR_BAD_CONFIG
	ErrLayerRange     Status = C.HC_ERR_LAYER_RANGE
	ErrOrder          Status = C.HC_ERR_ORDER
	ErrNTokens        Status = C.HC_ERR_N_TOKENS
	ErrPosition       Status = C.HC_ERR_POSITION
	ErrNonfinite      Status = C.HC_ERR_NONFINITE
	ErrIO             Status = C.HC_ERR_IO
	ErrFormat         Status = C.HC_ERR_FORMAT
	ErrMissingTensor  Status = C.HC_ERR_MISSING_TENSOR
	ErrTensor         Status = C.HC_ERR_TENSOR
	ErrUnsupported    Status = C.HC_ERR_UNSUPPORTED
	ErrNoDevice       Status = C.HC_ERR_NO_DEVICE
	ErrCUDA           Status = C.HC_ERR_CUDA
	ErrCUBLAS         Status = C.HC_ERR_CUBLAS
	ErrBadState       Status = C.HC_ERR_BAD_STATE
	ErrCorrupt        Status = C.HC_ERR_CORRUPT
	ErrVersion        Status = C.HC_ERR_VERSION
	ErrModelMismatch  Status = C.HC_ERR_MODEL_MISMATCH
	ErrBufferTooSmall Status = C.HC_ERR_BUFFER_TOO_SMALL
	ErrLimit          Status = C.HC_ERR_LIMIT
	ErrAborted        Status = C.HC_ERR_ABORTED // a progress callback stopped the call; nothing changed
	ErrInternal       Status = C.HC_ERR_INTERNAL
)

// Name returns the symbolic name, for example "HC_ERR_ORDER" ("HC_UNKNOWN" for unknown codes).
func (s Status) Name() string { return C.GoString(C.hc_status_name(C.hc_status(s))) }

// Description returns the library's static English description of the status.
func (s Status) Description() string { return C.GoString(C.hc_strerror(C.hc_status(s))) }

// String returns the symbolic name.
func (s Status) String() string { return s.Name() }

// Error returns the name and the description.
func (s Status) Error() string { return s.Name() + ": " + s.Description() }

// Error is a failed call: the status and the message (the context's last error, the model
// loader's message, the binding's own check, or else the status description).
type Error struct {
	Status  Status
	Message string
}

// Error returns "HC_ERR_NAME: message".
func (e *Error) Error() string { return e.Status.Name() + ": " + e.Message }

// Unwrap returns the Status, so that errors.Is(err, ErrOrder) works.
func (e *Error) Unwrap() error { return e.Status }

func newError(s Status, msg string) error {
	if msg == "" {
		msg = s.Description()
	}
	return &Error{Status: s, Message: msg}
}

func statusError(st C.hc_status) error {
	if st == C.HC_OK {
		return nil
	}
	return newError(Status(st), "")
}

func invalidArg(format string, args ...any) error {
	return newError(ErrInvalidArg, fmt.Sprintf(format, args...))
}

// Backend selects where a context computes.
type Backend int32

// Backends.
const (
	BackendAuto Backend = C.HC_BACKEND_AUTO // CUDA when built and a GPU exists, else CPU
	BackendCPU  Backend = C.HC_BACKEND_CPU  // the CPU reference backend (bitwise deterministic)
	BackendCUDA Backend = C.HC_BACKEND_CUDA
)

// BackendState says why a backend can or cannot be used (BackendInfo.State).
type BackendState int32

// Backend states.
const (
	BackendUsable        BackendState = C.HC_BACKEND_USABLE         // usable now
	BackendNotBuilt      BackendState = C.HC_BACKEND_NOT_BUILT      // this build has no such backend (built without nvcc)
	BackendModuleMissing BackendState = C.HC_BACKEND_MODULE_MISSING // its module file is missing or cannot be loaded
	BackendModuleInvalid BackendState = C.HC_BACKEND_MODULE_INVALID // its module is of another version or build
	BackendNoDevice      BackendState = C.HC_BACKEND_NO_DEVICE      // loaded, but no usable device (driver missing, device absent)
)

var backendStateNames = map[BackendState]string{
	BackendUsable:        "HC_BACKEND_USABLE",
	BackendNotBuilt:      "HC_BACKEND_NOT_BUILT",
	BackendModuleMissing: "HC_BACKEND_MODULE_MISSING",
	BackendModuleInvalid: "HC_BACKEND_MODULE_INVALID",
	BackendNoDevice:      "HC_BACKEND_NO_DEVICE",
}

// String returns the C name, for example "HC_BACKEND_NOT_BUILT" ("BackendState(n)" for a state
// these bindings do not know).
func (s BackendState) String() string {
	if name, ok := backendStateNames[s]; ok {
		return name
	}
	return fmt.Sprintf("BackendState(%d)", int32(s))
}

// BackendCaps are the HC_CAP_* flags: what a backend offers (BackendInfo.Caps).
type BackendCaps uint32

// Backend capabilities.
const (
	CapHostIO     BackendCaps = C.HC_CAP_HOST_IO     // x and y in host memory
	CapDeviceIO   BackendCaps = C.HC_CAP_DEVICE_IO   // x and y in device memory
	CapStream     BackendCaps = C.HC_CAP_STREAM      // runs on a caller's stream
	CapThreads    BackendCaps = C.HC_CAP_THREADS     // uses ContextParams.NThreads
	CapBitwiseCPU BackendCaps = C.HC_CAP_BITWISE_CPU // results bitwise equal to the CPU backend's for every chunking
)

// Has reports whether every flag of c is set.
func (caps BackendCaps) Has(c BackendCaps) bool { return caps&c == c }

// String returns the flags' C names joined by "|", for example "HC_CAP_HOST_IO|HC_CAP_THREADS"
// ("0" for none; unknown bits in hex).
func (caps BackendCaps) String() string {
	if caps == 0 {
		return "0"
	}
	var parts []string
	for _, f := range []struct {
		c    BackendCaps
		name string
	}{{CapHostIO, "HC_CAP_HOST_IO"}, {CapDeviceIO, "HC_CAP_DEVICE_IO"}, {CapStream, "HC_CAP_STREAM"},
		{CapThreads, "HC_CAP_THREADS"}, {CapBitwiseCPU, "HC_CAP_BITWISE_CPU"}} {
		if caps&f.c != 0 {
			parts = append(parts, f.name)
			caps &^= f.c
		}
	}
	if caps != 0 {
		parts = append(parts, fmt.Sprintf("%#x", uint32(caps)))
	}
	return strings.Join(parts, "|")
}

// BackendInfo is what one backend can do on this machine (hc_backend_info in the header).
type BackendInfo struct {
	Backend Backend // the backend described: BackendCPU or BackendCUDA
	// State is BackendUsable or why not; for a query of BackendAuto, why AUTO did not pick CUDA
	// (BackendUsable when it did).
	State    BackendState
	NDevices int         // usable devices (1 for the CPU)
	Caps     BackendCaps // what it offers; 0 when it is not usable
	Name     string      // "cpu" or "cuda"
	Detail   string      // human-readable: the module file, and the reason it cannot be used
}

// Info describes backend b: whether it can be used here, and if not, why (hc_backend_info_get).
// For BackendAuto it describes the backend that NewContext with BackendAuto and this device
// picks, and State says why that is not CUDA. device is the CUDA device ordinal that AUTO or
// CUDA would use. It may load the CUDA module. A backend that cannot be used is not an error:
// read State and Detail.
func (b Backend) Info(device int) (BackendInfo, error) {
	if b < BackendAuto || b > BackendCUDA {
		return BackendInfo{}, invalidArg("backend %d is not BackendAuto, BackendCPU or BackendCUDA", int32(b))
	}
	if device < 0 || device > 1<<31-1 {
		return BackendInfo{}, invalidArg("device %d is out of range", device)
	}
	var info C.hc_backend_info
	info.struct_size = C.uint32_t(unsafe.Sizeof(info))
	if err := statusError(C.hc_backend_info_get(C.int32_t(b), C.int32_t(device), &info)); err != nil {
		return BackendInfo{}, err
	}
	return BackendInfo{
		Backend:  Backend(info.backend),
		State:    BackendState(info.state),
		NDevices: int(info.n_devices),
		Caps:     BackendCaps(info.caps),
		Name:     C.GoString(&info.name[0]),
		Detail:   C.GoString(&info.detail[0]),
	}, nil
}

// CacheFormat is the storage format of a context's cache; both give identical results.
type CacheFormat int32

// Cache formats.
const (
	CacheDefault CacheFormat = C.HC_CACHE_DEFAULT // FP8
	CacheBF16    CacheFormat = C.HC_CACHE_BF16
	CacheFP8     CacheFormat = C.HC_CACHE_FP8
)

// IODtype is the element type of x and y.
type IODtype int32

// I/O element types.
const (
	IODtypeF32  IODtype = C.HC_DTYPE_F32  // []float32
	IODtypeBF16 IODtype = C.HC_DTYPE_BF16 // []uint16 holding bfloat16 bit patterns
)

// IOMemory is where a context's x and y live (hc_ctx_params.io_memory).
type IOMemory int32

// I/O memories.
const (
	IOMemoryHost   IOMemory = C.HC_MEM_HOST   // Go slices (the default)
	IOMemoryDevice IOMemory = C.HC_MEM_DEVICE // CUDA device memory (DeviceSlice); CUDA backend only
)

// Numerics is the arithmetic a context computes with (hc_ctx_params.numerics; docs/numerics.md).
type Numerics int32

// Numerics modes. Context.Numerics returns NumericsFast or NumericsExact: NumericsDefault
// resolved for the backend.
const (
	NumericsDefault Numerics = C.HC_NUMERICS_DEFAULT // the backend's default: NumericsFast on CUDA, NumericsExact on the CPU
	NumericsFast    Numerics = C.HC_NUMERICS_FAST    // the official kernels' structure (CUDA): deterministic, batch-invariant, faithful
	NumericsExact   Numerics = C.HC_NUMERICS_EXACT   // caches, entries, keys and top-k sets bitwise equal to the CPU backend's
)

// Compression of a saved session.
type Compression int32

// Compressions.
const (
	CompressDefault Compression = C.HC_COMPRESS_DEFAULT // none
	CompressNone    Compression = C.HC_COMPRESS_NONE
	CompressZstd    Compression = C.HC_COMPRESS_ZSTD // zstd per chunk where it gains
)

// CUDADeviceCount returns the number of CUDA devices usable by this build of the library.
func CUDADeviceCount() int {
	var n C.int32_t
	C.hc_cuda_device_count(&n)
	return int(n)
}

// cbytes returns a pointer to b's first byte, or nil for an empty slice.
func cbytes(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}
