"""Tests of the Python bindings against the real library (CPU backend).

Run against an installed package (a wheel, or ``pip install bindings/python``, holds the library:
``tools/check-wheel.sh``), or against a build directory with the package's sources:
``LD_LIBRARY_PATH=<builddir> PYTHONPATH=bindings/python python3 -m pytest bindings/python``
(``tools/check-bindings.sh``). $HC_EXPECT_LIBRARY_DIR, when set, is the directory the library
must be loaded from. The cross-language session test reads HC_XLANG_DIR and HC_XLANG_REQUIRE (see
bindings/README.md).
"""
import gc
import os
import pathlib
import shutil
import dataclasses
import subprocess
import sys
import threading

import numpy as np
import pytest

import hybridctx
from hybridctx import (Backend, BackendCaps, BackendInfo, BackendState, CacheFormat, Context,
                       Error, Model, Status)

PREFIX = 150
DECODE = 2
DATA = pathlib.Path(os.environ.get("HC_TEST_DATA", pathlib.Path(__file__).parents[3] / "tests" / "data"))


@pytest.fixture(scope="module")
def tiny():
    with Model.random("tiny", seed=42) as m:
        yield m


def cpu(model, **kw):
    return Context(model, backend="cpu", **kw)


def inputs(layer, tokens, dim):
    """The shared input of the cross-language scenario: exact in float32 in every language."""
    t = np.asarray(tokens, dtype=np.uint64).reshape(-1, 1)
    k = (np.uint64(layer) * np.uint64(1000003) + t) * np.uint64(dim) + np.arange(dim, dtype=np.uint64)
    h = (k * np.uint64(2654435761) + np.uint64(12345)) & np.uint64(0xFFFFFFFF)
    return ((h >> np.uint64(8)).astype(np.float64) / 8388608.0 - 1.0).astype(np.float32)


def prefix(ctx):
    m = ctx.model
    for layer in range(m.n_layers):
        ctx.append(layer, inputs(layer, range(PREFIX), m.dim))


def decode_tail(ctx):
    """Decode DECODE tokens after the prefix; all layers' outputs, concatenated."""
    m = ctx.model
    return np.concatenate([ctx.decode(layer, inputs(layer, [PREFIX + k], m.dim)[0])
                           for k in range(DECODE) for layer in range(m.n_layers)])


def same_bits(a, b):
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def test_version():
    assert hybridctx.version().startswith("0.")
    # a library of the bindings' major version and at least their minor (0.1 bindings load 0.2)
    assert hybridctx.version_number() // 10000 == hybridctx.BINDING_VERSION[0]
    assert hybridctx.version_number() // 100 >= BINDING_MM()
    from hybridctx import _capi
    assert _capi.version_error(hybridctx.version_number(), hybridctx.version()) is None
    msg = _capi.version_error(10000, "1.0.0")
    assert "libhybridctx 1.0.0 is loaded" in msg and "0.x with x >= 1" in msg
    assert _capi.version_error(0, "0.0.0") is not None
    assert _capi.version_error(200, "0.2.0") is None and _capi.version_error(299, "0.2.99") is None
    assert not _capi.lib.missing, f"functions missing from the library: {_capi.lib.missing}"


def BINDING_MM():
    return hybridctx.BINDING_VERSION[0] * 100 + hybridctx.BINDING_VERSION[1]


def test_struct_layout_matches_header(tmp_path):
    """The ctypes mirrors have the C layout (offsets and sizes from a compiled helper). A mirror
    may be a prefix of a newer header's struct: size-versioned structs only grow at their end,
    and the library reads struct_size bytes."""
    from hybridctx import _capi
    cc = shutil.which("cc") or shutil.which("gcc")
    include = pathlib.Path(__file__).parents[3] / "include"
    if not cc or not (include / "hybridctx.h").exists():
        pytest.skip("no C compiler or header")
    lines = ['#include <stddef.h>', '#include <stdio.h>', '#include "hybridctx.h"', "int main(void) {"]
    for s in _capi.STRUCTS:
        name = s.__name__
        lines.append(f'printf("{name} %zu\\n", sizeof({name}));')
        for f, _ in s._fields_:
            lines.append(f'printf("{name}.{f} %zu\\n", offsetof({name}, {f}));')
    lines.append("return 0; }")
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines))
    subprocess.run([cc, "-I", str(include), "-o", str(tmp_path / "layout"), str(src)], check=True)
    out = subprocess.run([str(tmp_path / "layout")], check=True, capture_output=True, text=True).stdout
    want = dict(line.rsplit(" ", 1) for line in out.splitlines())
    for s in _capi.STRUCTS:
        assert int(want[s.__name__]) >= __import__("ctypes").sizeof(s), s.__name__
        for f, _ in s._fields_:
            assert int(want[f"{s.__name__}.{f}"]) == getattr(s, f).offset, f"{s.__name__}.{f}"


