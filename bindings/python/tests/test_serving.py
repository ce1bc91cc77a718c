"""The serving calls of 0.2 through the Python binding, on the CPU backend: batches, forks,
rollback, memory info, progress and abort, streams, creation errors, numerics.

Every comparison is bitwise: the CPU backend's results do not depend on how a sequence is split
into calls, so a batch, a fork or a truncated context must give exactly the bits of plain calls.
"""
import ctypes

import numpy as np
import pytest

import hybridctx
from hybridctx import Context, Error, IOMemory, MemoryInfo, Model, Numerics, Status, _capi


@pytest.fixture(scope="module")
def tiny():
    with Model.random("tiny", seed=42) as m:
        yield m


def cpu(model, **kw):
    return Context(model, backend="cpu", **kw)


def rows(start, n, dim, salt=0):
    """n token rows (positions start..start+n-1), exact in float32, different per salt."""
    t = np.arange(start, start + n, dtype=np.uint64).reshape(-1, 1) + np.uint64(salt * 7919)
    k = t * np.uint64(dim) + np.arange(dim, dtype=np.uint64)
    h = (k * np.uint64(2654435761) + np.uint64(12345)) & np.uint64(0xFFFFFFFF)
    return ((h >> np.uint64(8)).astype(np.float64) / 8388608.0 - 1.0).astype(np.float32)


def feed(ctx, x):
    """x (n, dim) through every layer as one chunk; the last layer's output. Between layers the
    input is changed a little (a stand-in for the MLP), so layers see different rows."""
    y = None
    for layer in range(ctx.model.n_layers):
        y = ctx.append(layer, x if y is None else x + y * np.float32(0.5))
    return y


def bits(a):
    return np.ascontiguousarray(a).view(np.uint32)


def same(a, b):
    return a.shape == b.shape and np.array_equal(bits(a), bits(b))


def tail(ctx, start, n=2, salt=0):
    """Decode n tokens from position start; every output concatenated."""
    return np.concatenate([feed(ctx, rows(start + k, 1, ctx.model.dim, salt)) for k in range(n)])


def state(ctx):
    return ctx.n_tokens, ctx.next_layer


# -- batches ----------------------------------------------------------------------------------

def test_decode_batch_is_bitwise_separate_decodes(tiny):
    dim, lengths = tiny.dim, (150, 70, 5)
    batch = [cpu(tiny) for _ in lengths]
    alone = [cpu(tiny) for _ in lengths]
    for i, n in enumerate(lengths):
        feed(batch[i], rows(0, n, dim, i))
        feed(alone[i], rows(0, n, dim, i))
    for step in range(3):
        x = np.concatenate([rows(n + step, 1, dim, i) for i, n in enumerate(lengths)])
        for layer in range(tiny.n_layers):
            y = hybridctx.decode_batch(batch, layer, x)
            want = np.stack([c.decode(layer, x[i]) for i, c in enumerate(alone)])
            assert same(y, want), f"step {step} layer {layer}"
            x = x + y * np.float32(0.5)
    for i, (b, a) in enumerate(zip(batch, alone)):
        assert b.n_tokens == a.n_tokens == lengths[i] + 3
        assert same(tail(b, b.n_tokens, salt=i), tail(a, a.n_tokens, salt=i))
    # in place (out is x), and a single context
    x = rows(0, 1, dim, 9)
    for layer in range(tiny.n_layers):
        want = alone[0].decode(layer, x[0])
        assert hybridctx.decode_batch(batch[:1], layer, x, out=x) is x and same(x[0], want)


def test_append_batch_ragged_is_bitwise_separate_appends(tiny):
    dim, counts = tiny.dim, [3, 1, 70]
    batch = [cpu(tiny) for _ in counts]
    alone = [cpu(tiny) for _ in counts]
    for i, c in enumerate(alone):
        feed(c, rows(0, 10 * i + 1, dim, i))
        feed(batch[i], rows(0, 10 * i + 1, dim, i))
    x = np.concatenate([rows(10 * i + 1, k, dim, i) for i, k in enumerate(counts)])
    ends = np.cumsum([0] + counts)
    for layer in range(tiny.n_layers):
        y = hybridctx.append_batch(batch, layer, x, counts)
        want = np.concatenate([c.append(layer, x[ends[i]:ends[i + 1]]) for i, c in enumerate(alone)])
        assert same(y, want), f"layer {layer}"
        x = x + y * np.float32(0.5)
    assert [c.n_tokens for c in batch] == [10 * i + 1 + k for i, k in enumerate(counts)]
    assert same(tail(batch[2], 91), tail(alone[2], 91))
    # numpy counts and in place
    x = rows(0, 4, dim, 3)
    y = x.copy()
    for layer in range(tiny.n_layers):
        want = np.concatenate([alone[0].append(layer, x[:1]), alone[1].append(layer, x[1:])])
        got = hybridctx.append_batch(batch[:2], layer, y, np.array([1, 3]), out=y)
        assert got is y and same(y, want)
        x, y = want, want.copy()


