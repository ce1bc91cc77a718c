#!/usr/bin/env bash
# check-tsan.sh - ThreadSanitizer build (CPU backend) running tests/test_tsan.c (many threads,
# each with its own context over one shared model) and tests/test_tsan_batch.c (threads running
# batches on contexts of their own); any race report fails.
#   tools/check-tsan.sh [BUILDDIR]   (default build-tsan)
set -euo pipefail
cd "$(dirname "$0")/.."
bdir="${1:-build-tsan}"
if [ ! -f "$bdir/build.ninja" ]; then
    # HCI_NO_CLONES: TSan instruments the target_clones resolvers, which run before its runtime
    # is up (a crash at load); the clones compute the same bits, so the plain version is tested
    meson setup "$bdir" -Dcuda=disabled -Db_sanitize=thread -Db_lundef=false -Dc_args=-DHCI_NO_CLONES >/dev/null
fi
ninja -C "$bdir" tests/test_tsan tests/test_tsan_batch >"$bdir/ninja.log" || { tail -n 30 "$bdir/ninja.log" >&2; exit 1; }
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:history_size=4"
meson test -C "$bdir" --no-rebuild --print-errorlogs tsan tsan_batch