def test_model_info(tiny):
    assert (tiny.n_layers, tiny.dim) == (4, 512)
    info = tiny.info
    assert info.n_layers == 4 and info.dim == 512 and info.has_weights and info.weight_bytes > 0
    assert tiny.layer_ratio(0) in (0, 4, 128)
    with pytest.raises(Error) as e:
        tiny.layer_ratio(4)
    assert e.value.status == Status.LAYER_RANGE
    kv_bf16, _ = tiny.cache_bytes(1 << 20, "bf16")
    kv_fp8, state = tiny.cache_bytes(1 << 20, CacheFormat.FP8)
    assert kv_bf16 > kv_fp8 > 0 and state > 0
    with Model.random("tiny", 1, geometry_only=True) as g, cpu(g) as c:
        assert not g.info.has_weights
        with pytest.raises(Error) as e:
            c.decode(0, np.zeros(512, np.float32))
        assert e.value.status == Status.UNSUPPORTED


CPU_CAPS = BackendCaps.HOST_IO | BackendCaps.THREADS | BackendCaps.BITWISE_CPU
# why CUDA is not usable on a machine without a GPU: a CPU-only build (NOT_BUILT), a CUDA build
# without its module or the CUDA runtime (MODULE_MISSING), or without a driver or device
# (NO_DEVICE)
CUDA_ABSENT = (BackendState.NOT_BUILT, BackendState.MODULE_MISSING, BackendState.NO_DEVICE)


def test_backend_info_cpu():
    info = hybridctx.backend_info(Backend.CPU)
    assert isinstance(info, BackendInfo)
    assert (info.backend, info.state, info.n_devices, info.caps, info.name) == (
        Backend.CPU, BackendState.USABLE, 1, CPU_CAPS, "cpu")
    assert int(info.caps) == 1 | 8 | 16 and BackendCaps.DEVICE_IO not in info.caps and info.detail
    assert type(info.backend) is Backend and type(info.state) is BackendState
    assert type(info.caps) is BackendCaps
    assert hybridctx.backend_info("cpu", device=5) == info  # the CPU ignores the device
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.state = BackendState.NO_DEVICE


def test_backend_info_cuda_and_auto(tiny):
    cuda = hybridctx.backend_info("cuda")
    auto = hybridctx.backend_info()
    assert hybridctx.backend_info(Backend.AUTO, 0) == auto
    assert (cuda.backend, cuda.name) == (Backend.CUDA, "cuda") and cuda.detail
    with Context(tiny) as ctx:
        assert ctx.backend == auto.backend
    if cuda.state == BackendState.USABLE:  # a GPU: AUTO picks it
        assert cuda.n_devices == hybridctx.cuda_device_count() >= 1
        assert BackendCaps.HOST_IO in cuda.caps and BackendCaps.DEVICE_IO in cuda.caps
        assert auto == cuda
        assert hybridctx.backend_info("cuda", cuda.n_devices).state == BackendState.NO_DEVICE
        return
    assert cuda.state in CUDA_ABSENT, cuda
    assert (cuda.n_devices, cuda.caps) == (0, BackendCaps(0))
    assert hybridctx.cuda_device_count() == 0
    if cuda.state == BackendState.NOT_BUILT:
        assert "no CUDA backend" in cuda.detail
    # AUTO picks the CPU; its state says why not CUDA
    assert (auto.backend, auto.state, auto.n_devices, auto.caps, auto.name) == (
        Backend.CPU, cuda.state, 1, CPU_CAPS, "cpu")
    assert auto.detail.startswith("cuda not used: ") and cuda.detail[:200] in auto.detail


def test_backend_info_bad_args():
    for backend in ("rocm", 3, -1):
        with pytest.raises(Error) as e:
            hybridctx.backend_info(backend)
        assert e.value.status == Status.INVALID_ARG and "backend" in e.value.message
    for device in (-1, 1 << 31, 0.5):
        with pytest.raises(Error) as e:
            hybridctx.backend_info(Backend.CUDA, device)
        assert e.value.status == Status.INVALID_ARG and "device" in e.value.message


