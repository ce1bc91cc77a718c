"""Device-memory x and y without a GPU: the binding's reading of ``__cuda_array_interface__`` and
``__dlpack__`` objects (mocks whose "device" pointers point at host buffers of the right size, so
that nothing can crash even if a check were missing), its checks of dtype, shape, contiguity and
streams, and the clean refusal of device arrays by host-memory contexts.

The GPU path itself (torch tensors on a CUDA context) is tools/gpu-torch-loop.py's.
"""
import ctypes
import subprocess
import sys

import numpy as np
import pytest

import hybridctx
from hybridctx import Context, Error, IOMemory, Model, Status, _devarray

LEGACY = _devarray.STREAM_LEGACY


@pytest.fixture(scope="module")
def tiny():
    with Model.random("tiny", seed=42) as m:
        yield m


# -- mocks ------------------------------------------------------------------------------------

class CAI:
    """An object with __cuda_array_interface__ over a host buffer."""

    def __init__(self, shape, typestr="<f4", version=3, stream=None, strides=None, readonly=False,
                 **extra):
        self.buf = np.zeros(max(int(np.prod(shape)), 1), np.float32)
        self.iface = dict(shape=tuple(shape), typestr=typestr, version=version, strides=strides,
                          data=(self.buf.ctypes.data, readonly), **extra)
        if version >= 3:
            self.iface["stream"] = stream

    @property
    def __cuda_array_interface__(self):
        return self.iface


# dlpack.h, written out here on its own (sizes checked against the binding's below)
class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", DLTensor), ("manager_ctx", ctypes.c_void_p),
                ("deleter", ctypes.c_void_p)]


class DLManagedTensorVersioned(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32),
                ("manager_ctx", ctypes.c_void_p), ("deleter", ctypes.c_void_p),
                ("flags", ctypes.c_uint64), ("dl_tensor", DLTensor)]


_new_capsule = ctypes.pythonapi.PyCapsule_New
_new_capsule.restype = ctypes.py_object
_new_capsule.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
_capsule_name = ctypes.pythonapi.PyCapsule_GetName
_capsule_name.restype, _capsule_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
NAMES = {False: b"dltensor", True: b"dltensor_versioned", "used": b"used_dltensor"}  # kept alive


class DLPack:
    """An object with __dlpack__ / __dlpack_device__ over a host buffer; records the stream and
    max_version it was asked for. The capsules have no destructor: this object owns the memory."""

    def __init__(self, shape, code=2, bits=32, lanes=1, device=(2, 0), strides=None,
                 byte_offset=0, versioned=False, major=1, flags=0, name=None):
        self.buf = np.zeros(max(int(np.prod(shape)), 1) + 64, np.float32)
        self.shape = (ctypes.c_int64 * len(shape))(*shape)
        self.strides = None if strides is None else (ctypes.c_int64 * len(strides))(*strides)
        t = DLTensor(data=self.buf.ctypes.data, device=DLDevice(*device), ndim=len(shape),
                     dtype=DLDataType(code, bits, lanes), shape=self.shape,
                     strides=self.strides, byte_offset=byte_offset)
        if versioned:
            self.managed = DLManagedTensorVersioned(major=major, minor=0, flags=flags, dl_tensor=t)
        else:
            self.managed = DLManagedTensor(dl_tensor=t)
        self.name = name or NAMES[versioned]
        self.device = device
        self.asked = []

    def __dlpack__(self, stream=None, max_version=None):
        self.asked.append((stream, max_version))
        return _new_capsule(ctypes.addressof(self.managed), self.name, None)

    def __dlpack_device__(self):
        return self.device


class OldDLPack(DLPack):
    """A producer from before DLPack 1.0: no max_version keyword."""

    def __dlpack__(self, stream=None):
        self.asked.append((stream, None))
        return _new_capsule(ctypes.addressof(self.managed), self.name, None)


def read(obj, stream=LEGACY):
    return _devarray.read(obj, stream)


def refused(obj, text, stream=LEGACY):
    with pytest.raises(_devarray.DeviceArrayError) as e:
        read(obj, stream)
    assert text in str(e.value), str(e.value)


# -- protocol parsing -------------------------------------------------------------------------

def test_dlpack_struct_layout():
    assert ctypes.sizeof(DLTensor) == ctypes.sizeof(_devarray._DLTensor) == 48
    assert ctypes.sizeof(DLManagedTensor) == ctypes.sizeof(_devarray._DLManagedTensor) == 64
    assert ctypes.sizeof(DLManagedTensorVersioned) == \
        ctypes.sizeof(_devarray._DLManagedTensorVersioned) == 80
    assert _devarray._DLManagedTensorVersioned.dl_tensor.offset == 32