def test_batch_refusals_leave_contexts_unchanged(tiny):
    dim = tiny.dim
    a, b, ref_a, ref_b = cpu(tiny), cpu(tiny), cpu(tiny), cpu(tiny)
    for c, s in ((a, 0), (b, 1), (ref_a, 0), (ref_b, 1)):
        feed(c, rows(0, 20, dim, s))
    x = np.concatenate([rows(20, 1, dim, 0), rows(20, 1, dim, 1)])

    def refused(status, fn, text=None):
        with pytest.raises(Error) as e:
            fn()
        assert e.value.status == status, e.value
        if text:
            assert text in e.value.message, e.value.message
        assert state(a) == (20, 0) and state(b) == (20, 0)

    nan = x.copy()
    nan[1, 7] = np.nan
    refused(Status.NONFINITE, lambda: hybridctx.decode_batch([a, b], 0, nan))
    refused(Status.INVALID_ARG, lambda: hybridctx.decode_batch([a, a], 0, x))
    refused(Status.ORDER, lambda: hybridctx.decode_batch([a, b], 1, x))
    refused(Status.INVALID_ARG, lambda: hybridctx.decode_batch([], 0, x[:0]))
    refused(Status.INVALID_ARG, lambda: hybridctx.decode_batch([a, b], 0, x[:1]), "(2, 512)")
    refused(Status.INVALID_ARG, lambda: hybridctx.append_batch([a, b], 0, x, [1]))
    refused(Status.N_TOKENS, lambda: hybridctx.append_batch([a, b], 0, x, [2, 0]))
    refused(Status.INVALID_ARG, lambda: hybridctx.append_batch([a, b], 0, x, [1, 2]))
    refused(Status.INVALID_ARG, lambda: hybridctx.append_batch([a, b], 0, x, 2))
    with Model.random("tiny", seed=43) as other, cpu(other) as o:
        feed(o, rows(0, 20, dim, 5))
        refused(Status.MODEL_MISMATCH, lambda: hybridctx.decode_batch([a, o], 0, x))
        assert state(o) == (20, 0)
    with cpu(tiny, io_dtype="bf16") as half:
        refused(Status.INVALID_ARG, lambda: hybridctx.decode_batch([a, half], 0, x))
    closed = cpu(tiny)
    closed.close()
    refused(Status.NULL_ARG, lambda: hybridctx.decode_batch([a, closed], 0, x), "closed")
    with pytest.raises(TypeError):
        hybridctx.decode_batch([a, "b"], 0, x)
    # one context mid-chunk: the other's layer differs
    a.decode(0, x[0])
    with pytest.raises(Error) as e:
        hybridctx.decode_batch([a, b], 1, x)
    assert e.value.status == Status.ORDER and state(b) == (20, 0) and state(a) == (20, 1)
    for layer in range(1, tiny.n_layers):
        a.decode(layer, x[0])
    ref_a.decode(0, x[0])
    for layer in range(1, tiny.n_layers):
        ref_a.decode(layer, x[0])
    # after all that, both continue bitwise as their twins
    assert same(tail(a, 21), tail(ref_a, 21)) and same(tail(b, 20, salt=1), tail(ref_b, 20, salt=1))


# -- forks ------------------------------------------------------------------------------------

def test_fork_continues_like_its_source(tiny):
    dim = tiny.dim
    src, ref = cpu(tiny, max_rollback=8), cpu(tiny)
    feed(src, rows(0, 150, dim))
    feed(ref, rows(0, 150, dim))
    src.metadata = b"prompt ids"
    f = src.fork()
    assert isinstance(f, Context) and f is not src
    assert f.n_tokens == 150 and f.metadata == b"prompt ids" and f.max_rollback == 8
    assert f.truncate_limit == src.truncate_limit == 142
    want = tail(ref, 150)
    assert same(tail(f, 150), want)
    assert same(tail(src, 150), want)  # the source is independent of its fork
    # a fork of a fork, with other settings; the first fork freed before it is used
    g = f.fork(max_rollback=2, n_threads=1, max_chunk=16)
    f.close()
    assert (g.n_tokens, g.max_rollback, g.truncate_limit) == (152, 2, 150)
    assert same(tail(g, 152), tail(ref, 152))
    # the source freed first; its fork saves and loads
    h = src.fork(io_dtype="f32")
    src.close()
    blob = h.save_bytes()
    with cpu(tiny) as loaded:
        loaded.load_bytes(blob)
        assert same(tail(loaded, 152), tail(h, 152))


