package hybridctx

/*
#include "hcgo.h"
*/
import "C"

import "fmt"

// DevicePtr is a CUDA device address (from a CUDA binding, or a framework's tensor), as a number:
// Go never dereferences it, and it is not a Go pointer.
type DevicePtr uintptr

// DeviceSlice is Len elements of the context's I/O type (float32, or bfloat16 bits) in CUDA
// device memory, starting at Ptr: x or y of a context created with IOMemoryDevice.
//
// The caller vouches for it, as in C: Ptr must be device memory of the context's device with
// Len elements readable and writable, and it must stay allocated until the work queued on it
// has completed on the context's stream (calls return once the work is queued). The bindings
// check what they can see: the context's I/O memory and type, lengths and overlaps.
type DeviceSlice struct {
	Ptr DevicePtr
	Len int
}

// Slice returns the elements [from, to) of s holding elements of dtype (float32 or bfloat16),
// or an error when they are not inside it (for example the rows of one context of a batch).
func (s DeviceSlice) Slice(from, to int, dtype IODtype) (DeviceSlice, error) {
	if from < 0 || to < from || to > s.Len {
		return DeviceSlice{}, invalidArg("slice [%d:%d] of a DeviceSlice of %d elements", from, to, s.Len)
	}
	return DeviceSlice{Ptr: s.Ptr + DevicePtr(from*dtypeSize(dtype)), Len: to - from}, nil
}

func dtypeSize(d IODtype) int {
	if d == IODtypeBF16 {
		return 2
	}
	return 4
}

// String describes the slice.
func (s DeviceSlice) String() string {
	return fmt.Sprintf("DeviceSlice{%#x, %d}", uintptr(s.Ptr), s.Len)
}

// checkDevice refuses x and y that overlap without being the same memory, or pass the end of
// the address space (esize bytes per element).
func checkDevice(x, y DeviceSlice, esize int) error {
	if x.Len < 0 || y.Len < 0 {
		return invalidArg("a DeviceSlice has a negative length")
	}
	xs, ys := uintptr(x.Ptr), uintptr(y.Ptr)
	xe, ye := xs+uintptr(x.Len*esize), ys+uintptr(y.Len*esize)
	if xe < xs || ye < ys {
		return invalidArg("a DeviceSlice passes the end of the address space")
	}
	if x != y && xs < ye && ys < xe {
		return invalidArg("y overlaps x without being x")
	}
	return nil
}

// AppendDevice is Append for a context created with IOMemoryDevice: x and y are device memory of
// n*Dim() elements of the context's I/O type each (y may be x), used in order on the context's
// stream; the call returns once the work is queued. A host context refuses device memory, and a
// device context slices, with ErrInvalidArg before the library is called.
func (c *Context) AppendDevice(layer int, x, y DeviceSlice) error {
	n, err := c.rowsIn(c.ioDtype, IOMemoryDevice, x.Len, y.Len)
	if err != nil {
		return err
	}
	if err := checkDevice(x, y, c.elemSize()); err != nil {
		return err
	}
	if layer < 0 || layer > 1<<30 {
		layer = -1 // the library reports HC_ERR_LAYER_RANGE
	}
	return c.do(func(p *C.hc_ctx) C.hc_status {
		return C.hcgo_append_device(p, C.int(layer), C.uintptr_t(x.Ptr), C.int64_t(n), C.uintptr_t(y.Ptr))
	})
}

// DecodeDevice is AppendDevice with one token: x and y hold Dim() elements.
func (c *Context) DecodeDevice(layer int, x, y DeviceSlice) error {
	if x.Len != c.dim {
		return invalidArg("decode takes one token: x has %d elements, not %d", x.Len, c.dim)
	}
	return c.AppendDevice(layer, x, y)
}

// deviceBatch runs a batch on device memory; the I/O type is the first context's (the batch
// checks that all agree).
func deviceBatch(ctxs []*Context, layer int, counts []int, x, y DeviceSlice) error {
	dtype, esize := IODtypeF32, 4
	if len(ctxs) > 0 && ctxs[0] != nil && ctxs[0].ioDtype == IODtypeBF16 {
		dtype, esize = IODtypeBF16, 2
	}
	if err := checkDevice(x, y, esize); err != nil {
		return err
	}
	return runBatch(ctxs, layer, dtype, IOMemoryDevice, counts, x.Len, y.Len,
		func(ptrs **C.hc_ctx, n C.int32_t, l C.int, nt *C.int64_t) C.hc_status {
			if nt == nil {
				return C.hcgo_decode_batch_device(ptrs, n, l, C.uintptr_t(x.Ptr), C.uintptr_t(y.Ptr))
			}
			return C.hcgo_append_batch_device(ptrs, n, l, C.uintptr_t(x.Ptr), nt, C.uintptr_t(y.Ptr))
		})
}

// DecodeBatchDevice is DecodeBatch with x and y in device memory (contexts created with
// IOMemoryDevice). The batch is ordered on the stream of ctxs[0]: x must be ready there, and y
// is ready there when the queued work completes.
func DecodeBatchDevice(ctxs []*Context, layer int, x, y DeviceSlice) error {
	return deviceBatch(ctxs, layer, nil, x, y)
}

// AppendBatchDevice is AppendBatch with x and y in device memory, ordered as DecodeBatchDevice.
func AppendBatchDevice(ctxs []*Context, layer int, x DeviceSlice, nTokens []int, y DeviceSlice) error {
	if nTokens == nil {
		nTokens = []int{}
	}
	return deviceBatch(ctxs, layer, nTokens, x, y)
}

// SetStream moves a CUDA context to another stream (hc_ctx_set_stream): stream is a
// cudaStream_t as a number, owned by the caller and valid while the context runs on it; 0 goes
// back to a stream of the context's own. Calls queued before complete before work queued after.
// A CPU context accepts 0 only (ErrUnsupported).
func (c *Context) SetStream(stream uintptr) error {
	return c.do(func(p *C.hc_ctx) C.hc_status { return C.hcgo_set_stream(p, C.uintptr_t(stream)) })
}
