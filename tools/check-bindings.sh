#!/usr/bin/env bash
# check-bindings.sh - test the Rust, Go and Python bindings against one build of the library.
#   tools/check-bindings.sh [BUILDDIR]     (default: build; `tools/dev.sh test` runs it)
#
# Uses the uninstalled library in BUILDDIR (PKG_CONFIG_PATH=BUILDDIR/meson-uninstalled,
# LD_LIBRARY_PATH=BUILDDIR); needs go, cargo (~/.cargo/bin), /usr/bin/python3 with numpy and
# pytest, and Debian's librust-pkg-config-dev (tools/dev.sh test installs the Debian packages).
# No network registry is used: Rust's one crate comes from /usr/share/cargo/registry. (The Python
# package as users get it, with the library inside, is tools/check-wheel.sh's.)
# Steps, in an order that covers every pair of the cross-language session test (each language's
# test writes <lang>.hcs into HC_XLANG_DIR and loads every session there):
#   1. Python: the package's sources (no library inside: it loads BUILDDIR's), pytest, the
#              quick-start example
#   2. Go:     gofmt, go vet, go test (loads python's session), the example
#   3. Rust:   bindgen drift check, cargo test --offline (loads python's and go's), clippy, example,
#              DEP_HYBRIDCTX_INCLUDE for dependants, cargo package of both crates
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
for f in hc_ctx_save hc_ctx_load hc_ctx_save_buffer hc_ctx_load_buffer hc_ctx_set_metadata hc_backend_info_get; do
    nm -D --defined-only "$build/libhybridctx.so.0" | grep -q " T $f@" || missing="$missing $f"
done
[ -z "$missing" ] || die "libhybridctx in $build does not export$missing (declared in hybridctx.h): the bindings cannot link"

[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
PY=/usr/bin/python3
command -v go >/dev/null || die "go is not installed (apt-get install golang-go)"
command -v cargo >/dev/null || die "cargo is not installed (a rustup toolchain in ~/.cargo/bin is expected)"
compgen -G "/usr/share/cargo/registry/pkg-config-0.3.*" >/dev/null ||
    die "the pkg-config crate is not in /usr/share/cargo/registry (apt-get install librust-pkg-config-dev)"
"$PY" -c 'import numpy, pytest' 2>/dev/null ||
    die "$PY lacks numpy or pytest (apt-get install python3-numpy python3-pytest)"

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

step "python: the package's sources with the library of $build, pytest"
mkdir -p "$work/py"
cp -r bindings/python/hybridctx "$work/py/"
rm -rf "$work/py/hybridctx"/*.so* "$work/py/hybridctx/__pycache__"  # no library inside: $build's
export PYTHONPATH="$work/py"
"$PY" -c 'import hybridctx, sys; assert hybridctx.__file__.startswith(sys.argv[1]), hybridctx.__file__' "$work/py"
HC_XLANG_REQUIRE="" HC_EXPECT_LIBRARY_DIR="$build" "$PY" -m pytest -q -p no:cacheprovider bindings/python/tests
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

step "rust: bindings drift, cargo test --offline, clippy, example, cargo package"
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

    # a dependant's build script gets DEP_HYBRIDCTX_INCLUDE (hybridctx-sys's `cargo:include`)
    dep=target/dep-check  # inside bindings/rust, so that .cargo/config.toml applies
    rm -rf "$dep" && mkdir -p "$dep/src" && : >"$dep/src/lib.rs"
    printf '%s\n' '[package]' 'name = "dep-check"' 'version = "0.0.0"' 'edition = "2021"' \
        '[workspace]' '[dependencies]' 'hybridctx-sys = { path = "../../hybridctx-sys" }' >"$dep/Cargo.toml"
    printf '%s\n' 'fn main() {' \
        '    let inc = std::env::var_os("DEP_HYBRIDCTX_INCLUDE").expect("DEP_HYBRIDCTX_INCLUDE");' \
        '    let found = std::env::split_paths(&inc).any(|d| d.join("hybridctx.h").is_file());' \
        '    assert!(found, "no hybridctx.h in DEP_HYBRIDCTX_INCLUDE={inc:?}");' '}' >"$dep/build.rs"
    (cd "$dep" && cargo build --offline --quiet) || die "DEP_HYBRIDCTX_INCLUDE does not lead to hybridctx.h"
    echo "DEP_HYBRIDCTX_INCLUDE reaches dependants"

    # cargo package (offline, from the Debian crate registry of .cargo/config.toml): hybridctx-sys
    # first, packaged and verified (built from the .crate's contents alone). The safe crate's
    # path dependency on hybridctx-sys becomes a registry dependency once packaged, and the -sys
    # crate is on no registry this machine can reach (packaging both in one call would need a
    # remote registry for the overlay cargo builds): [patch] points it at the -sys package that
    # cargo just unpacked and verified, so the safe crate is verified too (no --no-verify),
    # against exactly what would be published. --allow-dirty: the check is about the content.
    cargo package --offline --quiet --allow-dirty -p hybridctx-sys
    sys_version="$(cargo pkgid -p hybridctx-sys)" && sys_version="${sys_version##*[@#]}"
    cargo package --offline --quiet --allow-dirty -p hybridctx \
        --config "patch.crates-io.hybridctx-sys.path=\"$PWD/target/package/hybridctx-sys-$sys_version\""
    for c in "hybridctx-sys-$sys_version" "hybridctx-$sys_version"; do
        files="$(tar tzf "target/package/$c.crate")"
        for f in LICENSE-APACHE LICENSE-MIT README.md; do
            grep -qx "$c/$f" <<<"$files" || die "$c.crate lacks $f"
        done
        echo "packaged and verified target/package/$c.crate"
    done
)

step "python: cross-language sessions (go, rust)"
HC_XLANG_REQUIRE="go rust" "$PY" -m pytest -q -p no:cacheprovider bindings/python/tests -k cross_language

step "all bindings passed ($((SECONDS - t0)) s); sessions checked: $(cd "$HC_XLANG_DIR" && echo *.hcs)"
