"""x and y in CUDA device memory: torch tensors, ``__cuda_array_interface__`` (v0..v3) and
``__dlpack__`` objects, read without copying anything and without importing torch.

Internal: :class:`hybridctx.Context` uses it for contexts created with ``io_memory="device"``.
Failures raise :class:`DeviceArrayError` (the package turns it into ``Error(INVALID_ARG)``).
"""
import ctypes
import sys
from typing import Any, Optional, Tuple

import numpy as np

#: DLPack device types (dlpack.h ``DLDeviceType``) that the library can read as device memory
KDL_CPU, KDL_CUDA, KDL_CUDA_HOST, KDL_CUDA_MANAGED = 1, 2, 3, 13
#: CUDA's special stream handles: the legacy default stream and the per-thread default stream
#: (``cudaStreamLegacy``, ``cudaStreamPerThread``); the protocols use the same numbers
STREAM_LEGACY, STREAM_PER_THREAD = 1, 2
#: DLPack 1.0 ``DLPACK_FLAG_BITMASK_READ_ONLY``
_DLPACK_READ_ONLY = 1


class DeviceArrayError(ValueError):
    """An object that cannot be used as device-memory x or y (the message says why)."""


class DeviceArray:
    """A C-contiguous array in CUDA device memory, as read from its protocol.

    ``dtype`` is "f32" or "bf16"; ``device`` the CUDA ordinal (None when the protocol does not
    tell it: ``__cuda_array_interface__``); ``stream`` the stream the data is ordered on (a
    ``cudaStream_t`` value, 1 the legacy default stream, 2 the per-thread one), or None when the
    producer says it is ready now; ``keep`` holds what must live during the call (the producer,
    a DLPack capsule, whose destructor gives the tensor back to its producer).
    """

    __slots__ = ("ptr", "shape", "dtype", "device", "stream", "readonly", "origin", "keep")

    def __init__(self, ptr: int, shape: Tuple[int, ...], dtype: str, device: Optional[int],
                 stream: Optional[int], readonly: bool, origin: str, keep: Any) -> None:
        self.ptr, self.shape, self.dtype, self.device = ptr, shape, dtype, device
        self.stream, self.readonly, self.origin, self.keep = stream, readonly, origin, keep

    @property
    def nbytes(self) -> int:
        n = 4 if self.dtype == "f32" else 2
        for d in self.shape:
            n *= d
        return n


def _torch_tensor(obj: Any) -> Any:
    """torch, when obj is a torch.Tensor (torch is then imported already: never import it)."""
    if not type(obj).__module__.startswith("torch"):
        return None
    torch = sys.modules.get("torch")
    return torch if torch is not None and isinstance(obj, torch.Tensor) else None


def dlpack_device(obj: Any) -> Optional[Tuple[int, int]]:
    """``obj.__dlpack_device__()`` as (device_type, ordinal), or None when it has none."""
    fn = getattr(obj, "__dlpack_device__", None)
    if fn is None:
        return None
    try:
        t, i = fn()
        return int(t), int(i)
    except Exception as e:
        raise DeviceArrayError(f"__dlpack_device__() failed: {e}") from e


def is_device(obj: Any) -> bool:
    """Whether obj is a device array (to be read by :func:`read`), not a host array. Asks the
    protocols only; exports nothing."""
    if isinstance(obj, (np.ndarray, np.generic, list, tuple, int, float)):
        return False
    torch = _torch_tensor(obj)
    if torch is not None:
        return bool(obj.is_cuda)
    try:  # a property that raises (torch on the CPU) means: no such interface
        if getattr(obj, "__cuda_array_interface__", None) is not None:
            return True
    except Exception:
        pass
    dev = dlpack_device(obj) if hasattr(obj, "__dlpack__") else None
    return dev is not None and dev[0] not in (KDL_CPU, KDL_CUDA_HOST)


def legacy_if_default(handle: int) -> int:
    """A stream handle as the library must get it: 0 (CUDA's default stream, torch's
    ``default_stream().cuda_stream``) is ``cudaStreamLegacy``, since NULL means "a stream of the
    context's own" to ``hc_ctx_set_stream``."""
    return STREAM_LEGACY if handle == 0 else handle


def _contiguous(shape: Tuple[int, ...], strides: Optional[Tuple[int, ...]], unit: int) -> bool:
    """Row-major strides (in ``unit``s per step) for shape; dimensions of one element may have
    any stride."""
    if strides is None:
        return True
    if len(strides) != len(shape):
        return False
    want = unit
    for d, s in zip(reversed(shape), reversed(strides)):
        if d != 1 and s != want:
            return False
        want *= d
    return True


