#!/usr/bin/env bash
# check-asan.sh - the library and the whole test suite built with AddressSanitizer +
# UndefinedBehaviorSanitizer (CPU backend: CUDA stays out of ASan) and run; any report fails.
#   tools/check-asan.sh [BUILDDIR]   (default build-asan)
set -euo pipefail
cd "$(dirname "$0")/.."
bdir="${1:-build-asan}"
if [ ! -f "$bdir/build.ninja" ]; then
    meson setup "$bdir" -Dcuda=disabled -Db_sanitize=address,undefined -Db_lundef=false \
        -Dc_args=-fno-sanitize-recover=all -Dcpp_args=-fno-sanitize-recover=all >/dev/null
fi
ninja -C "$bdir" >"$bdir/ninja.log" || { tail -n 30 "$bdir/ninja.log" >&2; exit 1; }
export ASAN_OPTIONS="detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
meson test -C "$bdir" --print-errorlogs
