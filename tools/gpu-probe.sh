#!/usr/bin/env bash
# gpu-probe.sh - one device call for the open GPU questions, most important first, from the
# repository root with the builds tools/gpu-carry.sh packed (.carry/b, and .carry/base for the
# baseline): the prefill regression probe (tools/prefill-ops, base vs new), the GPU suites
# (tools/gpu-check without sanitizers and bench; its torch loop included), the fast GEMVs' decode
# timing (bench-gpu --option gemv_fast=1 --json), the 64-fork run (fork-bench), a second prefill
# round, sessions on CUDA. Writes $OUT/*.log and $OUT/summary.txt. Device command:
#   export PROBE_TGZ=$OUT/probe.tgz OUT=/tmp/o; tools/gpu-probe.sh
set -u
cd "$(dirname "$0")/.."
rt=$PWD/.carry/b/rt:/usr/local/cuda/lib64
o=${OUT:-/tmp/o}; mkdir -p "$o"
# PROBE_TGZ=FILE: the logs so far are packed there after every step, so that a call cut off by
# its time limit still returns what finished (files under the device's $OUT come back)
snap() { [ -n "${PROBE_TGZ:-}" ] && tar czf "$PROBE_TGZ" -C "$o" . 2>/dev/null; return 0; }
for i in 1; do for s in base b; do
  echo "== $s $i" >> "$o/prefill-ops.log"
  LD_LIBRARY_PATH=$PWD/.carry/$s:$rt timeout 60 .carry/$s/tools/prefill-ops 131072 >> "$o/prefill-ops.log" 2>&1
done; done
GPU_CHECK_SKIP="racecheck memcheck bench" timeout 150 tools/gpu-check .carry/b > "$o/gpu-check.out" 2>&1
echo "gpu-check rc=$?" >> "$o/summary.txt"
snap
LD_LIBRARY_PATH=$PWD/.carry/b:$rt timeout 100 .carry/b/tools/bench-gpu --quick --option gemv_fast=1 --json "$o/bench-fast.json" --commit "$(cat .carry/commit 2>/dev/null)" --out "$o/bench-fast.md" > "$o/bench-fast.log" 2>&1; echo "bench-fast rc=$?" >> "$o/summary.txt"
snap
LD_LIBRARY_PATH=$PWD/.carry/b:$rt timeout 120 .carry/b/tools/fork-bench --json "$o/fork.json" > "$o/fork.log" 2>&1; echo "fork rc=$?" >> "$o/summary.txt"
snap
for s in base b; do  # a second round when time is left
  echo "== $s 2" >> "$o/prefill-ops.log"
  LD_LIBRARY_PATH=$PWD/.carry/$s:$rt timeout 60 .carry/$s/tools/prefill-ops 131072 >> "$o/prefill-ops.log" 2>&1
done
snap
# sessions from and into a CUDA context (issue 12, item 7), when time is left
LD_LIBRARY_PATH=$PWD/.carry/b:$rt timeout 70 .carry/b/tools/session-bench --backend cuda --dir /tmp --rounds 1 > "$o/session-cuda.log" 2>&1; echo "session-cuda rc=$?" >> "$o/summary.txt"
snap