def test_cuda_array_interface():
    m = CAI((3, 512), stream=0x7F00)
    a = read(m)
    assert (a.ptr, a.shape, a.dtype, a.device, a.stream, a.readonly) == (
        m.buf.ctypes.data, (3, 512), "f32", None, 0x7F00, False)
    assert a.keep is m and a.nbytes == 3 * 512 * 4
    assert read(CAI((512,), version=2)).stream is None       # v2: no stream key
    assert read(CAI((2, 512), stream=None)).stream is None   # v3, stream None: ready now
    assert read(CAI((2, 512), stream=LEGACY)).stream == LEGACY
    assert read(CAI((2, 512), typestr="<u2")).dtype == "bf16"
    assert read(CAI((2, 512), strides=(2048, 4))).shape == (2, 512)   # explicit C strides
    assert read(CAI((1, 512), strides=(4, 4))).shape == (1, 512)      # any stride on a 1-dim
    assert read(CAI((2, 512), readonly=True)).readonly
    refused(CAI((2, 512), stream=0), "stream 0")
    refused(CAI((2, 512), typestr="<f8"), "typestr")
    refused(CAI((2, 512), typestr="<f2"), "typestr")
    refused(CAI((2, 512), typestr=">f4"), "typestr")
    refused(CAI((2, 512), strides=(4, 8)), "not C-contiguous")
    refused(CAI((2, 512), strides=(4096, 4)), "not C-contiguous")
    refused(CAI((2, 512), version=4), "version 4")
    refused(CAI((2, 512), mask=object()), "mask")
    bad = CAI((2, 512))
    del bad.iface["data"]
    refused(bad, "malformed")

    class NotADict:
        __cuda_array_interface__ = [1, 2]
    refused(NotADict(), "not a dict")


def test_dlpack():
    m = DLPack((4, 512), device=(2, 1), byte_offset=64)
    a = read(m, 0x55)
    assert (a.ptr, a.shape, a.dtype, a.device, a.readonly) == (
        m.buf.ctypes.data + 64, (4, 512), "f32", 1, False)
    assert a.stream == 0x55 and m.asked == [(0x55, (1, 0))]  # our stream, DLPack 1.0 asked for
    capsule = a.keep[1]
    assert _capsule_name(capsule) == b"dltensor"  # not consumed: its destructor frees it
    assert read(DLPack((512,), code=4, bits=16)).dtype == "bf16"
    assert read(DLPack((512,), code=1, bits=16)).dtype == "bf16"  # uint16 bits
    assert read(DLPack((2, 512), strides=(512, 1))).shape == (2, 512)
    assert read(DLPack((2, 512), device=(13, 0))).device == 0    # CUDA managed memory
    v = DLPack((2, 512), versioned=True, flags=1)
    a = read(v)
    assert a.readonly and a.ptr == v.buf.ctypes.data and a.shape == (2, 512)
    assert not read(DLPack((2, 512), versioned=True)).readonly
    old = OldDLPack((2, 512))
    assert read(old, 7).shape == (2, 512) and old.asked[-1] == (7, None)
    refused(DLPack((2, 512), versioned=True, major=2), "DLPack version 2")
    refused(DLPack((2, 512), code=2, bits=64), "dtype")
    refused(DLPack((2, 512), code=2, bits=16), "dtype")   # float16 is not bfloat16
    refused(DLPack((2, 512), lanes=2), "lanes")
    refused(DLPack((2, 512), strides=(1, 2)), "not C-contiguous")
    refused(DLPack((2, 512), name=NAMES["used"]), "already consumed")
    refused(DLPack((2, 512), device=(1, 0)), "not CUDA memory")      # __dlpack_device__: CPU
    lying = DLPack((2, 512))
    lying.managed.dl_tensor.device.device_type = 1  # the capsule says CPU
    refused(lying, "device type 1")

    class NotCapsule:
        def __dlpack__(self, stream=None, max_version=None):
            return 5

        def __dlpack_device__(self):
            return (2, 0)
    refused(NotCapsule(), "not a capsule")

    class Failing(NotCapsule):
        def __dlpack__(self, stream=None, max_version=None):
            raise BufferError("cannot export")
    refused(Failing(), "cannot export")


def test_is_device_and_stream_handles():
    assert not _devarray.is_device(np.zeros(3, np.float32))  # numpy has __dlpack__ on the CPU
    assert not _devarray.is_device([1.0, 2.0])
    assert _devarray.is_device(CAI((1, 512))) and _devarray.is_device(DLPack((512,)))
    assert not _devarray.is_device(DLPack((512,), device=(1, 0)))
    assert not _devarray.is_device(DLPack((512,), device=(3, 0)))  # pinned host memory

    class Stream:
        def __init__(self, **kw):
            self.__dict__.update(kw)
    h = _devarray.stream_handle
    assert h(None) is None and h(0) is None and h(0x99) == 0x99
    assert h(Stream(cuda_stream=0)) == LEGACY      # torch's default stream: the legacy stream
    assert h(Stream(cuda_stream=0x42)) == 0x42 and h(Stream(ptr=0x43)) == 0x43
    for bad in ("s", -1, 1 << 64, True, object()):
        with pytest.raises(_devarray.DeviceArrayError):
            h(bad)


# -- what contexts do with them ---------------------------------------------------------------

