#!/usr/bin/env bash
# gpu-carry.sh [BUILD_DIR] [DEST] - pack what tools/gpu-check needs from a CUDA build into DEST
# (default .carry/b, git-ignored), with the runtime libraries the GPU machine's image may lack,
# so that one device call can run it: `tools/gpu-check .carry/b`. The core library, the CUDA
# module beside it, the GPU test suites and the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
B="${1:-build-gpu}"
D="${2:-.carry/b}"
# meson 1.0's nvcc rule writes no dependency file, so a header change leaves CUDA objects stale:
# rebuild them all before packing (about a minute)
if [ -f "$B/build.ninja" ] && grep -q '^rule cuda_COMPILER' "$B/build.ninja"; then
    ninja -C "$B" -t clean -r cuda_COMPILER >/dev/null
    ninja -C "$B" >/dev/null
fi
rm -rf "$D"
mkdir -p "$D/tests" "$D/tools" "$D/rt"
# the core library and, from builds that have it, the CUDA module (files and their links)
find "$B" -maxdepth 1 -name 'libhybridctx*.so*' ! -type d -exec cp -a {} "$D/" \;
for t in test_gpu test_golden test_conformance test_cache test_batch; do
    [ -f "$B/tests/$t" ] && cp "$B/tests/$t" "$D/tests/"
done
for t in bench-gpu hybridctx session-bench fork-bench prefill-ops prefill-e2e gemm-check gemv-check attend-check; do
    [ -f "$B/tools/$t" ] && cp "$B/tools/$t" "$D/tools/"
done
for lib in libjansson.so.4 libxxhash.so.0 libzstd.so.1 libsubunit.so.0; do
    cp -L "/lib/x86_64-linux-gnu/$lib" "$D/rt/"
done
# without debug info (a device call carries at most 64 MiB, the working tree included)
find "$D" -maxdepth 2 -type f ! -path "$D/rt/*" -exec strip --strip-debug {} + 2>/dev/null || true
touch "$D/build.ninja"   # gpu-check: a carried build, do not configure
du -sh "$D"