def test_fork_refusals(tiny):
    dim = tiny.dim
    with cpu(tiny) as src:
        feed(src, rows(0, 40, dim))
        src.decode(0, rows(40, 1, dim)[0])
        with pytest.raises(Error) as e:
            src.fork()
        assert e.value.status == Status.ORDER and "chunk in progress" in e.value.message
        with pytest.raises(Error) as e:
            src.fork(max_rollback=4)  # with params: the detail comes through errbuf
        assert e.value.status == Status.ORDER and "chunk in progress" in e.value.message
        assert state(src) == (40, 1)
        for layer in range(1, tiny.n_layers):
            src.decode(layer, rows(40, 1, dim)[0])
        with pytest.raises(Error) as e:
            src.fork(max_tokens=10)
        assert e.value.status == Status.POSITION and "below" in e.value.message
        with pytest.raises(Error) as e:
            src.fork(io_memory="device")  # the CPU backend has no device I/O
        assert e.value.status == Status.INVALID_ARG and "device-memory" in e.value.message
        with pytest.raises(Error) as e:
            src.fork(max_rollback=-1)
        assert e.value.status == Status.INVALID_ARG
        assert state(src) == (41, 0)
    with pytest.raises(Error) as e:
        src.fork()
    assert e.value.status == Status.NULL_ARG


# -- rollback ---------------------------------------------------------------------------------

def test_truncate_equals_never_appending(tiny):
    dim = tiny.dim
    c, ref = cpu(tiny, max_rollback=16), cpu(tiny)
    feed(c, rows(0, 150, dim))
    feed(ref, rows(0, 150, dim))
    assert c.truncate_limit == 134 and ref.truncate_limit == 150
    feed(c, rows(150, 10, dim, 3))   # speculative tokens, 5 of them accepted
    feed(ref, rows(150, 5, dim, 3))
    assert c.truncate_limit == 144
    c.truncate(155)
    assert c.n_tokens == 155 and c.truncate_limit == 144
    assert same(tail(c, 155, 3), tail(ref, 155, 3))
    c.truncate(c.n_tokens)  # the current length: a no-op
    assert c.n_tokens == 158


def test_truncate_refusals_leave_context_unchanged(tiny):
    dim = tiny.dim
    c, none, ref = cpu(tiny, max_rollback=4), cpu(tiny), cpu(tiny)
    for x in (c, none, ref):
        feed(x, rows(0, 30, dim))

    def refused(ctx, n, status):
        before = state(ctx)
        with pytest.raises(Error) as e:
            ctx.truncate(n)
        assert e.value.status == status, e.value
        assert e.value.message
        assert state(ctx) == before

    refused(c, 25, Status.LIMIT)        # further back than max_rollback
    refused(c, 31, Status.INVALID_ARG)  # longer
    refused(c, -1, Status.INVALID_ARG)
    refused(none, 29, Status.LIMIT)     # max_rollback 0: every truncation
    c.decode(0, rows(30, 1, dim)[0])
    refused(c, 28, Status.ORDER)        # mid-chunk
    for layer in range(1, tiny.n_layers):
        c.decode(layer, rows(30, 1, dim)[0])
    ref.decode(0, rows(30, 1, dim)[0])
    for layer in range(1, tiny.n_layers):
        ref.decode(layer, rows(30, 1, dim)[0])
    assert same(tail(c, 31), tail(ref, 31))
    # right after a load the limit is the loaded length
    with cpu(tiny, max_rollback=4) as d:
        d.load_bytes(ref.save_bytes())
        assert d.truncate_limit == d.n_tokens == 33
        refused(d, 32, Status.LIMIT)
    for bad in (1.5, "3", True):
        with pytest.raises(Error) as e:
            c.truncate(bad)
        assert e.value.status == Status.INVALID_ARG
    c.close()
    assert c.truncate_limit == -1


# -- memory -----------------------------------------------------------------------------------

