#!/usr/bin/env python3
"""make_seeds.py - write the seed corpora of the fuzz targets (tests/fuzz/corpus/<name>/).

Run from anywhere: python3 tests/fuzz/make_seeds.py. Deterministic: the same files every time.
Seeds are small on purpose; the golden model contributes only its header (data cut off)."""
import json
import os
import random
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
GOLDEN = os.path.join(HERE, "..", "data", "tiny-a.safetensors")
SEP = b"\n====\n"
BITS = {"BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8,
        "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
        "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64}


def safetensors(tensors, meta=None):
    """tensors: [(name, dtype, shape, bytes)] -> file bytes (header padded to 8 as the reference does)."""
    head, data = {}, b""
    if meta is not None:
        head["__metadata__"] = meta
    for name, dtype, shape, raw in tensors:
        head[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(head, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def nbytes(dtype, shape):
    n = 1
    for d in shape:
        n *= d
    return n * BITS[dtype] // 8


def fill(dtype, shape, rng):
    n = nbytes(dtype, shape)
    if dtype == "F8_E4M3":                       # finite codes of moderate size
        return bytes(rng.choice((0x30, 0x38, 0x40, 0xb0, 0xb8, 0x00)) for _ in range(n))
    if dtype == "F8_E8M0":
        return bytes([127]) * n                  # scale 1.0
    if dtype == "BF16":
        return struct.pack("<H", 0x3f80) * (n // 2)
    if dtype == "F32":
        return struct.pack("<f", 1.0) * (n // 4)
    return bytes(rng.randrange(256) for _ in range(n))


def small_config(ratios):
    """The smallest geometry hci_config_validate() accepts, with the given compress_ratios."""
    return {"hidden_size": 128, "num_hidden_layers": len(ratios), "num_attention_heads": 1, "head_dim": 66,
            "qk_rope_head_dim": 2, "q_lora_rank": 128, "o_groups": 1, "o_lora_rank": 128, "sliding_window": 128,
            "index_n_heads": 1, "index_head_dim": 32, "index_topk": 4, "max_position_embeddings": 2048,
            "compress_ratios": ratios}


def model_tensors(cfg, rng):
    """Every layers.{i}.attn.* tensor the loader wants for cfg, in checkpoint dtypes."""
    D, d, H = cfg["hidden_size"], cfg["head_dim"], cfg["num_attention_heads"]
    q, G, o = cfg["q_lora_rank"], cfg["o_groups"], cfg["o_lora_rank"]
    IH, ID = cfg["index_n_heads"], cfg["index_head_dim"]
    blk = lambda n: (n + 127) // 128
    out = []

    def t(name, dtype, shape):
        out.append((name, dtype, shape, fill(dtype, shape, rng)))

    def fp8(name, rows, cols, scale="F8_E8M0"):
        t(name + ".weight", "F8_E4M3", [rows, cols])
        t(name + ".scale", scale, [blk(rows), blk(cols)])

    def comp(p, ratio, dc):
        coff = 2 if ratio == 4 else 1
        t(p + "compressor.ape", "F32", [ratio, coff * dc])
        t(p + "compressor.wkv.weight", "BF16", [coff * dc, D])
        t(p + "compressor.wgate.weight", "BF16", [coff * dc, D])
        t(p + "compressor.norm.weight", "BF16", [dc])

    for i, r in enumerate(cfg["compress_ratios"]):
        p = "layers.%d.attn." % i
        fp8(p + "wq_a", q, D)
        t(p + "q_norm.weight", "BF16", [q])
        fp8(p + "wq_b", H * d, q, "F32")
        fp8(p + "wkv", d, D)
        t(p + "kv_norm.weight", "F32", [d])
        fp8(p + "wo_a", G * o, H // G * d)       # FP8 wo_a: the dequantizing path
        fp8(p + "wo_b", D, G * o)
        t(p + "attn_sink", "F32", [H])
        if r:
            comp(p, r, d)
        if r == 4:
            fp8(p + "indexer.wq_b", IH * ID, q)
            t(p + "indexer.weights_proj.weight", "BF16", [IH, D])
            comp(p + "indexer.", 4, ID)
    return out


def write(target, name, data):
    os.makedirs(os.path.join(CORPUS, target), exist_ok=True)
    with open(os.path.join(CORPUS, target, name), "wb") as f:
        f.write(data)


def main():
    rng = random.Random(6)
    cfg0, cfg4 = small_config([0]), small_config([4])
    js = lambda o: json.dumps(o).encode()

    # safetensors: format corner cases and the golden header
    write("safetensors", "empty", safetensors([]))
    write("safetensors", "metadata", safetensors([], {"config": "{}", "format": "pt"}))
    every = [("t_" + dt, dt, [2, 4], fill(dt, [2, 4], rng)) for dt in BITS]
    every += [("scalar", "F32", [], b"\0\0\x80\x3f"), ("empty", "F32", [0, 3], b""), ("f4", "F4", [3, 2], b"\x12" * 3)]
    write("safetensors", "every_dtype", safetensors(every, {"k": "v"}))
    write("safetensors", "model_layer", safetensors(model_tensors(cfg0, rng), {"config": json.dumps(cfg0)}))
    with open(GOLDEN, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        f.seek(0)
        write("safetensors", "golden_header", f.read(8 + n))

    # config: presets and config.json variants
    for p in ("tiny", "v4-flash", "v4-pro"):
        write("config", "preset_" + p, p.encode())
    with open(GOLDEN, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        golden_cfg = json.loads(f.read(n))["__metadata__"]["config"]
    write("config", "golden", golden_cfg.encode())
    write("config", "small", js(cfg4))
    write("config", "no_yarn", js(dict(cfg0, rope_scaling=None)))
    write("config", "layers_only", js({"num_hidden_layers": 5, "hidden_size": 256.0}))
    write("config", "empty_object", b"{}")

    # checkpoint: config.json SEP index SEP a.safetensors SEP b.safetensors
    ts = model_tensors(cfg0, rng)
    half = len(ts) // 2
    a, b = safetensors(ts[:half]), safetensors(ts[half:])
    index = {"metadata": {}, "weight_map": {t[0]: ("a" if i < half else "b") + ".safetensors"
                                            for i, t in enumerate(ts)}}
    write("checkpoint", "indexed", SEP.join([js(cfg0), js(index), a, b]))
    write("checkpoint", "unindexed", SEP.join([js(cfg0), b"", a, b]))
    single = safetensors(model_tensors(cfg4, rng), {"config": json.dumps(cfg4)})
    write("checkpoint", "single_file", SEP.join([b"", b"", single]))
    bad = dict(index, weight_map=dict(index["weight_map"], **{ts[0][0]: "../a.safetensors"}))
    write("checkpoint", "index_escape", SEP.join([js(cfg0), js(bad), a, b]))
    write("checkpoint", "missing_shard", SEP.join([js(cfg0), js(index), a]))
    # regression: the largest valid geometry with one small shard once made the loader allocate
    # the weights (petabytes) before looking for them; now HC_ERR_MISSING_TENSOR, nothing allocated
    huge = {"hidden_size": 65536, "num_hidden_layers": 1024, "num_attention_heads": 1024, "head_dim": 1024,
            "q_lora_rank": 65536, "o_groups": 1024, "o_lora_rank": 65536}
    write("checkpoint", "regress-config-sized-alloc", SEP.join([js(huge), b"", a]))


if __name__ == "__main__":
    main()
