"""Python bindings of libhybridctx: DeepSeek V4's hybrid attention (sliding window, compressed
sparse attention and heavily compressed attention) with its compressed KV cache.

- :class:`Model` holds the attention weights of every layer; it is immutable and thread-safe.
- :class:`Context` holds one token sequence. A chunk of ``n`` tokens enters layer 0, then 1, ...,
  then the last layer (:meth:`Context.append`); the application runs its own MLP between layers.
  Inputs and outputs are numpy arrays of shape ``(n, dim)`` (or ``(dim,)`` for one token):
  float32, or uint16 holding bfloat16 bit patterns for a context made with ``io_dtype="bf16"``.
- Serving: :func:`decode_batch` / :func:`append_batch` run several contexts of one model in one
  call; :meth:`Context.fork` copies a sequence (pages shared copy-on-write);
  :meth:`Context.truncate` takes back tokens (``max_rollback``); :meth:`Context.set_progress`
  reports on long calls and stops them.
- GPU tensors: a context created with ``backend="cuda", io_memory="device"`` takes torch tensors
  or any object with ``__cuda_array_interface__`` or ``__dlpack__`` for x and y, and runs on the
  tensor's stream, without host copies.
- Every failure raises :class:`Error`, which carries the library's :class:`Status` and message.
- :func:`backend_info` says whether a backend (CPU, CUDA, or the one ``Backend.AUTO`` picks) can
  be used here, and if not, why.

The shared object is ``$HYBRIDCTX_LIBRARY`` if set; else the one inside this package (a wheel,
or ``pip install bindings/python``, puts it there); else ``libhybridctx.so.0`` found by its soname
(an installed library, ``LD_LIBRARY_PATH``). Its version is checked at import. The C header
``hybridctx.h`` documents every call in detail.

Example::

    import numpy as np, hybridctx
    model = hybridctx.Model.random("tiny", seed=42)
    with hybridctx.Context(model, backend="cpu") as ctx:
        x = np.zeros((16, model.dim), np.float32)
        for layer in range(model.n_layers):
            x = ctx.append(layer, x)          # your MLP goes between layers
        ctx.save("session.hcs")
"""
import contextlib
import ctypes
import dataclasses
import enum
import os
import threading
import weakref
from typing import (Any, Callable, Dict, Iterator, List, Optional, Protocol, Sequence, Tuple, Type,
                    TypeVar, Union, overload)

import numpy as np
import numpy.typing as npt

from . import _capi, _devarray
from ._capi import lib as _lib

__version__ = "0.2.0"
__all__ = ["Model", "Context", "ModelInfo", "MemoryInfo", "Error", "Status", "Backend",
           "CacheFormat", "IODtype", "IOMemory", "Numerics", "Compression", "BackendState",
           "BackendCaps", "BackendInfo", "backend_info", "decode_batch", "append_batch",
           "ProgressFn", "version", "version_number", "cuda_device_count", "BINDING_VERSION"]

BINDING_VERSION = _capi.BINDING_VERSION

#: A path argument: str, bytes or an ``os.PathLike``.
PathLike = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]
_E = TypeVar("_E", bound=enum.IntEnum)


class Status(enum.IntEnum):
    """libhybridctx status codes (``hc_status``); codes are fixed forever."""
    OK = 0
    NULL_ARG = -1
    INVALID_ARG = -2
    OUT_OF_MEMORY = -3
    UNKNOWN_PRESET = -4
    BAD_CONFIG = -5
    LAYER_RANGE = -6
    ORDER = -7
    N_TOKENS = -8
    POSITION = -9
    NONFINITE = -10
    IO = -11
    FORMAT = -12
    MISSING_TENSOR = -13
    TENSOR = -14
    UNSUPPORTED = -15
    NO_DEVICE = -16
    CUDA = -17
    CUBLAS = -18
    BAD_STATE = -19
    CORRUPT = -20
    VERSION = -21
    MODEL_MISMATCH = -22
    BUFFER_TOO_SMALL = -23
    LIMIT = -24
    ABORTED = -25  #: a progress callback stopped the call; nothing changed (0.2)
    INTERNAL = -99

    @property
    def c_name(self) -> str:
        """The C name, for example ``"HC_ERR_ORDER"``."""
        return str(_lib.hc_status_name(self).decode())

    @property
    def description(self) -> str:
        """The library's static English description."""
        return str(_lib.hc_strerror(self).decode())


class Error(Exception):
    """A failed call.

    Attributes: ``status`` (a :class:`Status`, or an int for a code this version does not know),
    ``name`` (the C name, ``"HC_ERR_ORDER"``) and ``message`` (the context's last error, the
    message of a failed model load or context creation, the binding's own check, or else the
    status description).
    """

    status: Union["Status", int]
    name: str
    message: str

    def __init__(self, status: int, message: str = "") -> None:
        self.status = _known(Status, status)
        self.name = _lib.hc_status_name(int(status)).decode()
        self.message = message or _lib.hc_strerror(int(status)).decode()
        super().__init__(f"{self.name}: {self.message}")


def _check(st: int, message: str = "") -> None:
    if st != 0:
        raise Error(st, message)


def _bad_arg(message: str) -> Error:
    return Error(Status.INVALID_ARG, message)


#: A progress callback: ``fn(done, total)``, called on the thread of the call with ``done``
#: growing to ``total`` (tokens, bytes or layers, as the call documents); a truthy return value
#: stops the call (:class:`Error` with ``Status.ABORTED``, nothing changed).
ProgressFn = Callable[[int, int], object]


class _Progress:
    """A Python callable as an ``hc_progress_fn``. A truthy return stops the call; so does an
    exception, which must not cross the C frames: it is kept and raised once the call returned."""

    def __init__(self, fn: ProgressFn) -> None:
        if not callable(fn):
            raise TypeError(f"the progress callback must be callable, not {type(fn).__name__}")
        self.fn = fn
        self.error: Optional[BaseException] = None
        self.c_fn = _capi.PROGRESS_FN(self._report)  # referenced while C may call it

    def _report(self, _user: Optional[int], done: int, total: int) -> int:
        if self.error is not None:
            return 1
        try:
            return 1 if self.fn(int(done), int(total)) else 0
        except BaseException as e:  # KeyboardInterrupt too: Ctrl-C stops a long call cleanly
            self.error = e
            return 1

    def take(self) -> Optional[BaseException]:
        e, self.error = self.error, None
        return e


_NO_PROGRESS = _capi.PROGRESS_FN()  # a NULL hc_progress_fn: clears the callback


def _raise_from_callback(e: BaseException, st: int) -> None:
    """Raise what a progress callback raised, once its call has returned ``st``."""
    if hasattr(e, "add_note"):  # Python 3.11+
        e.add_note(f"hybridctx: raised in a progress callback, which stopped the call "
                   f"({_lib.hc_status_name(st).decode()}; nothing changed)")
    raise e


