# gpu-steps.sh - sourced by the one-call device scripts (gpu-probe.sh, gpu-index-fast.sh,
# gpu-prefill-e2e.sh, gpu-round.sh): their logged, time-limited steps. The caller sets $o, the
# folder of the logs. PROBE_TGZ=FILE: the logs so far are packed there after every step, so that
# a call cut off by its time limit still returns what finished (files under the device's $OUT
# come back). TAG=NAME prefixes the log names (two builds in one call).

snap() { [ -n "${PROBE_TGZ:-}" ] && tar czf "$PROBE_TGZ" -C "$o" . 2>/dev/null; return 0; }

step() { # name, seconds, command...: its output in $o/<TAG><name>.log, its status in summary.txt
    local name="${TAG:-}$1" limit="$2" t0=$SECONDS
    shift 2
    timeout -k 5 "$limit" "$@" > "$o/$name.log" 2>&1
    echo "$name rc=$? $((SECONDS - t0))s" | tee -a "$o/summary.txt"
    snap
}

# carry_setup [DIR]: the environment of a script that runs the build tools/gpu-carry.sh packed
# (CARRY or .carry/b): b, the libraries' path, the test data, o = DIR (default $OUT/logs, for the
# scripts that write one tar; created), commit (.carry/commit), $o/gpu.txt.
carry_setup() {
    b=${CARRY:-.carry/b}
    export LD_LIBRARY_PATH=$PWD/$b:$PWD/$b/rt:/usr/local/cuda/lib64 HC_TEST_DATA=$PWD/tests/data CK_FORK=no
    OUT=${OUT:-/tmp/o}
    o=${1:-$OUT/logs}
    mkdir -p "$o"
    commit=$(cat .carry/commit 2>/dev/null || echo unknown)
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader > "$o/gpu.txt" 2>&1
}
