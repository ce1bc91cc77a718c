#!/usr/bin/env bash
# gpu-attend-fast.sh - one device call for the fast attention (option attend_fast, set by
# HC_NUMERICS_FAST; kernels/attend/attend_wgmma.cu), from the repository root with the build
# tools/gpu-carry.sh packed in .carry/b (or CARRY=DIR): the V4-Flash conformance of the fast
# candidate (every op against the CPU, determinism, batch invariance), per-op prefill times of a
# 2048-token chunk at 128K with and without the fast attention, an ncu profile of one launch,
# decode in fast numerics, and per-op prefill times near 1M. Writes $OUT/*.log and
# $OUT/summary.txt; PROBE_TGZ=FILE packs the logs after every step. SKIP_TESTS, SKIP_NCU,
# SKIP_1M leave steps out.
set -u
cd "$(dirname "$0")/.."
b=${CARRY:-.carry/b}
export LD_LIBRARY_PATH=$PWD/$b:$PWD/$b/rt:/usr/local/cuda/lib64
o=${OUT:-/tmp/o}; mkdir -p "$o"
. tools/gpu-steps.sh # step, snap
fast="gemv_fast index_fast comp_fast"
[ -n "${SKIP_TESTS:-}" ] || step conform-fast 120 env HC_CONFORM_ONLY="(fast)" HC_CONFORM_TOKENS=2600 $b/tests/test_conformance flash
step prefill-att 40 $b/tools/prefill-ops 131072 $fast attend_fast --json=$o/prefill-ops-att.json
step prefill-noatt 30 $b/tools/prefill-ops 131072 $fast
[ -n "${SKIP_NCU:-}" ] || step ncu-attend 90 ncu --clock-control none -k regex:'atw_kernel' -c 1 --section SpeedOfLight \
    --section WarpStateStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis --section Occupancy \
    --section SchedulerStats $b/tools/prefill-ops 131072 $fast attend_fast
step bench-fast 60 $b/tools/bench-gpu --quick $(printf -- '--option %s=1 ' $fast attend_fast) --json "$o/bench-fast.json" \
    --out "$o/bench-fast.md"
[ -n "${SKIP_1M:-}" ] || step prefill-att-1m 150 $b/tools/prefill-ops 1013760 $fast attend_fast
exit 0
