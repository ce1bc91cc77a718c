#!/usr/bin/env bash
# gpu-gemm-index.sh - one device call for the prefill GEMMs (cuBLASLt's block-scaled FP8 GEMM with
# a pinned algorithm, option fp8_gemm_cublaslt, against the own GEMM) and the fast indexer's
# roundings, from the repository root. Up to four builds packed by tools/gpu-carry.sh (a variant may hold only the
# libraries, tools/prefill-ops and the tests it runs; the runtime libraries come from the first
# build's rt/):
#   .carry/b   the reference build (main)
#   .carry/c   a variant: the fast indexer with the reference's per-head roundings
#   .carry/d   the same with the scales folded (HCI_IXF_FOLD_SCALES=1)
#   .carry/g   the pinned cuBLASLt GEMMs
# Steps per present build (TAG = its letter): the golden set on CUDA (EXACT and FAST halves),
# prefill op times of a 2048-token chunk at 128K in FAST; for g also the conformance suites (tiny,
# every candidate; V4-Flash FAST at 2600 tokens), test_gpu tiny and the 131072-token end-to-end
# run. Writes $OUT/*.log and $OUT/summary.txt; PROBE_TGZ=FILE packs the logs after every step.
set -u
cd "$(dirname "$0")/.."
export HC_TEST_DATA=$PWD/tests/data CK_FORK=no
o=${OUT:-/tmp/o}; mkdir -p "$o"
commit=$(cat .carry/commit 2>/dev/null || echo unknown)
. tools/gpu-steps.sh # step, snap
fast="gemv_fast index_fast comp_fast attend_fast"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader > "$o/gpu.txt" 2>&1
rt=$(ls -d .carry/*/rt | head -1)
use() { # build folder: its libraries first on the search path
    export LD_LIBRARY_PATH=$PWD/$1:$PWD/$rt:/usr/local/cuda/lib64
}
for v in g c d b; do
    [ -d .carry/$v ] || continue
    use .carry/$v
    export TAG=$v-
    [ -f .carry/$v/tests/test_kernel_config ] && step kernel-config 30 .carry/$v/tests/test_kernel_config
    step golden 120 env HC_TEST_BACKEND=cuda .carry/$v/tests/test_golden
    step ops-128k 40 .carry/$v/tools/prefill-ops 131072 $fast --json=$o/$v-prefill-ops.json
    # prefill-ops makes EXACT contexts with the options named: fp8_gemm_cublaslt adds the
    # cuBLASLt GEMMs (b: the heuristic's algorithm per call; g: the pinned one)
    [ $v = b ] || [ $v = g ] && step ops-128k-lt 40 .carry/$v/tools/prefill-ops 131072 $fast fp8_gemm_cublaslt \
        --json=$o/$v-prefill-ops-lt.json
    [ $v = b ] && step prefill-e2e 90 .carry/$v/tools/prefill-e2e --tokens 131072 --json "$o/b-prefill-e2e-131072.json"
    if [ $v = g ]; then
        step conform-tiny 150 .carry/$v/tests/test_conformance
        step conform-fast 120 env HC_CONFORM_ONLY="(fast)" HC_CONFORM_TOKENS=2600 .carry/$v/tests/test_conformance flash
        step gpu-tiny 150 .carry/$v/tests/test_gpu
        step prefill-e2e 90 .carry/$v/tools/prefill-e2e --tokens 131072 --json "$o/prefill-e2e-131072.json" \
            --commit "$commit"
        step prefill-e2e-lt 90 .carry/$v/tools/prefill-e2e --tokens 131072 --option fp8_gemm_cublaslt=1
    fi
done
exit 0
