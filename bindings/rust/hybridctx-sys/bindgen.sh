#!/usr/bin/env bash
# Regenerate src/bindings.rs from include/hybridctx.h with the Debian `bindgen` CLI (0.60).
#   bindings/rust/hybridctx-sys/bindgen.sh            rewrite src/bindings.rs
#   bindings/rust/hybridctx-sys/bindgen.sh --stdout   print it (tools/check-bindings.sh diffs this)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"  # bindgen's rustfmt then reads bindings/rust/rustfmt.toml, wherever this is called from
root="$here/../../.."
out="$here/src/bindings.rs"
[ "${1:-}" = "--stdout" ] && out=/dev/stdout
bindgen "$root/include/hybridctx.h" \
    --allowlist-function 'hc_.*' --allowlist-type 'hc_.*' --allowlist-var 'HC_.*' \
    --blocklist-type '__u?int[0-9]+_t' --size_t-is-usize --translate-enum-integer-types \
    -- -I"$root/include" >"$out"
