#!/usr/bin/env bash
# gpu-profile.sh - one device call: the GPU suites of tools/gpu-check that finish in a few minutes
# (golden set on CUDA in both modes, conformance tiny and V4-Flash FAST, test_gpu tiny,
# test_batch), then per-kernel times under ncu: every kernel of the first FAST prefill chunks at
# 128K (the split of q_path, topk and out_path into kernels), the kernels of a few FAST decode
# steps, the indexer score kernel's stall profile at 1M; last, session saves and loads of a
# 1M-token CPU and CUDA context against the disk's raw speed. From the repository root with the
# build tools/gpu-carry.sh packed in .carry/b (or CARRY=DIR). With a variant in .carry/x (its
# libraries, tools/prefill-ops and tests/test_conformance at least) it first runs the variant's
# V4-Flash FAST conformance and both builds' prefill op times at 128K and 1M, and profiles the
# variant's indexer instead. Writes $OUT/*.log and $OUT/summary.txt; PROBE_TGZ=FILE packs the
# logs after every step. SKIP_SUITES=1 leaves the suites out.
set -u
cd "$(dirname "$0")/.."
b=${CARRY:-.carry/b}
export LD_LIBRARY_PATH=$PWD/$b:$PWD/$b/rt:/usr/local/cuda/lib64 HC_TEST_DATA=$PWD/tests/data CK_FORK=no
o=${OUT:-/tmp/o}; mkdir -p "$o"
. tools/gpu-steps.sh # step, snap
fast="gemv_fast index_fast comp_fast attend_fast"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader > "$o/gpu.txt" 2>&1
rt=$PWD/$b/rt:/usr/local/cuda/lib64
x=.carry/x
if [ -d $x ]; then
    step x-conform-fast 120 env LD_LIBRARY_PATH=$PWD/$x:$rt HC_CONFORM_ONLY="(fast)" HC_CONFORM_TOKENS=2600 \
        $x/tests/test_conformance flash
    for c in 131072 1013760; do
        step x-ops-$c 120 env LD_LIBRARY_PATH=$PWD/$x:$rt $x/tools/prefill-ops $c $fast --json=$o/x-prefill-ops-$c.json
        step b-ops-$c 120 $b/tools/prefill-ops $c $fast --json=$o/b-prefill-ops-$c.json
    done
fi
if [ -z "${SKIP_SUITES:-}" ]; then
    step golden 120 env HC_TEST_BACKEND=cuda $b/tests/test_golden
    step conform-tiny 150 $b/tests/test_conformance
    step gpu-tiny 150 $b/tests/test_gpu
    step batch 120 env HC_TEST_BACKEND=cuda $b/tests/test_batch
    step conform-fast 120 env HC_CONFORM_ONLY="(fast)" HC_CONFORM_TOKENS=2600 $b/tests/test_conformance flash
fi
# the layer kernels (not the context fill's): duration of each launch, L2 flushed between them
k='regex:^(gf_|gs_|gb|gemv|rmsnorm|q_heads|kv_rows|index_q|inverse_rope|atw_|at_|act_quant|ix|prep_|emit_|state_|check_finite|to_bf16|from_bf16|bf16_to_f64|pack_rows)'
step ncu-kernels-128k 150 ncu --clock-control none -k "$k" -c 150 --metrics gpu__time_duration.sum \
    $b/tools/prefill-ops 131072 $fast
# a few FAST decode steps of one CSA layer at 4K: every launch, copy and memset of a step
step ncu-decode 120 ncu --clock-control none -c 120 --metrics gpu__time_duration.sum \
    $b/tools/bench-gpu --profile --numerics fast
[ -d $x ] && export LD_LIBRARY_PATH=$PWD/$x:$rt
step ncu-ixw-1m 150 ncu --clock-control none -k regex:ixw_score -c 1 --section SpeedOfLight --section Occupancy \
    --section LaunchStats --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis \
    --metrics 'regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active,smsp__inst_executed.sum' \
    $([ -d $x ] && echo $x || echo $b)/tools/prefill-ops 1013760 $fast
# sessions of a 1M-token context at disk speed (CPU and CUDA contexts) on the device's host
step session-cpu 150 env LD_LIBRARY_PATH=$PWD/$b:$rt $b/tools/session-bench --dir /tmp --rounds 3 --no-zstd
step session-cuda 90 env LD_LIBRARY_PATH=$PWD/$b:$rt $b/tools/session-bench --backend cuda --dir /tmp --rounds 1 --no-zstd
exit 0
