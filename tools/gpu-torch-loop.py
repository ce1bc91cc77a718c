#!/usr/bin/env python3
"""gpu-torch-loop.py - our attention in a PyTorch model loop on the GPU, checked against host I/O.

    tools/gpu-torch-loop.py [--build DIR] [--model flash|tiny] [--prefill N] [--decode N]

A random model (default: V4-Flash geometry with 4 layers, ratios 0, 4, 128, 4) runs a loop of
layers: the library's attention on a CUDA context created with io_memory="device", taking and
returning torch CUDA tensors, and a small torch MLP (+ RMS norm) between layers. One prefill
chunk goes through every layer on torch's default stream, then decode steps run on a second
torch stream (the binding moves the context to it: hc_ctx_set_stream). The same loop then runs
with host numpy I/O on a second CUDA context (the MLP still on the GPU, fed through host copies).

Asserted: every layer's attention output of every step is bitwise equal between the two runs
(the same backend in the same numerics, the library's default, FAST on CUDA, computes both: it is
deterministic, so device I/O and streams must not change a bit), the MLP
outputs too (torch runs deterministic), and both contexts end at the same length. The device
run queues work without synchronising, so a stream-ordering mistake shows as a mismatch.

The package comes from this tree (bindings/python); the library from $HYBRIDCTX_LIBRARY, else
--build DIR (its libhybridctx.so.0), else LD_LIBRARY_PATH (tools/gpu-check sets it).
Exit status: 0 pass, 1 mismatch or error, 77 torch, a GPU or the CUDA backend unavailable.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP = 77
FLASH_4 = '{"num_hidden_layers": 4, "compress_ratios": [0, 4, 128, 4]}'


def skip(why):
    print(f"gpu-torch-loop: skipped: {why}")
    sys.exit(SKIP)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", help="build directory holding libhybridctx.so.0")
    ap.add_argument("--model", choices=("flash", "tiny"), default="flash")
    ap.add_argument("--prefill", type=int, default=300)
    ap.add_argument("--decode", type=int, default=6)
    args = ap.parse_args()
    if args.build and not os.environ.get("HYBRIDCTX_LIBRARY"):
        os.environ["HYBRIDCTX_LIBRARY"] = os.path.join(os.path.abspath(args.build), "libhybridctx.so.0")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS for the MLP
    try:
        import torch
    except ImportError as e:
        skip(f"no torch ({e})")
    if not torch.cuda.is_available():
        skip("torch sees no CUDA device")
    import numpy as np
    sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))  # this tree's package
    import hybridctx
    from hybridctx import Context, Model
    info = hybridctx.backend_info("cuda")
    if info.state != hybridctx.BackendState.USABLE:
        skip(f"the library's CUDA backend: {info.state.name}: {info.detail}")
    torch.use_deterministic_algorithms(True)
    torch.backends.cuda.matmul.allow_tf32 = False
    print(f"libhybridctx {hybridctx.version()} ({hybridctx._capi.LIBRARY}), torch {torch.__version__}, "
          f"{torch.cuda.get_device_name(0)}")

    model = Model.random(FLASH_4 if args.model == "flash" else "tiny", seed=7)
    L, D = model.n_layers, model.dim
    dev = torch.device("cuda", 0)
    gen = torch.Generator().manual_seed(1)
    mlps = [torch.nn.Sequential(torch.nn.Linear(D, 2 * D), torch.nn.SiLU(), torch.nn.Linear(2 * D, D))
            for _ in range(L)]
    with torch.no_grad():
        for m in mlps:
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
            m.to(dev)
    # the tokens of every step: a prefill chunk, then one token per decode step
    steps = [torch.randn(args.prefill, D, generator=gen)] + \
            [torch.randn(1, D, generator=gen) for _ in range(args.decode)]

    def rms(x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)

    @torch.no_grad()
    def loop(attend, ctx, stream_of_step):
        """Run every step through every layer; attend(layer, x: CUDA tensor) -> CUDA tensor.
        Returns each layer's attention output and the MLP output per step, on the device."""
        ys, hs = [], []
        for k, tokens in enumerate(steps):
            s = stream_of_step(k)
            s.wait_stream(torch.cuda.current_stream())  # the tokens and earlier steps first
            with torch.cuda.stream(s):
                x = rms(tokens.to(dev, non_blocking=False))
                for layer in range(L):
                    y = attend(layer, x)
                    ys.append(y)
                    x = rms(x + mlps[layer](y))  # the application's part between layers
                hs.append(x)
            torch.cuda.current_stream().wait_stream(s)
        return ys, hs

    side = torch.cuda.Stream()
    on_streams = lambda k: torch.cuda.default_stream() if k == 0 else side  # noqa: E731

    # device I/O: torch tensors straight into the library, on the tensor's stream
    dctx = Context(model, backend="cuda", io_memory="device")
    seen = []

    def attend_device(layer, x):
        y = dctx.append(layer, x)
        assert y.is_cuda and y.shape == x.shape and y.dtype == torch.float32
        seen.append(dctx.cuda_stream)
        return y

    dys, dhs = loop(attend_device, dctx, on_streams)
    torch.cuda.synchronize()
    want_streams = [1] * L + [side.cuda_stream] * (L * args.decode)  # 1: the legacy default stream
    if seen != want_streams:
        print(f"FAIL: the context ran on streams {sorted(set(seen))}, expected {sorted(set(want_streams))}")
        return 1

    # host I/O: numpy in and out, on a second CUDA context
    hctx = Context(model, backend="cuda", io_memory="host")

    def attend_host(layer, x):
        y = hctx.append(layer, x.cpu().numpy())
        return torch.from_numpy(y).to(dev)

    hys, hhs = loop(attend_host, hctx, on_streams)
    torch.cuda.synchronize()

    bad = 0
    for i, (a, b) in enumerate(zip(dys, hys)):
        a, b = a.cpu().numpy(), b.cpu().numpy()
        if not np.array_equal(a.view(np.uint32), b.view(np.uint32)):
            bad += 1
            if bad <= 5:
                print(f"FAIL: step {i // L} layer {i % L}: attention outputs differ "
                      f"(max |diff| {np.abs(a - b).max():.3g}, {np.count_nonzero(a != b)} of {a.size})")
    for k, (a, b) in enumerate(zip(dhs, hhs)):
        if not torch.equal(a, b):
            bad += 1
            print(f"FAIL: step {k}: MLP outputs differ")
    if dctx.numerics != hctx.numerics:
        bad += 1
        print(f"FAIL: numerics {dctx.numerics} (device I/O) and {hctx.numerics} (host I/O)")
    if dctx.n_tokens != hctx.n_tokens or dctx.n_tokens != args.prefill + args.decode:
        bad += 1
        print(f"FAIL: lengths {dctx.n_tokens} (device I/O) and {hctx.n_tokens} (host I/O)")
    if bad:
        return 1
    print(f"PASS: {args.model} ({L} layers, dim {D}): prefill {args.prefill} + {args.decode} decode "
          f"steps, {len(dys)} attention outputs bitwise equal between device I/O (torch tensors, "
          f"default stream then a side stream) and host I/O, {dctx.numerics.name.lower()} numerics")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SystemExit:
        raise
    except BaseException:  # an error is a failure, never a skip
        import traceback
        traceback.print_exc()
        sys.exit(1)
