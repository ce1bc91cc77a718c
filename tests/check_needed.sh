#!/bin/sh
# check_needed.sh LIB [MODULE] - the core library loads without CUDA: its NEEDED list names no
# CUDA library and no libstdc++ (the CUDA backend lives in the module, loaded with dlopen). The
# module, when built, is the one that needs the CUDA runtime.
set -eu
needed=$(readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
echo "$1 needs: $(echo $needed)"
bad=$(echo "$needed" | grep -E 'cuda|cublas|stdc\+\+|nvidia' || true)
[ -z "$bad" ] || { echo "FAIL: $1 needs $bad" >&2; exit 1; }
if [ $# -ge 2 ]; then
    mneeded=$(readelf -d "$2" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
    echo "$2 needs: $(echo $mneeded)"
    echo "$mneeded" | grep -q cudart || { echo "FAIL: $2 does not need the CUDA runtime" >&2; exit 1; }
    undefined=$(nm -D --undefined-only --format=posix "$2" | awk '$1 ~ /^hci_/ {print $1}')
    [ -z "$undefined" ] || { echo "FAIL: $2 leaves core symbols undefined: $undefined" >&2; exit 1; }
    exports=$(nm -D --defined-only "$2" | awk '{print $3}')
    [ "$exports" = "hybridctx_backend_module" ] || { echo "FAIL: $2 exports: $exports" >&2; exit 1; }
fi