class Backend(enum.IntEnum):
    """Where a context computes."""
    AUTO = 0  #: CUDA when built and a GPU exists, else CPU
    CPU = 1   #: the CPU reference backend (bitwise deterministic)
    CUDA = 2


class BackendState(enum.IntEnum):
    """Why a backend can or cannot be used (``hc_backend_info.state``)."""
    USABLE = 0          #: usable now
    NOT_BUILT = 1       #: this build has no such backend (built without nvcc)
    MODULE_MISSING = 2  #: its module file is missing or cannot be loaded
    MODULE_INVALID = 3  #: its module is of another version or build
    NO_DEVICE = 4       #: loaded, but no usable device (driver missing, device absent)


class BackendCaps(enum.IntFlag):
    """What a backend offers (``hc_backend_info.caps``, ``HC_CAP_*`` flags)."""
    HOST_IO = 1       #: x and y in host memory
    DEVICE_IO = 2     #: x and y in device memory
    STREAM = 4        #: runs on a caller's stream
    THREADS = 8       #: uses the context's ``n_threads``
    BITWISE_CPU = 16  #: results bitwise equal to the CPU backend's for every chunking


class CacheFormat(enum.IntEnum):
    """Storage format of a context's cache; both give bitwise identical results."""
    DEFAULT = 0  #: FP8
    BF16 = 1
    FP8 = 2


class IODtype(enum.IntEnum):
    """Element type of ``x`` and ``y``."""
    F32 = 1   #: numpy float32
    BF16 = 2  #: numpy uint16 holding bfloat16 bit patterns


class IOMemory(enum.IntEnum):
    """Where ``x`` and ``y`` live (``hc_ctx_params.io_memory``)."""
    HOST = 0    #: numpy arrays in host memory
    DEVICE = 1  #: CUDA device memory (CUDA backend): torch tensors, __cuda_array_interface__, __dlpack__


class Numerics(enum.IntEnum):
    """The arithmetic a context computes with (``hc_ctx_params.numerics``; docs/numerics.md).
    :attr:`Context.numerics` is FAST or EXACT: DEFAULT resolved for the backend."""
    DEFAULT = 0  #: the backend's default: FAST on CUDA, EXACT on the CPU
    FAST = 1     #: the official kernels' structure (CUDA): deterministic, batch-invariant, faithful
    EXACT = 2    #: caches, entries, keys and top-k sets bitwise equal to the CPU backend's


class Compression(enum.IntEnum):
    """Compression of a saved session."""
    DEFAULT = 0  #: none
    NONE = 1
    ZSTD = 2     #: zstd per chunk where it gains


def _enum(cls: Type[_E], value: Union[_E, int, str], what: str) -> _E:
    """Accept an enum member, its int value or its name (case-insensitive)."""
    if isinstance(value, str):
        try:
            return cls[value.upper()]
        except KeyError:
            pass
    else:
        try:
            return cls(value)
        except ValueError:
            pass
    raise _bad_arg(f"{what} {value!r} is not one of {', '.join(m.name.lower() for m in cls)}")


def version() -> str:
    """The runtime library's version string, for example ``"0.1.0"``."""
    return str(_lib.hc_version_string().decode())


def version_number() -> int:
    """The runtime library's version as ``MAJOR*10000 + MINOR*100 + PATCH``."""
    return int(_lib.hc_version_number())


def cuda_device_count() -> int:
    """Number of CUDA devices usable by this build of the library."""
    n = ctypes.c_int32(0)
    _lib.hc_cuda_device_count(ctypes.byref(n))
    return int(n.value)


@dataclasses.dataclass(frozen=True)
class BackendInfo:
    """What one backend can do on this machine (``hc_backend_info``); see :func:`backend_info`."""
    #: the backend described: CPU or CUDA (an int for one these bindings do not know)
    backend: Union[Backend, int]
    #: USABLE, or why not; for a query of ``Backend.AUTO``, why AUTO did not pick CUDA (an int for
    #: a state these bindings do not know)
    state: Union[BackendState, int]
    n_devices: int      #: usable devices (1 for the CPU)
    caps: BackendCaps   #: what it offers; empty when it is not usable
    name: str           #: ``"cpu"`` or ``"cuda"``
    detail: str         #: human-readable: the module file, and the reason it cannot be used


def _known(cls: Type[_E], value: int) -> Union[_E, int]:
    try:
        return cls(value)
    except ValueError:
        return value


def backend_info(backend: Union[Backend, int, str] = Backend.AUTO, device: int = 0) -> BackendInfo:
    """Describe a backend: whether it can be used here, and if not, why (``hc_backend_info_get``).

    ``backend`` is a :class:`Backend` or "auto"/"cpu"/"cuda"; for ``Backend.AUTO`` the result
    describes the backend a context created with ``backend="auto"`` and this ``device`` runs on,
    and ``state`` says why that is not CUDA (``BackendState.USABLE`` when it is). ``device`` is the
    CUDA device ordinal AUTO or CUDA would use. May load the CUDA module. A backend that cannot be
    used is not an error: read ``state`` and ``detail``.
    """
    b = _enum(Backend, backend, "backend")
    if not isinstance(device, (int, np.integer)) or not 0 <= device < 1 << 31:
        raise _bad_arg(f"device {device!r} is out of range")
    info = _capi.hc_backend_info()
    info.struct_size = ctypes.sizeof(info)
    _check(_lib.hc_backend_info_get(b, int(device), ctypes.byref(info)))
    return BackendInfo(backend=_known(Backend, info.backend),
                       state=_known(BackendState, info.state),
                       n_devices=info.n_devices, caps=BackendCaps(info.caps),
                       name=info.name.decode(errors="replace"),
                       detail=info.detail.decode(errors="replace"))


def _path(path: PathLike) -> bytes:
    b = os.fsencode(path)
    if b"\0" in b:
        raise _bad_arg(f"path {path!r} contains a NUL byte")
    return b


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """A description of a model (``hc_model_info``)."""
    n_layers: int
    dim: int
    n_heads: int
    head_dim: int
    rope_dim: int
    q_lora_rank: int
    o_groups: int
    o_lora_rank: int
    window: int
    index_n_heads: int
    index_head_dim: int
    index_topk: int
    has_weights: bool   #: False for a geometry-only model
    max_positions: int  #: max_position_embeddings
    weight_bytes: int   #: host bytes held by the weights


class _ModelHandle:
    """Owns an ``hc_model*``: freed once the model is closed and none of its contexts is open."""

    def __init__(self, ptr: Optional[int]) -> None:
        self.ptr = ptr
        self.refs = 0
        self.closed = False
        self.lock = threading.Lock()

    def acquire(self) -> Optional[int]:
        with self.lock:
            if self.closed:
                raise Error(Status.NULL_ARG, "the model is closed")
            self.refs += 1
            return self.ptr

    def release(self) -> None:
        with self.lock:
            self.refs -= 1
            self._free_if_unused()

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self._free_if_unused()

    def _free_if_unused(self) -> None:
        if self.closed and self.refs == 0 and self.ptr:
            _lib.hc_model_free(self.ptr)
            self.ptr = None


