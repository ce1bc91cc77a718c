"""Loading of libhybridctx through ctypes: prototypes, mirrored structs, the version check.

Internal: use the classes of the ``hybridctx`` package instead.
"""
import ctypes
import ctypes.util
import os
from typing import Any, Callable, List, Optional, Tuple
from ctypes import (POINTER, Structure, c_char, c_char_p, c_int, c_int32, c_int64, c_size_t,
                    c_uint32, c_uint64, c_void_p)

#: The library version these bindings were written for: a runtime library with the same major and
#: at least this minor version is accepted.
BINDING_VERSION = (0, 1)

SONAME = "libhybridctx.so.0"


#: The directory of this package, where a wheel (or ``pip install``) puts the library.
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _candidates() -> List[str]:
    """Where to look, in order: $HYBRIDCTX_LIBRARY alone if set; else the library inside this
    package (a wheel's, which finds its CUDA module beside itself), then the soname (an installed
    library, ``LD_LIBRARY_PATH``), then what ``ctypes.util.find_library`` sees."""
    override = os.environ.get("HYBRIDCTX_LIBRARY")
    if override:
        return [override]
    names: List[str] = []
    bundled = os.path.join(PACKAGE_DIR, SONAME)
    if os.path.exists(bundled):
        names.append(bundled)
    names.append(SONAME)
    found = ctypes.util.find_library("hybridctx")
    if found:
        names.append(found)
    return names


def _open() -> Tuple[ctypes.CDLL, str]:
    """Open the shared object (see :func:`_candidates`); returns it and the name it was opened by."""
    tried: List[str] = []
    for name in _candidates():
        try:
            return ctypes.CDLL(name), name
        except OSError as e:
            tried.append(f"{name}: {e}")
    raise ImportError(
        "hybridctx: cannot load libhybridctx (" + "; ".join(tried) + "). "
        "Install the package from a wheel or with `pip install bindings/python` (it holds the "
        "library), install the library, add its directory to LD_LIBRARY_PATH, or set "
        "HYBRIDCTX_LIBRARY to the path of libhybridctx.so.0.")


# --- structs mirrored from hybridctx.h (size-versioned: always filled by *_params_init) ---------

#: hc_progress_fn: int (*)(void *user, uint64_t done, uint64_t total)
PROGRESS_FN = ctypes.CFUNCTYPE(c_int, c_void_p, c_uint64, c_uint64)


class hc_model_params(Structure):
    _fields_ = [("struct_size", c_uint32), ("flags", c_int32), ("n_threads", c_int32),
                ("reserved0", c_int32), ("errbuf", POINTER(c_char)), ("errbuf_size", c_uint64),
                ("progress", PROGRESS_FN), ("progress_user", c_void_p)]


class hc_model_info(Structure):
    _fields_ = [("struct_size", c_uint32)] + [(n, c_int32) for n in (
        "n_layers", "dim", "n_heads", "head_dim", "rope_dim", "q_lora_rank", "o_groups",
        "o_lora_rank", "window", "index_n_heads", "index_head_dim", "index_topk", "has_weights",
        "reserved0")] + [("max_positions", c_int64), ("weight_bytes", c_uint64)]


class hc_ctx_params(Structure):
    _fields_ = [("struct_size", c_uint32), ("backend", c_int32), ("device", c_int32),
                ("n_threads", c_int32), ("cache_format", c_int32), ("io_dtype", c_int32),
                ("io_memory", c_int32), ("flags", c_int32), ("max_tokens", c_int64),
                ("cuda_stream", c_void_p), ("max_chunk", c_int64),
                ("errbuf", POINTER(c_char)), ("errbuf_size", c_uint64),
                ("max_rollback", c_int64), ("numerics", c_int32), ("reserved", c_int32)]


class hc_ctx_memory_info(Structure):
    _fields_ = [("struct_size", c_uint32), ("reserved0", c_uint32), ("own_bytes", c_uint64),
                ("shared_bytes", c_uint64), ("history_bytes", c_uint64),
                ("workspace_bytes", c_uint64)]


class hc_save_params(Structure):
    _fields_ = [("struct_size", c_uint32), ("compression", c_int32), ("zstd_level", c_int32),
                ("n_threads", c_int32)]


class hc_backend_info(Structure):
    _fields_ = [("struct_size", c_uint32), ("backend", c_int32), ("state", c_int32),
                ("n_devices", c_int32), ("caps", c_uint32), ("reserved0", c_uint32),
                ("name", c_char * 16), ("detail", c_char * 256)]


STRUCTS = (hc_model_params, hc_model_info, hc_ctx_params, hc_ctx_memory_info, hc_save_params,
           hc_backend_info)

