#!/usr/bin/env bash
# gpu-index-variants.sh - one device call (about 4 minutes, NCU=1 about 6) that compares the fast
# indexer's head sums (kernels/index/index_wgmma.cu) at issue 11's main cost, from the
# repository root with the build that tools/gpu-carry.sh packed in .carry/b (or CARRY=DIR):
#   golden-f32, conform-f32   the golden set on CUDA and the V4-Flash FAST conformance with
#                             index_f32sum (the production kernels' fp32 head sum)
#   ops-1m-{tcsum,tcpipe,rega,f32sum}   prefill-ops' CSA `topk` per 2048-token chunk near 1M:
#                             FAST's index_tcsum, the pipelined index_tcpipe, the keys in
#                             registers (index_rega), index_f32sum
#   ncu-*                     (NCU=1) the tcsum, rega and f32sum score kernels at 1M: time, tensor-pipe use, the pipes'
#                             use (ComputeWorkloadAnalysis), issue stalls
# Writes $OUT/all.tgz only (a device call returns at most 8 files).
set -u
cd "$(dirname "$0")/.."
. tools/gpu-steps.sh # step, carry_setup
carry_setup
fast="gemv_fast index_fast comp_fast attend_fast attend_pingpong index_tcsum"
declare -A var=([tcsum]="" [tcpipe]="index_tcpipe" [rega]="index_rega" [f32sum]="index_f32sum")
step golden-f32 60 env HC_TEST_FAST_OPTIONS=index_f32sum=1 HC_TEST_BACKEND=cuda $b/tests/test_golden
step conform-f32 150 env HC_CONFORM_ONLY="cuda (fast, index_f32sum)" HC_CONFORM_TOKENS=2600 \
    $b/tests/test_conformance flash
for v in tcsum tcpipe rega f32sum; do
    step ops-1m-$v 90 $b/tools/prefill-ops 1013760 $fast ${var[$v]} --json=$o/ops-1m-$v.json
done
if [ -n "${NCU:-}" ]; then
    for v in tcsum rega f32sum; do
        step ncu-$v 90 ncu --clock-control none -k regex:ixw_score -s 2 -c 1 --section SpeedOfLight \
            --section ComputeWorkloadAnalysis --section WarpStateStats \
            --metrics 'regex:sm__pipe_.*_cycles_active\.avg\.pct_of_peak_sustained_active,regex:sm__inst_executed_pipe_.*\.avg\.pct_of_peak_sustained_active,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum.pct_of_peak_sustained_elapsed,regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio' \
            $b/tools/prefill-ops 1013760 $fast ${var[$v]}
    done
fi
tar czf "$OUT/all.tgz" -C "$o" . && rm -rf "$o"