class Model:
    """The attention weights and configuration of every layer; immutable and thread-safe.

    Create one with :meth:`Model.random` or :meth:`Model.load`. ``close()`` (or a ``with`` block,
    or garbage collection) releases it; the memory is freed once its contexts are closed too.
    """

    n_layers: int  #: number of attention layers
    dim: int       #: model width: the length of one token's x and y
    _handle: _ModelHandle
    _finalizer: Callable[[], Any]

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        raise TypeError("use Model.random() or Model.load()")

    @classmethod
    def _make(cls, ctor: Callable[[Any, Any], int], geometry_only: bool, n_threads: int,
              progress: Optional[ProgressFn]) -> "Model":
        if n_threads < 0:
            raise _bad_arg(f"n_threads {n_threads} must be >= 0")
        p = _capi.hc_model_params()
        _check(_lib.hc_model_params_init(ctypes.byref(p), ctypes.sizeof(p)))
        errbuf = ctypes.create_string_buffer(1024)
        p.flags = 1 if geometry_only else 0  # HC_MODEL_GEOMETRY_ONLY
        p.n_threads = n_threads
        p.errbuf = ctypes.cast(errbuf, ctypes.POINTER(ctypes.c_char))
        p.errbuf_size = len(errbuf)
        prog = _Progress(progress) if progress is not None else None
        if prog is not None:
            p.progress = prog.c_fn
        out = ctypes.c_void_p()
        st = ctor(ctypes.byref(p), ctypes.byref(out))
        raised = prog.take() if prog is not None else None
        if raised is not None:
            _lib.hc_model_free(out.value)  # NULL after the stop; freed should a library not stop
            _raise_from_callback(raised, st)
        _check(st, errbuf.value.decode(errors="replace"))
        self = object.__new__(cls)
        self._handle = _ModelHandle(out.value)
        self._finalizer = weakref.finalize(self, self._handle.close)
        self.n_layers = _lib.hc_model_n_layers(out.value)
        self.dim = _lib.hc_model_dim(out.value)
        return self

    @classmethod
    def random(cls, preset_or_config_json: str = "tiny", seed: int = 0, *, geometry_only: bool = False,
               n_threads: int = 0, progress: Optional[ProgressFn] = None) -> "Model":
        """A model with seeded random weights.

        ``preset_or_config_json`` is ``"tiny"``, ``"v4-flash"``, ``"v4-pro"`` or the text of a HF
        config.json. The same seed gives the same weights everywhere. ``geometry_only`` creates the
        configuration without weights (contexts can be sized, saved and loaded, but ``append``
        fails with ``Status.UNSUPPORTED``); ``n_threads`` 0 uses all cores. ``progress``
        (:data:`ProgressFn`) gets the layers initialised; a stop raises :class:`Error` with
        ``Status.ABORTED`` (an exception it raises is raised instead, also stopping the call).
        """
        text = preset_or_config_json.encode()
        if not isinstance(seed, int) or not 0 <= seed < 1 << 64:
            raise _bad_arg(f"seed {seed!r} must be an int in 0..2**64-1")
        if b"\0" in text:
            raise _bad_arg("the preset or config text contains a NUL byte")
        return cls._make(lambda p, out: _lib.hc_model_create_random(text, seed, p, out),
                         geometry_only, n_threads, progress)

    @classmethod
    def load(cls, path: PathLike, *, geometry_only: bool = False, n_threads: int = 0,
             progress: Optional[ProgressFn] = None) -> "Model":
        """Load a checkpoint directory or a ``.safetensors`` file (see ``hc_model_load``).

        ``progress`` (:data:`ProgressFn`) gets the weight bytes read; it stops the load as in
        :meth:`random`.
        """
        b = _path(path)
        return cls._make(lambda p, out: _lib.hc_model_load(b, p, out), geometry_only, n_threads,
                         progress)

    def _ptr(self) -> Optional[int]:
        if self._handle.closed:
            raise Error(Status.NULL_ARG, "the model is closed")
        return self._handle.ptr

    def layer_ratio(self, layer: int) -> int:
        """Compression ratio of a layer: 0 (window only), 4 (CSA) or 128 (HCA)."""
        if not 0 <= layer < self.n_layers:
            raise Error(Status.LAYER_RANGE, f"layer {layer} outside 0..{self.n_layers - 1}")
        return int(_lib.hc_model_layer_ratio(self._ptr(), layer))

    @property
    def info(self) -> ModelInfo:
        """The model's geometry, a :class:`ModelInfo`."""
        i = _capi.hc_model_info()
        i.struct_size = ctypes.sizeof(i)
        _check(_lib.hc_model_info_get(self._ptr(), ctypes.byref(i)))
        kw = {f.name: getattr(i, f.name) for f in dataclasses.fields(ModelInfo)}
        kw["has_weights"] = bool(kw["has_weights"])
        return ModelInfo(**kw)

    def cache_bytes(self, n_tokens: int,
                    cache_format: Union[CacheFormat, int, str] = CacheFormat.DEFAULT) -> Tuple[int, int]:
        """``(kv_bytes, state_bytes)`` a context holds after ``n_tokens`` tokens."""
        kv, state = ctypes.c_uint64(), ctypes.c_uint64()
        fmt = _enum(CacheFormat, cache_format, "cache_format")
        _check(_lib.hc_model_cache_bytes(self._ptr(), n_tokens, fmt, ctypes.byref(kv),
                                         ctypes.byref(state)))
        return int(kv.value), int(state.value)

    def close(self) -> None:
        """Release the model (freed once its contexts are closed too). Idempotent."""
        self._finalizer()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._handle.closed else f"{self.n_layers} layers, dim {self.dim}"
        return f"<hybridctx.Model {state}>"


@dataclasses.dataclass(frozen=True)
class MemoryInfo:
    """What a context holds, in bytes of its backend's memory (``hc_ctx_memory_info``)."""
    own_bytes: int        #: cache this context alone holds (window, states, unshared pages)
    shared_bytes: int     #: pages shared with forks (count them once per family)
    history_bytes: int    #: the rollback history (``max_rollback``), fixed
    workspace_bytes: int  #: activations of one piece of ``max_chunk`` tokens, backend scratch


class CudaArrayLike(Protocol):
    """A device array the type checker can see: torch tensors and every object with
    ``__cuda_array_interface__`` (objects with only ``__dlpack__`` work too, with ``out=``)."""

    @property
    def __cuda_array_interface__(self) -> Any: ...


_DevT = TypeVar("_DevT", bound=CudaArrayLike)
_OutT = TypeVar("_OutT")
#: x or out in device memory: a torch tensor, or an object with __cuda_array_interface__ or __dlpack__
DeviceArrayLike = Any


