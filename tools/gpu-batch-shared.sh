#!/usr/bin/env bash
# gpu-batch-shared.sh [BUILD] - one device call for batched calls on CUDA (shared launches,
# docs/cuda.md "Batches"), from the repository root, with a build packed by tools/gpu-carry.sh
# (default .carry/b): test_batch five times, once with CUDA_LAUNCH_BLOCKING=1 (a missing event
# between streams fails only without it) and once under compute-sanitizer; the single-context
# suites; the batched decode table (bench-gpu --batch) in FAST for 40 and 8 contexts and in EXACT
# for 16. Writes $OUT/*.log and $OUT/summary.txt; PROBE_TGZ=FILE packs the logs after every step.
set -u
cd "$(dirname "$0")/.."
export HC_TEST_DATA=$PWD/tests/data CK_FORK=no
o=${OUT:-/tmp/o}; mkdir -p "$o"
. tools/gpu-steps.sh # step, snap
b=${1:-.carry/b}
export LD_LIBRARY_PATH=$PWD/$b:$PWD/$b/rt:/usr/local/cuda/lib64
for i in 1 2 3 4 5; do step batch-$i 120 env HC_TEST_BACKEND=cuda $b/tests/test_batch; done
step batch-blocking 180 env CUDA_LAUNCH_BLOCKING=1 HC_TEST_BACKEND=cuda $b/tests/test_batch
step bench-batch40-fast 150 $b/tools/bench-gpu --quick --numerics fast --batch 40 --json $o/batch40-fast.json
step bench-batch8-fast 120 $b/tools/bench-gpu --quick --numerics fast --batch 8
step bench-batch16-exact 120 $b/tools/bench-gpu --quick --numerics exact --batch 16
step gpu-tiny 150 $b/tests/test_gpu
step conform-tiny 150 $b/tests/test_conformance
step golden 120 env HC_TEST_BACKEND=cuda $b/tests/test_golden
step batch-memcheck 300 env HC_TEST_BACKEND=cuda compute-sanitizer --tool memcheck --error-exitcode 9 $b/tests/test_batch
exit 0
