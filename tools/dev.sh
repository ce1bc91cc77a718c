#!/usr/bin/env bash
# dev.sh - set up, build and run libhybridctx on a Debian machine (installs what it needs).
#   tools/dev.sh demo [demo options]  build, then run the CLI demo on the embedded tiny model
#   tools/dev.sh test                 build, then run every test suite (what CI runs)
#   tools/dev.sh build                only install the dependencies and build into build/
set -euo pipefail
cd "$(dirname "$0")/.."

DEPS=(gcc pkg-config meson ninja-build check libzstd-dev libjansson-dev libxxhash-dev)
# for the binding tests and examples (tools/check-bindings.sh, check-examples.sh, check-install.sh,
# check-wheel.sh: its venvs take meson-python, numpy, pytest and mypy from PyPI);
# Rust comes from the rustup toolchain in ~/.cargo/bin, its one crate (pkg-config, a build
# dependency of hybridctx-sys) from Debian's registry in /usr/share/cargo/registry
BINDING_DEPS=(golang-go python3-numpy python3-pytest python3-pip python3-venv bindgen librust-pkg-config-dev)
# for the hardening checks (run_hardening_checks, docs/hardening.md)
HARDENING_DEPS=(g++ clang-14 libclang-rt-14-dev clang-tidy-14 cppcheck valgrind abigail-tools doxygen)

install_deps() {
    local missing=()
    for p in "${DEPS[@]}" "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "dev.sh: installing ${missing[*]}" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

build() {
    # nvcc, where installed, enables the CUDA backend (the library still runs without a GPU)
    [ -d /usr/local/cuda/bin ] && export PATH="/usr/local/cuda/bin:$PATH"
    [ -f build/build.ninja ] || meson setup build >/dev/null
    ninja -C build
}

# ABI, sanitizers, valgrind, fuzzing, static analysis and the API reference (docs/hardening.md):
# every check runs, each one's time is printed, and any failure fails the whole step at the end.
run_hardening_checks() {
    local failed=() t0 c
    for c in "check-abi.sh build" "check-asan.sh" "check-tsan.sh" "check-valgrind.sh build" \
             "check-fuzz.sh ${HC_FUZZ_SECONDS:-60}" "check-cppcheck.sh build" "check-clang-tidy.sh build" \
             "check-apidoc.sh"; do
        t0=$SECONDS
        echo "=== hardening: tools/$c" >&2
        # shellcheck disable=SC2086 # $c is a script and its arguments
        tools/$c || failed+=("$c")
        echo "=== hardening: tools/$c: $((SECONDS - t0)) s" >&2
    done
    [ ${#failed[@]} -eq 0 ] || { echo "dev.sh: hardening checks failed: ${failed[*]}" >&2; return 1; }
}

cmd="${1:-}"
shift || true
case "$cmd" in
    build)
        install_deps
        build
        ;;
    demo)
        install_deps
        build >/dev/null
        exec build/tools/hybridctx demo "$@"
        ;;
    test)
        install_deps "${BINDING_DEPS[@]}" "${HARDENING_DEPS[@]}"
        build
        meson test -C build -v --print-errorlogs
        # --- bindings: Rust, Go and Python tests against this build ---
        tools/check-bindings.sh build
        tools/check-examples.sh build   # examples/ in C, Python, Rust and Go
        tools/check-install.sh          # install into a temporary prefix, use it through pkg-config
        tools/check-wheel.sh            # the Python package with the library inside: venvs, wheel, pytest
        # --- hardening: ABI, sanitizers, valgrind, fuzzing, static analysis ---
        run_hardening_checks
        ;;
    *)
        echo "usage: tools/dev.sh demo|test|build" >&2
        exit 2
        ;;
esac
