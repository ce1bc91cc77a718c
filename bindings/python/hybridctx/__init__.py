"""Python bindings of libhybridctx: DeepSeek V4's hybrid attention (sliding window, compressed
sparse attention and heavily compressed attention) with its compressed KV cache.

- :class:`Model` holds the attention weights of every layer; it is immutable and thread-safe.
- :class:`Context` holds one token sequence. A chunk of ``n`` tokens enters layer 0, then 1, ...,
  then the last layer (:meth:`Context.append`); the application runs its own MLP between layers.
  Inputs and outputs are numpy arrays of shape ``(n, dim)`` (or ``(dim,)`` for one token):
  float32, or uint16 holding bfloat16 bit patterns for a context made with ``io_dtype="bf16"``.
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
import ctypes
import dataclasses
import enum
import os
import threading
import weakref
from typing import Any, Callable, Optional, Tuple, Type, TypeVar, Union

import numpy as np
import numpy.typing as npt

from . import _capi
from ._capi import lib as _lib

__version__ = "0.1.0"
__all__ = ["Model", "Context", "ModelInfo", "Error", "Status", "Backend", "CacheFormat",
           "IODtype", "Compression", "BackendState", "BackendCaps", "BackendInfo", "backend_info",
           "version", "version_number", "cuda_device_count", "BINDING_VERSION"]

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
    def _make(cls, ctor: Callable[[Any, Any], int], geometry_only: bool, n_threads: int) -> "Model":
        if n_threads < 0:
            raise _bad_arg(f"n_threads {n_threads} must be >= 0")
        p = _capi.hc_model_params()
        _check(_lib.hc_model_params_init(ctypes.byref(p), ctypes.sizeof(p)))
        errbuf = ctypes.create_string_buffer(1024)
        p.flags = 1 if geometry_only else 0  # HC_MODEL_GEOMETRY_ONLY
        p.n_threads = n_threads
        p.errbuf = ctypes.cast(errbuf, ctypes.POINTER(ctypes.c_char))
        p.errbuf_size = len(errbuf)
        out = ctypes.c_void_p()
        st = ctor(ctypes.byref(p), ctypes.byref(out))
        _check(st, errbuf.value.decode(errors="replace"))
        self = object.__new__(cls)
        self._handle = _ModelHandle(out.value)
        self._finalizer = weakref.finalize(self, self._handle.close)
        self.n_layers = _lib.hc_model_n_layers(out.value)
        self.dim = _lib.hc_model_dim(out.value)
        return self

    @classmethod
    def random(cls, preset_or_config_json: str = "tiny", seed: int = 0, *, geometry_only: bool = False,
               n_threads: int = 0) -> "Model":
        """A model with seeded random weights.

        ``preset_or_config_json`` is ``"tiny"``, ``"v4-flash"``, ``"v4-pro"`` or the text of a HF
        config.json. The same seed gives the same weights everywhere. ``geometry_only`` creates the
        configuration without weights (contexts can be sized, saved and loaded, but ``append``
        fails with ``Status.UNSUPPORTED``); ``n_threads`` 0 uses all cores.
        """
        text = preset_or_config_json.encode()
        if not isinstance(seed, int) or not 0 <= seed < 1 << 64:
            raise _bad_arg(f"seed {seed!r} must be an int in 0..2**64-1")
        if b"\0" in text:
            raise _bad_arg("the preset or config text contains a NUL byte")
        return cls._make(lambda p, out: _lib.hc_model_create_random(text, seed, p, out),
                         geometry_only, n_threads)

    @classmethod
    def load(cls, path: PathLike, *, geometry_only: bool = False, n_threads: int = 0) -> "Model":
        """Load a checkpoint directory or a ``.safetensors`` file (see ``hc_model_load``)."""
        b = _path(path)
        return cls._make(lambda p, out: _lib.hc_model_load(b, p, out), geometry_only, n_threads)

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


def _free_ctx(ptr: Optional[int], handle: _ModelHandle) -> None:
    _lib.hc_ctx_free(ptr)
    handle.release()


class Context:
    """One token sequence and its compressed KV cache.

    ``Context(model, backend="cpu", ...)``: the keyword arguments are those of ``hc_ctx_params``:
    ``backend`` (:class:`Backend` or "auto"/"cpu"/"cuda"), ``device``, ``n_threads`` (0: all
    cores; results do not depend on it), ``cache_format`` (:class:`CacheFormat`), ``io_dtype``
    (:class:`IODtype` or "f32"/"bf16"), ``max_tokens`` (0: the model's maximum) and ``max_chunk``.

    A failed creation raises :class:`Error` with the library's detail (for a backend that cannot
    be used, what :func:`backend_info` reports too). The context keeps its model alive. Calls are
    serialised by a lock (the library uses a context from one thread at a time). ``close()``, a
    ``with`` block or garbage collection frees it.
    """

    _ptr: Optional[int]

    def __init__(self, model: Model, *, backend: Union[Backend, int, str] = Backend.AUTO,
                 device: int = 0, n_threads: int = 0,
                 cache_format: Union[CacheFormat, int, str] = CacheFormat.DEFAULT,
                 io_dtype: Union[IODtype, int, str] = IODtype.F32, max_tokens: int = 0,
                 max_chunk: int = 0) -> None:
        if not isinstance(model, Model):
            raise TypeError("model must be a hybridctx.Model")
        p = _capi.hc_ctx_params()
        _check(_lib.hc_ctx_params_init(ctypes.byref(p), ctypes.sizeof(p)))
        p.backend = _enum(Backend, backend, "backend")
        p.cache_format = _enum(CacheFormat, cache_format, "cache_format")
        self._io_dtype = _enum(IODtype, io_dtype, "io_dtype")
        p.io_dtype = self._io_dtype
        for name, v in (("device", device), ("n_threads", n_threads), ("max_tokens", max_tokens),
                        ("max_chunk", max_chunk)):
            if not isinstance(v, int) or v < 0 or v >= 1 << (62 if name == "max_tokens" else 31):
                raise _bad_arg(f"{name} {v!r} is out of range")
            setattr(p, name, v)
        errbuf = ctypes.create_string_buffer(1024)
        if not getattr(_lib.hc_backend_info_get, "missing", False):
            # a library older than hc_backend_info_get() does not know errbuf and would refuse
            # the struct's non-zero tail
            p.errbuf = ctypes.cast(errbuf, ctypes.POINTER(ctypes.c_char))
            p.errbuf_size = len(errbuf)
        self._lock = threading.Lock()
        self._model = model
        self._dim = model.dim
        handle = model._handle
        mptr = handle.acquire()
        out = ctypes.c_void_p()
        st = _lib.hc_ctx_create(mptr, ctypes.byref(p), ctypes.byref(out))
        if st != 0:
            handle.release()
            raise Error(st, errbuf.value.decode(errors="replace"))
        self._ptr = out.value
        self._finalizer = weakref.finalize(self, _free_ctx, out.value, handle)

    # -- internals ---------------------------------------------------------------------------

    def _call(self, fn: Callable[..., int], *args: Any) -> None:
        """Call fn(ctx, *args) under the lock; raise Error with the last error on failure."""
        with self._lock:
            if self._ptr is None:
                raise Error(Status.NULL_ARG, "the context is closed")
            st = fn(self._ptr, *args)
            if st != 0:
                raise Error(st, _lib.hc_ctx_last_error(self._ptr).decode(errors="replace"))

    def _get(self, fn: Callable[[int], int], closed: int) -> int:
        with self._lock:
            return closed if self._ptr is None else fn(self._ptr)

    def _input(self, x: npt.ArrayLike) -> "npt.NDArray[Any]":
        """x as a C-contiguous array of the context's dtype, shape (n, dim) or (dim,)."""
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

    # -- running tokens ------------------------------------------------------------------------

    def append(self, layer: int, x: npt.ArrayLike,
               out: "Optional[npt.NDArray[Any]]" = None) -> "npt.NDArray[Any]":
        """Run a chunk through ``layer`` (0 starts a chunk, then 1, 2, ..., the last layer).

        ``x``: array of shape ``(n, dim)`` (or ``(dim,)`` for one token) of the context's dtype.
        Returns the attention output, an array of the same shape; ``out`` (which may be ``x``)
        receives it when given: a C-contiguous writable array of that shape and dtype.
        """
        x = self._input(x)
        if out is None:
            out = np.empty_like(x)
        elif (not isinstance(out, np.ndarray) or out.shape != x.shape or out.dtype != x.dtype
              or not out.flags.c_contiguous or not out.flags.writeable):
            raise _bad_arg(f"out must be a writable C-contiguous {x.dtype} array of shape {x.shape}")
        if out.ctypes.data != x.ctypes.data and np.may_share_memory(out, x):
            raise _bad_arg("out overlaps x without being x")
        n = 1 if x.ndim == 1 else x.shape[0]
        if not isinstance(layer, (int, np.integer)):
            raise _bad_arg(f"layer must be an int, not {type(layer).__name__}")
        layer = int(layer) if -(1 << 31) <= layer < (1 << 31) else -1
        self._call(_lib.hc_append, layer, x.ctypes.data, n, out.ctypes.data)
        return out

    def decode(self, layer: int, x: npt.ArrayLike,
               out: "Optional[npt.NDArray[Any]]" = None) -> "npt.NDArray[Any]":
        """:meth:`append` with one token: ``x`` has shape ``(dim,)`` or ``(1, dim)``."""
        x = self._input(x)
        if x.size != self._dim:
            raise _bad_arg(f"decode takes one token: x has shape {x.shape}")
        return self.append(layer, x, out)

    def reset(self) -> None:
        """Empty the context (length 0, no chunk in progress)."""
        self._call(_lib.hc_ctx_reset)

    @property
    def model(self) -> Model:
        """The context's :class:`Model`."""
        return self._model

    @property
    def io_dtype(self) -> IODtype:
        """The :class:`IODtype` of ``x`` and ``y``."""
        return self._io_dtype

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
