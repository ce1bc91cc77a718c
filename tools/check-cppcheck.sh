#!/usr/bin/env bash
# check-cppcheck.sh - cppcheck (warning, style, performance, portability) over the library's C
# sources as BUILDDIR compiles them; any finding fails. Suppress a false positive on its line
# with "// cppcheck-suppress <id>" and say why (docs/hardening.md).
#   tools/check-cppcheck.sh [BUILDDIR]   (default build)
set -euo pipefail
cd "$(dirname "$0")/.."
bdir="${1:-build}"
db="$bdir/lint"
n=$(tools/lib-compile-db.py "$bdir" "$db" | wc -l)
cppcheck --project="$db/compile_commands.json" --enable=warning,style,performance,portability \
    --inline-suppr --error-exitcode=1 -q -j "$(nproc)" --template='{file}:{line}: {severity} ({id}): {message}'
echo "cppcheck: clean ($n files)"
