"""model_loop.py - a whole (toy) model around libhybridctx's attention; examples/c/model_loop.c
in Python, printing the same numbers.

The embedded `tiny` model with random weights and a CPU context run a model loop: a few chunks
of a prompt, then token-by-token decoding. Every layer is our attention; between layers the
application runs its own parts, here toy stand-ins (elementwise float32 only):
    x = squash(h)                 the "attn_norm" before the attention, squash(v) = v / (1 + |v|)
    h += attention(x)             ctx.append / ctx.decode, the residual add
    h += 0.5 * squash(h[perm])    a "MLP" that mixes channels, perm(i) = (7 i + 3) mod dim
The next token's input is squash(h) of the last one. The session is saved to a temporary file
and loaded into a fresh context; one more token decoded in both must match bit for bit.

    python3 examples/python/model_loop.py     (needs the hybridctx package and numpy)
"""
import os
import sys
import tempfile

import numpy as np

import hybridctx

CHUNKS, CHUNK, DECODE = 3, 48, 4
ONE, HALF = np.float32(1), np.float32(0.5)


def squash(v):
    return v / (ONE + np.abs(v))


def forward(ctx, h):
    """A chunk (h: (n, dim) float32, updated in place) through every layer; n == 1 decodes."""
    perm = (np.arange(h.shape[1]) * 7 + 3) % h.shape[1]
    for layer in range(ctx.model.n_layers):
        x = squash(h)
        y = ctx.decode(layer, x[0]) if len(h) == 1 else ctx.append(layer, x)
        h += y  # residual (a decoded (dim,) row broadcasts over h's one row)
        h += HALF * squash(h[:, perm])  # toy MLP (h[:, perm] is a copy)


def head(what, v):
    print(f"{what} h[:4] = [" + ", ".join(f"{a:.6f}" for a in v[:4]) + "]")


def main():
    model = hybridctx.Model.random("tiny", seed=42)  # every failure raises hybridctx.Error
    layers, dim = model.n_layers, model.dim
    print(f"libhybridctx {hybridctx.version()}: model tiny, {layers} layers, dim {dim}")
    ctx = hybridctx.Context(model, backend="cpu")

    # prompt: CHUNKS chunks of CHUNK tokens, a made-up embedding per position
    for ch in range(CHUNKS):
        pos = np.arange(ch * CHUNK, (ch + 1) * CHUNK)[:, None]
        h = ((pos * 31 + np.arange(dim) * 7) % 101).astype(np.float32) / np.float32(50) - ONE
        forward(ctx, h)
    print(f"prompt: {CHUNKS} chunks of {CHUNK} tokens, context holds {ctx.n_tokens} tokens")
    h = h[-1:].copy()  # from here on h is one token
    head("last prompt token:", h[0])

    # decoding: each token's input comes from the previous token's output
    for _ in range(DECODE):
        h = squash(h)
        forward(ctx, h)
    head(f"decoded {DECODE} tokens, last:", h[0])

    # save, load into a fresh context, decode one more token in both
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "session.hcs")
        ctx.save(path)
        restored = hybridctx.Context(model, backend="cpu")
        restored.load(path)
        size = os.path.getsize(path)
    print(f"saved the session ({size} bytes), loaded it into a new context: {restored.n_tokens} tokens")
    h = squash(h)
    h2 = h.copy()
    forward(ctx, h)
    forward(restored, h2)
    same = np.array_equal(h.view(np.uint32), h2.view(np.uint32))
    head("next token, original context:", h[0])
    head("next token, restored context:", h2[0])
    print(f"restored context bitwise identical: {str(same).lower()}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
