#!/usr/bin/env bash
# gpu-decode-fused.sh - one device call (under 5 minutes) for the CUDA option decode_fused (the
# projections of decode steps in fewer launches: lib/backend/cuda/cuda_fused.cu,
# docs/perf/NEXT-decode-fused.md), from the repository root, with the build that tools/gpu-carry.sh
# packed in .carry/b (or CARRY=DIR):
#   gemv-check --quick    the grouped GEMVs bitwise against the separate launches, and timed;
#   test_gpu decode-fused decode steps and pieces of 1-64 tokens, fused against not, bitwise
#                         (outputs and caches; batches too), tiny and V4-Flash geometry;
#   bench-gpu             the whole model's decode time (64K tokens, FAST) without and with it;
#   test_conformance      the decode_fused candidates (tiny), and V4-Flash's FAST candidate with
#                         HC_TEST_FAST_OPTIONS=decode_fused=1 (proj_in checked against the ops).
# Writes one file, $OUT/decode-fused.tgz (the logs, JSON and summary.txt), after every step, so
# that a call cut off still returns what finished; prints the summary.
set -u
cd "$(dirname "$0")/.."
b=${CARRY:-.carry/b}
export LD_LIBRARY_PATH=$PWD/$b:$PWD/$b/rt:/usr/local/cuda/lib64 HC_TEST_DATA=$PWD/tests/data CK_FORK=no
OUT=${OUT:-/tmp/o}
mkdir -p "$OUT"
o=$(mktemp -d)
export PROBE_TGZ=$OUT/decode-fused.tgz
commit=$(cat .carry/commit 2>/dev/null || echo unknown)
. tools/gpu-steps.sh # step, snap
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader > "$o/gpu.txt" 2>&1
echo "commit $commit" >> "$o/gpu.txt"
step gemv-check 75 $b/tools/gemv-check --quick --json "$o/gemv-check.json"
step gpu-tiny 30 env CK_RUN_CASE=decode-fused $b/tests/test_gpu
step gpu-flash 45 env CK_RUN_CASE=decode-fused $b/tests/test_gpu flash
step model-fused0 30 $b/tools/bench-gpu --quick --full-only --numerics fast --json "$o/model-fused0.json" --commit "$commit"
step model-fused1 30 $b/tools/bench-gpu --quick --full-only --numerics fast --option decode_fused=1 \
    --json "$o/model-fused1.json" --commit "$commit"
step conform-tiny 25 env HC_CONFORM_ONLY=decode_fused $b/tests/test_conformance
step conform-flash 45 env HC_TEST_FAST_OPTIONS=decode_fused=1 HC_CONFORM_ONLY="(fast)" $b/tests/test_conformance flash
cat "$o/summary.txt"
grep -h "summary:\|decode_fused (\|decode, all 43 layers" "$o"/*.log 2>/dev/null
rm -rf "$o"
exit 0
