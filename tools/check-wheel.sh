#!/usr/bin/env bash
# check-wheel.sh - build the Python package hybridctx, with libhybridctx inside it, and use it as
# a user does: in fresh virtual environments, from outside this checkout, with no environment
# variable pointing at a library.
#   tools/check-wheel.sh [PYTHON]     (default python3; `tools/dev.sh test` runs it)
#
#   1. pip install bindings/python into a fresh venv (meson-python, meson and numpy from PyPI);
#      in a clean environment (env -i: no LD_LIBRARY_PATH, PYTHONPATH or HYBRIDCTX_*; cwd a
#      temporary directory): import hybridctx, which must load the library inside the package
#      (and the CUDA module beside it, where built), hybridctx.backend_info(), and the quick-start
#      example, whose output must be the one in bindings/python/README.md;
#   2. python -m build --wheel bindings/python; the wheel is retagged py3-none-<platform> (it
#      holds no extension module: the libraries are loaded with ctypes, by any Python 3), its
#      files are listed and checked (the core library, needing no CUDA library; the CUDA module
#      exactly where nvcc is on PATH; py.typed; the licences; no RPATH into the build tree);
#      python -m build --sdist: the source distribution holds the library's sources (made from
#      git HEAD by bindings/python/dist-lib.py), its list is checked;
#   3. the wheel into a second fresh venv, with pytest and mypy: pytest of bindings/python/tests
#      against it (HC_EXPECT_LIBRARY_DIR: the package's directory), and mypy --strict on a program
#      that uses the package (py.typed: the types are seen, and a wrong one is refused).
# Needs the library's build dependencies (tools/dev.sh build installs them), the Python's venv
# module (Debian: python3-venv) and network access to PyPI. Where nvcc is installed
# (/usr/local/cuda/bin is put on PATH), the packages hold the CUDA module: the build takes longer.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

step() { printf '\n=== check-wheel: %s\n' "$*"; }
die() { echo "check-wheel: $*" >&2; exit 1; }

PY="${1:-python3}"
command -v "$PY" >/dev/null || die "no $PY"
[ -d /usr/local/cuda/bin ] && export PATH="/usr/local/cuda/bin:$PATH"
cuda=no
command -v nvcc >/dev/null && cuda=yes
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/run" "$work/home"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
unset LD_LIBRARY_PATH PYTHONPATH HYBRIDCTX_LIBRARY HYBRIDCTX_CUDA_MODULE
t0=$SECONDS

# clean VENV CMD...: CMD in $work/run with an empty environment but for PATH (the venv's, then
# the system's: a C compiler for the test of struct layouts), HOME and the locale
clean() {
    local venv="$1"
    shift
    (cd "$work/run" && env -i PATH="$venv/bin:/usr/bin:/bin" HOME="$work/home" LANG=C.UTF-8 "$@")
}
# the real path of the loaded libhybridctx*.so objects after CODE, one a line
maps='import sys; exec(sys.argv[1]); print("\n".join(sorted({l.split(None, 5)[-1].strip() for l in open("/proc/self/maps") if "/libhybridctx" in l})))'

step "$("$PY" --version) ($PY): fresh venv, pip install bindings/python (CUDA module: $cuda)"
"$PY" -m venv "$work/venv1"
"$work/venv1/bin/python" -m pip install --quiet "$root/bindings/python" >"$work/pip1.log" 2>&1 ||
    { tail -40 "$work/pip1.log"; die "pip install bindings/python failed"; }
