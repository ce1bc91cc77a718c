#!/usr/bin/env bash
# check-valgrind.sh - valgrind memcheck over the CPU test suites that finish in minutes under
# it (about 30x slower than native); any error or definite leak fails. The engine and golden
# suites run long computations and are covered by the ASan build instead (docs/hardening.md).
#   tools/check-valgrind.sh [BUILDDIR]   (default build; a CUDA build loads the CUDA runtime,
#                                          hence the suppression file)
set -euo pipefail
cd "$(dirname "$0")/.."
bdir="${1:-build}"
suites=(numerics loader limits header_c tsan)
for t in $(meson test -C "$bdir" --list 2>/dev/null); do
    case "$t" in fuzz-replay-*) suites+=("$t") ;; esac
done
ninja -C "$bdir" >/dev/null
HC_TEST_QUICK=1 meson test -C "$bdir" --no-rebuild --print-errorlogs --timeout-multiplier=4 \
    --wrap="valgrind -q --error-exitcode=9 --leak-check=full --errors-for-leak-kinds=definite --suppressions=$PWD/tests/valgrind-cuda.supp" \
    "${suites[@]}"