def test_context_error_carries_detail(tiny):
    cuda = hybridctx.backend_info("cuda")
    assert cuda.state in CUDA_ABSENT + (BackendState.USABLE,), cuda
    device = cuda.n_devices  # none on a machine without a GPU; one past the last one with GPUs
    with pytest.raises(Error) as e:
        Context(tiny, backend="cuda", device=device)
    err = e.value
    assert err.status == Status.NO_DEVICE and err.name == "HC_ERR_NO_DEVICE"
    assert err.message != Status.NO_DEVICE.description
    assert str(err) == f"HC_ERR_NO_DEVICE: {err.message}"
    if cuda.state == BackendState.NOT_BUILT:
        assert "no CUDA backend" in err.message
    if cuda.state in (BackendState.NOT_BUILT, BackendState.MODULE_MISSING):
        assert err.message == f"CUDA backend: {cuda.detail}"
    else:  # the module is loaded: it names the device asked for
        assert f"CUDA device {device} asked for" in err.message


def mapped(name):
    """The real path of the loaded shared object whose file name starts with ``name``."""
    with open("/proc/self/maps") as f:
        paths = {line.split(None, 5)[-1].strip() for line in f if "/" in line}
    found = [p for p in paths if os.path.basename(p).startswith(name)]
    assert len(found) <= 1, found
    return found[0] if found else None


def run_python(code, **env):
    return subprocess.run([sys.executable, "-c", code], env=dict(os.environ, **env),
                          capture_output=True, text=True)


def test_library_search_order(tmp_path):
    """$HYBRIDCTX_LIBRARY alone if set; else the library inside the package; else the soname."""
    from hybridctx import _capi
    core = mapped("libhybridctx.so")
    assert core, "no libhybridctx.so in /proc/self/maps"
    if "/" in _capi.LIBRARY:  # loaded by path, not by soname
        assert os.path.samefile(core, _capi.LIBRARY)
    expect = os.environ.get("HC_EXPECT_LIBRARY_DIR")
    if expect:
        assert os.path.samefile(os.path.dirname(core), expect), (core, expect)
    bundled = os.path.join(_capi.PACKAGE_DIR, _capi.SONAME)
    if os.environ.get("HYBRIDCTX_LIBRARY"):
        assert _capi._candidates() == [os.environ["HYBRIDCTX_LIBRARY"]]
    elif os.path.exists(bundled):  # an installed package: its own library comes first
        assert _capi._candidates()[:2] == [bundled, _capi.SONAME] and _capi.LIBRARY == bundled
    else:  # the package's sources: the soname (LD_LIBRARY_PATH, an installed library)
        assert _capi._candidates()[0] == _capi.SONAME
    # the override is the only place looked at: a missing file fails the import and is named
    missing = tmp_path / "libhybridctx.so.0"
    r = run_python("import hybridctx", HYBRIDCTX_LIBRARY=str(missing))
    assert r.returncode != 0 and "ImportError" in r.stderr and str(missing) in r.stderr, r.stderr
    code = "import hybridctx; from hybridctx import _capi; print(_capi.LIBRARY, hybridctx.version())"
    r = run_python(code, HYBRIDCTX_LIBRARY=core)
    assert r.returncode == 0 and r.stdout.split() == [core, hybridctx.version()], r.stderr


def test_cuda_module_beside_the_core_library():
    """A module that loads (CUDA usable, or no device here) is the one beside the core library
    (dladdr), unless $HYBRIDCTX_CUDA_MODULE names another."""
    state = hybridctx.backend_info("cuda").state
    module = mapped("libhybridctx-cuda.so")
    if state not in (BackendState.USABLE, BackendState.NO_DEVICE):
        assert module is None
        return
    assert module, "the CUDA module is not loaded"
    if not os.environ.get("HYBRIDCTX_CUDA_MODULE"):
        assert os.path.dirname(module) == os.path.dirname(mapped("libhybridctx.so")), module


def test_cuda_module_override(tmp_path):
    """$HYBRIDCTX_CUDA_MODULE naming a missing file: MODULE_MISSING in a CUDA build."""
    missing = tmp_path / "libhybridctx-cuda.so.0"
    code = ("import hybridctx; i = hybridctx.backend_info('cuda'); "
            "print(int(i.state)); print(i.detail)")
    env = dict(os.environ, HYBRIDCTX_CUDA_MODULE=str(missing))
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True,
                         text=True).stdout
    state, detail = out.split("\n", 1)
    if hybridctx.backend_info("cuda").state == BackendState.NOT_BUILT:
        assert int(state) == BackendState.NOT_BUILT and "no CUDA backend" in detail
    else:
        assert int(state) == BackendState.MODULE_MISSING and str(missing) in detail


