#!/usr/bin/python3
"""plot-perf.py - draw the plots of a performance record (docs/perf/README.md).

    tools/plot-perf.py docs/perf/2026-11-29-h200.json [--out DIR]

Reads a perf JSON ({"date", "gpu", "commit", "ceilings", "decode", "decode_model", "prefill",
"kernels", "memory", ...}) and writes PNGs next to it (or into DIR), named after the JSON file:

    <name>-decode.png   decode time of one layer vs context length, per layer kind, next to its floor
    <name>-prefill.png  prefill time of one layer vs context length, per layer kind, next to its floor
    <name>-memory.png   cache bytes of a context vs context length, next to a dense bf16 KV cache

Rows may carry a "run" (a commit) when a record holds several runs; each run is drawn as its own
line, the newest (the record's "commit") solid. A section that is missing or empty is skipped.
Needs matplotlib (Debian: apt-get install python3-matplotlib).
"""
import argparse
import json
import sys
import textwrap
from pathlib import Path

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
except ImportError:  # pragma: no cover - depends on the machine
    sys.exit("plot-perf.py: needs matplotlib (Debian: apt-get install python3-matplotlib; run with /usr/bin/python3)")

KIND_COLOURS = {"SWA": "#2ca02c", "CSA": "#1f77b4", "HCA": "#d62728"}
KIND_ORDER = ["SWA", "CSA", "HCA"]


def tokens_label(n, _pos=None):
    """1024 -> 1K, 1048576 -> 1M (contexts are powers of two or close)."""
    n = float(n)
    if n >= 2**20 * 0.999:
        v = n / 2**20
        return f"{v:.0f}M" if abs(v - round(v)) < 0.01 else f"{v:.2f}M"
    if n >= 1024:
        v = n / 1024
        return f"{v:.0f}K" if abs(v - round(v)) < 0.01 else f"{v:.1f}K"
    return f"{n:.0f}"


def bytes_label(b, _pos=None):
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if b >= scale:
            v = b / scale
            return f"{v:.0f} {unit}" if v >= 10 or abs(v - round(v)) < 0.05 else f"{v:.1f} {unit}"
    return f"{b:.0f} B"


def time_label(us, _pos=None):
    if us >= 1e6:
        return f"{us / 1e6:g} s"
    if us >= 1e3:
        return f"{us / 1e3:g} ms"
    return f"{us:g} µs"


def context_axis(ax, values):
    ax.set_xscale("log", base=2)
    ticks = sorted(set(values))
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(FuncFormatter(tokens_label))
    ax.xaxis.set_minor_formatter(NullFormatter())
    lo, hi = min(ticks), max(ticks)
    ax.set_xlim(lo / 1.6, hi * 1.6)
    ax.set_xlabel("context length (tokens)")


def runs_of(rec, rows):
    """The runs present in rows, oldest first, and a label for each."""
    order = [r.get("run") for r in rec.get("runs", [])]
    present = []
    for row in rows:
        run = row.get("run")
        if run not in present:
            present.append(run)
    present.sort(key=lambda r: order.index(r) if r in order else len(order))
    latest = rec.get("commit")
    if latest not in present:
        latest = present[-1]
    labels = {}
    for run in present:
        labels[run] = "" if run is None else f"{run}" + (" (latest)" if run == latest and len(present) > 1 else "")
    return present, latest, labels


def log_y(ax, formatter, binary=False):
    """A log y axis labelled at 1, 2 and 5 of each decade, or (binary) at every power of 2."""
    ax.set_yscale("log", base=2 if binary else 10)
    if binary:
        ax.yaxis.set_major_locator(LogLocator(base=2, numticks=40))
        ax.yaxis.set_minor_locator(LogLocator(base=2, subs=(1.0,)))
    else:
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_minor_locator(LogLocator(base=10, subs=tuple(range(1, 10))))
    ax.yaxis.set_major_formatter(FuncFormatter(formatter))
    ax.yaxis.set_minor_formatter(NullFormatter())


def new_figure():
    """A figure with room for the legend at the right and a note at the bottom."""
    fig, ax = plt.subplots(figsize=(10.5, 5.6))
    fig.subplots_adjust(left=0.09, right=0.72, top=0.87, bottom=0.2)
    return fig, ax


def legend(ax):
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)


def label_points(fig, ax, labels, above=False):
    """Text labels next to points without overlaps: [(x, y, text, colour)]. above: centred over
    each point. Otherwise labels at the smallest x go to the left of their point, the others to
    the right, and labels at one x are spread vertically to at least a line apart."""
    if above:
        for x, y, text, colour in labels:
            ax.annotate(text, (x, y), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=7.5,
                        color=colour)
        return
    fig.canvas.draw()
    xs = sorted({p[0] for p in labels})
    pt = 72.0 / fig.dpi
    for x in xs:
        group = sorted((p for p in labels if p[0] == x), key=lambda p: -p[1])
        placed = []
        for _x, y, text, colour in group:
            py = ax.transData.transform((x, y))[1] * pt  # the point's height in points
            ty = py if not placed else min(py, placed[-1] - 10.5)
            placed.append(ty)
            left = x == xs[0] and len(xs) > 1
            ax.annotate(text, (x, y), textcoords="offset points", xytext=(-9 if left else 9, ty - py - 3),
                        ha="right" if left else "left", fontsize=7.5, color=colour)


