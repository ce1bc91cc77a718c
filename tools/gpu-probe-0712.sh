#!/usr/bin/env bash
# One device call of 2026-12-07, most important first: the prefill regression probe (the parent
# of the architecture change vs this tree, alternating), the GPU suites (tools/gpu-check without
# sanitizers and bench; its torch loop included), the fast GEMV's decode timing, the 64-fork run.
# Writes $OUT/*.log and $OUT/summary.txt.
set -u
cd "$(dirname "$0")/.."
rt=$PWD/.carry/b/rt:/usr/local/cuda/lib64
o=${OUT:-/tmp/o}; mkdir -p "$o"
for i in 1; do for s in base b; do
  echo "== $s $i" >> "$o/prefill-ops.log"
  LD_LIBRARY_PATH=$PWD/.carry/$s:$rt timeout 60 .carry/$s/tools/prefill-ops 131072 >> "$o/prefill-ops.log" 2>&1
done; done
GPU_CHECK_SKIP="racecheck memcheck bench" timeout 150 tools/gpu-check .carry/b > "$o/gpu-check.out" 2>&1
echo "gpu-check rc=$?" >> "$o/summary.txt"
LD_LIBRARY_PATH=$PWD/.carry/b:$rt timeout 100 .carry/b/tools/bench-gpu --quick --option gemv_fast=1 --json "$o/bench-fast.json" --commit "$(cat .carry/commit 2>/dev/null)" --out "$o/bench-fast.md" > "$o/bench-fast.log" 2>&1; echo "bench-fast rc=$?" >> "$o/summary.txt"
LD_LIBRARY_PATH=$PWD/.carry/b:$rt timeout 120 .carry/b/tools/fork-bench --json "$o/fork.json" > "$o/fork.log" 2>&1; echo "fork rc=$?" >> "$o/summary.txt"
for s in base b; do  # a second round when time is left
  echo "== $s 2" >> "$o/prefill-ops.log"
  LD_LIBRARY_PATH=$PWD/.carry/$s:$rt timeout 60 .carry/$s/tools/prefill-ops 131072 >> "$o/prefill-ops.log" 2>&1
done
# sessions from and into a CUDA context (issue 12, item 7), when time is left
LD_LIBRARY_PATH=$PWD/.carry/b:$rt timeout 70 .carry/b/tools/session-bench --backend cuda --dir /tmp --rounds 1 > "$o/session-cuda.log" 2>&1; echo "session-cuda rc=$?" >> "$o/summary.txt"
