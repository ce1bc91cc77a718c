#!/usr/bin/env bash
# gpu-session-load.sh - one device call (about 3.5 minutes) for issue 12 item 7, cold uncompressed
# session loads into a CUDA context against the raw read (docs/perf/NEXT-cuda-load.md), from the
# repository root with the build that tools/gpu-carry.sh packed in .carry/b (or CARRY=DIR):
#   disk      what /tmp is on and how its queue is set up (the raw read's speed depends on it)
#   load      session-bench, 1M-token V4-Flash, medians of 3, traced, with paired variants:
#             [1] cut=0,read_threads=4   the reads before branch load-direct (control)
#             [2] read_threads=4         the new layout at the old depth
#             [3] read_threads=1         one read in flight, the raw O_DIRECT x1 pattern
#   check     a 256K-token session loaded with each cut, round trip checked (the carry on CUDA)
# Writes $OUT/session-load.tgz only (logs, the trace, the JSON) and prints the summary.
set -u
cd "$(dirname "$0")/.."
b=${CARRY:-.carry/b}
export LD_LIBRARY_PATH=$PWD/$b:$PWD/$b/rt:/usr/local/cuda/lib64
OUT=${OUT:-/tmp/o}
o=$OUT/logs; mkdir -p "$o"
. tools/gpu-steps.sh # step
disk_info() {
    nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
    nproc; uname -r; cat /sys/kernel/mm/transparent_hugepage/enabled
    findmnt -T /tmp; df -h /tmp
    dev=$(findmnt -no SOURCE -T /tmp | sed 's|^/dev/||; s|\[.*||')
    lsblk -o NAME,TYPE,SIZE,ROTA,MODEL,TRAN 2>&1
    for q in /sys/block/*/queue; do # every disk: which one /tmp is on may hide behind md or dm
        case $q in /sys/block/loop*|/sys/block/zram*) continue ;; esac
        echo "$q: $(for f in max_sectors_kb max_hw_sectors_kb max_segments nr_requests read_ahead_kb scheduler \
                            chunk_sectors minimum_io_size optimal_io_size; do
            printf '%s=%s ' "$f" "$(cat "$q/$f" 2>/dev/null)"; done)"
    done
    echo "/tmp on: $dev"
}
disk_info > "$o/disk.log" 2>&1
# the text (stderr) in load.log, the medians as JSON beside it
step load 165 sh -c "exec $b/tools/session-bench --backend cuda --dir /tmp --rounds 3 --no-zstd --no-check \
    --trace $o/cuda-load.trace --variant cut=0,read_threads=4 --variant read_threads=4 --variant read_threads=1 \
    --json > $o/cuda-load.json"
step check 40 "$b/tools/session-bench" --backend cuda --dir /tmp --tokens 262144 --rounds 1 --no-zstd \
    --variant cut=0 --variant cut=1
# the median lines and each load's reads (O_DIRECT or not) at a glance
{ grep -E "^  (raw read|load |median)|reads:|disk:" "$o/load.log"; grep -E "load |DIFFERENT" "$o/check.log"; } \
    > "$o/digest.txt" 2>&1
cat "$o/digest.txt"
tar czf "$OUT/session-load.tgz" -C "$o" . && rm -rf "$o"