def test_load_checkpoint():
    with Model.load(DATA / "tiny-a-short.safetensors") as m:
        assert m.n_layers > 0 and m.dim > 0


# the configuration of the C library's golden session files (tests/test_session_util.c)
GOLDEN_JSON = (
    '{"hidden_size": 512, "num_hidden_layers": 4, "num_attention_heads": 8, "head_dim": 128,'
    ' "qk_rope_head_dim": 64, "q_lora_rank": 256, "o_groups": 2, "o_lora_rank": 256,'
    ' "index_n_heads": 8, "index_head_dim": 128, "index_topk": 16, "sliding_window": 128,'
    ' "rope_theta": 10000, "compress_rope_theta": 160000, "rms_norm_eps": 1e-6,'
    ' "max_position_embeddings": 1048576,'
    ' "rope_scaling": {"type": "yarn", "factor": 16, "original_max_position_embeddings": 65536,'
    ' "beta_fast": 32, "beta_slow": 1},'
    ' "compress_ratios": [0, 4, 128, 4]}'
)


@pytest.mark.parametrize("name", ["session-golden-v1.0-raw.hcs", "session-golden-v1.0-zstd.hcs"])
def test_golden_sessions_of_the_c_library(name):
    path = DATA / name
    if not path.exists():
        pytest.skip(f"{name} not found")
    with Model.random(GOLDEN_JSON, 1, geometry_only=True) as m, cpu(m) as c:
        c.load(path)
        assert c.n_tokens == 300
        assert c.metadata == b"golden session, format 1.0\0"


def test_append_decode(tiny):
    with cpu(tiny) as c:
        assert c.backend == Backend.CPU
        x = np.repeat(inputs(0, [0], tiny.dim), 8, axis=0)
        for layer in range(tiny.n_layers):
            assert c.next_layer == layer
            y = c.append(layer, x)
            assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
        assert c.n_tokens == 8 and c.memory_bytes > 0
        xy = inputs(1, [8], tiny.dim)[0]
        for layer in range(tiny.n_layers):
            assert c.decode(layer, xy, out=xy) is xy  # in place
        assert c.n_tokens == 9
        c.reset()
        assert c.n_tokens == 0
        # float64 and list input are converted to float32
        y64 = c.decode(0, inputs(0, [0], tiny.dim)[0].astype(np.float64))
        assert y64.dtype == np.float32


def test_bf16(tiny):
    with cpu(tiny, io_dtype="bf16") as c:
        x = (inputs(0, [0], tiny.dim)[0].view(np.uint32) >> 16).astype(np.uint16)
        y = c.decode(0, x)
        assert y.dtype == np.uint16 and y.any()
        with pytest.raises(Error) as e:
            c.decode(1, np.zeros(tiny.dim, np.float32))
        assert e.value.status == Status.INVALID_ARG


