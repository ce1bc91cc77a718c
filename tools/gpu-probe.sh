#!/usr/bin/env bash
# gpu-probe.sh - one device call for the open GPU questions, most important first, from the
# repository root with the builds tools/gpu-carry.sh packed (.carry/b, and .carry/base for the
# baseline): the prefill regression probe (tools/prefill-ops, base vs new), the GPU suites
# (tools/gpu-check without sanitizers and bench; its torch loop included), the fast GEMVs' decode
# timing (bench-gpu --option gemv_fast=1 --json), the 64-fork run (fork-bench), a second prefill
# round, sessions on CUDA. Writes $OUT/*.log and $OUT/summary.txt. Device command:
#   export PROBE_TGZ=$OUT/probe.tgz OUT=/tmp/o; tools/gpu-probe.sh
# PROBE_SHORT=1, for a lease of about 3 minutes: one prefill round, the conformance, batch and
# torch-loop suites only, the forks; no timing of the fast GEMVs, no sessions.
set -u
cd "$(dirname "$0")/.."
rt=$PWD/.carry/b/rt:/usr/local/cuda/lib64
o=${OUT:-/tmp/o}; mkdir -p "$o"
short=${PROBE_SHORT:-}
. tools/gpu-steps.sh # step, snap; PROBE_TGZ=FILE packs the logs after every step
prefill_round() { # round number
    for s in base b; do
        echo "== $s $1" >> "$o/prefill-ops.log"
        LD_LIBRARY_PATH=$PWD/.carry/$s:$rt timeout 60 .carry/$s/tools/prefill-ops 131072 >> "$o/prefill-ops.log" 2>&1
    done
    snap
}
export LD_LIBRARY_PATH=$PWD/.carry/b:$rt # the steps run the build under test
prefill_round 1
skip="racecheck memcheck bench"
[ -n "$short" ] && skip="$skip gpu-tiny golden-cuda gpu-flash conformance"
step gpu-check 150 env GPU_CHECK_SKIP="$skip" tools/gpu-check .carry/b
[ -z "$short" ] && step bench-fast 100 .carry/b/tools/bench-gpu --quick --option gemv_fast=1 --json "$o/bench-fast.json" \
    --commit "$(cat .carry/commit 2>/dev/null)" --out "$o/bench-fast.md"
step fork 120 .carry/b/tools/fork-bench --json "$o/fork.json"
[ -n "$short" ] && exit 0
prefill_round 2
# sessions from and into a CUDA context (issue 12, item 7)
step session-cuda 70 .carry/b/tools/session-bench --backend cuda --dir /tmp --rounds 1
