#!/usr/bin/env bash
# gpu-native-round.sh - the native FP8 prefill GEMM (CUDA option gemm_fp8_native, off by default)
# on a GPU, from the repository root, with a CUDA build packed by tools/gpu-carry.sh into
# ${CARRY:-.carry/b}. Two parts, each within one device call (10 minutes):
#   PART=1  smoke-1/-2      gemm-check --native on one shape, one configuration: 128 tokens per tile
#                           with one CTA (-1), then with clusters of two (-2); a hang or a wrong
#                           layout shows here in seconds. Nothing more when smoke-1 fails; when
#                           smoke-2 fails, gemm-check of every token tile without clusters only
#           gemm-check      gemm-check --native: accuracy against the current prefill GEMM, every
#                           configuration bitwise, batch invariance, speed (--peak: PEAK)
#           conform-native  test_conformance flash, FAST, 2600 tokens, the option on
#           conform-cand    the "cuda (fast, gemm_fp8_native)" candidate on the tiny model
#   PART=2  gpu-flash-native   test_gpu flash with the option on every FAST context
#           golden-native      the golden set on CUDA with the option on the FAST contexts
#           ops / ops-native   prefill op times (131072-token context), without and with it
#           e2e / e2e-native   the 131072-token end-to-end prefill, without and with it
# HC_TEST_FAST_OPTIONS (tests/testutil.h) is how the test suites take the option. Writes
# $OUT/*.log and $OUT/summary.txt (docs/perf/NEXT-gemm-native.md says what to look for);
# PROBE_TGZ=FILE packs the logs after every step.
set -u
cd "$(dirname "$0")/.."
export HC_TEST_DATA=$PWD/tests/data CK_FORK=no
o=${OUT:-/tmp/o}
mkdir -p "$o"
. tools/gpu-steps.sh # step, snap
b=${CARRY:-.carry/b}
export LD_LIBRARY_PATH=$PWD/$b:$PWD/$b/rt:/usr/local/cuda/lib64
fast="gemv_fast index_fast comp_fast attend_fast"
on="HC_TEST_FAST_OPTIONS=gemm_fp8_native=1"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader > "$o/gpu.txt" 2>&1
case "${PART:-1}" in
1)
    smoke="$b/tools/gemm-check --native --quick --no-configs --reps 3 --shape 1024x4096 --peak ${PEAK:-1979}"
    step smoke-1 60 $smoke --cfg 128/1 # one CTA per tile
    grep -q '^smoke-1 rc=0 ' "$o/summary.txt" || exit 0
    step smoke-2 60 $smoke --cfg 128/2 # clusters of two, the weight tile multicast
    if ! grep -q '^smoke-2 rc=0 ' "$o/summary.txt"; then
        # the multicast path fails: measure the rest, then rebuild with -DHCI_GN_CLUSTER_MAX=1
        for bn in 128 64 32 16; do step gemm-check-$bn-1 120 $b/tools/gemm-check --native --cfg $bn/1 --peak "${PEAK:-1979}"; done
        exit 0
    fi
    step gemm-check 360 $b/tools/gemm-check --native --peak "${PEAK:-1979}"
    step conform-native 150 env $on HC_CONFORM_ONLY="(fast)" HC_CONFORM_TOKENS=2600 $b/tests/test_conformance flash
    step conform-cand 120 env HC_CONFORM_ONLY=gemm_fp8_native $b/tests/test_conformance
    ;;
2)
    step gpu-flash-native 300 env $on $b/tests/test_gpu flash
    step golden-native 120 env $on HC_TEST_BACKEND=cuda $b/tests/test_golden
    step ops 60 $b/tools/prefill-ops 131072 $fast --json="$o/prefill-ops.json"
    step ops-native 60 $b/tools/prefill-ops 131072 $fast gemm_fp8_native --json="$o/prefill-ops-native.json"
    step e2e 100 $b/tools/prefill-e2e --tokens 131072 --json "$o/prefill-e2e.json"
    step e2e-native 100 $b/tools/prefill-e2e --tokens 131072 --option gemm_fp8_native=1 --json "$o/prefill-e2e-native.json"
    ;;
esac
exit 0