def _from_torch(t: Any, torch: Any) -> DeviceArray:
    if t.dtype == torch.float32:
        dtype = "f32"
    elif t.dtype == torch.bfloat16 or t.dtype == getattr(torch, "uint16", None):  # uint16: bf16 bits
        dtype = "bf16"
    else:
        raise DeviceArrayError(f"torch tensor of dtype {t.dtype}: float32 or bfloat16 expected")
    if not t.is_contiguous():
        raise DeviceArrayError("torch tensor is not contiguous (call .contiguous())")
    # the tensor's current stream: the work queued on it so far makes x ready
    stream = legacy_if_default(int(torch.cuda.current_stream(t.device).cuda_stream))
    return DeviceArray(int(t.data_ptr()), tuple(int(d) for d in t.shape), dtype, t.device.index,
                       stream, False, "torch tensor", t)


_CAI_DTYPES = {"f4": "f32", "u2": "bf16"}  # bfloat16 has no typestr: its bits as uint16


def _from_cai(obj: Any, cai: Any) -> DeviceArray:
    if not isinstance(cai, dict):
        raise DeviceArrayError("__cuda_array_interface__ is not a dict")
    try:
        version = int(cai.get("version", 0))
        shape = tuple(int(d) for d in cai["shape"])
        typestr = str(cai["typestr"])
        ptr, readonly = cai["data"]
        ptr = int(ptr)
        readonly = bool(readonly)
        strides = cai.get("strides")
        strides = None if strides is None else tuple(int(s) for s in strides)
    except (KeyError, TypeError, ValueError) as e:
        raise DeviceArrayError(f"malformed __cuda_array_interface__ ({e!r})") from e
    if version > 3:
        raise DeviceArrayError(f"__cuda_array_interface__ version {version}: at most 3 is understood")
    if cai.get("mask") is not None:
        raise DeviceArrayError("__cuda_array_interface__ with a mask is not supported")
    kind = typestr[1:] if len(typestr) == 3 and typestr[0] in "<|=" else None
    dtype = _CAI_DTYPES.get(kind or "")
    if dtype is None:
        raise DeviceArrayError(f"__cuda_array_interface__ typestr {typestr!r}: '<f4' (float32) or "
                               "'<u2' (bfloat16 bits) expected")
    if not _contiguous(shape, strides, 4 if dtype == "f32" else 2):
        raise DeviceArrayError(f"__cuda_array_interface__ array is not C-contiguous (strides {strides})")
    stream = cai.get("stream")  # v3: the producer's stream; absent or None: no synchronisation
    if stream is not None:
        stream = int(stream)
        if stream == 0:  # the spec forbids 0: ambiguous between the legacy and per-thread streams
            raise DeviceArrayError("__cuda_array_interface__ stream 0 is not allowed by the protocol")
    return DeviceArray(ptr, shape, dtype, None, stream, readonly, "__cuda_array_interface__", obj)


# dlpack.h structs, for reading a capsule's tensor (DLPack 0.x and 1.x)
class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class _DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p),
                ("deleter", ctypes.c_void_p)]


class _DLPackVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32)]


class _DLManagedTensorVersioned(ctypes.Structure):
    _fields_ = [("version", _DLPackVersion), ("manager_ctx", ctypes.c_void_p),
                ("deleter", ctypes.c_void_p), ("flags", ctypes.c_uint64), ("dl_tensor", _DLTensor)]


_capsule_name = ctypes.pythonapi.PyCapsule_GetName
_capsule_name.restype, _capsule_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype, _capsule_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
_capsule_valid = ctypes.pythonapi.PyCapsule_IsValid
_capsule_valid.restype, _capsule_valid.argtypes = ctypes.c_int, [ctypes.py_object, ctypes.c_char_p]

# (code, bits) of dlpack.h's DLDataTypeCode: kDLFloat = 2, kDLBfloat = 4, kDLUInt = 1
_DL_DTYPES = {(2, 32): "f32", (4, 16): "bf16", (1, 16): "bf16"}


def _export_dlpack(obj: Any, stream: int) -> Any:
    """obj.__dlpack__ with our stream (the producer orders its work before it); DLPack 1.0
    capsules are asked for first, older producers do not know max_version."""
    try:
        return obj.__dlpack__(stream=stream, max_version=(1, 0))
    except TypeError:
        return obj.__dlpack__(stream=stream)