def test_memory_info(tiny):
    with cpu(tiny) as plain, cpu(tiny, max_rollback=16) as src:
        for c in (plain, src):
            feed(c, rows(0, 300, tiny.dim))
        p = plain.memory_info()
        assert isinstance(p, MemoryInfo)
        assert p.own_bytes + p.shared_bytes == plain.memory_bytes and p.shared_bytes == 0
        assert p.history_bytes == 0 and p.workspace_bytes > 0 and p.own_bytes > 0
        s = src.memory_info()
        assert s.history_bytes > 0 and s.own_bytes == p.own_bytes
        f = src.fork()
        s, fi = src.memory_info(), f.memory_info()
        assert s.shared_bytes > 0 and fi.shared_bytes == s.shared_bytes
        assert s.own_bytes + s.shared_bytes == src.memory_bytes == p.own_bytes
        assert fi.own_bytes + fi.shared_bytes == f.memory_bytes
        assert fi.history_bytes == s.history_bytes
        src.close()  # the fork alone holds the pages now
        fi = f.memory_info()
        assert fi.shared_bytes == 0 and fi.own_bytes == f.memory_bytes
        f.close()
        with pytest.raises(Error) as e:
            f.memory_info()
        assert e.value.status == Status.NULL_ARG


# -- progress and abort -----------------------------------------------------------------------

class Watch:
    """A progress callback that records its reports and stops at report ``stop`` (1-based)."""

    def __init__(self, stop=0, raise_=None):
        self.reports, self.stop, self.raise_ = [], stop, raise_

    def __call__(self, done, total):
        self.reports.append((done, total))
        if self.stop and len(self.reports) >= self.stop:
            if self.raise_ is not None:
                raise self.raise_
            return True
        return None


def test_progress_reports_and_stops_an_append(tiny):
    dim = tiny.dim
    c, ref = cpu(tiny, max_chunk=16), cpu(tiny)
    feed(c, rows(0, 20, dim))
    feed(ref, rows(0, 20, dim))
    w = Watch()
    c.set_progress(w)
    y = c.append(0, rows(20, 100, dim))
    assert w.reports == [(16, 100), (32, 100), (48, 100), (64, 100), (80, 100), (96, 100), (100, 100)]
    assert same(y, ref.append(0, rows(20, 100, dim)))
    for stop in (1, 3, 4):  # at the first, a middle and the last report of layer 1
        w = Watch(stop)
        c.set_progress(w)
        with pytest.raises(Error) as e:
            c.append(1, rows(20, 100, dim))
        assert e.value.status == Status.ABORTED and e.value.name == "HC_ERR_ABORTED"
        assert "stopped by the progress callback" in e.value.message
        assert len(w.reports) == stop and state(c) == (20, 1)
    # an exception in the callback stops the call too, and is raised after it
    for exc in (KeyError("boom"), KeyboardInterrupt()):
        c.set_progress(Watch(2, exc))
        with pytest.raises(type(exc)) as e:
            c.append(1, rows(20, 100, dim))
        assert e.value is exc and state(c) == (20, 1)
    c.set_progress(lambda d, t: np.array([1, 2]))  # truthiness that raises: a stop, re-raised
    with pytest.raises(ValueError):
        c.append(1, rows(20, 100, dim))
    c.set_progress(None)
    for layer in range(1, tiny.n_layers):
        x = rows(20, 100, dim, layer)
        assert same(c.append(layer, x), ref.append(layer, x))
    assert same(tail(c, 120), tail(ref, 120))
    with pytest.raises(TypeError):
        c.set_progress(42)


def test_progress_stops_save_load_and_batch(tiny, tmp_path):
    dim = tiny.dim
    c, other = cpu(tiny), cpu(tiny)
    feed(c, rows(0, 300, dim))
    feed(other, rows(0, 10, dim, 1))
    path = tmp_path / "s.hcs"
    other.save(path)
    old = path.read_bytes()
    w = Watch()
    c.set_progress(w)
    c.save(tmp_path / "count.hcs")
    assert len(w.reports) >= 2 and w.reports[-1][0] == w.reports[-1][1]
    c.set_progress(Watch(2))
    with pytest.raises(Error) as e:
        c.save(path)
    assert e.value.status == Status.ABORTED and path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["count.hcs", "s.hcs"]  # no temporary
    c.set_progress(Watch(1, RuntimeError("stop the save")))
    with pytest.raises(RuntimeError):
        c.save_bytes()
    # a stopped load keeps the contents
    other.set_progress(Watch(2))
    with pytest.raises(Error) as e:
        other.load(tmp_path / "count.hcs")
    assert e.value.status == Status.ABORTED and other.n_tokens == 10
    other.set_progress(None)
    c.set_progress(None)
    # a batch: one context's stop stops all
    a, b = cpu(tiny), cpu(tiny)
    feed(a, rows(0, 5, dim))
    feed(b, rows(0, 5, dim))
    b.set_progress(Watch(1))
    x = rows(5, 4, dim)
    with pytest.raises(Error) as e:
        hybridctx.append_batch([a, b], 0, x, [2, 2])
    assert e.value.status == Status.ABORTED and state(a) == state(b) == (5, 0)
    b.set_progress(Watch(1, ZeroDivisionError("x")))
    with pytest.raises(ZeroDivisionError):
        hybridctx.decode_batch([a, b], 0, x[:2])
    assert state(a) == state(b) == (5, 0)
    b.set_progress(None)
    y = hybridctx.decode_batch([a, b], 0, x[:2])
    assert np.isfinite(y).all() and state(a) == state(b) == (5, 1)


