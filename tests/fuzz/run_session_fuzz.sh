#!/bin/sh
# run_session_fuzz.sh - build the session-loader fuzz target (tests/fuzz/fuzz_session_load.c) with
# clang, libFuzzer, ASan and UBSan from the library's own sources, and run it for a bounded time
# on a copy of tests/fuzz/corpus/session/ (docs/fuzzing.md).
#   tests/fuzz/run_session_fuzz.sh [SECONDS [WORKDIR [extra libFuzzer flags...]]]
#       SECONDS defaults to 60, WORKDIR to $TMPDIR/hc-session-fuzz (the build is reused while no
#       source is newer). Exit status: 0 clean, 1 a crash or invariant failure (the input is left
#       in WORKDIR as crash-*), 77 no clang/libFuzzer here (a skip for meson).
#   SESSION_FUZZ_SEEDS=1 tests/fuzz/run_session_fuzz.sh   rewrites the seed corpus and exits.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-60}
work=${2:-${TMPDIR:-/tmp}/hc-session-fuzz}
[ $# -ge 2 ] && shift 2 || shift $#
command -v clang >/dev/null 2>&1 || { echo "run_session_fuzz: no clang; skipped" >&2; exit 77; }
mkdir -p "$work/corpus"
srcs="$(ls "$root"/lib/*.c "$root"/lib/util/*.c "$root"/lib/model/*.c "$root"/lib/cache/*.c "$root"/lib/ctx/*.c \
          "$root"/lib/engine/*.c "$root"/lib/backend/*.c "$root"/lib/backend/cpu/*.c "$root"/lib/session/*.c)"
# the registry's CUDA loader includes the build id that meson generates (CPU-only here: no module)
python3 "$root/tools/gen-build-id.py" fuzz "$work/hc_build_id.h" "$work/hc_build_id.h.d" "$root"
flags="-g -O1 -std=c11 -D_GNU_SOURCE -DHC_BUILDING -ffp-contract=off -I$root/include -I$root/lib -I$work"
libs="-lzstd -ljansson -lxxhash -lm -lpthread -ldl"
target="$root/tests/fuzz/fuzz_session_load.c"

if [ "${SESSION_FUZZ_SEEDS:-}" = 1 ]; then
    clang $flags -DSESSION_SEEDS $srcs "$target" $libs -o "$work/make_seeds"
    mkdir -p "$root/tests/fuzz/corpus/session"
    "$work/make_seeds" "$root/tests/fuzz/corpus/session"
    exit 0
fi

bin="$work/fuzz_session_load"
stale=1
if [ -x "$bin" ] && [ -z "$(find "$root/lib" "$root/include" "$target" -newer "$bin" -name '*.[ch]' | head -n 1)" ]; then
    stale=0
fi
if [ $stale = 1 ]; then
    echo "run_session_fuzz: building $bin" >&2
    if ! clang $flags -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined $srcs "$target" $libs \
            -o "$bin.new"; then
        echo "run_session_fuzz: clang cannot build a libFuzzer target here; skipped" >&2
        exit 77
    fi
    mv "$bin.new" "$bin"
fi
cp "$root"/tests/fuzz/corpus/session/* "$work/corpus/" 2>/dev/null || true
cd "$work"
# malloc_limit: a load allocates from validated sizes only, bounded by the context (max 4096 tokens)
exec "$bin" -max_total_time="$secs" -max_len=131072 -rss_limit_mb=2048 -malloc_limit_mb=256 -timeout=20 \
    -print_final_stats=1 "$@" "$work/corpus"
