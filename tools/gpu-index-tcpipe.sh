#!/usr/bin/env bash
# gpu-index-tcpipe.sh - one device call (about 3 minutes) for the pipelined head sum of the fast
# indexer (option index_tcpipe, kernels/index/index_wgmma.cu PIPE; off by default), from the
# repository root with the build that tools/gpu-carry.sh packed in .carry/b (or CARRY=DIR):
#   same-bits   test_gpu flash, whose fast_options_same_bits case runs FAST with index_tcpipe
#               against index_tcsum's kernel (outputs, entries, picks bitwise equal)
#   golden, conform   the golden set on CUDA and the V4-Flash FAST conformance with it on
#   ops-*       the CSA `topk` column of a 2048-token chunk at 128K and near 1M, without and with
#   e2e-*       issue 11's 131072-token prefill, without and with
#   ncu         (NCU=1) the score kernel of both at 1M: tensor-pipe use, issue stalls
# Writes $OUT/all.tgz only (a device call returns at most 8 files).
set -u
cd "$(dirname "$0")/.."
. tools/gpu-steps.sh # step, carry_setup
carry_setup
fast="gemv_fast index_fast comp_fast attend_fast index_tcsum"
step same-bits 200 $b/tests/test_gpu flash
step golden 60 env HC_TEST_FAST_OPTIONS=index_tcpipe=1 HC_TEST_BACKEND=cuda $b/tests/test_golden
step conform 150 env HC_TEST_FAST_OPTIONS=index_tcpipe=1 HC_CONFORM_ONLY="cuda (fast)" HC_CONFORM_TOKENS=2600 \
    $b/tests/test_conformance flash
for v in 0 1; do
    step ops-128k-pipe$v 40 $b/tools/prefill-ops 131072 $fast index_tcpipe=$v --json=$o/ops-128k-pipe$v.json
    step ops-1m-pipe$v 90 $b/tools/prefill-ops 1013760 $fast index_tcpipe=$v --json=$o/ops-1m-pipe$v.json
done
for v in 0 1; do
    step e2e-pipe$v 90 $b/tools/prefill-e2e --tokens 131072 --option index_tcpipe=$v --json "$o/e2e-pipe$v.json" \
        --commit "$commit"
done
if [ -n "${NCU:-}" ]; then
    for v in 0 1; do
        step ncu-pipe$v 120 ncu --clock-control none -k regex:ixw_score -c 1 --section SpeedOfLight \
            --section WarpStateStats --metrics 'sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active' \
            $b/tools/prefill-ops 1013760 $fast index_tcpipe=$v
    done
fi
tar czf "$OUT/all.tgz" -C "$o" . && rm -rf "$o"
