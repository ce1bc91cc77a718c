#!/usr/bin/env bash
# gpu-probe-short.sh - tools/gpu-probe.sh for a short lease (about 3 minutes of device time):
# the prefill regression probe, the conformance (fast GEMVs included), batch and torch-loop
# suites, the 64-fork run. Same use as gpu-probe.sh.
set -u
cd "$(dirname "$0")/.."
rt=$PWD/.carry/b/rt:/usr/local/cuda/lib64
o=${OUT:-/tmp/o}; mkdir -p "$o"
# PROBE_TGZ=FILE: the logs so far are packed there after every step, so that a call cut off by
# its time limit still returns what finished (files under the device's $OUT come back)
snap() { [ -n "${PROBE_TGZ:-}" ] && tar czf "$PROBE_TGZ" -C "$o" . 2>/dev/null; return 0; }
for s in base b; do
  echo "== $s" >> "$o/prefill-ops.log"
  LD_LIBRARY_PATH=$PWD/.carry/$s:$rt timeout 40 .carry/$s/tools/prefill-ops 131072 >> "$o/prefill-ops.log" 2>&1
done
snap
GPU_CHECK_SKIP="gpu-tiny golden-cuda gpu-flash conformance racecheck memcheck bench" timeout 110 tools/gpu-check .carry/b > "$o/gpu-check.out" 2>&1
echo "gpu-check rc=$?" >> "$o/summary.txt"
snap
LD_LIBRARY_PATH=$PWD/.carry/b:$rt timeout 90 .carry/b/tools/fork-bench --json "$o/fork.json" > "$o/fork.log" 2>&1; echo "fork rc=$?" >> "$o/summary.txt"
snap
