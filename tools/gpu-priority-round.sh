#!/usr/bin/env bash
# gpu-priority-round.sh - the most needed device checks in two calls, for sessions that get few
# device starts (each part within 10 minutes), from the repository root with the build that
# tools/gpu-carry.sh packed in .carry/b (or CARRY=DIR). The logs are packed into $OUT/all.tgz
# after every step (a part cut off by its time limit still returns what finished).
#   PART=1  (about 10 minutes) the CUDA defaults and the indexer variants: test_gpu on V4-Flash
#           geometry (FAST's defaults against the CPU; fast_options_same_bits: index_tcpipe,
#           index_rega and index_tcmix against index_tcsum, bitwise), prefill-ops' CSA `topk`
#           near 1M for index_tcsum / tcpipe / rega / tcmix / rega + tcmix / f32sum, ncu of the
#           tcsum, rega and tcmix score kernels at 1M (pipes, shared memory, stalls), golden with
#           index_f32sum (the last steps may be cut by the call's limit: the tar keeps the rest)
#   PART=2  (about 7 minutes) issue 11's governing number, the real 1,048,560-token prefill through
#           all 43 layers (prefill-e2e), then issue 12's CUDA session loads
#           (tools/gpu-session-load.sh)
set -u
cd "$(dirname "$0")/.."
. tools/gpu-steps.sh # step, carry_setup
carry_setup
export PROBE_TGZ=$OUT/all.tgz
fast="gemv_fast index_fast comp_fast attend_fast attend_pingpong index_tcsum"
declare -A var=([tcsum]="" [tcpipe]="index_tcpipe" [rega]="index_rega" [tcmix]="index_tcmix" [regamix]="index_rega index_tcmix" [f32sum]="index_f32sum")
ncu_index() { # variant
    step ncu-$1 60 ncu --clock-control none -k regex:ixw_score -s 2 -c 1 --section SpeedOfLight \
        --section ComputeWorkloadAnalysis --section WarpStateStats \
        --metrics 'regex:sm__pipe_.*_cycles_active\.avg\.pct_of_peak_sustained_active,regex:sm__inst_executed_pipe_.*\.avg\.pct_of_peak_sustained_active,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum.pct_of_peak_sustained_elapsed' \
        $b/tools/prefill-ops 1013760 $fast ${var[$1]}
}
case "${PART:-1}" in
1)
    step gpu-flash 200 $b/tests/test_gpu flash
    for v in tcsum tcpipe rega tcmix regamix f32sum; do
        step ops-1m-$v 60 $b/tools/prefill-ops 1013760 $fast ${var[$v]} --json=$o/ops-1m-$v.json
    done
    for v in tcsum rega tcmix; do ncu_index $v; done
    step golden-f32 60 env HC_TEST_FAST_OPTIONS=index_f32sum=1 HC_TEST_BACKEND=cuda $b/tests/test_golden
    ;;
2)
    step e2e-1m 330 $b/tools/prefill-e2e --tokens 1048560 --json "$o/prefill-e2e-1048560.json" --commit "$commit"
    snap # the e2e result, before the loads (which pack their own tar, no snapshots)
    PROBE_TGZ= OUT=$o/sl CARRY=$b tools/gpu-session-load.sh > "$o/session-load.log" 2>&1
    ;;
esac
snap
cat "$o/summary.txt"
rm -rf "$o"