def title(ax, rec, what):
    model = f"{rec['model']}, " if rec.get("model") else ""
    ax.set_title(f"{what}\n{model}{rec.get('gpu', '?')}, {rec.get('date', '?')}, commit {rec.get('commit', '?')}",
                 fontsize=10, loc="left")


def finish(fig, ax, path, note=None):
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", axis="y", alpha=0.12)
    if note:
        fig.text(0.01, 0.01, "\n".join(textwrap.wrap(note, 150)), fontsize=7.5, color="#555555", ha="left",
                 va="bottom")
    fig.savefig(path, dpi=130, metadata={"Software": None})
    plt.close(fig)
    print(f"plot-perf.py: wrote {path}")


def plot_decode(rec, path):
    rows = [r for r in rec.get("decode") or [] if r.get("us") is not None]
    if not rows:
        return False
    runs, latest, labels = runs_of(rec, rows)
    fig, ax = new_figure()
    floors = {}
    for r in rec.get("decode") or []:
        if r.get("floor_us") is not None:
            floors.setdefault(r["layer"], {})[r["ctx"]] = r["floor_us"]
    kinds = [k for k in KIND_ORDER if any(r["layer"] == k for r in rows)]
    kinds += sorted({r["layer"] for r in rows} - set(kinds))
    labels_at = []
    for kind in kinds:
        colour = KIND_COLOURS.get(kind, None)
        for run in runs:
            pts = sorted((r["ctx"], r["us"]) for r in rows if r["layer"] == kind and r.get("run") == run)
            if not pts:
                continue
            newest = run == latest
            x, y = zip(*pts)
            label = f"{kind} measured" + (f", {labels[run]}" if labels[run] else "")
            ax.plot(x, y, marker="o" if newest else "s", ms=6 if newest else 4, lw=2.2 if newest else 1.2,
                    ls="-" if newest else "--", alpha=1.0 if newest else 0.55, color=colour, label=label)
            if newest and kind in floors:
                labels_at += [(cx, us, f"{us / floors[kind][cx]:.1f}x floor", colour) for cx, us in pts
                              if floors[kind].get(cx)]
        if kind in floors:
            x, y = zip(*sorted(floors[kind].items()))
            ax.plot(x, y, ls=":", lw=1.8, marker="v", ms=4, color=colour, label=f"{kind} floor")
    context_axis(ax, [r["ctx"] for r in rows])
    log_y(ax, time_label)
    ax.set_ylabel("time per decode step, one layer")
    batch = sorted({r.get("batch") for r in rows if r.get("batch") is not None})
    title(ax, rec, "Decode: one layer, batch " + ",".join(str(b) for b in batch) + ", vs its floor")
    legend(ax)
    label_points(fig, ax, labels_at, above=True)
    c = rec.get("ceilings") or {}
    note = ("floor = weights read once + max(attended entries / bandwidth, attention FLOPs / bf16 peak) + "
            "max(indexer keys / bandwidth, indexer FLOPs / fp8 peak); ceilings "
            f"{c.get('read_tb_s', '?')} TB/s, {c.get('bf16_tflops', '?')} TFLOP/s bf16, {c.get('fp8_tflops', '?')} "
            "TFLOP/s fp8")
    whole = [m for m in rec.get("decode_model") or [] if m.get("run", latest) == latest]
    if whole:
        m = whole[0]
        note += f".  Whole model ({m['layers']} layers) at {tokens_label(m['ctx'])}: {m['ms_per_step']} ms per step."
    finish(fig, ax, path, note)
    return True


def prefill_seconds(r):
    if r.get("s") is not None:
        return r["s"], False
    tps, n = r.get("tokens_per_s"), r.get("tokens", r.get("ctx"))
    if tps and n:
        return n / tps, True
    return None, False


