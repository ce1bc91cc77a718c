#!/usr/bin/env bash
# The shortest useful device call of 2026-12-07 (what is left of the session's device time):
# the prefill regression probe, the conformance (fast GEMVs included) and batch suites, the
# torch loop, the 64-fork run. Writes $OUT/*.log and $OUT/summary.txt.
set -u
cd "$(dirname "$0")/.."
rt=$PWD/.carry/b/rt:/usr/local/cuda/lib64
o=${OUT:-/tmp/o}; mkdir -p "$o"
for s in base b; do
  echo "== $s" >> "$o/prefill-ops.log"
  LD_LIBRARY_PATH=$PWD/.carry/$s:$rt timeout 40 .carry/$s/tools/prefill-ops 131072 >> "$o/prefill-ops.log" 2>&1
done
GPU_CHECK_SKIP="gpu-tiny golden-cuda gpu-flash conformance racecheck memcheck bench" timeout 110 tools/gpu-check .carry/b > "$o/gpu-check.out" 2>&1
echo "gpu-check rc=$?" >> "$o/summary.txt"
LD_LIBRARY_PATH=$PWD/.carry/b:$rt timeout 90 .carry/b/tools/fork-bench --json "$o/fork.json" > "$o/fork.log" 2>&1; echo "fork rc=$?" >> "$o/summary.txt"
