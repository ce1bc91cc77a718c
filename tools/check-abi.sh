#!/usr/bin/env bash
# check-abi.sh - the ABI gate (docs/hardening.md): HC_API on every public prototype, the exported
# symbols equal tests/abi/symbols.txt and the public headers' functions, no status or other
# HC_* constant removed or renumbered (tests/abi/constants.txt), and abidiff against the
# committed abidw baseline finds nothing removed or changed (additions pass; hc_x_* are exempt).
#   tools/check-abi.sh [BUILDDIR]            check the library in BUILDDIR (default build)
#   tools/check-abi.sh --update [BUILDDIR]   rewrite the three files from BUILDDIR's library,
#                                            after an intended change (review the git diff)
set -euo pipefail
cd "$(dirname "$0")/.."
update=0
[ "${1:-}" = "--update" ] && { update=1; shift; }
bdir="${1:-build}"
so=$(find "$bdir" -maxdepth 1 -name 'libhybridctx.so.*.*.*' -type f | head -n 1)
[ -n "$so" ] || { echo "check-abi: no libhybridctx.so.X.Y.Z in $bdir" >&2; exit 2; }
abi=tests/abi
headers=(include/hybridctx.h include/hybridctx_experimental.h)
export LC_ALL=C
fail=0
err() { echo "check-abi: $*" >&2; fail=1; }

# 1. A prototype is a line at column 0 that names hc_...( outside a comment and is not a typedef,
#    macro or static inline; continuation lines are indented, so each prototype is checked once.
missing=$(awk '{ code = $0; gsub(/\/\*.*\*\/|\/\/.*/, "", code) }
               code ~ /^[A-Za-z_].*hc_[a-z0-9_]+ *\(/ && code !~ /^(HC_API |typedef |static |#)/ {
                   print FILENAME ":" FNR ": " $0 }' "${headers[@]}")
[ -z "$missing" ] || err "public prototypes without HC_API:"$'\n'"$missing"

# 2. Exported symbols, with their version nodes, exactly as committed.
exported=$(nm -D --defined-only --format=posix "$so" | awk '{print $1}' | sort)
declared=$(grep -hoE '^HC_API [^(]*\bhc_[a-z0-9_]+ *\(' "${headers[@]}" | grep -oE 'hc_[a-z0-9_]+ *\($' |
           tr -d ' (' | sort -u)
# 3. HC_* enumerators with their values (the status codes and every other pinned constant).
constants=$(grep -hoE '\bHC_[A-Z0-9_]+ *= *-?[0-9]+' "${headers[@]}" | tr -d ' ' | sort -u)

if [ $update = 1 ]; then
    echo "$exported" >"$abi/symbols.txt"
    echo "$constants" >"$abi/constants.txt"
    abidw --headers-dir include --drop-private-types --no-corpus-path --no-comp-dir-path --type-id-style hash \
        --out-file "$abi/libhybridctx.abi.xml" "$so"
    echo "check-abi: updated $abi/symbols.txt, constants.txt and libhybridctx.abi.xml from $so"
    exit $fail
fi

diff -u "$abi/symbols.txt" - <<<"$exported" >&2 || err "exported symbols differ from $abi/symbols.txt (-committed +now)"
bad=$(grep -vE '^(hc_[a-z0-9_]+@@HC_[A-Z0-9_]+|HC_[A-Z0-9_]+)$' <<<"$exported" || true)
[ -z "$bad" ] || err "exported symbols outside the hc_ namespace or unversioned:"$'\n'"$bad"
names=$(grep -oE '^hc_[a-z0-9_]+' <<<"$exported" | sort -u)
only=$(comm -13 <(echo "$declared") <(echo "$names"))
[ -z "$only" ] || err "exported but not declared in a public header:"$'\n'"$only"
only=$(comm -23 <(echo "$declared") <(echo "$names"))
[ -z "$only" ] || err "declared in a public header but not exported (not implemented, or hidden):"$'\n'"$only"
gone=$(comm -23 "$abi/constants.txt" <(echo "$constants"))
[ -z "$gone" ] || err "constants removed or renumbered (pinned forever):"$'\n'"$gone"

# 4. abidiff: rc 0 = compatible; bit 4 = change, bit 8 = incompatible change (removal).
rc=0
abidiff --no-added-syms --suppressions "$abi/abidiff.supp" --headers-dir2 include \
    "$abi/libhybridctx.abi.xml" "$so" >"$bdir/abidiff.txt" 2>&1 || rc=$?
if [ $rc -ne 0 ]; then
    cat "$bdir/abidiff.txt" >&2
    err "abidiff reports an ABI change (rc $rc) against $abi/libhybridctx.abi.xml"
fi
[ $fail = 0 ] && echo "check-abi: ok ($(grep -c . <<<"$names") functions, $(grep -c . <<<"$constants") constants, abidiff clean)"
exit $fail
