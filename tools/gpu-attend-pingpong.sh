#!/usr/bin/env bash
# gpu-attend-pingpong.sh - one device call for the fast attention's ping-pong kernel (option
# attend_pingpong, kernels/attend/attend_pingpong.cu; off by default) against attend_fast's kernel,
# from the repository root with the build tools/gpu-carry.sh packed in .carry/b (or CARRY=DIR).
# Steps, most important first (docs/perf/NEXT-attend.md says what to look for):
#   check         tools/attend-check --quick: the small correctness cases (splits, sequence start,
#                 bf16 cache), then issue 11's shapes (HCA and CSA at 128K and 1M) timed, both
#                 kernels: bits, rel. L2 new vs old and vs a host reference, TFLOP/s against PEAK
#   conform-pp    V4-Flash conformance of the FAST candidate with attend_pingpong at 2600 tokens
#                 (every op against the CPU, the attention within 2e-3; top-k, determinism)
#   conform-fast  the same without it (the reference numbers of the same call)
#   ops-*         per-op prefill times of a 2048-token chunk, attend_fast alone and with
#                 attend_pingpong, alternating, at 128K and near 1M (the `attend` column)
#   e2e-*         issue 11's end-to-end run at 131072 tokens, without and with the option
#   gpu-flash-pp  test_gpu on V4-Flash geometry (FAST's whole layers etc.; the option is not set
#                 there: the FAST default is unchanged) - only with FLASH=1
#   ncu           ncu of the first three ping-pong launches of a 128K chunk (NCU=1)
#   race          compute-sanitizer racecheck and synccheck of two small cases (SANITIZE=1)
# PEAK=TFLOPS (default 807, the measured bf16 dense peak of the H100). ONLY="check conform-pp"
# runs just the steps named (prefixes: ONLY="ops" runs every ops-* step). Writes $OUT/*.log and
# $OUT/summary.txt; PROBE_TGZ=FILE packs the logs after every step.
set -u
cd "$(dirname "$0")/.."
. tools/gpu-steps.sh # step, snap, carry_setup
carry_setup "${OUT:-/tmp/o}"
if [ -n "${ONLY:-}" ]; then # keep the steps named in ONLY (or starting with a name there)
    eval "$(declare -f step | sed '1s/step/step_all/')"
    step() {
        local w
        for w in $ONLY; do
            case "$1" in "$w"*) step_all "$@"; return ;; esac
        done
    }
fi
fast="gemv_fast index_fast comp_fast attend_fast"
peak=${PEAK:-807}
step check 400 $b/tools/attend-check --quick --peak "$peak" --json "$o/attend-check.json"
step conform-pp 150 env HC_CONFORM_ONLY="attend_pingpong" HC_CONFORM_TOKENS=2600 $b/tests/test_conformance flash
step conform-fast 150 env HC_CONFORM_ONLY="(fast)" HC_CONFORM_TOKENS=2600 $b/tests/test_conformance flash
for r in 1 2; do
    step ops-128k-fast-$r 40 $b/tools/prefill-ops 131072 $fast --json=$o/ops-128k-fast-$r.json
    step ops-128k-pp-$r 40 $b/tools/prefill-ops 131072 $fast attend_pingpong --json=$o/ops-128k-pp-$r.json
done
step ops-1m-fast 120 $b/tools/prefill-ops 1013760 $fast --json=$o/ops-1m-fast.json
step ops-1m-pp 120 $b/tools/prefill-ops 1013760 $fast attend_pingpong --json=$o/ops-1m-pp.json
step e2e-fast 90 $b/tools/prefill-e2e --tokens 131072 --json "$o/e2e-fast.json" --commit "$commit"
step e2e-pp 90 $b/tools/prefill-e2e --tokens 131072 --option attend_pingpong=1 --json "$o/e2e-pp.json" \
    --commit "$commit"
[ -n "${FLASH:-}" ] && step gpu-flash 200 $b/tests/test_gpu flash
[ -n "${NCU:-}" ] && step ncu 120 ncu --clock-control none -k regex:atp_kernel -c 3 --section SpeedOfLight \
    --metrics 'sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,lts__t_bytes.sum.per_second,regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio' \
    $b/tools/prefill-ops 131072 $fast attend_pingpong
if [ -n "${SANITIZE:-}" ]; then
    step race 200 compute-sanitizer --tool racecheck --error-exitcode 9 $b/tools/attend-check --case csa-start \
        --case hca-128k-decode3 --reps 1
    step sync 200 compute-sanitizer --tool synccheck --error-exitcode 9 $b/tools/attend-check --case csa-start \
        --case hca-128k-decode3 --reps 1
fi
exit 0
