#!/usr/bin/env bash
# gpu-round.sh - one device call that checks a build and takes a session's measurements, most
# important first, from the repository root with builds packed by tools/gpu-carry.sh:
#   .carry/b     the build under test (required)
#   .carry/base  a baseline build (optional: two alternating bench-gpu rounds of each,
#                tools/gpu-baseline.sh)
#   .carry/c     a variant's libraries and tools/prefill-ops (optional: per-op prefill times)
# Steps, most important first: the GPU suites without the long V4-Flash ones and without
# sanitizers (tools/gpu-check), the end-to-end prefill at 128K in fast numerics (prefill-e2e),
# sessions from and into a CUDA context, per-op prefill times in fast numerics (prefill-ops,
# 128K), sessions of a CPU context on the device's host, the optional steps, decode in fast
# numerics (bench-gpu --quick). SESSION_ROUNDS, BASE_ROUNDS: rounds of those steps. Logs in $OUT
# (default /tmp/o);
# PROBE_TGZ=FILE packs them after every step, so a call cut off still returns what finished.
#   export PROBE_TGZ=$OUT/probe.tgz OUT=/tmp/o; tools/gpu-round.sh
set -u
cd "$(dirname "$0")/.."
o=${OUT:-/tmp/o}; mkdir -p "$o"
rt=$PWD/.carry/b/rt:/usr/local/cuda/lib64
commit=$(cat .carry/commit 2>/dev/null || echo unknown)
fast="gemv_fast index_fast comp_fast attend_fast"
. tools/gpu-steps.sh # step, snap
bstep() { # name, seconds, build dir, command...: a step that runs against that build's libraries
    local name="$1" limit="$2" dir="$3"
    shift 3
    step "$name" "$limit" env LD_LIBRARY_PATH="$PWD/$dir:$rt" "$@"
}
bstep gpu-check 120 .carry/b env OUT="$o/check" GPU_CHECK_SKIP="gpu-flash conform-flash memcheck racecheck bench" \
    tools/gpu-check .carry/b
bstep prefill-e2e 120 .carry/b .carry/b/tools/prefill-e2e --tokens 131072 --json "$o/prefill-e2e-131072.json" \
    --commit "$commit"
bstep session-cuda 60 .carry/b .carry/b/tools/session-bench --backend cuda --dir /tmp --rounds 1 --no-zstd
bstep prefill-ops 60 .carry/b .carry/b/tools/prefill-ops 131072 $fast --json=$o/prefill-ops.json
bstep session-cpu 90 .carry/b .carry/b/tools/session-bench --dir /tmp --rounds "${SESSION_ROUNDS:-3}" --no-zstd
[ -d .carry/base ] && bstep baseline 150 .carry/b env OUT="$o/baseline" tools/gpu-baseline.sh .carry/base .carry/b "${BASE_ROUNDS:-2}"
[ -d .carry/c ] && bstep prefill-ops-c 60 .carry/c .carry/c/tools/prefill-ops 131072 $fast
bstep bench-fast 90 .carry/b .carry/b/tools/bench-gpu --quick $(printf -- '--option %s=1 ' $fast) \
    --json "$o/bench-fast.json" --commit "$commit" --out "$o/bench-fast.md"
exit 0
