#!/usr/bin/env bash
# gpu-wgmma-round.sh - one device call for two wgmma kernels, each A/B against the reference
# build, from the repository root:
#   .carry/b   the reference build (tools/gpu-carry.sh: its rt/ gives the runtime libraries)
#   .carry/w   the wgmma FP8 GEMM (option gemm_wgmma): tools/gemm-check (old against new kernel:
#              bits, batch invariance, speed), the conformance candidate with gemm_wgmma, prefill
#              op times and the 131072-token end-to-end run with and without the option
#   .carry/x   an indexer score kernel variant, .carry/y another: V4-Flash FAST conformance
#              (top-k overlap with the CPU, determinism, batch invariance) and prefill op times
#   .carry/q   element-wise kernel changes: the tiny conformance suite (EXACT candidates bitwise
#              against the CPU) and prefill op times
# Each carry holds the libraries and the programs its steps run. Writes $OUT/*.log and
# $OUT/summary.txt; PROBE_TGZ=FILE packs the logs after every step.
set -u
cd "$(dirname "$0")/.."
export HC_TEST_DATA=$PWD/tests/data CK_FORK=no
o=${OUT:-/tmp/o}; mkdir -p "$o"
. tools/gpu-steps.sh # step, snap
fast="gemv_fast index_fast comp_fast attend_fast"
rt=$PWD/.carry/b/rt:/usr/local/cuda/lib64
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader > "$o/gpu.txt" 2>&1
lp() { echo "LD_LIBRARY_PATH=$PWD/.carry/$1:$rt"; } # the library path of build $1
# most telling first: a call cut short by its limit still brings back what finished
[ -d .carry/w ] && step w-gemm-check 240 env $(lp w) .carry/w/tools/gemm-check
for v in x y q b; do
    [ -d .carry/$v ] && step $v-ops-128k 60 env $(lp $v) .carry/$v/tools/prefill-ops 131072 $fast --json=$o/$v-prefill-ops.json
done
[ -d .carry/w ] && step w-ops-128k-wgmma 60 env $(lp w) .carry/w/tools/prefill-ops 131072 $fast gemm_wgmma \
    --json=$o/w-prefill-ops.json
[ -d .carry/q ] && step q-conform-tiny 150 env $(lp q) .carry/q/tests/test_conformance
for v in x y; do
    [ -d .carry/$v ] && step $v-conform-fast 120 env $(lp $v) HC_CONFORM_ONLY="(fast)" HC_CONFORM_TOKENS=2600 \
        .carry/$v/tests/test_conformance flash
done
if [ -d .carry/w ]; then
    step w-conform-tiny 120 env $(lp w) HC_CONFORM_ONLY=gemm_wgmma .carry/w/tests/test_conformance
    step w-e2e-wgmma 90 env $(lp w) .carry/w/tools/prefill-e2e --tokens 131072 --option gemm_wgmma=1 \
        --json "$o/w-prefill-e2e.json"
fi
exit 0
