#!/usr/bin/env bash
# gpu-defaults-round.sh - one device call (within 10 minutes) that checks the CUDA backend's
# defaults after options were turned on, from the repository root with the build that
# tools/gpu-carry.sh packed in .carry/b (or CARRY=DIR): the GPU suites on both geometries, the
# golden set on CUDA, the V4-Flash conformance of the FAST candidates (2600 tokens), test_batch three
# times (MEMCHECK=1: once more under compute-sanitizer memcheck), then issue 11's 131072-token prefill and the
# decode table (quick) with and without attend_pingpong, the native GEMM on the tiny preset's
# shapes, and (SESSIONS=1) CUDA session loads with other read pipelines. Writes $OUT/all.tgz only (a device call returns at most 8 files) and
# prints the summary and each log's tail.
set -u
cd "$(dirname "$0")/.."
b=${CARRY:-.carry/b}
export LD_LIBRARY_PATH=$PWD/$b:$PWD/$b/rt:/usr/local/cuda/lib64 HC_TEST_DATA=$PWD/tests/data CK_FORK=no
OUT=${OUT:-/tmp/o}
o=$OUT/logs; mkdir -p "$o"
commit=$(cat .carry/commit 2>/dev/null || echo unknown)
. tools/gpu-steps.sh # step
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader > "$o/gpu.txt" 2>&1
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
# SESSIONS=1: CUDA session loads with read pipelines of fewer reads in flight
[ -n "${SESSIONS:-}" ] && step session-cuda 200 $b/tools/session-bench --backend cuda --dir /tmp --rounds 1 --no-zstd \
    --variant read_threads=2 --variant read_threads=1 --variant read_threads=2,read_bufs=4
tar czf "$OUT/all.tgz" -C "$o" . && rm -rf "$o"
