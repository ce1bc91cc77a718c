#!/usr/bin/env bash
# gpu-defaults-round.sh - one device call (within 10 minutes) that checks the CUDA backend's
# defaults after options were turned on, from the repository root with the build that
# tools/gpu-carry.sh packed in .carry/b (or CARRY=DIR):
#   - test_gpu on both geometries, the golden set on CUDA, the V4-Flash conformance of the FAST
#     candidates (2600 tokens), test_batch three times (MEMCHECK=1: once more under memcheck);
#   - issue 11's 131072-token prefill, the decode table (quick) with and without attend_pingpong,
#     the native GEMM on the tiny preset's shapes;
#   - NCU=1: an ncu profile of the indexer at 1M; SESSIONS=1: CUDA session loads with other read
#     pipelines.
# Writes $OUT/all.tgz only (a device call returns at most 8 files).
set -u
cd "$(dirname "$0")/.."
. tools/gpu-steps.sh # step, carry_setup
carry_setup
step gpu-tiny 100 $b/tests/test_gpu
step golden 60 env HC_TEST_BACKEND=cuda $b/tests/test_golden
step gpu-flash 150 $b/tests/test_gpu flash
step conform-flash 150 env HC_CONFORM_ONLY="(fast" HC_CONFORM_TOKENS=2600 $b/tests/test_conformance flash
for r in 1 2 3; do step batch-$r 60 env HC_TEST_BACKEND=cuda $b/tests/test_batch; done
[ -n "${MEMCHECK:-}" ] && step batch-memcheck 200 env HC_TEST_BACKEND=cuda HC_TEST_QUICK=1 compute-sanitizer --tool memcheck \
    --error-exitcode 9 $b/tests/test_batch
step e2e 100 $b/tools/prefill-e2e --tokens 131072 --json "$o/prefill-e2e-131072.json" --commit "$commit"
step decode 100 $b/tools/bench-gpu --quick --json "$o/decode.json"
step decode-pp0 100 $b/tools/bench-gpu --quick --option attend_pingpong=0 --json "$o/decode-pp0.json"
# the native FP8 GEMM on the tiny preset's shapes (cuda_gemm.cu keeps it off them for now)
for s in 1024x256 256x512 128x512 512x512; do
    step native-tiny-$s 60 $b/tools/gemm-check --native --quick --reps 3 --shape $s
done
# NCU=1: the indexer's score kernel and its selection passes at 1M (issue 11's main cost): time per
# kernel, tensor-pipe use, issue stalls
[ -n "${NCU:-}" ] && step ncu-index 240 ncu --clock-control none -k regex:"ixw_score|ix_lohist|ix_count|ix_compact|ix_sort" \
    -c 10 --section SpeedOfLight --metrics 'gpu__time_duration.sum,sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum.pct_of_peak_sustained_elapsed,smsp__issue_active.avg.pct_of_peak_sustained_active,regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio' \
    $b/tools/prefill-ops 1013760 gemv_fast index_fast comp_fast attend_fast
# SESSIONS=1: CUDA session loads with read pipelines of fewer reads in flight
[ -n "${SESSIONS:-}" ] && step session-cuda 200 $b/tools/session-bench --backend cuda --dir /tmp --rounds 1 --no-zstd \
    --variant read_threads=2 --variant read_threads=1 --variant read_threads=2,read_bufs=4
tar czf "$OUT/all.tgz" -C "$o" . && rm -rf "$o"