def test_model_progress():
    w = Watch()
    with Model.random("tiny", 7, progress=w) as m:
        assert w.reports == [(k, m.n_layers) for k in range(1, m.n_layers + 1)]
    with pytest.raises(Error) as e:
        Model.random("tiny", 7, progress=Watch(2))
    assert e.value.status == Status.ABORTED and e.value.message
    with pytest.raises(OSError):
        Model.random("tiny", 7, progress=Watch(1, OSError("disk")))
    with pytest.raises(TypeError):
        Model.random("tiny", 7, progress="no")


# -- streams, backends, creation errors -------------------------------------------------------

def test_streams_on_the_cpu(tiny):
    with cpu(tiny) as c:
        assert c.cuda_stream is None and c.io_memory == IOMemory.HOST
        c.set_stream(None)
        c.set_stream(0)
        with pytest.raises(Error) as e:
            c.set_stream(0x1234)
        assert e.value.status == Status.UNSUPPORTED and "no stream" in e.value.message
        assert c.cuda_stream is None
        for bad in ("s", -1, 1 << 64, True):
            with pytest.raises(Error) as e:
                c.set_stream(bad)
            assert e.value.status == Status.INVALID_ARG


def test_creation_errors_keep_their_detail(tiny):
    with pytest.raises(Error) as e:
        cpu(tiny, io_memory="device")
    assert e.value.status == Status.INVALID_ARG
    assert "takes no device-memory x and y" in e.value.message
    with pytest.raises(Error) as e:
        cpu(tiny, max_rollback=1 << 20)
    assert e.value.status == Status.INVALID_ARG
    with pytest.raises(Error) as e:
        cpu(tiny, io_memory="gpu")
    assert e.value.status == Status.INVALID_ARG and "io_memory" in e.value.message
    with cpu(tiny, max_rollback=65536) as c:
        assert c.max_rollback == 65536 and c.memory_info().history_bytes > 0


# -- numerics ---------------------------------------------------------------------------------

def test_numerics_resolve_to_exact_on_the_cpu_and_forks_keep_them(tiny):
    dim = tiny.dim
    for value in (Numerics.DEFAULT, Numerics.FAST, Numerics.EXACT, "default", "Fast", 2):
        with cpu(tiny, numerics=value, max_rollback=4) as c:
            assert c.numerics is Numerics.EXACT  # the CPU computes EXACT for every value
            feed(c, rows(0, 20, dim))
            with c.fork() as f, c.fork(max_rollback=2) as g:  # without and with params
                assert f.numerics is Numerics.EXACT and g.numerics is Numerics.EXACT
                assert same(tail(f, 20), tail(g, 20))
    # contexts created with different values compute one numerics on the CPU: one batch
    with cpu(tiny, numerics="fast") as a, cpu(tiny, numerics="exact") as b:
        x = rows(0, 2, dim)
        hybridctx.decode_batch([a, b], 0, x)
        assert (a.next_layer, b.next_layer) == (1, 1)


def test_numerics_out_of_range_are_refused(tiny):
    for bad in (3, -1, "turbo", None):
        with pytest.raises(Error) as e:
            cpu(tiny, numerics=bad)
        assert e.value.status == Status.INVALID_ARG and "numerics" in e.value.message
    # the library's own check, past the binding's: the mirror's numerics and reserved fields
    lib = _capi.lib
    for field, value in (("numerics", 3), ("numerics", -1), ("reserved", 1)):
        p = _capi.hc_ctx_params()
        assert lib.hc_ctx_params_init(ctypes.byref(p), ctypes.sizeof(p)) == 0
        assert p.struct_size == ctypes.sizeof(p) and (p.numerics, p.reserved) == (0, 0)
        p.backend = hybridctx.Backend.CPU
        setattr(p, field, value)
        out = ctypes.c_void_p()
        st = lib.hc_ctx_create(tiny._handle.ptr, ctypes.byref(p), ctypes.byref(out))
        assert st == Status.INVALID_ARG and out.value is None
