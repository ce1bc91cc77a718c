#!/usr/bin/env bash
# gpu-prefill-e2e.sh - one device call for the end-to-end prefill of issue 11 (tools/prefill-e2e),
# from the repository root with the build tools/gpu-carry.sh packed in .carry/b: V4-Flash, all 43
# layers, fast numerics, bf16 device I/O, chunks of 2048, from an empty context to 131072 tokens,
# then to 262144 tokens (two points for the projection of the 1,048,560-token run, which each
# prints). FULL=1 adds the whole 1,048,560-token run (about ten minutes: more than one device call
# allows today; give it its own call). Writes $OUT/*.log, $OUT/prefill-e2e-<tokens>.json and
# $OUT/summary.txt; with PROBE_TGZ=FILE the logs are packed there after every step. COMMIT=ID names
# the commit in the JSON (default: git rev-parse, when the tree has its .git).
set -u
cd "$(dirname "$0")/.." || exit 1
export LD_LIBRARY_PATH=$PWD/.carry/b:$PWD/.carry/b/rt:/usr/local/cuda/lib64
o=${OUT:-/tmp/o}; mkdir -p "$o"
commit=${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
. tools/gpu-steps.sh # step, snap
e2e() { # tokens, seconds
    step "prefill-e2e-$1" "$2" .carry/b/tools/prefill-e2e --tokens "$1" --chunk "${CHUNK:-2048}" \
        --json "$o/prefill-e2e-$1.json" --commit "$commit"
}
step gpu 20 nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.max.sm --format=csv
e2e 131072 "${T128K:-200}"
e2e 262144 "${T256K:-330}"
[ -z "${FULL:-}" ] || e2e 1048560 "${T1M:-1800}"