pkg1="$(clean "$work/venv1" python -c 'import os, hybridctx; print(os.path.dirname(os.path.realpath(hybridctx.__file__)))')"
case "$pkg1" in "$(realpath "$work/venv1")"/*) ;; *) die "hybridctx imported from $pkg1, not from the venv" ;; esac
ls -l "$pkg1"

step "import from $work/run, no LD_LIBRARY_PATH: hybridctx.backend_info(), the libraries it loaded"
clean "$work/venv1" python -c "$maps" 'import hybridctx
print("hybridctx", hybridctx.__version__, "library", hybridctx.version())
for b in ("auto", "cpu", "cuda"):
    print(hybridctx.backend_info(b))' | tee "$work/import.out"
grep -qx "$pkg1/libhybridctx.so.0" "$work/import.out" || die "the library inside the package was not loaded"
if [ $cuda = yes ]; then
    # the module is found beside the core (loaded: usable, or no GPU here; never missing)
    grep -qx "$pkg1/libhybridctx-cuda.so.0" "$work/import.out" || die "the CUDA module inside the package was not loaded"
fi
[ "$(grep -c "^/.*/libhybridctx" "$work/import.out")" = "$([ $cuda = yes ] && echo 2 || echo 1)" ] ||
    die "a library from outside the package was loaded"

