#!/usr/bin/env bash
# one device call of 2026-12-07: the prefill regression probe (parent vs this tree), the fast
# GEMV option's conformance and decode timing, and the 64-fork run. Writes $OUT/*.log.
set -u
cd "$(dirname "$0")/.."
rt=$PWD/.carry/b/rt:/usr/local/cuda/lib64
o=${OUT:-/tmp/o}; mkdir -p "$o"
for i in 1 2; do for s in base b; do
  echo "== $s $i" >> "$o/prefill-ops.log"
  LD_LIBRARY_PATH=$PWD/.carry/$s:$rt timeout 90 .carry/$s/tools/prefill-ops 131072 >> "$o/prefill-ops.log" 2>&1
done; done
LD_LIBRARY_PATH=$PWD/.carry/b:$rt HC_TEST_DATA=$PWD/tests/data CK_FORK=no timeout 200 .carry/b/tests/test_conformance flash > "$o/conform-flash.log" 2>&1; echo "conform-flash rc=$?" >> "$o/summary.txt"
LD_LIBRARY_PATH=$PWD/.carry/b:$rt timeout 120 .carry/b/tools/bench-gpu --quick --option fp8_gemv_fast=1 --json "$o/bench-fast.json" --commit "$(cat .carry/commit 2>/dev/null)" --out "$o/bench-fast.md" > "$o/bench-fast.log" 2>&1; echo "bench-fast rc=$?" >> "$o/summary.txt"
LD_LIBRARY_PATH=$PWD/.carry/b:$rt timeout 200 .carry/b/tools/fork-bench --json "$o/fork.json" > "$o/fork.log" 2>&1; echo "fork rc=$?" >> "$o/summary.txt"
LD_LIBRARY_PATH=$PWD/.carry/b:$rt PYTHONDONTWRITEBYTECODE=1 timeout 200 python3 tools/gpu-torch-loop.py --build .carry/b > "$o/torch-loop.log" 2>&1; echo "torch-loop rc=$?" >> "$o/summary.txt"
