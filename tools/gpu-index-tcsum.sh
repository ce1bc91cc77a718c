#!/usr/bin/env bash
# gpu-index-tcsum.sh - one device call for the fast indexer's head sum on the tensor cores (option
# index_tcsum, kernels/index/index_wgmma.cu), from the repository root, with the build packed by
# tools/gpu-carry.sh in .carry/b, the suites with HC_TEST_FAST_OPTIONS=index_tcsum=1: the golden set on CUDA (EXACT and FAST halves), the V4-Flash
# FAST conformance candidate (determinism, batch invariance, picks shared with the CPU), prefill op
# times of a 2048-token chunk at 128K and 1M with index_tcsum 1 and 0, the 131072-token end-to-end
# run, test_gpu tiny, an ncu profile of the score kernel with each head sum. Writes $OUT/*.log and $OUT/summary.txt; PROBE_TGZ=FILE packs the logs after
# every step.
set -u
cd "$(dirname "$0")/.."
export HC_TEST_DATA=$PWD/tests/data CK_FORK=no
o=${OUT:-/tmp/o}; mkdir -p "$o"
commit=$(cat .carry/commit 2>/dev/null || echo unknown)
. tools/gpu-steps.sh # step, snap
fast="gemv_fast index_fast comp_fast attend_fast"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader > "$o/gpu.txt" 2>&1
b=.carry/b
export LD_LIBRARY_PATH=$PWD/$b:$PWD/$b/rt:/usr/local/cuda/lib64
step golden 120 env HC_TEST_FAST_OPTIONS=index_tcsum=1 HC_TEST_BACKEND=cuda $b/tests/test_golden
for v in 1 0; do
    step ops-128k-tc$v 40 $b/tools/prefill-ops 131072 $fast index_tcsum=$v --json=$o/prefill-ops-128k-tc$v.json
done
step conform-fast 150 env HC_TEST_FAST_OPTIONS=index_tcsum=1 HC_CONFORM_ONLY="(fast)" HC_CONFORM_TOKENS=2600 $b/tests/test_conformance flash
for v in 1 0; do
    step ops-1m-tc$v 90 $b/tools/prefill-ops 1048000 $fast index_tcsum=$v --json=$o/prefill-ops-1m-tc$v.json
done
step prefill-e2e 90 $b/tools/prefill-e2e --tokens 131072 --option index_tcsum=1 --json "$o/prefill-e2e-131072.json" --commit "$commit"
# where the score kernel's time goes, both head sums (one launch each, 128K context)
for v in 1 0; do
    step ncu-ixw-tc$v 120 ncu --clock-control none -k regex:ixw_score -c 1 --section SpeedOfLight \
        --section WarpStateStats --section SchedulerStats --section InstructionStats \
        --metrics 'sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active,smsp__inst_executed.sum' \
        $b/tools/prefill-ops 131072 $fast index_tcsum=$v
done
step gpu-tiny 150 env HC_TEST_FAST_OPTIONS=index_tcsum=1 $b/tests/test_gpu
exit 0
