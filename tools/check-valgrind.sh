#!/usr/bin/env bash
# check-valgrind.sh - valgrind memcheck over the CPU test suites that finish in a few minutes
# under it (it runs code about 30x slower); any error or definite leak fails. The engine, golden
# and long session suites run heavy computations and are covered by the ASan build instead
# (docs/hardening.md). Tests that honour HC_TEST_QUICK=1 run a smaller case.
#   tools/check-valgrind.sh [BUILDDIR]   (default build; a CUDA build loads the CUDA runtime,
#                                          hence the suppression file)
set -euo pipefail
cd "$(dirname "$0")/.."
bdir="${1:-build}"
want=" numerics loader limits header_c tsan session_golden session_cli "
ninja -C "$bdir" >"$bdir/ninja-valgrind.log" || { tail -n 30 "$bdir/ninja-valgrind.log" >&2; exit 1; }
suites=()
for t in $(meson test -C "$bdir" --no-rebuild --list 2>/dev/null); do
    case "$want" in *" $t "*) suites+=("$t") ;; esac
    case "$t" in fuzz-replay-*) suites+=("$t") ;; esac
done
HC_TEST_QUICK=1 meson test -C "$bdir" --no-rebuild --print-errorlogs --timeout-multiplier=4 \
    --wrap="valgrind -q --error-exitcode=9 --leak-check=full --errors-for-leak-kinds=definite --suppressions=$PWD/tests/valgrind-cuda.supp" \
    "${suites[@]}"
