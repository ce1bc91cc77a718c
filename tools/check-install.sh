#!/usr/bin/env bash
# check-install.sh - install libhybridctx into a temporary prefix and use it the way an
# application does: through pkg-config alone, with nothing from this checkout on the paths.
#   tools/check-install.sh [MESON SETUP OPTIONS...]    (`tools/dev.sh test` runs it)
#
#   1. meson setup a fresh build directory with --prefix=<tmp>/prefix (tests off), ninja,
#      meson install; the installed files are listed and the expected ones checked;
#   2. the C example examples/c/model_loop.c is compiled with
#        cc model_loop.c $(pkg-config --cflags --libs hybridctx) -Wl,-rpath,<libdir>
#      (PKG_CONFIG_PATH=<prefix's pkgconfig dir> only), linked against the installed library
#      (checked with ldd) and run;
#   3. the installed CLI runs: <prefix>/bin/hybridctx --help and a short demo;
#   4. the Rust and Go examples build against the installed library through the same
#      PKG_CONFIG_PATH (the -sys crate's pkg-config probe, cgo's #cgo pkg-config) and must print
#      what the C example printed.
# Needs the build dependencies (tools/dev.sh build installs them); step 4 needs cargo and go
# (tools/dev.sh test installs them), skipped with a note where missing.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== check-install: %s\n' "$*"; }
die() { echo "check-install: $*" >&2; exit 1; }

[ -d /usr/local/cuda/bin ] && export PATH="/usr/local/cuda/bin:$PATH"
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
prefix="$work/prefix"
unset PKG_CONFIG_PATH LD_LIBRARY_PATH LIBRARY_PATH CPATH C_INCLUDE_PATH
t0=$SECONDS

step "meson setup --prefix=$prefix${*:+ $*}, build, install"
meson setup "$work/build" --prefix="$prefix" -Dtests=disabled "$@" >"$work/setup.log" ||
    { cat "$work/setup.log"; die "meson setup failed"; }
ninja -C "$work/build" >"$work/ninja.log" || { tail -50 "$work/ninja.log"; die "the build failed"; }
meson install -C "$work/build" --quiet >/dev/null
(cd "$prefix" && find . -type f -o -type l | sort | sed 's|^\./|  |')
pc="$(find "$prefix" -name hybridctx.pc)"
[ -n "$pc" ] || die "no hybridctx.pc installed"
for f in bin/hybridctx include/hybridctx.h include/hybridctx_experimental.h; do
    [ -e "$prefix/$f" ] || die "$f was not installed"
done

step "pkg-config alone: compile and run examples/c/model_loop.c"
PKG_CONFIG_PATH="$(dirname "$pc")"
export PKG_CONFIG_PATH
version="$(pkg-config --modversion hybridctx)"
libdir="$(pkg-config --variable=libdir hybridctx)"
echo "hybridctx $version: pkg-config --cflags --libs hybridctx = $(pkg-config --cflags --libs hybridctx)"
[ "$version" = "$(meson introspect --projectinfo "$work/build" | /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["version"])')" ] ||
    die "hybridctx.pc says version $version"
case "$libdir" in "$prefix"/*) ;; *) die "hybridctx.pc names libdir $libdir, outside $prefix" ;; esac
for f in libhybridctx.so libhybridctx.so.0; do [ -e "$libdir/$f" ] || die "no $f in $libdir"; done
cp examples/c/model_loop.c "$work/model_loop.c"  # compiled away from the checkout's headers
# shellcheck disable=SC2046 # pkg-config's output is a list of flags
(cd "$work" && cc -std=c11 -O2 -Wall -Wextra -Werror model_loop.c $(pkg-config --cflags --libs hybridctx) \
    -Wl,-rpath,"$libdir" -o model_loop)
deps="$(ldd "$work/model_loop")"
grep -q "libhybridctx.so.0 => $libdir/libhybridctx.so.0" <<<"$deps" ||
    { echo "$deps"; die "model_loop does not load the installed libhybridctx"; }
"$work/model_loop" | tee "$work/c.out"

step "the CUDA module beside the installed library"
if [ -e "$work/build/libhybridctx-cuda.so.0" ]; then
    [ -e "$libdir/libhybridctx-cuda.so.0" ] || die "the build has the CUDA module, the install does not"
    cat >"$work/backend.c" <<'C'
#include <hybridctx.h>
#include <stdio.h>
int main(void)
{
    hc_backend_info i = {.struct_size = sizeof i};
    if (hc_backend_info_get(HC_BACKEND_CUDA, 0, &i) != HC_OK) return 2;
    printf("cuda backend: state %d, %d devices: %s\n", i.state, i.n_devices, i.detail);
    /* found and loaded: usable, or no device/driver on this machine; never missing or foreign */
    return i.state == HC_BACKEND_USABLE || i.state == HC_BACKEND_NO_DEVICE ? 0 : 1;
}
C
    # shellcheck disable=SC2046 # pkg-config's output is a list of flags
    (cd "$work" && cc -std=c11 backend.c $(pkg-config --cflags --libs hybridctx) -Wl,-rpath,"$libdir" -o backend)
    "$work/backend" || die "the installed library does not find its CUDA module"
else
    echo "a build without CUDA: no module to install"
fi

step "the installed CLI"
export LD_LIBRARY_PATH="$libdir"  # installed executables carry no rpath
"$prefix/bin/hybridctx" --help >"$work/help.txt" || { cat "$work/help.txt"; die "hybridctx --help failed"; }
grep -q "usage: hybridctx COMMAND" "$work/help.txt" || die "unexpected hybridctx --help: $(cat "$work/help.txt")"
"$prefix/bin/hybridctx" demo --tokens 300 --decode 2 --backend cpu

step "Rust and Go examples against the installed library"
if command -v cargo >/dev/null; then
    (cd examples/rust && cargo run --offline --quiet) >"$work/rust.out"
    diff -u "$work/c.out" "$work/rust.out" || die "the Rust example printed other numbers than the C one"
    echo "rust: same output as C"
else
    echo "cargo not installed: Rust example skipped"
fi
if command -v go >/dev/null; then
    (cd examples/go && GOPROXY=off GOFLAGS=-buildvcs=false GOTOOLCHAIN=local GOCACHE="$work/gocache" go run .) >"$work/go.out"
    diff -u "$work/c.out" "$work/go.out" || die "the Go example printed other numbers than the C one"
    echo "go: same output as C"
else
    echo "go not installed: Go example skipped"
fi

step "install checked ($((SECONDS - t0)) s)"
