#!/usr/bin/env bash
# gpu-integ-round.sh - one device call (PART=1 or 2, each within 10 minutes) for a build that
# carries several changes not yet run on a GPU, from the repository root, with the build packed by
# tools/gpu-carry.sh in .carry/b:
#   PART=1  gemv-check --quick (the rewritten decode GEMVs bitwise against the previous kernels,
#           timed), the native FP8 GEMM's smoke tests (one CTA, then clusters of two), test_batch
#           on CUDA (shared launches), prefill op times at 128K: default, index_tcsum,
#           gemm_fp8_native, both
#   PART=2  with index_tcsum and gemm_fp8_native on (HC_TEST_FAST_OPTIONS: FAST contexts of the suites): the golden set on CUDA, the
#           V4-Flash FAST conformance candidate, the 131072-token end-to-end prefill; then the
#           decode table with the rewritten GEMVs (bench-gpu --quick, FAST, gemv_teams on)
#   PART=3  sessions of a 1M-token context at disk speed (CUDA with a variant that reproduces the
#           previous read pipeline, then CPU; --trace says where each load's time goes), the
#           decode table with the default GEMVs and with gemv_teams
# Writes $OUT/*.log and $OUT/summary.txt; PROBE_TGZ=FILE packs the logs after every step.
set -u
cd "$(dirname "$0")/.."
export HC_TEST_DATA=$PWD/tests/data CK_FORK=no
o=${OUT:-/tmp/o}; mkdir -p "$o"
commit=$(cat .carry/commit 2>/dev/null || echo unknown)
. tools/gpu-steps.sh # step, snap
b=.carry/b
export LD_LIBRARY_PATH=$PWD/$b:$PWD/$b/rt:/usr/local/cuda/lib64
fast="gemv_fast index_fast comp_fast attend_fast"
both="index_tcsum=1,gemm_fp8_native=1"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader > "$o/gpu.txt" 2>&1
case "${PART:-1}" in
1)
    step gemv-check 100 $b/tools/gemv-check --quick --json $o/gemv.json
    smoke="$b/tools/gemm-check --native --quick --no-configs --reps 3 --shape 1024x4096"
    step native-smoke-1 60 $smoke --cfg 128/1
    grep -q '^native-smoke-1 rc=0 ' "$o/summary.txt" && step native-smoke-2 60 $smoke --cfg 128/2
    step batch 120 env HC_TEST_BACKEND=cuda $b/tests/test_batch
    step ops-default 45 $b/tools/prefill-ops 131072 $fast --json=$o/ops-default.json
    step ops-tcsum 45 $b/tools/prefill-ops 131072 $fast index_tcsum --json=$o/ops-tcsum.json
    if grep -q '^native-smoke-1 rc=0 ' "$o/summary.txt"; then
        step ops-native 45 $b/tools/prefill-ops 131072 $fast gemm_fp8_native --json=$o/ops-native.json
        step gemm-check-native 150 $b/tools/gemm-check --native --quick
    fi
    ;;
2)
    step golden 120 env HC_TEST_FAST_OPTIONS=$both HC_TEST_BACKEND=cuda $b/tests/test_golden
    step conform-fast 150 env HC_TEST_FAST_OPTIONS=$both HC_CONFORM_ONLY="(fast)" HC_CONFORM_TOKENS=2600 \
        $b/tests/test_conformance flash
    step e2e 100 $b/tools/prefill-e2e --tokens 131072 --option index_tcsum=1 --option gemm_fp8_native=1 \
        --json "$o/prefill-e2e-131072.json" --commit "$commit"
    step decode-teams 150 $b/tools/bench-gpu --quick --numerics fast --option gemv_teams=1 --json $o/decode-teams.json
    ;;
3)
    step session-cuda 240 $b/tools/session-bench --backend cuda --dir /tmp --rounds 3 --no-zstd \
        --trace $o/cuda-load.trace --variant eager=0,read_bufs=4,read_threads=2 --json
    step session-cpu 150 $b/tools/session-bench --dir /tmp --rounds 3 --no-zstd --trace $o/cpu-load.trace
    step decode 150 $b/tools/bench-gpu --quick --numerics fast --json $o/decode.json
    step decode-teams 150 $b/tools/bench-gpu --quick --numerics fast --option gemv_teams=1 --json $o/decode-teams.json
    ;;
esac
exit 0