def plot_prefill(rec, path):
    rows = []
    for r in rec.get("prefill") or []:
        s, derived = prefill_seconds(r)
        if s is not None:
            rows.append(dict(r, _s=s, _derived=derived))
    if not rows:
        return False
    runs, latest, labels = runs_of(rec, rows)
    fig, ax = new_figure()
    kinds = [k for k in KIND_ORDER if any(r["layer"] == k for r in rows)]
    kinds += sorted({r["layer"] for r in rows} - set(kinds))
    derived_any = False
    labels_at = []
    for kind in kinds:
        colour = KIND_COLOURS.get(kind, None)
        for run in runs:
            pts = sorted((r["ctx"], r["_s"], r["_derived"]) for r in rows if r["layer"] == kind and r.get("run") == run)
            if not pts:
                continue
            newest = run == latest
            derived_any |= any(p[2] for p in pts)
            label = f"{kind} measured" + (f", {labels[run]}" if labels[run] else "")
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if newest else "s", ms=6 if newest else 4,
                    lw=2.2 if newest else 1.2, ls="-" if newest else "--", alpha=1.0 if newest else 0.55,
                    color=colour, label=label)
            if newest:
                for cx, s, _ in pts:
                    tps = next((r.get("tokens_per_s") for r in rows
                                if r["layer"] == kind and r["ctx"] == cx and r.get("run") == run), None)
                    if tps:
                        labels_at.append((cx, s, f"{tps / 1e3:.0f}K tok/s", colour))
        floors = sorted({(r["ctx"], r["floor_s"]) for r in rec.get("prefill") or []
                         if r["layer"] == kind and r.get("floor_s") is not None})
        if floors:
            ax.plot([f[0] for f in floors], [f[1] for f in floors], ls=":", lw=1.8, marker="v", ms=4, color=colour,
                    label=f"{kind} floor")
    context_axis(ax, [r["ctx"] for r in rows])
    log_y(ax, lambda s, _p: time_label(s * 1e6))
    ax.set_ylabel("prefill time from an empty context, one layer")
    chunks = sorted({r.get("chunk") for r in rows if r.get("chunk")})
    what = "Prefill: one layer" + (f", chunks of {chunks[0]}" if len(chunks) == 1 else "") + ", vs its floor"
    title(ax, rec, what)
    legend(ax)
    label_points(fig, ax, labels_at)
    note = "floor = the FLOPs at peak (FP8 projections and indexer at the fp8 peak, attention at the bf16 peak)"
    if derived_any:
        note += "; where a run recorded only tokens/s, time = tokens / (tokens/s)"
    finish(fig, ax, path, note + ".")
    return True


def plot_memory(rec, path):
    rows = sorted((r for r in rec.get("memory") or [] if r.get("bytes") is not None), key=lambda r: r["ctx"])
    if not rows:
        return False
    fig, ax = new_figure()
    x = [r["ctx"] for r in rows]
    series = [("bytes", "compressed cache, fp8", "#1f77b4", "-", "o"),
              ("bf16_bytes", "compressed cache, bf16", "#9467bd", "-", "s"),
              ("dense_bytes", "dense bf16 KV cache", "#7f7f7f", "--", "^")]
    for key, label, colour, ls, marker in series:
        pts = [(r["ctx"], r[key]) for r in rows if r.get(key) is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], ls=ls, marker=marker, ms=5, lw=2, color=colour,
                    label=label)
    last = rows[-1]
    if last.get("dense_bytes"):
        ax.annotate(f"{last['dense_bytes'] / last['bytes']:.1f}x smaller than dense\n({bytes_label(last['bytes'])} vs "
                    f"{bytes_label(last['dense_bytes'])})", (last["ctx"], last["bytes"]), textcoords="axes fraction",
                    xytext=(0.97, 0.1), ha="right", fontsize=8.5, color="#1f77b4",
                    arrowprops={"arrowstyle": "->", "color": "#1f77b4", "lw": 0.8})
    for m in rec.get("memory_measured") or []:
        b = m.get("bytes") or (m["gib"] * 2**30 if m.get("gib") is not None else None)
        if b:
            ax.plot([m["ctx"]], [b], ls="none", marker="*", ms=13, color="#ff7f0e", zorder=5,
                    label=f"measured, {m.get('format', '')}: {bytes_label(b)}\nat {m['ctx']:,} tokens")
    context_axis(ax, x)
    log_y(ax, bytes_label, binary=True)
    ax.set_ylabel("bytes held by one context (all layers)")
    title(ax, rec, "Cache memory of a context vs a dense KV cache")
    legend(ax)
    finish(fig, ax, path, rec.get("memory_source"))
    return True


def main():
    ap = argparse.ArgumentParser(description="Draw the plots of a performance record (docs/perf/README.md).")
    ap.add_argument("record", type=Path, help="perf JSON, e.g. docs/perf/2026-11-29-h200.json")
    ap.add_argument("--out", type=Path, help="directory of the PNGs (default: the JSON file's directory)")
    args = ap.parse_args()
    try:
        rec = json.loads(args.record.read_text())
    except (OSError, ValueError) as e:
        sys.exit(f"plot-perf.py: {args.record}: {e}")
    out = args.out or args.record.parent
    out.mkdir(parents=True, exist_ok=True)
    stem = args.record.stem
    drawn = 0
    for kind, fn in (("decode", plot_decode), ("prefill", plot_prefill), ("memory", plot_memory)):
        if fn(rec, out / f"{stem}-{kind}.png"):
            drawn += 1
        else:
            print(f"plot-perf.py: no {kind} rows in {args.record}; skipped", file=sys.stderr)
    if not drawn:
        sys.exit(f"plot-perf.py: nothing to draw in {args.record}")


if __name__ == "__main__":
    main()
