#!/usr/bin/env bash
# gpu-carry.sh - pack what tools/gpu-check needs from a CUDA build into .carry/b (git-ignored),
# with the runtime libraries the GPU machine's image may lack, so that one device call can run
# it: `tools/gpu-check .carry/b`.
set -euo pipefail
cd "$(dirname "$0")/.."
B="${1:-build-gpu}"
rm -rf .carry/b
mkdir -p .carry/b/tests .carry/b/tools .carry/b/rt
cp -a "$B"/libhybridctx.so* .carry/b/
cp "$B/tests/test_gpu" "$B/tests/test_golden" .carry/b/tests/
cp "$B/tools/bench-gpu" "$B/tools/hybridctx" "$B/tools/session-bench" .carry/b/tools/
for lib in libjansson.so.4 libxxhash.so.0 libzstd.so.1 libsubunit.so.0; do
    cp -L "/lib/x86_64-linux-gnu/$lib" .carry/b/rt/
done
touch .carry/b/build.ninja   # gpu-check: a carried build, do not configure
du -sh .carry/b
