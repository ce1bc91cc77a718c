#!/usr/bin/env bash
# gpu-index-fast.sh - one device call for the fast indexer (option index_fast, HC_NUMERICS_FAST),
# from the repository root with the build tools/gpu-carry.sh packed in .carry/b (or CARRY=DIR;
# TAG=NAME prefixes the log names, to run two builds in one call): the conformance
# suites (every CUDA candidate, "cuda (fast)" included: top-k overlap with the CPU, determinism,
# batch invariance), then the per-op prefill times of a 2048-token chunk at 128K in exact and
# fast numerics, and near 1M in fast numerics; an ncu profile of one fast score kernel. Writes $OUT/*.log and $OUT/summary.txt; with
# PROBE_TGZ=FILE the logs are packed there after every step. SKIP_TESTS, SKIP_FLASH, SKIP_EXACT,
# SKIP_NCU leave steps out.
set -u
cd "$(dirname "$0")/.."
b=${CARRY:-.carry/b}
export LD_LIBRARY_PATH=$PWD/$b:$PWD/$b/rt:/usr/local/cuda/lib64
o=${OUT:-/tmp/o}; mkdir -p "$o"
. tools/gpu-steps.sh # step, snap
fast="gemv_fast index_fast comp_fast"
[ -n "${SKIP_TESTS:-}" ] || step conformance 60 $b/tests/test_conformance
[ -n "${SKIP_FLASH:-}" ] || step conform-flash 150 $b/tests/test_conformance flash
[ -n "${SKIP_TESTS:-}" ] || step batch 60 $b/tests/test_batch
# 2600 tokens: 650 compressed entries, more than the 512 picks (the wgmma kernel's selections)
[ -n "${SKIP_TESTS:-}" ] || step conform-flash-long 150 env HC_CONFORM_ONLY="(fast)" HC_CONFORM_TOKENS=2600 $b/tests/test_conformance flash
[ -n "${SKIP_EXACT:-}" ] || step prefill-exact 90 $b/tools/prefill-ops 131072
step prefill-fast 90 $b/tools/prefill-ops 131072 $fast
step prefill-fast-1m 150 $b/tools/prefill-ops 1013760 $fast
# the tensor-core instructions in the library's SASS (QGMMA: wgmma fp8; HMMA: f16 mma.sync)
[ -n "${SKIP_TESTS:-}" ] || step sass 60 sh -c "cuobjdump -sass $b/libhybridctx-cuda.so.0 | grep -oE '(QGMMA|HGMMA|QMMA|HMMA|IMMA)[.A-Z0-9_]*' | sort | uniq -c"
[ -n "${SKIP_NCU:-}" ] || step ncu-score 120 ncu --clock-control none -k regex:'ix[fw]_score' -c 1 --section SpeedOfLight --section WarpStateStats \
    --section ComputeWorkloadAnalysis --section Occupancy --section SchedulerStats --section InstructionStats \
    $b/tools/prefill-ops 131072 $fast