def read_capsule(capsule: Any, keep: Any) -> DeviceArray:
    """The tensor of a DLPack capsule ("dltensor" or "dltensor_versioned"), without consuming it:
    the capsule keeps its name, so its destructor still gives the tensor back to the producer
    once ``keep`` (which holds the capsule) is dropped after the call."""
    if type(capsule).__name__ != "PyCapsule":
        raise DeviceArrayError(f"__dlpack__() returned a {type(capsule).__name__}, not a capsule")
    name = _capsule_name(capsule)
    readonly = False
    if name == b"dltensor_versioned":
        m = _DLManagedTensorVersioned.from_address(_capsule_pointer(capsule, name))
        if m.version.major != 1:
            raise DeviceArrayError(f"DLPack version {m.version.major}.{m.version.minor}: 1.x expected")
        readonly = bool(m.flags & _DLPACK_READ_ONLY)
        t = m.dl_tensor
    elif name == b"dltensor":
        t = _DLManagedTensor.from_address(_capsule_pointer(capsule, name)).dl_tensor
    else:
        raise DeviceArrayError(f"__dlpack__() returned a capsule named {name!r} (already consumed?)")
    if t.device.device_type not in (KDL_CUDA, KDL_CUDA_MANAGED):
        raise DeviceArrayError(f"DLPack tensor on device type {t.device.device_type}: CUDA "
                               f"({KDL_CUDA}) or CUDA managed memory ({KDL_CUDA_MANAGED}) expected")
    dtype = _DL_DTYPES.get((t.dtype.code, t.dtype.bits)) if t.dtype.lanes == 1 else None
    if dtype is None:
        raise DeviceArrayError(f"DLPack dtype (code {t.dtype.code}, {t.dtype.bits} bits, "
                               f"{t.dtype.lanes} lanes): float32 or bfloat16 expected")
    if not 0 <= t.ndim <= 32:
        raise DeviceArrayError(f"DLPack tensor with ndim {t.ndim}")
    shape = tuple(int(t.shape[i]) for i in range(t.ndim))
    strides = tuple(int(t.strides[i]) for i in range(t.ndim)) if t.strides else None
    if not _contiguous(shape, strides, 1):
        raise DeviceArrayError(f"DLPack tensor is not C-contiguous (strides {strides})")
    ptr = (t.data or 0) + int(t.byte_offset)
    return DeviceArray(ptr, shape, dtype, int(t.device.device_id), None, readonly, "DLPack tensor",
                       keep)


def read(obj: Any, stream: int) -> DeviceArray:
    """Read a device array. ``stream`` is the stream the call will run on when obj does not name
    one (DLPack producers are asked to order their work before it; a DeviceArray of DLPack gets
    it as its stream)."""
    torch = _torch_tensor(obj)
    if torch is not None:
        if not obj.is_cuda:
            raise DeviceArrayError(f"torch tensor on {obj.device}, not on a CUDA device")
        return _from_torch(obj, torch)
    try:
        cai = getattr(obj, "__cuda_array_interface__", None)
    except Exception:
        cai = None
    if cai is not None:
        return _from_cai(obj, cai)
    if hasattr(obj, "__dlpack__"):
        dev = dlpack_device(obj)
        if dev is not None and dev[0] not in (KDL_CUDA, KDL_CUDA_MANAGED):
            raise DeviceArrayError(f"DLPack device type {dev[0]} is not CUDA memory")
        try:
            capsule = _export_dlpack(obj, stream)
        except DeviceArrayError:
            raise
        except Exception as e:
            raise DeviceArrayError(f"__dlpack__(stream={stream}) failed: {e}") from e
        a = read_capsule(capsule, (obj, capsule))
        a.stream = stream
        return a
    raise DeviceArrayError(f"a {type(obj).__name__} is neither a torch tensor nor an object with "
                           "__cuda_array_interface__ or __dlpack__")


def stream_handle(stream: Any) -> Optional[int]:
    """A stream argument as a handle: None, an int (a ``cudaStream_t`` value, 0 for a stream of
    the context's own), or a stream object: torch's (``cuda_stream``; its default stream, 0,
    becomes the legacy stream) or CuPy's (``ptr``)."""
    if stream is None:
        return None
    if isinstance(stream, bool):
        raise DeviceArrayError("a stream cannot be a bool")
    if isinstance(stream, int):
        handle = stream
    elif hasattr(stream, "cuda_stream"):
        handle = legacy_if_default(int(stream.cuda_stream))
    elif hasattr(stream, "ptr"):
        handle = legacy_if_default(int(stream.ptr))
    else:
        try:
            handle = int(stream)
        except (TypeError, ValueError):
            raise DeviceArrayError(f"a {type(stream).__name__} is not a CUDA stream") from None
    if not 0 <= handle < 1 << 64:
        raise DeviceArrayError(f"stream handle {handle} is out of range")
    return handle or None