step "the quick-start example (its output must be bindings/python/README.md's)"
clean "$work/venv1" python "$root/bindings/python/examples/quickstart.py" | tee "$work/quick.out"
# the lines of the fenced block after "Output (`python3 examples/quickstart.py`):"
awk '/^Output \(`python3 examples\/quickstart.py`\):/ { on = 1; next }
     on && /^```/ { if (on == 2) exit; on = 2; next }
     on == 2' bindings/python/README.md >"$work/quick.want"
[ -s "$work/quick.want" ] || die "no quick-start output found in bindings/python/README.md"
diff -u "$work/quick.want" "$work/quick.out" || die "the quick-start example printed other lines than README.md"

step "python -m build --wheel bindings/python"
"$PY" -m venv "$work/buildenv"
"$work/buildenv/bin/python" -m pip install --quiet build wheel
"$work/buildenv/bin/python" -m build --wheel --outdir "$work/dist" "$root/bindings/python" >"$work/build.log" 2>&1 ||
    { tail -40 "$work/build.log"; die "python -m build --wheel failed"; }
"$work/buildenv/bin/python" -m wheel tags --remove --python-tag py3 --abi-tag none "$work"/dist/hybridctx-*.whl >/dev/null
wheel="$(echo "$work"/dist/hybridctx-*-py3-none-*.whl)"
[ -f "$wheel" ] || die "no py3-none wheel in $(ls "$work/dist")"
echo "$(basename "$wheel"):"
"$work/buildenv/bin/python" - "$wheel" "$cuda" "$work/unpacked" <<'PY'
import os, subprocess, sys, zipfile
wheel, cuda, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z:
    for i in z.infolist():
        print(f"  {i.file_size:>9}  {i.filename}")
    names = set(z.namelist())
    z.extractall(out)
want = {"hybridctx/__init__.py", "hybridctx/_capi.py", "hybridctx/_devarray.py", "hybridctx/py.typed", "hybridctx/libhybridctx.so.0"}
if cuda == "yes":
    want.add("hybridctx/libhybridctx-cuda.so.0")
elif "hybridctx/libhybridctx-cuda.so.0" in names:
    sys.exit("check-wheel: the wheel holds a CUDA module, but nvcc is not on PATH")
info = [n for n in names if ".dist-info/" in n]
missing = sorted(want - names) + [f for f in ("LICENSE-MIT", "LICENSE-APACHE")
                                  if not any(n.endswith("/licenses/" + f) for n in info)]
if missing:
    sys.exit(f"check-wheel: the wheel lacks {' '.join(missing)}")
extra = sorted(n for n in names - want if not n.startswith("hybridctx/libhybridctx") and n not in info)
if extra:
    sys.exit(f"check-wheel: unexpected files in the wheel: {' '.join(extra)}")
for so in sorted(n for n in names if n.endswith((".so.0"))):
    dyn = subprocess.run(["readelf", "-d", os.path.join(out, so)], check=True, capture_output=True,
                         text=True).stdout
    paths = [l for l in dyn.splitlines() if "RPATH" in l or "RUNPATH" in l]
    needed = [l.split("[")[1].rstrip("]") for l in dyn.splitlines() if "(NEEDED)" in l]
    if any("/build" in l or "mesonpy" in l for l in paths):
        sys.exit(f"check-wheel: {so} keeps a build-tree RPATH: {paths}")
    print(f"  {so}: NEEDED {' '.join(needed)}")
    if so.endswith("/libhybridctx.so.0") and any("cuda" in n or "cublas" in n for n in needed):
        sys.exit(f"check-wheel: the core library needs a CUDA library: {needed}")
PY

step "python -m build --sdist bindings/python (from git HEAD)"
"$work/buildenv/bin/python" -m build --sdist --outdir "$work/dist" "$root/bindings/python" >"$work/sdist.log" 2>&1 ||
    { tail -40 "$work/sdist.log"; die "python -m build --sdist failed"; }
sdist="$(echo "$work"/dist/hybridctx-*.tar.gz)"
[ -f "$sdist" ] || die "no sdist"
tar tzf "$sdist" >"$work/sdist.list"
for f in pyproject.toml meson.build hybridctx/py.typed LICENSE-MIT subprojects/hybridctx/meson.build \
         subprojects/hybridctx/lib/api.c subprojects/hybridctx/include/hybridctx.h \
         subprojects/hybridctx/tools/gen-build-id.py; do
    grep -q "^hybridctx-[^/]*/$f\$" "$work/sdist.list" || die "the sdist lacks $f"
done
! grep -q "/subprojects/hybridctx/tests/" "$work/sdist.list" || die "the sdist holds the C tests"
echo "$(basename "$sdist"): $(wc -l <"$work/sdist.list") entries, $(du -k "$sdist" | cut -f1) KiB"

step "the wheel into a fresh venv with pytest and mypy; pytest from $work/run"
"$PY" -m venv "$work/venv2"
"$work/venv2/bin/python" -m pip install --quiet "$wheel" pytest mypy >"$work/pip2.log" 2>&1 ||
    { tail -40 "$work/pip2.log"; die "pip install of the wheel failed"; }
pkg2="$(clean "$work/venv2" python -c 'import os, hybridctx; print(os.path.dirname(os.path.realpath(hybridctx.__file__)))')"
case "$pkg2" in "$(realpath "$work/venv2")"/*) ;; *) die "hybridctx imported from $pkg2, not from the venv" ;; esac
clean "$work/venv2" HC_EXPECT_LIBRARY_DIR="$pkg2" HC_XLANG_REQUIRE="" \
    python -m pytest -q -p no:cacheprovider --import-mode=importlib "$root/bindings/python/tests"
# py.typed: mypy reads the package's annotations (a wrong type is refused)
cat >"$work/run/typed.py" <<'PY'
import numpy as np
import hybridctx

def run(model: hybridctx.Model) -> float:
    with hybridctx.Context(model, backend="cpu") as ctx:
        y = ctx.append(0, np.zeros((2, model.dim), np.float32))
        return float(y.sum()) + hybridctx.backend_info().n_devices
PY
clean "$work/venv2" python -m mypy --strict --no-incremental typed.py
printf '%s\n' 'import hybridctx' 'n: int = hybridctx.version()' >"$work/run/wrong.py"
if clean "$work/venv2" python -m mypy --strict --no-incremental wrong.py >"$work/mypy.out"; then
    die "mypy accepted a str as an int: are the package's annotations seen (py.typed)?"
fi
grep -q 'Incompatible types in assignment (expression has type "str"' "$work/mypy.out" ||
    { cat "$work/mypy.out"; die "mypy did not refuse the wrong type as expected"; }
echo "mypy --strict: typed.py passes, wrong.py is refused (str is not int)"

step "wheel checked ($((SECONDS - t0)) s): $(basename "$wheel")"