def _free_ctx(ptr: Optional[int], handle: _ModelHandle) -> None:
    _lib.hc_ctx_free(ptr)
    handle.release()


def _int(v: Any, name: str, bits: int, low: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not low <= v < 1 << bits:
        raise _bad_arg(f"{name} {v!r} is out of range")
    return int(v)


def _is_device(obj: Any) -> bool:
    try:
        return _devarray.is_device(obj)
    except _devarray.DeviceArrayError as e:
        raise _bad_arg(str(e)) from None


def _stream_handle(stream: Any) -> Optional[int]:
    try:
        return _devarray.stream_handle(stream)
    except _devarray.DeviceArrayError as e:
        raise _bad_arg(str(e)) from None


def _resolve_settings(backend: Union[Backend, int, str], device: int, n_threads: int,
                      cache_format: Union[CacheFormat, int, str], io_dtype: Union[IODtype, int, str],
                      io_memory: Union[IOMemory, int, str], max_tokens: int, max_chunk: int,
                      max_rollback: int, cuda_stream: Any,
                      numerics: Union[Numerics, int, str]) -> Dict[str, Any]:
    """The checked values of an hc_ctx_params, as a Context records them (for forks)."""
    return dict(backend=_enum(Backend, backend, "backend"), device=_int(device, "device", 31),
                n_threads=_int(n_threads, "n_threads", 31),
                cache_format=_enum(CacheFormat, cache_format, "cache_format"),
                io_dtype=_enum(IODtype, io_dtype, "io_dtype"),
                io_memory=_enum(IOMemory, io_memory, "io_memory"),
                max_tokens=_int(max_tokens, "max_tokens", 62),
                max_chunk=_int(max_chunk, "max_chunk", 31),
                max_rollback=_int(max_rollback, "max_rollback", 62),
                cuda_stream=_stream_handle(cuda_stream),
                numerics=_enum(Numerics, numerics, "numerics"))


def _ctx_params(s: Dict[str, Any]) -> Tuple[_capi.hc_ctx_params, Any]:
    """An hc_ctx_params of settings (init first: size-versioned) and its error buffer."""
    p = _capi.hc_ctx_params()
    _check(_lib.hc_ctx_params_init(ctypes.byref(p), ctypes.sizeof(p)))
    for name in ("backend", "device", "n_threads", "cache_format", "io_dtype", "io_memory",
                 "max_tokens", "max_chunk", "max_rollback", "numerics"):
        setattr(p, name, int(s[name]))
    p.cuda_stream = s["cuda_stream"]
    errbuf = ctypes.create_string_buffer(1024)
    if not getattr(_lib.hc_backend_info_get, "missing", False):
        # a library older than hc_backend_info_get() does not know errbuf and would refuse
        # the struct's non-zero tail
        p.errbuf = ctypes.cast(errbuf, ctypes.POINTER(ctypes.c_char))
        p.errbuf_size = len(errbuf)
    return p, errbuf


class Context:
    """One token sequence and its compressed KV cache.

    ``Context(model, backend="cpu", ...)``: the keyword arguments are those of ``hc_ctx_params``:
    ``backend`` (:class:`Backend` or "auto"/"cpu"/"cuda"), ``device``, ``n_threads`` (0: all
    cores; results do not depend on it), ``cache_format`` (:class:`CacheFormat`), ``io_dtype``
    (:class:`IODtype` or "f32"/"bf16"), ``io_memory`` (:class:`IOMemory`: "host" for numpy
    arrays, "device" for GPU tensors, CUDA backend only), ``max_tokens`` (0: the model's
    maximum), ``max_chunk``, ``max_rollback`` (tokens :meth:`truncate` can always take back; 0:
    none), ``cuda_stream`` (a ``cudaStream_t`` as an int, or a torch/CuPy stream object;
    None: a stream of the context's own) and ``numerics`` (:class:`Numerics` or
    "default"/"fast"/"exact"; the CPU backend computes EXACT for every value, see
    :attr:`numerics`).

    A failed creation raises :class:`Error` with the library's detail (for a backend that cannot
    be used, what :func:`backend_info` reports too). The context keeps its model alive. Calls are
    serialised by a lock (the library uses a context from one thread at a time). ``close()``, a
    ``with`` block or garbage collection frees it.

    Device I/O (``io_memory="device"``): x and y are torch CUDA tensors, or objects with
    ``__cuda_array_interface__`` (v2/v3) or ``__dlpack__``, C-contiguous, float32 (bfloat16 or
    uint16 bits for ``io_dtype="bf16"``), on the context's device. A call runs on the tensor's
    stream, without host copies and without waiting for the GPU: torch's current stream, the
    ``"stream"`` of ``__cuda_array_interface__``; where the object names none (DLPack, whose
    producer is asked to order its work before it, or a stream-less interface) on the stream the
    context runs on as the binding knows it (``cuda_stream``: given at creation, by
    :meth:`set_stream` or by an earlier call), else on the legacy default stream. The context
    switches streams (``hc_ctx_set_stream``) only when that stream differs from its own, and
    stays there: a stream must live while the context runs on it (torch's streams always do;
    call ``set_stream(None)`` before destroying another). y is ready on that stream when the call
    returns. Host arrays are refused by such a context, device arrays by a host one.
    """

    _ptr: Optional[int]

    def __init__(self, model: Model, *, backend: Union[Backend, int, str] = Backend.AUTO,
                 device: int = 0, n_threads: int = 0,
                 cache_format: Union[CacheFormat, int, str] = CacheFormat.DEFAULT,
                 io_dtype: Union[IODtype, int, str] = IODtype.F32,
                 io_memory: Union[IOMemory, int, str] = IOMemory.HOST, max_tokens: int = 0,
                 max_chunk: int = 0, max_rollback: int = 0, cuda_stream: Any = None,
                 numerics: Union[Numerics, int, str] = Numerics.DEFAULT) -> None:
        if not isinstance(model, Model):
            raise TypeError("model must be a hybridctx.Model")
        settings = _resolve_settings(backend, device, n_threads, cache_format, io_dtype, io_memory,
                                     max_tokens, max_chunk, max_rollback, cuda_stream, numerics)
        p, errbuf = _ctx_params(settings)
        handle = model._handle
        mptr = handle.acquire()
        out = ctypes.c_void_p()
        st = _lib.hc_ctx_create(mptr, ctypes.byref(p), ctypes.byref(out))
        if st != 0:
            handle.release()
            raise Error(st, errbuf.value.decode(errors="replace"))
        self._setup(model, out.value, settings)

    def _setup(self, model: Model, ptr: Optional[int], settings: Dict[str, Any]) -> None:
        """Adopt a new context handle (model's handle already acquired for it)."""
        self._lock = threading.Lock()
        self._model = model
        self._dim = model.dim
        self._settings = settings
        self._io_dtype: IODtype = settings["io_dtype"]
        self._io_memory: IOMemory = settings["io_memory"]
        self._stream: Optional[int] = settings["cuda_stream"]  # None: a stream of its own
        self._progress: Optional[_Progress] = None
        self._ptr = ptr
        self._finalizer = weakref.finalize(self, _free_ctx, ptr, model._handle)
        self._on_cuda = _lib.hc_ctx_backend(ptr) == Backend.CUDA  # AUTO resolved
        # DEFAULT resolved; a library without hc_ctx_numerics (before 0.2) has EXACT only
        self._numerics = Numerics.EXACT if getattr(_lib.hc_ctx_numerics, "missing", False) \
            else Numerics(_lib.hc_ctx_numerics(ptr))

    # -- internals ---------------------------------------------------------------------------

    def _open(self) -> int:
        """The handle (call with the lock held)."""
        if self._ptr is None:
            raise Error(Status.NULL_ARG, "the context is closed")
        return self._ptr

    def _done(self, st: int) -> None:
        """After a call on the handle (lock held): raise what the progress callback raised, or
        Error with the last error."""
        raised = self._progress.take() if self._progress is not None else None
        if raised is not None:
            _raise_from_callback(raised, st)
        if st != 0:
            raise Error(st, _lib.hc_ctx_last_error(self._ptr).decode(errors="replace"))

    def _switch_stream(self, stream: Optional[int]) -> None:
        """Run on ``stream`` from now on (lock held); only when it differs from the current one."""
        if stream is not None and stream != self._stream:
            self._done(_lib.hc_ctx_set_stream(self._ptr, stream))
            self._stream = stream

    def _call(self, fn: Callable[..., int], *args: Any, stream: Optional[int] = None) -> None:
        """Call fn(ctx, *args) under the lock (on ``stream`` when given); raise Error with the
        last error on failure."""
        with self._lock:
            ptr = self._open()
            self._switch_stream(stream)
            self._done(fn(ptr, *args))

    def _get(self, fn: Callable[[int], int], closed: int) -> int:
        with self._lock:
            return closed if self._ptr is None else fn(self._ptr)

    def _input(self, x: npt.ArrayLike) -> "npt.NDArray[Any]":
        """x as a C-contiguous array of the context's dtype, shape (n, dim) or (dim,)."""
        if not isinstance(x, np.ndarray) and hasattr(x, "__dlpack__"):
            try:  # a host DLPack object (device ones do not come here)
                x = np.from_dlpack(x)  # type: ignore[arg-type]
            except Exception:
                pass  # np.asarray may still read it (__array__, the buffer protocol)
        x = np.asarray(x)
        if self._io_dtype == IODtype.F32:
            if x.dtype != np.float32:
                if x.dtype.kind != "f":
                    raise _bad_arg(f"x has dtype {x.dtype}; this context takes float32 "
                                   "(bfloat16 bits need io_dtype='bf16')")
                x = x.astype(np.float32)
        elif x.dtype != np.uint16:
            if x.dtype.name != "bfloat16":  # ml_dtypes.bfloat16, where installed
                raise _bad_arg(f"x has dtype {x.dtype}; this context takes bfloat16 bits as uint16")
            x = x.view(np.uint16)
        if x.ndim not in (1, 2) or x.shape[-1] != self._dim:
            raise _bad_arg(f"x has shape {x.shape}; expected (n, {self._dim}) or ({self._dim},)")
        if x.size == 0:
            raise Error(Status.N_TOKENS, "x holds no token")
        return np.ascontiguousarray(x)

    def _host_io(self, x: Any, out: Any, rows: Optional[int] = None, what: str = "the batch needs"
                 ) -> Tuple["npt.NDArray[Any]", "npt.NDArray[Any]", int]:
        """Checked host x and out (allocated when None) and the row count; ``rows``: the count
        the call needs (``what`` explains it)."""
        if self._io_memory == IOMemory.DEVICE:
            raise _bad_arg(f"this context takes x and y in CUDA device memory (io_memory='device'), "
                           f"but x is a host {type(x).__name__}: pass a torch CUDA tensor or an "
                           "object with __cuda_array_interface__ or __dlpack__")
        x = self._input(x)
        n = 1 if x.ndim == 1 else x.shape[0]
        if rows is not None and n != rows:
            raise _bad_arg(f"{what}: x has shape {x.shape}, not ({rows}, {self._dim})")
        if out is None:
            out = np.empty_like(x)
        elif (not isinstance(out, np.ndarray) or out.shape != x.shape or out.dtype != x.dtype
              or not out.flags.c_contiguous or not out.flags.writeable):
            raise _bad_arg(f"out must be a writable C-contiguous {x.dtype} array of shape {x.shape}")
        if out.ctypes.data != x.ctypes.data and np.may_share_memory(out, x):
            raise _bad_arg("out overlaps x without being x")
        return x, out, n

    def _dev_read(self, obj: Any, stream: int, name: str) -> _devarray.DeviceArray:
        try:
            a = _devarray.read(obj, stream)
        except _devarray.DeviceArrayError as e:
            raise _bad_arg(f"{name}: {e}") from None
        want = "f32" if self._io_dtype == IODtype.F32 else "bf16"
        if a.dtype != want:
            raise _bad_arg(f"{name} holds {a.dtype}; this context takes "
                           f"{'float32' if want == 'f32' else 'bfloat16 (or its bits as uint16)'}")
        if len(a.shape) not in (1, 2) or a.shape[-1] != self._dim:
            raise _bad_arg(f"{name} has shape {a.shape}; expected (n, {self._dim}) or ({self._dim},)")
        if a.device is not None and self._on_cuda and a.device != self._settings["device"]:
            raise _bad_arg(f"{name} is on CUDA device {a.device}, the context on device "
                           f"{self._settings['device']}")
        if a.nbytes and not a.ptr:
            raise _bad_arg(f"{name} has a NULL data pointer")
        return a

    def _device_io(self, x: Any, out: Any, rows: Optional[int] = None,
                   what: str = "the batch needs"
                   ) -> Tuple[_devarray.DeviceArray, _devarray.DeviceArray, Any, int, int]:
        """Checked device x and out (a torch output allocated when None): (x, y, the out
        object, rows, the stream to run on)."""
        if self._io_memory != IOMemory.DEVICE:
            which = "x" if _is_device(x) else "out"
            raise _bad_arg(f"{which} is in CUDA device memory, but this context takes host (numpy) "
                           "arrays: create it with io_memory='device' (CUDA backend) for GPU tensors")
        if not _is_device(x):
            raise _bad_arg(f"this context takes x and y in CUDA device memory (io_memory='device'), "
                           f"but x is a host {type(x).__name__}: pass a torch CUDA tensor or an "
                           "object with __cuda_array_interface__ or __dlpack__")
        default = self._stream if self._stream is not None else _devarray.STREAM_LEGACY
        xa = self._dev_read(x, default, "x")
        stream = xa.stream if xa.stream is not None else default
        n = 1 if len(xa.shape) == 1 else xa.shape[0]
        if n == 0:
            raise Error(Status.N_TOKENS, "x holds no token")
        if rows is not None and n != rows:
            raise _bad_arg(f"{what}: x has shape {xa.shape}, not ({rows}, {self._dim})")
        if out is None:
            torch = _devarray._torch_tensor(x)
            if torch is None:
                raise _bad_arg("out= is needed for a device x that is not a torch tensor (out=x "
                               "writes in place)")
            out = torch.empty_like(x)  # on the current stream, which the call runs on
        elif not _is_device(out):
            raise _bad_arg(f"out is a host {type(out).__name__}; this context writes device memory")
        ya = self._dev_read(out, stream, "out")
        if ya.shape != xa.shape or ya.dtype != xa.dtype:
            raise _bad_arg(f"out has shape {ya.shape} ({ya.dtype}); x has {xa.shape} ({xa.dtype})")
        if ya.readonly:
            raise _bad_arg("out is read-only")
        if ya.stream is not None and ya.stream != stream:
            raise _bad_arg(f"out is ordered on stream {ya.stream:#x}, x on {stream:#x}: put both on "
                           "one stream")
        if ya.ptr != xa.ptr and ya.ptr < xa.ptr + xa.nbytes and xa.ptr < ya.ptr + ya.nbytes:
            raise _bad_arg("out overlaps x without being x")
        return xa, ya, out, n, stream

    def _wants_device(self, x: Any, out: Any) -> bool:
        return (self._io_memory == IOMemory.DEVICE or _is_device(x)
                or (out is not None and _is_device(out)))

    # -- running tokens ------------------------------------------------------------------------

    @overload
    def append(self, layer: int, x: _DevT, out: None = None) -> _DevT: ...
    @overload
    def append(self, layer: int, x: npt.ArrayLike, out: None = None) -> "npt.NDArray[Any]": ...
    @overload
    def append(self, layer: int, x: Any, out: _OutT) -> _OutT: ...

    def append(self, layer: int, x: Any, out: Any = None) -> Any:
        """Run a chunk through ``layer`` (0 starts a chunk, then 1, 2, ..., the last layer).

        ``x``: shape ``(n, dim)`` (or ``(dim,)`` for one token) of the context's dtype: a numpy
        array (or array-like) for a host context, a device array for ``io_memory="device"`` (see
        the class). Returns the attention output, of the same shape; ``out`` (which may be ``x``)
        receives it when given: C-contiguous, writable, of that shape and dtype (a numpy array, or
        a device array; for a device x that is not a torch tensor ``out`` is needed).
        """
        return self._run(layer, x, out, None)

    @overload
    def decode(self, layer: int, x: _DevT, out: None = None) -> _DevT: ...
    @overload
    def decode(self, layer: int, x: npt.ArrayLike, out: None = None) -> "npt.NDArray[Any]": ...
    @overload
    def decode(self, layer: int, x: Any, out: _OutT) -> _OutT: ...

    def decode(self, layer: int, x: Any, out: Any = None) -> Any:
        """:meth:`append` with one token: ``x`` has shape ``(dim,)`` or ``(1, dim)``."""
        return self._run(layer, x, out, 1)

    def _run(self, layer: Any, x: Any, out: Any, rows: Optional[int]) -> Any:
        layer = _layer(layer)
        if self._wants_device(x, out):
            xa, ya, out, n, stream = self._device_io(x, out, rows, "decode takes one token")
            self._call(_lib.hc_append, layer, xa.ptr, n, ya.ptr, stream=stream)
            del xa, ya  # DLPack capsules go back to their producers once the call is done
            return out
        xh, out, n = self._host_io(x, out, rows, "decode takes one token")
        self._call(_lib.hc_append, layer, xh.ctypes.data, n, out.ctypes.data)
        return out

    def reset(self) -> None:
        """Empty the context (length 0, no chunk in progress)."""
        self._call(_lib.hc_ctx_reset)

    # -- forks and rollback --------------------------------------------------------------------

    def fork(self, *, n_threads: Optional[int] = None, max_chunk: Optional[int] = None,
             io_dtype: Union[IODtype, int, str, None] = None,
             io_memory: Union[IOMemory, int, str, None] = None, cuda_stream: Any = None,
             max_tokens: Optional[int] = None, max_rollback: Optional[int] = None) -> "Context":
        """A new context with this one's sequence, metadata and rollback history
        (``hc_ctx_fork``).

        The two share the cache pages of the common prefix copy-on-write and are independent
        afterwards; each continues bitwise like a context that computed the whole sequence
        itself. Without arguments the fork has this context's settings (those it was created or
        forked with); each argument given replaces one (None: as this context; ``cuda_stream=0``:
        a stream of the fork's own). Backend, device, cache format and numerics are always this
        context's. No chunk may be in progress (``Status.ORDER``); on failure this context is
        unchanged.
        """
        over = dict(n_threads=n_threads, max_chunk=max_chunk, io_dtype=io_dtype,
                    io_memory=io_memory, cuda_stream=cuda_stream, max_tokens=max_tokens,
                    max_rollback=max_rollback)
        given = {k: v for k, v in over.items() if v is not None}
        s = dict(self._settings)
        if given:
            s.update(given)
            s = _resolve_settings(**s)
            # zero means "as the source" for these three: the fork holds the source's pages
            p, errbuf = _ctx_params(dict(s, backend=Backend.AUTO, device=0,
                                         cache_format=CacheFormat.DEFAULT))
            pp: Any = ctypes.byref(p)
        else:
            pp, errbuf = None, None
        handle = self._model._handle
        out = ctypes.c_void_p()
        with self._lock:
            ptr = self._open()
            handle.acquire()
            st = _lib.hc_ctx_fork(ptr, pp, ctypes.byref(out))
            if st != 0:
                handle.release()
                detail = errbuf.value if errbuf is not None and errbuf.value else \
                    _lib.hc_ctx_last_error(ptr)
                raise Error(st, detail.decode(errors="replace"))
        f = object.__new__(type(self))
        f._setup(self._model, out.value, s)
        return f

    def truncate(self, n_tokens: int) -> None:
        """Shorten the sequence to ``n_tokens`` tokens (``hc_ctx_truncate``): appending
        afterwards gives bitwise what it would give had the discarded tokens never been
        appended. ``n_tokens`` goes from :attr:`truncate_limit` to :attr:`n_tokens`; further back
        is ``Status.LIMIT`` (always, with ``max_rollback`` 0), a longer length
        ``Status.INVALID_ARG``, a chunk in progress ``Status.ORDER``; a refusal changes nothing.
        The metadata is kept as it is."""
        n = _int(n_tokens, "n_tokens", 63, -(1 << 63))
        self._call(_lib.hc_ctx_truncate, n)

    @property
    def truncate_limit(self) -> int:
        """The shortest length :meth:`truncate` accepts now (``hc_ctx_truncate_limit``); -1 when
        closed."""
        if getattr(_lib.hc_ctx_truncate_limit, "missing", False):
            raise Error(Status.UNSUPPORTED, "this libhybridctx has no hc_ctx_truncate_limit (0.2)")
        return self._get(_lib.hc_ctx_truncate_limit, -1)

    @property
    def max_rollback(self) -> int:
        """Tokens :meth:`truncate` can always take back (``hc_ctx_params.max_rollback``)."""
        return int(self._settings["max_rollback"])

    def memory_info(self) -> MemoryInfo:
        """The bytes the context holds, own, shared with forks, history and workspace
        (``hc_ctx_memory_info_get``). ``own_bytes + shared_bytes == memory_bytes``."""
        i = _capi.hc_ctx_memory_info()
        i.struct_size = ctypes.sizeof(i)
        self._call(_lib.hc_ctx_memory_info_get, ctypes.byref(i))
        return MemoryInfo(own_bytes=i.own_bytes, shared_bytes=i.shared_bytes,
                          history_bytes=i.history_bytes, workspace_bytes=i.workspace_bytes)

    # -- progress and streams -------------------------------------------------------------------

    def set_progress(self, callback: Optional[ProgressFn]) -> None:
        """Set (or clear, with None) the progress callback of the context's long calls
        (``hc_ctx_set_progress``): ``callback(done, total)`` for the tokens of append, decode and
        the batch calls (after each piece of ``max_chunk`` tokens), and for the bytes of save,
        load, save_bytes and load_bytes. A truthy return stops the call, which raises
        :class:`Error` with ``Status.ABORTED`` and changes nothing (a stopped save keeps the file
        that was there). An exception raised by the callback (Ctrl-C's KeyboardInterrupt too)
        stops the call the same way and is raised once it has returned. The callback must not
        call this context."""
        prog = _Progress(callback) if callback is not None else None
        with self._lock:
            ptr = self._open()
            self._done(_lib.hc_ctx_set_progress(ptr, prog.c_fn if prog else _NO_PROGRESS, None))
            self._progress = prog  # referenced as long as C may call it

    def set_stream(self, stream: Any) -> None:
        """Run on another CUDA stream from now on (``hc_ctx_set_stream``): a ``cudaStream_t`` as
        an int, a torch or CuPy stream object, or None (or 0) for a stream of the context's own.
        The switch is ordered (work queued before it completes before work queued after it)
        without blocking. The caller keeps the stream alive while the context runs on it. A CPU
        context accepts None only (``Status.UNSUPPORTED``)."""
        handle = _stream_handle(stream)
        with self._lock:
            ptr = self._open()
            self._done(_lib.hc_ctx_set_stream(ptr, handle))
            self._stream = handle

    @property
    def cuda_stream(self) -> Optional[int]:
        """The stream the context runs on as the binding knows it (given at creation, by
        :meth:`set_stream` or by a device-memory call), or None for a stream of its own."""
        return self._stream

    # -- properties ----------------------------------------------------------------------------

    @property
    def model(self) -> Model:
        """The context's :class:`Model`."""
        return self._model

    @property
    def io_dtype(self) -> IODtype:
        """The :class:`IODtype` of ``x`` and ``y``."""
        return self._io_dtype

    @property
    def io_memory(self) -> IOMemory:
        """Where ``x`` and ``y`` live: :class:`IOMemory`."""
        return self._io_memory

    @property
    def numerics(self) -> Numerics:
        """The :class:`Numerics` the context computes with, ``FAST`` or ``EXACT``
        (``hc_ctx_numerics``: ``numerics="default"`` resolved for the backend; the CPU backend
        always gives EXACT). A batch takes contexts of one numerics only."""
        return self._numerics

    @property
    def n_tokens(self) -> int:
        """Tokens the context holds (chunks that have passed the last layer); -1 when closed."""
        return self._get(_lib.hc_ctx_n_tokens, -1)

    @property
    def next_layer(self) -> int:
        """The layer the next :meth:`append` must name (0 when no chunk is in progress)."""
        return self._get(_lib.hc_ctx_next_layer, -1)

    @property
    def memory_bytes(self) -> int:
        """Bytes of cache the context holds now."""
        return self._get(_lib.hc_ctx_memory_bytes, 0)

    @property
    def backend(self) -> Backend:
        """The :class:`Backend` the context runs on (CPU or CUDA)."""
        return Backend(self._get(_lib.hc_ctx_backend, 0))

    # -- sessions ------------------------------------------------------------------------------

    @staticmethod
    def _save_params(compression: Union[Compression, int, str], zstd_level: int,
                     n_threads: int) -> _capi.hc_save_params:
        p = _capi.hc_save_params()
        _check(_lib.hc_save_params_init(ctypes.byref(p), ctypes.sizeof(p)))
        p.compression = _enum(Compression, compression, "compression")
        for name, v in (("zstd_level", zstd_level), ("n_threads", n_threads)):
            if not isinstance(v, int) or not 0 <= v < 1 << 31:
                raise _bad_arg(f"{name} {v!r} is out of range")
            setattr(p, name, v)
        return p

    def save(self, path: PathLike, *, compression: Union[Compression, int, str] = Compression.DEFAULT,
             zstd_level: int = 0, n_threads: int = 0) -> None:
        """Save the session to ``path`` atomically (no chunk may be in progress).

        ``compression``: :class:`Compression` or "none"/"zstd"; ``zstd_level`` 1..19 (0 = 1).
        """
        p = self._save_params(compression, zstd_level, n_threads)
        self._call(_lib.hc_ctx_save, _path(path), ctypes.byref(p))

    def load(self, path: PathLike) -> None:
        """Replace the contents with the session in ``path``; on failure nothing changes."""
        self._call(_lib.hc_ctx_load, _path(path))

    def save_bytes(self, *, compression: Union[Compression, int, str] = Compression.DEFAULT,
                   zstd_level: int = 0, n_threads: int = 0) -> bytes:
        """The session as ``bytes`` (the bytes :meth:`save` writes)."""
        p = self._save_params(compression, zstd_level, n_threads)
        size, written = ctypes.c_uint64(), ctypes.c_uint64()
        self._call(_lib.hc_ctx_save_size, ctypes.byref(p), ctypes.byref(size))
        buf = ctypes.create_string_buffer(max(size.value, 1))
        self._call(_lib.hc_ctx_save_buffer, buf, size.value, ctypes.byref(p), ctypes.byref(written))
        return buf.raw[:written.value]

    def load_bytes(self, data: Union[bytes, bytearray, memoryview]) -> None:
        """Replace the contents with a session held in a bytes-like object."""
        data = bytes(data)
        self._call(_lib.hc_ctx_load_buffer, data, len(data))

    @property
    def metadata(self) -> bytes:
        """The metadata blob saved with the session (``bytes``; ``b""`` when none). Assign
        bytes to set it, ``b""`` to remove it."""
        data, n = ctypes.c_void_p(), ctypes.c_uint64()
        with self._lock:
            if self._ptr is None:
                raise Error(Status.NULL_ARG, "the context is closed")
            _check(_lib.hc_ctx_get_metadata(self._ptr, ctypes.byref(data), ctypes.byref(n)))
            return ctypes.string_at(data.value, n.value) if data.value and n.value else b""

    @metadata.setter
    def metadata(self, value: Union[bytes, bytearray, memoryview]) -> None:
        value = bytes(value)
        self._call(_lib.hc_ctx_set_metadata, value if value else None, len(value))

    # -- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Free the context. Idempotent."""
        with self._lock:
            self._finalizer()
            self._ptr = None

    def __enter__(self) -> "Context":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._ptr is None:
            return "<hybridctx.Context closed>"
        return f"<hybridctx.Context {self.n_tokens} tokens, next layer {self.next_layer}>"


def _layer(layer: Any) -> int:
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
        raise _bad_arg(f"layer must be an int, not {type(layer).__name__}")
    return int(layer) if -(1 << 31) <= layer < (1 << 31) else -1  # out of int: LAYER_RANGE


@contextlib.contextmanager
def _locked(ctxs: Sequence[Context]) -> Iterator[List[int]]:
    """Hold the locks of every context of a batch (each once, in one global order so that two
    batches sharing contexts cannot deadlock); yields their handles."""
    unique = sorted({id(c): c for c in ctxs}.values(), key=id)
    held: List[Context] = []
    try:
        for c in unique:
            c._lock.acquire()
            held.append(c)
        ptrs = []
        for i, c in enumerate(ctxs):
            if c._ptr is None:
                raise Error(Status.NULL_ARG, f"context {i} of the batch is closed")
            ptrs.append(c._ptr)
        yield ptrs
    finally:
        for c in reversed(held):
            c._lock.release()


def _batch(ctxs: Sequence[Context], layer: int, x: Any, counts: Optional[Sequence[int]],
           out: Any) -> Any:
    ctxs = list(ctxs)
    if not ctxs:
        raise _bad_arg("a batch needs at least one context")
    for i, c in enumerate(ctxs):
        if not isinstance(c, Context):
            raise TypeError(f"ctxs[{i}] is a {type(c).__name__}, not a hybridctx.Context")
    if len(ctxs) >= 1 << 31:
        raise _bad_arg(f"{len(ctxs)} contexts are more than a batch takes")
    layer = _layer(layer)
    first = ctxs[0]
    if counts is None:
        rows = len(ctxs)
        n_arr = None
    else:
        counts = list(counts)
        if len(counts) != len(ctxs):
            raise _bad_arg(f"n_tokens has {len(counts)} counts for {len(ctxs)} contexts")
        for i, k in enumerate(counts):
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
                raise _bad_arg(f"n_tokens[{i}] must be an int, not {type(k).__name__}")
            if k <= 0:
                raise Error(Status.N_TOKENS, f"n_tokens[{i}] is {k}; each count must be > 0")
            if k >= 1 << 62:
                raise _bad_arg(f"n_tokens[{i}] {k} is out of range")
        rows = sum(int(k) for k in counts)
        n_arr = (ctypes.c_int64 * len(counts))(*counts)
    stream: Optional[int] = None
    if first._wants_device(x, out):
        xa, ya, out, _, stream = first._device_io(x, out, rows)
        xp, yp = xa.ptr, ya.ptr
    else:
        xh, out, _ = first._host_io(x, out, rows)
        xp, yp = xh.ctypes.data, out.ctypes.data
    with _locked(ctxs) as ptrs:
        arr = (ctypes.c_void_p * len(ptrs))(*ptrs)
        # a batch is ordered on the stream of ctxs[0] (the others join it by events)
        first._switch_stream(stream)
        if n_arr is None:
            st = _lib.hc_decode_batch(arr, len(ptrs), layer, xp, yp)
        else:
            st = _lib.hc_append_batch(arr, len(ptrs), layer, xp, n_arr, yp)
        for c in ctxs:
            raised = c._progress.take() if c._progress is not None else None
            if raised is not None:
                for other in ctxs:  # a second report cannot follow the stop; drop any left
                    if other._progress is not None:
                        other._progress.take()
                _raise_from_callback(raised, st)
        if st != 0:  # every context of a failed batch holds the detail
            raise Error(st, _lib.hc_ctx_last_error(ptrs[0]).decode(errors="replace"))
    return out


@overload
def decode_batch(ctxs: Sequence[Context], layer: int, x: _DevT, out: None = None) -> _DevT: ...
@overload
def decode_batch(ctxs: Sequence[Context], layer: int, x: npt.ArrayLike,
                 out: None = None) -> "npt.NDArray[Any]": ...
@overload
def decode_batch(ctxs: Sequence[Context], layer: int, x: Any, out: _OutT) -> _OutT: ...


def decode_batch(ctxs: Sequence[Context], layer: int, x: Any, out: Any = None) -> Any:
    """One decode step of several contexts of one model through ``layer`` (``hc_decode_batch``):
    row i of ``x`` (shape ``(len(ctxs), dim)``) is the token of ``ctxs[i]``, row i of the result
    its output. Bitwise what :meth:`Context.decode` on each context gives. All or nothing: on any
    refusal (a NaN in a row, contexts of two models, a context twice, mixed backends or I/O,
    one not at ``layer``) no context changes, and :class:`Error` carries the detail. The
    contexts share backend, device, io_dtype, io_memory, cache format and
    :attr:`Context.numerics`; with device memory the batch runs on the stream of x (the first
    context switches to it) and y is ready there. ``out`` as for :meth:`Context.append`."""
    return _batch(ctxs, layer, x, None, out)


@overload
def append_batch(ctxs: Sequence[Context], layer: int, x: _DevT, n_tokens: Sequence[int],
                 out: None = None) -> _DevT: ...
@overload
def append_batch(ctxs: Sequence[Context], layer: int, x: npt.ArrayLike, n_tokens: Sequence[int],
                 out: None = None) -> "npt.NDArray[Any]": ...
@overload
def append_batch(ctxs: Sequence[Context], layer: int, x: Any, n_tokens: Sequence[int],
                 out: _OutT) -> _OutT: ...


def append_batch(ctxs: Sequence[Context], layer: int, x: Any, n_tokens: Sequence[int],
                 out: Any = None) -> Any:
    """A ragged batch (``hc_append_batch``): ``ctxs[i]`` takes ``n_tokens[i]`` tokens (each
    > 0; for ``layer`` > 0 its chunk in progress). ``x`` holds the contexts' rows one after
    another, shape ``(sum(n_tokens), dim)``; the result is laid out the same way. Otherwise as
    :func:`decode_batch`."""
    if isinstance(n_tokens, (int, np.integer)):
        raise _bad_arg("n_tokens is a sequence of one count per context")
    return _batch(ctxs, layer, x, n_tokens, out)
