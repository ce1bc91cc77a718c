#!/usr/bin/env bash
# gpu-baseline.sh BASE_DIR NEW_DIR [ROUNDS] - the benchmark of a baseline build and of the
# current one on the same GPU in the same call, alternating (base, new, base, new, ...) so that
# drift of a shared machine falls on both; then tools/bench-compare.py with the best of the
# rounds of each side. Each dir holds tools/bench-gpu (tools/gpu-carry.sh packs them). Writes
# $OUT/bench-base-<i>.md, $OUT/bench-new-<i>.md and $OUT/compare.md.
set -uo pipefail
cd "$(dirname "$0")/.."
base="$1" new="$2" rounds="${3:-2}"
OUT="${OUT:-$PWD/gpu-check-out}"
mkdir -p "$OUT"
rt="$PWD/$new/rt"
for i in $(seq 1 "$rounds"); do
    for side in base new; do
        dir=$base; [ $side = new ] && dir=$new
        LD_LIBRARY_PATH="$PWD/$dir:$rt:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}" \
            timeout -k 5 240 "$dir/tools/bench-gpu" --out "$OUT/bench-$side-$i.md" >"$OUT/bench-$side-$i.log" 2>&1
        echo "bench $side round $i: rc=$?"
    done
done
list() { ls "$OUT"/bench-"$1"-*.md | paste -sd, -; }
python3 tools/bench-compare.py "$(list base)" "$(list new)" | tee "$OUT/compare.md"
