#!/usr/bin/env bash
# check-clang-tidy.sh - clang-tidy-14 with the committed .clang-tidy over the library's C sources
# as BUILDDIR compiles them; any finding fails (WarningsAsErrors). Suppress a false positive on
# its line with "// NOLINT(<check>): why" (docs/hardening.md).
#   tools/check-clang-tidy.sh [BUILDDIR]   (default build)
set -euo pipefail
cd "$(dirname "$0")/.."
bdir="${1:-build}"
db="$bdir/lint"
mapfile -t files < <(tools/lib-compile-db.py "$bdir" "$db")
# one process per file, as many at a time as there are cores; gcc-only flags are not errors
printf '%s\n' "${files[@]}" | xargs -P "$(nproc)" -n 1 clang-tidy-14 -p "$db" --quiet \
    --extra-arg=-Wno-unknown-warning-option
echo "clang-tidy: clean (${#files[@]} files)"
