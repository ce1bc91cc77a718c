#!/usr/bin/env bash
# check-fuzz.sh - build every tests/fuzz/fuzz_*.c as a libFuzzer target (clang, ASan + UBSan)
# and run each for a bounded time from its seed corpus tests/fuzz/corpus/<name>/ (fuzz_<name>.c).
# Fails on any crash, leak, timeout or out-of-memory; the reproducer is left in build-fuzz/artifacts/.
#   tools/check-fuzz.sh [SECONDS [TARGET...]]   SECONDS per target (default 60; 0 = no limit)
#   FUZZ_FLAGS='-runs=10000000' tools/check-fuzz.sh 0 config     extra libFuzzer flags
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
shift || true
out="${FUZZ_OUT:-build-fuzz}"   # FUZZ_OUT: another build dir, e.g. for a long run beside CI runs
CLANG="${CLANG:-clang-14}"

# The library, CPU backend only, instrumented for coverage and sanitizers (werror off: clang may
# warn where gcc does not; the static checks judge warnings).
if [ ! -f "$out/build.ninja" ]; then
    CC="$CLANG" meson setup "$out" -Dcuda=disabled -Dtests=disabled -Dwerror=false -Db_lundef=false \
        -Db_sanitize=address,undefined -Dc_args='-fsanitize=fuzzer-no-link -fno-sanitize-recover=all' \
        >/dev/null
fi
ninja -C "$out" libhybridctx_internal.a >"$out/ninja.log" || { tail -n 30 "$out/ninja.log" >&2; exit 1; }
read -ra libs <<<"$(pkg-config --libs libzstd jansson libxxhash)"

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for f in tests/fuzz/fuzz_*.c; do n=$(basename "$f" .c); targets+=("${n#fuzz_}"); done
fi

fail=0
for name in "${targets[@]}"; do
    src="tests/fuzz/fuzz_$name.c"
    bin="$out/fuzz_$name"
    "$CLANG" -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -D_GNU_SOURCE \
        -ffp-contract=off -Iinclude -Ilib "$src" "$out/libhybridctx_internal.a" "${libs[@]}" -lm -lpthread -o "$bin"
    seeds=()
    for d in "tests/fuzz/corpus/$name" "tests/fuzz/corpus/fuzz_$name"; do [ -d "$d" ] && seeds+=("$d"); done
    work="$out/corpus/$name"
    mkdir -p "$work" "$out/artifacts"
    log="$out/fuzz_$name.log"
    t0=$SECONDS
    # new inputs go to the first (scratch) corpus dir, never into the committed seeds
    # shellcheck disable=SC2086
    if "$bin" -max_total_time="$secs" -timeout=25 -rss_limit_mb=2048 -malloc_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$out/artifacts/${name}-" ${FUZZ_FLAGS:-} \
        "$work" "${seeds[@]}" >"$log" 2>&1; then
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        echo "fuzz $name: ok, ${execs:-?} executions in $((SECONDS - t0))s (corpus ${seeds[*]:-none})"
    else
        echo "fuzz $name: FAILED (log $log, reproducer in $out/artifacts/)" >&2
        tail -n 40 "$log" >&2
        fail=1
    fi
done
exit $fail
