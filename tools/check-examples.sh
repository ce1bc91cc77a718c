#!/usr/bin/env bash
# check-examples.sh - build and run the programs in examples/ against one build of the library.
#   tools/check-examples.sh [BUILDDIR]     (default: build; `tools/dev.sh test` runs it)
#
# Uses the uninstalled library in BUILDDIR, like tools/check-bindings.sh (PKG_CONFIG_PATH=
# BUILDDIR/meson-uninstalled, LD_LIBRARY_PATH=BUILDDIR); needs cc, /usr/bin/python3 with numpy,
# go and cargo (~/.cargo/bin). No package registry is used.
#   1. C:      examples/c/model_loop.c, cc -Wall -Wextra -Werror, flags from pkg-config; and
#              examples/c/batch_decode.c (exit 0 only when batched calls equal separate ones)
#   2. Python: examples/python/model_loop.py (the package from bindings/python)
#   3. Rust:   examples/rust (its own crate, hybridctx by path): fmt, clippy, run
#   4. Go:     examples/go (its own module, replace directive): gofmt, vet, run
#   5. Go:     the commands bindings/go/README.md gives for another module (go mod init, go mod
#              edit -require -replace, go run), run as written in a new module outside the checkout
# Every example exits non-zero unless the restored context decodes bitwise like the original,
# and the four must print the same lines, the ones examples/README.md shows.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

step() { printf '\n=== check-examples: %s\n' "$*"; }
die() { echo "check-examples: $*" >&2; exit 1; }

build="$(cd "${1:-build}" 2>/dev/null && pwd)" || die "no build directory ${1:-build} (run tools/dev.sh build)"
if [ ! -f "$build/meson-uninstalled/hybridctx-uninstalled.pc" ] || [ ! -e "$build/libhybridctx.so.0" ]; then
    die "$build holds no meson build of libhybridctx (run tools/dev.sh build)"
fi
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
PY=/usr/bin/python3
for tool in cc go cargo; do command -v "$tool" >/dev/null || die "$tool is not installed (tools/dev.sh test installs what is needed)"; done
"$PY" -c 'import numpy' 2>/dev/null || die "$PY lacks numpy (apt-get install python3-numpy)"
compgen -G "/usr/share/cargo/registry/pkg-config-0.3.*" >/dev/null ||
    die "the pkg-config crate is not in /usr/share/cargo/registry (apt-get install librust-pkg-config-dev)"

export PKG_CONFIG_PATH="$build/meson-uninstalled${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export LD_LIBRARY_PATH="$build${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export GOPROXY=off GOFLAGS=-buildvcs=false GOTOOLCHAIN=local CARGO_NET_OFFLINE=true PYTHONDONTWRITEBYTECODE=1
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export GOCACHE="$work/gocache"  # fresh: the link flags of a cached cgo build can go stale
t0=$SECONDS

step "c: examples/c/model_loop.c"
# shellcheck disable=SC2046 # pkg-config's output is a list of flags
cc -std=c11 -O2 -Wall -Wextra -Werror examples/c/model_loop.c $(pkg-config --cflags --libs hybridctx) -o "$work/model_loop_c"
"$work/model_loop_c" | tee "$work/c.out"

# examples/README.md shows this output
# shellcheck disable=SC2016 # the backquotes are a Markdown fence
sed -n '/^Output (the same for all four):/,$p' examples/README.md | sed -n '/^```$/,/^```$/p' | sed '1d;$d' >"$work/readme.out"
same_as_c() {  # LANG FILE
    diff -u "$work/c.out" "$2" || die "$1 shows other lines than the C example printed"
    echo "$1: same output as C"
}

same_as_c examples/README.md "$work/readme.out"

step "c: examples/c/batch_decode.c (forks, ragged and batched decode; checks itself)"
# shellcheck disable=SC2046 # pkg-config's output is a list of flags
cc -std=c11 -O2 -Wall -Wextra -Werror examples/c/batch_decode.c $(pkg-config --cflags --libs hybridctx) -o "$work/batch_decode_c"
"$work/batch_decode_c"

step "python: examples/python/model_loop.py"
PYTHONPATH="$root/bindings/python" "$PY" examples/python/model_loop.py >"$work/py.out"
same_as_c python "$work/py.out"

step "rust: examples/rust (fmt, clippy, run)"
(
    cd examples/rust
    if cargo fmt --version >/dev/null 2>&1; then cargo fmt --check; fi
    if cargo clippy --version >/dev/null 2>&1; then cargo clippy --offline --quiet -- -D warnings; fi
    cargo run --offline --quiet >"$work/rust.out"
)
same_as_c rust "$work/rust.out"

step "go: examples/go (gofmt, vet, run)"
(
    cd examples/go
    unformatted="$(gofmt -l .)"
    [ -z "$unformatted" ] || die "gofmt would change: $unformatted"
    go vet ./...
    go run . >"$work/go.out"
)
same_as_c go "$work/go.out"

step "go: bindings/go/README.md's replace directive, from a new module outside the checkout"
mkdir "$work/app"
cat >"$work/app/main.go" <<'EOF'
package main

import (
	"fmt"
	"log"

	"libhybridctx.org/go/hybridctx"
)

func main() {
	m, err := hybridctx.NewRandomModel("tiny", 42, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	fmt.Printf("libhybridctx %s from another module: %d layers\n", hybridctx.Version(), m.NLayers())
}
EOF
# the README's block, run as it stands with /path/to/libhybridctx = this checkout
sed -n '/^<!-- tools\/check-examples.sh runs this block/,/^```$/p' bindings/go/README.md |
    sed -e '1,2d' -e '$d' -e "s|/path/to/libhybridctx|$root|g" >"$work/app/readme.sh"
grep -q "go mod edit" "$work/app/readme.sh" || die "bindings/go/README.md lost its block for other modules"
cat "$work/app/readme.sh"
(cd "$work/app" && bash -euo pipefail readme.sh)

step "all examples passed ($((SECONDS - t0)) s)"
