#!/usr/bin/env bash
# gpu-attend-fast.sh - one device call for the fast attention (option attend_fast, in FAST
# numerics, the default on CUDA; kernels/attend/attend_wgmma.cu), from the repository root with
# the build tools/gpu-carry.sh packed in .carry/b (or CARRY=DIR) and optionally a variant's
# libraries and tools/prefill-ops in .carry/c. Steps, most important first:
#   conform-fast    V4-Flash conformance of the FAST candidate at 2600 tokens (every op against
#                   the CPU, top-k overlap, determinism, batch invariance)
#   ab-*            per-op prefill times of a 2048-token chunk at 128K, build and variant
#                   alternating (only with .carry/c), and the build without attend_fast
#   suites          tools/gpu-check without the long V4-Flash suites and the sanitizers
#   session-cuda    save and load of a 1M-token CUDA context against raw disk speed
#   prefill-e2e     issue 11's end-to-end run at 131072 tokens (43 layers, bf16 device I/O)
#   bench-fast      decode and prefill in FAST numerics (bench-gpu --quick)
#   gpu-flash       test_gpu on V4-Flash geometry (whole layers against the CPU, both modes)
#   prefill-1m      per-op prefill times near 1M
#   session-cpu     sessions of a CPU context on the device's host (SESSION_CPU=1)
#   ncu-attend      ncu of the first three fast attention launches of a 128K chunk (SWA, CSA, HCA):
#                   duration, speed of light and the warp stall reasons (NCU=1)
# SKIP_NOATT, SKIP_FLASH leave those steps out. Writes $OUT/*.log and $OUT/summary.txt;
# PROBE_TGZ=FILE packs the logs after every step.
set -u
cd "$(dirname "$0")/.."
. tools/gpu-steps.sh # step, snap, carry_setup
carry_setup "${OUT:-/tmp/o}"
rt=$PWD/$b/rt:/usr/local/cuda/lib64 # the other build's runs (.carry/c)
fast="gemv_fast index_fast comp_fast attend_fast"
step conform-fast 90 env HC_CONFORM_ONLY="(fast)" HC_CONFORM_TOKENS=2600 $b/tests/test_conformance flash
[ -n "${SKIP_NOATT:-}" ] || step ab-noatt 30 $b/tools/prefill-ops 131072 gemv_fast index_fast comp_fast
for r in 1 2; do
    step ab-b-$r 30 $b/tools/prefill-ops 131072 $fast --json=$o/prefill-ops-$r.json
    [ -d .carry/c ] && step ab-c-$r 30 env LD_LIBRARY_PATH=$PWD/.carry/c:$rt .carry/c/tools/prefill-ops 131072 $fast
done
step suites 200 env OUT="$o/check" GPU_CHECK_SKIP="gpu-flash conform-flash memcheck racecheck bench torch-loop" \
    tools/gpu-check $b
step prefill-e2e 90 $b/tools/prefill-e2e --tokens 131072 --json "$o/prefill-e2e-131072.json" --commit "$commit"
step prefill-1m 120 $b/tools/prefill-ops 1013760 $fast --json=$o/prefill-ops-1m.json
step bench-fast 60 $b/tools/bench-gpu --quick --numerics fast --json "$o/bench-fast.json" --commit "$commit" \
    --out "$o/bench-fast.md"
step session-cuda 90 $b/tools/session-bench --backend cuda --dir /tmp --rounds 1 --no-zstd
[ -n "${SESSION_CPU:-}" ] && step session-cpu 120 $b/tools/session-bench --dir /tmp --rounds 3 --no-zstd
[ -n "${NCU:-}" ] && step ncu-attend 90 ncu --clock-control none -k regex:atw_kernel -c 3 --section SpeedOfLight \
    --metrics 'regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio' $b/tools/prefill-ops 131072 $fast
[ -n "${SKIP_FLASH:-}" ] || step gpu-flash 200 $b/tests/test_gpu flash
exit 0