_P = c_void_p  # opaque handles and data pointers
_PROTOTYPES = {
    "hc_version_number": (c_uint32, []),
    "hc_version_string": (c_char_p, []),
    "hc_strerror": (c_char_p, [c_int32]),
    "hc_status_name": (c_char_p, [c_int32]),
    "hc_model_params_init": (c_int32, [POINTER(hc_model_params), c_size_t]),
    "hc_model_load": (c_int32, [c_char_p, POINTER(hc_model_params), POINTER(_P)]),
    "hc_model_create_random": (c_int32, [c_char_p, c_uint64, POINTER(hc_model_params), POINTER(_P)]),
    "hc_model_free": (None, [_P]),
    "hc_model_n_layers": (c_int, [_P]),
    "hc_model_dim": (c_int, [_P]),
    "hc_model_layer_ratio": (c_int, [_P, c_int]),
    "hc_model_info_get": (c_int32, [_P, POINTER(hc_model_info)]),
    "hc_model_cache_bytes": (c_int32, [_P, c_int64, c_int32, POINTER(c_uint64), POINTER(c_uint64)]),
    "hc_ctx_params_init": (c_int32, [POINTER(hc_ctx_params), c_size_t]),
    "hc_ctx_create": (c_int32, [_P, POINTER(hc_ctx_params), POINTER(_P)]),
    "hc_ctx_free": (None, [_P]),
    "hc_ctx_last_error": (c_char_p, [_P]),
    "hc_append": (c_int32, [_P, c_int, _P, c_int64, _P]),
    "hc_decode": (c_int32, [_P, c_int, _P, _P]),
    "hc_ctx_n_tokens": (c_int64, [_P]),
    "hc_ctx_next_layer": (c_int, [_P]),
    "hc_ctx_memory_bytes": (c_uint64, [_P]),
    "hc_ctx_backend": (c_int32, [_P]),
    "hc_ctx_reset": (c_int32, [_P]),
    "hc_save_params_init": (c_int32, [POINTER(hc_save_params), c_size_t]),
    "hc_ctx_save": (c_int32, [_P, c_char_p, POINTER(hc_save_params)]),
    "hc_ctx_load": (c_int32, [_P, c_char_p]),
    "hc_ctx_save_size": (c_int32, [_P, POINTER(hc_save_params), POINTER(c_uint64)]),
    "hc_ctx_save_buffer": (c_int32, [_P, _P, c_uint64, POINTER(hc_save_params), POINTER(c_uint64)]),
    "hc_ctx_load_buffer": (c_int32, [_P, _P, c_uint64]),
    "hc_ctx_set_metadata": (c_int32, [_P, _P, c_uint64]),
    "hc_ctx_get_metadata": (c_int32, [_P, POINTER(_P), POINTER(c_uint64)]),
    "hc_cuda_device_count": (c_int32, [POINTER(c_int32)]),
    "hc_backend_info_get": (c_int32, [c_int32, c_int32, POINTER(hc_backend_info)]),
    # serving (0.2)
    "hc_decode_batch": (c_int32, [POINTER(_P), c_int32, c_int, _P, _P]),
    "hc_append_batch": (c_int32, [POINTER(_P), c_int32, c_int, _P, POINTER(c_int64), _P]),
    "hc_ctx_fork": (c_int32, [_P, POINTER(hc_ctx_params), POINTER(_P)]),
    "hc_ctx_truncate": (c_int32, [_P, c_int64]),
    "hc_ctx_truncate_limit": (c_int64, [_P]),
    "hc_ctx_memory_info_get": (c_int32, [_P, POINTER(hc_ctx_memory_info)]),
    "hc_ctx_set_progress": (c_int32, [_P, PROGRESS_FN, _P]),
    "hc_ctx_set_stream": (c_int32, [_P, _P]),
    "hc_ctx_numerics": (c_int32, [_P]),
}

HC_ERR_UNSUPPORTED = -15
HC_ERR_ABORTED = -25


class _Lib:
    """The loaded library: one attribute per C function, with argtypes and restype set."""

    def __init__(self, cdll: ctypes.CDLL) -> None:
        self.cdll = cdll
        self.missing: List[str] = []
        for name, (restype, argtypes) in _PROTOTYPES.items():
            try:
                fn = getattr(cdll, name)
            except AttributeError:
                # an incomplete library build: the function reports HC_ERR_UNSUPPORTED
                self.missing.append(name)
                fn = _missing(name)
            else:
                fn.restype, fn.argtypes = restype, argtypes
            setattr(self, name, fn)

    def __getattr__(self, name: str) -> Any:
        # for type checkers: the functions are set in __init__ (a missing one fails here)
        raise AttributeError(f"libhybridctx has no function {name}")


def _missing(name: str) -> Callable[..., int]:
    def call(*_args: Any) -> int:
        return HC_ERR_UNSUPPORTED
    call.__name__ = name
    call.missing = True  # type: ignore[attr-defined]
    return call


def version_error(number: int, version_string: str) -> Optional[str]:
    """The message for an incompatible runtime version ``number`` (MAJOR*10000+MINOR*100+PATCH),
    or None when it is compatible."""
    major, minor = number // 10000, number // 100 % 100
    want_major, want_minor = BINDING_VERSION
    if major == want_major and minor >= want_minor:
        return None
    return (f"libhybridctx {version_string} is loaded, but these Python bindings need version "
            f"{want_major}.x with x >= {want_minor} (install a matching libhybridctx or matching "
            f"bindings)")


_cdll, LIBRARY = _open()
#: The loaded library; ``LIBRARY`` is the name or path it was loaded by.
lib = _Lib(_cdll)
_msg = version_error(lib.hc_version_number(), lib.hc_version_string().decode())
if _msg:
    raise ImportError("hybridctx: " + _msg)
