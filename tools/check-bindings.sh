#!/usr/bin/env bash
# check-bindings.sh - test the Rust, Go and Python bindings against one build of the library.
#   tools/check-bindings.sh [BUILDDIR]     (default: build; `tools/dev.sh test` runs it)
#
# Uses the uninstalled library in BUILDDIR (PKG_CONFIG_PATH=BUILDDIR/meson-uninstalled,
# LD_LIBRARY_PATH=BUILDDIR); needs go, cargo (~/.cargo/bin), /usr/bin/python3 with numpy, pytest,
# pip and setuptools (tools/dev.sh test installs the Debian packages). No package registry is used.
# Steps, in an order that covers every pair of the cross-language session test (each language's
# test writes <lang>.hcs into HC_XLANG_DIR and loads every session there):
#   1. Python: pip install into a temporary directory, pytest, the quick-start example
#   2. Go:     gofmt, go vet, go test (loads python's session), the example
#   3. Rust:   bindgen drift check, cargo test --offline (loads python's and go's), clippy, example
#   4. Python: the cross-language test again (loads go's and rust's)
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

step() { printf '\n=== check-bindings: %s\n' "$*"; }
die() { echo "check-bindings: $*" >&2; exit 1; }

build="$(cd "${1:-build}" 2>/dev/null && pwd)" || die "no build directory ${1:-build} (run tools/dev.sh build)"
if [ ! -f "$build/meson-uninstalled/hybridctx-uninstalled.pc" ] || [ ! -e "$build/libhybridctx.so.0" ]; then
    die "$build holds no meson build of libhybridctx (run tools/dev.sh build)"
fi
missing=""
for f in hc_ctx_save hc_ctx_load hc_ctx_save_buffer hc_ctx_load_buffer hc_ctx_set_metadata; do
    nm -D --defined-only "$build/libhybridctx.so.0" | grep -q " T $f@" || missing="$missing $f"
done
[ -z "$missing" ] || die "libhybridctx in $build does not export$missing (declared in hybridctx.h): the bindings cannot link"

[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
PY=/usr/bin/python3
command -v go >/dev/null || die "go is not installed (apt-get install golang-go)"
command -v cargo >/dev/null || die "cargo is not installed (a rustup toolchain in ~/.cargo/bin is expected)"
"$PY" -c 'import numpy, pytest, setuptools' 2>/dev/null ||
    die "$PY lacks numpy, pytest or setuptools (apt-get install python3-numpy python3-pytest python3-setuptools)"

export PKG_CONFIG_PATH="$build/meson-uninstalled${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export LD_LIBRARY_PATH="$build${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export HC_TEST_DATA="$root/tests/data"
export GOPROXY=off GOFLAGS=-buildvcs=false GOTOOLCHAIN=local CARGO_NET_OFFLINE=true PYTHONDONTWRITEBYTECODE=1
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export HC_XLANG_DIR="$work/sessions"
export GOCACHE="$work/gocache"  # fresh: the link flags of a cached cgo build can go stale
mkdir -p "$HC_XLANG_DIR"
t0=$SECONDS

step "library $(pkg-config --modversion hybridctx) from $build"

step "python: pip install bindings/python (offline), pytest"
cp -r bindings/python "$work/pysrc"
rm -rf "$work/pysrc/build" "$work/pysrc"/*.egg-info
"$PY" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-build-isolation --no-deps --no-index --target "$work/py" "$work/pysrc" ||
    die "pip install bindings/python failed"
export PYTHONPATH="$work/py"
"$PY" -c 'import hybridctx, sys; assert hybridctx.__file__.startswith(sys.argv[1]), hybridctx.__file__' "$work/py"
HC_XLANG_REQUIRE="" "$PY" -m pytest -q -p no:cacheprovider bindings/python/tests
"$PY" bindings/python/examples/quickstart.py "$work/quick-py.hcs"

step "go: gofmt, vet, test, example"
(
    cd bindings/go
    unformatted="$(gofmt -l .)"
    [ -z "$unformatted" ] || die "gofmt would change: $unformatted"
    go vet ./...
    HC_XLANG_REQUIRE="python" GODEBUG=cgocheck=2 go test -count=1 ./...
    go run ./examples/quickstart "$work/quick-go.hcs"
)

step "rust: bindings drift, cargo test --offline, clippy, example"
(
    cd bindings/rust
    if command -v bindgen >/dev/null && command -v rustfmt >/dev/null; then
        hybridctx-sys/bindgen.sh --stdout | diff -u hybridctx-sys/src/bindings.rs - >"$work/bindgen.diff" ||
            { cat "$work/bindgen.diff"; die "hybridctx-sys/src/bindings.rs is stale: run bindings/rust/hybridctx-sys/bindgen.sh"; }
    else
        echo "bindgen or rustfmt not installed: drift check of hybridctx-sys/src/bindings.rs skipped"
    fi
    if cargo fmt --version >/dev/null 2>&1; then cargo fmt --check; fi
    HC_XLANG_REQUIRE="python go" cargo test --offline --quiet
    if cargo clippy --version >/dev/null 2>&1; then
        cargo clippy --offline --quiet --all-targets -- -D warnings
    fi
    cargo run --offline --quiet --example quickstart "$work/quick-rs.hcs"
)

step "python: cross-language sessions (go, rust)"
HC_XLANG_REQUIRE="go rust" "$PY" -m pytest -q -p no:cacheprovider bindings/python/tests -k cross_language

step "all bindings passed ($((SECONDS - t0)) s); sessions checked: $(cd "$HC_XLANG_DIR" && echo *.hcs)"