def test_bad_calls(tiny, tmp_path):
    c = cpu(tiny)
    dim = tiny.dim
    x = inputs(0, [0], dim)[0]

    with pytest.raises(Error) as e:
        c.decode(2, x)
    assert e.value.status == Status.ORDER and e.value.name == "HC_ERR_ORDER"
    assert "needs layer 0" in e.value.message and str(e.value).startswith("HC_ERR_ORDER: ")

    for layer in (7, -1, 1 << 40):
        with pytest.raises(Error) as e:
            c.decode(layer, x)
        assert e.value.status == Status.LAYER_RANGE
    # wrong shapes and dtypes are caught before calling C
    for bad in (x[:-1], np.zeros((2, dim - 1), np.float32), np.zeros((1, 1, dim), np.float32),
                x.astype(np.int32)):
        with pytest.raises(Error) as e:
            c.append(0, bad)
        assert e.value.status == Status.INVALID_ARG
    with pytest.raises(Error) as e:
        c.append(0, np.zeros((0, dim), np.float32))
    assert e.value.status == Status.N_TOKENS
    with pytest.raises(Error) as e:
        c.decode(0, np.zeros((2, dim), np.float32))
    assert e.value.status == Status.INVALID_ARG
    with pytest.raises(Error) as e:
        c.append(0, x, out=np.zeros(dim - 1, np.float32))
    assert e.value.status == Status.INVALID_ARG
    buf = np.zeros((3, dim), np.float32)
    with pytest.raises(Error) as e:
        c.append(0, buf[:2], out=buf[1:])
    assert e.value.status == Status.INVALID_ARG and "overlaps" in e.value.message
    nan = x.copy()
    nan[3] = np.nan
    with pytest.raises(Error) as e:
        c.decode(0, nan)
    assert e.value.status == Status.NONFINITE
    with pytest.raises(Error) as e:
        Context(tiny, backend="tpu")
    assert e.value.status == Status.INVALID_ARG

    # a chunk in progress cannot be saved
    c.decode(0, x)
    with pytest.raises(Error) as e:
        c.save(tmp_path / "s.hcs")
    assert e.value.status == Status.ORDER
    for layer in range(1, tiny.n_layers):
        c.decode(layer, x)
    assert c.n_tokens == 1

    with pytest.raises(Error) as e:
        Model.load("/nonexistent/model/dir")
    assert e.value.status == Status.IO and e.value.message
    with pytest.raises(Error) as e:
        c.load(tmp_path / "missing.hcs")
    assert e.value.status == Status.IO
    (tmp_path / "junk.hcs").write_bytes(b"not a session at all")
    with pytest.raises(Error):
        c.load(tmp_path / "junk.hcs")
    assert c.n_tokens == 1
    with pytest.raises(Error) as e:
        Model.random("no-such-preset", 1)
    assert e.value.status == Status.UNKNOWN_PRESET
    if hybridctx.cuda_device_count() == 0:
        with pytest.raises(Error) as e:
            Context(tiny, backend="cuda")
        assert e.value.status == Status.NO_DEVICE

    c.close()
    c.close()
    with pytest.raises(Error) as e:
        c.decode(0, x)
    assert e.value.status == Status.NULL_ARG
    assert c.n_tokens == -1


def test_model_freed_after_its_contexts():
    m = Model.random("tiny", 42)
    c = cpu(m)
    m.close()  # freed only after the context is closed
    with pytest.raises(Error):
        cpu(m)
    for layer in range(m.n_layers):
        c.decode(layer, inputs(layer, [0], m.dim)[0])
    assert m._handle.ptr is not None
    c.close()
    assert m._handle.ptr is None


def test_garbage_collection_frees():
    handles = []
    for _ in range(3):
        m = Model.random("tiny", 42)
        cpu(m)  # dropped without close
        handles.append(m._handle)
        del m
    gc.collect()
    assert all(h.ptr is None for h in handles)


def test_threads(tiny):
    results = [None] * 4
    shared = cpu(tiny)

    def work(i):
        with cpu(tiny, n_threads=1) as c:
            y = None
            for layer in range(tiny.n_layers):
                y = c.decode(layer, inputs(layer, [0], tiny.dim)[0])
            results[i] = y
        shared.n_tokens  # calls on one context are serialised by its lock

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(same_bits(results[0], r) for r in results[1:])
    shared.close()


def test_save_load(tiny, tmp_path):
    with cpu(tiny) as ref, cpu(tiny) as a, cpu(tiny) as b, cpu(tiny, cache_format="bf16") as c:
        prefix(ref)
        prefix(a)
        a.metadata = b"token ids"
        a.save(tmp_path / "py-self.hcs", compression="zstd", zstd_level=3)
        blob = a.save_bytes()
        assert blob
        want = decode_tail(ref)

        b.load(str(tmp_path / "py-self.hcs"))
        assert b.n_tokens == PREFIX and b.metadata == b"token ids"
        assert same_bits(decode_tail(b), want)

        c.load_bytes(blob)
        assert same_bits(decode_tail(c), want)
        c.metadata = b""
        assert c.metadata == b""


def test_cross_language_sessions(tiny, tmp_path):
    """Writes python.hcs into HC_XLANG_DIR and checks every other language's session there (those
    named in HC_XLANG_REQUIRE must be present)."""
    d = pathlib.Path(os.environ.get("HC_XLANG_DIR") or tmp_path)
    d.mkdir(parents=True, exist_ok=True)
    with cpu(tiny) as ref:
        prefix(ref)
        ref.save(d / "python.hcs")
        want = decode_tail(ref)
    for lang in os.environ.get("HC_XLANG_REQUIRE", "").split():
        assert (d / f"{lang}.hcs").exists(), f"the {lang} session is missing from {d}"
    checked = []
    for f in sorted(d.glob("*.hcs")):
        with cpu(tiny) as c:
            c.load(f)
            assert c.n_tokens == PREFIX, f.name
            assert same_bits(decode_tail(c), want), f"{f.name}: decode differs after loading"
        checked.append(f.name)
    print("cross-language sessions checked:", checked)