def test_host_context_refuses_device_arrays(tiny):
    dim = tiny.dim
    x = np.zeros((2, dim), np.float32)
    with Context(tiny, backend="cpu") as c:
        for dev in (CAI((2, dim)), DLPack((2, dim))):
            for call in (lambda: c.append(0, dev), lambda: c.decode(0, dev),
                         lambda: c.append(0, x, out=dev),
                         lambda: hybridctx.decode_batch([c], 0, dev),
                         lambda: hybridctx.append_batch([c], 0, dev, [2])):
                with pytest.raises(Error) as e:
                    call()
                assert e.value.status == Status.INVALID_ARG
                assert "device memory" in e.value.message and "io_memory='device'" in e.value.message
        assert (c.n_tokens, c.next_layer) == (0, 0)
        assert c.cuda_stream is None
        c.decode(0, x[0])  # still usable
        assert c.next_layer == 1


@pytest.fixture
def dev_ctx(tiny):
    """A CPU context that the binding treats as a device-I/O one, to test the binding's own
    checks, which all run before any C call (the C library refuses device I/O on the CPU)."""
    with Context(tiny, backend="cpu") as c:
        c._io_memory = IOMemory.DEVICE
        yield c


def test_device_context_checks(dev_ctx):
    c, dim = dev_ctx, dev_ctx.model.dim

    def bad(text, x, out=None, rows=None):
        with pytest.raises(Error) as e:
            c._device_io(x, out, rows)
        assert e.value.status == Status.INVALID_ARG and text in e.value.message, e.value.message

    # host arrays are refused by a device context, before C is called
    for host in (np.zeros((2, dim), np.float32), [[0.0] * dim]):
        with pytest.raises(Error) as e:
            c.append(0, host)
        assert e.value.status == Status.INVALID_ARG and "device memory" in e.value.message
    with pytest.raises(Error) as e:
        hybridctx.decode_batch([c], 0, np.zeros((1, dim), np.float32))
    assert e.value.status == Status.INVALID_ARG
    bad("out is a host", CAI((2, dim)), np.zeros((2, dim), np.float32))
    bad("holds bf16", CAI((2, dim), typestr="<u2"), CAI((2, dim)))
    bad("shape (2, 511)", CAI((2, dim - 1)))
    bad("shape (2, 2, 512)", CAI((2, 2, dim)))
    bad("out= is needed", CAI((2, dim)))
    bad("out has shape (3, 512)", CAI((2, dim)), CAI((3, dim)))
    bad("read-only", CAI((2, dim)), CAI((2, dim), readonly=True))
    bad("the batch needs", CAI((2, dim)), CAI((2, dim)), rows=3)
    x = CAI((2, dim), stream=0x10)
    bad("stream", x, CAI((2, dim), stream=0x20))
    shifted = CAI((2, dim))
    shifted.iface["data"] = (x.buf.ctypes.data + 4, False)
    bad("overlaps", x, shifted)
    c._on_cuda = True  # as a CUDA context on device 0
    bad("on CUDA device 1, the context on device 0", DLPack((2, dim), device=(2, 1)), DLPack((2, dim)))
    c._on_cuda = False
    with pytest.raises(Error) as e:
        c._device_io(CAI((0, dim)), CAI((0, dim)))
    assert e.value.status == Status.N_TOKENS
    with pytest.raises(Error) as e:
        c.decode(0, CAI((2, dim)), out=CAI((2, dim)))
    assert e.value.status == Status.INVALID_ARG and "one token" in e.value.message
    assert (c.n_tokens, c.next_layer) == (0, 0)

    # what is accepted, and on which stream the call would run
    xa, ya, out, n, stream = c._device_io(x, x)           # in place, the interface's stream
    assert (xa.ptr, ya.ptr, out, n, stream) == (x.buf.ctypes.data,) * 2 + (x, 2, 0x10)
    y = CAI((2, dim), stream=None)
    assert c._device_io(CAI((2, dim), version=2), y)[4] == LEGACY  # no stream: the legacy one
    dl = DLPack((2, dim))
    dly = DLPack((2, dim))
    assert c._device_io(dl, dly)[4] == LEGACY and dl.asked == dly.asked == [(LEGACY, (1, 0))]
    c._stream = 0x30  # a context on a known stream: stream-less inputs run there
    dl.asked.clear()
    assert c._device_io(dl, dly)[4] == 0x30 and dl.asked == [(0x30, (1, 0))]
    assert c._device_io(CAI((dim,)), CAI((dim,), stream=0x30), 1)[3:] == (1, 0x30)


def test_torch_is_optional():
    """Importing hybridctx never imports torch; with torch installed, CPU tensors are host
    arrays."""
    code = "import sys, hybridctx; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "False"


def test_torch_cpu_tensors(tiny):
    torch = pytest.importorskip("torch")
    t = torch.zeros((2, tiny.dim), dtype=torch.float32)
    assert not _devarray.is_device(t)
    with Context(tiny, backend="cpu") as c:
        y = c.append(0, t)
        assert isinstance(y, np.ndarray) and y.shape == (2, tiny.dim)
