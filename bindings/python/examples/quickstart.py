"""The quick-start program of every binding's README: create the tiny model, append a chunk
through every layer, decode a token, save the session, load it into a new context, decode the
next token in both contexts and compare.

    python3 examples/quickstart.py [session-path]
"""
import os
import sys

import numpy as np

import hybridctx


def decode(ctx, token):
    """One token through every layer; the output of a layer is the next layer's input (a real
    application runs its MLP there)."""
    x = token
    for layer in range(ctx.model.n_layers):
        x = ctx.decode(layer, x)
    return x


def head(v):
    return "[" + ", ".join(f"{a:.6f}" for a in v[:4]) + "]"


def main(path):
    model = hybridctx.Model.random("tiny", seed=42)
    layers, dim = model.n_layers, model.dim
    print(f"libhybridctx {hybridctx.version()}: model tiny, {layers} layers, dim {dim}")

    ctx = hybridctx.Context(model, backend="cpu")
    n = 64
    x = (np.arange(n * dim) * 7 % 101).astype(np.float32).reshape(n, dim) / np.float32(50) - np.float32(1)
    for layer in range(layers):
        x = ctx.append(layer, x)
    token = (np.arange(dim) * 3 % 17).astype(np.float32) / np.float32(8) - np.float32(1)
    y1 = decode(ctx, token)
    print(f"appended {n} tokens, decoded 1: y[:4] = {head(y1)}")

    ctx.save(path)
    restored = hybridctx.Context(model, backend="cpu")
    restored.load(path)
    print(f"saved {path} ({os.path.getsize(path)} bytes), loaded into a new context: "
          f"{restored.n_tokens} tokens")

    a, b = decode(ctx, y1), decode(restored, y1)
    same = np.array_equal(a.view(np.uint32), b.view(np.uint32))
    print(f"next token: y[:4] = {head(b)}, restored context identical: {str(same).lower()}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "session.hcs"))
